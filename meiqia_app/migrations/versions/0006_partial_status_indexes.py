"""Working-set indexes without the trash (SQLite); drop the unused event-kind index

- SQLite: the eleven status-led customer indexes become partial indexes
  ``WHERE status != 'trashed'``, and ``ix_customer_trashed_at`` holds only the
  trash (``WHERE status = 'trashed'``). Emptying the trash then deletes no
  entry from the working-set indexes: at 1M customers, deleting 100,000
  trashed customer rows took 7.5 s with them and 2.4 s without (the rest of
  the purge, children and commit, is unchanged). Queries carry the index
  condition literally (models/customer.py); PostgreSQL keeps its indexes.
- All databases: ``ix_event_kind_occurred (kind, occurred_at)`` is dropped.
  No query filters behaviour events by kind alone (the rules' "product views"
  condition names the product and uses ``ix_event_product_kind``); at 1M it
  took 109 MB and every purge deleted ~250,000 entries from it.
- ``ANALYZE customer``: dropping an index drops its statistics.

36 s at 1M customers on SQLite (twelve index builds and ANALYZE customer).

Revision ID: 0006_partial_status_indexes
Revises: 0005_redundant_indexes
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_partial_status_indexes"
down_revision: str | None = "0005_redundant_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKING_SET_WHERE = "status != 'trashed'"
TRASH_WHERE = "status = 'trashed'"
WORKING_SET_INDEXES = (
    ("ix_customer_status_last_active", "status, last_active_at, id"),
    ("ix_customer_status_registered", "status, registered_at, id"),
    ("ix_customer_status_last_purchase", "status, last_purchase_at, id"),
    ("ix_customer_status_spent", "status, total_spent_cents, id"),
    ("ix_customer_status_orders", "status, order_count, id"),
    ("ix_customer_status_name", "status, name_pinyin, id"),
    ("ix_customer_source", "status, source, last_active_at"),
    ("ix_customer_lifecycle", "status, lifecycle_stage, last_active_at"),
    ("ix_customer_tier", "status, membership_tier, last_active_at"),
    ("ix_customer_region", "status, province, city, last_active_at"),
    ("ix_customer_report_registered", "status, registered_at, source, province, first_purchase_at"),
)
TRASH_INDEX = ("ix_customer_trashed_at", "trashed_at")


def _rebuild_customer_indexes(where_working_set: str, where_trash: str) -> None:
    for name, columns in (*WORKING_SET_INDEXES, TRASH_INDEX):
        where = where_trash if name == TRASH_INDEX[0] else where_working_set
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON customer ({columns}){where}")
    op.execute("ANALYZE customer")


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_event_kind_occurred")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_customer_indexes(f" WHERE {WORKING_SET_WHERE}", f" WHERE {TRASH_WHERE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_customer_indexes("", "")
    op.create_index("ix_event_kind_occurred", "behavior_event", ["kind", "occurred_at"], unique=False)
