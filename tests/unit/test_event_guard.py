"""The websocket event guard: which handlers run without a session, and that
a protected handler is blocked (redirect to the login) without one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from reflex_base.event import Event

from meiqia_app.services.identity import sessions
from meiqia_app.state.admin_users import AdminUsersState
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_list import CustomerListState
from meiqia_app.state.login import LoginState, safe_next
from meiqia_app.web.event_guard import LoginRequiredMiddleware, handler_owner, is_public
from tests.unit.tabs import event_for, live_token, new_tab
from tests.unit.tabs import run as _run


def _event(state_cls, handler: str) -> Event:
    return Event(name=f"{state_cls.get_full_name()}.{handler}", payload={})


def test_event_names_resolve_to_their_state_class():
    assert handler_owner(_event(AdminUsersState, "change_role").name) == (AdminUsersState, "change_role")
    assert handler_owner("not_reflex.something.x") == (None, "x")


@pytest.mark.parametrize(
    ("state_cls", "handler", "public"),
    [
        (AppState, "set_lang", True),
        (AppState, "check_login", True),
        (LoginState, "submit_password", True),
        (AdminUsersState, "set_lang", True),  # inherited allowlist
        (AdminUsersState, "change_role", False),
        (AdminUsersState, "confirm", False),
        (CustomerListState, "set_q", False),
    ],
)
def test_only_allowlisted_handlers_are_public(state_cls, handler, public):
    assert is_public(state_cls, handler) is public


def test_protected_event_without_session_is_blocked_with_a_redirect(db):
    tab = new_tab()
    event = event_for(tab, AdminUsersState, "confirm", path="/admin/users")
    update = _run(LoginRequiredMiddleware().preprocess(None, tab, event))
    assert update is not None
    assert [event.name for event in update.events] == ["_redirect"]
    assert update.events[0].payload["path"].startswith("/login?next=/admin/users")


def test_protected_event_with_a_live_session_passes(db):
    from sqlmodel import select

    from meiqia_app.db import read_session
    from meiqia_app.models import User

    token = live_token(db, "admin")
    tab = new_tab()
    event = event_for(tab, AdminUsersState, "confirm", cookie=f"other=1; mq_session={token}", path="/admin/users")
    assert _run(LoginRequiredMiddleware().preprocess(None, tab, event)) is None
    sessions.logout(token)
    assert _run(LoginRequiredMiddleware().preprocess(None, tab, event)) is not None
    with read_session() as session:
        assert session.exec(select(User).where(User.username == "admin")).one().last_login_at is not None


def test_the_guard_reads_the_cookie_of_the_live_request_not_the_stored_router_data(db):
    """A tab whose stored router data still holds a live cookie is not logged in by it."""
    token = live_token(db, "admin")
    tab = new_tab()
    event_for(tab, AdminUsersState, "confirm", cookie=f"mq_session={token}", path="/admin/users")
    assert tab.router.headers.cookie  # Reflex keeps the last request's headers on the tab
    without_cookie = _event(AdminUsersState, "confirm")  # an event of a connection without the cookie
    update = _run(LoginRequiredMiddleware().preprocess(None, tab, without_cookie))
    assert update is not None and update.events[0].name == "_redirect"


def _handler_self(token: str):
    """What AppState._actor needs of a state: the cookie's token and the client's address."""
    return SimpleNamespace(_session_token=lambda: token, _client_ip=lambda: "127.0.0.1")


def test_handler_reuses_the_guards_session_within_one_event_only(db, monkeypatch):
    from meiqia_app.services.errors import NotAuthenticated

    token = live_token(db, "admin")
    tab = new_tab()
    event = event_for(tab, AdminUsersState, "confirm", cookie=f"mq_session={token}", path="/admin/users")
    lookups = []
    real_resolve = sessions.resolve_session
    monkeypatch.setattr(sessions, "resolve_session", lambda *a: lookups.append(a) or real_resolve(*a))

    async def one_event_then_another():
        guard = LoginRequiredMiddleware()
        assert await guard.preprocess(None, tab, event) is None
        in_thread = await asyncio.to_thread(AppState._actor, _handler_self(token))  # services run in threads
        assert in_thread.username == "admin" and len(lookups) == 1  # no second query
        # Another cookie in the same task does not get this event's actor.
        with pytest.raises(NotAuthenticated):
            AppState._actor(_handler_self("not-the-same-token"))
        sessions.logout(token)
        # The next event, even a public one, starts afresh: the revoked session is refused.
        public = event_for(tab, LoginState, "submit_password", cookie=f"mq_session={token}", path="/login")
        assert await guard.preprocess(None, tab, public) is None
        with pytest.raises(NotAuthenticated):
            AppState._actor(_handler_self(token))

    _run(one_event_then_another())


def test_a_long_background_event_resolves_the_session_again(db, monkeypatch):
    from meiqia_app.services.errors import NotAuthenticated
    from meiqia_app.state import base

    token = live_token(db, "admin")
    tab = new_tab()
    event = event_for(tab, AdminUsersState, "confirm", cookie=f"mq_session={token}", path="/admin/users")
    monkeypatch.setattr(base, "EVENT_SESSION_REUSE_SECONDS", 0.05)

    async def poll():
        assert await LoginRequiredMiddleware().preprocess(None, tab, event) is None
        sessions.logout(token)
        await asyncio.sleep(0.1)
        with pytest.raises(NotAuthenticated):
            AppState._actor(_handler_self(token))

    _run(poll())


def test_public_events_pass_without_session(db):
    tab = new_tab()
    event = event_for(tab, LoginState, "submit_password", path="/login")
    assert _run(LoginRequiredMiddleware().preprocess(None, tab, event)) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/customers", "/customers"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        ("/api/session/clear", "/"),
        ("", "/"),
    ],
)
def test_login_next_is_same_site_only(target, expected):
    assert safe_next(target) == expected
