"""Customer exports (EXP-1..8): query → rows → writer → protection, with policy,
approval, audit and single-use download tokens. No ``import reflex`` here."""
