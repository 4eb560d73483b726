"""Pre-aggregated dashboard figures per local day, maintained incrementally.

Why. Every dashboard figure is an aggregate over a time range of 1M customers
and millions of orders / chats / events: 1.5–4.5 s when computed from the rows.
A cache keyed by a data generation was cold again after every edit. Here the
figures are kept per *local day* (in the configured zone) in ``report_daily``
and updated only for the customers that changed.

How it stays correct.
- Every figure is a sum over customers of what one customer contributes
  (``contributions``): its registration day per lifecycle / source / province,
  its (registration day, first purchase day) pair, its activity days, its paid
  orders per day and product, its conversations per day. Distinct counts over a
  range (active customers, buyers, buyers of a product) are sums too: each of a
  customer's distinct days is stored with the customer's *previous* day, and a
  customer counts for the range [d1, d2] once, on the first day in the range,
  i.e. on the row whose previous day is before d1. Repeat buyers: the first
  paid day also carries the day of the customer's second paid order.
- ``report_ledger`` keeps each customer's last contribution, so a change is
  applied as the difference between the old and the new contribution (upserts
  of +/- deltas). Archived, trashed and deleted customers contribute nothing.
- Database triggers (migration 0003_reports) put the id of any customer whose
  row, orders, conversations or events are inserted, deleted or changed into
  ``report_dirty`` — whoever writes (services, imports, merges, erasure,
  cleanup, the CLI, raw SQL, another worker). ``apply_pending`` takes the marks
  (DELETE … RETURNING, inside one write transaction, so a mark made meanwhile
  is never lost) and applies the differences.
- A change of the configured zone rebuilds everything (``build``); so does a
  database without aggregates (after migration / seed). Small databases are
  built at once; big ones as a job of the runner (services/platform/jobs.py, kind
  ``reports.aggregates_build``; 1M customers: see bench/reports.py, about a
  minute) while the dashboard says "being computed". Many pending changes are
  applied by a ``reports.aggregates_apply`` job, and the app's start runs a
  ``reports.aggregates_warmup`` job. A build interrupted by a restart resumes
  (its job takes its own claim over); an apply simply runs again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import marshal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from meiqia_app.db import get_engine, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import UTC, as_utc, local_zone, utcnow

log = logging.getLogger(__name__)

STATE_KEY = "reports.aggregates"
SYNC_BUILD_LIMIT = 20_000  # customers: build in the request below this, else in the background
SYNC_APPLY_LIMIT = 5_000  # dirty customers applied in the request (within SYNC_APPLY_SECONDS); more: background
SYNC_APPLY_SECONDS = 0.4
APPLY_BATCH = 200
LEDGER_BATCH = 20_000
HEARTBEAT_SECONDS = 10
STALE_BUILD_SECONDS = 120

# Kinds of rows in report_daily (day = local date ordinal; 0 means "none" in k2 / k3).
REG_LIFECYCLE = "rl"  # day registered, k1 lifecycle stage: n
REG_SOURCE = "rs"  # k1 source
REG_PROVINCE = "rp"  # k1 province
CONVERSION = "cv"  # day registered, k2 first purchase day
COHORT = "co"  # day = first day of the registration month, k2 = last active day
ACTIVITY = "ac"  # a day with an event / order / chat, k2 = previous such day
PAID = "or"  # paid day: n orders, s1 amount
BUYER = "by"  # a paid day, k2 previous paid day, k3 (first paid day only) day of the second paid order
CHATS = "ch"  # started day: n, s1 complaints, s2 rated, s3 rating sum
PRODUCT = "pr"  # paid day, k1 product: n orders, s1 quantity, s2 amount
PRODUCT_BUYER = "pb"  # paid day, k1 product, k2 previous day this customer paid for this product

Key = tuple[str, int, str, int, int]


# --- local days ------------------------------------------------------------------------


class DayOf:
    """Stored UTC timestamp (SQLite text or a datetime) -> local date ordinal, 0 for None.

    Memoised per UTC hour (a day boundary falls inside an hour only in zones
    with a fractional offset; those hours are converted one by one)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._hours: dict = {}

    def _hour(self, start: dt.datetime) -> int:
        first = start.astimezone(self.zone).date().toordinal()
        last = (
            (start + dt.timedelta(minutes=59, seconds=59, microseconds=999_999))
            .astimezone(self.zone)
            .date()
            .toordinal()
        )
        return first if first == last else -1

    def __call__(self, value) -> int:
        if value is None or value == "":
            return 0
        if isinstance(value, str):
            key = value[:13]
            hit = self._hours.get(key)
            if hit is None:
                hit = self._hour(
                    dt.datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), tzinfo=UTC)
                )
                self._hours[key] = hit
            if hit >= 0:
                return hit
            return as_utc(dt.datetime.fromisoformat(value)).astimezone(self.zone).date().toordinal()
        moment = as_utc(value)
        key = (moment.year, moment.month, moment.day, moment.hour)
        hit = self._hours.get(key)
        if hit is None:
            hit = self._hour(moment.replace(minute=0, second=0, microsecond=0))
            self._hours[key] = hit
        return hit if hit >= 0 else moment.astimezone(self.zone).date().toordinal()


