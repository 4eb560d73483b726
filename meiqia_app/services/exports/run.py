"""Writing an export's file: a job of the runner (services/platform/jobs.py, kind
``export.file``, its params only the export's id); the export keeps its status and
progress in its own ``export_job`` row (progress_done, heartbeat, cancel_requested),
which every page polls. A protected export's password goes to the job in process memory
only (``jobs.start_in_background(memory=…)``): never into the job table, the export row,
the audit log or a log line. An export interrupted by a restart therefore cannot go on:
it is marked failed ("interrupted", or for a protected one "the password is not kept")
and can simply be requested again; a protected export never ends as a file without its
protection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import update
from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob, Role, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.exports import custom_sort
from meiqia_app.services.exports import protect as protection
from meiqia_app.services.exports.fields import field_label, present_fields
from meiqia_app.services.exports.files import fail_interrupted, remove_paths, ttl_hours
from meiqia_app.services.exports.info import (
    ACTIVE,
    JOB_KIND,
    RUNS,
    ExportInfo,
    anomalies,
    audit_details,
    export_dto,
    export_view,
    system_actor,
)
from meiqia_app.services.exports.rows import ExportSpec, RowSource
from meiqia_app.services.exports.writers import ExportMeta, write_csv, write_csv_lines, write_pdf, write_xlsx
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import jobs
from meiqia_app.services.platform.process_owner import HEARTBEATS, current_owner
from meiqia_app.timeutil import to_local, utcnow

log = logging.getLogger(__name__)

EXTENSIONS = {"csv": "csv", "xlsx": "xlsx", "pdf": "pdf"}
PROTECTED_EXTENSIONS = {"csv": "zip", "xlsx": "xlsx", "pdf": "pdf"}


class _Cancelled(Exception):
    pass


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
    RUNS[int(export_id)] = job_id
    jobs.start_in_background(job_id, memory={"password": password} if password else None)
    return job_id


def wait_for_export(export_id: int, timeout: float = 30) -> bool:
    """Tests: wait until this process's job writing the export's file ends."""
    job_id = RUNS.get(int(export_id))
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
            view = fail_interrupted(export_id) or export_view(system_actor(), export_id)
        else:
            view = run_export(export_id, ctx.memory.get("password", ""), ctx=ctx)
    finally:
        RUNS.pop(export_id, None)
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

    headers = tuple(field_label(f, lang) for f in spec.fields)
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
        # A custom field deleted since the request is left out (its values are gone).
        fields=present_fields(json.loads(job.fields or "[]"))[0],
        # A custom field retired or deleted since: by id (its column is left out too).
        sort_field=custom_sort.present_sort(sort.get("field") or "id"),
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
            row.expires_at = utcnow() + dt.timedelta(hours=ttl_hours())
            session.add(row)
            session.flush()
            flags = anomalies(session, actor, count)
            flags = [f for f in flags if f != "frequent"]  # counted at request time
            audit.record(
                session,
                actor,
                "export.run",
                target_type="export",
                target_id=export_id,
                details=audit_details(row, rows=count, size=size, sha256=digest, anomalies=flags),
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
        remove_paths(plain, final)
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
                details=audit_details(row, rows_done=row.progress_done),
            )
            return export_dto(row)
    except Exception as exc:  # any failure must end the export visibly and be audited
        log.exception("export %s failed", export_id)
        remove_paths(plain, final)
        error = exc.message_key if hasattr(exc, "message_key") else type(exc).__name__
        with write_session() as session:
            row = session.get(ExportJob, export_id)
            row.status = "failed"
            row.error = str(error)[:500]
            row.finished_at = utcnow()
            session.add(row)
            audit.record(
                session,
                actor or system_actor(),
                "export.failed",
                target_type="export",
                target_id=export_id,
                result="error",
                details=audit_details(row, error=row.error),
            )
            return export_dto(row)
    finally:
        HEARTBEATS.untrack(ExportJob, export_id)
