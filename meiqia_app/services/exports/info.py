"""What every step of the export workflow shares: its states and constants, the export as
the pages show it (``ExportInfo``), the details of its audit entries and their anomaly flags.

The workflow (EXP-1..8) is split by concern: ``request`` (parse, review, request),
``approval`` (approve, reject, start an approved one, rerun, cancel), ``run`` (the
``export.file`` job writing the file), ``files`` (interrupted runs, partial and expired
files, retention), ``history`` (the list of exports), ``downloads`` (single-use tokens).
Every step re-checks the acting user's permission and the role's export policy in the
service, whatever the browser sent, and writes an audit entry: request, approval,
rejection, run, failure, cancel, download and refusal (refusals in their own transaction
via ``rbac.refuse``). Large, off-hours or frequent exports are flagged so they stand out
on the audit page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlalchemy import func
from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import ExportJob
from meiqia_app.services.customers.masking import mask_search_term
from meiqia_app.services.customers.selection import KIND_IDS
from meiqia_app.services.errors import NotFound
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.timeutil import as_utc, format_local, to_local, utcnow

FORMATS = ("csv", "xlsx", "pdf")
PURPOSES = ("analysis", "marketing", "service")

#: Audit anomaly thresholds: rows in one export, exports by one user per hour, local working hours.
LARGE_EXPORT_ROWS = 10_000
FREQUENT_EXPORTS_PER_HOUR = 5
WORKING_HOURS = (7, 22)


ACTIVE = ("queued", "running")
CANCELLABLE = ("pending_approval", "approved", "queued", "running")
JOB_KIND = "export.file"

# Export id -> the runner's job writing its file in this process (until it ends).
RUNS: dict[int, int] = {}


def anomalies(session, actor: Actor, rows: int) -> list[str]:
    flags = []
    if rows >= LARGE_EXPORT_ROWS:
        flags.append("large")
    hour = to_local(utcnow()).hour
    if not (WORKING_HOURS[0] <= hour < WORKING_HOURS[1]):
        flags.append("off_hours")
    since = utcnow() - dt.timedelta(hours=1)
    recent = session.exec(
        select(func.count())
        .select_from(ExportJob)
        .where(ExportJob.requested_by_id == actor.user_id, ExportJob.created_at >= since)
    ).one()
    if recent > FREQUENT_EXPORTS_PER_HOUR:
        flags.append("frequent")
    return flags


def audit_details(job: ExportJob, **extra) -> dict:
    scope = json.loads(job.scope or "{}")
    selection = scope.get("selection") or {}
    described = {"text": scope.get("text", ""), "kind": selection.get("kind")}
    if selection.get("kind") == KIND_IDS:
        described["count"] = len(selection.get("ids") or [])
    else:
        # The audit chain cannot be erased later: the typed search goes in masked.
        query = dict(selection.get("query") or {})
        typed = str(query.get("q") or "")
        if typed:
            query["q"] = mask_search_term(typed)
            described["text"] = described["text"].replace(typed, query["q"])
        described["query"] = query
    if scope.get("view_id"):
        described["view_id"] = scope["view_id"]
    return {
        "export_id": job.id,
        "scope": described,
        "fields": json.loads(job.fields or "[]"),
        "format": job.format,
        "protected": job.protected,
        "purpose": job.purpose,
        **extra,
    }


def system_actor() -> Actor:
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    return SYSTEM_ACTOR


# --- views ------------------------------------------------------------------------------------------


def _fmt_time(value) -> str:
    return format_local(as_utc(value)) if value else ""


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """One export as the wizard, the history and the approvals show it (times as local text)."""

    id: int
    kind: str  # customers | portability | report
    status: str
    requested_by: str
    format: str
    protected: bool
    purpose: str
    scope_text: str
    fields: list[str]
    row_estimate: int
    row_count: int
    progress_done: int
    percent: int
    file_size: int
    file_sha256: str
    created_at: str
    finished_at: str
    expires_at: str
    approver: str
    decision_comment: str
    error: str  # a message key, or ""
    downloadable: bool


def export_dto(job: ExportJob) -> ExportInfo:
    scope = json.loads(job.scope or "{}")
    estimate = job.row_estimate or 0
    done = job.progress_done or 0
    if job.status == "done":
        percent = 100
    elif estimate:
        percent = min(99, int(done * 100 / estimate))
    else:
        percent = 0
    return ExportInfo(
        id=job.id,
        kind=job.kind,
        status=job.status,
        requested_by=job.requested_by_name,
        format=job.format,
        protected=job.protected,
        purpose=job.purpose,
        scope_text=scope.get("text", ""),
        fields=json.loads(job.fields or "[]"),
        row_estimate=estimate,
        row_count=job.row_count,
        progress_done=done,
        percent=percent,
        file_size=job.file_size,
        file_sha256=job.file_sha256 or "",
        created_at=_fmt_time(job.created_at),
        finished_at=_fmt_time(job.finished_at),
        expires_at=_fmt_time(job.expires_at),
        approver=job.approver_name or "",
        decision_comment=job.decision_comment or "",
        error=job.error or "",
        downloadable=job.status == "done" and job.expires_at is not None and as_utc(job.expires_at) > utcnow(),
    )


def export_view(actor: Actor, export_id: int) -> ExportInfo:
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None or not (actor.can("export.view_all") or job.requested_by_id == actor.user_id):
            raise NotFound()
        return export_dto(job)