# --- one customer's contribution ------------------------------------------------------------

CUSTOMER_SQL = (
    "SELECT id, status, registered_at, source, province, lifecycle_stage, first_purchase_at, last_active_at "
    "FROM customer"
)
ORDER_SQL = "SELECT customer_id, status, created_at, paid_at, amount_cents, quantity, product_name FROM customer_order"
CHAT_SQL = "SELECT customer_id, started_at, category, rating FROM conversation"
EVENT_SQL = "SELECT customer_id, occurred_at FROM behavior_event"


def contributions(customer, orders: list, chats: list, events: list, day_of: DayOf) -> dict[Key, list[int]]:
    """What one customer adds to report_daily (nothing unless it is in the working set)."""
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    if customer is None or customer[1] != "active":
        return {}
    _id, _status, registered, source, province, lifecycle, first_purchase, last_active = customer
    reg = day_of(registered)
    if reg:
        out[(REG_LIFECYCLE, reg, lifecycle or "", 0, 0)][0] += 1
        out[(REG_SOURCE, reg, source or "", 0, 0)][0] += 1
        out[(REG_PROVINCE, reg, province or "", 0, 0)][0] += 1
        out[(CONVERSION, reg, "", day_of(first_purchase), 0)][0] += 1
        month = dt.date.fromordinal(reg).replace(day=1).toordinal()
        out[(COHORT, month, "", day_of(last_active), 0)][0] += 1
    active_days = {day_of(e[1]) for e in events}
    active_days.update(day_of(o[2]) for o in orders)
    active_days.update(day_of(c[1]) for c in chats)
    previous = 0
    for day in sorted(active_days - {0}):
        out[(ACTIVITY, day, "", previous, 0)][0] += 1
        previous = day
    paid = sorted(
        (day_of(o[3]), str(o[6] or ""), int(o[5] or 0), int(o[4] or 0))
        for o in orders
        if o[1] == "paid" and o[3] is not None
    )
    product_days: dict[str, set[int]] = defaultdict(set)
    for day, product, quantity, amount in paid:
        row = out[(PAID, day, "", 0, 0)]
        row[0] += 1
        row[1] += amount
        row = out[(PRODUCT, day, product, 0, 0)]
        row[0] += 1
        row[1] += quantity
        row[2] += amount
        product_days[product].add(day)
    if paid:
        second = paid[1][0] if len(paid) > 1 else 0
        previous = 0
        for day in sorted({p[0] for p in paid}):
            out[(BUYER, day, "", previous, second if previous == 0 else 0)][0] += 1
            previous = day
        for product, days in product_days.items():
            previous = 0
            for day in sorted(days):
                out[(PRODUCT_BUYER, day, product, previous, 0)][0] += 1
                previous = day
    for _cid, started, category, rating in chats:
        row = out[(CHATS, day_of(started), "", 0, 0)]
        row[0] += 1
        row[1] += 1 if category == "complaint" else 0
        if rating is not None:
            row[2] += 1
            row[3] += int(rating)
    return dict(out)


