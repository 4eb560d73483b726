"""Masking of sensitive values for roles without customer.view_sensitive (RBAC-3)."""

from __future__ import annotations

SENSITIVE_FIELDS = frozenset(
    {
        "phone",
        "email",
        "address",
        "birthday",
        "total_spent",
        "total_spent_cents",
        "order_amount",
        "purchase_history",
        "recipient_name",
        "recipient_phone",
        "shipping_address",
    }
)
MASK = "****"


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    digits = phone
    # 138****5678 for full-length numbers; a shorter one would show every digit.
    if len(digits) >= 11:
        return digits[:3] + "****" + digits[-4:]
    return MASK


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


def mask_value(field: str, value: object) -> object:
    """Mask one value by field name; non-sensitive fields pass through."""
    if value is None or value == "":
        return value
    if field in ("phone", "recipient_phone"):
        return mask_phone(str(value))
    if field == "email":
        return mask_email(str(value))
    if field in ("address", "shipping_address"):
        return mask_address(str(value))
    if field in SENSITIVE_FIELDS:
        return MASK
    return value


def mask_diff(diff: dict[str, tuple[object, object]]) -> dict[str, list[object]]:
    """A field diff for the audit log: sensitive values always masked."""
    return {field: [mask_value(field, old), mask_value(field, new)] for field, (old, new) in diff.items()}


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
