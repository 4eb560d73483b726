"""Cleanup of invalid and stale data (CLEAN-1..7): criteria, dry run, bulk actions, archive/trash/purge.

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
case (few distinct junk values) but reads every distinct value once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import statistics
import time
from collections.abc import Sequence

from sqlalchemy import Integer, and_, delete, exists, false, func, insert, literal, or_, select, update
from sqlalchemy.orm import aliased

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import (
    BehaviorEvent,
    Conversation,
    Customer,
    CustomerSearch,
    ErasureRequest,
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
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.changes import DELETED, MANY, STATUS, TAGS, customers_changed
from meiqia_app.services.customers.listing import all_conditions, list_customers, scoped_query
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection, selection_conditions
from meiqia_app.services.customers.validation import normalize_email, normalize_phone
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import jobs
from meiqia_app.services.privacy import mentions
from meiqia_app.timeutil import as_utc, format_local, utcnow

C = Customer.__table__.c
INACTIVE_MONTHS = (6, 12, 24)
SCOPES = ("active", "archived", "all")  # "all" = active + archived (never the trash)
MATCH_MODES = ("any", "all")
REASONS = ("inactive", "no_contact", "invalid_contact", "erasure_pending", "duplicate", "view")
ACTIONS = ("tag", "archive", "trash", "erase")
# What each action needs beyond cleanup.run.
ACTION_PERMISSIONS = {
    "tag": "tag.assign",
    "archive": "customer.archive",
    "trash": "customer.delete",
    "erase": "customer.erase",
}
BATCH = 10_000  # tag and erase (erasure rewrites each customer on its own)
# Archive, trash and purge: fewer, bigger batches (the cost is pages written per
# batch, see above). A batch holds SQLite's write lock ~10 s at 1M customers on the
# shared machine (other writers wait; busy timeout 15 s): one 100k batch was faster
# still (17.5 s for 100k) but would hold the lock for all of it.
BULK_BATCH = 50_000
SAMPLE_SIZE = 20
# Rough bytes per row (beside measured text lengths) for the dry run's estimate.
ROW_BYTES = {
    "customer": 320,
    "customer_search": 80,
    "customer_order": 140,
    "conversation": 90,
    "message": 60,
    "behavior_event": 70,
    "note": 60,
    "tag_assignment": 30,
    "erasure_request": 80,
}


# --- criteria ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Criteria:
    inactive_months: int = 0  # 0: not used
    no_contact: bool = False
    invalid_contact: bool = False
    erasure_pending: bool = False
    duplicates: bool = False
    view_id: int = 0  # 0: no saved view
    match: str = "any"  # any | all of the chosen criteria
    scope: str = "active"
    # A bulk action from the customer list: its Selection (a filter or ticked ids) as a dict.
    selection: dict | None = None

    @classmethod
    def from_dict(cls, data) -> Criteria:
        if not isinstance(data, dict):
            raise ValidationError.single("criteria", "error.bad_choice")
        try:
            months = int(data.get("inactive_months") or 0)
            view_id = int(data.get("view_id") or 0)
        except (TypeError, ValueError):
            raise ValidationError.single("criteria", "error.bad_choice") from None
        if months and months not in INACTIVE_MONTHS:
            raise ValidationError.single("inactive_months", "error.bad_choice")
        if view_id < 0:
            raise ValidationError.single("view_id", "error.bad_choice")
        match = data.get("match") or "any"
        scope = data.get("scope") or "active"
        if match not in MATCH_MODES or scope not in SCOPES:
            raise ValidationError.single("criteria", "error.bad_choice")
        selection = None
        if data.get("selection") is not None:
            selection = Selection.from_dict(data["selection"]).to_dict()  # validated, normalised
        criteria = cls(
            inactive_months=months,
            no_contact=data.get("no_contact") is True,
            invalid_contact=data.get("invalid_contact") is True,
            erasure_pending=data.get("erasure_pending") is True,
            duplicates=data.get("duplicates") is True,
            view_id=view_id,
            match=match,
            scope=scope,
            selection=selection,
        )
        if not criteria.chosen():
            raise ValidationError.single("criteria", "cleanup.no_criteria")
        return criteria

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def chosen(self) -> list[str]:
        names = []
        if self.inactive_months:
            names.append("inactive")
        for name in ("no_contact", "invalid_contact", "erasure_pending"):
            if getattr(self, name):
                names.append(name)
        if self.duplicates:
            names.append("duplicate")
        if self.view_id:
            names.append("view")
        if self.selection:
            names.append("selection")
        return names

    @property
    def list_selection_only(self) -> bool:
        """Only the customer list's selection: the list's own bulk action, not the cleanup wizard."""
        return self.chosen() == ["selection"]


def _months_ago(now: dt.datetime, months: int) -> dt.datetime:
    year, month = divmod(now.month - 1 - months, 12)
    year += now.year
    month += 1
    day = min(
        now.day,
        [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][
            month - 1
        ],
    )
    return now.replace(year=year, month=month, day=day)


@functools.lru_cache(maxsize=65536)
def _phone_ok(value: str) -> bool:
    try:
        return normalize_phone(value) == value
    except ValueError:
        return False


@functools.lru_cache(maxsize=65536)
def _email_ok(value: str) -> bool:
    if "@" not in value:
        return False
    try:
        normalize_email(value)
        return True
    except ValueError:
        return False


def invalid_values(conn, column) -> list[str]:
    """Distinct stored values of phone/e-mail the validators reject (read from the column's index)."""
    check = _phone_ok if column.name == "phone" else _email_ok
    bad = []
    statement = select(column).where(column.is_not(None), column != "").group_by(column)
    for (value,) in conn.execute(statement):
        if not check(value):
            bad.append(value)
    return bad


def reason_conditions(conn, actor: Actor, criteria: Criteria, now: dt.datetime | None = None) -> dict[str, object]:
    """One SQL condition per chosen criterion (the reason a row matched)."""
    now = now or utcnow()
    conditions: dict[str, object] = {}
    if criteria.inactive_months:
        # last_active_at is the latest of registration, login, chat, order and
        # event (the seed, imports and activity writers keep it so), so "no
        # login, chat or order since the cutoff" is one range of the
        # (status, last_active_at, id) index: ~0.1 s at 1,000,000 customers,
        # where checking the three sources row by row took 4 s.
        # tests/unit/test_cleanup_services.py checks the two agree on the seed.
        conditions["inactive"] = C.last_active_at < _months_ago(now, criteria.inactive_months)
    if criteria.no_contact:
        conditions["no_contact"] = and_(or_(C.phone.is_(None), C.phone == ""), or_(C.email.is_(None), C.email == ""))
    bad_phones: list[str] | None = None
    if criteria.invalid_contact or criteria.duplicates:
        bad_phones = invalid_values(conn, C.phone)
    if criteria.invalid_contact:
        bad_emails = invalid_values(conn, C.email)
        parts = ([C.phone.in_(bad_phones)] if bad_phones else []) + ([C.email.in_(bad_emails)] if bad_emails else [])
        conditions["invalid_contact"] = or_(*parts) if parts else false()
    if criteria.erasure_pending:
        er = ErasureRequest.__table__.c
        conditions["erasure_pending"] = exists().where(er.customer_id == C.id, er.status == "pending")
    if criteria.duplicates:
        # A later copy of an earlier customer (the earliest of a group stays), as the
        # duplicate finder groups them: same valid phone, same e-mail, same name in the same city.
        other = aliased(Customer.__table__)
        alive = and_(other.c.id < C.id, other.c.status != STATUS_TRASHED)
        phone_dup = and_(C.phone.is_not(None), C.phone != "", exists().where(other.c.phone == C.phone, alive))
        if bad_phones:
            phone_dup = and_(phone_dup, C.phone.not_in(bad_phones))
        conditions["duplicate"] = or_(
            phone_dup,
            and_(C.email.is_not(None), C.email != "", exists().where(other.c.email == C.email, alive)),
            and_(
                C.city.is_not(None), C.city != "", exists().where(other.c.name == C.name, other.c.city == C.city, alive)
            ),
        )
    if criteria.selection:
        conditions["selection"] = and_(*selection_conditions(conn, Selection.from_dict(criteria.selection), actor))
    if criteria.view_id:
        from meiqia_app.services.customers.saved_views import load_view

        query = dataclasses.replace(load_view(actor, criteria.view_id), status="all")
        conditions["view"] = and_(
            *all_conditions(conn, CustomerAccess(actor), scoped_query(actor, query, action="cleanup.run"))
        )
    return conditions


def criteria_conditions(conn, actor: Actor, criteria: Criteria, now: dt.datetime | None = None):
    """(full WHERE condition, per-reason conditions)."""
    reasons = reason_conditions(conn, actor, criteria, now)
    combined = (and_ if criteria.match == "all" else or_)(*reasons.values())
    # criteria.scope is one of SCOPES ("all": active and archived), within the actor's reach.
    return and_(*CustomerAccess(actor).status_conditions(criteria.scope), combined), reasons


# --- dry run ----------------------------------------------------------------------------


@dataclasses.dataclass
class SampleRow:
    id: int
    name: str
    phone: str
    email: str
    status: str
    last_active: str
    reasons: list[str]


@dataclasses.dataclass
class DryRun:
    count: int
    sample: list[SampleRow]
    action: str
    tables: dict[str, int]  # rows the action changes, per table
    approx_bytes: int
    seconds: float
    # Erasure: other customers' notes and messages naming the customers (services/privacy/mentions.py),
    # for the admin to tick the ones to redact; None when not searched (too many customers).
    mentions: list[dict] | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_action(actor: Actor, action: str, verb: str, criteria: Criteria | None = None) -> None:
    if action not in ACTIONS:
        raise ValidationError.single("action", "error.bad_choice")
    # Archiving or trashing the rows a person selected on the list needs only that
    # permission (CUST-1 bulk actions); the cleanup criteria need cleanup.run too.
    if not (criteria is not None and criteria.list_selection_only and action in ("archive", "trash", "tag")):
        require(actor, "cleanup.run", action=f"cleanup.{verb}", target_type="customer")
    require(actor, ACTION_PERMISSIONS[action], action=f"cleanup.{verb}", target_type="customer")


EXACT_EFFECTS_MAX = 5000


def _table_effects(conn, action: str, where) -> tuple[dict[str, int], int]:
    """Rows each table would change and an approximate byte figure.

    For an erasure of many customers the child tables are counted for the
    first EXACT_EFFECTS_MAX matching customers and scaled up (an estimate:
    counting every message of 200,000 customers would take a minute).
    """
    count = conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
    if action in ("archive", "trash"):
        return {"customer": count}, count * ROW_BYTES["customer"]
    if action == "tag":
        return {"tag_assignment": count}, count * ROW_BYTES["tag_assignment"]
    ids = list(conn.execute(select(C.id).where(where).order_by(C.id).limit(EXACT_EFFECTS_MAX)).scalars())
    scale = (count / len(ids)) if ids else 0
    o, cv, m, n, e = (
        Order.__table__.c,
        Conversation.__table__.c,
        Message.__table__.c,
        Note.__table__.c,
        BehaviorEvent.__table__.c,
    )
    ta, er = TagAssignment.__table__.c, ErasureRequest.__table__.c
    conv_ids = select(cv.id).where(cv.customer_id.in_(ids))

    def scaled(statement) -> int:
        return int(round((conn.execute(statement).scalar_one() or 0) * scale)) if ids else 0

    tables = {
        "customer": count,
        "customer_search": count,
        "note": scaled(select(func.count()).where(n.customer_id.in_(ids))),
        "message": scaled(select(func.count()).where(m.conversation_id.in_(conv_ids))),
        "conversation": scaled(select(func.count()).where(cv.customer_id.in_(ids))),
        "customer_order": scaled(select(func.count()).where(o.customer_id.in_(ids))),
        "behavior_event": scaled(select(func.count()).where(e.customer_id.in_(ids))),
        "tag_assignment": scaled(select(func.count()).where(ta.customer_id.in_(ids), ta.source == SOURCE_MANUAL)),
        "erasure_request": scaled(select(func.count()).where(er.customer_id.in_(ids), er.status == "pending")),
    }
    text_bytes = scaled(select(func.coalesce(func.sum(func.length(n.body)), 0)).where(n.customer_id.in_(ids)))
    text_bytes += scaled(select(func.coalesce(func.sum(func.length(m.body)), 0)).where(m.conversation_id.in_(conv_ids)))
    approx = int(text_bytes) + sum(ROW_BYTES.get(name, 60) * rows for name, rows in tables.items())
    return tables, approx


def dry_run(actor: Actor, criteria: Criteria, action: str = "archive") -> DryRun:
    """Count, a sample with the reason(s) each matched, and what the action would change."""
    _check_action(actor, action, "dry_run", criteria)
    started = time.perf_counter()
    access = CustomerAccess(actor)
    with get_engine().connect() as conn:
        where, reasons = criteria_conditions(conn, actor, criteria)
        flags = [func.coalesce(cond, False).label(f"r_{name}") for name, cond in reasons.items()]
        rows = conn.execute(
            select(C.id, C.name, C.phone, C.email, C.status, C.last_active_at, *flags)
            .where(where)
            .order_by(C.id)
            .limit(SAMPLE_SIZE)
        ).all()
        tables, approx = _table_effects(conn, action, where)
    sample = [
        SampleRow(
            id=row.id,
            name=row.name,
            phone=access.mask("phone", row.phone or ""),
            email=access.mask("email", row.email or ""),
            status=row.status,
            last_active=format_local(row.last_active_at),
            reasons=[name for name in reasons if getattr(row, f"r_{name}")],
        )
        for row in rows
    ]
    count = tables.get("customer", tables.get("tag_assignment", 0))
    found = None
    if action == "erase" and count <= mentions.MAX_CUSTOMERS:
        from meiqia_app.services.privacy import erasure

        with get_engine().connect() as conn:
            ids = list(conn.execute(select(C.id).where(where).order_by(C.id)).scalars())
        found = [dataclasses.asdict(m) | {"key": m.key} for m in erasure.find_mentions(actor, ids) or []]
    return DryRun(
        count=count,
        sample=sample,
        action=action,
        tables=tables,
        approx_bytes=approx,
        seconds=round(time.perf_counter() - started, 3),
        mentions=found,
    )


def count_matching(actor: Actor, criteria: Criteria) -> int:
    with get_engine().connect() as conn:
        where, _ = criteria_conditions(conn, actor, criteria)
        return conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()


# --- CLEAN-7: the working set's list speed ------------------------------------------------


def list_query_ms(actor: Actor = SYSTEM_ACTOR, runs: int = 3) -> float:
    """Median time of the customer list's first page (the daily working set)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        list_customers(actor, ListQuery())
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


# --- actions as jobs ---------------------------------------------------------------------


def start_action(
    actor: Actor, criteria: Criteria, action: str, confirm: str, tag_id: int = 0, redact: Sequence[str] = ()
) -> int:
    """Check permissions and the typed confirmation (the count), queue the job and start it.

    ``redact`` (erasure): references of other customers' records ("note:12")
    whose mentions of the erased customers are to be replaced (from the dry run).
    """
    _check_action(actor, action, action, criteria)
    if action == "tag":
        with read_session() as session:
            if not tag_id or session.get(Tag, int(tag_id)) is None:
                raise ValidationError.single("tag_id", "cleanup.tag_required")
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
) -> dict:
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
    return {"processed": done, "counts": counts}


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


def _finish(ctx: jobs.JobContext, action: str, result: dict, extra: dict | None = None) -> dict:
    result = {**result, **(extra or {}), "action": action, "criteria": ctx.params.get("criteria", {})}
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
    _check_action(ctx.actor, action, action, Criteria.from_dict(ctx.params.get("criteria") or {}))


def _archive_batches(ctx: jobs.JobContext, where_of, before: dict | None = None) -> dict:
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


def archive_inactive(ctx: jobs.JobContext, months: int, now: dt.datetime) -> dict:
    """The archive retention policy's run: the cleanup wizard's archive, batched and resumable.

    Needs what the wizard's archive needs (cleanup.run and customer.archive);
    the caller writes the audit entry.
    """
    _check_action(ctx.actor, "archive", "archive")
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


# --- archive / trash browsing and restore -------------------------------------------------


def _trash_retention():
    """The trash policy's setting (days, on/off): /admin/retention, else MEIQIA_TRASH_RETENTION_DAYS."""
    from meiqia_app.services.cleanup import retention

    return retention.current("trash_purge")


@dataclasses.dataclass
class ParkedRow:
    id: int
    name: str
    phone: str
    status: str
    since: str
    purge_on: str


def list_parked(actor: Actor, status: str, after_id: int = 0, limit: int = 50) -> list[ParkedRow]:
    """Archived or trashed customers, in id order, one page after ``after_id``."""
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    require(
        actor,
        "customer.archive" if status == STATUS_ARCHIVED else "customer.delete",
        action="cleanup.browse",
        target_type="customer",
    )
    limit = max(1, min(int(limit), 200))
    access = CustomerAccess(actor)
    policy = _trash_retention()
    retention = dt.timedelta(days=policy.value) if policy.enabled else None
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(C.id, C.name, C.phone, C.status, C.archived_at, C.trashed_at)
            .where(*access.status_conditions(status), C.id > int(after_id))
            .order_by(C.id)
            .limit(limit)
        ).all()
    return [
        ParkedRow(
            id=r.id,
            name=r.name,
            phone=access.mask("phone", r.phone or ""),
            status=r.status,
            since=format_local(r.archived_at if status == STATUS_ARCHIVED else r.trashed_at),
            purge_on=format_local(as_utc(r.trashed_at) + retention)
            if status == STATUS_TRASHED and r.trashed_at and retention is not None
            else "",
        )
        for r in rows
    ]


