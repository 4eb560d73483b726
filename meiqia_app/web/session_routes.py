"""Plain HTTP routes for the session cookie.

The cookie is HttpOnly, so JavaScript (and therefore a Reflex event) cannot
set or clear it; the login flow hands the browser a one-time ticket and the
browser trades it here for the cookie.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from meiqia_app.config import get_settings
from meiqia_app.services.errors import AppError
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import sessions
from meiqia_app.state.base import LOGOUT_PATH, SESSION_COOKIE
from meiqia_app.state.login import safe_next
from meiqia_app.web.backup_routes import backup_routes


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def claim_session(request: Request):
    ticket = request.query_params.get("ticket", "")[:128]
    target = safe_next(request.query_params.get("next"))
    try:
        token = auth.claim_ticket(ticket, _client_ip(request), request.headers.get("user-agent", ""))
    except AppError:
        return RedirectResponse("/login?" + urlencode({"next": target, "expired": "1"}), status_code=303)
    settings = get_settings()
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_max_hours * 3600,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _request_origin(request: Request) -> str:
    """The page's origin a request came from: Origin, else the Referer's scheme and host."""
    origin = (request.headers.get("origin") or "").strip()
    if not origin or origin == "null":
        referer = urlsplit(request.headers.get("referer") or "")
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else ""
    return origin.rstrip("/").lower()


def is_same_origin(request: Request) -> bool:
    """True when the request was sent by a page of this app (CSRF check for state-changing POSTs).

    The page's origin must be one of ``MEIQIA_ALLOWED_ORIGINS`` (the origins
    allowed to open the websocket); when none are configured, it must name the
    host the request was sent to. No Origin and no Referer: refused.
    """
    origin = _request_origin(request)
    if not origin:
        return False
    allowed = {o.rstrip("/").lower() for o in get_settings().allowed_origins}
    if allowed:
        return origin in allowed
    return urlsplit(origin).netloc == (request.headers.get("host") or "").lower()


async def clear_session(request: Request):
    """Log out: POST only, from a page of this app.

    The logout event already revoked the session server-side; a form posted
    without it (no websocket) revokes it here too. A GET is refused (405) and
    a POST from another site (Origin/Referer not ours) is refused (403), so a
    link, an image or another site's form cannot log anyone out.
    """
    if request.method != "POST":
        # Answered here, not by the router: with the route POST-only, a GET would fall
        # through to the app mounted behind these routes.
        return PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": "POST"})
    if not is_same_origin(request):
        return PlainTextResponse("Forbidden: cross-site request", status_code=403)
    await asyncio.to_thread(sessions.logout, request.cookies.get(SESSION_COOKIE, ""), _client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


async def health(request: Request):
    return PlainTextResponse("ok")


def session_api() -> Starlette:
    from meiqia_app.web import export_routes

    return Starlette(
        routes=[
            *export_routes.routes(),
            Route("/api/session/claim", claim_session, methods=["GET"]),
            Route(LOGOUT_PATH, clear_session, methods=["GET", "HEAD", "POST"]),
            Route("/api/health", health, methods=["GET"]),
            *backup_routes(),
        ]
    )
