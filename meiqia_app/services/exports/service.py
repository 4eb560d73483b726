"""The export workflow (EXP-1..8): review, request, approval, run, download, expiry.

Every step re-checks the acting user's permission and the role's export policy
in the service, whatever the browser sent, and writes an audit entry: request,
approval, rejection, run, failure, cancel, download and refusal (refusals in
their own transaction via ``rbac.refuse``). Large, off-hours or frequent
exports are flagged so they stand out on the audit page.

Running. Writing the file is a job of the runner (services/platform/jobs.py, kind
``export.file``, its params only the export's id); the export keeps its
status and progress in its own ``export_job`` row (progress_done, heartbeat,
cancel_requested), which every page polls. A protected export's password goes
to the job in process memory only (``jobs.start_in_background(memory=…)``):
never into the job table, the export row, the audit log or a log line. An
export interrupted by a restart therefore cannot go on: it is marked failed
("interrupted", or for a protected one "the password is not kept") and can
simply be requested again; a protected export never ends as a file without
its protection.

Downloads go through a single-use, five-minute token bound to the requester's
login session (``DownloadToken``), claimed by ``web/export_routes.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
from pathlib import Path

from sqlalchemy import func, update
from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob, Role, SavedView, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.masking import mask_search_term
from meiqia_app.services.customers.query import HIDDEN_VALUE_SORTS
from meiqia_app.services.customers.selection import KIND_IDS, KIND_QUERY, Selection, check_ticked_in_reach
from meiqia_app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from meiqia_app.services.exports import protect as protection
from meiqia_app.services.exports.fields import FIELD_SPECS
from meiqia_app.services.exports.policy import evaluate, masked_fields
from meiqia_app.services.exports.rows import ExportSpec, RowSource
from meiqia_app.services.exports.writers import ExportMeta, write_csv, write_csv_lines, write_pdf, write_xlsx
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import downloads, jobs
from meiqia_app.services.platform.process_owner import HEARTBEATS, current_owner, is_orphaned
from meiqia_app.timeutil import as_utc, format_local, to_local, utcnow

log = logging.getLogger(__name__)

FORMATS = ("csv", "xlsx", "pdf")
PURPOSES = ("analysis", "marketing", "service")
EXTENSIONS = {"csv": "csv", "xlsx": "xlsx", "pdf": "pdf"}
PROTECTED_EXTENSIONS = {"csv": "zip", "xlsx": "xlsx", "pdf": "pdf"}
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "zip": "application/zip",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
TOKEN_TTL = dt.timedelta(minutes=5)
#: Audit anomaly thresholds: rows in one export, exports by one user per hour, local working hours.
LARGE_EXPORT_ROWS = 10_000
FREQUENT_EXPORTS_PER_HOUR = 5
WORKING_HOURS = (7, 22)


ACTIVE = ("queued", "running")
CANCELLABLE = ("pending_approval", "approved", "queued", "running")
JOB_KIND = "export.file"

# Export id -> the runner's job writing its file in this process (until it ends).
_runs: dict[int, int] = {}


class _Cancelled(Exception):
    pass


# --- request parsing ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    spec: ExportSpec
    fmt: str
    scope: dict  # what is stored in export_job.scope (selection + description)
    lang: str = "zh"


_VALUE_PREFIXES = {
    "sources": "source",
    "lifecycle": "lifecycle",
    "tiers": "tier",
    "status": "status",
    "order_statuses": "order_status",
}


def query_text(query, lang: str) -> str:
    """The filter in words, for people (wizard, approvals, file headers, audit)."""
    from meiqia_app.i18n import tr
    from meiqia_app.models import Tag

    def label(key: str, fallback: str) -> str:
        text = tr(lang, key)
        return fallback if text == key else text

    data = query.to_dict()
    defaults = type(query)().to_dict()
    tag_ids = {i for key in ("tags_any", "tags_all", "tags_none") for i in data.get(key) or []}
    tag_names: dict[int, str] = {}
    if tag_ids:
        with read_session() as session:
            tag_names = {t.id: t.name for t in session.exec(select(Tag).where(Tag.id.in_(tag_ids))).all()}
    parts = []
    for key, value in data.items():
        if key in ("sort", "direction") or value == defaults.get(key) or value in ("", [], None):
            continue
        values = value if isinstance(value, list) else [value]
        if key in _VALUE_PREFIXES:
            shown = [label(f"{_VALUE_PREFIXES[key]}.{v}", str(v)) for v in values]
        elif key.startswith("tags_"):
            shown = [tag_names.get(v, f"#{v}") for v in values]
        else:
            shown = [str(v) for v in values]
        name = label("common.search", key) if key == "q" else label(f"filter.{key}", key)
        parts.append(f"{name}: {'、'.join(shown)}")
    return "; ".join(parts) if parts else tr(lang, "export.scope.all")


def parse_request(actor: Actor, data: dict, lang: str = "zh") -> ExportRequest:
    """Validate a request coming from the browser (any shape may arrive)."""
    from meiqia_app.i18n import tr
    from meiqia_app.services.customers.saved_views import load_view

    if not isinstance(data, dict):
        raise ValidationError.single("request", "error.bad_choice")
    scope = data.get("scope") or {}
    if not isinstance(scope, dict):
        raise ValidationError.single("scope", "error.bad_choice")
    stored: dict = {}
    if scope.get("kind") == "view":
        try:
            view_id = int(scope.get("view_id"))
        except (TypeError, ValueError):
            raise ValidationError.single("scope", "error.bad_choice") from None
        query = load_view(actor, view_id)
        with read_session() as session:
            view = session.get(SavedView, view_id)
            view_name = view.name if view else str(view_id)
        selection = Selection.of_query(query)
        stored = {
            "view_id": view_id,
            "text": tr(lang, "export.scope.view_text", name=view_name) + " · " + query_text(query, lang),
        }
    else:
        selection = Selection.from_dict(
            {"kind": scope.get("kind") or KIND_QUERY, "query": scope.get("query") or {}, "ids": scope.get("ids")}
        )
        check_ticked_in_reach(actor, selection, "export.request")
        if selection.kind == KIND_IDS:
            stored = {"text": tr(lang, "export.scope.ids_text", count=len(selection.ids))}
        else:
            stored = {"text": query_text(selection.query, lang)}
    stored["selection"] = selection.to_dict()
    fields = data.get("fields")
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise ValidationError.single("fields", "export.error.no_fields")
    fmt = data.get("format") or "csv"
    if fmt not in FORMATS:
        raise ValidationError.single("format", "error.bad_choice")
    purpose = data.get("purpose") or "analysis"
    direction = data.get("sort_dir") or "asc"
    if direction not in ("asc", "desc"):
        raise ValidationError.single("sort", "error.bad_choice")
    sort_field = data.get("sort_field") or "id"
    if sort_field in HIDDEN_VALUE_SORTS and not actor.can("customer.view_sensitive"):
        # Rows in the order of an amount the file shows masked would rank the hidden amounts.
        refuse(actor, "export.request", "error.hidden_value_filter", target_type="export", fields=["sort_field"])
    spec = ExportSpec(
        selection=selection,
        fields=tuple(fields),
        sort_field=sort_field,
        descending=direction == "desc",
        purpose=purpose,
        restrict_tag_ids=actor.export_policy.allowed_tag_ids,
    )
    return ExportRequest(spec=spec, fmt=fmt, scope=stored, lang=lang if lang in ("zh", "en") else "zh")


def password_required(actor: Actor, spec: ExportSpec) -> bool:
    """Sensitive values in clear need a password; masked ones do not."""
    return bool(set(spec.sensitive_fields) - masked_fields(actor))


_BYTES_PER_KIND = {"text": 14, "int": 6, "money": 9, "date": 11, "datetime": 20, "bool": 3}


def estimate_size(fields, fmt: str, rows: int) -> int:
    per_row = sum(_BYTES_PER_KIND.get(FIELD_SPECS[f].kind, 10) + 1 for f in fields) + 1
    csv_size = per_row * rows + 200
    if fmt == "xlsx":
        return int(csv_size * 0.45) + 8_000
    if fmt == "pdf":
        return rows * 90 + 60_000
    return csv_size


# --- review and request -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportReview:
    """What the wizard's review step shows before a request: count, size, policy verdict."""

    row_count: int
    size_estimate: int
    reasons: list[tuple[str, dict]]  # (message key, its parameters): why refused or why approval
    allowed: bool
    needs_approval: bool
    password_required: bool
    masked: list[str]  # chosen fields this role exports masked
    scope_text: str


