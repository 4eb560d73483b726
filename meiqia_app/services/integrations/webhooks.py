"""Webhooks: signed notifications of customer changes to the systems a team connects.

Outbox. A service that changes a customer calls :func:`emit` inside its own
write transaction: one ``webhook_delivery`` row per enabled endpoint that
subscribed to the event. A change that rolls back sends nothing; a committed
one is sent even if the process dies right after (the row is in the
database).

Delivery (webhook_delivery.py). Every app process runs ``start_delivery_thread``. It claims due
rows one by one with a compare-and-set (``claim_token`` / ``claimed_until``),
so with several workers each delivery is sent by one of them; a claim of a
process that died expires and another process takes the row over. The body
is built when it is sent, from the customer as they are then: an erased
customer is sent as ``{"id": …, "erased": true}`` and nothing else, so an
erasure reaches every later delivery, retries included. What a delivery may
carry about a customer is what the endpoint's creator may see
(``data_level``): full, masked or ids only.

Each POST is signed: ``X-Meiqia-Signature: t=<unix seconds>,v1=<hex of
HMAC-SHA256(secret, "<t>.<raw body>")>``, with ``X-Meiqia-Event`` (the type),
``X-Meiqia-Event-Id`` (stable across retries: de-duplicate on it) and
``X-Meiqia-Delivery`` (the delivery's id). A non-2xx answer, a timeout or a
refused address is retried with exponential backoff (30 s doubling, at most
6 h apart) for ``MEIQIA_WEBHOOK_RETRY_HOURS`` (24), then the delivery is
marked failed. An endpoint that has been failing for as long is disabled, and
the admin page says since when and why.

Server-side request forgery. URLs must be http(s) without credentials; the
host is resolved and every address must be public (not loopback, private,
link-local, shared, reserved or multicast) unless
``MEIQIA_WEBHOOKS_ALLOW_PRIVATE=true``. The check runs again at each send,
and the request goes to the address that was checked (the Host header and
TLS name stay the URL's), so a name that later resolves elsewhere (DNS
rebinding) cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from sqlalchemy import delete, insert, literal, select, update

from meiqia_app.db import read_connection, write_session
from meiqia_app.models import WebhookDelivery, WebhookEndpoint
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations.webhook_delivery import deliver_due as deliver_due  # tests and scripts
from meiqia_app.services.integrations.webhook_delivery import iso_time, wake, wake_after_commit
from meiqia_app.services.integrations.webhook_security import (
    clean_secret,
    clean_url,
    data_level_of,
    encrypt_secret,
    new_secret,
    url_for_audit,
)
from meiqia_app.timeutil import utcnow

EVENT_TYPES: tuple[str, ...] = (
    "customer.created",
    "customer.updated",
    "customer.tagged",
    "customer.merged",
    "customer.erased",
    "customer.archived",
    "export.completed",
)
DATA_LEVELS = ("ids", "masked", "full")

E = WebhookEndpoint.__table__.c
D = WebhookDelivery.__table__.c


def clean_events(raw) -> list[str]:
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, (list, tuple, set, frozenset)) or not raw:
        raise ValidationError.single("events", "webhook.events_required")
    values = [str(v) for v in raw]
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise ValidationError.single("events", "webhook.unknown_event", names=", ".join(unknown[:5])[:200])
    return [event for event in EVENT_TYPES if event in values]


# --- views ------------------------------------------------------------------------------------


@dataclasses.dataclass
class EndpointView:
    id: int
    url: str
    events: list[str]
    enabled: bool
    data_level: str
    created_at: str | None
    created_by: str
    updated_at: str | None
    last_success_at: str | None
    failing_since: str | None
    last_error: str
    disabled_at: str | None
    disabled_reason: str


@dataclasses.dataclass
class DeliveryView:
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    customer_id: int | None
    status: str
    attempts: int
    created_at: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str
    delivered_at: str | None


def _endpoint_view(row) -> EndpointView:
    return EndpointView(
        id=row.id,
        url=row.url,
        events=json.loads(row.events or "[]"),
        enabled=bool(row.enabled),
        data_level=row.data_level,
        created_at=iso_time(row.created_at),
        created_by=row.created_by_name or "",
        updated_at=iso_time(row.updated_at),
        last_success_at=iso_time(row.last_success_at),
        failing_since=iso_time(row.failing_since),
        last_error=row.last_error or "",
        disabled_at=iso_time(row.disabled_at),
        disabled_reason=row.disabled_reason or "",
    )


def _delivery_view(row) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        customer_id=row.customer_id,
        status=row.status,
        attempts=row.attempts,
        created_at=iso_time(row.created_at),
        last_attempt_at=iso_time(row.last_attempt_at),
        next_attempt_at=iso_time(row.next_attempt_at) if row.status == "pending" else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error or "",
        delivered_at=iso_time(row.delivered_at),
    )


def _id(value) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise NotFound() from None
    if number <= 0:
        raise NotFound()
    return number


# --- endpoints ----------------------------------------------------------------------------------


def list_endpoints(actor: Actor) -> list[EndpointView]:
    require(actor, "webhook.manage", action="webhook.list", target_type="webhook")
    with read_connection() as conn:
        rows = conn.execute(select(WebhookEndpoint.__table__).order_by(E.id)).all()
    return [_endpoint_view(r) for r in rows]


def get_endpoint(actor: Actor, endpoint_id) -> EndpointView:
    endpoint_id = _id(endpoint_id)
    require(actor, "webhook.manage", action="webhook.view", target_type="webhook", target_id=endpoint_id)
    with read_connection() as conn:
        row = conn.execute(select(WebhookEndpoint.__table__).where(E.id == endpoint_id)).first()
    if row is None:
        raise NotFound()
    return _endpoint_view(row)


def create_endpoint(actor: Actor, url, events, secret=None, enabled: bool = True) -> tuple[EndpointView, str]:
    """A new endpoint; returns its view and the secret when one was generated ("" when given)."""
    require(actor, "webhook.manage", action="webhook.create", target_type="webhook")
    url = clean_url(url)
    chosen = clean_events(events)
    generated = secret in (None, "")
    secret = new_secret() if generated else clean_secret(secret)
    now = utcnow()
    with write_session() as session:
        row = WebhookEndpoint(
            url=url,
            events=json.dumps(chosen),
            secret_enc=encrypt_secret(secret),
            data_level=data_level_of(actor),
            enabled=bool(enabled),
            created_at=now,
            created_by_name=actor.username,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor,
            "webhook.create",
            target_type="webhook",
            target_id=row.id,
            details={"url": url_for_audit(url), "events": chosen, "enabled": bool(enabled), "level": row.data_level},
        )
        view = _endpoint_view(row)
    return view, secret if generated else ""


def update_endpoint(actor: Actor, endpoint_id, changes: dict) -> EndpointView:
    """Change url / events / secret / enabled (only the keys present). Re-enabling clears the failure."""
    endpoint_id = _id(endpoint_id)
    require(actor, "webhook.manage", action="webhook.update", target_type="webhook", target_id=endpoint_id)
    if not isinstance(changes, dict):
        raise ValidationError.single("body", "error.bad_choice")
    values: dict = {}
    if changes.get("url") is not None:
        values["url"] = clean_url(changes["url"])
    if changes.get("events") is not None:
        values["events"] = json.dumps(clean_events(changes["events"]))
    if changes.get("secret") not in (None, ""):
        values["secret_enc"] = encrypt_secret(clean_secret(changes["secret"]))
    if changes.get("enabled") is not None:
        if not isinstance(changes["enabled"], bool):
            raise ValidationError.single("enabled", "error.bad_choice")
        values["enabled"] = changes["enabled"]
    with write_session() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise NotFound()
        if values.get("enabled") and not row.enabled:
            values.update(failing_since=None, disabled_at=None, disabled_reason="", last_error="")
        # Whoever edits it answers for what it may carry from now on.
        values["data_level"] = data_level_of(actor)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        session.add(row)
        audit.record(
            session,
            actor,
            "webhook.update",
            target_type="webhook",
            target_id=row.id,
            details={
                "fields": sorted(k for k in values if k not in ("failing_since", "disabled_at", "disabled_reason")),
                "url": url_for_audit(row.url),
            },
        )
        session.flush()
        view = _endpoint_view(row)
    return view


def delete_endpoint(actor: Actor, endpoint_id) -> None:
    endpoint_id = _id(endpoint_id)
    require(actor, "webhook.manage", action="webhook.delete", target_type="webhook", target_id=endpoint_id)
    with write_session() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise NotFound()
        session.execute(delete(WebhookDelivery.__table__).where(D.endpoint_id == endpoint_id))
        url = row.url
        session.delete(row)
        audit.record(
            session,
            actor,
            "webhook.delete",
            target_type="webhook",
            target_id=endpoint_id,
            details={"url": url_for_audit(url)},
        )


def list_deliveries(actor: Actor, endpoint_id, limit: int = 50, before_id: int | None = None) -> list[DeliveryView]:
    """The delivery log of an endpoint, newest first."""
    endpoint_id = _id(endpoint_id)
    require(actor, "webhook.manage", action="webhook.deliveries", target_type="webhook", target_id=endpoint_id)
    try:
        limit = max(1, min(200, int(limit)))
    except (TypeError, ValueError):
        limit = 50
    statement = select(WebhookDelivery.__table__).where(D.endpoint_id == endpoint_id)
    if before_id:
        statement = statement.where(D.id < _id(before_id))
    with read_connection() as conn:
        if conn.execute(select(E.id).where(E.id == endpoint_id)).first() is None:
            raise NotFound()
        rows = conn.execute(statement.order_by(D.id.desc()).limit(limit)).all()
    return [_delivery_view(r) for r in rows]


def resend_delivery(actor: Actor, delivery_id) -> DeliveryView:
    """ "Send again": the same event (same event id) as a new delivery, sent at once."""
    delivery_id = _id(delivery_id)
    require(actor, "webhook.manage", action="webhook.resend", target_type="webhook_delivery", target_id=delivery_id)
    now = utcnow()
    with write_session() as session:
        old = session.get(WebhookDelivery, delivery_id)
        if old is None:
            raise NotFound()
        row = WebhookDelivery(
            endpoint_id=old.endpoint_id,
            event_id=old.event_id,
            event_type=old.event_type,
            customer_id=old.customer_id,
            details=old.details,
            created_at=old.created_at,
            next_attempt_at=now,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor,
            "webhook.resend",
            target_type="webhook",
            target_id=old.endpoint_id,
            details={"delivery_id": delivery_id, "new_delivery_id": row.id, "event": old.event_type},
        )
        view = _delivery_view(row)
    wake()
    return view


# --- the outbox -------------------------------------------------------------------------------


def _subscribers(session, event_type: str) -> list[int]:
    rows = session.execute(select(E.id, E.events).where(E.enabled.is_(True))).all()
    return [r.id for r in rows if event_type in json.loads(r.events or "[]")]


def has_subscribers(session, event_type: str) -> bool:
    """Whether any enabled endpoint wants ``event_type`` (bulk callers skip collecting ids otherwise)."""
    return bool(_subscribers(session, event_type))


def emit(session, event_type: str, customer_id: int | None = None, details: dict | None = None) -> int:
    """Queue ``event_type`` for every enabled endpoint subscribed to it, in the caller's transaction.

    ``details``: what the receiver needs beyond the customer (field names, tag
    names, ids), never personal values: they are stored until sent.
    """
    return emit_many(session, event_type, [customer_id], details)


def emit_many(session, event_type: str, customer_ids, details: dict | None = None) -> int:
    """:func:`emit` for several customers (bulk actions), one statement."""
    if event_type not in EVENT_TYPES:
        raise ValueError(event_type)
    endpoints = _subscribers(session, event_type)
    ids = list(customer_ids)
    if not endpoints or not ids:
        return 0
    now = utcnow()
    detail_text = json.dumps(details or {}, ensure_ascii=False, sort_keys=True)
    rows = []
    for customer_id in ids:
        event_id = str(uuid.uuid4())
        for endpoint_id in endpoints:
            rows.append(
                {
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "customer_id": customer_id,
                    "details": detail_text,
                    "created_at": now,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": "",
                }
            )
    session.execute(insert(WebhookDelivery.__table__), rows)
    wake_after_commit(session)
    return len(rows)


def emit_for_select(session, event_type: str, customer_ids, details: dict | None = None) -> int:
    """:func:`emit_many` for the customers a query names (``customer_ids``: a SELECT of one
    column of ids), set-based: one INSERT … SELECT per subscribed endpoint, nothing read
    into Python, nothing written when no enabled endpoint wants ``event_type``. Each
    customer's event has one id for every endpoint (a per-call random UUID prefix and the
    customer id: ``xxxxxxxx-xxxx-4xxx-8xxx-<12-digit id>``), as :func:`emit_many` gives."""
    if event_type not in EVENT_TYPES:
        raise ValueError(event_type)
    endpoints = _subscribers(session, event_type)
    if not endpoints:
        return 0
    from meiqia_app.dbadapter import get_adapter

    adapter = get_adapter(session.get_bind())
    now = utcnow()
    detail_text = json.dumps(details or {}, ensure_ascii=False, sort_keys=True)
    prefix = str(uuid.uuid4())[:24]
    ids = customer_ids.subquery("emitted")
    customer_id = ids.c[0]
    written = 0
    for endpoint_id in endpoints:
        written += session.execute(
            insert(WebhookDelivery.__table__).from_select(
                [
                    "endpoint_id",
                    "event_id",
                    "event_type",
                    "customer_id",
                    "details",
                    "created_at",
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "last_error",
                ],
                select(
                    literal(endpoint_id, D.endpoint_id.type),
                    literal(prefix) + adapter.padded_number(customer_id, 12),
                    literal(event_type),
                    customer_id,
                    literal(detail_text),
                    literal(now, D.created_at.type),
                    literal("pending"),
                    literal(0, D.attempts.type),
                    literal(now, D.next_attempt_at.type),
                    literal(""),
                ),
            )
        ).rowcount
    if written:
        wake_after_commit(session)
    return written


def scrub_customers(session, customer_ids) -> int:
    """Erasure: deliveries about these customers keep no details (the body is built at send
    time from the erased row, so nothing personal goes out after an erasure anyway)."""
    ids = list(customer_ids)
    if not ids:
        return 0
    return session.execute(
        update(WebhookDelivery.__table__).where(D.customer_id.in_(ids), D.details != "{}").values(details="{}")
    ).rowcount
