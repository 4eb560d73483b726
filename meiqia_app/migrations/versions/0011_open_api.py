"""The open API: keys, idempotent answers, ingested record ids, webhooks

- ``api_key``: keys of connected systems (only a SHA-256 of each key), their
  scopes, last use and revocation.
- ``api_idempotency``: the first answer to a POST sent with an
  ``Idempotency-Key`` (24 h).
- ``ingested_event``: client event ids already taken (a record sent again is
  a no-op), kept 30 days; ``external_ref``: a sender's conversation and order
  ids -> our rows.
- ``webhook_endpoint`` / ``webhook_delivery``: subscriptions and the
  persisted outbox with its retries and log.
- ``customer.activity_seq`` (bumped by ingestion; an open customer page polls
  it), ``api_key_id`` on orders, conversations and behaviour events (the
  timeline says "via API: NAME"): added columns with a constant default, no
  table rewrite on SQLite or PostgreSQL 11+.
- ``ix_customer_status_updated``: the API's ``updated_since`` walk, then
  ``ANALYZE customer``: without statistics for the new index SQLite's planner
  took it for a selective one and walked all active customers through it for
  every list search (a 2-character name at 1M: 30 -> 300 ms). At 1M customers
  on SQLite: index 2 s, ANALYZE 4 s.
- The admin role gets the new permissions apikey.manage, webhook.manage and
  event.ingest (roles an admin edited keep their edits otherwise).

Revision ID: 0011_open_api
Revises: 0010_masked_search
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011_open_api"
down_revision: str | None = "0010_masked_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_ADMIN_PERMISSIONS = ("apikey.manage", "webhook.manage", "event.ingest")


def _string(length: int):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def _time():
    return sqlmodel.sql.sqltypes.UTCDateTime()


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _string(48), nullable=False),
        sa.Column("prefix", _string(16), nullable=False),
        sa.Column("key_hash", _string(64), nullable=False),
        sa.Column("scopes", _string(255), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by_name", _string(64), nullable=False),
        sa.Column("last_used_at", _time(), nullable=True),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.Column("revoked_by_name", _string(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "api_idempotency",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("idem_key", _string(255), nullable=False),
        sa.Column("method", _string(8), nullable=False),
        sa.Column("path", _string(255), nullable=False),
        sa.Column("body_hash", _string(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("content_type", _string(64), nullable=False),
        sa.Column("response_body", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_key.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("api_key_id", "idem_key", name="uq_api_idempotency_key"),
    )
    op.create_index("ix_api_idempotency_created", "api_idempotency", ["created_at"])
    op.create_table(
        "ingested_event",
        sa.Column("event_id", _string(128), nullable=False),
        sa.Column("kind", _string(16), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("received_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_ingested_event_received", "ingested_event", ["received_at"])
    op.create_table(
        "external_ref",
        sa.Column("kind", _string(16), nullable=False),
        sa.Column("ref", _string(128), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "ref"),
    )
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", _string(2048), nullable=False),
        sa.Column("events", sa.Text(), server_default="[]", nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("data_level", _string(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by_name", _string(64), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("last_success_at", _time(), nullable=True),
        sa.Column("failing_since", _time(), nullable=True),
        sa.Column("last_error", _string(255), nullable=False),
        sa.Column("disabled_at", _time(), nullable=True),
        sa.Column("disabled_reason", _string(255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("event_id", _string(36), nullable=False),
        sa.Column("event_type", _string(32), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("status", _string(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_attempt_at", _time(), nullable=True),
        sa.Column("next_attempt_at", _time(), nullable=False),
        sa.Column("claim_token", _string(32), nullable=True),
        sa.Column("claimed_until", _time(), nullable=True),
        sa.Column("last_attempt_at", _time(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", _string(255), nullable=False),
        sa.Column("delivered_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoint.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_delivery_due", "webhook_delivery", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_delivery_endpoint", "webhook_delivery", ["endpoint_id", "id"])
    op.create_index("ix_webhook_delivery_created", "webhook_delivery", ["created_at"])

    # Plain ADD COLUMN (no batch mode): no table copy of customer or the activity tables.
    op.add_column("customer", sa.Column("activity_seq", sa.Integer(), server_default="0", nullable=False))
    for table in ("customer_order", "conversation", "behavior_event"):
        op.add_column(table, sa.Column("api_key_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_customer_status_updated",
        "customer",
        ["status", "updated_at", "id"],
        sqlite_where=sa.text("status != 'trashed'"),
    )
    op.execute("ANALYZE customer")

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
    op.drop_index("ix_customer_status_updated", table_name="customer")
    # Plain DROP COLUMN (SQLite 3.35+): no table copy, the search triggers stay.
    for table in ("behavior_event", "conversation", "customer_order"):
        op.drop_column(table, "api_key_id")
    op.drop_column("customer", "activity_seq")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_endpoint")
    op.drop_table("external_ref")
    op.drop_index("ix_ingested_event_received", table_name="ingested_event")
    op.drop_table("ingested_event")
    op.drop_index("ix_api_idempotency_created", table_name="api_idempotency")
    op.drop_table("api_idempotency")
    op.drop_table("api_key")
