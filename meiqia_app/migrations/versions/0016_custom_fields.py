"""Custom fields (自定义字段): definitions and one JSON document of values per customer

- ``customer.custom_fields``: ``{key: canonical value}`` of the defined fields,
  JSON text on SQLite, JSONB on PostgreSQL, NOT NULL DEFAULT '{}'. A plain
  ADD COLUMN with a constant default: no table rewrite on either database
  (PostgreSQL 11+ keeps the default in the catalogue). New fields never need
  another migration: their expression indexes (``ix_cf_<key>``) are made by
  the app when a field is defined (dbadapter ``create_custom_field_index``).
- ``custom_field``: the definitions (key, labels zh/en, group, type, options
  with stable ids, required, default, sensitive, shown in list, order,
  status / retired_at, version).
- New permission ``field.manage`` (the /admin/fields page), granted to the
  roles named admin (roles an admin edited keep their edits otherwise), the
  way 0012 granted its permissions.

Downgrade drops the run-time indexes first (SQLite refuses to drop a column an
index refers to).

Revision ID: 0016_custom_fields
Revises: 0015_pool_return
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0016_custom_fields"
down_revision: str | None = "0015_pool_return"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_ADMIN_PERMISSIONS = ("field.manage",)


def _string(length: int):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.add_column(
        "customer",
        sa.Column("custom_fields", sa.JSON().with_variant(JSONB(), "postgresql"), server_default="{}", nullable=False),
    )
    op.create_table(
        "custom_field",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _string(40), nullable=False),
        sa.Column("label_zh", _string(64), nullable=False),
        sa.Column("label_en", _string(64), nullable=False),
        sa.Column("group_zh", _string(32), nullable=False),
        sa.Column("group_en", _string(32), nullable=False),
        sa.Column("field_type", _string(16), nullable=False),
        sa.Column("options", sa.Text(), server_default="[]", nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("default_value", sa.Text(), nullable=True),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("shown_in_list", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("status", _string(16), nullable=False),
        sa.Column("retired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_by_name", _string(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )

    bind = op.get_bind()
    for role_id, permissions in bind.execute(sa.text("SELECT id, permissions FROM role WHERE name = 'admin'")).all():
        granted = json.loads(permissions or "[]")
        added = [p for p in NEW_ADMIN_PERMISSIONS if p not in granted]
        if added:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(granted + added), "id": role_id},
            )


def downgrade() -> None:
    bind = op.get_bind()
    for role_id, permissions in bind.execute(sa.text("SELECT id, permissions FROM role")).all():
        granted = json.loads(permissions or "[]")
        kept = [p for p in granted if p not in NEW_ADMIN_PERMISSIONS]
        if kept != granted:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(kept), "id": role_id},
            )
    # The indexes the app made for the defined fields (ix_cf_<key>); expression indexes,
    # which SQLAlchemy's SQLite reflection skips, so they are listed from the catalogue.
    if bind.dialect.name == "sqlite":
        listed = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'customer'"
    else:
        listed = "SELECT indexname FROM pg_indexes WHERE tablename = 'customer'"
    for (name,) in bind.execute(sa.text(listed)).all():
        if name and name.startswith("ix_cf_"):
            op.execute(f'DROP INDEX IF EXISTS "{name}"')
    op.drop_table("custom_field")
    op.drop_column("customer", "custom_fields")
