"""The catalogue of exportable customer fields (EXP-1 step 2).

Each field has a group (how the picker shows it), a kind (how writers type the
cell); whether it is sensitive (needs customer.view_sensitive and, in an
export, a password) comes from services/customers/access.SENSITIVE.
"""

from __future__ import annotations

import dataclasses

from meiqia_app.services.customers.access import is_sensitive, sensitive_of


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    key: str
    group: str  # basic | contact | tags | lifecycle | purchases | consultation | consent | custom
    kind: str  # text | int | money | date | datetime | bool
    width: int | None = None

    @property
    def sensitive(self) -> bool:
        """From the one table of sensitive fields (services/customers/access.SENSITIVE)."""
        return is_sensitive(self.key)


_SPECS = (
    FieldSpec("id", "basic", "int", width=10),
    FieldSpec("name", "basic", "text", width=12),
    FieldSpec("gender", "basic", "text", width=6),
    FieldSpec("birthday", "basic", "date", width=12),
    FieldSpec("company", "basic", "text", width=20),
    FieldSpec("source", "basic", "text", width=10),
    FieldSpec("province", "basic", "text", width=8),
    FieldSpec("city", "basic", "text", width=8),
    FieldSpec("registered_at", "basic", "datetime", width=19),
    FieldSpec("last_active_at", "basic", "datetime", width=19),
    FieldSpec("last_login_at", "basic", "datetime", width=19),
    FieldSpec("phone", "contact", "text", width=14),
    FieldSpec("email", "contact", "text", width=26),
    FieldSpec("address", "contact", "text", width=32),
    FieldSpec("external_id", "contact", "text", width=14),
    FieldSpec("visitor_id", "contact", "text", width=16),
    FieldSpec("tags", "tags", "text", width=24),
    FieldSpec("lifecycle_stage", "lifecycle", "text", width=8),
    FieldSpec("membership_tier", "lifecycle", "text", width=8),
    FieldSpec("order_count", "purchases", "int", width=8),
    FieldSpec("total_spent", "purchases", "money", width=12),
    FieldSpec("first_purchase_at", "purchases", "datetime", width=19),
    FieldSpec("last_purchase_at", "purchases", "datetime", width=19),
    FieldSpec("last_order", "purchases", "text", width=28),
    FieldSpec("purchase_history", "purchases", "text", width=36),
    FieldSpec("conversation_count", "consultation", "int", width=8),
    FieldSpec("last_conversation_at", "consultation", "datetime", width=19),
    FieldSpec("chat_summary", "consultation", "text", width=30),
    FieldSpec("avg_rating", "consultation", "money", width=8),
    FieldSpec("consent_marketing", "consent", "bool", width=8),
    FieldSpec("consent_analytics", "consent", "bool", width=8),
    FieldSpec("custom_attributes", "custom", "text", width=30),
)

FIELD_SPECS: dict[str, FieldSpec] = {spec.key: spec for spec in _SPECS}
EXPORT_FIELDS: tuple[str, ...] = tuple(FIELD_SPECS)


def sensitive_export_fields() -> tuple[str, ...]:
    """Exported masked without customer.view_sensitive (and only with a password)."""
    return sensitive_of(EXPORT_FIELDS)


FIELD_GROUPS: tuple[str, ...] = (
    "basic",
    "contact",
    "tags",
    "lifecycle",
    "purchases",
    "consultation",
    "consent",
    "custom",
)
# Data minimisation: what the wizard proposes before anyone adds more.
DEFAULT_FIELDS: tuple[str, ...] = ("id", "name", "source", "city", "lifecycle_stage", "registered_at")
