"""How tag names compare: width- and case-insensitive (``VIP`` = ``ｖｉｐ``)."""

from __future__ import annotations

import unicodedata

MAX_TAG_NAME = 32


def tag_key(name: str) -> str:
    """NFKC folds full-width forms, casefold folds case; inner spaces collapse."""
    folded = unicodedata.normalize("NFKC", name or "").casefold()
    return " ".join(folded.split())[:MAX_TAG_NAME]