def review(actor: Actor, data: dict, lang: str = "zh") -> ExportReview:
    """Step 6 of the wizard: row count, size estimate, policy result, approval needed."""
    require(actor, "export.request", action="export.review")
    request = parse_request(actor, data, lang)
    count = RowSource(actor, request.spec, lang).count()
    result = evaluate(actor, request.spec, request.fmt, count)
    return ExportReview(
        row_count=count,
        size_estimate=estimate_size(request.spec.fields, request.fmt, count),
        reasons=[(key, params) for key, params in result.reasons],
        allowed=result.allowed,
        needs_approval=result.needs_approval,
        password_required=password_required(actor, request.spec),
        masked=sorted(set(request.spec.fields) & masked_fields(actor)),
        scope_text=request.scope["text"],
    )


def _anomalies(session, actor: Actor, rows: int) -> list[str]:
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


def _details(job: ExportJob, **extra) -> dict:
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


def request_export(actor: Actor, data: dict, password: str = "", lang: str = "zh", start: bool = True) -> ExportInfo:
    """Create an export: refused (and audited) outside the policy, pending when it
    needs approval, otherwise queued and started in the background."""
    require(actor, "export.request", action="export.request")
    request = parse_request(actor, data, lang)
    spec = request.spec
    count = RowSource(actor, spec, lang).count()
    result = evaluate(actor, spec, request.fmt, count)
    if not result.allowed:
        key, params = result.reasons[0]
        refuse(
            actor,
            "export.request",
            key,
            target_type="export",
            reasons=result.reason_keys(),
            chosen_fields=list(spec.fields),
            format=request.fmt,
            rows=count,
            scope=request.scope["text"],
            **params,
        )
    protected = bool(password)
    if password_required(actor, spec) and not protected:
        raise ValidationError.single("password", "export.error.password_required")
    if protected:
        protection.validate_password(password)
    with write_session() as session:
        job = ExportJob(
            requested_by_id=actor.user_id,
            requested_by_name=actor.username,
            status="pending_approval" if result.needs_approval else "queued",
            purpose=spec.purpose,
            scope=json.dumps(request.scope, ensure_ascii=False),
            fields=json.dumps(list(spec.fields)),
            sort=json.dumps(
                {"field": spec.sort_field, "direction": "desc" if spec.descending else "asc", "lang": request.lang}
            ),
            format=request.fmt,
            protected=protected,
            row_estimate=count,
        )
        session.add(job)
        session.flush()
        flags = _anomalies(session, actor, count)
        audit.record(
            session,
            actor,
            "export.request",
            target_type="export",
            target_id=job.id,
            details=_details(job, rows=count, needs_approval=result.needs_approval, anomalies=flags),
            flagged=bool(flags),
        )
        view = export_dto(job)
    if not result.needs_approval and start:
        start_export(view.id, password)
    return view


