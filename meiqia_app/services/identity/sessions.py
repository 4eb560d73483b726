"""Server-side sessions (AUTH-4): a cookie's token resolved to the acting user, logout, revocation, and one's own session list."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from sqlalchemy import bindparam
from sqlmodel import Session, select

from meiqia_app.config import get_settings
from meiqia_app.db import read_connection, read_session, write_session
from meiqia_app.models import Role, User, UserSession
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import Conflict, NotFound
from meiqia_app.services.identity.rbac import Actor, ExportPolicy
from meiqia_app.services.identity.tokens import token_hash
from meiqia_app.timeutil import as_utc, format_local, utcnow

SESSION_TOUCH_SECONDS = 60


def anonymous_actor(username: str, client_ip: str) -> Actor:
    return Actor(
        user_id=None,
        username=username[:64] or "?",
        display_name="",
        role_name="",
        permissions=frozenset(),
        client_ip=client_ip,
    )


def actor_for(user: User, role: Role, session_id: int | None = None, client_ip: str = "") -> Actor:
    import json

    scope = role.data_scope or "all"
    with read_connection() as conn:
        members = scope_members(conn, scope, user.team_id)
    return Actor(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name or user.username,
        role_name=role.name,
        permissions=frozenset(json.loads(role.permissions)),
        export_policy=ExportPolicy.from_json(role.export_policy),
        session_id=session_id,
        client_ip=client_ip,
        data_scope=scope,
        team_id=user.team_id,
        team_member_ids=members,
    )


_TEAM_MEMBERS = select(User.id).where(User.team_id == bindparam("team_id")).order_by(User.id)


def scope_members(conn, scope: str, team_id: int | None) -> tuple[int, ...]:
    """The ids of the users in ``team_id`` when ``scope`` is a team scope (else, or without a team: none)."""
    if team_id is None or scope not in ("team", "team_pool"):
        return ()
    return tuple(conn.execute(_TEAM_MEMBERS, {"team_id": team_id}).scalars())


@functools.lru_cache(maxsize=256)
def _role_grants(permissions_json: str, export_policy_json: str | None) -> tuple[frozenset[str], ExportPolicy]:
    """A role's parsed permissions and export policy; the same few roles serve every event."""
    import json

    return frozenset(json.loads(permissions_json)), ExportPolicy.from_json(export_policy_json)


_SESSION_LOOKUP = (
    select(
        UserSession.id,
        UserSession.expires_at,
        UserSession.last_seen_at,
        UserSession.revoked_at,
        User.id,
        User.username,
        User.display_name,
        User.is_active,
        Role.name,
        Role.permissions,
        Role.export_policy,
        Role.data_scope,
        User.team_id,
    )
    .join(User, User.id == UserSession.user_id)
    .join(Role, Role.id == User.role_id)
    # Built once with a bound parameter: SQLAlchemy's compiled-statement cache
    # then skips building a cache key for a fresh statement on every event.
    .where(UserSession.token_hash == bindparam("token_hash"))
)


def resolve_session(token: str | None, client_ip: str = "", touch: bool = True) -> Actor | None:
    """The actor behind a session cookie, or None when it is missing, revoked or expired.

    Called on every event, so it is one indexed Core query over the columns
    it needs (no ORM objects), plus a write at most once a minute to move the
    idle deadline. Nothing is cached across events: a revoked session or a
    changed role takes effect on the very next event, on every worker.
    ``touch=False``: a check that is not the person's activity (an open page
    watching for news) does not move the idle deadline.
    """
    if not token:
        return None
    settings = get_settings()
    now = utcnow()
    with read_connection() as conn:
        found = conn.execute(_SESSION_LOOKUP, {"token_hash": token_hash(token)}).first()
        members = () if found is None else scope_members(conn, found[-2] or "all", found[-1])
    if found is None:
        return None
    (
        session_id,
        expires_at,
        last_seen_at,
        revoked_at,
        user_id,
        username,
        display_name,
        is_active,
        role_name,
        permissions_json,
        policy_json,
        data_scope,
        team_id,
    ) = found
    idle = now - as_utc(last_seen_at)
    if (
        revoked_at is not None
        or as_utc(expires_at) <= now
        or idle > dt.timedelta(minutes=settings.session_idle_minutes)
        or not is_active
    ):
        return None
    permissions, export_policy = _role_grants(permissions_json, policy_json)
    actor = Actor(
        user_id=user_id,
        username=username,
        display_name=display_name or username,
        role_name=role_name,
        permissions=permissions,
        export_policy=export_policy,
        session_id=session_id,
        client_ip=client_ip,
        data_scope=data_scope or "all",
        team_id=team_id,
        team_member_ids=members,
    )
    if touch and idle.total_seconds() > SESSION_TOUCH_SECONDS:
        with write_session() as session:
            row = session.get(UserSession, session_id)
            if row is not None:
                row.last_seen_at = now
    return actor


