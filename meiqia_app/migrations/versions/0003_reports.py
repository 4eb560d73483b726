"""reports: pre-aggregated figures per local day, per-customer ledger, dirty marks

``report_daily`` / ``report_ledger`` / ``report_dirty`` (see
models/report.py and services/reports/aggregates.py) plus triggers that mark a
customer dirty whenever its row, or one of its orders, conversations or
behaviour events, is inserted, deleted or changed in a column the reports
read. Triggers (not service calls) so that every writer is seen: services,
bulk imports, the CLI, raw SQL, another worker. SQLite and PostgreSQL twins.

The figures themselves are built by the application (first dashboard visit or
app start) in the background; the dashboard says "being computed" meanwhile.

Revision ID: 0003_reports
Revises: 0002_reports
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_reports"
down_revision: str | None = "0002_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (customer id column, columns whose update matters)
WATCHED = {
    "customer": (
        "id",
        ("status", "registered_at", "source", "province", "lifecycle_stage", "first_purchase_at", "last_active_at"),
    ),
    "customer_order": (
        "customer_id",
        ("customer_id", "status", "created_at", "paid_at", "amount_cents", "quantity", "product_name"),
    ),
    "conversation": ("customer_id", ("customer_id", "started_at", "category", "rating")),
    "behavior_event": ("customer_id", ("customer_id", "occurred_at")),
}


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, (column, columns) in WATCHED.items():
        mark = "INSERT OR IGNORE INTO report_dirty (customer_id) SELECT {row}.{col} WHERE {row}.{col} IS NOT NULL;"
        new = mark.format(row="NEW", col=column)
        old = mark.format(row="OLD", col=column)
        statements += [
            f"CREATE TRIGGER report_dirty_{table}_ins AFTER INSERT ON {table} BEGIN {new} END",
            f"CREATE TRIGGER report_dirty_{table}_upd AFTER UPDATE OF {', '.join(columns)} ON {table} BEGIN {new} {old} END",
            f"CREATE TRIGGER report_dirty_{table}_del AFTER DELETE ON {table} BEGIN {old} END",
        ]
    return statements


PG_FUNCTION = """
CREATE OR REPLACE FUNCTION report_mark_dirty() RETURNS trigger AS $$
DECLARE
    cid bigint;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        cid := (to_jsonb(NEW) ->> TG_ARGV[0])::bigint;
        IF cid IS NOT NULL THEN
            INSERT INTO report_dirty (customer_id) VALUES (cid) ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        cid := (to_jsonb(OLD) ->> TG_ARGV[0])::bigint;
        IF cid IS NOT NULL THEN
            INSERT INTO report_dirty (customer_id) VALUES (cid) ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "report_daily",
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("k1", sa.String(length=64), nullable=False),
        sa.Column("k2", sa.Integer(), nullable=False),
        sa.Column("k3", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("s1", sa.Integer(), nullable=False),
        sa.Column("s2", sa.Integer(), nullable=False),
        sa.Column("s3", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "day", "k1", "k2", "k3"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_ledger",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_table(
        "report_dirty",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _sqlite_triggers():
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(PG_FUNCTION)
        for table, (column, columns) in WATCHED.items():
            op.execute(
                f"CREATE TRIGGER report_dirty_{table} AFTER INSERT OR DELETE OR UPDATE OF {', '.join(columns)} "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION report_mark_dirty('{column}')"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in WATCHED:
            for suffix in ("ins", "upd", "del"):
                op.execute(f"DROP TRIGGER IF EXISTS report_dirty_{table}_{suffix}")
    elif dialect == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS report_dirty_{table} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS report_mark_dirty()")
    op.drop_table("report_dirty")
    op.drop_table("report_ledger")
    op.drop_table("report_daily")
