"""Sending webhook deliveries (services/integrations/webhooks.py has the endpoints and the
outbox): the sender loop every app process runs, one claimed delivery at a time, the body
built when it is sent, signed, retried with backoff; and the delivery log's upkeep."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import random
import secrets
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import and_, delete, func, or_, select, update

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_connection, write_session
from meiqia_app.models import Customer, WebhookDelivery, WebhookEndpoint
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.errors import NotFound
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor
from meiqia_app.services.integrations.webhook_security import (
    AddressRefused,
    decrypt_secret,
    resolve_target,
    sign,
    url_for_audit,
)
from meiqia_app.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 6 * 3600
CLAIM_GRACE_SECONDS = 30
POLL_SECONDS = 1.0
BATCH = 20
MAX_ERROR = 255
KEEP_LOG_DAYS = 30
SIGNATURE_HEADER = "X-Meiqia-Signature"
USER_AGENT = "meiqia-webhooks/1"

E = WebhookEndpoint.__table__.c
D = WebhookDelivery.__table__.c
_C = Customer.__table__.c


def iso_time(value) -> str | None:
    """A stored time as ISO 8601 UTC with a Z (None stays None)."""
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


# --- sending ---------------------------------------------------------------------------------

_wake_event = threading.Event()


def wake() -> None:
    _wake_event.set()


def wake_after_commit(session) -> None:
    """Wake this process's sender when the transaction commits (a Core connection: the next poll)."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session as OrmSession

    if isinstance(session, OrmSession) and not session.info.get("webhooks_wake"):
        session.info["webhooks_wake"] = True

        def after_commit(_session) -> None:
            wake()

        sa_event.listen(session, "after_commit", after_commit, once=True)


_WEBHOOK_ACTOR_PERMISSIONS = {
    "masked": frozenset({"customer.view", "customer.delete"}),
    "full": frozenset({"customer.view", "customer.view_sensitive", "customer.delete"}),
}


def _customer_payload(customer_id: int | None, level: str) -> dict | None:
    """The customer as they are now, at the endpoint's level; erased or gone: the id and that fact."""
    if customer_id is None:
        return None
    from meiqia_app.services.customers import profile as customers

    if level not in _WEBHOOK_ACTOR_PERMISSIONS:
        with read_connection() as conn:
            found = CustomerAccess(SYSTEM_ACTOR).find_row(conn, customer_id, _C.erased_at)
        if found is None:
            return {"id": customer_id, "deleted": True}
        return {"id": customer_id, "erased": True} if found.erased_at is not None else {"id": customer_id}
    actor = Actor(
        user_id=None,
        username="webhooks",
        display_name="webhooks",
        role_name="system",
        permissions=_WEBHOOK_ACTOR_PERMISSIONS[level],
        api_key_id=0,
    )
    try:
        record = customers.get_customer_record(actor, customer_id)
    except NotFound:
        return {"id": customer_id, "deleted": True}
    if record.erased:
        return {"id": customer_id, "erased": True}
    return dataclasses.asdict(record)


def build_body(delivery, level: str) -> bytes:
    data = json.loads(delivery.details or "{}")
    customer = _customer_payload(delivery.customer_id, level)
    if customer is not None:
        data["customer"] = customer
    payload = {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created_at": iso_time(delivery.created_at),
        "data": data,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def backoff_seconds(attempts: int) -> float:
    """Delay before the next try after ``attempts`` failed ones: 30 s, 1 min, 2 min, … at most 6 h (±10 %)."""
    delay = min(BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1), BACKOFF_MAX_SECONDS)
    return delay * random.uniform(0.9, 1.1)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """(status code or None, error text). Connects to the address checked just now."""
    import httpx

    try:
        scheme, host, port, address = resolve_target(url)
    except AddressRefused as refused:
        return None, f"refused: {refused.key}"
    parts = urlsplit(url)
    netloc_host = f"[{address}]" if ":" in address else address
    default_port = 443 if scheme == "https" else 80
    target = urlunsplit(
        (scheme, netloc_host if port == default_port else f"{netloc_host}:{port}", parts.path or "/", parts.query, "")
    )
    host_header = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    timeout = get_settings().webhook_timeout_seconds
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = client.post(
                target,
                content=body,
                headers={**headers, "Host": host_header},
                extensions={"sni_hostname": host} if scheme == "https" else {},
            )
        return response.status_code, ("" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}")
    except httpx.TimeoutException:
        return None, "timeout"
    except httpx.HTTPError as error:
        return None, f"{type(error).__name__}"[:MAX_ERROR]


