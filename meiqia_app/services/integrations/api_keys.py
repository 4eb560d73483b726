"""API keys of connected systems (the open API, docs/api.md).

A key is ``mqk_`` followed by 32 random bytes (URL-safe base64). Only its
SHA-256 is stored (a random 256-bit key needs no salt or slow hash: nobody
can guess a preimage) and its first characters, the *prefix*, to tell keys
apart in lists. The key itself is shown once, when it is made, and never
logged (log_redaction redacts ``Authorization`` headers and anything that
looks like a key).

A key acts as an :class:`Actor` whose permissions follow from its scopes
(``SCOPE_PERMISSIONS``), so every service applies to it exactly what it
applies to a person with those permissions: masking without
``customers:read_sensitive``, validation, read-only customers, erasure.
Audit entries name it ``api:NAME``; data it changes shows "API: NAME".

Each request looks the key up again (one indexed read): a revoked key is
refused at its next request, on every worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import unicodedata

from sqlalchemy import select, update

from meiqia_app.db import read_connection, write_session
from meiqia_app.models import ApiKey
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import AppError, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import format_local, utcnow

KEY_PREFIX = "mqk_"
KEY_BYTES = 32
SHOWN_PREFIX = 12  # "mqk_" + 8 characters
MAX_NAME = 48
LAST_USED_TOUCH_SECONDS = 60
ROLE_NAME = "api"

# Scope -> the permissions it grants (the same permissions the roles use).
SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "customers:read": ("customer.view",),
    "customers:read_sensitive": ("customer.view_sensitive",),
    "customers:write": ("customer.create", "customer.edit"),
    "tags:write": ("tag.assign",),
    "events:write": ("event.ingest",),
    "webhooks:manage": ("webhook.manage",),
}
SCOPES: tuple[str, ...] = tuple(SCOPE_PERMISSIONS)
# The scope an endpoint asks for when it needs a permission (for the 403 answer).
PERMISSION_SCOPES: dict[str, str] = {
    permission: scope for scope, permissions in SCOPE_PERMISSIONS.items() for permission in permissions
}

K = ApiKey.__table__.c


class ApiAuthError(AppError):
    """No key, or one that is malformed, unknown or revoked (answered 401)."""

    message_key = "error.not_authenticated"

    def __init__(self, reason: str):
        super().__init__(None, reason=reason)
        self.reason = reason


@dataclasses.dataclass
class ApiKeyView:
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    created_by: str
    last_used_at: str
    revoked: bool
    revoked_at: str


def key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def scope_permissions(scopes) -> frozenset[str]:
    return frozenset(p for scope in scopes for p in SCOPE_PERMISSIONS.get(scope, ()))


def clean_scopes(raw) -> list[str]:
    """Known scopes in their canonical order; raises ValidationError on unknown or none."""
    if isinstance(raw, str):
        raw = [part for part in raw.replace(" ", ",").split(",") if part]
    if not isinstance(raw, (list, tuple, set, frozenset)):
        raise ValidationError.single("scopes", "apikey.scopes_required")
    values = [str(v).strip() for v in raw]
    unknown = [v for v in values if v not in SCOPE_PERMISSIONS]
    if unknown:
        raise ValidationError.single("scopes", "apikey.unknown_scope", names=", ".join(unknown[:5])[:200])
    chosen = [scope for scope in SCOPES if scope in values]
    if not chosen:
        raise ValidationError.single("scopes", "apikey.scopes_required")
    return chosen


def clean_name(raw) -> str:
    name = " ".join(str(raw or "").split())
    if not name:
        raise ValidationError.single("name", "error.required")
    if len(name) > MAX_NAME:
        raise ValidationError.single("name", "error.too_long", max=MAX_NAME)
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValidationError.single("name", "apikey.bad_name")
    return name


def actor_for(key_id: int, name: str, scopes, client_ip: str = "") -> Actor:
    return Actor(
        user_id=None,
        username=f"api:{name}"[:64],
        display_name=f"API: {name}"[:64],
        role_name=ROLE_NAME,
        permissions=scope_permissions(scopes),
        client_ip=client_ip,
        api_key_id=key_id,
    )


# An unauthenticated caller, for the audit entries of refused requests.
ANONYMOUS = Actor(
    user_id=None,
    username="api:anonymous",
    display_name="API",
    role_name=ROLE_NAME,
    permissions=frozenset(),
    api_key_id=0,
)


def _view(row) -> ApiKeyView:
    return ApiKeyView(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=[s for s in row.scopes.split(",") if s],
        created_at=format_local(row.created_at),
        created_by=row.created_by_name or "",
        last_used_at=format_local(row.last_used_at),
        revoked=row.revoked_at is not None,
        revoked_at=format_local(row.revoked_at),
    )


def create_key(actor: Actor, name, scopes, via: str = "admin") -> tuple[ApiKeyView, str]:
    """A new key: its view and the key itself (shown once; only its hash is kept)."""
    require(actor, "apikey.manage", action="apikey.create", target_type="api_key")
    name = clean_name(name)
    chosen = clean_scopes(scopes)
    raw = new_raw_key()
    with write_session() as session:
        if session.execute(select(K.id).where(K.name == name)).first() is not None:
            raise ValidationError.single("name", "apikey.name_taken")
        row = ApiKey(
            name=name,
            prefix=raw[:SHOWN_PREFIX],
            key_hash=key_hash(raw),
            scopes=",".join(chosen),
            created_by_name=actor.username,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor,
            "apikey.create",
            target_type="api_key",
            target_id=row.id,
            details={"name": name, "prefix": row.prefix, "scopes": chosen, "via": via},
        )
        view = _view(row)
    return view, raw


def list_keys(actor: Actor) -> list[ApiKeyView]:
    require(actor, "apikey.manage", action="apikey.list", target_type="api_key")
    with read_connection() as conn:
        rows = conn.execute(select(ApiKey.__table__).order_by(K.revoked_at.is_not(None), K.created_at.desc())).all()
    return [_view(row) for row in rows]


def revoke_key(actor: Actor, key_id) -> None:
    """Refused from the next request on (every worker looks the key up per request)."""
    require(actor, "apikey.manage", action="apikey.revoke", target_type="api_key", target_id=key_id)
    try:
        key_id = int(key_id)
    except (TypeError, ValueError):
        raise NotFound() from None
    with write_session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound()
        if row.revoked_at is not None:
            return
        row.revoked_at = utcnow()
        row.revoked_by_name = actor.username
        session.add(row)
        audit.record(
            session,
            actor,
            "apikey.revoke",
            target_type="api_key",
            target_id=row.id,
            details={"name": row.name, "prefix": row.prefix},
        )


def authenticate(authorization: str | None, client_ip: str = "") -> Actor:
    """The actor behind an ``Authorization: Bearer <key>`` header; raises ApiAuthError.

    The refusal is not audited here: the HTTP layer audits it (with the key's
    name when the key is known but revoked, never the key).
    """
    value = (authorization or "").strip()
    if not value:
        raise ApiAuthError("missing")
    scheme, _, raw = value.partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw.startswith(KEY_PREFIX) or len(raw) > 128:
        raise ApiAuthError("malformed")
    with read_connection() as conn:
        row = conn.execute(
            select(K.id, K.name, K.scopes, K.revoked_at, K.last_used_at).where(K.key_hash == key_hash(raw))
        ).first()
    if row is None:
        raise ApiAuthError("unknown")
    if row.revoked_at is not None:
        error = ApiAuthError("revoked")
        error.params["name"] = row.name
        error.params["key_id"] = row.id
        raise error
    now = utcnow()
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=dt.UTC))).total_seconds() > (
        LAST_USED_TOUCH_SECONDS
    ):
        with write_session() as session:
            session.execute(update(ApiKey.__table__).where(K.id == row.id).values(last_used_at=now))
    return actor_for(row.id, row.name, [s for s in row.scopes.split(",") if s], client_ip)


def key_names(key_ids) -> dict[int, str]:
    """Names of keys by id (the timeline's "via API: NAME"); no permission: names are not secret."""
    ids = sorted({int(i) for i in key_ids if i})
    if not ids:
        return {}
    with read_connection() as conn:
        return dict(conn.execute(select(K.id, K.name).where(K.id.in_(ids))).all())