# --- approval -------------------------------------------------------------------------------------


def list_pending(actor: Actor) -> list[ExportInfo]:
    require(actor, "export.approve", action="export.approvals")
    with read_session() as session:
        jobs = session.exec(
            select(ExportJob).where(ExportJob.status == "pending_approval").order_by(ExportJob.created_at)
        ).all()
        return [export_dto(job) for job in jobs]


def decide(actor: Actor, export_id: int, approve: bool, comment: str = "") -> ExportInfo:
    """Approve or reject a pending request. Nobody approves their own request."""
    require(actor, "export.approve", action="export.approve", target_type="export", target_id=export_id)
    comment = (comment or "").strip()[:500]
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None:
            raise NotFound()
        own = job.requested_by_id == actor.user_id
    if own:
        refuse(actor, "export.approve", "export.reason.own_request", target_type="export", target_id=export_id)
    start_after = False
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job.status != "pending_approval":
            raise Conflict("export.error.not_pending")
        job.approver_id = actor.user_id
        job.approver_name = actor.username
        job.decided_at = utcnow()
        job.decision_comment = comment
        if approve:
            # A protected export waits for its requester to give the password again
            # (it is never stored); an unprotected one starts now.
            job.status = "approved" if job.protected else "queued"
            start_after = not job.protected
        else:
            job.status = "rejected"
            job.finished_at = utcnow()
        session.add(job)
        audit.record(
            session,
            actor,
            "export.approve" if approve else "export.reject",
            target_type="export",
            target_id=job.id,
            details=_details(job, comment=comment, requester=job.requested_by_name, rows=job.row_estimate),
        )
        view = export_dto(job)
    if start_after:
        start_export(view.id, "")
    return view


