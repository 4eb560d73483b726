"""A browser tab's Reflex state tree for unit tests, and websocket events for it.

The tree is the app's real one (every state class), built the way Reflex's
state managers build it; router data reaches it the way Reflex's event
processor applies it (``_update_router_vars``) before the middleware runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import pyotp
from reflex.state import BaseState, State
from reflex_base.event import Event
from reflex_base.event.context import EventContext
from reflex_base.event.processor.base_state_processor import process_event
from reflex_base.utils import format

import meiqia_app.meiqia_app  # noqa: F401 - registers every state class of the app
from meiqia_app.services.identity import login as auth


def run(coroutine):
    """Run a coroutine on a fresh loop in a worker thread: Playwright's sync API
    (e2e tests in the same session) keeps a loop running on the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Reflex keeps its state registry in context variables: carry them over.
        return pool.submit(contextvars.copy_context().run, asyncio.run, coroutine).result()


CLIENT_TOKEN = "client-token-1"


def router_data(cookie: str = "", path: str = "/customers", query: dict | None = None, sid: str = "sid-1") -> dict:
    headers = {"host": "127.0.0.1:3000", "origin": "http://127.0.0.1:3000", "user-agent": "test"}
    if cookie:
        headers["cookie"] = cookie
    return {
        "headers": headers,
        "token": CLIENT_TOKEN,
        "sid": sid,
        "ip": "127.0.0.1",
        "pathname": path,
        "query": dict(query or {}),
        "asPath": path,
    }


def new_tab() -> State:
    return State(_reflex_internal_init=True)


def event_for(
    tab: State,
    state_cls: type[BaseState],
    handler: str,
    cookie: str = "",
    path: str = "/customers",
    payload: dict | None = None,
    query: dict | None = None,
):
    """The event as the middleware sees it: router data applied to the tab first."""
    data = router_data(cookie, path, query)
    merged = tab._update_router_vars(data, tab.router_data)
    if merged != tab.router_data:
        tab.router_data = merged
    return Event(name=f"{state_cls.get_full_name()}.{handler}", payload=dict(payload or {}), router_data=data)


@dataclasses.dataclass
class Served:
    """What one event sent to the browser."""

    deltas: list[dict] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)  # chained and frontend events
    refused: bool = False

    def sent(self) -> str:
        return json.dumps(self.deltas, ensure_ascii=False)

    def value(self, state_cls: type[BaseState], name: str):
        """The last value of a var the browser received."""
        found = None
        for delta in self.deltas:
            found = delta.get(state_cls.get_full_name(), {}).get(f"{name}_rx_state_", found)
        return found


async def serve(
    tab: State,
    state_cls: type[BaseState],
    handler: str,
    cookie: str = "",
    path: str = "/customers",
    payload: dict | None = None,
    query: dict | None = None,
) -> Served:
    """Process one websocket event like Reflex's event processor: router data,
    middleware (the event guard), the handler, and the delta built and cleaned
    after each step. Chained events are recorded, not run."""
    from meiqia_app.web.event_guard import LoginRequiredMiddleware

    served = Served()

    async def emit_delta(token, delta):
        served.deltas.append(json.loads(format.json_dumps(delta)))  # as the browser receives it

    async def record(token, *events):
        served.events.extend(events)

    event = event_for(tab, state_cls, handler, cookie, path, payload, query)
    context = EventContext(
        token=CLIENT_TOKEN,
        state_manager=None,
        enqueue_impl=record,
        emit_delta_impl=emit_delta,
        emit_event_impl=record,
        router_data=event.router_data,
    )
    with context:
        update = await LoginRequiredMiddleware().preprocess(None, tab, event)
        if update is not None:
            served.refused = True
            served.events.extend(update.events)
            return served
        state = await tab.get_state(state_cls)
        await process_event(
            handler=state_cls.event_handlers[handler], payload=event.payload, state=state, root_state=tab
        )
    return served


def substate(tab: State, state_cls: type[BaseState]):
    return tab.get_substate(state_cls.get_full_name().split("."))


def all_states(state: BaseState) -> list[BaseState]:
    found = [state]
    for child in state.substates.values():
        found.extend(all_states(child))
    return found


def pickled(tab: State) -> bytes:
    """Every state of the tab as the disk and Redis managers store them."""
    return b"".join(state._serialize() for state in all_states(tab))


def demo_account(db, username: str) -> dict:
    return {a["username"]: a for a in json.loads((db / "demo_accounts.json").read_text())}[username]


def live_token(db, username: str = "admin") -> str:
    account = demo_account(db, username)
    accepted = auth.begin_login(username, account["password"])
    result = auth.complete_login(accepted.challenge, pyotp.TOTP(account["totp_secret"]).now())
    return auth.claim_ticket(result.ticket)
