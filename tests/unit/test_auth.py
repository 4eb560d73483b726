"""services/identity/ (login, passwords, second_factor, throttling, sessions): passwords, throttling, TOTP, recovery codes, sessions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import pyotp
import pytest
from sqlmodel import select

from meiqia_app.config import get_settings, reload_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import AuditEntry, LoginChallenge, LoginThrottle, RecoveryCode, User, UserSession
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity import account_security, passwords, second_factor, sessions, users
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.services.identity.tokens import AuthError
from meiqia_app.timeutil import utcnow

FIXED_NOW = 1_800_000_015.0  # 15 s into a TOTP step: ±1 step is unambiguous


# --- helpers ---------------------------------------------------------------------


def password_of(username: str) -> str:
    return f"Demo-{username}-2026"


def secret_of(data_dir, username: str) -> str:
    accounts = json.loads((data_dir / "demo_accounts.json").read_text())
    return next(a["totp_secret"] for a in accounts if a["username"] == username)


def user_row(username: str) -> User:
    with read_session() as session:
        return session.exec(select(User).where(User.username == username)).one()


def fresh_code(secret: str, username: str) -> str:
    """A valid code the server has not seen yet (current step, or the next one if it was used)."""
    last = user_row(username).totp_last_step
    step = max(second_factor.current_step(), last + 1)
    assert step <= second_factor.current_step() + 1, "no unused step left within the drift window"
    return pyotp.TOTP(secret, interval=second_factor.TOTP_INTERVAL).generate_otp(step)


def login(data_dir, username: str, client_ip: str = "10.0.0.1") -> str:
    """The whole flow: password, TOTP, ticket -> session token."""
    accepted = auth.begin_login(username, password_of(username), client_ip)
    assert accepted.must_enrol is False
    second = auth.complete_login(accepted.challenge, fresh_code(secret_of(data_dir, username), username), client_ip)
    return auth.claim_ticket(second.ticket, client_ip, "pytest")


def audit_entries(action: str | None = None) -> list[AuditEntry]:
    with read_session() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(session.exec(query).all())


def session_row(token: str) -> UserSession:
    with read_session() as session:
        return session.exec(select(UserSession).where(UserSession.token_hash == auth_tokens.token_hash(token))).one()


def update_session_row(token: str, **values) -> None:
    with write_session() as session:
        row = session.exec(select(UserSession).where(UserSession.token_hash == auth_tokens.token_hash(token))).one()
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)


def create_user_without_totp(username: str = "newbie", role: str = "agent") -> str:
    password = f"Start-{username}-42"
    with write_session() as session:
        users.create_user_record(session, username, password, role, "New Person")
    return password


def enrol(username: str, password: str) -> tuple[str, tuple[str, ...]]:
    accepted = auth.begin_login(username, password)
    assert accepted.must_enrol is True
    code = pyotp.TOTP(accepted.enrol_secret, interval=second_factor.TOTP_INTERVAL).now()
    done = auth.complete_login(accepted.challenge, code)
    return accepted.enrol_secret, done.recovery_codes


# --- passwords ---------------------------------------------------------------------


def test_production_bcrypt_cost_defaults_to_12(monkeypatch):
    monkeypatch.delenv("MEIQIA_BCRYPT_ROUNDS", raising=False)
    try:
        assert reload_settings().bcrypt_rounds == 12
    finally:
        monkeypatch.undo()
        reload_settings()
    assert get_settings().bcrypt_rounds == 4  # the suite's fast setting is back


def test_hash_password_uses_configured_cost_and_verifies(db):
    hashed = passwords.hash_password("Correct-horse-9")
    assert hashed.startswith(f"$2b${get_settings().bcrypt_rounds:02d}$")
    assert "Correct-horse-9" not in hashed
    assert passwords.verify_password("Correct-horse-9", hashed)
    assert not passwords.verify_password("correct-horse-9", hashed)
    assert passwords.hash_password("Correct-horse-9") != hashed  # salted


def test_verify_password_refuses_over_72_bytes_instead_of_raising(db):
    hashed = passwords.hash_password("a1" * 30)
    assert passwords.verify_password("密" * 30, hashed) is False  # 90 bytes
    assert passwords.verify_password("x", "not-a-bcrypt-hash") is False


@pytest.mark.parametrize(
    ("password", "key"),
    [
        ("short1", "auth.password_too_short"),
        ("a1" + "密" * 30, "auth.password_too_long"),
        ("onlyletters", "auth.password_needs_letter_digit"),
        ("1234567890", "auth.password_needs_letter_digit"),
        ("Alice12345", "auth.password_is_username"),
    ],
)
def test_validate_password_rejects_weak_passwords(password, key):
    with pytest.raises(ValidationError) as caught:
        passwords.validate_password(password, "alice12345")
    assert caught.value.field_errors["password"][0] == key


# --- step 1: username and password ----------------------------------------------------


def test_wrong_password_and_unknown_user_give_the_same_error(db):
    with pytest.raises(AuthError) as wrong:
        auth.begin_login("admin", "Wrong-password-1")
    with pytest.raises(AuthError) as unknown:
        auth.begin_login("nobody-here", "Wrong-password-1")
    assert wrong.value.message_key == unknown.value.message_key == "auth.invalid_credentials"
    assert wrong.value.params == unknown.value.params == {}

    refused = audit_entries("auth.login")
    assert [e.result for e in refused] == ["refused", "refused"]
    assert json.loads(refused[0].details)["reason"] == "bad_password"
    assert json.loads(refused[1].details)["reason"] == "unknown_user"
    assert refused[1].actor_name == "nobody-here"


def test_inactive_user_cannot_log_in_even_with_right_password(db, actors):
    users.update_user(actors["admin"], actors["agent"].user_id, is_active=False)
    with pytest.raises(AuthError) as caught:
        auth.begin_login("agent", password_of("agent"))
    assert caught.value.message_key == "auth.invalid_credentials"


def test_right_password_gives_a_totp_challenge_for_enrolled_user(db):
    accepted = auth.begin_login(" admin ", password_of("admin"))
    assert accepted.must_enrol is False and accepted.enrol_secret is None
    with read_session() as session:
        row = session.exec(
            select(LoginChallenge).where(LoginChallenge.challenge_hash == auth_tokens.token_hash(accepted.challenge))
        ).one()
    assert row.purpose == "totp" and row.user_id == user_row("admin").id


@pytest.mark.parametrize("username", ["manager", "ghost-user"])
def test_fifth_failure_locks_the_name_known_or_not(db, username):
    threshold = get_settings().lockout_threshold
    assert threshold == 5
    for _ in range(threshold - 1):
        with pytest.raises(AuthError) as caught:
            auth.begin_login(username, "Wrong-password-1")
        assert caught.value.message_key == "auth.invalid_credentials"
    with pytest.raises(AuthError) as caught:
        auth.begin_login(username, "Wrong-password-1")
    assert caught.value.message_key == "auth.locked"
    assert caught.value.params == {"minutes": get_settings().lockout_minutes}

    # Locked: even the right password is refused, with the same answer.
    with pytest.raises(AuthError) as caught:
        auth.begin_login(username, password_of(username))
    assert caught.value.message_key == "auth.locked"

    with read_session() as session:
        throttle = session.get(LoginThrottle, username)
    assert throttle.failures == threshold and throttle.locked_until is not None

    lockouts = audit_entries("auth.lockout")
    assert len(lockouts) == 1 and lockouts[0].flagged and lockouts[0].result == "refused"
    assert lockouts[0].actor_name == username
    last_login_entry = audit_entries("auth.login")[-1]
    assert last_login_entry.result == "refused"
    assert json.loads(last_login_entry.details) == {"reason": "locked"}


def test_lock_is_per_normalised_name(db):
    for _ in range(5):
        with pytest.raises(AuthError):
            auth.begin_login("MANAGER", "Wrong-password-1")
    with pytest.raises(AuthError) as caught:
        auth.begin_login("manager", password_of("manager"))
    assert caught.value.message_key == "auth.locked"
    # Another name is unaffected.
    assert auth.begin_login("analyst", password_of("analyst")).challenge


def test_lock_expires_and_a_new_failure_starts_counting_again(db):
    for _ in range(5):
        with pytest.raises(AuthError):
            auth.begin_login("manager", "Wrong-password-1")
    with write_session() as session:
        row = session.get(LoginThrottle, "manager")
        row.locked_until = utcnow() - dt.timedelta(seconds=1)
        session.add(row)
    assert auth.begin_login("manager", password_of("manager")).challenge
    with pytest.raises(AuthError) as caught:
        auth.begin_login("manager", "Wrong-password-1")
    assert caught.value.message_key == "auth.invalid_credentials"
    with read_session() as session:
        assert session.get(LoginThrottle, "manager").failures == 1


# --- step 2: TOTP ------------------------------------------------------------------


def test_totp_login_issues_ticket_and_stores_the_step(db):
    secret = secret_of(db, "admin")
    accepted = auth.begin_login("admin", password_of("admin"))
    code = pyotp.TOTP(secret).now()
    before = second_factor.current_step()
    result = auth.complete_login(accepted.challenge, code)
    assert result.ticket and result.recovery_codes == () and result.used_recovery_code is False
    assert user_row("admin").totp_last_step in (before - 1, before, before + 1)


def test_totp_code_is_rejected_on_reuse(db):
    secret = secret_of(db, "admin")
    code = pyotp.TOTP(secret).now()
    first = auth.begin_login("admin", password_of("admin"))
    auth.complete_login(first.challenge, code)

    second = auth.begin_login("admin", password_of("admin"))
    with pytest.raises(AuthError) as caught:
        auth.complete_login(second.challenge, code)
    assert caught.value.message_key == "auth.code_reused"
    refused = audit_entries("auth.second_factor")[-1]
    assert refused.result == "refused" and json.loads(refused.details)["reason"] == "code_reused"


def wrong_code(secret: str) -> str:
    """Six digits that are not valid in any step the server could accept right now."""
    totp = pyotp.TOTP(secret, interval=second_factor.TOTP_INTERVAL)
    step = second_factor.current_step()
    valid = {totp.generate_otp(s) for s in range(step - 2, step + 3)}
    return next(c for c in ("000000", "123456", "999999", "314159") if c not in valid)


def test_wrong_totp_code_is_refused_and_counts_towards_lockout(db):
    bad = wrong_code(secret_of(db, "admin"))
    for attempt in range(5):
        accepted = auth.begin_login("admin", password_of("admin"))
        with pytest.raises(AuthError) as caught:
            auth.complete_login(accepted.challenge, bad if attempt % 2 else "12345x")
        expected = "auth.locked" if attempt == 4 else "auth.invalid_code"
        assert caught.value.message_key == expected
    # Now the name is locked: even the right code at a fresh challenge cannot be tried.
    with pytest.raises(AuthError) as caught:
        auth.begin_login("admin", password_of("admin"))
    assert caught.value.message_key == "auth.locked"


def test_successful_second_factor_clears_earlier_failures(db):
    for _ in range(4):
        with pytest.raises(AuthError):
            auth.begin_login("admin", "Wrong-password-1")
    login(db, "admin")
    with read_session() as session:
        assert session.get(LoginThrottle, "admin") is None


def test_challenge_is_single_use(db):
    secret = secret_of(db, "admin")
    accepted = auth.begin_login("admin", password_of("admin"))
    auth.complete_login(accepted.challenge, pyotp.TOTP(secret).now())
    with pytest.raises(AuthError) as caught:
        auth.complete_login(accepted.challenge, pyotp.TOTP(secret).at(time.time() + 30))
    assert caught.value.message_key == "auth.challenge_expired"


def test_expired_challenge_is_refused(db):
    secret = secret_of(db, "admin")
    accepted = auth.begin_login("admin", password_of("admin"))
    with write_session() as session:
        row = session.exec(select(LoginChallenge)).one()
        row.expires_at = utcnow() - dt.timedelta(seconds=1)
        session.add(row)
    with pytest.raises(AuthError) as caught:
        auth.complete_login(accepted.challenge, pyotp.TOTP(secret).now())
    assert caught.value.message_key == "auth.challenge_expired"


def test_totp_accepts_one_step_of_drift_either_way():
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret, interval=second_factor.TOTP_INTERVAL)
    step = second_factor.current_step(FIXED_NOW)
    for offset in (-1, 0, 1):
        code = totp.at(FIXED_NOW + offset * second_factor.TOTP_INTERVAL)
        assert second_factor.match_totp_step(secret, code, last_step=0, now=FIXED_NOW) == step + offset


@pytest.mark.parametrize("offset", [-2, 2])
def test_totp_refuses_codes_two_steps_away(offset):
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(FIXED_NOW + offset * second_factor.TOTP_INTERVAL)
    with pytest.raises(AuthError) as caught:
        second_factor.match_totp_step(secret, code, last_step=0, now=FIXED_NOW)
    assert caught.value.message_key == "auth.invalid_code"


def test_totp_refuses_steps_at_or_before_the_last_accepted_one():
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    step = second_factor.current_step(FIXED_NOW)
    for offset in (-1, 0):
        with pytest.raises(AuthError) as caught:
            second_factor.match_totp_step(secret, totp.at(FIXED_NOW + offset * 30), last_step=step, now=FIXED_NOW)
        assert caught.value.message_key == "auth.code_reused"
    # The next step is still fine.
    assert second_factor.match_totp_step(secret, totp.at(FIXED_NOW + 30), last_step=step, now=FIXED_NOW) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef"])
def test_malformed_totp_code_is_invalid(code):
    with pytest.raises(AuthError) as caught:
        second_factor.match_totp_step(pyotp.random_base32(), code, last_step=0, now=FIXED_NOW)
    assert caught.value.message_key == "auth.invalid_code"


def test_totp_code_with_spaces_is_accepted():
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(FIXED_NOW)
    assert second_factor.match_totp_step(
        secret, f" {code[:3]} {code[3:]} ", 0, now=FIXED_NOW
    ) == second_factor.current_step(FIXED_NOW)


def test_totp_secret_is_stored_encrypted(db):
    secret = secret_of(db, "admin")
    stored = user_row("admin").totp_secret_enc
    assert stored and secret not in stored
    assert second_factor.decrypt_secret(stored) == secret


# --- enrolment and recovery codes ---------------------------------------------------------


def test_user_without_totp_must_enrol_and_gets_ten_recovery_codes(db):
    password = create_user_without_totp()
    accepted = auth.begin_login("newbie", password)
    assert accepted.must_enrol is True
    assert accepted.enrol_uri.startswith("otpauth://totp/") and accepted.enrol_secret in accepted.enrol_uri
    assert accepted.enrol_qr.startswith("data:image/png;base64,")
    assert user_row("newbie").totp_secret_enc is None  # nothing stored until confirmed

    done = auth.complete_login(accepted.challenge, pyotp.TOTP(accepted.enrol_secret).now())
    assert len(done.recovery_codes) == second_factor.RECOVERY_CODE_COUNT == 10
    assert len(set(done.recovery_codes)) == 10
    assert done.ticket

    user = user_row("newbie")
    assert second_factor.decrypt_secret(user.totp_secret_enc) == accepted.enrol_secret
    assert user.totp_enrolled_at is not None and user.totp_last_step > 0
    assert account_security.remaining_recovery_codes(user.id) == 10
    with read_session() as session:
        stored = [r.code_hash for r in session.exec(select(RecoveryCode).where(RecoveryCode.user_id == user.id))]
    assert not set(done.recovery_codes) & set(stored)  # only hashes are kept
    assert [e.result for e in audit_entries("auth.totp_enrolled")] == ["ok"]


def test_enrolment_refuses_a_code_from_another_secret(db):
    password = create_user_without_totp()
    accepted = auth.begin_login("newbie", password)
    with pytest.raises(AuthError) as caught:
        auth.complete_login(accepted.challenge, pyotp.TOTP(pyotp.random_base32()).now())
    assert caught.value.message_key == "auth.invalid_code"
    assert user_row("newbie").totp_secret_enc is None


def test_enrolment_code_cannot_be_replayed_for_the_next_login(db):
    password = create_user_without_totp()
    secret, _codes = enrol("newbie", password)
    used_step = user_row("newbie").totp_last_step
    replay = pyotp.TOTP(secret).generate_otp(used_step)
    accepted = auth.begin_login("newbie", password)
    with pytest.raises(AuthError) as caught:
        auth.complete_login(accepted.challenge, replay)
    assert caught.value.message_key == "auth.code_reused"


def test_recovery_code_logs_in_once(db):
    password = create_user_without_totp()
    _secret, codes = enrol("newbie", password)
    user_id = user_row("newbie").id

    accepted = auth.begin_login("newbie", password)
    assert accepted.must_enrol is False
    result = auth.complete_login(accepted.challenge, codes[3])
    assert result.used_recovery_code is True and result.ticket
    assert account_security.remaining_recovery_codes(user_id) == 9
    assert len(audit_entries("auth.recovery_code_used")) == 1

    again = auth.begin_login("newbie", password)
    with pytest.raises(AuthError) as caught:
        auth.complete_login(again.challenge, codes[3])
    assert caught.value.message_key == "auth.invalid_code"
    assert account_security.remaining_recovery_codes(user_id) == 9


def test_recovery_code_ignores_case_and_dash(db):
    password = create_user_without_totp()
    _secret, codes = enrol("newbie", password)
    typed = codes[0].replace("-", "").upper()
    accepted = auth.begin_login("newbie", password)
    assert auth.complete_login(accepted.challenge, typed).used_recovery_code is True


def test_recovery_code_of_another_user_is_refused(db):
    password = create_user_without_totp("first")
    _s, codes = enrol("first", password)
    other_password = create_user_without_totp("second")
    enrol("second", other_password)
    accepted = auth.begin_login("second", other_password)
    with pytest.raises(AuthError) as caught:
        auth.complete_login(accepted.challenge, codes[0])
    assert caught.value.message_key == "auth.invalid_code"


# --- step 3: sessions -------------------------------------------------------------------


def test_claimed_ticket_gives_a_session_that_resolves_to_the_actor(db):
    token = login(db, "senior", client_ip="10.1.2.3")
    actor = sessions.resolve_session(token, "10.1.2.3")
    assert actor is not None
    assert actor.username == "senior" and actor.role_name == "senior_agent"
    assert actor.permissions == frozenset({"customer.view", "customer.view_sensitive"})
    row = session_row(token)
    assert actor.session_id == row.id and row.user_agent == "pytest" and row.client_ip == "10.1.2.3"
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert user_row("senior").last_login_at is not None

    ok_logins = [e for e in audit_entries("auth.login") if e.result == "ok"]
    assert len(ok_logins) == 1 and ok_logins[0].actor_name == "senior"
    assert ok_logins[0].actor_id == actor.user_id and ok_logins[0].client_ip == "10.1.2.3"


def test_session_token_is_not_stored_in_clear(db):
    token = login(db, "agent")
    with read_session() as session:
        rows = session.exec(select(UserSession)).all()
    assert all(token not in (r.token_hash or "") for r in rows)


def test_ticket_is_single_use(db):
    accepted = auth.begin_login("agent", password_of("agent"))
    result = auth.complete_login(accepted.challenge, fresh_code(secret_of(db, "agent"), "agent"))
    assert auth.claim_ticket(result.ticket)
    with pytest.raises(AuthError) as caught:
        auth.claim_ticket(result.ticket)
    assert caught.value.message_key == "auth.challenge_expired"


def test_a_password_challenge_cannot_be_claimed_as_a_ticket(db):
    accepted = auth.begin_login("agent", password_of("agent"))
    with pytest.raises(AuthError) as caught:
        auth.claim_ticket(accepted.challenge)
    assert caught.value.message_key == "auth.challenge_expired"


def test_expired_ticket_is_refused(db):
    accepted = auth.begin_login("agent", password_of("agent"))
    result = auth.complete_login(accepted.challenge, fresh_code(secret_of(db, "agent"), "agent"))
    with write_session() as session:
        row = session.exec(
            select(LoginChallenge).where(LoginChallenge.challenge_hash == auth_tokens.token_hash(result.ticket))
        ).one()
        row.expires_at = utcnow() - dt.timedelta(seconds=1)
        session.add(row)
    with pytest.raises(AuthError):
        auth.claim_ticket(result.ticket)


@pytest.mark.parametrize("token", [None, "", "not-a-real-token"])
def test_missing_or_unknown_token_resolves_to_nobody(db, token):
    assert sessions.resolve_session(token) is None


def test_idle_session_expires(db):
    token = login(db, "agent")
    idle = get_settings().session_idle_minutes
    update_session_row(token, last_seen_at=utcnow() - dt.timedelta(minutes=idle, seconds=5))
    assert sessions.resolve_session(token) is None


def test_activity_moves_the_idle_deadline(db):
    token = login(db, "agent")
    idle = get_settings().session_idle_minutes
    update_session_row(token, last_seen_at=utcnow() - dt.timedelta(minutes=idle - 1))
    assert sessions.resolve_session(token) is not None
    from meiqia_app.timeutil import as_utc

    assert utcnow() - as_utc(session_row(token).last_seen_at) < dt.timedelta(seconds=30)
    assert sessions.resolve_session(token) is not None


def test_session_expires_at_absolute_deadline_even_when_active(db):
    token = login(db, "agent")
    row = session_row(token)
    from meiqia_app.timeutil import as_utc

    lifetime = as_utc(row.expires_at) - as_utc(row.created_at)
    assert abs(lifetime - dt.timedelta(hours=get_settings().session_max_hours)) < dt.timedelta(seconds=5)
    update_session_row(token, expires_at=utcnow() - dt.timedelta(seconds=1), last_seen_at=utcnow())
    assert sessions.resolve_session(token) is None


def test_deactivated_user_loses_the_session(db, actors):
    token = login(db, "agent")
    users.update_user(actors["admin"], actors["agent"].user_id, is_active=False)
    assert sessions.resolve_session(token) is None


def test_logout_revokes_the_session(db):
    token = login(db, "agent")
    sessions.logout(token)
    assert sessions.resolve_session(token) is None
    row = session_row(token)
    assert row.revoked_at is not None and row.revoked_reason == "logout"
    assert [e.actor_name for e in audit_entries("auth.logout")] == ["agent"]
    sessions.logout(token)  # twice is harmless and not audited again
    assert len(audit_entries("auth.logout")) == 1


def test_logout_everywhere_revokes_every_session_of_the_user_only(db):
    first = login(db, "agent")
    second = login(db, "agent")
    other = login(db, "senior")
    actor = sessions.resolve_session(first)
    assert sessions.logout_everywhere(actor) == 2
    assert sessions.resolve_session(first) is None
    assert sessions.resolve_session(second) is None
    assert sessions.resolve_session(other) is not None
    entry = audit_entries("auth.logout_all")[-1]
    assert json.loads(entry.details) == {"sessions": 2}


# --- own account ------------------------------------------------------------------------


def test_change_own_password_requires_the_old_one(db):
    token = login(db, "agent")
    actor = sessions.resolve_session(token)
    before = user_row("agent").password_hash
    with pytest.raises(ValidationError) as caught:
        account_security.change_own_password(actor, "Wrong-old-pass-1", "Brand-new-pass-7")
    assert caught.value.field_errors["old_password"][0] == "auth.old_password_wrong"
    assert user_row("agent").password_hash == before
    refused = audit_entries("auth.password_change")
    assert [e.result for e in refused] == ["refused"]


def test_change_own_password_validates_the_new_one(db):
    actor = sessions.resolve_session(login(db, "agent"))
    before = user_row("agent").password_hash
    with pytest.raises(ValidationError) as caught:
        account_security.change_own_password(actor, password_of("agent"), "short1")
    assert caught.value.field_errors["password"][0] == "auth.password_too_short"
    assert user_row("agent").password_hash == before


def test_change_own_password_switches_password_and_revokes_other_sessions(db):
    current = login(db, "agent")
    other = login(db, "agent")
    actor = sessions.resolve_session(current)
    account_security.change_own_password(actor, password_of("agent"), "Brand-new-pass-7")

    assert sessions.resolve_session(current) is not None
    assert sessions.resolve_session(other) is None
    assert session_row(other).revoked_reason == "password_changed"
    with pytest.raises(AuthError):
        auth.begin_login("agent", password_of("agent"))
    assert auth.begin_login("agent", "Brand-new-pass-7").challenge
    entry = [e for e in audit_entries("auth.password_change") if e.result == "ok"]
    assert len(entry) == 1 and json.loads(entry[0].details) == {"other_sessions_revoked": 1}
