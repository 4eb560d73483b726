"""Importing customers from CSV or XLSX files (CUST-6).

The flow the page follows:

1. The upload is saved under the imports dir (:func:`new_upload_path`); the
   services only read files there, so a handler called with a made-up path
   cannot turn a server file into an "error report".
2. :func:`read_table` gives the header row; :func:`suggest_mapping` proposes
   which column fills which customer field (Chinese and English headers); the
   person corrects it.
3. :func:`dry_run` validates every row exactly as the edit form would
   (``customer_validation.clean_customer_fields``), finds rows that repeat an
   existing customer or an earlier row (same phone, e-mail or external id: the
   rule of ``services/customers/duplicates/check``, which the new-customer dialog follows too), and writes the
   complete error report; nothing is saved.
4. :func:`run_import` does the same pass and inserts the good rows in batches,
   one transaction each. A bad row is skipped and reported, never fatal. One
   audit entry records the counts.

The page runs both as jobs of the runner (services/platform/jobs.py; kinds
``customer.import_check`` and ``customer.import``, :func:`start_job`): the
progress is the job's, a cancel stops after the current batch, and a restart
neither loses nor repeats work silently: a check starts again from the top
(it saves nothing), an import a dead process was running ends as failed
saying how many rows went in (its audit entry says so too), since importing
the same file again skips them as duplicates.

Files are streamed: rows are read, checked and written a batch at a time, so
memory stays flat whatever the file's length. Row numbers are the ones a
spreadsheet shows: the header is row 1, the first data row is row 2."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Connection, insert

from meiqia_app.db import get_engine, write_session
from meiqia_app.models import Customer, CustomerSearch
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.changes import IMPORTED, MANY, customers_changed, publish_committed
from meiqia_app.services.customers.importing.custom_values import check_create_options, check_required_mapped
from meiqia_app.services.customers.importing.files import checked_upload_path, imports_dir
from meiqia_app.services.customers.importing.rows import (
    SEARCH_FIELDS,
    CheckedRow,
    ImportPass,
    ImportProblem,
    ImportReport,
    Progress,
    repeated_customers,
)
from meiqia_app.services.customers.search_text import pinyin_of, search_row
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import utcnow

C = Customer.__table__.c
"""``progress(rows_done, rows_expected)``; rows_expected is an estimate (0: unknown)."""


# An error report goes to the browser through the websocket (rx.download), which
# suits reports of bad rows; a file whose report is bigger is better fixed at the source.
MAX_ERROR_REPORT_DOWNLOAD = 20 * 1024 * 1024


def read_error_report(actor: Actor, path: str | Path) -> tuple[str, bytes]:
    """(file name, bytes) of an error report written by a dry run or an import."""
    require(actor, "customer.import", action="customer.import_error_report", target_type="customer")
    candidate = Path(path).resolve()
    root = imports_dir().resolve()
    if not candidate.is_relative_to(root) or not candidate.name.endswith("-errors.csv") or not candidate.is_file():
        raise ValidationError.single("file", "import.file_missing")
    if candidate.stat().st_size > MAX_ERROR_REPORT_DOWNLOAD:
        raise ValidationError.single("file", "import.report_too_big", mb=MAX_ERROR_REPORT_DOWNLOAD // (1024 * 1024))
    return candidate.name, candidate.read_bytes()


# --- services -------------------------------------------------------------------------------


def dry_run(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    *,
    file_name: str = "",
    lang: str = "zh",
    progress: Progress | None = None,
    create_options: bool = False,
) -> ImportReport:
    """Check every row and find duplicates; nothing is saved except the error report file.
    ``create_options``: unknown options of select custom fields are listed
    (``report.new_options``), not errors (the import will create them)."""
    require(actor, "customer.import", action="customer.import_dry_run", target_type="customer")
    check_create_options(actor, create_options)
    started = time.perf_counter()
    checked = checked_upload_path(path)
    work = ImportPass(
        checked,
        mapping,
        dry_run=True,
        skip_duplicates=True,
        file_name=file_name or checked.name,
        lang=lang,
        progress=progress,
        actor=actor,
        create_options=create_options,
    )
    try:
        engine = get_engine()
        for rows in work.batches():
            with engine.connect() as conn:
                existing = repeated_customers(conn, rows, actor)
            work.classify(rows, existing)
            work.tick()
    finally:
        work.close()
    work.report.seconds = round(time.perf_counter() - started, 3)
    return work.report


def _customer_template() -> dict:
    """Every customer column with the model's defaults (what ``Customer(...)`` would store)."""
    template = Customer(name="").model_dump()
    template.pop("id", None)
    return template


