"""Downloads go through a single-use, five-minute token bound to the requester's login
session (``DownloadToken``), claimed by ``web/export_routes.py``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import Conflict, PermissionDenied
from meiqia_app.services.exports.info import audit_details
from meiqia_app.services.identity.rbac import Actor, refuse
from meiqia_app.services.platform import downloads as download_tokens
from meiqia_app.timeutil import as_utc, to_local, utcnow

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "zip": "application/zip",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
TOKEN_TTL = dt.timedelta(minutes=5)


# --- downloads -----------------------------------------------------------------------------------


def create_download_token(actor: Actor, export_id: int) -> str:
    """A single-use, short-lived token for the requester's (or, with export.view_all, anyone's) current session."""
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        allowed = job is not None and (actor.can("export.view_all") or job.requested_by_id == actor.user_id)
        ready = allowed and job.status == "done" and job.expires_at is not None and as_utc(job.expires_at) > utcnow()
    if not allowed:
        refuse(actor, "export.download", "export.reason.not_yours", target_type="export", target_id=export_id)
    if not ready:
        raise Conflict("export.error.not_ready")
    if actor.session_id is None:
        raise PermissionDenied("export.reason.no_session")
    return download_tokens.mint(actor, "export", int(export_id), TOKEN_TTL)


@dataclasses.dataclass(frozen=True)
class DownloadFile:
    path: Path
    filename: str
    media_type: str


def claim_download(actor: Actor | None, token: str) -> DownloadFile:
    """Spend a token: it must exist, be unused and unexpired, belong to this user
    and to this login session. Refusals and the download itself are audited."""
    reason = ""
    result: DownloadFile | None = None
    object_id = ""
    with write_session() as session:
        row, refusal = download_tokens.spend(session, actor, "export", token)
        job = session.get(ExportJob, row.object_id) if row else None
        object_id = str(row.object_id) if row else ""
        if refusal or job is None:
            reason = f"export.reason.{refusal or 'bad_token'}"
        elif job.status != "done" or not job.file_name or as_utc(job.expires_at) <= utcnow():
            reason = "export.reason.file_gone"
        else:
            path = get_settings().exports_dir / job.file_name
            if not path.is_file():
                reason = "export.reason.file_gone"
            else:
                ext = path.suffix.lstrip(".")
                stamp = to_local(as_utc(job.created_at)).strftime("%Y%m%d-%H%M")
                result = DownloadFile(
                    path=path,
                    filename=f"customers-{stamp}-{job.id}.{ext}",
                    media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
                )
                audit.record(
                    session,
                    actor,
                    "export.download",
                    target_type="export",
                    target_id=job.id,
                    details=audit_details(job, rows=job.row_count, sha256=job.file_sha256),
                )
    if result is None:
        who = actor or Actor(user_id=None, username="?", display_name="", role_name="", permissions=frozenset())
        audit.record_refusal(
            who, "export.download", target_type="export", target_id=object_id, details={"reason": reason}
        )
        raise PermissionDenied(reason)
    return result
