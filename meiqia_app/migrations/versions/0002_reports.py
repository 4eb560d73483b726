"""reports: covering indexes for the dashboard aggregates

Each dashboard figure is an aggregate over a time range; these indexes hold
every column the aggregate reads, so SQLite scans the index range and never
visits the table rows (at 1M customers / 2M orders a month of paid orders is
150k rows: ~1.5 s with row look-ups, tens of ms covered).

Revision ID: 0002_reports
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_reports"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customer_report_registered",
            ["status", "registered_at", "source", "province", "first_purchase_at"],
            unique=False,
        )
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_report_paid", ["status", "paid_at", "customer_id", "amount_cents"], unique=False
        )
        batch_op.create_index("ix_order_report_created", ["created_at", "customer_id"], unique=False)
        batch_op.create_index("ix_order_report_customer_paid", ["customer_id", "status", "paid_at"], unique=False)
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_report_started", ["started_at", "customer_id", "category", "rating"], unique=False
        )
    with op.batch_alter_table("behavior_event", schema=None) as batch_op:
        batch_op.create_index("ix_event_report_occurred", ["occurred_at", "customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("behavior_event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_report_occurred")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_report_started")
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.drop_index("ix_order_report_customer_paid")
        batch_op.drop_index("ix_order_report_created")
        batch_op.drop_index("ix_order_report_paid")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_report_registered")