def _claim(delivery_id: int, now: dt.datetime) -> str | None:
    token = secrets.token_hex(16)
    until = now + dt.timedelta(seconds=get_settings().webhook_timeout_seconds + CLAIM_GRACE_SECONDS)
    with get_engine().begin() as conn:
        claimed = conn.execute(
            update(WebhookDelivery.__table__)
            .where(
                D.id == delivery_id,
                D.status == "pending",
                or_(D.claimed_until.is_(None), D.claimed_until < now),
            )
            .values(claim_token=token, claimed_until=until)
        ).rowcount
    return token if claimed == 1 else None


def _due_ids(now: dt.datetime, limit: int) -> list[int]:
    with read_connection() as conn:
        return list(
            conn.execute(
                select(D.id)
                .select_from(WebhookDelivery.__table__.join(WebhookEndpoint.__table__, E.id == D.endpoint_id))
                .where(
                    D.status == "pending",
                    D.next_attempt_at <= now,
                    or_(D.claimed_until.is_(None), D.claimed_until < now),
                    E.enabled.is_(True),
                )
                .order_by(D.next_attempt_at, D.id)
                .limit(limit)
            ).scalars()
        )


def _attempt(delivery_id: int, token: str, now: dt.datetime) -> str:
    """Send one claimed delivery and record the outcome; returns the new status."""
    settings = get_settings()
    window = dt.timedelta(hours=settings.webhook_retry_hours)
    with read_connection() as conn:
        delivery = conn.execute(select(WebhookDelivery.__table__).where(D.id == delivery_id)).first()
        endpoint = (
            conn.execute(select(WebhookEndpoint.__table__).where(E.id == delivery.endpoint_id)).first()
            if delivery is not None
            else None
        )
    if delivery is None or endpoint is None or delivery.claim_token != token:
        return "gone"
    secret = decrypt_secret(endpoint.secret_enc)
    body = build_body(delivery, endpoint.data_level)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Meiqia-Event": delivery.event_type,
        "X-Meiqia-Event-Id": delivery.event_id,
        "X-Meiqia-Delivery": str(delivery.id),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    code, error = _post(endpoint.url, body, headers) if secret else (None, "secret unreadable")
    ok = code is not None and 200 <= code < 300
    finished = utcnow() if now is None else now
    attempts = delivery.attempts + 1
    first = as_utc(delivery.first_attempt_at) if delivery.first_attempt_at else finished
    if ok:
        status, next_at = "succeeded", as_utc(delivery.next_attempt_at)
    elif finished - first >= window:
        status, next_at = "failed", as_utc(delivery.next_attempt_at)
    else:
        status, next_at = "pending", finished + dt.timedelta(seconds=backoff_seconds(attempts))
    with write_session() as session:
        done = session.execute(
            update(WebhookDelivery.__table__)
            .where(D.id == delivery_id, D.claim_token == token)
            .values(
                status=status,
                attempts=attempts,
                first_attempt_at=first,
                next_attempt_at=next_at,
                last_attempt_at=finished,
                last_status_code=code,
                last_error=error[:MAX_ERROR],
                delivered_at=finished if ok else None,
                claim_token=None,
                claimed_until=None,
            )
        ).rowcount
        if not done:
            return "gone"
        row = session.get(WebhookEndpoint, endpoint.id)
        if row is None:
            return status
        if ok:
            row.last_success_at = finished
            row.failing_since = None
            row.last_error = ""
        else:
            row.failing_since = as_utc(row.failing_since) if row.failing_since else finished
            row.last_error = (error or "")[:MAX_ERROR]
            if row.enabled and finished - row.failing_since >= window:
                row.enabled = False
                row.disabled_at = finished
                since = row.failing_since.isoformat().replace("+00:00", "Z")
                row.disabled_reason = f"failing since {since}: {row.last_error}"[:MAX_ERROR]
                audit.record(
                    session,
                    SYSTEM_ACTOR,
                    "webhook.disabled",
                    target_type="webhook",
                    target_id=row.id,
                    details={"failing_since": since, "last_error": row.last_error, "url": url_for_audit(row.url)},
                )
        session.add(row)
    return status


