"""Teams, customer owners (负责人) and the pool (公海), a data scope per role

- ``team`` (name, lead); ``app_user.team_id`` (a user is in one team or none).
- ``customer.owner_id`` (None: the customer is in the pool); the customer's
  team is its owner's team (no copy to keep in step). Plain ADD COLUMN with a
  NULL default: no table rewrite on SQLite or PostgreSQL.
- ``ix_customer_status_owner`` (status, owner_id, last_active_at, id), in the
  working set like the other status-led indexes: "my customers", "pool" and a
  team's owners walked in the list's default order; then ``ANALYZE customer``
  (without statistics SQLite's planner misjudges a new index, see 0011).
- ``owner_change``: each change of owner, for the customer's timeline
  (bulk assignments write these set-based; the audit log has one entry per action).
- ``role.data_scope``: own_pool | team_pool | team | all. Built-in agent:
  team_pool, senior_agent: team, every other role: all (no change).
- New permissions ``customer.claim`` (take a pool customer; agent, manager,
  admin; senior_agent's scope has no pool) and ``customer.assign`` (assign, transfer,
  release anyone's customers; manager, admin), granted to the roles of those
  names (roles an admin edited keep their edits otherwise).

Revision ID: 0013_teams_owners
Revises: 0012_access_permissions
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013_teams_owners"
down_revision: str | None = "0012_access_permissions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRANTS = {
    "customer.claim": ("admin", "manager", "agent"),
    "customer.assign": ("admin", "manager"),
}
SCOPES = {"agent": "team_pool", "senior_agent": "team"}


def _string(length: int):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "team",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _string(64), nullable=False),
        sa.Column("lead_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    # Plain ADD COLUMN, no foreign key (a batch copy of app_user would trip every table referring to it).
    op.add_column("app_user", sa.Column("team_id", sa.Integer(), nullable=True))
    op.create_index("ix_app_user_team_id", "app_user", ["team_id"])
    op.add_column("role", sa.Column("data_scope", _string(16), server_default="all", nullable=False))
    # No foreign key (users are never deleted): a plain ADD COLUMN, no table copy.
    op.add_column("customer", sa.Column("owner_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_customer_status_owner",
        "customer",
        ["status", "owner_id", "last_active_at", "id"],
        sqlite_where=sa.text("status != 'trashed'"),
    )
    op.execute("ANALYZE customer")
    op.create_table(
        "owner_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("action", _string(16), nullable=False),
        sa.Column("old_owner_id", sa.Integer(), nullable=True),
        sa.Column("new_owner_id", sa.Integer(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", _string(64), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_owner_change_customer", "owner_change", ["customer_id", "changed_at", "id"])

    bind = op.get_bind()
    for name, scope in SCOPES.items():
        bind.execute(sa.text("UPDATE role SET data_scope = :scope WHERE name = :name"), {"scope": scope, "name": name})
    for role_id, name, permissions in bind.execute(sa.text("SELECT id, name, permissions FROM role")).all():
        granted = json.loads(permissions or "[]")
        added = [p for p, roles in GRANTS.items() if name in roles and p not in granted]
        if added:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(granted + added), "id": role_id},
            )


def downgrade() -> None:
    bind = op.get_bind()
    for role_id, permissions in bind.execute(sa.text("SELECT id, permissions FROM role")).all():
        granted = json.loads(permissions or "[]")
        kept = [p for p in granted if p not in GRANTS]
        if kept != granted:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(kept), "id": role_id},
            )
    op.drop_index("ix_owner_change_customer", table_name="owner_change")
    op.drop_table("owner_change")
    op.drop_index("ix_customer_status_owner", table_name="customer")
    # Plain DROP COLUMN (SQLite 3.35+): no table copy, the search triggers stay.
    op.drop_column("customer", "owner_id")
    op.drop_column("role", "data_scope")
    op.drop_index("ix_app_user_team_id", table_name="app_user")
    op.drop_column("app_user", "team_id")
    op.drop_table("team")
