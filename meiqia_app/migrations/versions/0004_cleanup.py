"""cleanup: erasure requests by customer; fresh planner statistics

- ``ix_erasure_customer``: purging customers deletes their erasure requests
  (and the foreign key cascades there for every deleted customer). The only
  index began with ``status``, so PostgreSQL (no skip scan) read the whole
  table once per deleted customer.
- ``ANALYZE``: the planner needs statistics for the indexes added since the
  database was last analysed. Without them (a 1M database migrated from 0001)
  the customer list's first page took the new report index
  ``ix_customer_report_registered`` plus a sort: 3.5 s instead of 10 ms, and
  the cleanup report's "list query time" showed it. ~9 s at 1M customers.

Revision ID: 0004_cleanup
Revises: 0003_reports
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_cleanup"
down_revision: str | None = "0003_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("erasure_request", schema=None) as batch_op:
        batch_op.create_index("ix_erasure_customer", ["customer_id"], unique=False)
    op.execute("ANALYZE")


def downgrade() -> None:
    with op.batch_alter_table("erasure_request", schema=None) as batch_op:
        batch_op.drop_index("ix_erasure_customer")
