"""The open API: keys, idempotent answers, ingested record ids, webhooks and their deliveries."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow


class ApiKey(SQLModel, table=True):
    """A key a connected system authenticates with. Only a hash of the key is stored."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=48, unique=True)
    # The first characters of the key ("mqk_AbCd1234"): shown in lists so people can tell keys apart.
    prefix: str = Field(max_length=16)
    # SHA-256 of the whole key, hex. The key itself is random (32 bytes): no salt or slow hash needed.
    key_hash: str = Field(max_length=64, unique=True)
    scopes: str = Field(default="", max_length=255)  # comma-separated, see services/integrations/api_keys.SCOPES
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by_name: str = Field(default="", max_length=64)
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revoked_by_name: str | None = Field(default=None, max_length=64)


class ApiIdempotency(SQLModel, table=True):
    """The first answer to a POST sent with an ``Idempotency-Key`` (kept 24 h)."""

    __tablename__ = "api_idempotency"
    __table_args__ = (
        UniqueConstraint("api_key_id", "idem_key", name="uq_api_idempotency_key"),
        Index("ix_api_idempotency_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="api_key.id", ondelete="CASCADE")
    idem_key: str = Field(max_length=255)
    method: str = Field(max_length=8)
    path: str = Field(max_length=255)
    body_hash: str = Field(max_length=64)
    status_code: int = 0  # 0 while the first request is still being answered
    content_type: str = Field(default="", max_length=64)
    response_body: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    created_at: dt.datetime = Field(default_factory=utcnow)


class IngestedEvent(SQLModel, table=True):
    """A behaviour record's client ``event_id``: a record sent again is recognised (30 days)."""

    __tablename__ = "ingested_event"
    __table_args__ = (Index("ix_ingested_event_received", "received_at"),)

    event_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=16)
    customer_id: int | None = None
    api_key_id: int | None = None
    received_at: dt.datetime = Field(default_factory=utcnow)


class ExternalRef(SQLModel, table=True):
    """A sender's own id of a conversation or an order -> our row (later records update it)."""

    __tablename__ = "external_ref"

    kind: str = Field(primary_key=True, max_length=16)  # conversation | order
    ref: str = Field(primary_key=True, max_length=128)
    row_id: int
    created_at: dt.datetime = Field(default_factory=utcnow)


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoint"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048)
    events: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))  # JSON list
    # The signing secret, encrypted with the app's secret key (like TOTP secrets).
    secret_enc: str = Field(sa_column=Column(Text, nullable=False))
    # What deliveries may carry about a customer: what the endpoint's creator may see
    # (full / masked / ids), so a webhook is no way around masking.
    data_level: str = Field(default="ids", max_length=8)
    enabled: bool = True
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by_name: str = Field(default="", max_length=64)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    last_success_at: dt.datetime | None = None
    # Set at the first failure after a success; an endpoint failing for 24 h is disabled.
    failing_since: dt.datetime | None = None
    last_error: str = Field(default="", max_length=255)
    disabled_at: dt.datetime | None = None
    disabled_reason: str = Field(default="", max_length=255)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the outbox row, its retries and its log line.

    The payload is built when it is sent, from the customer as they are then
    (an erased customer is sent as an id and ``erased: true``); ``details``
    holds only what is not personal (field names, tag names, ids).
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_delivery_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="webhook_endpoint.id", ondelete="CASCADE")
    event_id: str = Field(max_length=36)
    event_type: str = Field(max_length=32)
    customer_id: int | None = None
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: dt.datetime = Field(default_factory=utcnow)
    status: str = Field(default="pending", max_length=12)  # pending | succeeded | failed
    attempts: int = 0
    first_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime = Field(default_factory=utcnow)
    # A worker's claim: (token, until). Another worker takes the row only after it expired.
    claim_token: str | None = Field(default=None, max_length=32)
    claimed_until: dt.datetime | None = None
    last_attempt_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str = Field(default="", max_length=255)
    delivered_at: dt.datetime | None = None
