"""Drop three indexes that are prefixes of the report indexes of 0002

``ix_order_created_at (created_at)`` is the prefix of ``ix_order_report_created
(created_at, customer_id)``, ``ix_order_status_paid_at (status, paid_at)`` of
``ix_order_report_paid (status, paid_at, customer_id, amount_cents)`` and
``ix_conversation_started (started_at)`` of ``ix_conversation_report_started
(started_at, customer_id, category, rating)``. A B-tree answers every range,
order and equality on its leading columns, so each longer index serves every
query the shorter one did (on SQLite and PostgreSQL alike). Kept, they only
cost writes: at 1M customers 171 MB, and a purge of 100,000 customers
deleted ~500,000 entries from them (38,000 of the 612,000 pages it wrote).

Revision ID: 0005_redundant_indexes
Revises: 0004_cleanup
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_redundant_indexes"
down_revision: str | None = "0004_cleanup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = (
    ("customer_order", "ix_order_created_at", ["created_at"]),
    ("customer_order", "ix_order_status_paid_at", ["status", "paid_at"]),
    ("conversation", "ix_conversation_started", ["started_at"]),
)


def upgrade() -> None:
    for _table, name, _columns in DROPPED:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade() -> None:
    for table, name, columns in DROPPED:
        op.create_index(name, table, columns, unique=False)
