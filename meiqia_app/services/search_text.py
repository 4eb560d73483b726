"""What a customer's search row contains, and how a typed query becomes terms.

One lower-cased text per customer holds every searchable value separated by
``FIELD_SEP``: name, full pinyin, pinyin initials, phone, e-mail, external and
visitor ids. A trigram index finds any substring of three or more characters
in it. Chinese names are mostly two or three characters, and people type one
or two (张, 张伟) or the initials (zw), which a trigram index cannot see. So the
text also carries every one- and two-character piece of the name, and every
one- and two-letter prefix of the pinyin and the initials, each padded with
``PAD`` to three characters. A short query ``张伟`` is then looked up as the
three-character string ``张伟`` + PAD, which only a padded piece contains.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata

from pypinyin import lazy_pinyin

FIELD_SEP = "\x1f"
PAD = "\x02"
MIN_SUBSTRING = 3

_PHONEISH = re.compile(r"^\+?[\d][\d\s\-()]*$")
_LATIN_SPACES = re.compile(r"^[a-z ]+$")


def normalize(text: str) -> str:
    """NFKC (full-width to half-width) and lower case: how text is compared."""
    return unicodedata.normalize("NFKC", text).lower().strip()


@functools.lru_cache(maxsize=200_000)
def pinyin_of(name: str) -> tuple[str, str]:
    """Full pinyin without tones and the initials, e.g. 张伟 -> ("zhangwei", "zw")."""
    name = normalize(name)
    if not name:
        return "", ""
    syllables = [s for s in lazy_pinyin(name, errors=lambda chars: list(chars)) if s.strip()]
    full = "".join(syllables)
    initials = "".join(s[0] for s in syllables if s)
    return full, initials


def _padded(piece: str) -> str:
    return piece + PAD * (MIN_SUBSTRING - len(piece))


def _short_pieces(name: str) -> list[str]:
    pieces: list[str] = []
    seen: set[str] = set()
    compact = name.replace(" ", "")
    for size in (1, 2):
        for start in range(0, len(compact) - size + 1):
            piece = compact[start : start + size]
            if piece not in seen:
                seen.add(piece)
                pieces.append(_padded(piece))
    return pieces


def _prefixes(word: str) -> list[str]:
    return [_padded(word[:size]) for size in (1, 2) if len(word) >= size]


def build_search_text(
    name: str | None,
    phone: str | None = None,
    email: str | None = None,
    external_id: str | None = None,
    visitor_id: str | None = None,
) -> str:
    name_n = normalize(name or "")
    full, initials = pinyin_of(name_n)
    values = [name_n, full, initials]
    values += [normalize(v) for v in (phone, email, external_id, visitor_id) if v]
    short = _short_pieces(name_n) + _prefixes(full) + _prefixes(initials)
    # Dict keeps first occurrence and drops repeats (full == initials for "a").
    return FIELD_SEP.join(dict.fromkeys(v for v in values + short if v))


@dataclasses.dataclass(frozen=True)
class SearchTerms:
    """A parsed query: every term must occur in the customer's search text."""

    terms: tuple[str, ...]
    too_short_digits: bool = False

    @property
    def empty(self) -> bool:
        return not self.terms


def parse_query(raw: str | None, max_terms: int = 5) -> SearchTerms:
    """Turn what a person typed into search terms.

    - ``138-1234 5678`` (a phone written with separators) becomes ``13812345678``.
    - ``zhang wei`` (pinyin with a space) becomes ``zhangwei``.
    - Otherwise whitespace separates terms, each of which must match.
    - Terms of one or two characters match name pieces and pinyin prefixes only
      (see module doc); a one- or two-digit number matches nothing useful, so it
      is reported as too short instead of scanning a million phones.
    """
    text = normalize(raw or "")[:100]
    if not text:
        return SearchTerms(())
    if _PHONEISH.match(text) and sum(ch.isdigit() for ch in text) >= MIN_SUBSTRING:
        return SearchTerms((re.sub(r"\D", "", text),))
    if _LATIN_SPACES.match(text) and " " in text:
        return SearchTerms((text.replace(" ", ""),))
    terms: list[str] = []
    too_short_digits = False
    for word in text.split():
        word = word.replace(FIELD_SEP, "").replace(PAD, "")
        if not word:
            continue
        if len(word) < MIN_SUBSTRING:
            if word.isdigit():
                too_short_digits = True
                continue
            word = _padded(word)
        if word not in terms:
            terms.append(word)
    return SearchTerms(tuple(terms[:max_terms]), too_short_digits=too_short_digits and not terms)
