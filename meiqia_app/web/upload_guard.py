"""The outer wall of Reflex's upload endpoint (``/_upload``), as ASGI middleware.

Reflex reads the whole multipart body (to temporary files) before it runs
the upload handler, and runs the handler on the state of whatever client
token the request names. So before a single byte of the body is read, this
middleware:

1. resolves the request's own session cookie (``mq_session``): none or a
   dead one → 401;
2. checks that the named handler is one of our upload handlers
   (``upload_handlers`` on its state class) and that the user holds the
   permission it declares → 403 (audited);
3. refuses a declared ``Content-Length`` above ``MEIQIA_MAX_UPLOAD_MB`` → 413,
   and counts the bytes while the body streams in: past the cap the request
   ends as if the client had gone (Starlette deletes its temporary files)
   and the answer is 413;
4. opens an upload grant (``state/uploads.py``) for the client token, so the
   handler works as the cookie's user, not as whoever owns the tab.

Other paths pass through untouched. ``GET /_upload/<file>`` (Reflex's
static view of its own upload folder, unused by this app) needs a session too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import Request

from meiqia_app.config import get_settings
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.identity import sessions
from meiqia_app.services.identity.rbac import require
from meiqia_app.state.base import SESSION_COOKIE
from meiqia_app.state.uploads import UPLOAD_GRANTS, UploadGrant

log = logging.getLogger(__name__)

# Multipart framing around the file (boundaries, part headers, the args field).
MULTIPART_ALLOWANCE = 64 * 1024


def upload_path() -> str:
    from reflex_base import constants
    from reflex_base.config import get_config

    return get_config().prepend_backend_path(str(constants.Endpoint.UPLOAD))


def upload_permission(handler_name: str) -> str | None:
    """The permission an upload handler requires, or None when the name is not an upload handler."""
    from meiqia_app.web.event_guard import handler_owner

    state_cls, handler = handler_owner(handler_name)
    if state_cls is None:
        return None
    for cls in state_cls.__mro__:
        permission = vars(cls).get("upload_handlers", {}).get(handler)
        if permission:
            return permission
    return None


def body_limit() -> int:
    return get_settings().max_upload_bytes + MULTIPART_ALLOWANCE


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
                # The body was (partly) left unread: do not reuse the connection.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _client_ip(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class UploadGuard:
    """ASGI middleware around the backend API (added through ``rx.App(api_transformer=...)``)."""

    def __init__(self, app) -> None:
        self.app = app
        self._path: str | None = None

    def _is_upload(self, path: str) -> tuple[bool, bool]:
        """(is the upload endpoint, is a file under it)."""
        if self._path is None:
            self._path = upload_path()
        base = self._path.rstrip("/")
        return path.rstrip("/") == base, path.startswith(base + "/")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, under = self._is_upload(scope.get("path", ""))
        if not (endpoint or under):
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers and cookies only; the body is not touched here
        token = request.cookies.get(SESSION_COOKIE, "")
        client_ip = _client_ip(scope)
        actor = await asyncio.to_thread(sessions.resolve_session, token, client_ip) if token else None
        if actor is None:
            await _answer(send, 401, "Not logged in.")
            return
        if not endpoint or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        await self._guarded_upload(scope, receive, send, request, token, actor, client_ip)

    async def _guarded_upload(self, scope, receive, send, request: Request, token, actor, client_ip) -> None:
        handler = request.headers.get("reflex-event-handler", "")
        client_token = request.headers.get("reflex-client-token", "")
        permission = upload_permission(handler)
        if permission is None or not client_token:
            await _answer(send, 403, "Not an upload handler.")
            return
        try:
            await asyncio.to_thread(
                require, actor, permission, action="upload", target_type="upload", target_id=handler[-60:]
            )
        except PermissionDenied:
            await _answer(send, 403, "Permission denied.")
            return
        limit = body_limit()
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _answer(send, 400, "Bad Content-Length.")
                return
            if too_big:
                await self._audit_too_big(actor, handler, int(declared))
                await _answer(send, 413, f"Uploads are limited to {get_settings().max_upload_mb} MB.")
                return

        grant = UploadGrant(session_token=token, actor=actor, client_ip=client_ip)
        if not UPLOAD_GRANTS.open(client_token, grant):
            await _answer(send, 409, "Another upload of this tab is in progress.")
            return

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Starlette's form parser closes (deletes) its temporary files on a
                    # disconnect, and Reflex's upload route gives up without running the handler.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                return  # the inner answer to the "disconnect" is replaced by a 413 below
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        finally:
            UPLOAD_GRANTS.close(client_token, grant)
        if exceeded and not response_started:
            await self._audit_too_big(actor, handler, received)
            await _answer(send, 413, f"Uploads are limited to {get_settings().max_upload_mb} MB.")

    @staticmethod
    async def _audit_too_big(actor, handler: str, size: int) -> None:
        try:
            await asyncio.to_thread(
                audit.record_refusal,
                actor,
                "upload",
                target_type="upload",
                target_id=handler[-60:],
                details={"reason": "too_large", "bytes": size, "limit_mb": get_settings().max_upload_mb},
            )
        except Exception:  # noqa: BLE001 - the refusal stands even if its audit entry cannot be written
            log.exception("could not audit a refused upload")


def upload_guard(app):
    """The ``api_transformer`` form: wraps the backend API."""
    return UploadGuard(app)
