"""The catalogue of exportable customer fields (EXP-1 step 2).

Each field has a group (how the picker shows it), a kind (how writers type the
cell); whether it is sensitive (needs customer.view_sensitive and, in an
export, a password) comes from services/customers/access.SENSITIVE.

Custom fields (issue 23) are exportable as "cf.<key>" (the stable key, never the
label: a saved export or its rerun survives a label rename): ``FIELD_SPECS``
answers for every active custom field besides the built-in ones, read from the
cached catalogue. A field deleted (or retired) since an export was requested is
no longer in it; ``present_fields`` drops it and says which were dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from meiqia_app.dbadapter.base import CUSTOM_FIELD_KEY
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FieldDef, key_of
from meiqia_app.services.customers.access import is_sensitive, sensitive_of


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    key: str
    group: str  # basic | contact | tags | lifecycle | purchases | consultation | consent | custom | cf
    kind: str  # text | int | money | date | datetime | bool | number | percent (custom fields)
    width: int | None = None
    custom: FieldDef | None = None  # a custom field's definition ("cf.<key>")

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

BUILTIN_SPECS: dict[str, FieldSpec] = {spec.key: spec for spec in _SPECS}
#: The built-in exportable fields (custom ones: ``export_fields()``).
EXPORT_FIELDS: tuple[str, ...] = tuple(BUILTIN_SPECS)

# How a custom field's cell is typed, by its type (selects: their option labels as text).
CUSTOM_KINDS = {
    "number": "number",
    "money": "money",
    "percent": "percent",
    "date": "date",
    "datetime": "datetime",
    "yes_no": "bool",
}
_CUSTOM_WIDTHS = {"long_text": 30, "link": 30, "email": 26, "multi_select": 24, "datetime": 19}


def custom_spec(field: FieldDef) -> FieldSpec:
    """The export spec of a custom field, "cf.<key>"."""
    return FieldSpec(
        field.name,
        "cf",
        CUSTOM_KINDS.get(field.field_type, "text"),
        width=_CUSTOM_WIDTHS.get(field.field_type, 14),
        custom=field,
    )


class ExportFieldSpecs(Mapping):
    """The exportable fields: the built-in ones, then every active custom field ("cf.<key>").

    Looking up a name that is not "cf.…" never reads the definitions."""

    def __init__(self, builtin: dict[str, FieldSpec]) -> None:
        self._builtin = builtin

    def _custom(self, name: object) -> FieldSpec | None:
        key = key_of(name) if isinstance(name, str) else None
        if key is None:
            return None
        found = custom_field_catalog.field(key)
        return custom_spec(found) if found is not None and found.active else None

    def __getitem__(self, name: str) -> FieldSpec:
        spec = self._builtin.get(name) or self._custom(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._builtin or self._custom(name) is not None

    def __iter__(self) -> Iterator[str]:
        yield from self._builtin
        for field in custom_field_catalog.catalog().active:
            yield field.name

    def __len__(self) -> int:
        return len(self._builtin) + len(custom_field_catalog.catalog().active)


FIELD_SPECS = ExportFieldSpecs(BUILTIN_SPECS)


def export_fields() -> tuple[str, ...]:
    """Every exportable field now: the built-in ones, then the active custom fields."""
    return tuple(FIELD_SPECS)


def present_fields(fields) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the fields still exportable, the custom ones gone since: deleted or retired), in order.

    Unknown built-in names and malformed "cf." names stay (the request's validation refuses them)."""
    kept, gone = [], []
    for name in fields:
        key = key_of(name) if isinstance(name, str) else None
        if key is not None and CUSTOM_FIELD_KEY.fullmatch(key) and name not in FIELD_SPECS:
            gone.append(name)
        else:
            kept.append(name)
    return tuple(kept), tuple(gone)


def sensitive_export_fields() -> tuple[str, ...]:
    """Exported masked without customer.view_sensitive (and only with a password)."""
    return sensitive_of(export_fields())


FIELD_GROUPS: tuple[str, ...] = (
    "basic",
    "contact",
    "tags",
    "lifecycle",
    "purchases",
    "consultation",
    "consent",
    "custom",
    "cf",
)
# Data minimisation: what the wizard proposes before anyone adds more.
DEFAULT_FIELDS: tuple[str, ...] = ("id", "name", "source", "city", "lifecycle_stage", "registered_at")


def field_label(name: str, lang: str = "zh") -> str:
    """A field's column title: a custom field's label in ``lang`` (any status: history keeps
    naming it), a built-in one's message ``export.field.<name>``."""
    from meiqia_app.i18n import tr

    key = key_of(name)
    if key is not None:
        found = custom_field_catalog.field(key)
        return found.label(lang) if found is not None else key
    return tr(lang, f"export.field.{name}")


@dataclasses.dataclass(frozen=True)
class CustomChoice:
    """An active custom field as the export picker offers it: by its group, in the admin's order."""

    name: str  # "cf.<key>"
    key: str
    label: str
    group: str
    first_in_group: bool
    sensitive: bool


def custom_field_choices(lang: str = "zh") -> list[CustomChoice]:
    """The active custom fields grouped by their group (groups in order of first appearance,
    fields in the admin's order within each), labels in ``lang``."""
    fields = custom_field_catalog.catalog().active
    groups: dict[str, list[FieldDef]] = {}
    for field in fields:
        groups.setdefault(field.group(lang), []).append(field)
    choices = []
    for group, members in groups.items():
        for i, field in enumerate(members):
            choices.append(
                CustomChoice(field.name, field.key, field.label(lang), group, i == 0, is_sensitive(field.name))
            )
    return choices
