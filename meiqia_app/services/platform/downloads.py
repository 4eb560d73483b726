"""Short-lived, single-use download links bound to the user's login session.

Exports and backups are served by HTTP routes (files too big for the websocket).
A page mints a token after its service checked the permission; the route spends
it: the token must exist for that kind of file, be unused and unexpired, and
belong to the same user and login session. Only the token's SHA-256 is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlmodel import Session, select

from meiqia_app.db import write_session
from meiqia_app.models import DownloadToken
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.timeutil import as_utc, utcnow

TOKEN_TTL = dt.timedelta(minutes=5)
MAX_TOKEN_CHARS = 128


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint(actor: Actor, kind: str, object_id: int, ttl: dt.timedelta = TOKEN_TTL) -> str:
    """A new token for one file; the caller has checked the permission."""
    if actor.session_id is None or actor.user_id is None:
        raise PermissionDenied("download.no_session")
    token = secrets.token_urlsafe(32)
    with write_session() as session:
        session.add(
            DownloadToken(
                token_hash=_digest(token),
                kind=kind,
                object_id=int(object_id),
                user_id=actor.user_id,
                session_id=actor.session_id,
                expires_at=utcnow() + ttl,
            )
        )
    return token


def spend(session: Session, actor: Actor | None, kind: str, token: str) -> tuple[DownloadToken | None, str]:
    """(the token row, "") when it may be used now — it is marked used in ``session`` —
    else (the row or None, why not: bad_token | other_session | token_used | token_expired)."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None, "bad_token"
    row = session.exec(
        select(DownloadToken).where(DownloadToken.token_hash == _digest(token), DownloadToken.kind == kind)
    ).first()
    if row is None:
        return None, "bad_token"
    if actor is None or row.user_id != actor.user_id or row.session_id != actor.session_id:
        return row, "other_session"
    if row.used_at is not None:
        return row, "token_used"
    if as_utc(row.expires_at) <= utcnow():
        return row, "token_expired"
    row.used_at = utcnow()
    session.add(row)
    return row, ""
