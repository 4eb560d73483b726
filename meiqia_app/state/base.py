"""The root state every page shares: language, who is logged in, and the
helpers each protected handler uses to resolve the acting user.

Identity is never a sticky backend var: every event that reads or changes
data resolves the session cookie of the live request again (``_actor``), so
a revoked or expired session stops working at the next click, and a copied
websocket token is worth nothing without the HttpOnly cookie.

What a state may keep between events (nothing secret, no personal data) is
described in :mod:`meiqia_app.state.privacy`; ``_ephemeral_vars`` lists a
state's show-and-forget vars.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import reflex as rx
from reflex.state import _override_base_method

from meiqia_app.i18n import error_text, normalize_lang, tr
from meiqia_app.services.errors import AppError, NotAuthenticated, ValidationError
from meiqia_app.services.identity import rbac, sessions
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.state import privacy

SESSION_COOKIE = "mq_session"
T = TypeVar("T")

# The session resolved by the event guard for the event being processed:
# (cookie token, actor). The guard runs in the same task as the handler, and
# threads started with asyncio.to_thread copy the context, so the handler's
# _actor() reuses it instead of querying the session a second time. The
# guard resets it at the start of every event, so it never outlives one; a
# long background event (a progress poll) resolves again after a second.
EVENT_SESSION_REUSE_SECONDS = 1.0
_EVENT_SESSION: contextvars.ContextVar[tuple[str, Actor, float] | None] = contextvars.ContextVar(
    "meiqia_event_session", default=None
)


def remember_event_session(token: str = "", actor: Actor | None = None) -> None:
    """Called by the event guard: what this event's cookie resolved to (or nothing)."""
    _EVENT_SESSION.set((token, actor, time.monotonic()) if token and actor is not None else None)


# --- which pages a role may open ----------------------------------------------------------
# Route (as registered, e.g. "/admin/users") -> the permissions the page needs (all
# of them), and the page's own on_load, which runs only when they are there.
# Filled by meiqia_app.py when it registers the pages (``declare_page``); the
# layout reads the same declaration to show "no access" instead of the page body.
PAGE_NEEDS: dict[str, tuple[str, ...]] = {}
PAGE_ON_LOAD: dict[str, Any] = {}


def declare_page(route: str, needs: tuple[str, ...] | list[str] = (), on_load: Any = None) -> None:
    PAGE_NEEDS[route] = tuple(needs)
    if on_load is not None:
        PAGE_ON_LOAD[route] = on_load


def page_route(path: str) -> str:
    """The registered route that serves ``path`` ("/customers/12" -> "/customers/[customer_id]"), or ""."""
    path = "/" + str(path or "").strip("/")
    if path == "/index":  # how Reflex names the root page's route
        path = "/"
    if path in PAGE_NEEDS:
        return path
    parts = path.split("/")
    for route in PAGE_NEEDS:
        pattern = route.split("/")
        if len(pattern) == len(parts) and all(
            want == got or (want.startswith("[") and want.endswith("]") and got) for want, got in zip(pattern, parts)
        ):
            return route
    return ""


def missing_for_page(path: str, permissions) -> tuple[str, ...]:
    """The permissions the page at ``path`` needs and ``permissions`` lacks."""
    return tuple(p for p in PAGE_NEEDS.get(page_route(path), ()) if p not in permissions)


def full_page_load(path: str):
    """Leave the single-page app for a same-site HTTP route (the session
    cookie routes). ``rx.redirect`` would route client-side or open a new tab."""
    return rx.call_script(f"window.location.assign({json.dumps(path)})")


LOGOUT_PATH = "/api/session/clear"


def full_page_post(path: str):
    """Submit an empty same-origin form to ``path`` (a POST the browser follows).

    The logout route only accepts POST from our own origin, so another site
    cannot log a person out with a link or an image.
    """
    return rx.call_script(
        "(() => { const form = document.createElement('form'); form.method = 'post'; "
        f"form.action = {json.dumps(path)}; document.body.appendChild(form); form.submit(); }})()"
    )


def session_token_from_cookie_header(header: str) -> str:
    if not header:
        return ""
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is just "no session"
        return ""
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel else ""