def count_parked(actor: Actor, status: str) -> int:
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    require(actor, "customer.view", action="cleanup.browse", target_type="customer")
    with get_engine().connect() as conn:
        return conn.execute(
            select(func.count()).select_from(Customer.__table__).where(*CustomerAccess(actor).status_conditions(status))
        ).scalar_one()


def restore(actor: Actor, status: str, ids: Sequence[int] | None = None) -> int:
    """Bring archived (or trashed) customers back: the given ids, or all of that status when ``ids`` is None.

    Trashed customers go back to where they were (archived if they had been archived).
    """
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    permission = "customer.archive" if status == STATUS_ARCHIVED else "customer.delete"
    require(actor, permission, action=f"cleanup.restore_{status}", target_type="customer")
    if ids is not None:
        try:
            ids = sorted({int(i) for i in ids})
        except (TypeError, ValueError):
            raise ValidationError.single("ids", "error.bad_choice") from None
        if not ids or len(ids) > 10_000 or ids[0] <= 0:
            raise ValidationError.single("ids", "error.bad_choice")
    now = utcnow()
    common = {
        "updated_at": now,
        "updated_by_id": actor.user_id,
        "updated_by_name": actor.username,
        "version": C.version + 1,
    }
    with write_session() as session:
        scope = CustomerAccess(actor).status_conditions(status) + ([C.id.in_(ids)] if ids is not None else [])
        if status == STATUS_ARCHIVED:
            changed = session.execute(
                update(Customer.__table__).where(*scope).values(status=STATUS_ACTIVE, archived_at=None, **common)
            ).rowcount
        else:
            changed = session.execute(
                update(Customer.__table__)
                .where(*scope, C.archived_at.is_not(None))
                .values(status=STATUS_ARCHIVED, trashed_at=None, **common)
            ).rowcount
            changed += session.execute(
                update(Customer.__table__)
                .where(*scope, C.archived_at.is_(None))
                .values(status=STATUS_ACTIVE, trashed_at=None, **common)
            ).rowcount
        audit.record(
            session,
            actor,
            f"cleanup.restore_{status}",
            target_type="customer",
            details={"restored": changed, "ids": (ids or [])[:50], "all": ids is None},
        )
        if changed:
            customers_changed(session, MANY if ids is None else ids, STATUS)
    return changed


