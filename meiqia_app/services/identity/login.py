"""Logging in (AUTH-1..5): the two steps and the ticket claim. Passwords, the second
factor, throttling, tokens and sessions are the modules beside this one.

The flow across two HTTP-less websocket steps and one HTTP request:

1. :func:`begin_login` checks username + password and returns a challenge
   secret (the browser tab keeps it in backend-only state) and whether the
   user must enrol TOTP first.
2. :func:`complete_login` checks the TOTP code (or a recovery code), or
   confirms enrolment, and returns a one-time login ticket.
3. The browser navigates to ``/api/session/claim?ticket=…``; that route calls
   :func:`claim_ticket`, which creates the session and sets the HttpOnly
   cookie. Only the SHA-256 of every token is stored."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import write_session
from meiqia_app.models import LoginChallenge, Role, User, UserSession
from meiqia_app.services.audit import log as audit
from meiqia_app.services.identity.passwords import dummy_hash, verify_password
from meiqia_app.services.identity.second_factor import (
    burn_recovery_code,
    decrypt_secret,
    encrypt_secret,
    looks_like_recovery_code,
    match_totp_step,
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    qr_data_uri,
    store_recovery_codes,
)
from meiqia_app.services.identity.sessions import actor_for, anonymous_actor
from meiqia_app.services.identity.throttling import (
    check_address_not_locked,
    check_not_locked,
    clear_failures,
    record_address_lockout,
    refuse_counted,
    register_address_failure,
    register_failure,
    throttle_key,
)
from meiqia_app.services.identity.tokens import CHALLENGE_MINUTES, AuthError, load_challenge, new_token, token_hash
from meiqia_app.timeutil import utcnow

TICKET_SECONDS = 60


# --- the login flow -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PasswordAccepted:
    challenge: str
    must_enrol: bool
    enrol_secret: str | None = None
    enrol_uri: str | None = None
    enrol_qr: str | None = None


@dataclasses.dataclass(frozen=True)
class SecondFactorAccepted:
    ticket: str
    recovery_codes: tuple[str, ...] = ()
    used_recovery_code: bool = False


def begin_login(username: str, password: str, client_ip: str = "") -> PasswordAccepted:
    """Step 1: username and password. Same answer and same cost for unknown names."""
    username = (username or "").strip()[:64]
    password = password or ""
    key = throttle_key(username)
    with write_session() as session:
        try:
            check_address_not_locked(session, client_ip)
        except AuthError:
            audit.record(
                session,
                anonymous_actor(username, client_ip),
                "auth.login",
                result="refused",
                details={"reason": "address_locked"},
            )
            session.commit()
            raise
        user = session.exec(select(User).where(User.username == username)).first() if username else None
        stored_hash = user.password_hash if user is not None else dummy_hash()
        try:
            check_not_locked(session, key)
        except AuthError:
            verify_password(password, stored_hash)  # same time whether locked or not
            audit.record(
                session,
                anonymous_actor(username, client_ip),
                "auth.login",
                result="refused",
                details={"reason": "locked"},
            )
            session.commit()
            raise
        password_ok = verify_password(password, stored_hash)
        if not (password_ok and user is not None and user.is_active):
            locked = register_failure(session, key)
            address_locked = register_address_failure(session, client_ip)
            audit.record(
                session,
                anonymous_actor(username, client_ip),
                "auth.login",
                result="refused",
                target_type="user",
                target_id=user.id if user else "",
                details={"reason": "bad_password" if user else "unknown_user", "locked": locked},
                flagged=locked,
            )
            if address_locked:
                record_address_lockout(session, anonymous_actor(username, client_ip), client_ip)
            if locked:
                audit.record(
                    session,
                    anonymous_actor(username, client_ip),
                    "auth.lockout",
                    result="refused",
                    target_type="user",
                    target_id=user.id if user else "",
                    flagged=True,
                )
                # Commit the failure before raising: the lock must stick.
                session.commit()
                raise AuthError("auth.locked", minutes=get_settings().lockout_minutes)
            session.commit()
            if address_locked:
                raise AuthError("auth.address_locked", minutes=get_settings().ip_lockout_minutes)
            raise AuthError("auth.invalid_credentials")

        challenge = new_token()
        must_enrol = user.totp_secret_enc is None
        pending_secret = new_totp_secret() if must_enrol else None
        session.add(
            LoginChallenge(
                challenge_hash=token_hash(challenge),
                user_id=user.id,
                purpose="enrol" if must_enrol else "totp",
                pending_secret_enc=encrypt_secret(pending_secret) if pending_secret else None,
                expires_at=utcnow() + dt.timedelta(minutes=CHALLENGE_MINUTES),
            )
        )
    if must_enrol:
        uri = provisioning_uri(pending_secret, user.username)
        return PasswordAccepted(challenge, True, pending_secret, uri, qr_data_uri(uri))
    return PasswordAccepted(challenge, False)


def complete_login(challenge: str, code: str, client_ip: str = "") -> SecondFactorAccepted:
    """Step 2: the TOTP code, a recovery code, or the code confirming enrolment."""
    code = (code or "").strip()[:32]
    with write_session() as session:
        row = load_challenge(session, challenge, ("totp", "enrol"))
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise AuthError("auth.challenge_expired")
        key = throttle_key(user.username)
        who = anonymous_actor(user.username, client_ip)
        try:
            check_address_not_locked(session, client_ip)
            check_not_locked(session, key)
        except AuthError:
            row.used_at = utcnow()
            session.commit()
            raise
        recovery_codes: tuple[str, ...] = ()
        used_recovery = False
        try:
            if row.purpose == "enrol":
                secret = decrypt_secret(row.pending_secret_enc or "")
                step = match_totp_step(secret, code, last_step=0)
                user.totp_secret_enc = encrypt_secret(secret)
                user.totp_enrolled_at = utcnow()
                user.totp_last_step = step
                codes = new_recovery_codes()
                store_recovery_codes(session, user.id, codes)
                recovery_codes = tuple(codes)
                audit.record(session, who, "auth.totp_enrolled", target_type="user", target_id=user.id)
            elif looks_like_recovery_code(code):
                if not burn_recovery_code(session, user.id, code):
                    raise AuthError("auth.invalid_code")
                used_recovery = True
                audit.record(session, who, "auth.recovery_code_used", target_type="user", target_id=user.id)
            else:
                user.totp_last_step = match_totp_step(
                    decrypt_secret(user.totp_secret_enc or ""), code, user.totp_last_step
                )
        except AuthError as error:
            row.attempts += 1
            locked = register_failure(session, key)
            if register_address_failure(session, client_ip):
                record_address_lockout(session, who, client_ip)
            if locked or row.attempts >= get_settings().lockout_threshold:
                row.used_at = utcnow()
            refuse_counted(session, who, "auth.second_factor", user.id, error, locked)
        row.used_at = utcnow()
        clear_failures(session, key)
        ticket = new_token()
        session.add(
            LoginChallenge(
                challenge_hash=token_hash(ticket),
                user_id=user.id,
                purpose="ticket",
                expires_at=utcnow() + dt.timedelta(seconds=TICKET_SECONDS),
            )
        )
        session.add(user)
    return SecondFactorAccepted(ticket, recovery_codes, used_recovery)


def claim_ticket(ticket: str, client_ip: str = "", user_agent: str = "") -> str:
    """Step 3 (HTTP route): trade the one-time ticket for a session token."""
    settings = get_settings()
    with write_session() as session:
        row = load_challenge(session, ticket, ("ticket",))
        row.used_at = utcnow()
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise AuthError("auth.challenge_expired")
        token = new_token()
        now = utcnow()
        user_session = UserSession(
            token_hash=token_hash(token),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + dt.timedelta(hours=settings.session_max_hours),
            client_ip=client_ip[:64],
            user_agent=user_agent[:255],
        )
        session.add(user_session)
        user.last_login_at = now
        session.add(user)
        session.flush()
        role = session.get(Role, user.role_id)
        audit.record(
            session,
            actor_for(user, role, user_session.id, client_ip),
            "auth.login",
            target_type="user",
            target_id=user.id,
        )
    return token
