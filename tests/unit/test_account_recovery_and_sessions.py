"""/account: new recovery codes (password + authenticator code, shown once, the old
ones stop working) and one's own sessions (listed, signed out one by one)."""

from __future__ import annotations

import datetime as dt
import json

import pyotp
import pytest
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import RecoveryCode, UserSession
from meiqia_app.services.errors import Conflict, NotFound
from meiqia_app.services.identity import account_security, second_factor, sessions
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.services.identity.tokens import AuthError
from meiqia_app.state.account import AccountState
from meiqia_app.timeutil import utcnow
from tests.unit.tabs import demo_account, live_token, new_tab, pickled, run, serve
from tests.unit.test_auth import audit_entries, fresh_code, login, password_of, secret_of, user_row

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.91 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


def _complete_with_recovery_code(username: str, code: str) -> auth.SecondFactorAccepted:
    accepted = auth.begin_login(username, password_of(username))
    return auth.complete_login(accepted.challenge, code)


def _unused_code_hashes(user_id: int) -> set[str]:
    with read_session() as session:
        rows = session.exec(
            select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        ).all()
    return {row.code_hash for row in rows}


def _another_session(username: str, user_agent: str = "", client_ip: str = "") -> tuple[str, int]:
    """A second browser of the same user (a session row like claim_ticket makes): (token, id)."""
    token = auth_tokens.new_token()
    with write_session() as session:
        row = UserSession(
            token_hash=auth_tokens.token_hash(token),
            user_id=user_row(username).id,
            expires_at=utcnow() + dt.timedelta(hours=1),
            user_agent=user_agent,
            client_ip=client_ip,
        )
        session.add(row)
        session.flush()
        session_id = row.id
    return token, session_id


# --- new recovery codes -----------------------------------------------------------------------


def test_a_session_alone_cannot_mint_recovery_codes(db):
    """The attack: a stolen session asks for codes without (or with wrong) proof."""
    actor = sessions.resolve_session(login(db, "agent"))
    old = second_factor.new_recovery_codes()
    with write_session() as session:
        second_factor.store_recovery_codes(session, actor.user_id, old)
    before = _unused_code_hashes(actor.user_id)
    secret = secret_of(db, "agent")
    attempts = [
        ("", fresh_code(secret, "agent"), "auth.old_password_wrong"),
        ("Wrong-password-1", fresh_code(secret, "agent"), "auth.old_password_wrong"),
        (password_of("agent"), "000000", "auth.invalid_code"),
        # a recovery code is not the authenticator: whoever holds one must not turn it into ten
        (password_of("agent"), old[0], "account.needs_authenticator_code"),
    ]
    for password, code, key in attempts:
        with pytest.raises(AuthError) as refused:
            account_security.regenerate_recovery_codes(actor, password, code)
        assert refused.value.message_key == key
    assert _unused_code_hashes(actor.user_id) == before  # nothing changed, the offered code not burnt
    refusals = audit_entries("auth.recovery_codes_renew")
    assert [(e.result, json.loads(e.details)["reason"]) for e in refusals] == [
        ("refused", "old_password_wrong"),
        ("refused", "old_password_wrong"),
        ("refused", "invalid_code"),
        ("refused", "needs_authenticator_code"),
    ]


def test_wrong_answers_for_new_recovery_codes_lock_the_account(db):
    actor = sessions.resolve_session(login(db, "agent"))
    from meiqia_app.config import get_settings

    for _ in range(get_settings().lockout_threshold - 1):
        with pytest.raises(AuthError):
            account_security.regenerate_recovery_codes(actor, "Wrong-password-1", "123456")
    with pytest.raises(AuthError) as caught:
        account_security.regenerate_recovery_codes(actor, "Wrong-password-1", "123456")
    assert caught.value.message_key == "auth.locked"
    assert audit_entries("auth.recovery_codes_renew")[-1].flagged


def test_new_recovery_codes_replace_the_old_ones_and_each_works_once(db):
    actor = sessions.resolve_session(login(db, "agent"))
    old = second_factor.new_recovery_codes()
    with write_session() as session:
        second_factor.store_recovery_codes(session, actor.user_id, old)
    _complete_with_recovery_code("agent", old[0])  # one of the old ones was used already

    new = account_security.regenerate_recovery_codes(
        actor, password_of("agent"), fresh_code(secret_of(db, "agent"), "agent")
    )

    assert len(new) == second_factor.RECOVERY_CODE_COUNT and len(set(new)) == len(new) and not set(new) & set(old)
    assert account_security.remaining_recovery_codes(actor.user_id) == second_factor.RECOVERY_CODE_COUNT
    with read_session() as session:  # only keyed hashes are stored
        stored = " ".join(r.code_hash for r in session.exec(select(RecoveryCode)).all())
    assert not any(code in stored or code.replace("-", "") in stored for code in new)
    with pytest.raises(AuthError):  # an old, unused code no longer logs in
        _complete_with_recovery_code("agent", old[1])
    assert _complete_with_recovery_code("agent", new[0]).used_recovery_code
    with pytest.raises(AuthError):  # a new one works once
        _complete_with_recovery_code("agent", new[0])
    entry = audit_entries("auth.recovery_codes_renew")[-1]
    assert entry.result == "ok" and entry.actor_name == "agent" and entry.target_id == str(actor.user_id)
    assert json.loads(entry.details) == {"codes": 10, "unused_replaced": 9}
    assert not any(code in entry.details for code in new)


