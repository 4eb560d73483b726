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
import secrets
import threading
from collections import Counter, defaultdict

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from meiqia_app.db import get_engine, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import (
    BehaviorEvent,
    Conversation,
    Customer,
    ErasureRequest,
    ExternalRef,
    IngestedEvent,
    Message,
    Order,
    Product,
)
from meiqia_app.models.activity import CHANNELS, CONVERSATION_CATEGORIES, ORDER_STATUSES
from meiqia_app.models.customer import SOURCES
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import orders as customer_orders
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.changes import ACTIVITY, customers_changed
from meiqia_app.services.customers.validation import normalize_phone
from meiqia_app.services.errors import Busy, NotFound, ReadOnly, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import as_utc, utcnow

KINDS = ("page_view", "product_view", "search", "login", "chat_message", "conversation", "order")
EVENT_KINDS = ("page_view", "product_view", "search", "login")
MAX_BATCH = 1000
MAX_EVENT_ID = 128
MAX_REF = 128
MAX_TEXT = 4000
MAX_URL = 255
MAX_ITEMS = 100
MAX_CENTS = 10_000_000_000
MAX_QUANTITY = 10_000
KEEP_IDS_DAYS = 30
FUTURE_SLACK = dt.timedelta(minutes=10)
OLDEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
REF_KEYS = ("id", "external_id", "visitor_id", "phone")

C = Customer.__table__.c
IE = IngestedEvent.__table__.c
XR = ExternalRef.__table__.c
P = Product.__table__.c
OT = Order.__table__.c
CV = Conversation.__table__.c
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


class _Reject(Exception):
    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclasses.dataclass
class _Record:
    index: int
    event_id: str
    kind: str
    at: dt.datetime
    ref: tuple[str, object]  # (id | external_id | visitor_id | phone, value)
    prospect: dict
    data: dict
    customer_id: int | None = None
    created_customer: bool = False


# --- parsing (no database) ---------------------------------------------------------------------


def _text(record: dict, field: str, limit: int, required: bool = False, prefix: str = "") -> str | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Reject("required", prefix + field)
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _Reject("invalid", prefix + field)
    text = str(value).strip()
    if len(text) > limit:
        raise _Reject("too_long", prefix + field)
    if "\x00" in text:
        raise _Reject("invalid", prefix + field)
    return text


def _int(record: dict, field: str, low: int, high: int, prefix: str = "", required: bool = False) -> int | None:
    value = record.get(field)
    if value is None:
        if required:
            raise _Reject("required", prefix + field)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Reject("invalid", prefix + field)
    return value


def _choice(record: dict, field: str, choices, default=None, prefix: str = ""):
    value = record.get(field)
    if value is None:
        return default
    if value not in choices:
        raise _Reject("invalid", prefix + field)
    return value


