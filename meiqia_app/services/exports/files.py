"""The exports folder: interrupted runs failed and their partial files removed, expired
files deleted, and the export-files retention policy's batches."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

from sqlalchemy import func, update
from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob
from meiqia_app.services.audit import log as audit
from meiqia_app.services.exports.info import ACTIVE, RUNS, ExportInfo, audit_details, export_dto, system_actor
from meiqia_app.services.platform.process_owner import is_orphaned
from meiqia_app.timeutil import utcnow

log = logging.getLogger(__name__)


def ttl_hours() -> int:
    """Hours an export file may be downloaded: the export-files retention policy's number."""
    from meiqia_app.services.cleanup import retention

    return retention.export_ttl_hours()


def remove_paths(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not delete %s", path)


def fail_interrupted(export_id: int, remove_files: bool = True) -> ExportInfo | None:
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
            system_actor(),
            "export.failed",
            target_type="export",
            target_id=job.id,
            result="error",
            details=audit_details(job, error=error),
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
                remove_paths(path)


def reap_interrupted() -> int:
    """Exports whose process is gone end as failed; their partial files go (``fail_interrupted``).

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
            row.id for row in rows if row.id not in RUNS and is_orphaned(row.owner, row.heartbeat_at, row.created_at)
        ]
    return sum(1 for export_id in candidates if fail_interrupted(export_id, remove_files=False) is not None)


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
            remove_paths(path)
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
                remove_paths(directory / job.file_name)
            job.status = "expired"
            session.add(job)
        if jobs:
            audit.record(
                session,
                system_actor(),
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
                remove_paths(directory / job.file_name)
            size += job.file_size or 0
            job.status = "expired"
            session.add(job)
        return len(rows), size
