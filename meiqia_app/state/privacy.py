"""What of a tab's Reflex state may be stored, and where.

Reflex keeps one state tree per browser tab (keyed by the tab's client token)
and pickles it after every event: to ``.states/*.pkl`` with the disk state
manager (the default in prod) or to Redis. Whoever can read those files or
keys, or knows a tab's client token, must learn nothing from them. The rules,
and where each one is enforced:

1. **Identity comes from the live request, never from stored state.** For
   every websocket event Reflex builds the router data from the socket's own
   connection headers (kept in process memory for the connection's lifetime)
   and hands it to the event's ``EventContext``; chained events and
   background tasks inherit that context. :func:`live_cookie_header` reads
   the session cookie from there, so ``AppState._actor`` and the event guard
   resolve the session from the request that is being served, also in a
   background task whose state was reloaded from Redis. A file upload is an
   HTTP request of its own: its handler gets that request's headers
   (:mod:`meiqia_app.web.upload_request`).

2. **Request credentials are never stored.** The root ``State`` holds the
   router data, headers included (``cookie``, ``authorization``). A
   ``copyreg`` reducer registered for Reflex's root state class
   (:func:`register_root_state_scrubber`) pickles it without those headers.
   It is the standard pickle hook, so it covers the disk and the Redis
   manager (and any other that pickles). When a state is loaded back, the
   next event's live headers simply replace the stored ones.

3. **Secrets and personal data are shown, then forgotten.** A state class
   lists in ``_ephemeral_vars`` the frontend vars that carry a TOTP secret
   or its QR code, recovery codes, a login challenge or ticket, or customer
   data (names, phones, e-mails, timeline, samples…). A handler assigns
   them, Reflex sends the value in the event's delta, and right after the
   delta is built Reflex calls ``_clean()``; ``AppState._clean`` then resets
   those vars to their defaults in memory without marking them dirty. The
   browser keeps showing what it received; the server holds nothing after
   the event, in memory, on disk or in Redis (``AppState.__getstate__``
   drops them too, as a second wall). Handlers therefore never read an
   ephemeral var back: what they need later lives in a separate,
   non-personal var (row ids, the record version, the page count) or comes
   back from the browser with the next event (the login challenge, as a
   hidden form field). Because the server forgets them after every event,
   the disk manager behaves exactly like Redis, so the ordinary tests cover
   both. A (re)connect's hydration sends their defaults; every page's
   on_load reads again what it shows. (What a person types to search with,
   the list's query and filters, is kept: the list pages with it.)

4. **A tab belongs to the session that filled it.** The tab state stores an
   HMAC of the session cookie it was used with (:func:`tab_binding`, keyed
   by the app's secret key; not the token, nor the database's token hash).
   When an event arrives with another cookie (or none), or a hydration
   arrives without a live session, the event guard first resets every state
   of the app to its defaults (:func:`forget_tab`). A stolen client token
   hydrates an empty tab.

5. **What is stored is private to the app's user.** The disk manager is
   replaced by :class:`PrivateStateManagerDisk`, which keeps the folder at
   0700 and writes every file 0600 (atomically, whatever the umask).
"""

from __future__ import annotations

import copyreg
import functools
import hashlib
import hmac
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reflex.istate.data import HeaderData
from reflex.istate.manager.disk import StateManagerDisk
from reflex.istate.manager.token import BaseStateToken
from reflex.state import BaseState, State
from reflex.utils.misc import run_in_thread
from reflex_base import constants
from reflex_base.event.context import EventContext

from meiqia_app.config import get_settings

# Request headers that carry credentials: never stored with a tab's state.
PRIVATE_HEADERS = frozenset(
    {
        "cookie",
        "authorization",
        "proxy-authorization",
        "x-forwarded-access-token",
        "cf-access-jwt-assertion",
        "x-amzn-oidc-accesstoken",
        "x-amzn-oidc-data",
        "x-goog-iap-jwt-assertion",
    }
)

_HEADERS = str(constants.RouteVar.HEADERS)


# --- 1. the live request ----------------------------------------------------------------
def live_request_headers(event: Any = None) -> Mapping[str, str]:
    """The headers of the websocket connection serving the current event.

    From the event context Reflex sets for each event (inherited by chained
    events and background tasks), or, outside one (unit tests), from the
    event's own router data. Never from a state's stored router data.
    """
    router_data: Mapping[str, Any] = {}
    try:
        router_data = EventContext.get().router_data or {}
    except LookupError:
        router_data = {}
    if not router_data.get(_HEADERS) and event is not None:
        router_data = getattr(event, "router_data", None) or {}
    headers = router_data.get(_HEADERS) or {}
    return headers if isinstance(headers, Mapping) else {}


def live_cookie_header(event: Any = None) -> str:
    return str(live_request_headers(event).get("cookie", "") or "")