def _moment(value, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    if not isinstance(value, str) or len(value) > 40:
        raise _Reject("invalid", "occurred_at")
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Reject("invalid", "occurred_at") from None
    moment = as_utc(moment)
    if moment > now + FUTURE_SLACK or moment < OLDEST:
        raise _Reject("out_of_range", "occurred_at")
    return moment


def _customer_ref(record: dict) -> tuple[tuple[str, object], dict]:
    """(the reference used, the prospect's details for an unknown visitor)."""
    customer = record.get("customer")
    if not isinstance(customer, dict):
        raise _Reject("required", "customer")
    for key in REF_KEYS:
        value = customer.get(key)
        if value is None or value == "":
            continue
        if key == "id":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise _Reject("invalid", "customer.id")
            return (key, value), {}
        if not isinstance(value, str) or len(value.strip()) > 64 or not value.strip():
            raise _Reject("invalid", f"customer.{key}")
        value = value.strip()
        if key == "phone":
            try:
                value = normalize_phone(value)
            except ValueError:
                raise _Reject("invalid", "customer.phone") from None
        prospect = {}
        if key == "visitor_id":
            name = customer.get("name")
            if name is not None and (not isinstance(name, str) or len(name.strip()) > 64):
                raise _Reject("invalid", "customer.name")
            source = customer.get("source")
            if source is not None and source not in SOURCES:
                raise _Reject("invalid", "customer.source")
            prospect = {"name": (name or "").strip(), "source": source}
        return (key, value), prospect
    raise _Reject("required", "customer")


def _items(record: dict) -> list[dict]:
    raw = record.get("items")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
        raise _Reject("invalid", "items")
    items = []
    for position, item in enumerate(raw):
        prefix = f"items.{position}."
        if not isinstance(item, dict):
            raise _Reject("invalid", f"items.{position}")
        sku = _text(item, "sku", 32, prefix=prefix)
        name = _text(item, "name", 128, prefix=prefix)
        if not sku and not name:
            raise _Reject("required", prefix + "name")
        quantity = _int(item, "quantity", 1, MAX_QUANTITY, prefix=prefix) or 1
        price = _int(item, "price_cents", 0, MAX_CENTS, prefix=prefix) or 0
        items.append({"sku": sku, "name": name or sku, "quantity": quantity, "price_cents": price})
    return items


def _parse(index: int, record, now: dt.datetime) -> _Record:
    if not isinstance(record, dict):
        raise _Reject("invalid", "record")
    event_id = _text(record, "event_id", MAX_EVENT_ID, required=True)
    kind = record.get("type")
    if kind not in KINDS:
        raise _Reject("required" if kind is None else "invalid", "type")
    at = _moment(record.get("occurred_at"), now)
    ref, prospect = _customer_ref(record)
    data: dict = {}
    if kind == "page_view":
        data["url"] = _text(record, "url", MAX_URL, required=True)
    elif kind == "product_view":
        product = record.get("product")
        if not isinstance(product, dict):
            raise _Reject("required", "product")
        data["sku"] = _text(product, "sku", 32, required=True, prefix="product.")
        data["name"] = _text(product, "name", 128, prefix="product.")
        data["price_cents"] = _int(product, "price_cents", 0, MAX_CENTS, prefix="product.")
        data["url"] = _text(record, "url", MAX_URL)
    elif kind == "search":
        data["query"] = _text(record, "query", 200, required=True)
    elif kind == "chat_message":
        data["conversation_id"] = _text(record, "conversation_id", MAX_REF, required=True)
        data["direction"] = _choice(record, "direction", ("in", "out"), "in")
        data["text"] = _text(record, "text", MAX_TEXT, required=True)
        data["channel"] = _choice(record, "channel", CHANNELS)
        data["agent_name"] = _text(record, "agent_name", 64)
    elif kind == "conversation":
        data["conversation_id"] = _text(record, "conversation_id", MAX_REF, required=True)
        data["status"] = _choice(record, "status", ("started", "ended"), "started")
        data["channel"] = _choice(record, "channel", CHANNELS)
        data["agent_name"] = _text(record, "agent_name", 64)
        data["category"] = _choice(record, "category", CONVERSATION_CATEGORIES)
        data["rating"] = _int(record, "rating", 1, 5)
        data["summary"] = _text(record, "summary", 255)
    elif kind == "order":
        data["order_id"] = _text(record, "order_id", MAX_REF, required=True)
        data["status"] = _choice(record, "status", ORDER_STATUSES, "pending")
        data["items"] = _items(record)
        data["amount_cents"] = _int(record, "amount_cents", 0, MAX_CENTS)
        recipient = record.get("recipient")
        if recipient is not None:
            if not isinstance(recipient, dict):
                raise _Reject("invalid", "recipient")
            data["recipient"] = {
                "recipient_name": _text(recipient, "name", 64, prefix="recipient."),
                "recipient_phone": _text(recipient, "phone", 32, prefix="recipient."),
                "shipping_address": _text(recipient, "address", 255, prefix="recipient."),
            }
    return _Record(index=index, event_id=event_id, kind=kind, at=at, ref=ref, prospect=prospect, data=data)


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
    parsed: list[_Record] = []
    for index, raw in enumerate(records):
        event_id = raw.get("event_id") if isinstance(raw, dict) and isinstance(raw.get("event_id"), str) else None
        try:
            parsed.append(_parse(index, raw, now))
        except _Reject as rejected:
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


def _apply(actor: Actor, parsed: list[_Record], now: dt.datetime, total: int):
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
        fresh: list[_Record] = []
        for record in parsed:
            if record.event_id in taken:
                results.append(RecordResult(record.index, record.event_id, "duplicate"))
                continue
            taken.add(record.event_id)
            fresh.append(record)
        batch = _Batch(session, actor, now)
        access = CustomerAccess(actor)
        customers = _resolve(conn, fresh)
        batch.create_prospects(fresh, customers)
        batch.prefetch(fresh)
        for record in fresh:
            # Every check comes before any work is queued: a refused record leaves nothing behind.
            try:
                record.customer_id, record.created_customer = _customer_for(access, record, customers, batch.prospects)
                batch.plan(record)
            except _Reject as rejected:
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


def _resolve(conn, records: list[_Record]) -> dict[tuple[str, object], tuple]:
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


def _customer_for(access: CustomerAccess, record: _Record, customers: dict, prospects: dict) -> tuple[int, bool]:
    known = customers.get(record.ref)
    if known is not None:
        customer_id, status, erased, pending = known[:4]
        field = f"customer.{record.ref[0]}"
        try:
            access.check_writable(status, erased, pending, writer="system")
        except NotFound:
            raise _Reject("customer_not_found", field) from None
        except ReadOnly as refused:
            raise _Reject(_READ_ONLY_REASONS.get(refused.message_key, "customer_not_found"), field) from None
        return customer_id, False
    if record.ref[0] != "visitor_id":
        raise _Reject("customer_not_found", f"customer.{record.ref[0]}")
    made = prospects.get(record.ref[1])
    if made is None:
        raise _Reject("customer_not_found", "customer.visitor_id")
    if isinstance(made, ValidationError):
        field = next(iter(made.field_errors), "name")
        raise _Reject("invalid", f"customer.{field}")
    return made[0], made[1] == record.index


class _Batch:
    """A batch's work: planned record by record in Python (with everything it needs read
    up front), then written with a few set-based statements."""

    def __init__(self, session, actor: Actor, now: dt.datetime) -> None:
        self.session = session
        self.conn = session.connection()
        self.actor = actor
        self.key_id = actor.api_key_id
        self.now = now
        self.prospects: dict[str, tuple[int, int] | ValidationError] = {}
        self.touched: set[int] = set()
        self.last_active: dict[int, dt.datetime] = {}
        self.last_login: dict[int, dt.datetime] = {}
        self.with_orders: set[int] = set()
        self.events: list[dict] = []
        self.ids: list[dict] = []
        self.messages: list[tuple[str, dict]] = []  # (conversation ref, message row)
        self.products: dict[str, int] = {}
        self.wanted_products: dict[str, tuple[str | None, int | None]] = {}
        # conversation / order ref -> existing (row id, customer id[, status]) or a new row's values
        self.conversations: dict[str, tuple] = {}
        self.new_conversations: dict[str, dict] = {}
        self.conversation_changes: dict[int, dict] = {}
        self.orders: dict[str, tuple] = {}
        self.new_orders: dict[str, dict] = {}
        self.order_changes: dict[int, dict] = {}
        self.taken_order_nos: set[str] = set()

    # --- before the records ---------------------------------------------------------------------
    def create_prospects(self, records: list[_Record], customers: dict) -> None:
        """A prospect customer for each visitor id seen for the first time, in one statement."""
        first: dict[str, _Record] = {}
        for record in records:
            if record.ref[0] == "visitor_id" and record.ref not in customers and record.ref[1] not in first:
                first[str(record.ref[1])] = record
        if not first:
            return
        raws = [
            {
                "name": record.prospect.get("name") or f"访客{visitor[-6:]}",
                "visitor_id": visitor,
                "source": record.prospect.get("source") or "web",
                "lifecycle_stage": "prospect",
            }
            for visitor, record in first.items()
        ]
        # Audited by the batch's entry (it lists the customers made), not one entry each.
        made = customer_edit.new_customers_bulk(self.session, self.actor, raws, audit_each=False)
        for (visitor, record), outcome in zip(first.items(), made, strict=True):
            self.prospects[visitor] = outcome if isinstance(outcome, ValidationError) else (outcome, record.index)

    def prefetch(self, records: list[_Record]) -> None:
        """Products, conversations and orders the records name, read once."""
        skus: set[str] = set()
        conversation_refs: set[str] = set()
        order_refs: set[str] = set()
        for record in records:
            data = record.data
            if record.kind == "product_view":
                skus.add(data["sku"])
                self.wanted_products.setdefault(data["sku"], (data.get("name"), data.get("price_cents")))
            elif record.kind in ("chat_message", "conversation"):
                conversation_refs.add(data["conversation_id"])
            elif record.kind == "order":
                order_refs.add(data["order_id"])
                items = data["items"]
                if len(items) == 1 and items[0]["sku"]:
                    skus.add(items[0]["sku"])
                    self.wanted_products.setdefault(items[0]["sku"], (items[0]["name"], items[0]["price_cents"]))
        # Packed rows (one value per query): a batch names up to hundreds of products,
        # conversations and orders, and each row fetched alone hands the GIL over.
        packed = get_adapter(self.conn).packed_rows
        if skus:
            self.products = {
                sku: row_id
                for sku, row_id in packed(self.conn, select(P.sku, P.id).where(P.sku.in_(sorted(skus))), ("sku", "id"))
            }
        # Outer joins: a mapping whose row was purged (the customer with it) comes back
        # without the row, and only those mappings are deleted (the ref starts afresh).
        stale: dict[str, list[str]] = {"conversation": [], "order": []}
        if conversation_refs:
            rows = packed(
                self.conn,
                select(XR.ref, CV.id, CV.customer_id)
                .select_from(ExternalRef.__table__.outerjoin(Conversation.__table__, CV.id == XR.row_id))
                .where(XR.kind == "conversation", XR.ref.in_(sorted(conversation_refs))),
                ("ref", "id", "customer_id"),
            )
            self.conversations = {ref: (row_id, owner) for ref, row_id, owner in rows if row_id is not None}
            stale["conversation"] = [ref for ref, row_id, _owner in rows if row_id is None]
        if order_refs:
            rows = packed(
                self.conn,
                select(XR.ref, OT.id, OT.customer_id, OT.status)
                .select_from(ExternalRef.__table__.outerjoin(Order.__table__, OT.id == XR.row_id))
                .where(XR.kind == "order", XR.ref.in_(sorted(order_refs))),
                ("ref", "id", "customer_id", "status"),
            )
            self.orders = {ref: (row_id, owner, status) for ref, row_id, owner, status in rows if row_id is not None}
            stale["order"] = [ref for ref, row_id, _owner, _status in rows if row_id is None]
            short = sorted(ref for ref in order_refs if len(ref) <= 32 and ref not in self.orders)
            if short:
                self.taken_order_nos = set(
                    self.conn.execute(select(OT.order_no).where(OT.order_no.in_(short))).scalars()
                )
        for kind, refs in stale.items():
            if refs:
                self.conn.execute(delete(ExternalRef.__table__).where(XR.kind == kind, XR.ref.in_(sorted(refs))))

    # --- one record (no writes) ------------------------------------------------------------------
    def plan(self, record: _Record) -> None:
        customer_id, data, at = record.customer_id, record.data, record.at
        if record.kind in EVENT_KINDS:
            url = data.get("url")
            if record.kind == "search":
                url = f"/search?q={data['query']}"[:MAX_URL]
            elif record.kind == "login" and (customer_id not in self.last_login or self.last_login[customer_id] < at):
                self.last_login[customer_id] = at
            self.events.append(
                {
                    "customer_id": customer_id,
                    "kind": record.kind,
                    "product_id": None,
                    "sku": data.get("sku") if record.kind == "product_view" else None,
                    "url": url,
                    "occurred_at": at,
                    "api_key_id": self.key_id,
                }
            )
        elif record.kind in ("chat_message", "conversation"):
            self._plan_conversation(record)
        elif record.kind == "order":
            self._plan_order(record)
            self.with_orders.add(customer_id)
        self.touched.add(customer_id)
        if customer_id not in self.last_active or self.last_active[customer_id] < at:
            self.last_active[customer_id] = at
        self.ids.append(
            {
                "event_id": record.event_id,
                "kind": record.kind,
                "customer_id": customer_id,
                "api_key_id": self.key_id,
                "received_at": self.now,
            }
        )

    def _plan_conversation(self, record: _Record) -> None:
        data, ref = record.data, record.data["conversation_id"]
        changes = {k: data[k] for k in ("channel", "agent_name", "category", "rating", "summary") if data.get(k)}
        if record.kind == "conversation" and data["status"] == "ended":
            changes["ended_at"] = record.at
        if ref in self.conversations:
            row_id, owner = self.conversations[ref]
            if owner != record.customer_id:
                raise _Reject("conversation_of_another_customer", "conversation_id")
            if changes:
                self.conversation_changes.setdefault(row_id, {}).update(changes)
        elif ref in self.new_conversations:
            values = self.new_conversations[ref]
            if values["customer_id"] != record.customer_id:
                raise _Reject("conversation_of_another_customer", "conversation_id")
            values.update(changes)
        else:
            first_text = data.get("text") if record.kind == "chat_message" else None
            self.new_conversations[ref] = {
                "customer_id": record.customer_id,
                "channel": "web",
                "agent_name": None,
                "category": "inquiry",
                "rating": None,
                "started_at": record.at,
                "ended_at": None,
                "summary": first_text[:120] if first_text else None,
                "api_key_id": self.key_id,
                **changes,
            }
        if record.kind == "chat_message":
            self.messages.append(
                (
                    ref,
                    {
                        "sender": "customer" if data["direction"] == "in" else "agent",
                        "body": data["text"],
                        "sent_at": record.at,
                    },
                )
            )

    def _plan_order(self, record: _Record) -> None:
        data, ref, at = record.data, record.data["order_id"], record.at
        items = data["items"]
        amount = data["amount_cents"]
        if amount is None and items:
            amount = sum(item["price_cents"] * item["quantity"] for item in items)
        recipient = {k: v for k, v in (data.get("recipient") or {}).items() if v is not None}
        status = data["status"]
        if ref in self.orders:
            row_id, owner, current = self.orders[ref]
            if owner != record.customer_id:
                raise _Reject("order_of_another_customer", "order_id")
            changes = self.order_changes.setdefault(row_id, {})
            changes.update(status=status, **recipient)
            if status == "paid" and current != "paid" and "paid_at" not in changes:
                changes["paid_at"] = at
            if amount is not None:
                changes["amount_cents"] = amount
            self.orders[ref] = (row_id, owner, status)
            return
        if ref in self.new_orders:
            values = self.new_orders[ref]
            if values["customer_id"] != record.customer_id:
                raise _Reject("order_of_another_customer", "order_id")
            if status == "paid" and values["status"] != "paid" and values["paid_at"] is None:
                values["paid_at"] = at
            values.update(status=status, **recipient)
            if amount is not None:
                values["amount_cents"] = amount
            return
        if not items and amount is None:
            raise _Reject("required", "items")
        names = "、".join(item["name"] for item in items) or ref
        order_no = ref if len(ref) <= 32 and ref not in self.taken_order_nos else None
        self.new_orders[ref] = {
            "order_no": order_no or f"API{at:%Y%m%d}{secrets.token_hex(6)}",
            "customer_id": record.customer_id,
            "sku": items[0]["sku"] if len(items) == 1 else None,
            "product_name": names[:128],
            "quantity": sum(item["quantity"] for item in items) or 1,
            "amount_cents": amount or 0,
            "status": status,
            "created_at": at,
            "paid_at": at if status in ("paid", "refunded") else None,
            "api_key_id": self.key_id,
            "recipient_name": None,
            "recipient_phone": None,
            "shipping_address": None,
            **recipient,
        }
        if order_no:
            self.taken_order_nos.add(order_no)

    # --- the writes --------------------------------------------------------------------------------
    def _product_ids(self) -> None:
        missing = [sku for sku in self.wanted_products if sku not in self.products]
        if missing:
            rows = [
                {"sku": sku, "name": (name or sku)[:128], "category": "api", "price_cents": price or 0}
                for sku, (name, price) in ((sku, self.wanted_products[sku]) for sku in missing)
            ]
            ids = (
                self.conn.execute(insert(Product.__table__).returning(P.id, sort_by_parameter_order=True), rows)
                .scalars()
                .all()
            )
            self.products.update(zip(missing, ids, strict=True))

    def _insert_many(self, table, rows: list[dict]) -> None:
        """Many rows through the adapter's multi-row insert (few driver round trips)."""
        if not rows:
            return
        adapter = get_adapter(self.conn)
        moment, _day = adapter.bulk_value_formatters()
        # Each distinct time formatted once: most rows of a batch share a few (the batch's
        # own time for every received id, the senders' times for records sent together).
        formatted: dict[dt.datetime, object] = {}

        def convert(value):
            if not isinstance(value, dt.datetime):
                return value
            shown = formatted.get(value)
            if shown is None:
                shown = formatted[value] = moment(value)
            return shown

        columns = list(rows[0])
        values = [tuple(convert(row[c]) for c in columns) for row in rows]
        adapter.insert_rows(self.conn, table.name, columns, values)

    def _insert_returning(self, table, rows: list[dict]) -> list[int]:
        return get_adapter(self.conn).insert_rows_returning_ids(self.conn, table, rows)

    def _update_rows(self, table, changes: dict[int, dict]) -> None:
        """Rows changed by id: one UPDATE … FROM a VALUES list per set of changed columns
        (an order paid, a conversation ended: dozens per batch) rather than one statement each."""
        groups: dict[tuple[str, ...], list[tuple[int, dict]]] = defaultdict(list)
        for row_id, values in changes.items():
            if values:
                groups[tuple(sorted(values))].append((row_id, values))
        for columns, rows in groups.items():
            if len(rows) == 1:
                row_id, values = rows[0]
                self.conn.execute(update(table).where(table.c.id == row_id).values(**values))
                continue
            chunk = MAX_PARAMETERS // (len(columns) + 1)
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                params, tuples = [], []
                for n, (row_id, values) in enumerate(part):
                    params.append(bindparam(f"r{n}", row_id))
                    params += [bindparam(f"c{n}_{k}", values[c], type_=table.c[c].type) for k, c in enumerate(columns)]
                    tuples.append("(" + ", ".join([f":r{n}", *(f":c{n}_{k}" for k in range(len(columns)))]) + ")")
                names = ", ".join(f"v_{c}" for c in columns)
                # Plain names (conversation, customer_order and their columns): no quoting needed.
                quoted = table.name
                self.conn.execute(
                    text(
                        f"WITH v(v_row_id, {names}) AS (VALUES {', '.join(tuples)}) "
                        f"UPDATE {quoted} SET {', '.join(f'{c} = v.v_{c}' for c in columns)} "
                        f"FROM v WHERE {quoted}.id = v.v_row_id"
                    ).bindparams(*params)
                )

    def _lock_customers(self) -> None:
        """Where batches write at the same time (PostgreSQL, several workers), the customers'
        rows are locked first, in id order: the UPDATEs below take them in whatever order
        the plan visits them, and two batches naming the same customers deadlocked (one
        was refused with a 500). FOR NO KEY UPDATE, the lock those UPDATEs take anyway: it
        does not wait for (or block) another transaction's foreign-key checks on the rows
        (a rule's new tag assignment). SQLite has one writer at a time: nothing to do."""
        if get_adapter(self.conn).one_writer or not self.touched:
            return
        ids = sorted(self.touched)
        for start in range(0, len(ids), MAX_PARAMETERS):
            locking = select(C.id).where(C.id.in_(ids[start : start + MAX_PARAMETERS])).order_by(C.id)
            self.conn.execute(select(func.count()).select_from(locking.with_for_update(key_share=True).subquery()))

    def write(self, customers: dict) -> None:
        self._lock_customers()
        self._product_ids()
        if self.new_conversations:
            refs = list(self.new_conversations)
            ids = self._insert_returning(Conversation.__table__, [self.new_conversations[r] for r in refs])
            for ref, row_id in zip(refs, ids, strict=True):
                self.conversations[ref] = (row_id, self.new_conversations[ref]["customer_id"])
            self._insert_many(
                ExternalRef.__table__,
                [{"kind": "conversation", "ref": r, "row_id": i, "created_at": self.now} for r, i in zip(refs, ids)],
            )
        self._update_rows(Conversation.__table__, self.conversation_changes)
        if self.messages:
            self._insert_many(
                Message.__table__,
                [{"conversation_id": self.conversations[ref][0], **row} for ref, row in self.messages],
            )
        if self.new_orders:
            refs = list(self.new_orders)
            rows = []
            for ref in refs:
                values = dict(self.new_orders[ref])
                sku = values.pop("sku")
                values["product_id"] = self.products.get(sku) if sku else None
                rows.append(values)
            ids = self._insert_returning(Order.__table__, rows)
            self._insert_many(
                ExternalRef.__table__,
                [{"kind": "order", "ref": r, "row_id": i, "created_at": self.now} for r, i in zip(refs, ids)],
            )
        self._update_rows(Order.__table__, self.order_changes)
        if self.events:
            for event in self.events:
                sku = event.pop("sku")
                if sku:
                    event["product_id"] = self.products.get(sku)
            self._insert_many(BehaviorEvent.__table__, self.events)
        if self.ids:
            self._insert_many(IngestedEvent.__table__, self.ids)
        if self.with_orders:
            customer_orders.recompute_order_figures(self.session, self.with_orders)
        self._customers(customers)

    def _customers(self, customers: dict) -> None:
        """Last active (and last login) forward, the activity counter up.

        Last active is kept to the minute: a customer whose stored value is less than a
        minute older than the new activity only gets the counter (one row write instead of
        the six index entries that hold last active, and no report mark).
        """
        if not self.touched:
            return
        stored = {known[0]: (known[4], known[5]) for known in customers.values() if known is not None}
        moving, counting = [], []
        for customer_id in sorted(self.touched):
            at = self.last_active[customer_id]
            login = self.last_login.get(customer_id)
            last_active, last_login = stored.get(customer_id, (None, None))
            stale_active = last_active is None or as_utc(last_active) < at - LAST_ACTIVE_GRAIN
            stale_login = login is not None and (last_login is None or as_utc(last_login) < login - LAST_ACTIVE_GRAIN)
            if stale_active or stale_login:
                moving.append({"b_id": customer_id, "b_at": at, "b_login": login})
            else:
                counting.append({"b_id": customer_id})
        if moving:
            self._move_last_active(moving)
        if counting:
            # One statement for the lot (not one driver round trip per customer).
            self.conn.execute(
                update(Customer.__table__)
                .where(C.id.in_([row["b_id"] for row in counting]))
                .values(activity_seq=C.activity_seq + 1)
            )

    def _move_last_active(self, moving: list[dict]) -> None:
        """Last active (and last login) forward for these customers, the counter up: one
        statement per chunk, the new times in a VALUES list the UPDATE joins (UPDATE … FROM:
        SQLite 3.33+ and PostgreSQL; each customer row finds its values by key, where
        correlated sub-selects scanned the whole list four times per customer)."""
        chunk = MAX_PARAMETERS // 3
        kind = C.last_active_at.type
        for start in range(0, len(moving), chunk):
            part = moving[start : start + chunk]
            rows = ", ".join(
                f"(:i{n}, :a{n}, :l{n}, {1 if row['b_login'] is not None else 0})" for n, row in enumerate(part)
            )
            params = []
            for n, row in enumerate(part):
                params += [
                    bindparam(f"i{n}", row["b_id"]),
                    bindparam(f"a{n}", row["b_at"], type_=kind),
                    bindparam(f"l{n}", row["b_login"] or row["b_at"], type_=kind),
                ]
            self.conn.execute(
                text(
                    f"WITH v(v_id, v_at, v_login, v_has_login) AS (VALUES {rows}) "
                    "UPDATE customer SET "
                    "last_active_at = CASE WHEN customer.last_active_at < v.v_at "
                    "THEN v.v_at ELSE customer.last_active_at END, "
                    "last_login_at = CASE WHEN v.v_has_login = 0 THEN customer.last_login_at "
                    "WHEN customer.last_login_at IS NULL OR customer.last_login_at < v.v_login "
                    "THEN v.v_login ELSE customer.last_login_at END, "
                    "activity_seq = customer.activity_seq + 1 "
                    "FROM v WHERE customer.id = v.v_id"
                ).bindparams(*params)
            )


LAST_ACTIVE_GRAIN = dt.timedelta(minutes=1)
# Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's 65,535.
MAX_PARAMETERS = 30_000


def prune(now: dt.datetime | None = None) -> int:
    """Client event ids are remembered KEEP_IDS_DAYS: a record sent again later is taken again."""
    from sqlalchemy import delete

    edge = (now or utcnow()) - dt.timedelta(days=KEEP_IDS_DAYS)
    with get_engine().begin() as conn:
        return conn.execute(delete(IngestedEvent.__table__).where(IE.received_at < edge)).rowcount