class AppState(rx.State):
    """Language and the logged-in user's public profile (never secrets)."""

    # Kept per browser (UX-1); the backend reads it to translate messages.
    lang: str = rx.LocalStorage("zh", name="mq_lang", sync=True)
    user_name: str = ""
    user_display: str = ""
    user_role: str = ""
    perms: list[str] = []
    # Which page load finished last (a counter and the path): #main carries them, so
    # browser tests wait for a page's data instead of sleeping.
    load_seq: int = 0
    loaded_path: str = ""

    # Handlers of this class anyone may call without a session.
    public_handlers: ClassVar[frozenset[str]] = frozenset({"set_lang", "check_login", "logout", "noop", "page_loaded"})
    requires_login: ClassVar[bool] = True
    # Frontend vars holding secrets or personal data: sent with the event's
    # delta, then forgotten by the server (see meiqia_app.state.privacy).
    # Handlers never read them back. Each subclass lists its own.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset()

    # A keyed hash of the session cookie this tab was used with (privacy rule 4).
    _tab_binding: str = ""

    # --- what the server keeps ----------------------------------------------------------
    # Overrides of Reflex's own methods, marked as such the way Reflex marks
    # its own (SharedState._clean).
    @_override_base_method
    def _clean(self):
        """Reflex calls this right after an event's delta is built: forget the ephemeral vars."""
        super()._clean()
        if names := privacy.ephemeral_fields(type(self)):
            privacy.forget_values(self, names)

    def __getstate__(self):
        """Pickled (disk, Redis) without the ephemeral vars, whatever the moment."""
        fields = dict(super().__getstate__())
        for name in privacy.ephemeral_fields(type(self)):
            fields.pop(name, None)
        return fields

    # --- helpers (underscore: not callable from the browser) ------------------------
    def _tr(self, key: str, **params: Any) -> str:
        return tr(normalize_lang(self.lang), key, **params)

    def _client_ip(self) -> str:
        return str(getattr(self.router.session, "client_ip", "") or "")

    def _session_token(self) -> str:
        """The session cookie of the request being served (never the stored router data)."""
        return session_token_from_cookie_header(privacy.live_cookie_header())

    def _actor(self) -> Actor:
        actor = AppState._actor_or_none(self)
        if actor is None:
            raise NotAuthenticated()
        return actor

    def _actor_or_none(self) -> Actor | None:
        """The live session's user (reusing what the event guard resolved for this event), or None."""
        token = self._session_token()
        if not token:
            return None
        resolved = _EVENT_SESSION.get()
        if (
            resolved is not None
            and token
            and resolved[0] == token
            and time.monotonic() - resolved[2] < EVENT_SESSION_REUSE_SECONDS
        ):
            return resolved[1]
        return sessions.resolve_session(token, self._client_ip())

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a service off the event loop (DB work and bcrypt would block other users)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _on_error(self, error: Exception):
        """Turn a service error into what the person sees."""
        if isinstance(error, NotAuthenticated):
            return self._to_login()
        if isinstance(error, ValidationError) and error.field_errors and error.message_key == "error.validation":
            field, (key, params) = next(iter(error.field_errors.items()))
            return rx.toast.error(self._tr(key, **params))
        if isinstance(error, AppError):
            return rx.toast.error(error_text(normalize_lang(self.lang), error))
        raise error

    def _field_errors(self, error: ValidationError) -> dict[str, str]:
        return {field: self._tr(key, **params) for field, (key, params) in error.field_errors.items()}

    @staticmethod
    def _as_id(value: object) -> int:
        """A positive integer id from whatever the browser sent."""
        try:
            number = int(str(value))
        except (TypeError, ValueError):
            raise ValidationError.single("id", "error.bad_number") from None
        if number <= 0:
            raise ValidationError.single("id", "error.bad_number")
        return number

    def _to_login(self):
        path = self.router.page.path or "/"
        return rx.redirect(f"/login?next={quote(path, safe='/')}")

    def _set_user(self, actor: Actor) -> None:
        # Assigned only when different: every assignment marks the var dirty, and
        # a dirty ``perms`` recomputes (and resends) each page's permission vars
        # on every event.
        perms = sorted(actor.permissions)
        for name, value in (
            ("user_name", actor.username),
            ("user_display", actor.display_name),
            ("user_role", actor.role_name),
            ("perms", perms),
        ):
            if getattr(self, name) != value:
                setattr(self, name, value)

    async def _page_refused(self, actor: Actor) -> bool:
        """True when the role may not open the current page (which then loads nothing).

        The page shows "no access" (the layout reads ``perms``); the attempt is
        audited once per page load, as the page's first service call used to be
        refused and audited, so a person typing an admin address still leaves a
        trace. Later events of a page that lost its permission are not audited
        again here (the services still refuse and audit what they are asked).
        """
        missing = missing_for_page(self.router.page.path, actor.permissions)
        if not missing:
            return False
        await self._call(rbac.record_page_refusal, actor, self.router.page.path, missing)
        return True

    # --- public handlers --------------------------------------------------------------
    @rx.event
    def set_lang(self, lang: str):
        self.lang = normalize_lang(lang)

    @rx.event
    def noop(self):
        return None

    @rx.event
    async def check_login(self):
        """on_load of every protected page: no session, no page; no permission,
        no data (the page's own on_load, declared with the page, runs only then)."""
        actor = await self._call(self._actor_or_none)
        if actor is None:
            self.user_name = ""
            self.perms = []
            return self._to_login()
        self._set_user(actor)
        if await self._page_refused(actor):
            self._mark_loaded()
            return None
        on_load = PAGE_ON_LOAD.get(page_route(self.router.page.path))
        if on_load is None:
            self._mark_loaded()
            return None
        # The tab's events run one after another: page_loaded follows the page's own on_load.
        return [on_load, AppState.page_loaded]

    def _mark_loaded(self) -> None:
        self.load_seq += 1
        self.loaded_path = "/" + str(self.router.page.raw_path or "").split("?", 1)[0].strip("/")

    @rx.event
    def page_loaded(self):
        """The last step of a page load (see load_seq)."""
        self._mark_loaded()

    @rx.event
    async def logout(self):
        await self._call(sessions.logout, self._session_token(), self._client_ip())
        self.user_name = ""
        self.perms = []
        # The route clears the HttpOnly cookie (JavaScript cannot).
        return full_page_post(LOGOUT_PATH)

    @rx.var
    def is_en(self) -> bool:
        return self.lang == "en"
