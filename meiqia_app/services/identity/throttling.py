"""Login throttling (AUTH-3): lockouts per account and per address after repeated failures, and unlocking."""

from __future__ import annotations

import datetime as dt
from typing import NoReturn

from sqlmodel import Session

from meiqia_app.config import get_settings
from meiqia_app.models import LoginAddressThrottle, LoginThrottle
from meiqia_app.services.audit import log as audit
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.identity.tokens import AuthError
from meiqia_app.timeutil import as_utc, utcnow

# --- throttling ---------------------------------------------------------------


def throttle_key(username: str) -> str:
    return username.strip().casefold()[:64]


def check_not_locked(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row and row.locked_until and as_utc(row.locked_until) > utcnow():
        minutes = max(1, int((as_utc(row.locked_until) - utcnow()).total_seconds() // 60) + 1)
        raise AuthError("auth.locked", minutes=minutes)


def register_failure(session: Session, key: str) -> bool:
    """Count a failure; returns True when this failure locked the name."""
    settings = get_settings()
    row = session.get(LoginThrottle, key) or LoginThrottle(username_key=key)
    if row.locked_until and as_utc(row.locked_until) <= utcnow():
        row.failures = 0
        row.locked_until = None
    row.failures += 1
    row.updated_at = utcnow()
    locked = row.failures >= settings.lockout_threshold
    if locked:
        row.locked_until = utcnow() + dt.timedelta(minutes=settings.lockout_minutes)
    session.add(row)
    return locked


def refuse_counted(
    session: Session, actor: Actor, action: str, user_id: int, refusal: AuthError, locked: bool
) -> NoReturn:
    """End a refused password / code check that counted towards the lockout.

    The refusal is audited (its reason, and flagged when this failure locked the
    account) and committed before raising, so neither the count nor the entry is
    rolled back with the request; a lockout is told as such, anything else as it was."""
    audit.record(
        session,
        actor,
        action,
        result="refused",
        target_type="user",
        target_id=user_id,
        details={"reason": refusal.message_key.split(".")[-1], "locked": locked},
        flagged=locked,
    )
    session.commit()
    if locked:
        raise AuthError("auth.locked", minutes=get_settings().lockout_minutes) from refusal
    raise refusal


def clear_failures(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row is not None:
        session.delete(row)


def unlock(session: Session, username: str) -> None:
    clear_failures(session, throttle_key(username))


def _address_key(client_ip: str) -> str:
    return (client_ip or "").strip()[:64]


def check_address_not_locked(session: Session, client_ip: str) -> None:
    """Refuse every login step from an address that failed too often (any usernames)."""
    key = _address_key(client_ip)
    if not key:
        return
    row = session.get(LoginAddressThrottle, key)
    if row and row.locked_until and as_utc(row.locked_until) > utcnow():
        minutes = max(1, int((as_utc(row.locked_until) - utcnow()).total_seconds() // 60) + 1)
        raise AuthError("auth.address_locked", minutes=minutes)


def register_address_failure(session: Session, client_ip: str) -> bool:
    """Count a failed login from this address; True when it locked the address.

    ``MEIQIA_IP_LOCKOUT_THRESHOLD`` failures within ``MEIQIA_IP_LOCKOUT_MINUTES``
    lock it for as long. A successful login does not clear the count: an
    attacker with one working account must not reset it between guesses.
    """
    key = _address_key(client_ip)
    if not key:
        return False
    settings = get_settings()
    now = utcnow()
    window = dt.timedelta(minutes=settings.ip_lockout_minutes)
    row = session.get(LoginAddressThrottle, key) or LoginAddressThrottle(client_ip=key, window_started_at=now)
    lock_over = row.locked_until is not None and as_utc(row.locked_until) <= now
    if lock_over or as_utc(row.window_started_at) + window <= now:
        row.failures = 0
        row.window_started_at = now
        row.locked_until = None
    row.failures += 1
    row.updated_at = now
    locked = row.failures >= settings.ip_lockout_threshold
    if locked:
        row.locked_until = now + window
    session.add(row)
    return locked


def record_address_lockout(session: Session, who: Actor, client_ip: str) -> None:
    audit.record(
        session,
        who,
        "auth.address_lockout",
        result="refused",
        details={"client_ip": _address_key(client_ip), "minutes": get_settings().ip_lockout_minutes},
        flagged=True,
    )