def logout(token: str | None, client_ip: str = "") -> None:
    if not token:
        return
    with write_session() as session:
        row = session.exec(select(UserSession).where(UserSession.token_hash == token_hash(token))).first()
        if row is None or row.revoked_at is not None:
            return
        row.revoked_at = utcnow()
        row.revoked_reason = "logout"
        user = session.get(User, row.user_id)
        role = session.get(Role, user.role_id)
        audit.record(
            session, actor_for(user, role, row.id, client_ip), "auth.logout", target_type="user", target_id=user.id
        )


def revoke_sessions(session: Session, user_id: int, reason: str, except_session_id: int | None = None) -> int:
    rows = session.exec(
        select(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    ).all()
    count = 0
    for row in rows:
        if row.id == except_session_id:
            continue
        row.revoked_at = utcnow()
        row.revoked_reason = reason
        count += 1
    return count


def logout_everywhere(actor: Actor) -> int:
    with write_session() as session:
        count = revoke_sessions(session, actor.user_id, "logout_all")
        audit.record(
            session, actor, "auth.logout_all", target_type="user", target_id=actor.user_id, details={"sessions": count}
        )
    return count


# --- one's own sessions -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SessionView:
    """A live session of the user, as /account lists it."""

    id: int
    device: str
    client_ip: str
    started: str
    last_seen: str
    current: bool


_BROWSERS = (  # checked in this order: Edge and Opera also say "Chrome", Chrome also says "Safari"
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("MicroMessenger/", "WeChat"),
    ("Chromium/", "Chromium"),
    ("HeadlessChrome/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("CriOS/", "Chrome"),
    ("Version/", "Safari"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str | None) -> str:
    """A short "browser major · system" from a User-Agent header ("Chrome 124 · Windows")."""
    text = (user_agent or "").strip()
    if not text:
        return ""
    browser = ""
    for marker, name in _BROWSERS:
        start = text.find(marker)
        if start >= 0:
            version = text[start + len(marker) :].split(".", 1)[0].split(" ", 1)[0]
            browser = f"{name} {version}" if version.isdigit() else name
            break
    system = next((name for marker, name in _SYSTEMS if marker in text), "")
    if browser or system:
        return " · ".join(part for part in (browser, system) if part)
    return text[:40] + ("…" if len(text) > 40 else "")


def _live_session_condition(user_id: int, now: dt.datetime):
    idle_since = now - dt.timedelta(minutes=get_settings().session_idle_minutes)
    return (
        (UserSession.user_id == user_id)
        & UserSession.revoked_at.is_(None)
        & (UserSession.expires_at > now)
        & (UserSession.last_seen_at > idle_since)
    )


SESSIONS_SHOWN = 50


def list_own_sessions(actor: Actor) -> list[SessionView]:
    """The actor's live sessions (not revoked, expired or idle), the current one first."""
    if actor.user_id is None:
        return []
    with read_session() as session:
        rows = session.exec(
            select(UserSession)
            .where(_live_session_condition(actor.user_id, utcnow()))
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
            .limit(SESSIONS_SHOWN)
        ).all()
        views = [
            SessionView(
                id=row.id,
                device=describe_user_agent(row.user_agent),
                client_ip=row.client_ip or "",
                started=format_local(row.created_at),
                last_seen=format_local(row.last_seen_at),
                current=row.id == actor.session_id,
            )
            for row in rows
        ]
    return sorted(views, key=lambda view: not view.current)


def revoke_own_session(actor: Actor, session_id: int, confirm_current: bool = False) -> bool:
    """Sign one of one's own sessions out; True when it was the current one.

    Another user's session, or one that already ended, is "not found" (whether it
    exists is none of the actor's business). The current session is ended only
    when ``confirm_current`` says the person confirmed it.
    """
    try:
        session_id = int(session_id)
    except (TypeError, ValueError):
        raise NotFound() from None
    with write_session() as session:
        row = session.get(UserSession, session_id) if session_id > 0 else None
        if row is None or actor.user_id is None or row.user_id != actor.user_id or row.revoked_at is not None:
            raise NotFound()
        current = row.id == actor.session_id
        if current and not confirm_current:
            raise Conflict("account.confirm_current_session")
        row.revoked_at = utcnow()
        row.revoked_reason = "signed_out" if not current else "logout"
        session.add(row)
        audit.record(
            session,
            actor,
            "auth.session_revoke",
            target_type="user",
            target_id=actor.user_id,
            details={"session_id": row.id, "current": current, "device": describe_user_agent(row.user_agent)},
        )
    return current
