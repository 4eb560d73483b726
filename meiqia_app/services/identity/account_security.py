"""One's own account security (AUTH-5): changing the password, re-enrolling the second factor, new recovery codes."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlmodel import Session, select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import LoginChallenge, RecoveryCode, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.passwords import hash_password, validate_password, verify_password
from meiqia_app.services.identity.rbac import Actor
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
from meiqia_app.services.identity.sessions import revoke_sessions
from meiqia_app.services.identity.throttling import check_not_locked, refuse_counted, register_failure, throttle_key
from meiqia_app.services.identity.tokens import CHALLENGE_MINUTES, AuthError, load_challenge, new_token, token_hash
from meiqia_app.timeutil import utcnow

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
        check_not_locked(session, key)
        refusal: AuthError | None = None
        used_recovery = False
        if not verify_password(password, user.password_hash):
            refusal = AuthError("auth.old_password_wrong")
        else:
            try:
                if looks_like_recovery_code(code):
                    if not burn_recovery_code(session, user.id, code):
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
            refuse_counted(session, actor, "auth.totp_reenrol", user.id, refusal, register_failure(session, key))
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
        row = load_challenge(session, challenge, ("reenrol",))
        if row.user_id != actor.user_id:
            raise AuthError("auth.challenge_expired")
        secret = decrypt_secret(row.pending_secret_enc or "")
        step = match_totp_step(secret, code, last_step=0)
        user = session.get(User, actor.user_id)
        user.totp_secret_enc = encrypt_secret(secret)
        user.totp_enrolled_at = utcnow()
        user.totp_last_step = step
        codes = new_recovery_codes()
        store_recovery_codes(session, user.id, codes)
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
        check_not_locked(session, key)
        try:
            _check_password_and_totp(session, user, password, code)
        except AuthError as refusal:
            refuse_counted(
                session, actor, "auth.recovery_codes_renew", user.id, refusal, register_failure(session, key)
            )
        unused = len(
            session.exec(
                select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
            ).all()
        )
        codes = new_recovery_codes()
        store_recovery_codes(session, user.id, codes)
        audit.record(
            session,
            actor,
            "auth.recovery_codes_renew",
            target_type="user",
            target_id=user.id,
            details={"codes": len(codes), "unused_replaced": unused},
        )
    return tuple(codes)
