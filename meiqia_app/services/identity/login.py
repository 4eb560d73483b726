"""Logging in (AUTH-1..5): passwords, TOTP with replay protection, recovery
codes, throttling, and server-side sessions.

The flow across two HTTP-less websocket steps and one HTTP request:

1. :func:`begin_login` checks username + password and returns a challenge
   secret (the browser tab keeps it in backend-only state) and whether the
   user must enrol TOTP first.
2. :func:`complete_login` checks the TOTP code (or a recovery code), or
   confirms enrolment, and returns a one-time login ticket.
3. The browser navigates to ``/api/session/claim?ticket=…``; that route calls
   :func:`claim_ticket`, which creates the session and sets the HttpOnly
   cookie. Only the SHA-256 of every token is stored.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import io
import secrets
import time

import bcrypt
import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import bindparam
from sqlmodel import Session, select

from meiqia_app.config import get_settings
from meiqia_app.db import read_connection, read_session, write_session
from meiqia_app.models import (
    LoginAddressThrottle,
    LoginChallenge,
    LoginThrottle,
    RecoveryCode,
    Role,
    User,
    UserSession,
)
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import AppError, Conflict, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, ExportPolicy
from meiqia_app.timeutil import as_utc, format_local, utcnow

ISSUER = "美洽客户数据"
TOTP_INTERVAL = 30
CHALLENGE_MINUTES = 5
TICKET_SECONDS = 60
SESSION_TOUCH_SECONDS = 60
RECOVERY_CODE_COUNT = 10
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_BYTES = 72  # bcrypt refuses longer input


class AuthError(AppError):
    message_key = "auth.invalid_credentials"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


# --- passwords ----------------------------------------------------------------


# What made zxcvbn find a password guessable -> the message that says so.
_WEAKNESS_KEYS = {
    "passwords": "auth.password_weak_common",
    "user_inputs": "auth.password_weak_personal",
    "dictionary": "auth.password_weak_words",
    "repeat": "auth.password_weak_repeats",
    "sequence": "auth.password_weak_sequence",
    "spatial": "auth.password_weak_keyboard",
    "date": "auth.password_weak_dates",
    "regex": "auth.password_weak_dates",
}
# Words an attacker tries against this product whoever the user is.
_PRODUCT_WORDS = ("meiqia", "美洽", "kefu", "客服", "customer", "admin")


def password_weakness(password: str, personal: tuple[str, ...] = ()) -> str | None:
    """The message key saying why ``password`` is too easy to guess, or None when it is strong enough.

    zxcvbn (Dropbox's estimator: common-password lists, words, names, keyboard
    patterns, repeats, sequences, dates and the user's own names) estimates
    how many guesses it takes; below the configured score (0-4) the password is
    refused, and the weakest part it found says why.
    """
    from zxcvbn import zxcvbn

    result = zxcvbn(password, user_inputs=[w for w in (*personal, *_PRODUCT_WORDS) if w])
    if result["score"] >= get_settings().password_min_score:
        return None
    found = [m for m in result.get("sequence", ()) if m.get("pattern") != "bruteforce"]
    if not found:
        return "auth.password_weak"
    weakest = max(found, key=lambda m: len(m.get("token", "")))
    pattern = weakest.get("pattern", "")
    if pattern == "dictionary":
        name = weakest.get("dictionary_name", "")
        return _WEAKNESS_KEYS.get(name, _WEAKNESS_KEYS["dictionary"])
    return _WEAKNESS_KEYS.get(pattern, "auth.password_weak")


def validate_password(password: str, username: str = "", display_name: str = "") -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValidationError.single("password", "auth.password_too_short", min=PASSWORD_MIN_LENGTH)
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValidationError.single("password", "auth.password_too_long", max=PASSWORD_MAX_BYTES)
    if not any(ch.isalpha() for ch in password) or not any(ch.isdigit() for ch in password):
        raise ValidationError.single("password", "auth.password_needs_letter_digit")
    if username and password.lower() == username.lower():
        raise ValidationError.single("password", "auth.password_is_username")
    weakness = password_weakness(password, (username, display_name))
    if weakness is not None:
        raise ValidationError.single("password", weakness)


def hash_password(password: str) -> str:
    rounds = max(4, get_settings().bcrypt_rounds)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode("utf-8")
    if len(encoded) > PASSWORD_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode("ascii"))
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to check unknown usernames against, so they cost the same time."""
    return hash_password(secrets.token_urlsafe(16))


# --- TOTP ---------------------------------------------------------------------


def _fernet() -> Fernet:
    digest = hashlib.sha256(("totp-secret:" + get_settings().secret_key).encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode("ascii")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:  # the secret key changed under the database
        raise AuthError("auth.totp_unreadable") from exc


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_data_uri(text: str) -> str:
    import qrcode

    image = qrcode.make(text, box_size=6, border=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // TOTP_INTERVAL)


def match_totp_step(secret: str, code: str, last_step: int, now: float | None = None) -> int:
    """The time step the code belongs to (±1 step of drift).

    Raises AuthError for a wrong code, or ``auth.code_reused`` when the code
    is right but its step was already used (RFC 6238 §5.2: accept once).
    """
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        raise AuthError("auth.invalid_code")
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    step_now = current_step(now)
    reused = False
    for step in (step_now - 1, step_now, step_now + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if step > last_step:
                return step
            reused = True
    raise AuthError("auth.code_reused" if reused else "auth.invalid_code")


# --- recovery codes -----------------------------------------------------------


def _recovery_hash(code: str) -> str:
    normalized = code.strip().lower().replace("-", "").replace(" ", "")
    key = ("recovery:" + get_settings().secret_key).encode("utf-8")
    return hmac.new(key, normalized.encode("utf-8"), hashlib.sha256).hexdigest()


def new_recovery_codes() -> list[str]:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def _store_recovery_codes(session: Session, user_id: int, codes: list[str]) -> None:
    for old in session.exec(select(RecoveryCode).where(RecoveryCode.user_id == user_id)).all():
        session.delete(old)
    for code in codes:
        session.add(RecoveryCode(user_id=user_id, code_hash=_recovery_hash(code)))


def _burn_recovery_code(session: Session, user_id: int, code: str) -> bool:
    wanted = _recovery_hash(code)
    for row in session.exec(
        select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    ).all():
        if hmac.compare_digest(row.code_hash, wanted):
            row.used_at = utcnow()
            return True
    return False


def looks_like_recovery_code(code: str) -> bool:
    compact = code.strip().replace("-", "").replace(" ", "")
    return len(compact) == 10 and compact.isalnum() and not compact.isdigit()


# --- throttling ---------------------------------------------------------------


def throttle_key(username: str) -> str:
    return username.strip().casefold()[:64]


def _check_not_locked(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row and row.locked_until and as_utc(row.locked_until) > utcnow():
        minutes = max(1, int((as_utc(row.locked_until) - utcnow()).total_seconds() // 60) + 1)
        raise AuthError("auth.locked", minutes=minutes)


def _register_failure(session: Session, key: str) -> bool:
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


def _clear_failures(session: Session, key: str) -> None:
    row = session.get(LoginThrottle, key)
    if row is not None:
        session.delete(row)


def unlock(session: Session, username: str) -> None:
    _clear_failures(session, throttle_key(username))


def _address_key(client_ip: str) -> str:
    return (client_ip or "").strip()[:64]


def _check_address_not_locked(session: Session, client_ip: str) -> None:
    """Refuse every login step from an address that failed too often (any usernames)."""
    key = _address_key(client_ip)
    if not key:
        return
    row = session.get(LoginAddressThrottle, key)
    if row and row.locked_until and as_utc(row.locked_until) > utcnow():
        minutes = max(1, int((as_utc(row.locked_until) - utcnow()).total_seconds() // 60) + 1)
        raise AuthError("auth.address_locked", minutes=minutes)


def _register_address_failure(session: Session, client_ip: str) -> bool:
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


def _record_address_lockout(session: Session, who: Actor, client_ip: str) -> None:
    audit.record(
        session,
        who,
        "auth.address_lockout",
        result="refused",
        details={"client_ip": _address_key(client_ip), "minutes": get_settings().ip_lockout_minutes},
        flagged=True,
    )


def _anonymous(username: str, client_ip: str) -> Actor:
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
            _check_address_not_locked(session, client_ip)
        except AuthError:
            audit.record(
                session,
                _anonymous(username, client_ip),
                "auth.login",
                result="refused",
                details={"reason": "address_locked"},
            )
            session.commit()
            raise
        user = session.exec(select(User).where(User.username == username)).first() if username else None
        stored_hash = user.password_hash if user is not None else _dummy_hash()
        try:
            _check_not_locked(session, key)
        except AuthError:
            verify_password(password, stored_hash)  # same time whether locked or not
            audit.record(
                session, _anonymous(username, client_ip), "auth.login", result="refused", details={"reason": "locked"}
            )
            session.commit()
            raise
        password_ok = verify_password(password, stored_hash)
        if not (password_ok and user is not None and user.is_active):
            locked = _register_failure(session, key)
            address_locked = _register_address_failure(session, client_ip)
            audit.record(
                session,
                _anonymous(username, client_ip),
                "auth.login",
                result="refused",
                target_type="user",
                target_id=user.id if user else "",
                details={"reason": "bad_password" if user else "unknown_user", "locked": locked},
                flagged=locked,
            )
            if address_locked:
                _record_address_lockout(session, _anonymous(username, client_ip), client_ip)
            if locked:
                audit.record(
                    session,
                    _anonymous(username, client_ip),
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


def _load_challenge(session: Session, challenge: str, purposes: tuple[str, ...]) -> LoginChallenge:
    row = session.exec(
        select(LoginChallenge).where(LoginChallenge.challenge_hash == token_hash(challenge or ""))
    ).first()
    if row is None or row.purpose not in purposes or row.used_at is not None or as_utc(row.expires_at) < utcnow():
        raise AuthError("auth.challenge_expired")
    return row


def complete_login(challenge: str, code: str, client_ip: str = "") -> SecondFactorAccepted:
    """Step 2: the TOTP code, a recovery code, or the code confirming enrolment."""
    code = (code or "").strip()[:32]
    with write_session() as session:
        row = _load_challenge(session, challenge, ("totp", "enrol"))
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise AuthError("auth.challenge_expired")
        key = throttle_key(user.username)
        who = _anonymous(user.username, client_ip)
        try:
            _check_address_not_locked(session, client_ip)
            _check_not_locked(session, key)
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
                _store_recovery_codes(session, user.id, codes)
                recovery_codes = tuple(codes)
                audit.record(session, who, "auth.totp_enrolled", target_type="user", target_id=user.id)
            elif looks_like_recovery_code(code):
                if not _burn_recovery_code(session, user.id, code):
                    raise AuthError("auth.invalid_code")
                used_recovery = True
                audit.record(session, who, "auth.recovery_code_used", target_type="user", target_id=user.id)
            else:
                user.totp_last_step = match_totp_step(
                    decrypt_secret(user.totp_secret_enc or ""), code, user.totp_last_step
                )
        except AuthError as error:
            row.attempts += 1
            locked = _register_failure(session, key)
            if _register_address_failure(session, client_ip):
                _record_address_lockout(session, who, client_ip)
            if locked or row.attempts >= get_settings().lockout_threshold:
                row.used_at = utcnow()
            audit.record(
                session,
                who,
                "auth.second_factor",
                result="refused",
                target_type="user",
                target_id=user.id,
                details={"reason": error.message_key.split(".")[-1], "locked": locked},
                flagged=locked,
            )
            session.commit()
            if locked:
                raise AuthError("auth.locked", minutes=get_settings().lockout_minutes) from error
            raise
        row.used_at = utcnow()
        _clear_failures(session, key)
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
        row = _load_challenge(session, ticket, ("ticket",))
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


# --- a user's own account -----------------------------------------------------


def change_own_password(actor: Actor, old_password: str, new_password: str) -> None:
    with write_session() as session:
        user = session.get(User, actor.user_id)
        if user is None or not verify_password(old_password or "", user.password_hash):
            audit.record(
                session,
                actor,
                "auth.password_change",
                result="refused",
                target_type="user",
                target_id=actor.user_id,
                details={"reason": "old_password_wrong"},
            )
            session.commit()
            raise ValidationError.single("old_password", "auth.old_password_wrong")
        validate_password(new_password, user.username, user.display_name)
        user.password_hash = hash_password(new_password)
        user.password_changed_at = utcnow()
        revoked = revoke_sessions(session, user.id, "password_changed", except_session_id=actor.session_id)
        audit.record(
            session,
            actor,
            "auth.password_change",
            target_type="user",
            target_id=user.id,
            details={"other_sessions_revoked": revoked},
        )


@dataclasses.dataclass(frozen=True)
class Enrolment:
    challenge: str
    secret: str
    uri: str
    qr: str


def begin_reenrol(actor: Actor, password: str, code: str) -> Enrolment:
    """Start replacing one's own TOTP secret; the old one works until confirmed.

    A session alone is not enough: the current password and a code from the
    current authenticator (or an unused recovery code) must come with it.
    Wrong answers count towards the account's lockout like failed logins and
    are audited; a right recovery code is used up.
    """
    password = (password or "")[:256]
    code = (code or "").strip()[:32]
    with write_session() as session:
        user = session.get(User, actor.user_id)
        if user is None or not user.is_active:
            raise AuthError("auth.challenge_expired")
        key = throttle_key(user.username)
        _check_not_locked(session, key)
        refusal: AuthError | None = None
        used_recovery = False
        if not verify_password(password, user.password_hash):
            refusal = AuthError("auth.old_password_wrong")
        else:
            try:
                if looks_like_recovery_code(code):
                    if not _burn_recovery_code(session, user.id, code):
                        raise AuthError("auth.invalid_code")
                    used_recovery = True
                else:
                    user.totp_last_step = match_totp_step(
                        decrypt_secret(user.totp_secret_enc or ""), code, user.totp_last_step
                    )
                    session.add(user)
            except AuthError as error:
                refusal = error
        if refusal is not None:
            locked = _register_failure(session, key)
            audit.record(
                session,
                actor,
                "auth.totp_reenrol",
                result="refused",
                target_type="user",
                target_id=user.id,
                details={"reason": refusal.message_key.split(".")[-1], "locked": locked},
                flagged=locked,
            )
            session.commit()
            if locked:
                raise AuthError("auth.locked", minutes=get_settings().lockout_minutes) from refusal
            raise refusal
        if used_recovery:
            audit.record(session, actor, "auth.recovery_code_used", target_type="user", target_id=user.id)
        secret = new_totp_secret()
        challenge = new_token()
        session.add(
            LoginChallenge(
                challenge_hash=token_hash(challenge),
                user_id=actor.user_id,
                purpose="reenrol",
                pending_secret_enc=encrypt_secret(secret),
                expires_at=utcnow() + dt.timedelta(minutes=CHALLENGE_MINUTES * 2),
            )
        )
    uri = provisioning_uri(secret, actor.username)
    return Enrolment(challenge, secret, uri, qr_data_uri(uri))


@dataclasses.dataclass(frozen=True)
class Reenrolled:
    recovery_codes: tuple[str, ...]
    sessions_revoked: int


def confirm_reenrol(actor: Actor, challenge: str, code: str) -> Reenrolled:
    """Switch to the new secret; new recovery codes; every other session of the user ends."""
    with write_session() as session:
        row = _load_challenge(session, challenge, ("reenrol",))
        if row.user_id != actor.user_id:
            raise AuthError("auth.challenge_expired")
        secret = decrypt_secret(row.pending_secret_enc or "")
        step = match_totp_step(secret, code, last_step=0)
        user = session.get(User, actor.user_id)
        user.totp_secret_enc = encrypt_secret(secret)
        user.totp_enrolled_at = utcnow()
        user.totp_last_step = step
        codes = new_recovery_codes()
        _store_recovery_codes(session, user.id, codes)
        row.used_at = utcnow()
        revoked = revoke_sessions(session, user.id, "totp_reenrolled", except_session_id=actor.session_id)
        audit.record(
            session,
            actor,
            "auth.totp_reenrolled",
            target_type="user",
            target_id=user.id,
            details={"other_sessions_revoked": revoked},
        )
    return Reenrolled(tuple(codes), revoked)


def remaining_recovery_codes(user_id: int) -> int:
    with read_session() as session:
        return len(
            session.exec(
                select(RecoveryCode.id).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            ).all()
        )


def _check_password_and_totp(session: Session, user: User, password: str, code: str) -> None:
    """The current password and a code of the current authenticator (recovery codes do not count).

    Raises AuthError when either is wrong; the caller counts and audits the failure.
    """
    if not verify_password(password, user.password_hash):
        raise AuthError("auth.old_password_wrong")
    if looks_like_recovery_code(code):
        raise AuthError("account.needs_authenticator_code")
    user.totp_last_step = match_totp_step(decrypt_secret(user.totp_secret_enc or ""), code, user.totp_last_step)
    session.add(user)


def regenerate_recovery_codes(actor: Actor, password: str, code: str) -> tuple[str, ...]:
    """New recovery codes for one's own account; every earlier one stops working.

    A session alone is not enough (a stolen one must not mint codes): the current
    password and a code from the current authenticator come with the request. Wrong
    answers count towards the account's lockout and are audited, like re-enrolment's.
    The codes are returned once; only their keyed hashes are stored.
    """
    password = (password or "")[:256]
    code = (code or "").strip()[:32]
    with write_session() as session:
        user = session.get(User, actor.user_id) if actor.user_id is not None else None
        if user is None or not user.is_active or not user.totp_secret_enc:
            raise AuthError("auth.challenge_expired")
        key = throttle_key(user.username)
        _check_not_locked(session, key)
        try:
            _check_password_and_totp(session, user, password, code)
        except AuthError as refusal:
            locked = _register_failure(session, key)
            audit.record(
                session,
                actor,
                "auth.recovery_codes_renew",
                result="refused",
                target_type="user",
                target_id=user.id,
                details={"reason": refusal.message_key.split(".")[-1], "locked": locked},
                flagged=locked,
            )
            session.commit()
            if locked:
                raise AuthError("auth.locked", minutes=get_settings().lockout_minutes) from refusal
            raise
        unused = len(
            session.exec(
                select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
            ).all()
        )
        codes = new_recovery_codes()
        _store_recovery_codes(session, user.id, codes)
        audit.record(
            session,
            actor,
            "auth.recovery_codes_renew",
            target_type="user",
            target_id=user.id,
            details={"codes": len(codes), "unused_replaced": unused},
        )
    return tuple(codes)


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