def _encode(contribution: dict[Key, list[int]]) -> bytes:
    """(key, values) pairs in ``marshal`` format: ten times faster than JSON for a
    million customers. Only plain tuples / lists / str / int, written by this module."""
    return marshal.dumps(list(contribution.items()))


def _decode(data: bytes | None) -> dict[Key, list[int]]:
    if not data:
        return {}
    return {tuple(key): list(values) for key, values in marshal.loads(bytes(data))}


# --- state ---------------------------------------------------------------------------------


def _read_state(conn: Connection) -> dict:
    value = conn.execute(text("SELECT value FROM app_setting WHERE key = :k"), {"k": STATE_KEY}).scalar()
    try:
        return json.loads(value) if value else {}
    except ValueError:
        return {}


def _write_state(conn: Connection, state: dict) -> None:
    payload = json.dumps(state)
    updated = conn.execute(
        text("UPDATE app_setting SET value = :v, updated_at = :t WHERE key = :k"),
        {"v": payload, "t": utcnow(), "k": STATE_KEY},
    ).rowcount
    if not updated:
        conn.execute(
            text("INSERT INTO app_setting (key, value, updated_at, updated_by_name) VALUES (:k, :v, :t, '')"),
            {"k": STATE_KEY, "v": payload, "t": utcnow()},
        )


def state() -> dict:
    with get_engine().connect() as conn:
        return _read_state(conn)


def _is_ready(current: dict) -> bool:
    return current.get("status") == "ready" and current.get("zone") == str(local_zone())


def _build_running(current: dict) -> bool:
    if current.get("status") != "building" or current.get("zone") != str(local_zone()):
        return False
    try:
        beat = dt.datetime.fromisoformat(current.get("heartbeat", ""))
    except ValueError:
        return False
    return (utcnow() - beat).total_seconds() < STALE_BUILD_SECONDS


# --- upserts -------------------------------------------------------------------------------


def _upsert_many(conn: Connection, totals: dict[Key, list[int]]) -> None:
    """Add ``totals`` to report_daily through the driver's executemany (no per-row SQLAlchemy work)."""
    mark = get_adapter(conn).param_mark
    sql = (
        f"INSERT INTO report_daily (kind, day, k1, k2, k3, n, s1, s2, s3) VALUES ({', '.join([mark] * 9)}) "
        "ON CONFLICT (kind, day, k1, k2, k3) DO UPDATE SET n = report_daily.n + excluded.n, s1 = report_daily.s1 + excluded.s1, "
        "s2 = report_daily.s2 + excluded.s2, s3 = report_daily.s3 + excluded.s3"
    )
    rows = [(*key, *values) for key, values in totals.items() if any(values)]
    if rows:
        conn.exec_driver_sql(sql, rows)


def _insert_ledger(conn: Connection, rows: list[tuple[int, bytes]]) -> None:
    if rows:
        mark = get_adapter(conn).param_mark
        conn.exec_driver_sql(f"INSERT INTO report_ledger (customer_id, data) VALUES ({mark}, {mark})", rows)


# --- incremental apply -----------------------------------------------------------------------


def _grouped(conn: Connection, sql: str, ids: list[int], column: str = "customer_id") -> dict[int, list]:
    grouped: dict[int, list] = defaultdict(list)
    marks = ",".join(str(int(i)) for i in ids)
    for row in conn.exec_driver_sql(f"{sql} WHERE {column} IN ({marks})"):
        grouped[row[0]].append(tuple(row))
    return grouped