# --- purge ------------------------------------------------------------------------------------


def _purge_where(ctx_params: dict):
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


def _purge_batches(ctx: jobs.JobContext, params: dict, note: str) -> dict:
    """Delete the trashed customers ``params`` selects (after a backup), in BULK_BATCH transactions."""
    require(ctx.actor, "customer.delete", action="cleanup.purge", target_type="customer")
    with get_engine().connect() as conn:
        pending = conn.execute(
            select(func.count()).select_from(Customer.__table__).where(_purge_where(params))
        ).scalar_one()
    if pending == 0 and not ctx.checkpoint.get("done"):
        return {"processed": 0, "counts": {}, "backup": ""}
    name = _take_backup(ctx, note)
    result = _walk(
        ctx,
        lambda conn: _purge_where(params),
        _delete_customers,
        before={"backup": name},
        batch=BULK_BATCH,
        check_foreign_keys=False,
    )
    return {**result, "backup": name}


def _work_purge(ctx: jobs.JobContext) -> dict:
    result = _purge_batches(ctx, ctx.params, f"before purge job {ctx.job_id}")
    backup_name = result.pop("backup")
    return _finish(ctx, "purge", result, {"backup": backup_name})


def trash_preview(cutoff: dt.datetime, sample_size: int) -> tuple[int, list[tuple[int, str]]]:
    """How many customers were trashed before ``cutoff``, and the first few (id, trashed at)."""
    where = _purge_where({"all": False, "cutoff": cutoff.isoformat()})
    with get_engine().connect() as conn:
        count = conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
        rows = conn.execute(select(C.id, C.trashed_at).where(where).order_by(C.id).limit(sample_size)).all()
    return count, [(row.id, format_local(row.trashed_at)) for row in rows]


