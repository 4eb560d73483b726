"""Plain HTTP routes for the session cookie.

The cookie is HttpOnly, so JavaScript (and therefore a Reflex event) cannot
set or clear it; the login flow hands the browser a one-time ticket and the
browser trades it here for the cookie.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from meiqia_app.config import get_settings
from meiqia_app.services import auth
from meiqia_app.services.errors import AppError
from meiqia_app.state.base import SESSION_COOKIE
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


async def clear_session(request: Request):
    # The logout event already revoked the session server-side; a direct visit
    # (no event) revokes it here too.
    auth.logout(request.cookies.get(SESSION_COOKIE, ""), _client_ip(request))
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
            Route("/api/session/clear", clear_session, methods=["GET"]),
            Route("/api/health", health, methods=["GET"]),
            *backup_routes(),
        ]
    )
