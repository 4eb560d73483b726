"""Cleanup actions (CLEAN-1..7) as jobs: archive, trash, tag, erase and purge in batches
(criteria, the dry run and the trash list are the modules beside this one).

Criteria are validated from untrusted input (:meth:`Criteria.from_dict`) and
compiled to SQL conditions on the customer table (:func:`criteria_conditions`);
the dry run counts and samples with those same conditions, and each action is
a background job (services/platform/jobs.py) that walks the matching customers in id
order, one committed transaction per batch, recording the batch's last id as
its checkpoint in that same transaction. A process killed mid-job therefore
leaves every customer either moved or not (never half-moved), and the resumed
job continues after the last committed batch.

Speed at 1,000,000 customers (bench/cleanup.py). A batch is not a list of ids
sent to the database but a condition, ``criteria AND after < id <= upto``,
and each table is changed by one set-based statement over it (children
deleted through ``customer_id IN (SELECT id … batch)``, every one an index
search: tests/unit/test_cleanup_plans.py checks EXPLAIN QUERY PLAN).
What costs is index upkeep, not statements: moving a customer to another
status rewrites its entry in the twelve status-leading customer indexes, and
a purge deletes ~10 child rows with their indexes. A batch of 10,000
customers dirtied most leaf pages of those indexes and, with a 64 MiB cache,
spilled and re-wrote them; archive/trash/purge therefore run in batches of
BULK_BATCH with a bigger page cache for the job's connection during the batch
(dbadapter ``begin_bulk_writes``), so each page is written about once per batch.

Invalid phone / e-mail are decided by the same validators as the edit form
(services/customers/validation.py). They are Python, not SQL: the distinct
stored values are read from their index and checked once each, and the
condition becomes ``phone IN (bad values)``. That is cheap for the usual
case (few distinct junk values) but reads every distinct value once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import Integer, and_, delete, exists, func, insert, literal, select, update

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import (
    BehaviorEvent,
    Conversation,
    Customer,
    CustomerSearch,
    ErasureRequest,
    FieldChange,
    Job,
    Message,
    Note,
    Order,
    OwnerChange,
    Tag,
    TagAssignment,
)
from meiqia_app.models.customer import IN_TRASH, STATUS_ACTIVE, STATUS_ARCHIVED, STATUS_TRASHED
from meiqia_app.models.tag import SOURCE_MANUAL
from meiqia_app.services.audit import log as audit
from meiqia_app.services.cleanup.criteria import Criteria, check_action, criteria_conditions, skip_unreachable_ticked
from meiqia_app.services.cleanup.preview import count_matching, list_query_ms
from meiqia_app.services.customers.changes import DELETED, MANY, STATUS, TAGS, customers_changed
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import jobs
from meiqia_app.services.privacy import mentions
from meiqia_app.timeutil import format_local, utcnow

C = Customer.__table__.c
BATCH = 10_000  # tag and erase (erasure rewrites each customer on its own)
# Archive, trash and purge: fewer, bigger batches (the cost is pages written per
# batch, see above). A batch holds SQLite's write lock ~10 s at 1M customers on the
# shared machine (other writers wait; busy timeout 15 s): one 100k batch was faster
# still (17.5 s for 100k) but would hold the lock for all of it.
BULK_BATCH = 50_000


@dataclasses.dataclass(frozen=True)
class CleanupOutcome:
    """What a batched cleanup walk did: customers walked, rows changed per table, the backup taken first."""

    processed: int
    counts: dict[str, int]
    backup: str = ""  # the automatic backup's file name ("" when none was taken)

    @property
    def customers(self) -> int:
        """Customer rows changed (archived, trashed or deleted)."""
        return self.counts.get("customer", 0)

    @property
    def other_rows(self) -> int:
        """Rows changed in the other tables (a purge's children)."""
        return sum(rows for table, rows in self.counts.items() if table != "customer")

    def as_dict(self) -> dict:
        """The job result's JSON form (the backup only when one was taken)."""
        data: dict = {"processed": self.processed, "counts": dict(self.counts)}
        return data | ({"backup": self.backup} if self.backup else {})


@dataclasses.dataclass(frozen=True)
class CleanupReport:
    """A cleanup job as its page shows it: progress, and once finished what it did."""

    job_id: int
    kind: str
    status: str  # queued | running | done | failed | cancelled
    percent: int
    processed: int  # customers walked (the final count once finished)
    total: int
    counts: dict[str, int]  # rows changed per table
    backup: str = ""
    list_ms_before: float | None = None  # archive: the list's first page before and after (ms)
    list_ms_after: float | None = None
    export_files_deleted: int | None = None  # erasure: export files deleted afterwards
    mentions: dict | None = None  # erasure: the mentions document {searched, found, redacted, kept}
    skipped: int = 0  # ticked ids that were no customer within reach (audited, left alone)
    error: str = ""
    error_params: dict = dataclasses.field(default_factory=dict)  # the error key's message params

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")

    @classmethod
    def of_job(cls, view: jobs.JobView) -> CleanupReport:
        result = view.result or {}
        files = result.get("export_files_deleted")
        return cls(
            job_id=view.id,
            kind=view.kind,
            status=view.status,
            percent=view.percent,
            processed=int(result.get("processed", view.processed)),
            total=view.total,
            counts={str(k): int(v) for k, v in (result.get("counts") or {}).items()},
            backup=str(result.get("backup") or ""),
            list_ms_before=result.get("list_ms_before"),
            list_ms_after=result.get("list_ms_after"),
            export_files_deleted=len(files) if files is not None else None,
            mentions=result.get("mentions"),
            skipped=int(result.get("skipped", 0)),
            error=view.error,
            error_params=dict(view.error_params or {}),
        )


# --- actions as jobs ---------------------------------------------------------------------


def start_action(
    actor: Actor, criteria: Criteria, action: str, confirm: str, tag_id: int = 0, redact: Sequence[str] = ()
) -> int:
    """Check permissions and the typed confirmation (the count), queue the job and start it.

    ``redact`` (erasure): references of other customers' records ("note:12")
    whose mentions of the erased customers are to be replaced (from the dry run).
    """
    check_action(actor, action, action, criteria)
    if action == "tag":
        with read_session() as session:
            if not tag_id or session.get(Tag, int(tag_id)) is None:
                raise ValidationError.single("tag_id", "cleanup.tag_required")
    # Ticked ids naming no customer in reach are left alone (the job's SQL is cut to the
    # reach), counted in the report and audited.
    skipped = skip_unreachable_ticked(actor, criteria, f"cleanup.{action}")
    count = count_matching(actor, criteria)
    if (confirm or "").strip() != str(count):
        raise ValidationError.single("confirm", "cleanup.confirm_mismatch", count=count)
    if count == 0:
        raise ValidationError.single("criteria", "cleanup.nothing_matches")
    params = {
        "criteria": criteria.to_dict(),
        "action": action,
        "tag_id": int(tag_id or 0),
        "expected": count,
        "started_at": utcnow().isoformat(),
    }
    if skipped:
        params["skipped"] = len(skipped)
    if action == "erase":
        params["redact"] = sorted(mentions.parse_keys(redact or ()))
    job_id = jobs.create_job(actor, f"cleanup.{action}", params, total=count)
    jobs.start_in_background(job_id)
    return job_id


def _walk(
    ctx: jobs.JobContext,
    where_of,
    apply_batch,
    before: dict | None = None,
    batch: int = BATCH,
    check_foreign_keys: bool = True,
) -> CleanupOutcome:
    """Apply ``apply_batch(session, in_batch)`` to the matching customers, one transaction per batch.

    ``in_batch`` is a condition on the customer table selecting the next
    ``batch`` matching customers after the checkpoint (``where AND after < id
    <= upto``); ``apply_batch`` changes them with set-based statements and
    returns rows changed per table. ``where_of(conn)`` rebuilds the condition
    (so a resumed job sees today's data); the checkpoint is the last id of
    the last committed batch and is committed with the batch.
    """
    after_id = int(ctx.checkpoint.get("after_id", 0))
    done = int(ctx.checkpoint.get("done", 0))
    counts: dict[str, int] = dict(ctx.checkpoint.get("counts", {}))
    with get_engine().connect() as conn:
        where = where_of(conn)
    adapter = get_adapter()
    while True:
        with write_session(check_foreign_keys=check_foreign_keys) as session:
            conn = session.connection()
            adapter.begin_bulk_writes(conn)
            try:
                window = select(C.id).where(where, C.id > after_id).order_by(C.id).limit(batch).subquery()
                found, upto = session.execute(select(func.count(), func.max(window.c.id))).one()
                if not found:
                    break
                in_batch = and_(where, C.id > after_id, C.id <= upto)
                for table, rows in apply_batch(session, in_batch).items():
                    counts[table] = counts.get(table, 0) + rows
                after_id = int(upto)
                done += found
                checkpoint = {**ctx.checkpoint, **(before or {}), "after_id": after_id, "done": done, "counts": counts}
                # The checkpoint is committed with the batch: a process killed at any
                # moment resumes exactly after the last batch that changed rows.
                session.execute(
                    update(Job.__table__)
                    .where(Job.__table__.c.id == ctx.job_id)
                    .values(
                        processed=done,
                        checkpoint=json.dumps(checkpoint, ensure_ascii=False, default=str),
                        heartbeat_at=utcnow(),
                    )
                )
            finally:
                adapter.end_bulk_writes(conn)
        ctx.progress(done, checkpoint)
    return CleanupOutcome(processed=done, counts=counts)


def _batch_ids(in_batch):
    """The batch's customer ids as a sub-select (for ``customer_id IN (…)`` on child tables)."""
    return select(C.id).where(in_batch)


def _set_status(session, in_batch, status: str, from_statuses: Sequence[str], actor: Actor) -> int:
    now = utcnow()
    values = {
        "status": status,
        "updated_at": now,
        "updated_by_id": actor.user_id,
        "updated_by_name": actor.username,
        "version": C.version + 1,
    }
    if status == STATUS_ARCHIVED:
        values["archived_at"] = now
    if status == STATUS_TRASHED:
        values["trashed_at"] = now
    archived: list[int] = []
    if status == STATUS_ARCHIVED and webhooks.has_subscribers(session, "customer.archived"):
        archived = list(session.execute(select(C.id).where(in_batch, C.status.in_(from_statuses))).scalars())
    result = session.execute(update(Customer.__table__).where(in_batch, C.status.in_(from_statuses)).values(**values))
    if archived:
        webhooks.emit_many(session, "customer.archived", archived)
    if result.rowcount:
        customers_changed(session, MANY, STATUS)  # once per batch, told after its commit
    return result.rowcount


def _criteria_where(ctx: jobs.JobContext):
    criteria = Criteria.from_dict(ctx.params["criteria"])
    now = dt.datetime.fromisoformat(ctx.params["started_at"])
    return lambda conn: criteria_conditions(conn, ctx.actor, criteria, now)[0]


def _finish(ctx: jobs.JobContext, action: str, outcome: CleanupOutcome, extra: dict | None = None) -> dict:
    """The job's result document (stored as JSON in the job row), audited once."""
    result = {**outcome.as_dict(), **(extra or {}), "action": action, "criteria": ctx.params.get("criteria", {})}
    if ctx.params.get("skipped"):
        result["skipped"] = int(ctx.params["skipped"])
    if ctx.checkpoint.get("audited"):  # a resumed job whose entry was already written
        return result
    with write_session() as session:
        audit.record(
            session,
            ctx.actor,
            f"cleanup.{action}",
            target_type="customer",
            details={"job_id": ctx.job_id, **{k: v for k, v in result.items() if k != "sample"}},
        )
        ctx.checkpoint = {**ctx.checkpoint, "audited": True}
        session.execute(
            update(Job.__table__)
            .where(Job.__table__.c.id == ctx.job_id)
            .values(checkpoint=json.dumps(ctx.checkpoint, ensure_ascii=False, default=str))
        )
    return result


def _require_in_job(ctx: jobs.JobContext, action: str) -> None:
    # The job runs with its creator's current rights: revoked rights stop it.
    check_action(ctx.actor, action, action, Criteria.from_dict(ctx.params.get("criteria") or {}))


def _archive_batches(ctx: jobs.JobContext, where_of, before: dict | None = None) -> CleanupOutcome:
    """Archive the active customers matching ``where_of(conn)``, in BULK_BATCH transactions."""
    return _walk(
        ctx,
        where_of,
        lambda s, in_batch: {"customer": _set_status(s, in_batch, STATUS_ARCHIVED, (STATUS_ACTIVE,), ctx.actor)},
        before=before,
        batch=BULK_BATCH,
    )


def _work_archive(ctx: jobs.JobContext) -> dict:
    _require_in_job(ctx, "archive")
    before_ms = ctx.checkpoint.get("list_ms_before") or list_query_ms(ctx.actor)
    result = _archive_batches(ctx, _criteria_where(ctx), before={"list_ms_before": before_ms})
    return _finish(ctx, "archive", result, {"list_ms_before": before_ms, "list_ms_after": list_query_ms(ctx.actor)})


def inactive_criteria(months: int) -> Criteria:
    """Active customers with no login, chat, order or event for ``months`` (the archive retention policy)."""
    return Criteria(inactive_months=int(months), scope="active")


def inactive_preview(months: int, now: dt.datetime, sample_size: int) -> tuple[int, list[tuple[int, str]]]:
    """How many active customers the archive policy would archive, and the first few
    (id, last active): ids and dates only, no personal data for the page's state."""
    with get_engine().connect() as conn:
        where, _ = criteria_conditions(conn, SYSTEM_ACTOR, inactive_criteria(months), now)
        count = conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
        rows = conn.execute(select(C.id, C.last_active_at).where(where).order_by(C.id).limit(sample_size)).all()
    return count, [(row.id, format_local(row.last_active_at)) for row in rows]


def archive_inactive(ctx: jobs.JobContext, months: int, now: dt.datetime) -> CleanupOutcome:
    """The archive retention policy's run: the cleanup wizard's archive, batched and resumable.

    Needs what the wizard's archive needs (cleanup.run and customer.archive);
    the caller writes the audit entry.
    """
    check_action(ctx.actor, "archive", "archive")
    criteria = inactive_criteria(months)
    return _archive_batches(ctx, lambda conn: criteria_conditions(conn, ctx.actor, criteria, now)[0])


def _take_backup(ctx: jobs.JobContext, note: str) -> str:
    """An automatic backup before a bulk delete or purge (once per job, also when resumed)."""
    if ctx.checkpoint.get("backup"):
        return ctx.checkpoint["backup"]
    from meiqia_app.services.platform import backup

    name = backup.create_backup(SYSTEM_ACTOR, kind="pre_purge", note=note[:255]).file_name
    ctx.progress(ctx.processed, {**ctx.checkpoint, "backup": name})
    return name


def _work_trash(ctx: jobs.JobContext) -> dict:
    _require_in_job(ctx, "trash")
    name = _take_backup(ctx, f"before cleanup job {ctx.job_id} (trash)")
    result = _walk(
        ctx,
        _criteria_where(ctx),
        lambda s, in_batch: {
            "customer": _set_status(s, in_batch, STATUS_TRASHED, (STATUS_ACTIVE, STATUS_ARCHIVED), ctx.actor)
        },
        before={"backup": name},
        batch=BULK_BATCH,
    )
    return _finish(ctx, "trash", result, {"backup": name})


def _work_tag(ctx: jobs.JobContext) -> dict:
    _require_in_job(ctx, "tag")
    tag_id = int(ctx.params["tag_id"])
    ta = TagAssignment.__table__.c

    def apply(session, in_batch):
        now = utcnow()
        missing = select(
            C.id, literal(tag_id), literal(SOURCE_MANUAL), literal(now), literal(ctx.actor.user_id, type_=Integer)
        ).where(in_batch, ~exists().where(ta.tag_id == tag_id, ta.customer_id == C.id))
        added = session.execute(
            insert(TagAssignment.__table__).from_select(
                ["customer_id", "tag_id", "source", "assigned_at", "assigned_by_id"], missing
            )
        ).rowcount
        if added:
            session.execute(update(Tag.__table__).where(Tag.__table__.c.id == tag_id).values(last_assigned_at=now))
            customers_changed(session, MANY, TAGS)
        return {"tag_assignment": added}

    return _finish(ctx, "tag", _walk(ctx, _criteria_where(ctx), apply), {"tag_id": tag_id})


def _work_erase(ctx: jobs.JobContext) -> dict:
    _require_in_job(ctx, "erase")
    from meiqia_app.services.privacy import erasure

    started = dt.datetime.fromisoformat(ctx.params["started_at"])
    redact = mentions.parse_keys(ctx.params.get("redact") or ())
    report: dict = {}
    result = _walk(
        ctx,
        _criteria_where(ctx),
        lambda s, in_batch: erasure.erase_batch(
            s, ctx.actor, list(s.execute(_batch_ids(in_batch).order_by(C.id)).scalars()), redact=redact, report=report
        ),
    )
    files = erasure.after_erasure(started)
    # What was found in other customers' records and what was redacted (references only).
    found = report.get("mentions") or {"searched": False, "found": [], "redacted": [], "kept": []}
    return _finish(ctx, "erase", result, {"export_files_deleted": files, "mentions": found})


# --- purge ------------------------------------------------------------------------------------


def purge_condition(ctx_params: dict):
    if ctx_params.get("all"):
        return IN_TRASH
    cutoff = dt.datetime.fromisoformat(ctx_params["cutoff"])
    return and_(IN_TRASH, C.trashed_at < cutoff)


# Every table with a foreign key to customer (message hangs off conversation).
PURGED_CHILD_TABLES = (
    Conversation.__table__,
    Order.__table__,
    BehaviorEvent.__table__,
    Note.__table__,
    TagAssignment.__table__,
    ErasureRequest.__table__,
    CustomerSearch.__table__,
    OwnerChange.__table__,
    FieldChange.__table__,
)


def _delete_customers(session, in_batch) -> dict[str, int]:
    """Delete a batch of customers and everything that belongs to them, children first.

    One set-based DELETE per table over ``customer_id IN (the batch's ids)``;
    each is an index search on the child's customer_id index. Doing it table
    by table counts the rows for the report and lets the purge run with
    SQLite's foreign-key checks off (each deleted customer row otherwise
    probes every referencing table again); ``PURGED_CHILD_TABLES`` is held to
    the schema's foreign keys by a test, so nothing can be left behind.
    """
    cv = Conversation.__table__.c
    batch_ids = _batch_ids(in_batch)
    counts = {}
    conv_ids = select(cv.id).where(cv.customer_id.in_(batch_ids))
    counts["message"] = session.execute(
        delete(Message.__table__).where(Message.__table__.c.conversation_id.in_(conv_ids))
    ).rowcount
    for table in PURGED_CHILD_TABLES:
        counts[table.name] = session.execute(delete(table).where(table.c.customer_id.in_(batch_ids))).rowcount
    counts["customer"] = session.execute(delete(Customer.__table__).where(in_batch)).rowcount
    if counts["customer"]:
        customers_changed(session, MANY, DELETED)
    return counts


def purge_batches(ctx: jobs.JobContext, params: dict, note: str) -> CleanupOutcome:
    """Delete the trashed customers ``params`` selects (after a backup), in BULK_BATCH transactions."""
    require(ctx.actor, "customer.delete", action="cleanup.purge", target_type="customer")
    with get_engine().connect() as conn:
        pending = conn.execute(
            select(func.count()).select_from(Customer.__table__).where(purge_condition(params))
        ).scalar_one()
    if pending == 0 and not ctx.checkpoint.get("done"):
        return CleanupOutcome(processed=0, counts={})
    name = _take_backup(ctx, note)
    result = _walk(
        ctx,
        lambda conn: purge_condition(params),
        _delete_customers,
        before={"backup": name},
        batch=BULK_BATCH,
        check_foreign_keys=False,
    )
    return dataclasses.replace(result, backup=name)


def _work_purge(ctx: jobs.JobContext) -> dict:
    outcome = purge_batches(ctx, ctx.params, f"before purge job {ctx.job_id}")
    return _finish(ctx, "purge", outcome, {"backup": outcome.backup})


def job_report(actor: Actor, job_id: int) -> CleanupReport:
    """A cleanup job's progress and final report for the page (only cleanup jobs)."""
    view = jobs.job_view(actor, job_id)
    if not view.kind.startswith("cleanup."):
        raise NotFound()
    return CleanupReport.of_job(view)


for _kind, _fn in (
    ("cleanup.archive", _work_archive),
    ("cleanup.trash", _work_trash),
    ("cleanup.tag", _work_tag),
    ("cleanup.erase", _work_erase),
    ("cleanup.purge", _work_purge),
):
    jobs.register_worker(_kind, _fn)
