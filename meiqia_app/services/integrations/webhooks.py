"""Webhooks: signed notifications of customer changes to the systems a team connects.

Outbox. A service that changes a customer calls :func:`emit` inside its own
write transaction: one ``webhook_delivery`` row per enabled endpoint that
subscribed to the event. A change that rolls back sends nothing; a committed
one is sent even if the process dies right after (the row is in the
database).

Delivery. Every app process runs :func:`start_delivery_thread`. It claims due
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

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import and_, delete, func, insert, or_, select, update

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_connection, write_session
from meiqia_app.models import Customer, WebhookDelivery, WebhookEndpoint
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import keys
from meiqia_app.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

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
MAX_URL = 2048
MIN_SECRET = 16
MAX_SECRET = 128
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


# --- secrets ------------------------------------------------------------------------------


def _fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(keys.derive(keys.WEBHOOK_SECRET)))


def _encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def _decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:  # the secret key changed under the database
        return ""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Meiqia-Signature`` value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --- addresses --------------------------------------------------------------------------------


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""

    def __init__(self, key: str, host: str = ""):
        super().__init__(key)
        self.key = key
        self.host = host


def _address_allowed(address: ipaddress._BaseAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve_target(url: str, allow_private: bool | None = None) -> tuple[str, str, int, str]:
    """(scheme, host, port, the address to connect to) for ``url``; raises AddressRefused.

    Every address the host resolves to must be allowed (a name with one public
    and one private address is refused: which one is used is not ours to say).
    """
    allow = get_settings().webhooks_allow_private if allow_private is None else allow_private
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("webhook.bad_scheme")
    if parts.username or parts.password:
        raise AddressRefused("webhook.credentials_in_url")
    host = parts.hostname or ""
    if not host:
        raise AddressRefused("webhook.bad_url")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise AddressRefused("webhook.bad_url", host) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise AddressRefused("webhook.unresolvable", host) from None
    addresses = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise AddressRefused("webhook.unresolvable", host) from None
    if not addresses:
        raise AddressRefused("webhook.unresolvable", host)
    if not allow and not all(_address_allowed(a) for a in addresses):
        raise AddressRefused("webhook.private_address", host)
    return scheme, host, port, str(addresses[0])


def clean_url(raw) -> str:
    url = str(raw or "").strip()
    if not url:
        raise ValidationError.single("url", "error.required")
    if len(url) > MAX_URL or any(ch.isspace() for ch in url):
        raise ValidationError.single("url", "webhook.bad_url")
    try:
        resolve_target(url)
    except AddressRefused as refused:
        raise ValidationError.single("url", refused.key, host=refused.host[:100]) from None
    return url


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


def clean_secret(raw) -> str:
    secret = str(raw or "").strip()
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isascii() or not secret.isprintable():
        raise ValidationError.single("secret", "webhook.bad_secret", min=MIN_SECRET, max=MAX_SECRET)
    return secret


def data_level_of(actor: Actor) -> str:
    """What deliveries may carry: what the endpoint's creator may see of customers."""
    if actor.can("customer.view") and actor.can("customer.view_sensitive"):
        return "full"
    if actor.can("customer.view"):
        return "masked"
    return "ids"


def _url_for_audit(url: str) -> str:
    """Scheme and host only: a path may carry the receiver's own token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


# --- views ------------------------------------------------------------------------------------


def _iso(value) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


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
        created_at=_iso(row.created_at),
        created_by=row.created_by_name or "",
        updated_at=_iso(row.updated_at),
        last_success_at=_iso(row.last_success_at),
        failing_since=_iso(row.failing_since),
        last_error=row.last_error or "",
        disabled_at=_iso(row.disabled_at),
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
        created_at=_iso(row.created_at),
        last_attempt_at=_iso(row.last_attempt_at),
        next_attempt_at=_iso(row.next_attempt_at) if row.status == "pending" else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error or "",
        delivered_at=_iso(row.delivered_at),
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
            secret_enc=_encrypt(secret),
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
            details={"url": _url_for_audit(url), "events": chosen, "enabled": bool(enabled), "level": row.data_level},
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
        values["secret_enc"] = _encrypt(clean_secret(changes["secret"]))
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
                "url": _url_for_audit(row.url),
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
            details={"url": _url_for_audit(url)},
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
    _wake_after_commit(session)
    return len(rows)


def scrub_customers(session, customer_ids) -> int:
    """Erasure: deliveries about these customers keep no details (the body is built at send
    time from the erased row, so nothing personal goes out after an erasure anyway)."""
    ids = list(customer_ids)
    if not ids:
        return 0
    return session.execute(
        update(WebhookDelivery.__table__).where(D.customer_id.in_(ids), D.details != "{}").values(details="{}")
    ).rowcount


# --- sending ---------------------------------------------------------------------------------

_wake_event = threading.Event()


def wake() -> None:
    _wake_event.set()


def _wake_after_commit(session) -> None:
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
        "created_at": _iso(delivery.created_at),
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
    secret = _decrypt(endpoint.secret_enc)
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
                    details={"failing_since": since, "last_error": row.last_error, "url": _url_for_audit(row.url)},
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
