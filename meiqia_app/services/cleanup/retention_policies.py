"""The built-in retention policies (RET-1), one registration each.

Samples name things by id, file name and date, never by a person's data
(the page keeps them in its state). Each reuses the service that owns the data: the trash purge and the archive
run the cleanup job's batches (services/cleanup/actions.py), export files go through
the export service, backups through the backup service. A run returns its
counts; services/cleanup/retention.py writes the one audit entry of the run.

Webhook deliveries get their policy when webhooks exist: that feature calls
``retention.register_policy`` the same way (key ``webhook_deliveries``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sqlalchemy import delete, func, select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import Job
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.cleanup.retention import (
    SAMPLE_SIZE,
    Keep,
    Policy,
    PolicySetting,
    Preview,
    counts_so_far,
    progress,
    register_policy,
)
from meiqia_app.services.customers import ownership
from meiqia_app.services.customers.importing import files as import_files
from meiqia_app.services.exports import files as export_files
from meiqia_app.services.integrations import webhook_delivery
from meiqia_app.services.platform import backup, jobs
from meiqia_app.services.platform.text_formats import file_size_text

DAY = dt.timedelta(days=1)
TEN_YEARS_DAYS = 3650
FINISHED = ("done", "failed", "cancelled")
JOB_BATCH = 5_000
FILE_BATCH = 200


def _size(size: int) -> str:
    return file_size_text(size)


# --- trash: purge what was trashed more than N days ago -------------------------------------------


def _trash_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    count, rows = cleanup_trash.trash_preview(now - setting.value * DAY, SAMPLE_SIZE)
    return Preview(count=count, sample=tuple(f"#{i} · {when}" for i, when in rows))


def _trash_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    outcome = cleanup_trash.purge_trashed_before(ctx, now - setting.value * DAY)
    return {"customers": outcome.customers, "rows": outcome.other_rows, "backup": outcome.backup}


# --- customers: archive after N months without activity ------------------------------------------


def _archive_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    count, rows = cleanup.inactive_preview(setting.value, now, SAMPLE_SIZE)
    return Preview(count=count, sample=tuple(f"#{i} · {when}" for i, when in rows))


def _archive_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    return {"customers": cleanup.archive_inactive(ctx, setting.value, now).customers}


# --- owners: customers nobody contacted for N days go back to the pool (公海) -----------------------


def _pool_return_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    count, sample = ownership.pool_return_preview(setting.value, now, SAMPLE_SIZE)
    return Preview(count=count, sample=tuple(sample))


def _pool_return_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    before = int(counts_so_far(ctx).get("customers", 0))  # a resumed run: what it had returned

    def after_batch(returned: int) -> None:
        progress(ctx, before + returned, {"customers": before + returned})

    returned = ownership.return_to_pool(ctx.actor, setting.value, now, ctx.job_id, after_batch)
    return {"customers": before + returned}


# --- export files: delete after N hours --------------------------------------------------------------


def _exports_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    count, size, names = export_files.retention_preview(now, now - dt.timedelta(hours=setting.value), SAMPLE_SIZE)
    return Preview(count=count, bytes=size, sample=tuple(names))


def _exports_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    counts = {"files": 0, "bytes": 0, **counts_so_far(ctx)}
    finished_before = now - dt.timedelta(hours=setting.value)
    export_files.remove_partial_files()  # what interrupted exports left (also done at start)
    while True:
        files, size = export_files.retention_expire_batch(now, finished_before, FILE_BATCH)
        if not files:
            return counts
        counts["files"] += files
        counts["bytes"] += size
        progress(ctx, counts["files"], counts)


# --- finished jobs: delete their rows after N days ----------------------------------------------------


def _jobs_where(now: dt.datetime, days: int):
    return Job.status.in_(FINISHED), Job.finished_at < now - days * DAY


def _jobs_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    where = _jobs_where(now, setting.value)
    with read_session() as session:
        count = session.execute(select(func.count()).select_from(Job).where(*where)).scalar_one()
        rows = session.execute(select(Job.id, Job.kind, Job.status).where(*where).order_by(Job.id).limit(SAMPLE_SIZE))
        sample = tuple(f"#{i} {kind} ({status})" for i, kind, status in rows.all())
    return Preview(count=int(count), sample=sample)


def _jobs_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    counts = {"jobs": 0, **counts_so_far(ctx)}
    where = _jobs_where(now, setting.value)
    while True:
        with write_session() as session:
            ids = list(session.execute(select(Job.id).where(*where).order_by(Job.id).limit(JOB_BATCH)).scalars())
            if ids:
                session.execute(delete(Job).where(Job.id.in_(ids), *where))
        if not ids:
            return counts
        counts["jobs"] += len(ids)
        progress(ctx, counts["jobs"], counts)


# --- webhook deliveries: delete the log of finished deliveries after N days ---------------------------


def _deliveries_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    count, sample = webhook_delivery.finished_deliveries(now - setting.value * DAY, SAMPLE_SIZE)
    return Preview(count=count, sample=tuple(sample))


def _deliveries_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    counts = {"deliveries": 0, **counts_so_far(ctx)}
    edge = now - setting.value * DAY
    while deleted := webhook_delivery.delete_finished_deliveries(edge, JOB_BATCH):
        counts["deliveries"] += deleted
        progress(ctx, counts["deliveries"], counts)
    return counts


# --- imports: delete uploaded files and error reports after N days -------------------------------------


def _old_import_files(now: dt.datetime, days: int) -> list[tuple[Path, int]]:
    """(path, bytes) of the regular files directly in the imports dir last changed before the cutoff."""
    folder = import_files.imports_dir()
    if not folder.is_dir():
        return []
    cutoff = (now - days * DAY).timestamp()
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            if stat.st_mtime < cutoff:
                found.append((Path(entry.path), stat.st_size))
    return sorted(found)


def _imports_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    files = _old_import_files(now, setting.value)
    return Preview(
        count=len(files),
        bytes=sum(size for _path, size in files),
        sample=tuple(f"{path.name} ({_size(size)})" for path, size in files[:SAMPLE_SIZE]),
    )


def _imports_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    counts = {"files": 0, "bytes": 0, **counts_so_far(ctx)}
    files = _old_import_files(now, setting.value)
    for start in range(0, len(files), FILE_BATCH):
        for path, size in files[start : start + FILE_BATCH]:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            counts["files"] += 1
            counts["bytes"] += size
        progress(ctx, counts["files"], counts)
    return counts


# --- backups: delete those older than N days, keeping at least the newest K ------------------------------


def _backup_candidates(setting: PolicySetting, now: dt.datetime) -> list[tuple[int, str, int]]:
    return backup.retention_candidates(setting.keep or 1, now - setting.value * DAY)


def _backups_preview(setting: PolicySetting, now: dt.datetime) -> Preview:
    old = _backup_candidates(setting, now)
    return Preview(
        count=len(old),
        bytes=sum(size for _id, _name, size in old),
        sample=tuple(name for _id, name, _size in old[:SAMPLE_SIZE]),
    )


def _backups_run(ctx: jobs.JobContext, setting: PolicySetting, now: dt.datetime) -> dict:
    counts = {"backups": 0, "bytes": 0, **counts_so_far(ctx)}
    old = _backup_candidates(setting, now)
    for start in range(0, len(old), FILE_BATCH):
        chunk = old[start : start + FILE_BATCH]
        backup.delete_backups(chunk)
        counts["backups"] += len(chunk)
        counts["bytes"] += sum(size for _id, _name, size in chunk)
        progress(ctx, counts["backups"], counts)
    return counts


register_policy(
    Policy(
        key="trash_purge",
        unit="days",
        default=lambda: get_settings().trash_retention_days,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_trash_preview,
        run=_trash_run,
        typed_confirm=True,
        permissions=("customer.delete",),
        order=10,
    )
)
register_policy(
    Policy(
        key="customer_archive",
        unit="months",
        default=lambda: 24,
        minimum=1,
        maximum=120,
        preview=_archive_preview,
        run=_archive_run,
        default_enabled=lambda: False,  # a fresh install archives nobody until an admin says so
        permissions=("cleanup.run", "customer.archive"),
        order=20,
    )
)
register_policy(
    Policy(
        key="pool_return",
        unit="days",
        default=lambda: 30,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_pool_return_preview,
        run=_pool_return_run,
        default_enabled=lambda: False,  # owners keep their customers until an admin says otherwise
        permissions=("customer.assign",),
        order=25,
    )
)
register_policy(
    Policy(
        key="export_files",
        unit="hours",
        default=lambda: get_settings().export_ttl_hours,
        minimum=1,
        maximum=24 * 365,
        preview=_exports_preview,
        run=_exports_run,
        order=30,
    )
)
register_policy(
    Policy(
        key="finished_jobs",
        unit="days",
        default=lambda: 90,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_jobs_preview,
        run=_jobs_run,
        order=40,
    )
)
register_policy(
    Policy(
        key="webhook_deliveries",
        unit="days",
        default=lambda: webhook_delivery.KEEP_LOG_DAYS,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_deliveries_preview,
        run=_deliveries_run,
        order=45,
    )
)
register_policy(
    Policy(
        key="import_files",
        unit="days",
        default=lambda: 7,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_imports_preview,
        run=_imports_run,
        order=50,
    )
)
register_policy(
    Policy(
        key="backups",
        unit="days",
        default=lambda: 7,
        minimum=1,
        maximum=TEN_YEARS_DAYS,
        preview=_backups_preview,
        run=_backups_run,
        # MEIQIA_BACKUP_KEEP=0 used to mean "keep every backup": the policy starts switched off.
        default_enabled=lambda: get_settings().backup_keep > 0,
        keep=Keep(
            label_key="retention.keep.backups",
            default=lambda: get_settings().backup_keep if get_settings().backup_keep > 0 else 10,
            minimum=1,
            maximum=1000,
        ),
        typed_confirm=True,
        permissions=("backup.manage",),
        order=60,
    )
)
