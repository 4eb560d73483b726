"""Custom fields (自定义字段): the definitions an admin makes; the values live on ``customer.custom_fields``.

See docs/architecture.md ("Custom fields") for the storage design: one JSON
document per customer ``{key: canonical value}`` (TEXT read with json_extract
on SQLite, JSONB on PostgreSQL) plus an expression index per filterable field,
created at run time by the adapter (``ix_cf_<key>``), so a new field never
needs a schema migration.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow

# The field types. Values are stored in a canonical form per type
# (services/custom_field_types.py) so that filters and sorts work in SQL.
FIELD_TYPES = (
    "text",
    "long_text",
    "number",
    "money",
    "percent",
    "date",
    "datetime",
    "single_select",
    "multi_select",
    "yes_no",
    "link",
    "phone",
    "email",
)
# active: in use; retired: hidden everywhere, values kept, restorable;
# deleting: its values are being removed by a job, then the row goes.
FIELD_STATUSES = ("active", "retired", "deleting")


class CustomField(SQLModel, table=True):
    __tablename__ = "custom_field"

    id: int | None = Field(default=None, primary_key=True)
    # Stable, ASCII, unique: what saved views, rules, exports and API clients use.
    # Never changes (renaming changes the labels only).
    key: str = Field(max_length=40, unique=True)
    label_zh: str = Field(max_length=64)
    label_en: str = Field(default="", max_length=64)
    group_zh: str = Field(default="", max_length=32)
    group_en: str = Field(default="", max_length=32)
    # One of FIELD_TYPES; fixed once the field exists (stored values follow it).
    field_type: str = Field(max_length=16)
    # Selects: JSON list of {"id": "o1", "zh": …, "en": …, "order": n, "retired": bool}.
    # Option ids are never reused (options are retired, not deleted).
    options: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    required: bool = False
    # JSON of the canonical default value, or None.
    default_value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Masked and permission-guarded like phone and e-mail (customer_access.SENSITIVE).
    sensitive: bool = False
    shown_in_list: bool = False
    sort_order: int = 0
    status: str = Field(default="active", max_length=16)
    retired_at: dt.datetime | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by_id: int | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)
    updated_by_name: str = Field(default="", max_length=64)
    version: int = 1
