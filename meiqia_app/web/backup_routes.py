"""GET /api/backups/download?token=… — a backup file, through a single-use token.

The token was minted by the backups page after the permission check
(services/platform/backup.mint_download_token); here the session cookie must resolve to
the same user and session, and the permission is checked again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

from meiqia_app.services.errors import AppError
from meiqia_app.services.identity import sessions
from meiqia_app.services.platform import backup
from meiqia_app.state.base import SESSION_COOKIE


async def download_backup(request: Request):
    import asyncio

    ip = request.client.host if request.client else ""
    token = request.query_params.get("token", "")[:128]
    try:
        actor = await asyncio.to_thread(sessions.resolve_session, request.cookies.get(SESSION_COOKIE, ""), ip)
        path = await asyncio.to_thread(backup.claim_download, actor, token)
    except AppError:
        return PlainTextResponse("not found", status_code=404, headers={"Cache-Control": "no-store"})
    return FileResponse(
        path, filename=path.name, media_type="application/octet-stream", headers={"Cache-Control": "no-store"}
    )


def backup_routes() -> list[Route]:
    return [Route("/api/backups/download", download_backup, methods=["GET"])]