def start_approved(actor: Actor, export_id: int, password: str) -> ExportInfo:
    """The requester starts an approved protected export, giving its password again."""
    require(actor, "export.request", action="export.run", target_type="export", target_id=export_id)
    protection.validate_password(password)
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None or job.requested_by_id != actor.user_id:
            raise NotFound()
        if job.status != "approved":
            raise Conflict("export.error.not_pending")
        job.status = "queued"
        job.heartbeat_at = utcnow()  # queued now, not when it was requested: no other worker takes it for dead
        session.add(job)
        view = export_dto(job)
    start_export(view.id, password)
    return view


def rerun_export(actor: Actor, export_id: int, password: str = "", lang: str = "zh", start: bool = True) -> ExportInfo:
    """Request the same export again (EXP-8): same scope, fields, sort and format,
    checked against the policy as it is now, with a fresh count."""
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        if (
            job is None
            or job.kind != "customers"
            or not (actor.can("export.view_all") or job.requested_by_id == actor.user_id)
        ):
            raise NotFound()
        scope = json.loads(job.scope or "{}")
        sort = json.loads(job.sort or "{}")
        data = {
            "scope": {"kind": "view", "view_id": scope["view_id"]}
            if scope.get("view_id")
            else scope.get("selection") or {},
            "fields": json.loads(job.fields or "[]"),
            "format": job.format,
            "purpose": job.purpose,
            "sort_field": sort.get("field") or "id",
            "sort_dir": sort.get("direction") or "asc",
        }
    return request_export(actor, data, password=password, lang=lang, start=start)


def cancel_export(actor: Actor, export_id: int) -> ExportInfo:
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None or not (actor.can("export.view_all") or job.requested_by_id == actor.user_id):
            raise NotFound()
        if job.status not in CANCELLABLE:
            raise Conflict("export.error.not_cancellable")
        job.cancel_requested = True
        if job.status != "running":
            job.status = "cancelled"
            job.finished_at = utcnow()
            audit.record(session, actor, "export.cancel", target_type="export", target_id=job.id, details=_details(job))
        session.add(job)
        return export_dto(job)


# --- running -------------------------------------------------------------------------------------


def start_export(export_id: int, password: str = "") -> int:
    """Write the export's file as a job of the runner; returns the job's id.

    The job row holds the export's id only; the password reaches the worker
    in process memory (``ctx.memory``) and is gone when the job ends.
    """
    with read_session() as session:
        row = session.get(ExportJob, int(export_id))
        if row is None:
            raise NotFound()
        # The job is the requester's (an approver's click may start it): it runs with their rights.
        requester = Actor(
            user_id=row.requested_by_id,
            username=row.requested_by_name,
            display_name="",
            role_name="",
            permissions=frozenset(),
        )
        total = row.row_estimate
    job_id = jobs.create_job(requester, JOB_KIND, {"export_id": int(export_id)}, total=total)
    _runs[int(export_id)] = job_id
    jobs.start_in_background(job_id, memory={"password": password} if password else None)
    return job_id


def wait_for_export(export_id: int, timeout: float = 30) -> bool:
    """Tests: wait until this process's job writing the export's file ends."""
    job_id = _runs.get(int(export_id))
    return job_id is None or jobs.wait([job_id], timeout)