def purge_trashed_before(ctx: jobs.JobContext, cutoff: dt.datetime) -> dict:
    """The trash retention policy's run: the purge job's batches for what was trashed before ``cutoff``.

    Takes the same automatic backup first; the caller writes the audit entry.
    """
    params = {"all": False, "cutoff": cutoff.isoformat()}
    return _purge_batches(ctx, params, f"before retention purge job {ctx.job_id}")


def start_purge(actor: Actor, all_trash: bool = True, confirm: str | None = None) -> int:
    """Admin "empty trash" (all) — or only what is past the retention window — as a job."""
    require(actor, "customer.delete", action="cleanup.purge", target_type="customer")
    cutoff = utcnow() - dt.timedelta(days=_trash_retention().value)
    params = {"all": bool(all_trash), "cutoff": cutoff.isoformat(), "started_at": utcnow().isoformat()}
    with get_engine().connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(Customer.__table__).where(_purge_where(params))
        ).scalar_one()
    if confirm is not None and confirm.strip() != str(count):
        raise ValidationError.single("confirm", "cleanup.confirm_mismatch", count=count)
    job_id = jobs.create_job(actor, "cleanup.purge", params, total=count)
    jobs.start_in_background(job_id)
    return job_id


def job_report(actor: Actor, job_id: int) -> dict:
    """A cleanup job's progress and final report for the page (only cleanup jobs)."""
    view = jobs.job_view(actor, job_id)
    if not view.kind.startswith("cleanup."):
        raise NotFound()
    return view.as_dict()


for _kind, _fn in (
    ("cleanup.archive", _work_archive),
    ("cleanup.trash", _work_trash),
    ("cleanup.tag", _work_tag),
    ("cleanup.erase", _work_erase),
    ("cleanup.purge", _work_purge),
):
    jobs.register_worker(_kind, _fn)
