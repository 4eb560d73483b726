"""Customers: one customer's record and everything done to it (profile, edit, list and search, notes, timeline, ownership, duplicates, import)."""
