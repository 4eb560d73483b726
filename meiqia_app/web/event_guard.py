"""Deny-by-default guard for websocket events.

Any public event handler can be called from a crafted websocket message, so
hiding a button is not protection. Before a handler of one of our states runs,
this middleware checks that the state allows anonymous calls to that handler
(``public_handlers`` / ``requires_login``) or that the session cookie of the
websocket still resolves to a live session. Handlers re-check the session and
the permission themselves (services do); this is the outer wall.
"""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import quote

import reflex as rx
from reflex.middleware import Middleware
from reflex.state import StateUpdate
from reflex_base.event import Event

from meiqia_app.services import auth
from meiqia_app.state.base import AppState, remember_event_session, session_token_from_cookie_header


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


@dataclasses.dataclass(init=True)
class LoginRequiredMiddleware(Middleware):
    async def preprocess(self, app, state, event) -> StateUpdate | None:
        remember_event_session()  # whatever an earlier event in this task resolved is not reused
        state_cls, handler = handler_owner(event.name)
        if state_cls is None or not issubclass(state_cls, AppState):
            return None  # Reflex's own internal events (hydrate, on_load dispatch, ...)
        if is_public(state_cls, handler):
            return None
        token = session_token_from_cookie_header(state.router.headers.cookie or "")
        client_ip = str(getattr(state.router.session, "client_ip", "") or "")
        actor = await asyncio.to_thread(auth.resolve_session, token, client_ip)
        if actor is not None:
            remember_event_session(token, actor)
            return None
        path = state.router.page.path or "/"
        redirect = rx.redirect(f"/login?next={quote(path, safe='/')}")
        return StateUpdate(delta={}, events=Event.from_event_type(redirect))