def _export_worker(ctx: jobs.JobContext) -> dict:
    """The runner's ``export.file`` job: write the file, or end an interrupted export cleanly."""
    export_id = int(ctx.params["export_id"])
    try:
        with read_session() as session:
            row = session.get(ExportJob, export_id)
            if row is None:
                raise NotFound()
            interrupted = row.status == "running" and ctx.resumed
            lost_password = row.protected and not ctx.memory.get("password") and row.status in ACTIVE
        if interrupted or lost_password:
            # Its process died mid-file, or the job was restarted without the password
            # (a restart forgets it): never write a protected export without it.
            view = _fail_interrupted(export_id) or export_view(_system(), export_id)
        else:
            view = run_export(export_id, ctx.memory.get("password", ""), ctx=ctx)
    finally:
        _runs.pop(export_id, None)
    result = {"export_id": export_id, "status": view.status, "rows": view.row_count}
    if view.status == "cancelled":
        raise jobs.JobCancelled(result)
    if view.status == "failed":
        raise jobs.JobFailed(view.error or "export.error.interrupted")
    return result


jobs.register_worker(JOB_KIND, _export_worker)


def _actor_of(user_id: int) -> Actor | None:
    from meiqia_app.services.identity.sessions import actor_for

    with read_session() as session:
        row = session.exec(select(User, Role).join(Role, Role.id == User.role_id).where(User.id == user_id)).first()
    if row is None or not row[0].is_active:
        return None
    return actor_for(row[0], row[1])


def _meta(actor: Actor, job: ExportJob, spec: ExportSpec, lang: str, scope_text: str) -> ExportMeta:
    from meiqia_app.i18n import tr

    headers = tuple(tr(lang, f"export.field.{f}") for f in spec.fields)
    labels = {
        key: tr(lang, f"export.meta.{key}")
        for key in ("sheet", "meta_sheet", "exporter", "exported_at", "scope", "fields", "row_count", "page", "title")
    }
    return ExportMeta(
        exporter=actor.display_name or actor.username,
        exported_at=to_local(utcnow()).replace(tzinfo=None),
        scope_text=scope_text,
        headers=headers,
        fields=spec.fields,
        lang=lang,
        labels=labels,
        true_text=tr(lang, "export.yes"),
        false_text=tr(lang, "export.no"),
    )


