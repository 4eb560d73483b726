"""Failed logins per client address; which process runs a job or an export

- ``login_address_throttle``: failed logins counted per client address (any
  usernames), so one address trying many names is refused for a while.
- ``job.owner`` and ``export_job.owner``: the process that runs the row
  (host, boot id, pid and its start time). At start, a job left "running" by
  a process of this machine that no longer exists is taken over (or, for an
  export, failed) at once instead of after the heartbeat goes stale.

Revision ID: 0008_ip_throttle_job_owner
Revises: 0007_new_customer_rule
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_ip_throttle_job_owner"
down_revision: str | None = "0007_new_customer_rule"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_address_throttle",
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("locked_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_ip"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("owner")
    op.drop_table("login_address_throttle")
