"""What a customer's search row contains, and how a typed query becomes terms.

Two lower-cased texts per customer hold the searchable values, each separated
by ``FIELD_SEP``. ``text`` holds what every role sees: name, full pinyin,
pinyin initials, external and visitor ids, and the phone and e-mail *as a role
without customer.view_sensitive sees them* (138****5678, z***@qq.com: the
masking functions build them, so the visible part that can be searched and
the visible part that is shown are one definition). ``contact`` holds the full
phone and e-mail, searched only for roles that see them (see
services/customers/query.py for the matching rules of each role). A trigram
index finds any substring of three or more characters in either. Chinese names are mostly two or three characters, and people type one
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

from meiqia_app.services.customers.masking import mask_email, phone_mask_search_form

FIELD_SEP = "\x1f"
PAD = "\x02"
MIN_SUBSTRING = 3

_PHONEISH = re.compile(r"^\+?[\d][\d\s\-()]*$")
# A masked phone pasted from the screen (138****5678, +44 20 ****0958).
_MASKED_PHONE = re.compile(r"^[+\d\s\-()]*\*[\d\s\-()*]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A full phone number has at least this many digits (shorter numbers are not parsed).
_MIN_PHONE_DIGITS = 7
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
    """What every role may search: the full name and ids, the contact data masked."""
    name_n = normalize(name or "")
    full, initials = pinyin_of(name_n)
    values = [name_n, full, initials]
    values += [normalize(v) for v in (phone_mask_search_form(phone), mask_email(email), external_id, visitor_id) if v]
    short = _short_pieces(name_n) + _prefixes(full) + _prefixes(initials)
    # Dict keeps first occurrence and drops repeats (full == initials for "a").
    return FIELD_SEP.join(dict.fromkeys(v for v in values + short if v))


def build_contact_text(phone: str | None = None, email: str | None = None) -> str:
    """The full phone and e-mail: searched only for roles with customer.view_sensitive."""
    return FIELD_SEP.join(normalize(v) for v in (phone, email) if v)


def search_row(
    name: str | None,
    phone: str | None = None,
    email: str | None = None,
    external_id: str | None = None,
    visitor_id: str | None = None,
) -> dict[str, str]:
    """The values of a customer's ``customer_search`` row (besides its id)."""
    return {
        "text": build_search_text(name, phone, email, external_id, visitor_id),
        "contact": build_contact_text(phone, email),
        "phone_mask": phone_mask_search_form(phone),
    }


SEARCH_ROW_COLUMNS = ("text", "contact", "phone_mask")


@dataclasses.dataclass(frozen=True)
class SearchTerms:
    """A parsed query: every term must match (how, depends on the role).

    ``phones``: (term, stored form) of terms that are a full, valid phone
    number typed in any format (+86 138 1234 5678 -> 13812345678, stored
    13812345678; +44 20 7946 0958 -> 442079460958, stored +442079460958).
    ``emails``: terms that are whole e-mail addresses. ``digits``: the first
    all-digit term (ranking: exact and suffix matches first).
    """

    terms: tuple[str, ...]
    too_short_digits: bool = False
    phones: tuple[tuple[str, str], ...] = ()
    emails: tuple[str, ...] = ()
    digits: str = ""

    @property
    def empty(self) -> bool:
        return not self.terms

    @property
    def phone(self) -> str:
        """The stored form of the first full phone number typed, or ""."""
        return self.phones[0][1] if self.phones else ""


def _stored_phone(text: str) -> str:
    """The stored form of a typed phone number, or "" when it is none."""
    from meiqia_app.services.customers.validation import normalize_phone

    if sum(ch.isdigit() for ch in text) < _MIN_PHONE_DIGITS:
        return ""
    try:
        return normalize_phone(text)
    except ValueError:
        return ""


def is_whole_email(term: str) -> bool:
    """A whole address (not a masked one such as z***@qq.com, nor a domain)."""
    return bool(_EMAIL.match(term)) and mask_email(term) != term


@functools.lru_cache(maxsize=4096)
def parse_query(raw: str | None, max_terms: int = 5) -> SearchTerms:
    """Turn what a person typed into search terms.

    - ``138-1234 5678`` or ``+86 138 1234 5678`` (a phone written with
      separators or a country code) becomes ``13812345678``, as phones are
      stored (services/customers/validation.normalize_phone).
    - ``138****5678`` / ``+44 20 ****0958`` (a masked phone pasted from the
      screen) is one term without spaces, as the search text holds it.
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
        stored = _stored_phone(text)
        digits = re.sub(r"\D", "", stored or text)
        return SearchTerms((digits,), phones=((digits, stored),) if stored else (), digits=digits)
    if _MASKED_PHONE.match(text):
        return SearchTerms((re.sub(r"\s", "", text),))
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
    kept = list(terms[:max_terms])
    phones = []
    for index, term in enumerate(kept):
        stored = _stored_phone(term) if term.isdigit() else ""
        if stored:
            kept[index] = re.sub(r"\D", "", stored)
            phones.append((kept[index], stored))
    digit_terms = [t for t in kept if t.isdigit()]
    return SearchTerms(
        tuple(dict.fromkeys(kept)),
        too_short_digits=too_short_digits and not terms,
        phones=tuple(phones),
        emails=tuple(t for t in kept if is_whole_email(t)),
        digits=digit_terms[0] if digit_terms else "",
    )


def match_reasons(
    terms: SearchTerms,
    full: bool,
    *,
    name: str | None,
    phone: str | None,
    email: str | None,
    external_id: str | None = None,
    visitor_id: str | None = None,
) -> list[str]:
    """Why a listed customer matched, as message keys (match.*), one per kind.

    ``full``: the role sees contact data; without it only the phone and
    e-mail as masked are looked at (and exact matches, which the role typed
    in full), so a label says nothing that the row does not show.
    """
    name_n = normalize(name or "")
    full_pinyin, initials = pinyin_of(name_n)
    stored_phone = normalize(phone or "")
    stored_email = normalize(email or "")
    phone_seen = stored_phone if full else normalize(phone_mask_search_form(phone))
    email_seen = stored_email if full else normalize(mask_email(email))
    exact_phones = dict(terms.phones)
    reasons: list[str] = []
    for term in terms.terms:
        bare = term.rstrip(PAD)
        if phone and exact_phones.get(term) == phone:
            reason = "match.phone_exact"
        elif term in terms.emails and stored_email == term:
            reason = "match.email_exact"
        elif bare in name_n:
            reason = "match.name"
        elif bare and (
            (term.endswith(PAD) and (full_pinyin.startswith(bare) or initials.startswith(bare)))
            or (not term.endswith(PAD) and (bare in full_pinyin or bare in initials))
        ):
            reason = "match.pinyin"
        elif phone_seen and term in phone_seen:
            reason = "match.phone_suffix" if term.isdigit() and phone_seen.endswith(term) else "match.phone"
        elif email_seen and term in email_seen:
            reason = "match.email"
        elif visitor_id and term in normalize(visitor_id):
            reason = "match.visitor_id"
        elif external_id and term in normalize(external_id):
            reason = "match.external_id"
        else:
            continue
        if reason not in reasons:
            reasons.append(reason)
    return reasons