def _spec_of(job: ExportJob, actor: Actor) -> tuple[ExportSpec, str, str]:
    scope = json.loads(job.scope or "{}")
    sort = json.loads(job.sort or "{}")
    spec = ExportSpec(
        selection=Selection.from_dict(scope.get("selection") or {}),
        fields=tuple(json.loads(job.fields or "[]")),
        sort_field=sort.get("field") or "id",
        descending=sort.get("direction") == "desc",
        purpose=job.purpose,
        restrict_tag_ids=actor.export_policy.allowed_tag_ids,
    )
    return spec, sort.get("lang") or "zh", scope.get("text", "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _finish(export_id: int, **values) -> ExportJob:
    with write_session() as session:
        job = session.get(ExportJob, export_id)
        for key, value in values.items():
            setattr(job, key, value)
        session.add(job)
        session.flush()
        return job


def run_export(export_id: int, password: str = "", ctx: jobs.JobContext | None = None) -> ExportInfo:
    """Write the file of a queued export in this thread; returns its final DTO.

    ``ctx``: the runner's job doing it (its progress and cancel follow the export's).
    """
    with write_session() as session:
        job = session.get(ExportJob, export_id)
        if job is None:
            raise NotFound()
        if job.status != "queued":
            return export_dto(job)
        # Conditional on "queued": an export failed meanwhile (reap_interrupted) stays failed.
        claimed = session.execute(
            update(ExportJob.__table__)
            .where(ExportJob.__table__.c.id == export_id, ExportJob.__table__.c.status == "queued")
            .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(), owner=current_owner())
        ).rowcount
        session.expire(job)
        if claimed != 1:
            return export_dto(job)
        session.refresh(job)
    HEARTBEATS.track(ExportJob, export_id)
    actor = _actor_of(job.requested_by_id)
    settings = get_settings()
    directory = settings.exports_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"export-{export_id}-{secrets.token_hex(8)}"
    plain = directory / f".{stem}.part.{EXTENSIONS[job.format]}"
    final = directory / f"{stem}.{PROTECTED_EXTENSIONS[job.format] if job.protected else EXTENSIONS[job.format]}"
    try:
        if actor is None or not actor.can("export.request"):
            raise PermissionDenied("export.reason.no_permission")
        if job.protected and not password:
            raise ValidationError.single("password", "export.error.password_required")
        spec, lang, scope_text = _spec_of(job, actor)
        source = RowSource(actor, spec, lang, datetimes_as_text=job.format == "csv")
        meta = _meta(actor, job, spec, lang, scope_text)

        def progress(done: int) -> None:
            with write_session() as session:
                row = session.get(ExportJob, export_id)
                row.progress_done = done
                row.heartbeat_at = utcnow()
                cancel = row.cancel_requested
                session.add(row)
            if cancel:
                raise _Cancelled()
            if ctx is not None:
                try:
                    ctx.progress(done)
                except jobs.JobCancelled:
                    raise _Cancelled() from None

        if job.format in ("csv", "xlsx") and source.sql_fields_supported(job.format):
            # The database builds each CSV line / XLSX row; Python only writes them.
            lines = source.iter_sql_rows(job.format, meta.true_text, meta.false_text)
            if job.format == "csv":
                count = write_csv_lines(plain, meta, lines, progress)
            else:
                count = write_xlsx(plain, meta, lines, progress, prebuilt=True)
        elif job.format == "csv":
            count = write_csv(plain, meta, source.iter_batches(), progress)
        elif job.format == "xlsx":
            count = write_xlsx(plain, meta, source.iter_batches(), progress)
        else:
            batches = source.iter_batches()
            count = write_pdf(plain, meta, batches, progress, max_rows=settings.export_pdf_max_rows)
        if job.protected:
            inner = f"customers-{export_id}.{EXTENSIONS[job.format]}"
            protection.protect(job.format, plain, final, password, inner)
            plain.unlink(missing_ok=True)
        else:
            os.replace(plain, final)
        size = final.stat().st_size
        digest = _sha256(final)
        with write_session() as session:
            row = session.get(ExportJob, export_id)
            row.status = "done"
            row.row_count = count
            row.progress_done = count
            row.file_name = final.name
            row.file_size = size
            row.file_sha256 = digest
            row.finished_at = utcnow()
            row.expires_at = utcnow() + dt.timedelta(hours=_ttl_hours())
            session.add(row)
            session.flush()
            flags = _anomalies(session, actor, count)
            flags = [f for f in flags if f != "frequent"]  # counted at request time
            audit.record(
                session,
                actor,
                "export.run",
                target_type="export",
                target_id=export_id,
                details=_details(row, rows=count, size=size, sha256=digest, anomalies=flags),
                flagged=bool(flags),
            )
            # No file and no link in the notification: downloads need the requester's session.
            webhooks.emit(
                session,
                "export.completed",
                None,
                {"export_id": export_id, "format": job.format, "rows": count, "requested_by": row.requested_by_name},
            )
            return export_dto(row)
    except _Cancelled:
        _cleanup(plain, final)
        with write_session() as session:
            row = session.get(ExportJob, export_id)
            row.status = "cancelled"
            row.finished_at = utcnow()
            session.add(row)
            audit.record(
                session,
                actor,
                "export.cancel",
                target_type="export",
                target_id=export_id,
                details=_details(row, rows_done=row.progress_done),
            )
            return export_dto(row)
    except Exception as exc:  # any failure must end the export visibly and be audited
        log.exception("export %s failed", export_id)
        _cleanup(plain, final)
        error = exc.message_key if hasattr(exc, "message_key") else type(exc).__name__
        with write_session() as session:
            row = session.get(ExportJob, export_id)
            row.status = "failed"
            row.error = str(error)[:500]
            row.finished_at = utcnow()
            session.add(row)
            audit.record(
                session,
                actor or _system(),
                "export.failed",
                target_type="export",
                target_id=export_id,
                result="error",
                details=_details(row, error=row.error),
            )
            return export_dto(row)
    finally:
        HEARTBEATS.untrack(ExportJob, export_id)


def _ttl_hours() -> int:
    """Hours an export file may be downloaded: the export-files retention policy's number."""
    from meiqia_app.services.cleanup import retention

    return retention.export_ttl_hours()


def _system() -> Actor:
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    return SYSTEM_ACTOR


