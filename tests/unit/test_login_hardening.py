"""Attacks on logins and accounts: guessable passwords, one address trying many names,
replacing two-step verification with a session alone, and logging people out from another site."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import pyotp
import pytest
from sqlmodel import select
from starlette.applications import Starlette
from starlette.routing import Route

from meiqia_app.config import allowed_origins, get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import LoginAddressThrottle, LoginChallenge, LoginThrottle, RecoveryCode, User, UserSession
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity import account_security, passwords, second_factor, sessions, users
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import throttling as login_throttling
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.services.identity.tokens import AuthError
from meiqia_app.state.base import LOGOUT_PATH, SESSION_COOKIE
from meiqia_app.timeutil import utcnow
from meiqia_app.web.session_routes import clear_session
from tests.unit.test_auth import (
    audit_entries,
    fresh_code,
    login,
    password_of,
    secret_of,
    session_row,
    user_row,
)

# --- password strength (zxcvbn) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password12", "auth.password_weak_common"),
        ("aaaaaaaaa1", "auth.password_weak_repeats"),
        ("qwertyuiop1", "auth.password_weak_common"),
        ("abcdefghij1", "auth.password_weak_sequence"),
        ("Zhangwei1990", "auth.password_weak_personal"),
    ],
)
def test_guessable_passwords_are_refused_with_the_reason(password, reason):
    with pytest.raises(ValidationError) as caught:
        passwords.validate_password(password, "zhangwei")
    assert caught.value.field_errors["password"][0] == reason


@pytest.mark.parametrize(
    ("password", "username"),
    [
        *((f"Demo-{name}-2026", name) for name in ("admin", "manager", "analyst", "senior", "agent")),
        ("Start-newbie-42", "newbie"),
        ("Intruder-pass-1", "intruder"),
        ("Someone-new-1", "someone_new"),
        ("Brand-new-pass-7", "agent"),
        ("Lock-me-2026x", "lockme"),
    ],
)
def test_the_demo_and_test_passwords_are_strong_enough(password, username):
    passwords.validate_password(password, username)


def test_an_admin_cannot_create_a_user_with_a_common_password(actors):
    with pytest.raises(ValidationError) as caught:
        users.create_user(actors["admin"], "weakling", "password12", "agent")
    assert caught.value.field_errors["password"][0] == "auth.password_weak_common"
    with read_session() as session:
        assert session.exec(select(User).where(User.username == "weakling")).first() is None


def test_own_password_change_to_a_repeated_password_is_refused(db):
    actor = sessions.resolve_session(login(db, "agent"))
    before = user_row("agent").password_hash
    with pytest.raises(ValidationError) as caught:
        account_security.change_own_password(actor, password_of("agent"), "aaaaaaaaa1")
    assert caught.value.field_errors["password"][0] == "auth.password_weak_repeats"
    assert user_row("agent").password_hash == before


# --- failed logins per client address -------------------------------------------------------


def test_twenty_unknown_usernames_from_one_address_are_throttled(db):
    """Password spraying: every name is new, so no per-name lock ever triggers."""
    threshold = get_settings().ip_lockout_threshold
    answers = []
    for n in range(20):
        try:
            auth.begin_login(f"nobody{n}", "Wrong-password-1", "203.0.113.9")
        except AuthError as error:
            answers.append(error.message_key)
    assert answers[: threshold - 1] == ["auth.invalid_credentials"] * (threshold - 1)
    assert set(answers[threshold - 1 :]) == {"auth.address_locked"}
    # Even the right password of a real account is refused from that address now...
    with pytest.raises(AuthError) as caught:
        auth.begin_login("admin", password_of("admin"), "203.0.113.9")
    assert caught.value.message_key == "auth.address_locked"
    # ...while another address is not affected.
    assert auth.begin_login("admin", password_of("admin"), "198.51.100.7").challenge
    with read_session() as session:
        row = session.get(LoginAddressThrottle, "203.0.113.9")
        assert row.failures == threshold and row.locked_until is not None
        assert session.exec(select(LoginThrottle).where(LoginThrottle.username_key == "nobody19")).first() is None
    lockouts = audit_entries("auth.address_lockout")
    assert len(lockouts) == 1 and lockouts[0].flagged
    assert json.loads(lockouts[0].details)["client_ip"] == "203.0.113.9"
    refused = [json.loads(e.details).get("reason") for e in audit_entries("auth.login")]
    assert refused.count("address_locked") == 20 - threshold + 1


def test_wrong_second_factor_codes_count_for_the_address_too(db):
    threshold = get_settings().ip_lockout_threshold
    for _ in range(threshold):
        accepted = auth.begin_login("admin", password_of("admin"), "203.0.113.10")
        with pytest.raises(AuthError):
            auth.complete_login(accepted.challenge, "000000", "203.0.113.10")
        with write_session() as session:  # keep the per-account lock out of the way
            login_throttling.unlock(session, "admin")
    with pytest.raises(AuthError) as caught:
        auth.begin_login("admin", password_of("admin"), "203.0.113.10")
    assert caught.value.message_key == "auth.address_locked"


def test_the_address_lock_expires(db):
    with write_session() as session:
        session.add(
            LoginAddressThrottle(
                client_ip="203.0.113.11",
                failures=50,
                window_started_at=utcnow() - dt.timedelta(hours=1),
                locked_until=utcnow() - dt.timedelta(seconds=1),
            )
        )
    assert auth.begin_login("admin", password_of("admin"), "203.0.113.11").challenge
    with pytest.raises(AuthError) as caught:
        auth.begin_login("admin", "Wrong-password-1", "203.0.113.11")
    assert caught.value.message_key == "auth.invalid_credentials"  # counting starts again from 1
    with read_session() as session:
        assert session.get(LoginAddressThrottle, "203.0.113.11").failures == 1


# --- replacing two-step verification --------------------------------------------------------


def _another_session(username: str) -> str:
    """A second browser of the same user (a session row like claim_ticket makes)."""
    token = auth_tokens.new_token()
    with write_session() as session:
        session.add(
            UserSession(
                token_hash=auth_tokens.token_hash(token),
                user_id=user_row(username).id,
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
    return token


def test_a_session_alone_cannot_replace_the_authenticator(db):
    actor = sessions.resolve_session(login(db, "agent"))
    secret = secret_of(db, "agent")
    before = user_row("agent").totp_secret_enc
    with pytest.raises(AuthError) as no_password:
        account_security.begin_reenrol(actor, "", fresh_code(secret, "agent"))
    assert no_password.value.message_key == "auth.old_password_wrong"
    with pytest.raises(AuthError) as wrong_code:
        account_security.begin_reenrol(actor, password_of("agent"), "000000")
    assert wrong_code.value.message_key == "auth.invalid_code"
    with pytest.raises(AuthError) as unused_code:
        account_security.begin_reenrol(actor, password_of("agent"), "abcde-fghjk")
    assert unused_code.value.message_key == "auth.invalid_code"
    assert user_row("agent").totp_secret_enc == before
    with read_session() as session:
        assert not session.exec(select(LoginChallenge).where(LoginChallenge.purpose == "reenrol")).all()
    refusals = audit_entries("auth.totp_reenrol")
    assert [json.loads(e.details)["reason"] for e in refusals] == ["old_password_wrong", "invalid_code", "invalid_code"]
    assert all(e.result == "refused" for e in refusals)


def test_wrong_answers_when_replacing_the_authenticator_lock_the_account(db):
    actor = sessions.resolve_session(login(db, "agent"))
    for _ in range(get_settings().lockout_threshold - 1):
        with pytest.raises(AuthError):
            account_security.begin_reenrol(actor, "Wrong-password-1", "123456")
    with pytest.raises(AuthError) as caught:
        account_security.begin_reenrol(actor, "Wrong-password-1", "123456")
    assert caught.value.message_key == "auth.locked"
    with pytest.raises(AuthError) as again:  # the lock holds for the login too
        auth.begin_login("agent", password_of("agent"))
    assert again.value.message_key == "auth.locked"


def test_replacing_the_authenticator_ends_every_other_session(db):
    here, elsewhere = login(db, "agent"), _another_session("agent")
    actor = sessions.resolve_session(here)
    enrolment = account_security.begin_reenrol(actor, password_of("agent"), fresh_code(secret_of(db, "agent"), "agent"))
    new_code = pyotp.TOTP(enrolment.secret, interval=second_factor.TOTP_INTERVAL).now()
    done = account_security.confirm_reenrol(actor, enrolment.challenge, new_code)
    assert done.sessions_revoked == 1 and len(done.recovery_codes) == 10
    assert sessions.resolve_session(elsewhere) is None
    assert session_row(elsewhere).revoked_reason == "totp_reenrolled"
    assert sessions.resolve_session(here) is not None  # the session that did it stays
    assert second_factor.decrypt_secret(user_row("agent").totp_secret_enc) == enrolment.secret
    entry = audit_entries("auth.totp_reenrolled")[-1]
    assert json.loads(entry.details) == {"other_sessions_revoked": 1}


def test_a_recovery_code_can_stand_in_for_the_current_code_once(db):
    actor = sessions.resolve_session(login(db, "agent"))
    codes = second_factor.new_recovery_codes()
    with write_session() as session:
        second_factor.store_recovery_codes(session, actor.user_id, codes)
    assert account_security.begin_reenrol(actor, password_of("agent"), codes[0].upper()).challenge
    with pytest.raises(AuthError):
        account_security.begin_reenrol(actor, password_of("agent"), codes[0])
    with read_session() as session:
        used = session.exec(
            select(RecoveryCode).where(RecoveryCode.user_id == actor.user_id, RecoveryCode.used_at.is_not(None))
        ).all()
    assert len(used) == 1


# --- logout from another site ----------------------------------------------------------------


@pytest.fixture()
def logout_client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    app = Starlette(routes=[Route(LOGOUT_PATH, clear_session, methods=["GET", "HEAD", "POST"])])
    return TestClient(app, base_url="http://localhost:3000")


def _our_origin() -> str:
    """The page origin of the app the test client talks to (its Host: localhost:3000)."""
    return allowed_origins(3000)[0]


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),  # a link or an <img> on another site
        ("GET", {"Referer": "http://localhost:3000/customers"}),
        ("POST", {"Origin": "https://evil.example"}),  # another site's form
        ("POST", {"Referer": "https://evil.example/page"}),
        ("POST", {"Origin": "null"}),
        ("POST", {}),  # no Origin, no Referer
    ],
)
def test_a_cross_site_or_get_request_does_not_log_out(db, logout_client, method, headers):
    token = login(db, "agent")
    response = logout_client.request(
        method, LOGOUT_PATH, headers=headers, cookies={SESSION_COOKIE: token}, follow_redirects=False
    )
    assert response.status_code == (405 if method == "GET" else 403)
    assert sessions.resolve_session(token) is not None
    assert session_row(token).revoked_at is None
    assert "set-cookie" not in response.headers
    assert audit_entries("auth.logout") == []


@pytest.mark.parametrize("header", ["Origin", "Referer"])
def test_a_same_origin_post_logs_out_and_clears_the_cookie(db, logout_client, header):
    token = login(db, "agent")
    value = _our_origin() if header == "Origin" else _our_origin() + "/account"
    response = logout_client.post(
        LOGOUT_PATH, headers={header: value}, cookies={SESSION_COOKIE: token}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"] and "Max-Age=0" in response.headers["set-cookie"]
    assert sessions.resolve_session(token) is None
    assert session_row(token).revoked_reason == "logout"


def test_the_cli_refuses_a_common_password_in_words_not_a_message_key(db, capsys):
    from meiqia_app import cli

    assert cli.main(["create-user", "--username", "weakling", "--password", "password12", "--role", "agent"]) == 2
    error = capsys.readouterr().err
    assert "too easy to guess" in error and "auth.password" not in error
