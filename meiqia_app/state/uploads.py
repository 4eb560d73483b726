"""Who sent an upload: the session cookie of the upload request itself.

An upload is a plain HTTP POST to Reflex's ``/_upload`` carrying the tab's
client token; Reflex then runs the upload handler on that tab's state, whose
stored headers are those of the tab's websocket, not of this request. So the
handler must not trust them (nor the tab): ``web/upload_guard.py`` resolves
the request's own ``mq_session`` cookie before any byte of the body is read
and opens an :class:`UploadGrant` for the client token for as long as the
request lasts; the handler asks :func:`upload_actor` for the user.

The grant lives in this process only, which is where Reflex runs the handler
of an upload it received (the HTTP request stays open until the handler is
done). One upload per tab at a time: a second one while the first is open is
refused, so two requests can never swap users.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from meiqia_app.services.errors import NotAuthenticated, PermissionDenied
from meiqia_app.services.identity import sessions
from meiqia_app.services.identity.rbac import Actor

if TYPE_CHECKING:
    import reflex as rx


@dataclasses.dataclass(frozen=True, eq=False)
class UploadGrant:
    """What the upload request's own cookie resolved to (kept in memory, never in state)."""

    session_token: str
    actor: Actor
    client_ip: str


class UploadGrants:
    """The open uploads of this process, by the client token of the tab sending them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, UploadGrant] = {}

    def open(self, client_token: str, grant: UploadGrant) -> bool:
        """Record ``grant`` for the request; False when that tab already has an upload open."""
        with self._lock:
            if not client_token or client_token in self._grants:
                return False
            self._grants[client_token] = grant
            return True

    def close(self, client_token: str, grant: UploadGrant) -> None:
        with self._lock:
            if self._grants.get(client_token) is grant:
                del self._grants[client_token]

    def get(self, client_token: str) -> UploadGrant | None:
        with self._lock:
            return self._grants.get(client_token)


UPLOAD_GRANTS = UploadGrants()


def current_client_token(state: rx.State) -> str:
    """The client token of the event being processed (the upload request's header)."""
    try:
        from reflex_base.event.context import EventContext

        return EventContext.get().token
    except LookupError:
        return str(getattr(state.router.session, "client_token", "") or "")


def upload_actor(client_token: str, tab_user: str) -> Actor:
    """The user who sent the upload the handler of tab ``client_token`` is processing.

    Resolved from the upload request's cookie (again here: a session revoked
    since the request began no longer counts), never from the tab. The tab
    must belong to the same user (``tab_user``, set by the page's on_load from
    the tab's own session): a client token of somebody else's tab is refused,
    so nobody can put a file into another person's import page.
    """
    grant = UPLOAD_GRANTS.get(client_token)
    if grant is None:
        raise NotAuthenticated()
    actor = sessions.resolve_session(grant.session_token, grant.client_ip)
    if actor is None or actor.user_id != grant.actor.user_id:
        raise NotAuthenticated()
    if tab_user != actor.username:
        raise PermissionDenied("import.upload_refused")
    return actor
