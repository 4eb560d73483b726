"""Behaviour records from connected systems (``POST /api/v1/events``, docs/api.md).

A batch holds up to 1,000 records. Each names its customer (``id``,
``external_id``, ``visitor_id`` or ``phone``) and carries the sender's own
``event_id``: a record whose id was taken before (30 days) or earlier in the
same batch is a duplicate and changes nothing, so an at-least-once sender
may send again safely. Each record gets its own result (accepted, duplicate,
rejected with the reason and field); a bad record does not stop the others.

What a record does is what the same fact does when the seed writes it:
``page_view`` / ``product_view`` / ``search`` / ``login`` become behaviour
events, ``chat_message`` a message of a conversation (the conversation is
made at its first message), ``conversation`` opens or closes one (rating,
category), ``order`` creates an order or changes its status. Then, for
every customer touched: last active (and last login) move forward, the
paid-order figures are recomputed from the orders
(customer_orders.recompute_order_figures, the same function the order form
uses), the activity counter an open customer page watches goes up, the
lifecycle stage and the on-change tag rules are applied (the batch's
customers are told as changed once it commits: services/customers/changes.py),
and the report aggregates follow through their database triggers. An unknown ``visitor_id`` makes a prospect (潜在)
customer, through the same code as a customer made by hand.

Customers that may not change are refused per record: trashed, erased or
unknown ones as ``customer_not_found``, archived ones as
``customer_archived``, those with an erasure pending as ``erasure_pending``
(no new data about a person who asked to be forgotten).

The batch is one transaction (the write lock is held for its length on
SQLite: a 500-record batch at 1M customers takes ~100 ms) with one audit
entry naming the key; the duplicate check runs inside it, so two workers
taking the same record at once cannot both accept it (the loser's
transaction is retried once and then sees the record as a duplicate). On
SQLite the batches of one process also take turns on a lock of the
process's (``_one_batch_at_a_time``), so a waiting batch starts as soon as
the previous one is done rather than when SQLite's busy handler wakes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meiqia_app.db import get_engine, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer, ErasureRequest, IngestedEvent
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.changes import ACTIVITY, customers_changed
from meiqia_app.services.errors import Busy, NotFound, ReadOnly, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations.ingest_batch import Batch
from meiqia_app.services.integrations.ingest_records import MAX_BATCH, Record, Reject, parse_record
from meiqia_app.timeutil import as_utc, utcnow

KEEP_IDS_DAYS = 30

C = Customer.__table__.c
IE = IngestedEvent.__table__.c
ER = ErasureRequest.__table__.c


@dataclasses.dataclass
class RecordResult:
    index: int
    event_id: str | None
    status: str  # accepted | duplicate | rejected
    customer_id: int | None = None
    created_customer: bool = False
    reason: str | None = None
    field: str | None = None


# --- the batch ------------------------------------------------------------------------------------


def ingest(actor: Actor, records: list) -> list[RecordResult]:
    """Take a batch; returns one result per record, in order."""
    require(actor, "event.ingest", action="event.ingest", target_type="event_batch")
    if not isinstance(records, list) or not records:
        raise ValidationError.single("events", "error.required")
    if len(records) > MAX_BATCH:
        raise ValidationError.single("events", "error.too_many", max=MAX_BATCH)
    now = utcnow()
    results: list[RecordResult | None] = [None] * len(records)
    parsed: list[Record] = []
    for index, raw in enumerate(records):
        event_id = raw.get("event_id") if isinstance(raw, dict) and isinstance(raw.get("event_id"), str) else None
        try:
            parsed.append(parse_record(index, raw, now))
        except Reject as rejected:
            results[index] = RecordResult(index, event_id, "rejected", reason=rejected.reason, field=rejected.field)
    with _one_batch_at_a_time():
        for attempt in range(2):
            try:
                applied = _apply(actor, parsed, now, len(records))
                break
            except IntegrityError:
                # Another worker took some of these records meanwhile: once more, they are duplicates now.
                if attempt:
                    raise
    for result in applied:
        results[result.index] = result
    return [r for r in results if r is not None]


# Batches of this process, one after the other where the database has one writer at a time
# (SQLite): the next batch starts the moment the previous one (and its rules) is done, instead
# of SQLite's busy handler waking the waiting one after sleeps of up to 100 ms. The wait is
# bounded like SQLite's own (busy timeout), then the batch is refused as busy.
_WRITERS = threading.Lock()
WRITERS_WAIT_S = 15.0


@contextlib.contextmanager
def _one_batch_at_a_time():
    if not get_adapter().one_writer:
        yield
        return
    if not _WRITERS.acquire(timeout=WRITERS_WAIT_S):
        raise Busy()
    try:
        yield
    finally:
        _WRITERS.release()


def _apply(actor: Actor, parsed: list[Record], now: dt.datetime, total: int):
    """One transaction: the duplicate check, then every record's work, set-based; once it
    has committed, the customers it touched are told as changed (and their rules applied)
    before this returns."""
    results: list[RecordResult] = []
    with write_session() as session:
        conn = session.connection()
        taken = (
            set(conn.execute(select(IE.event_id).where(IE.event_id.in_([r.event_id for r in parsed]))).scalars())
            if parsed
            else set()
        )
        fresh: list[Record] = []
        for record in parsed:
            if record.event_id in taken:
                results.append(RecordResult(record.index, record.event_id, "duplicate"))
                continue
            taken.add(record.event_id)
            fresh.append(record)
        batch = Batch(session, actor, now)
        access = CustomerAccess(actor)
        customers = _resolve(conn, fresh)
        batch.create_prospects(fresh, customers)
        batch.prefetch(fresh)
        for record in fresh:
            # Every check comes before any work is queued: a refused record leaves nothing behind.
            try:
                record.customer_id, record.created_customer = _customer_for(access, record, customers, batch.prospects)
                batch.plan(record)
            except Reject as rejected:
                results.append(
                    RecordResult(
                        record.index,
                        record.event_id,
                        "rejected",
                        customer_id=record.customer_id,
                        reason=rejected.reason,
                        field=rejected.field,
                    )
                )
                continue
            results.append(
                RecordResult(
                    record.index,
                    record.event_id,
                    "accepted",
                    customer_id=record.customer_id,
                    created_customer=record.created_customer,
                )
            )
        batch.write(customers)
        accepted = [r for r in results if r.status == "accepted"]
        duplicates = sum(r.status == "duplicate" for r in results)
        audit.record(
            session,
            actor,
            "event.ingest",
            target_type="event_batch",
            details={
                "records": total,
                "accepted": len(accepted),
                "duplicates": duplicates,
                # Records refused before the transaction (malformed) count too.
                "rejected": total - len(accepted) - duplicates,
                "customers": len(batch.touched),
                "created_customers": sorted({r.customer_id for r in accepted if r.created_customer}),
                "kinds": dict(sorted(Counter(r.kind for r in fresh if r.customer_id in batch.touched).items())),
            },
        )
        # After the commit: stage and on-change rules, counts (services/customers/change_subscribers.py).
        customers_changed(session, batch.touched, ACTIVITY)
    return results


@dataclasses.dataclass(frozen=True)
class _Known:
    id: int
    status: str
    erased_at: object
    last_active_at: dt.datetime | None
    last_login_at: dt.datetime | None
    ref: object


def _moment_of(value) -> dt.datetime | None:
    """A stored time as read back (a datetime, or JSON text from packed rows)."""
    if value is None or isinstance(value, dt.datetime):
        return as_utc(value) if value is not None else None
    return as_utc(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _resolve(conn, records: list[Record]) -> dict[tuple[str, object], tuple]:
    """(ref key, value) -> (id, status, erased, erasure pending, last active, last login).

    The rows come back packed in one value (dbadapter.packed_rows): hundreds of small
    rows fetched one by one cost a GIL hand-over each while the app's other threads work.
    """
    adapter = get_adapter(conn)
    wanted: dict[str, set] = defaultdict(set)
    for record in records:
        wanted[record.ref[0]].add(record.ref[1])
    found: dict[tuple[str, object], _Known] = {}
    ids: set[int] = set()
    columns = ("id", "status", "erased_at", "last_active_at", "last_login_at", "ref")
    for key, values in wanted.items():
        column = C.id if key == "id" else C[key]
        statement = select(C.id, C.status, C.erased_at, C.last_active_at, C.last_login_at, column.label("ref")).where(
            column.in_(sorted(values, key=str))
        )
        rows = sorted((_Known(*row) for row in adapter.packed_rows(conn, statement, columns)), key=lambda r: r.id)
        for row in rows:
            ids.add(row.id)
            previous = found.get((key, row.ref))
            # Several customers with the same external id / visitor / phone: the lowest id of the
            # best status (active, then archived, then trashed or erased).
            if previous is None or _rank(row) < _rank(previous):
                found[(key, row.ref)] = row
    pending = set()
    if ids:
        pending = set(
            conn.execute(
                select(ER.customer_id).where(ER.customer_id.in_(sorted(ids)), ER.status == "pending")
            ).scalars()
        )
    return {
        ref: (
            row.id,
            row.status,
            row.erased_at is not None,
            row.id in pending,
            _moment_of(row.last_active_at),
            _moment_of(row.last_login_at),
        )
        for ref, row in found.items()
    }


def _rank(row) -> int:
    if row.erased_at is not None or row.status == "trashed":
        return 2
    return 1 if row.status == "archived" else 0


# ReadOnly's message key -> the reason a record is rejected with.
_READ_ONLY_REASONS = {"error.customer_archived": "customer_archived", "error.erasure_pending": "erasure_pending"}


def _customer_for(access: CustomerAccess, record: Record, customers: dict, prospects: dict) -> tuple[int, bool]:
    known = customers.get(record.ref)
    if known is not None:
        customer_id, status, erased, pending = known[:4]
        field = f"customer.{record.ref[0]}"
        try:
            access.check_writable(status, erased, pending, writer="system")
        except NotFound:
            raise Reject("customer_not_found", field) from None
        except ReadOnly as refused:
            raise Reject(_READ_ONLY_REASONS.get(refused.message_key, "customer_not_found"), field) from None
        return customer_id, False
    if record.ref[0] != "visitor_id":
        raise Reject("customer_not_found", f"customer.{record.ref[0]}")
    made = prospects.get(record.ref[1])
    if made is None:
        raise Reject("customer_not_found", "customer.visitor_id")
    if isinstance(made, ValidationError):
        field = next(iter(made.field_errors), "name")
        raise Reject("invalid", f"customer.{field}")
    return made[0], made[1] == record.index


def prune(now: dt.datetime | None = None) -> int:
    """Client event ids are remembered KEEP_IDS_DAYS: a record sent again later is taken again."""
    from sqlalchemy import delete

    edge = (now or utcnow()) - dt.timedelta(days=KEEP_IDS_DAYS)
    with get_engine().begin() as conn:
        return conn.execute(delete(IngestedEvent.__table__).where(IE.received_at < edge)).rowcount