# --- 2. no credentials in the stored router data ----------------------------------------
def scrub_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in headers.items() if str(key).lower() not in PRIVATE_HEADERS}


def scrub_router_data(router_data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of Reflex's router data without credential headers (the input is not changed)."""
    clean = dict(router_data)
    headers = clean.get(_HEADERS)
    if isinstance(headers, Mapping):
        clean[_HEADERS] = scrub_headers(headers)
    return clean


def _scrub_root_fields(fields: dict[str, Any]) -> dict[str, Any]:
    clean = dict(fields)
    if isinstance(clean.get("router_data"), Mapping):
        clean["router_data"] = scrub_router_data(clean["router_data"])
    headers = clean.get("rx_router_headers")
    if isinstance(headers, HeaderData):
        clean["rx_router_headers"] = HeaderData.from_router_data({_HEADERS: scrub_headers(headers.raw_headers)})
    return clean


def _reduce_root_state(state: BaseState):
    """Pickle Reflex's root state as usual (``__getstate__``), minus credential headers."""
    return copyreg.__newobj__, (type(state),), _scrub_root_fields(state.__getstate__())


def register_root_state_scrubber() -> None:
    """Pickle the root ``State`` without request credentials (rule 2); idempotent."""
    copyreg.pickle(State, _reduce_root_state)


# --- 3. ephemeral vars --------------------------------------------------------------------
@functools.cache
def ephemeral_fields(state_cls: type[BaseState]) -> tuple[str, ...]:
    """The ephemeral vars a state class holds itself (inherited ones live on their owner)."""
    names: set[str] = set()
    for klass in state_cls.__mro__:
        names |= set(vars(klass).get("_ephemeral_vars", ()))
    fields = state_cls.get_fields()
    return tuple(sorted(name for name in names if name in fields and fields[name]._owner is state_cls))


def forget_values(state: BaseState, names: tuple[str, ...]) -> None:
    """Back to the defaults, without marking anything dirty (nothing is sent)."""
    instance_dict = vars(state)
    for name in names:
        instance_dict.pop(name, None)


# --- 4. the tab's session -------------------------------------------------------------------
def tab_binding(session_token: str) -> str:
    """What a tab stores of the session that filled it: a keyed hash, useless as a cookie."""
    if not session_token:
        return ""
    key = get_settings().secret_key.encode("utf-8")
    return hmac.new(key, b"reflex-tab\x00" + session_token.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _state_classes_below(state_cls: type[BaseState]) -> list[type[BaseState]]:
    found = [state_cls]
    for substate in sorted(state_cls.get_substates(), key=lambda cls: cls.get_full_name()):
        found.extend(_state_classes_below(substate))
    return found


async def forget_tab(state: BaseState, app_state_cls: type[BaseState]) -> None:
    """Reset every state of the app (``app_state_cls`` and below) in this tab.

    Loads the states that are not loaded yet (Redis loads only what an event
    needs), then sets each field the state owns back to its default, marked
    dirty, so the browser drops what it showed. Browser-stored vars (the
    language) and Reflex's router data are kept.
    """
    root = state._get_root_state()
    for state_cls in _state_classes_below(app_state_cls):
        instance = await root.get_state(state_cls)
        for name, field in state_cls.get_fields().items():
            if field._owner is not state_cls or state_cls._is_client_storage(field):
                continue
            setattr(instance, name, field.default_value())


# --- 5. private storage ---------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically, whatever the process umask."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class PrivateStateManagerDisk(StateManagerDisk):
    """Reflex's disk state manager with a 0700 folder and 0600 files."""

    def __post_init__(self):
        directory = self.states_directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        for path in directory.iterdir():
            if path.is_file():
                path.chmod(0o600)
        super().__post_init__()

    async def set_state_for_substate(self, token, substate):
        # Reflex's own (reflex/istate/manager/disk.py), writing through _write_private.
        if token.get_and_reset_touched_state(substate):
            pickle_state = token.serialize(substate)
            if pickle_state:
                path = self.token_path(token.with_cls(type(substate)))
                await run_in_thread(lambda: _write_private(path, pickle_state))
        if isinstance(token, BaseStateToken) and isinstance(substate, BaseState):
            for substate_substate in substate.substates.values():
                await self.set_state_for_substate(token, substate_substate)


def make_state_storage_private(app) -> None:
    """Use :class:`PrivateStateManagerDisk` when the app stores states on disk.

    ``App`` creates its state manager when it is constructed (``_setup_state``)
    and offers no hook to choose the class; a Redis manager is left alone
    (the Redis server's own access control applies).
    """
    current = getattr(app, "_state_manager", None)
    if type(current) is StateManagerDisk:
        app._state_manager = PrivateStateManagerDisk()