def _prepare_inserts(rows: Iterable[CheckedRow], actor: Actor, template: dict, now: dt.datetime) -> tuple[list, dict]:
    """Customer rows and search texts for the valid rows, computed before the write lock is taken."""
    by = (actor.display_name or actor.username)[:64]
    records: list[dict] = []
    texts: dict[tuple, dict[str, str]] = {}
    for row in rows:
        if row.cleaned is None:
            continue
        values = row.cleaned
        full, initials = pinyin_of(values["name"])
        records.append(
            {
                **template,
                **values,
                "name_pinyin": full[:256],
                "name_initials": initials[:64],
                "registered_at": now,
                "last_active_at": now,
                "created_at": now,
                "updated_at": now,
                "updated_by_id": actor.user_id,
                "updated_by_name": by,
            }
        )
        key = row.search_key()
        if key not in texts:
            texts[key] = search_row(*key)
    return records, texts


def _insert_rows(conn: Connection, records: list[dict], texts: dict[tuple, dict[str, str]]) -> int:
    if not records:
        return 0
    from meiqia_app.services.integrations import webhooks  # webhooks imports customer services: late

    # Multi-row INSERT ... RETURNING. The order of returned rows is not
    # guaranteed, so each search row is found by the returned values
    # themselves: rows that come back identical have identical search texts.
    inserted = conn.execute(
        insert(Customer.__table__).returning(C.id, *(C[field] for field in SEARCH_FIELDS)), records
    ).all()
    conn.execute(
        insert(CustomerSearch.__table__),
        [{"customer_id": customer_id, **texts[tuple(values)]} for customer_id, *values in inserted],
    )
    webhooks.emit_many(conn, "customer.created", [row[0] for row in inserted], {"via": "import"})
    return len(inserted)


def run_import(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    skip_duplicates: bool = True,
    progress: Progress | None = None,
    *,
    file_name: str = "",
    lang: str = "zh",
    after_batch: Callable[[ImportReport], None] | None = None,
    create_options: bool = False,
) -> ImportReport:
    """Insert the good rows, ``BATCH_ROWS`` per transaction; bad rows go to the error report.

    With ``skip_duplicates`` off, rows repeating a customer's phone, e-mail or
    external id are inserted too (and counted as duplicates). Ends with one audit entry
    and returns the report.

    ``progress(rows_done, rows_expected)`` is called after each committed
    batch; raising from it stops the import there (a cancel button). Batches
    already committed stay, and the audit entry (result "error") says how many
    rows went in. Importing the same file again then skips those rows as
    duplicates when they have a phone, e-mail or external id.
    ``after_batch(report)`` sees the counts after each committed batch, before
    ``progress`` (the job keeps them as its checkpoint).
    """
    require(actor, "customer.import", action="customer.import", target_type="customer")
    check_create_options(actor, create_options)
    started = time.perf_counter()
    checked = checked_upload_path(path)
    work = ImportPass(
        checked,
        mapping,
        dry_run=False,
        skip_duplicates=bool(skip_duplicates),
        file_name=file_name or checked.name,
        lang=lang,
        progress=progress,
        actor=actor,
        create_options=create_options,
    )
    report = work.report
    template = _customer_template()
    now = utcnow()
    try:
        for rows in work.batches():
            records, texts = _prepare_inserts(rows, actor, template, now)
            with write_session() as session:
                conn = session.connection()
                # Duplicates are looked up under the write lock, so a customer
                # saved meanwhile by someone else is seen.
                work.classify(rows, repeated_customers(conn, rows, actor))
                wanted = [
                    record
                    for row, record in zip((r for r in rows if r.cleaned is not None), records)
                    if not row.duplicate_of or not skip_duplicates
                ]
                count = _insert_rows(conn, wanted, texts)
                if count:
                    customers_changed(session, MANY, IMPORTED)  # once per batch, told after its commit
            report.inserted += count  # committed
            report.skipped = report.total_rows - report.inserted
            if after_batch is not None:
                after_batch(report)
            work.tick()
    except Exception:
        work.close()
        _audit_import(actor, report, result="error")
        raise
    work.close()
    report.skipped = report.total_rows - report.inserted
    report.seconds = round(time.perf_counter() - started, 3)
    _audit_import(actor, report)
    return report


def _audit_import(actor: Actor, report: ImportReport, result: str = "ok") -> None:
    with write_session() as session:
        audit.record(
            session,
            actor,
            "customer.import",
            target_type="customer",
            result=result,
            details={
                "file": report.file_name[:255],
                "rows": report.total_rows,
                "inserted": report.inserted,
                "invalid": report.invalid,
                "duplicates": report.duplicates,
                "duplicates_existing": report.duplicates_existing,
                "duplicates_in_file": report.duplicates_in_file,
                "skip_duplicates": report.skip_duplicates,
                "error_report": Path(report.error_report_path).name if report.error_report_path else "",
                "mapping": sorted(set(report.mapping.values())),
            },
        )


# --- as jobs of the runner ----------------------------------------------------------------------

IMPORT_JOB_KIND = "customer.import"
CHECK_JOB_KIND = "customer.import_check"
JOB_KINDS = (IMPORT_JOB_KIND, CHECK_JOB_KIND)
# Finished reports with the offending values, for the page of the person who ran them:
# kept in this process only (the job row keeps the counts and reasons, not the values).
_REPORTS: dict[int, ImportReport] = {}
_KEPT_REPORTS = 50