def _apply_batch(conn: Connection, day_of: DayOf, batch: int) -> int:
    """Take up to ``batch`` dirty marks and apply their customers' differences (in the caller's write transaction)."""
    get_adapter(conn).lock_row_for_update(conn, "app_setting", "key", STATE_KEY)
    ids = [
        int(r[0])
        for r in conn.execute(
            text(
                "DELETE FROM report_dirty WHERE customer_id IN (SELECT customer_id FROM report_dirty ORDER BY customer_id LIMIT :n) "
                "RETURNING customer_id"
            ),
            {"n": batch},
        )
    ]
    if not ids:
        return 0
    marks = ",".join(str(i) for i in ids)
    old = {
        int(cid): _decode(data)
        for cid, data in conn.exec_driver_sql(
            f"SELECT customer_id, data FROM report_ledger WHERE customer_id IN ({marks})"
        )
    }
    customers = {row[0]: tuple(row) for row in conn.exec_driver_sql(f"{CUSTOMER_SQL} WHERE id IN ({marks})")}
    orders = _grouped(conn, ORDER_SQL, ids)
    chats = _grouped(conn, CHAT_SQL, ids)
    events = _grouped(conn, EVENT_SQL, ids)
    delta: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    ledger = []
    for cid in ids:
        new = contributions(customers.get(cid), orders.get(cid, []), chats.get(cid, []), events.get(cid, []), day_of)
        before = old.get(cid, {})
        if new == before:
            continue
        for key, values in new.items():
            row = delta[key]
            for i in range(4):
                row[i] += values[i]
        for key, values in before.items():
            row = delta[key]
            for i in range(4):
                row[i] -= values[i]
        ledger.append((cid, new))
    _upsert_many(conn, delta)
    if ledger:
        _bump_applied()
        changed = ",".join(str(cid) for cid, _ in ledger)
        conn.exec_driver_sql(f"DELETE FROM report_ledger WHERE customer_id IN ({changed})")
        _insert_ledger(conn, [(cid, _encode(new)) for cid, new in ledger if new])
    return len(ids)


_applied_lock = threading.Lock()
applied_version = 0  # bumped whenever this process changes the aggregates (memo keys of segment totals)


def _bump_applied() -> None:
    global applied_version
    with _applied_lock:
        applied_version += 1


def pending_count(conn: Connection, cap: int = SYNC_APPLY_LIMIT + 1) -> int:
    return int(
        conn.execute(text("SELECT count(*) FROM (SELECT 1 FROM report_dirty LIMIT :n) AS d"), {"n": cap}).scalar_one()
    )


_day_of_by_zone: dict[str, DayOf] = {}


def apply_pending(max_customers: int | None = None, max_seconds: float | None = None) -> int:
    """Apply the dirty customers' differences, batch by batch (one write transaction each),
    until none is left (or ``max_customers`` / ``max_seconds`` is reached)."""
    zone = local_zone()
    day_of = _day_of_by_zone.setdefault(str(zone), DayOf(zone))  # its per-hour memo is kept
    done = 0
    started = time.perf_counter()
    while (max_customers is None or done < max_customers) and (
        max_seconds is None or time.perf_counter() - started < max_seconds
    ):
        with write_session() as session:
            conn = session.connection()
            if not _is_ready(_read_state(conn)):
                return done  # a (re)build is due or running: it reads everything anyway
            taken = _apply_batch(conn, day_of, APPLY_BATCH)
        if not taken:
            break
        done += taken
    return done


# --- full build --------------------------------------------------------------------------------


def _merge(streams: dict[str, Iterator]) -> Iterator[tuple[int, dict[str, list]]]:
    """Customer id -> rows of each stream; every stream is ordered by customer id."""
    heads: dict[str, tuple | None] = {name: next(it, None) for name, it in streams.items()}
    while True:
        present = [row[0] for row in heads.values() if row is not None]
        if not present:
            return
        cid = min(present)
        group: dict[str, list] = {}
        for name, it in streams.items():
            rows = []
            row = heads[name]
            while row is not None and row[0] == cid:
                rows.append(row)
                row = next(it, None)
            heads[name] = row
            group[name] = rows
        yield cid, group


