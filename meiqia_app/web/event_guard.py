"""Deny-by-default guard for websocket events.

Any public event handler can be called from a crafted websocket message, so
hiding a button is not protection. Before a handler of one of our states runs,
this middleware checks that the state allows anonymous calls to that handler
(``public_handlers`` / ``requires_login``) or that the session cookie of the
websocket still resolves to a live session. Handlers re-check the session and
the permission themselves (services do); this is the outer wall. The session it
resolves also refreshes the tab's user and permissions (``refresh_user``), so a
role change reaches every open page at its next event.

Before any event, Reflex's own ones included, it also checks that the tab is
used with the session that filled it (privacy rule 4 in
:mod:`meiqia_app.state.privacy`): another cookie, no cookie, or a hydration
(a tab (re)connecting) without a live session first resets every state of the
app in that tab, so a stolen client token hydrates an empty tab.
"""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import quote

import reflex as rx
from reflex.middleware import Middleware
from reflex.state import StateUpdate
from reflex_base import constants
from reflex_base.event import Event

from meiqia_app.services.identity import sessions
from meiqia_app.state import live, privacy
from meiqia_app.state.base import AppState, remember_event_session, session_token_from_cookie_header

# The events a tab (re)connecting sends: they answer with the whole state.
HYDRATE_HANDLERS = frozenset({constants.CompileVars.HYDRATE, constants.CompileVars.HYDRATE_AND_LOAD})


def handler_owner(event_name: str) -> tuple[type[rx.State] | None, str]:
    """The state class that owns an event ("<state path>.<handler>") and the handler name."""
    path, _, handler = event_name.rpartition(".")
    parts = path.split(".")
    if not parts or parts[0] != rx.State.get_name():
        return None, handler
    try:
        return rx.State.get_class_substate(tuple(parts[1:])), handler
    except ValueError:
        return None, handler


def is_public(state_cls: type[rx.State], handler: str) -> bool:
    if not state_cls.requires_login:
        return True
    for cls in state_cls.__mro__:
        if handler in vars(cls).get("public_handlers", frozenset()):
            return True
    return False


def is_hydration(event_name: str) -> bool:
    path, _, handler = event_name.rpartition(".")
    return path == rx.State.get_full_name() and handler in HYDRATE_HANDLERS


async def keep_tab_to_its_session(state, token: str, client_ip: str, hydrating: bool) -> None:
    """Reset the tab's app states unless it is used with the session that filled it."""
    app_state = await state.get_state(AppState)
    binding = privacy.tab_binding(token)
    stale = app_state._tab_binding != binding
    if not stale and hydrating and binding:
        stale = await asyncio.to_thread(sessions.resolve_session, token, client_ip) is None
    if stale:
        await privacy.forget_tab(state, AppState)
        app_state._tab_binding = binding


async def refresh_user(state, actor) -> None:
    """The tab's user and permissions as the database has them now.

    Sent with this event's delta: a permission granted or revoked meanwhile
    reaches every open page at its next event, and a page the role may no
    longer use shows "no access" (components/layout.py) instead of its body.
    Only a user already shown in the tab is refreshed (the login page's tab
    stays as it is until its own handlers set it).
    """
    app_state = await state.get_state(AppState)
    if app_state.user_name:
        app_state._set_user(actor)


@dataclasses.dataclass(init=True)
class LoginRequiredMiddleware(Middleware):
    async def preprocess(self, app, state, event) -> StateUpdate | None:
        remember_event_session()  # whatever an earlier event in this task resolved is not reused
        token = session_token_from_cookie_header(privacy.live_cookie_header(event))
        client_ip = str(getattr(state.router.session, "client_ip", "") or "")
        # The page the tab shows (asPath: the real path; pathname may be the route's template).
        # The live timeline's own refresh carries the router data of the page that started it: not news.
        if not event.name.endswith(".live_refresh"):
            routed = event.router_data or {}
            path = str(routed.get(str(constants.RouteVar.ORIGIN)) or routed.get(str(constants.RouteVar.PATH)) or "")
            live.note_path(str(state.router.session.client_token or ""), path.split("?", 1)[0].split("#", 1)[0])
        await keep_tab_to_its_session(state, token, client_ip, is_hydration(event.name))
        state_cls, handler = handler_owner(event.name)
        if state_cls is None or not issubclass(state_cls, AppState):
            return None  # Reflex's own internal events (hydrate, on_load dispatch, ...)
        public = is_public(state_cls, handler)
        if public and not token:
            return None
        actor = await asyncio.to_thread(sessions.resolve_session, token, client_ip)
        if actor is not None:
            remember_event_session(token, actor)
            await refresh_user(state, actor)
            return None
        if public:
            return None
        path = state.router.page.path or "/"
        redirect = rx.redirect(f"/login?next={quote(path, safe='/')}")
        return StateUpdate(delta={}, events=Event.from_event_type(redirect))
