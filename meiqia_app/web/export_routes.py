"""The download route of finished exports.

``GET /api/export/download/{token}``: the token is single-use, expires after a
few minutes and is bound to the login session that asked for it (checked in
``services.exports.export_downloads.claim_download``, which also audits the download or
the refusal). The file is streamed from the private exports directory.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

from meiqia_app.i18n import tr
from meiqia_app.services.errors import AppError
from meiqia_app.services.exports import downloads as export_downloads
from meiqia_app.services.identity import sessions
from meiqia_app.state.base import SESSION_COOKIE


def _claim(token: str, cookie: str, client_ip: str) -> export_downloads.DownloadFile:
    actor = sessions.resolve_session(cookie, client_ip)
    return export_downloads.claim_download(actor, token)


async def download_export(request: Request):
    token = request.path_params.get("token", "")[:128]
    client_ip = request.client.host if request.client else ""
    try:
        found = await asyncio.to_thread(_claim, token, request.cookies.get(SESSION_COOKIE, ""), client_ip)
    except AppError as error:
        lang = "en" if "en" in (request.headers.get("accept-language", "")[:2]) else "zh"
        return PlainTextResponse(
            tr(lang, error.message_key, **getattr(error, "params", {})),
            status_code=403,
            headers={"Cache-Control": "no-store"},
        )
    return FileResponse(
        found.path,
        media_type=found.media_type,
        filename=found.filename,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[Route]:
    return [Route("/api/export/download/{token}", download_export, methods=["GET"])]