def _cursor_rows(raw, sql: str) -> Iterator[tuple]:
    cursor = raw.cursor()
    cursor.execute(sql)
    while True:
        chunk = cursor.fetchmany(5000)
        if not chunk:
            break
        yield from chunk
    cursor.close()


def _claim_build(force: bool, token: str | None = None) -> dict | None:
    """Claim the (re)build; ``token`` names the claimer (a job resumed after a restart takes its own claim over)."""
    zone = str(local_zone())
    with write_session() as session:
        conn = session.connection()
        current = _read_state(conn)
        own = token is not None and current.get("status") == "building" and current.get("token") == token
        if not force and not own and (_is_ready(current) or _build_running(current)):
            return None
        claim = {
            "status": "building",
            "zone": zone,
            "started_at": utcnow().isoformat(),
            "heartbeat": utcnow().isoformat(),
            "token": token or f"{threading.get_ident()}-{time.monotonic()}",
        }
        _write_state(conn, claim)
        # Everything marked so far is read by this build; marks made from now on are applied after it.
        conn.execute(text("DELETE FROM report_dirty"))
        conn.execute(text("DELETE FROM report_daily"))
    return claim


def build(force: bool = False, progress=None, token: str | None = None) -> dict | None:
    """(Re)compute every aggregate from the rows; returns the final state (None if
    another build runs or they are current). Readers see "being computed" until it ends."""
    claim = _claim_build(force, token)
    if claim is None:
        return None
    started = time.perf_counter()
    zone = local_zone()
    day_of = DayOf(zone)
    totals: dict[Key, list[int]] = {}
    engine = get_engine()
    with write_session() as session:
        session.connection().execute(text("DELETE FROM report_ledger"))
    raw = engine.raw_connection()
    ledger: list[tuple[int, bytes]] = []
    customers = 0
    last_beat = time.monotonic()

    def flush_ledger() -> None:
        nonlocal last_beat
        if ledger:
            with write_session() as session:
                conn = session.connection()
                _insert_ledger(conn, ledger)
                if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                    _write_state(conn, {**claim, "heartbeat": utcnow().isoformat(), "customers_done": customers})
                    last_beat = time.monotonic()
            ledger.clear()

    try:
        get_adapter(engine).begin_snapshot(raw.cursor())  # one read snapshot for the four streams
        streams = {
            "customer": _cursor_rows(raw, f"{CUSTOMER_SQL} ORDER BY id"),
            "order": _cursor_rows(raw, f"{ORDER_SQL} ORDER BY customer_id"),
            "chat": _cursor_rows(raw, f"{CHAT_SQL} ORDER BY customer_id"),
            "event": _cursor_rows(raw, f"{EVENT_SQL} ORDER BY customer_id"),
        }
        totals_get = totals.get
        for cid, group in _merge(streams):
            customer = group["customer"][0] if group["customer"] else None
            contribution = contributions(customer, group["order"], group["chat"], group["event"], day_of)
            if not contribution:
                continue
            customers += 1
            for key, values in contribution.items():
                row = totals_get(key)
                if row is None:
                    totals[key] = list(values)
                else:
                    row[0] += values[0]
                    row[1] += values[1]
                    row[2] += values[2]
                    row[3] += values[3]
            ledger.append((cid, _encode(contribution)))
            if len(ledger) >= LEDGER_BATCH:
                flush_ledger()
                if progress:
                    progress(customers)
        flush_ledger()
    finally:
        try:
            raw.rollback()
        finally:
            raw.close()
    keys = list(totals)
    for index in range(0, len(keys), 100_000):
        with write_session() as session:
            _upsert_many(session.connection(), {key: totals[key] for key in keys[index : index + 100_000]})
    _bump_applied()
    final = {
        "status": "ready",
        "zone": str(zone),
        "built_at": utcnow().isoformat(),
        "build_seconds": round(time.perf_counter() - started, 1),
        "customers": customers,
        "rows": len(keys),
    }
    with write_session() as session:
        conn = session.connection()
        current = _read_state(conn)
        if current.get("token") != claim["token"]:
            return None  # a newer build took over (zone changed meanwhile)
        _write_state(conn, final)
    return final