def start_job(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    *,
    dry_run: bool,
    skip_duplicates: bool = True,
    file_name: str = "",
    lang: str = "zh",
    create_options: bool = False,
) -> int:
    """Check (``dry_run``) or import an uploaded file as a job of the runner; returns the job's id.
    ``create_options``: create the select options the file names that do not exist (field.manage)."""
    require(
        actor,
        "customer.import",
        action="customer.import_dry_run" if dry_run else "customer.import",
        target_type="customer",
    )
    check_create_options(actor, bool(create_options))
    checked = checked_upload_path(path)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, (str, int)) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValidationError.single("mapping", "error.bad_choice")
    # Said in the mapping step, before any job: the customers made would lack a required value.
    check_required_mapped(mapping.values())
    params = {
        "path": str(checked),
        "mapping": {str(k): v for k, v in mapping.items()},
        "skip_duplicates": bool(skip_duplicates),
        "file_name": str(file_name or checked.name)[:255],
        "lang": lang if lang in ("zh", "en") else "zh",
        "create_options": bool(create_options),
    }
    job_id = jobs.create_job(actor, CHECK_JOB_KIND if dry_run else IMPORT_JOB_KIND, params)
    jobs.start_in_background(job_id)
    return job_id


def _stored(report: ImportReport) -> dict:
    """The report as the job row keeps it: counts and reasons, not the rows' values (customers' data)."""
    data = dataclasses.asdict(report)
    data["problems"] = [{**problem, "value": ""} for problem in data["problems"]]
    return data


def _from_stored(data: dict) -> ImportReport:
    fields = {f.name for f in dataclasses.fields(ImportReport)}
    report = ImportReport(**{k: v for k, v in data.items() if k in fields and k != "problems"})
    report.problems = [ImportProblem(**problem) for problem in data.get("problems") or []]
    return report


def _import_worker(ctx: jobs.JobContext) -> dict:
    params = ctx.params
    dry = ctx.kind == CHECK_JOB_KIND
    if ctx.resumed and not dry:
        # A dead process was importing: its committed batches stay (the checkpoint
        # counts them). Going on would need the rows it had seen; say what went in.
        done = ctx.checkpoint
        report = ImportReport(
            file_name=params.get("file_name", ""),
            dry_run=False,
            total_rows=int(done.get("rows", 0)),
            inserted=int(done.get("inserted", 0)),
            skip_duplicates=bool(params.get("skip_duplicates", True)),
            mapping=dict(done.get("mapping") or {}),
        )
        _audit_import(ctx.actor, report, result="error")
        publish_committed(MANY, IMPORTED)  # the dead process may have died before telling of its last batch
        raise jobs.JobFailed("import.error.interrupted", inserted=report.inserted)
    seen = {"rows": 0, "inserted": 0}

    def after_batch(report: ImportReport) -> None:
        seen.update(rows=report.total_rows, inserted=report.inserted, mapping=report.mapping)

    def progress(done: int, expected: int) -> None:
        ctx.progress(done, dict(seen) if not dry else None, total=expected)

    common = {
        "file_name": params.get("file_name", ""),
        "lang": params.get("lang", "zh"),
        "create_options": bool(params.get("create_options", False)),
    }
    try:
        if dry:
            report = dry_run(ctx.actor, params["path"], params["mapping"], progress=progress, **common)
        else:
            report = run_import(
                ctx.actor,
                params["path"],
                params["mapping"],
                bool(params.get("skip_duplicates", True)),
                progress,
                after_batch=after_batch,
                **common,
            )
    except jobs.JobCancelled:
        raise jobs.JobCancelled({"inserted": seen["inserted"], "rows": seen["rows"]}) from None
    _REPORTS[ctx.job_id] = report
    while len(_REPORTS) > _KEPT_REPORTS:
        _REPORTS.pop(next(iter(_REPORTS)))
    return {"report": _stored(report)}


jobs.register_worker(IMPORT_JOB_KIND, _import_worker)
jobs.register_worker(CHECK_JOB_KIND, _import_worker)


def job_progress(actor: Actor, job_id: int) -> jobs.JobView:
    """A check's or an import's progress (its starter, or those with job.view_all)."""
    view = jobs.job_view(actor, int(job_id))
    if view.kind not in JOB_KINDS:
        raise NotFound()
    return view


def job_report(actor: Actor, job_id: int) -> ImportReport:
    """The report of a finished check or import: with the offending values when this
    process ran it, else as the job row keeps it (counts and reasons)."""
    view = job_progress(actor, job_id)
    if view.status != "done":
        raise NotFound()
    kept = _REPORTS.pop(view.id, None)
    return kept if kept is not None else _from_stored(view.result.get("report") or {})


def cancel_job(actor: Actor, job_id: int) -> None:
    """Stop a check or an import after its current batch (committed batches stay)."""
    job_progress(actor, job_id)
    jobs.request_cancel(actor, int(job_id))