def deliver_due(now: dt.datetime | None = None, limit: int = BATCH) -> dict[str, int]:
    """Send what is due (claimed one by one: with several workers each row goes out once)."""
    moment = now or utcnow()
    counts: dict[str, int] = {}
    for delivery_id in _due_ids(moment, limit):
        token = _claim(delivery_id, moment)
        if token is None:
            continue
        status = _attempt(delivery_id, token, now)
        counts[status] = counts.get(status, 0) + 1
    return counts


def start_delivery_thread() -> threading.Thread | None:
    """The sender loop of this process (every worker runs one; claims keep them apart)."""
    global _thread
    with _thread_lock:
        if _thread is not None and _thread.is_alive():
            return _thread

        def run() -> None:
            while True:
                try:
                    counts = deliver_due()
                except Exception:  # a broken database moment must not end the loop
                    log.exception("webhook deliveries failed")
                    counts = {}
                if not counts:
                    _wake_event.wait(POLL_SECONDS)
                    _wake_event.clear()

        _thread = threading.Thread(target=run, name="meiqia-webhooks", daemon=True)
        _thread.start()
        return _thread


_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def pending_count(endpoint_id: int | None = None) -> int:
    statement = select(func.count()).select_from(WebhookDelivery.__table__).where(D.status == "pending")
    if endpoint_id is not None:
        statement = statement.where(D.endpoint_id == endpoint_id)
    with read_connection() as conn:
        return conn.execute(statement).scalar_one()


def _finished_before(edge: dt.datetime):
    return and_(D.status != "pending", D.created_at < edge)


def finished_deliveries(edge: dt.datetime, sample: int) -> tuple[int, list[str]]:
    """How many finished deliveries (succeeded or failed) were made before ``edge``, and a few of them."""
    with read_connection() as conn:
        count = conn.execute(
            select(func.count()).select_from(WebhookDelivery.__table__).where(_finished_before(edge))
        ).scalar_one()
        rows = conn.execute(
            select(D.id, D.event_type, D.status).where(_finished_before(edge)).order_by(D.id).limit(sample)
        ).all()
    return int(count), [f"#{i} {event} ({status})" for i, event, status in rows]


def delete_finished_deliveries(edge: dt.datetime, batch: int) -> int:
    """Delete up to ``batch`` of the oldest finished deliveries made before ``edge`` (the
    retention policy "webhook_deliveries" calls this until it returns 0)."""
    with get_engine().begin() as conn:
        ids = list(conn.execute(select(D.id).where(_finished_before(edge)).order_by(D.id).limit(batch)).scalars())
        if ids:
            conn.execute(delete(WebhookDelivery.__table__).where(D.id.in_(ids), _finished_before(edge)))
    return len(ids)


def prune(now: dt.datetime | None = None) -> int:
    """Finished deliveries older than KEEP_LOG_DAYS (the retention policy's default; the
    policy on /admin/retention decides at night, this is for scripts and tests)."""
    edge = (now or utcnow()) - dt.timedelta(days=KEEP_LOG_DAYS)
    removed = 0
    while deleted := delete_finished_deliveries(edge, 5000):
        removed += deleted
    return removed
