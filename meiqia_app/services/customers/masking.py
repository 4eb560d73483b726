"""How sensitive values look masked for roles without customer.view_sensitive (RBAC-3).

The maskers only: which fields are sensitive is the one table in
services/customers/access.py (SENSITIVE, mask_value, mask_diff).
"""

from __future__ import annotations

import re

import phonenumbers

MASK = "****"


# A masked phone keeps enough to recognise the number (the area code or the
# mobile prefix, and the last digits) and hides at least MIN_HIDDEN digits.
PHONE_TAIL = 4
MIN_HIDDEN = 4
_CN_MOBILE = re.compile(r"1\d{10}")


def _phone_parts(phone: str) -> tuple[str, str]:
    """(what a masked phone shows before MASK, what it shows after it).

    - a Chinese mobile (stored 13812345678): 138 / 5678
    - a Chinese landline (stored nationally, 1065521234): 010- / 1234
    - another country (stored in E.164, +442079460958): +44 20 / 0958
    - a value that is no valid number: the first three digits of eleven or
      more, and the last four
    Whatever the format, at least MIN_HIDDEN digits stay hidden.
    """
    text = phone.strip()
    if _CN_MOBILE.fullmatch(text):
        return text[:3], text[-PHONE_TAIL:]
    digits = re.sub(r"\D", "", text)
    number = None
    try:
        parsed = phonenumbers.parse(text, "CN")
        if phonenumbers.is_valid_number(parsed):
            number = parsed
    except phonenumbers.NumberParseException:
        number = None
    if number is None:
        significant, lead = digits, (3 if len(digits) >= 11 else 0)
        prefix = lambda shown: significant[:shown]  # noqa: E731
    else:
        significant = phonenumbers.national_significant_number(number)
        code = number.country_code
        mobile = code == 86 and _CN_MOBILE.fullmatch(significant) is not None
        lead = 3 if mobile else phonenumbers.length_of_geographical_area_code(number)

        def prefix(shown: int) -> str:
            if code == 86:
                if mobile:
                    return significant[:shown]
                return f"0{significant[:shown]}-" if shown else ""
            return f"+{code} " + (f"{significant[:shown]} " if shown else "")

    tail = min(PHONE_TAIL, max(0, len(significant) - MIN_HIDDEN))
    if len(significant) - lead - tail < MIN_HIDDEN:
        lead = 0
    return prefix(lead), (significant[-tail:] if tail else "")


def mask_phone(phone: str | None) -> str:
    """138****5678, 010-****1234, +44 20 ****0958: recognisable, never the whole number."""
    if not phone:
        return ""
    head, tail = _phone_parts(phone)
    return head + MASK + tail


def phone_mask_search_form(phone: str | None) -> str:
    """The masked phone as the search text holds it (no spaces): what a role
    without customer.view_sensitive can match by its visible part."""
    return mask_phone(phone).replace(" ", "")


def mask_email(email: str | None) -> str:
    if not email:
        return ""
    local, at, domain = email.partition("@")
    if not at:
        return MASK
    return (local[:1] or "*") + "***@" + domain


def mask_address(address: str | None) -> str:
    if not address:
        return ""
    return address[:4] + MASK


def mask_search_term(term: str | None) -> str:
    """What a typed search shows in audit entries and job parameters.

    Agents type phone numbers, e-mail addresses and names into the search box;
    the audit log is hash-chained, so a value written there can never be
    erased later (PIPL / GDPR erasure). It keeps the shape for accountability
    (a phone-like term, an address at which domain, a name's first character)
    and never the value: 138******78, z***@example.com, 张**.
    """
    term = (term or "").strip()
    if not term:
        return ""
    if "@" in term:
        return mask_email(term)
    if sum(c.isdigit() for c in term) >= 5:
        return term[:3] + "*" * max(len(term) - 5, 1) + term[-2:] if len(term) > 5 else "*" * len(term)
    return term[:1] + "*" * (len(term) - 1)