def test_new_recovery_codes_are_shown_once_and_never_kept_in_the_tab(db):
    token = live_token(db, "admin")
    account = demo_account(db, "admin")
    tab = new_tab()
    run(serve(tab, AccountState, "start_regen", f"mq_session={token}", "/account"))
    form = {
        "regen_password": account["password"],
        "regen_code": pyotp.TOTP(account["totp_secret"]).at(dt.datetime.now().timestamp() + 30),
    }
    served = run(serve(tab, AccountState, "regenerate_codes", f"mq_session={token}", "/account", {"form": form}))
    codes = served.value(AccountState, "new_recovery_codes")
    assert len(codes) == second_factor.RECOVERY_CODE_COUNT
    assert served.value(AccountState, "regen_step") == "codes"
    assert [c for c in codes if c.encode() in pickled(tab)] == []
    assert account_security.remaining_recovery_codes(user_row("admin").id) == second_factor.RECOVERY_CODE_COUNT


# --- sessions ---------------------------------------------------------------------------------


def test_describe_user_agent_is_short():
    assert sessions.describe_user_agent(CHROME_WINDOWS) == "Chrome 124 · Windows"
    assert sessions.describe_user_agent(SAFARI_IPHONE) == "Safari 17 · iPhone"
    assert sessions.describe_user_agent("") == ""
    assert sessions.describe_user_agent("x" * 80) == "x" * 40 + "…"


def test_own_sessions_are_listed_with_the_current_one_marked(db):
    here = login(db, "agent")
    actor = sessions.resolve_session(here)
    _other_token, other_id = _another_session("agent", CHROME_WINDOWS, "10.1.2.3")
    ended_token, ended_id = _another_session("agent")
    with write_session() as session:
        session.get(UserSession, ended_id).revoked_at = utcnow()
    _another_session("manager", SAFARI_IPHONE)  # somebody else's

    listed = sessions.list_own_sessions(actor)

    assert [s.id for s in listed] == [actor.session_id, other_id]
    assert listed[0].current and not listed[1].current
    assert listed[1].device == "Chrome 124 · Windows" and listed[1].client_ip == "10.1.2.3"
    assert listed[1].started and listed[1].last_seen
    assert ended_token  # the revoked one is not listed


def test_signing_out_another_session_ends_it_and_is_audited(db):
    actor = sessions.resolve_session(login(db, "agent"))
    other_token, other_id = _another_session("agent", CHROME_WINDOWS)

    assert sessions.revoke_own_session(actor, other_id) is False

    assert sessions.resolve_session(other_token) is None
    with read_session() as session:
        assert session.get(UserSession, other_id).revoked_reason == "signed_out"
    assert sessions.resolve_session(login(db, "agent")) is not None
    entry = audit_entries("auth.session_revoke")[-1]
    assert entry.actor_name == "agent" and entry.result == "ok"
    assert json.loads(entry.details) == {"session_id": other_id, "current": False, "device": "Chrome 124 · Windows"}
    with pytest.raises(NotFound):  # already ended
        sessions.revoke_own_session(actor, other_id)


def test_another_users_session_is_not_found_and_stays(db):
    """The attack: the browser sends the id of someone else's session."""
    actor = sessions.resolve_session(login(db, "agent"))
    victim_token, victim_id = _another_session("manager")
    for session_id in (victim_id, 0, -1, "abc", 10**9):
        with pytest.raises(NotFound):
            sessions.revoke_own_session(actor, session_id)
    assert sessions.resolve_session(victim_token) is not None
    assert audit_entries("auth.session_revoke") == []


def test_the_current_session_ends_only_when_confirmed(db):
    here = login(db, "agent")
    actor = sessions.resolve_session(here)
    with pytest.raises(Conflict):
        sessions.revoke_own_session(actor, actor.session_id)
    assert sessions.resolve_session(here) is not None
    assert sessions.revoke_own_session(actor, actor.session_id, confirm_current=True) is True
    assert sessions.resolve_session(here) is None


def test_the_sessions_list_reaches_the_browser_and_is_not_kept(db):
    token = live_token(db, "admin")
    _another_session("admin", CHROME_WINDOWS, "10.9.8.7")
    tab = new_tab()
    served = run(serve(tab, AccountState, "on_load", f"mq_session={token}", "/account"))
    rows = served.value(AccountState, "sessions")
    assert len(rows) == 2 and rows[0]["current"] is True
    assert rows[1]["client_ip"] == "10.9.8.7"
    assert b"10.9.8.7" not in pickled(tab)
