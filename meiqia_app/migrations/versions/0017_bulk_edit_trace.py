"""Bulk edit leaves a trace on each customer: ``field_change``

One row per customer a bulk edit changed (services/customers/bulk_edit.py):
the field, the value as the timeline may show it, who, when, the job. Written
set-based (INSERT … SELECT per batch), read by the customer's timeline through
(customer_id, changed_at, id), purged with the customer (ON DELETE CASCADE and
the trash purge's table list).

Revision ID: 0017_bulk_edit_trace
Revises: 0016_custom_fields
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017_bulk_edit_trace"
down_revision: str | None = "0016_custom_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _string(length: int):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "field_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("field", _string(48), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("note", _string(8), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", _string(64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_field_change_customer", "field_change", ["customer_id", "changed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_field_change_customer", table_name="field_change")
    op.drop_table("field_change")