def _cleanup(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not delete %s", path)


def _fail_interrupted(export_id: int, remove_files: bool = True) -> ExportInfo | None:
    """End an export whose run was interrupted: failed, audited, its partial files deleted.

    "interrupted" (request it again), or for a protected export "the password
    is not kept" (it is never stored, so nothing can finish the file with its
    protection). Only while the export is still queued or running: of two
    callers (the job resumed at start, ``reap_interrupted``) one does it.
    Returns the export's DTO when this call failed it, else None.
    ``remove_files=False``: the caller runs ``remove_partial_files`` next.
    """
    with write_session() as session:
        job = session.get(ExportJob, export_id)
        if job is None or job.status not in ACTIVE:
            return None
        error = "export.error.password_not_kept" if job.protected else "export.error.interrupted"
        changed = session.execute(
            update(ExportJob.__table__)
            .where(ExportJob.__table__.c.id == export_id, ExportJob.__table__.c.status.in_(ACTIVE))
            .values(status="failed", error=error, finished_at=utcnow())
        ).rowcount
        if changed != 1:
            return None
        session.expire(job)
        audit.record(
            session,
            _system(),
            "export.failed",
            target_type="export",
            target_id=job.id,
            result="error",
            details=_details(job, error=error),
        )
        view = export_dto(job)
    if remove_files:
        _remove_files_of(export_id)
    return view


def _remove_files_of(export_id: int) -> None:
    directory = get_settings().exports_dir
    if directory.is_dir():
        for path in directory.glob(f"*export-{int(export_id)}-*"):
            if _EXPORT_PART.match(path.name) or _EXPORT_FILE.match(path.name):
                _cleanup(path)


def reap_interrupted() -> int:
    """Exports whose process is gone end as failed; their partial files go (``_fail_interrupted``).

    An export cannot resume (a protected one needs its password, which is
    never stored), so it is failed and can be requested again. Gone means:
    the process that runs it on this machine is dead (known at once, e.g.
    right after a restart), or its heartbeat (touched every few seconds while
    it runs) is older than ``MEIQIA_JOB_STALE_SECONDS``. An export another
    live worker writes is left alone. Called at start and before listings.
    """
    with read_session() as session:
        rows = session.exec(select(ExportJob).where(ExportJob.status.in_(ACTIVE))).all()
        candidates = [
            row.id for row in rows if row.id not in _runs and is_orphaned(row.owner, row.heartbeat_at, row.created_at)
        ]
    return sum(1 for export_id in candidates if _fail_interrupted(export_id, remove_files=False) is not None)


# Files an export run leaves while it writes (see run_export, portability, reports/files.export_pdf).
_EXPORT_PART = re.compile(r"^\.export-(\d+)-[0-9a-f]+\.part\.\w+$")
_EXPORT_FILE = re.compile(r"^export-(\d+)-[0-9a-f]+\.\w+$")
_UNOWNED_TEMP = re.compile(r"^\.(?:report-[0-9a-f]+\.part\.pdf|portability-\d+-[0-9a-f]+\.(?:json|xlsx))$")
# Temporary files no export row names are written within seconds; one this old was left by a dead process.
UNOWNED_TEMP_AGE = dt.timedelta(minutes=10)


def remove_partial_files() -> list[str]:
    """Delete what interrupted exports left in the exports folder; returns the names removed.

    * ``.export-<id>-….part.*``: the file of export <id> being written; kept
      only while that export is queued or running.
    * ``export-<id>-….*``: a finished file; kept while the export is active,
      or when it is the file its done export names (a run killed between
      writing the file and recording it leaves one nobody names).
    * the temporary files of report PDFs and data-portability exports (no
      export row yet): removed once older than ``UNOWNED_TEMP_AGE``.
    """
    directory = get_settings().exports_dir
    if not directory.is_dir():
        return []
    with read_session() as session:
        rows = session.exec(select(ExportJob.id, ExportJob.status, ExportJob.file_name)).all()
    active = {row[0] for row in rows if row[1] in ACTIVE}
    named = {row[2] for row in rows if row[1] == "done" and row[2]}
    old = utcnow() - UNOWNED_TEMP_AGE
    removed = []
    for path in directory.iterdir():
        name = path.name
        if match := _EXPORT_PART.match(name):
            stale = int(match.group(1)) not in active
        elif match := _EXPORT_FILE.match(name):
            stale = int(match.group(1)) not in active and name not in named
        elif _UNOWNED_TEMP.match(name):
            try:
                stale = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC) < old
            except OSError:
                continue
        else:
            continue
        if stale and path.is_file():
            _cleanup(path)
            removed.append(name)
    if removed:
        log.warning("removed %d files left by interrupted exports: %s", len(removed), ", ".join(removed[:20]))
    return removed


