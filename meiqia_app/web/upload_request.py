"""An upload's handler runs with the headers of the upload request itself.

Reflex delivers a file upload (``POST /_upload``) to its event handler as an
event without router data: the handler would only see the headers the tab
stored from its last websocket event. Identity must come from the live
request (:mod:`meiqia_app.state.privacy`, rule 1), and the stored headers no
longer hold the cookie anyway. So:

* :func:`capture_upload_headers` (an ASGI wrapper, in the app's
  ``api_transformer``) remembers the headers of an upload request in a
  context variable for as long as the request runs, and
* :func:`attach_upload_headers` (run at start-up, once Reflex has created its
  event processor) wraps the processor's ``enqueue``: an event enqueued
  while serving an upload request, and carrying no router data of its own,
  gets that request's headers as its router data. Reflex binds an event's
  router data to its ``EventContext``, so the event guard and
  ``AppState._actor`` read the upload request's cookie, on whichever worker
  the upload lands.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

from reflex_base import constants

_UPLOAD_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "meiqia_upload_request_headers", default=None
)


def _is_upload_path(path: str) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1] == constants.Endpoint.UPLOAD.value


def capture_upload_headers(asgi_app: Callable) -> Callable:
    """Wrap the backend ASGI app: remember the headers of each upload request while it runs."""

    @functools.wraps(asgi_app)
    async def app(scope, receive, send):
        if scope.get("type") != "http" or not _is_upload_path(str(scope.get("path", ""))):
            return await asgi_app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        token = _UPLOAD_HEADERS.set(headers)
        try:
            return await asgi_app(scope, receive, send)
        finally:
            _UPLOAD_HEADERS.reset(token)

    return app


def attach_upload_headers(app) -> None:
    """Give events enqueued while serving an upload request that request's headers (idempotent)."""
    processor = app.event_processor
    enqueue = processor.enqueue
    if getattr(enqueue, "_meiqia_upload_headers", False):
        return

    @functools.wraps(enqueue)
    async def enqueue_with_upload_headers(token: str, event: Any, ev_ctx: Any = None):
        headers = _UPLOAD_HEADERS.get()
        if headers is not None and not event.router_data:
            event.router_data.update({str(constants.RouteVar.HEADERS): dict(headers)})
        return await enqueue(token, event, ev_ctx)

    enqueue_with_upload_headers._meiqia_upload_headers = True  # type: ignore[attr-defined]
    processor.enqueue = enqueue_with_upload_headers