# --- as jobs of the runner ----------------------------------------------------------------------

BUILD_JOB_KIND = "reports.aggregates_build"
APPLY_JOB_KIND = "reports.aggregates_apply"
WARMUP_JOB_KIND = "reports.aggregates_warmup"
_started_jobs: list[int] = []


def _build_worker(ctx: jobs.JobContext) -> dict:
    def progress(customers: int) -> None:
        ctx.progress(customers)

    final = build(progress=progress, token=f"job-{ctx.job_id}")
    if final is not None:
        ctx.progress(final["customers"])
    return {"built": final is not None, "customers": (final or {}).get("customers", 0)}


def _apply_worker(ctx: jobs.JobContext) -> dict:
    return {"applied": apply_pending()}


def _warmup_worker(ctx: jobs.JobContext) -> dict:
    ready, _behind = ensure_current()
    return {"ready": ready, "applied": apply_pending() if ready else 0}


def _in_background(kind: str) -> None:
    """Start the job unless one of its kind is queued or running (in any live worker)."""
    job_id, started = jobs.start_unless_active(SYSTEM_ACTOR, kind, {})
    if started:
        _started_jobs.append(job_id)
        del _started_jobs[:-20]


def wait_for_background(timeout: float = 60) -> None:
    """Tests and benchmarks: wait until the builds / applies this process started end."""
    deadline = time.monotonic() + timeout
    while True:
        pending = list(_started_jobs)
        jobs.wait(pending, max(0.0, deadline - time.monotonic()))
        if pending == list(_started_jobs) or time.monotonic() >= deadline:
            return  # (a warmup may have started a build meanwhile: wait for it too)


# --- what readers call ----------------------------------------------------------------------------


def ensure_current() -> tuple[bool, bool]:
    """(ready, behind): whether the aggregates can be read now, and whether
    changes are still being applied in the background (the figures are then
    slightly behind; the page asks again)."""
    with get_engine().connect() as conn:
        current = _read_state(conn)
        ready = _is_ready(current)
        if not ready:
            running = _build_running(current)
            customers = (
                0
                if running
                else int(
                    conn.execute(
                        text("SELECT count(*) FROM (SELECT 1 FROM customer LIMIT :n) AS c"), {"n": SYNC_BUILD_LIMIT + 1}
                    ).scalar_one()
                )
            )
        else:
            pending = pending_count(conn)
    if not ready:
        if running:
            return False, True
        if customers <= SYNC_BUILD_LIMIT:
            build()
            return _is_ready(state()), False
        _in_background(BUILD_JOB_KIND)
        return False, True
    if pending == 0:
        return True, False
    if pending <= SYNC_APPLY_LIMIT:
        # Usually a handful of customers (an edit, an order): a few ms. A bulk
        # change gets a time budget here; the rest is applied in the background
        # and the answer is flagged as behind (the page asks again).
        apply_pending(max_seconds=SYNC_APPLY_SECONDS)
        with get_engine().connect() as conn:
            if pending_count(conn, 1) == 0:
                return True, False
    _in_background(APPLY_JOB_KIND)
    return True, True


def start_build_in_background() -> None:
    """App start: build the aggregates if they are missing (never delays the start)."""
    _in_background(WARMUP_JOB_KIND)


def prune() -> int:
    """Nightly: drop rows whose figures went back to zero."""
    with write_session() as session:
        return (
            session.connection()
            .execute(text("DELETE FROM report_daily WHERE n = 0 AND s1 = 0 AND s2 = 0 AND s3 = 0"))
            .rowcount
        )


jobs.register_worker(BUILD_JOB_KIND, _build_worker)
jobs.register_worker(APPLY_JOB_KIND, _apply_worker)
jobs.register_worker(WARMUP_JOB_KIND, _warmup_worker)