def purge_expired() -> int:
    """Delete what interrupted exports left, and the files of expired exports (before
    listing history, and by the export-files retention policy); expired files stay
    while that policy is off (kept, e.g. on hold; their links still end)."""
    from meiqia_app.services.cleanup import retention

    remove_partial_files()
    if not retention.current("export_files").enabled:
        return 0
    now = utcnow()
    directory = get_settings().exports_dir
    with write_session() as session:
        jobs = session.exec(select(ExportJob).where(ExportJob.status == "done", ExportJob.expires_at <= now)).all()
        for job in jobs:
            if job.file_name:
                _cleanup(directory / job.file_name)
            job.status = "expired"
            session.add(job)
        if jobs:
            audit.record(
                session,
                _system(),
                "export.expire",
                target_type="export",
                details={"export_ids": [job.id for job in jobs]},
            )
        return len(jobs)


def _retention_condition(now: dt.datetime, finished_before: dt.datetime):
    """Finished exports whose file is past its expiry, or that finished before ``finished_before``."""
    return (ExportJob.status == "done") & ((ExportJob.expires_at <= now) | (ExportJob.finished_at <= finished_before))


def retention_preview(now: dt.datetime, finished_before: dt.datetime, sample: int) -> tuple[int, int, list[str]]:
    """(files, bytes, a few file names) the export-files retention policy would delete."""
    where = _retention_condition(now, finished_before)
    with read_session() as session:
        count, size = session.exec(
            select(func.count(), func.coalesce(func.sum(ExportJob.file_size), 0)).where(where)
        ).one()
        names = session.exec(
            select(ExportJob.id, ExportJob.file_name, ExportJob.file_size)
            .where(where)
            .order_by(ExportJob.id)
            .limit(sample)
        ).all()
    return int(count), int(size), [f"#{i} {name or ''}".strip() for i, name, _size in names]


def retention_expire_batch(now: dt.datetime, finished_before: dt.datetime, limit: int = 500) -> tuple[int, int]:
    """Delete the files of one batch of the exports above and mark them expired (the caller audits).

    Returns (exports, bytes); (0, 0) when none is left.
    """
    directory = get_settings().exports_dir
    with write_session() as session:
        rows = session.exec(
            select(ExportJob).where(_retention_condition(now, finished_before)).order_by(ExportJob.id).limit(limit)
        ).all()
        size = 0
        for job in rows:
            if job.file_name:
                _cleanup(directory / job.file_name)
            size += job.file_size or 0
            job.status = "expired"
            session.add(job)
        return len(rows), size


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


def list_exports(actor: Actor, limit: int = 100) -> list[ExportInfo]:
    """The actor's own exports, newest first (everyone's with export.view_all)."""
    require(actor, "export.request", action="export.history")
    reap_interrupted()
    purge_expired()  # also deletes the files the exports just reaped left
    with read_session() as session:
        statement = select(ExportJob).order_by(ExportJob.id.desc()).limit(limit)
        if not actor.can("export.view_all"):
            statement = statement.where(ExportJob.requested_by_id == actor.user_id)
        return [export_dto(job) for job in session.exec(statement).all()]


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
    return downloads.mint(actor, "export", int(export_id), TOKEN_TTL)


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
        row, refusal = downloads.spend(session, actor, "export", token)
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
                    details=_details(job, rows=job.row_count, sha256=job.file_sha256),
                )
    if result is None:
        who = actor or Actor(user_id=None, username="?", display_name="", role_name="", permissions=frozenset())
        audit.record_refusal(
            who, "export.download", target_type="export", target_id=object_id, details={"reason": reason}
        )
        raise PermissionDenied(reason)
    return result
