"""audit integrity: a MAC on every new audit entry, a MACed head and upgrade point

- ``audit_entry.entry_mac``: HMAC-SHA256 of the entry's canonical form with a
  key derived from the secret key (services/platform/keys.py); "" on existing entries.
- ``app_setting['audit.mac_from']``: the first id that must carry a MAC (the
  next id at upgrade time), MACed so it cannot be moved later; the chain head
  ``audit.chain_head`` is rewritten with its MAC (an empty log gets a head of
  id 0). Entries before the upgrade point keep being checked by their hashes
  and links, and by the anchors written from now on.

Needs the application's secret key (MEIQIA_SECRET_KEY or data_dir/secret.key):
run it with the same settings as the app. A column added with a default:
instant on SQLite and PostgreSQL at any size.

Revision ID: 0009_audit_integrity
Revises: 0008_ip_throttle_job_owner
"""

import datetime as dt
import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009_audit_integrity"
down_revision: str | None = "0008_ip_throttle_job_owner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HEAD_KEY = "audit.chain_head"
MAC_FROM_KEY = "audit.mac_from"
GENESIS = "0" * 64


def upgrade() -> None:
    from meiqia_app.services.audit.log import head_value, mac_from_value

    op.add_column(
        "audit_entry",
        sa.Column("entry_mac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default=""),
    )
    bind = op.get_bind()
    last = bind.execute(sa.text("SELECT id, entry_hash FROM audit_entry ORDER BY id DESC LIMIT 1")).first()
    last_id, last_hash = (int(last[0]), last[1]) if last else (0, GENESIS)
    head_id, head_hash = last_id, last_hash
    stored = bind.execute(sa.text("SELECT value FROM app_setting WHERE key = :k"), {"k": HEAD_KEY}).scalar()
    if stored is not None:
        # Keep what the old head said: a log already cut short must keep showing it.
        try:
            head_id, head_hash = int(json.loads(stored)["id"]), str(json.loads(stored)["hash"])
        except (ValueError, TypeError, KeyError):
            pass
    settings = sa.table(
        "app_setting",
        sa.column("key", sa.String),
        sa.column("value", sa.Text),
        sa.column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime),
        sa.column("updated_by_name", sa.String),
    )
    now = dt.datetime.now(dt.UTC)
    for key, value in ((MAC_FROM_KEY, mac_from_value(last_id + 1)), (HEAD_KEY, head_value(head_id, head_hash))):
        bind.execute(sa.delete(settings).where(settings.c.key == key))
        bind.execute(sa.insert(settings).values(key=key, value=value, updated_at=now, updated_by_name="migration"))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM app_setting WHERE key = :k"), {"k": MAC_FROM_KEY})
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_column("entry_mac")
