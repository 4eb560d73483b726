"""Dashboard and data reports (REP-1, REP-2): measures per period, trends,
segment comparison, cohorts, top products.

Periods are calendar ranges in the configured local zone (``timeutil.local_zone``,
Asia/Shanghai by default): a day starts at local midnight, a week on Monday, a
month on the 1st. Every period has a *previous* period of the same kind (the
day / week / month before; for a custom range the same number of days just
before it), and every measure is reported with its value in both and the change.
A period under way ends today and is compared with the same days of the one
before (on 7 December, "this month" is 1–7 December against 1–7 November);
days that have not happened are never counted or plotted.

Who counts: only customers whose status is ``active`` (archived and trashed
customers left the working set); orders, conversations and events count only
when their customer does.

Definitions (documented here because the numbers must be explainable):
- total customers: registered before the end of the period.
- new customers: registered within the period.
- active customers: customers of the working set that had a behaviour event,
  created an order or started a conversation within the period;
  active rate = active / total.
- conversion rate: of the customers registered within the period, the share
  whose first paid order (``first_purchase_at``) is before the period's end.
- repeat-purchase rate: of the customers with a paid order in the period
  (by ``paid_at``), the share that had at least two paid orders up to the
  period's end.
- satisfaction: the mean rating (1..5) of conversations started in the period
  that were rated; complaint share: conversations of category ``complaint`` /
  all conversations started in the period.
- lifecycle distribution and customers by source / region: today's snapshot of
  the working set, plus new customers per source / region in both periods.

Speed (bench/reports.py). The whole working set — the dashboard, the agent's
snapshot, the trend and /reports without a segment — is read from daily
aggregates (:mod:`report_aggregates`): figures per local day, kept up to date
per changed customer (database triggers mark customers whose rows changed; the
difference between their old and new contribution is applied before the
figures are read). An edit therefore costs the dashboard one customer's
update, not a recomputation of years of history. The first build (after
migration 0003_reports or a seed, or when the configured zone changes) runs in
the background at 1M customers; meanwhile ``dashboard`` answers with
``computing`` set and the page says the figures are being computed.

A segment (saved view or filter) is answered from the same per-customer
contributions (the ledger), summed over the customers matching the segment —
one pass for the comparison, cohorts and top products of a report. When the
aggregates cannot answer exactly (first build running, or many changes still
being applied in the background), the measures are computed from the rows
with the SQL below (covering indexes of migration 0002_reports): for a long
range the aggregate runs over all rows and the excluded customers' part is
subtracted; for a short range each row is joined to its customer. Those
results are kept in an in-process cache (:class:`_ReportCache`) keyed by the
function, its arguments, the database URL and the zone, and checked against a
data signature (a counter bumped by every committed customer change, told by
services/customers/changes.py; the customer-data generation, which tells other
workers; the highest ids; entries expire after ``CACHE_TTL_SECONDS``).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Connection, and_, case, distinct, func, select, union

from meiqia_app.db import get_engine
from meiqia_app.models import BehaviorEvent, Conversation, Customer, Order
from meiqia_app.models.customer import IN_TRASH, IN_WORKING_SET_INDEXES, LIFECYCLE_STAGES, SOURCES
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.platform import jobs
from meiqia_app.services.reports import aggregates
from meiqia_app.timeutil import as_utc, local_day_start_utc, local_zone, today_local, utcnow

C = Customer.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
EV = BehaviorEvent.__table__.c

PERIOD_KINDS = ("day", "week", "month", "custom")
GRANULARITIES = ("day", "week", "month")
MAX_CUSTOM_DAYS = 731
MAX_BUCKETS = 120
TREND_DEFAULT_BUCKETS = {"day": 30, "week": 12, "month": 12}
TOP_REGIONS = 10
COHORT_OFFSETS = (1, 3, 6)
CACHE_TTL_SECONDS = 300
CACHE_SIZE = 256


# --- periods -------------------------------------------------------------------------


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _month_end(day: dt.date) -> dt.date:
    return _add_months(_month_start(day), 1) - dt.timedelta(days=1)


def local_today(now: dt.datetime | None = None) -> dt.date:
    """The local calendar day of ``now`` (default: the clock)."""
    return today_local() if now is None else as_utc(now).astimezone(local_zone()).date()


@dataclasses.dataclass(frozen=True)
class Period:
    """Local calendar days ``first`` .. ``last`` (inclusive).

    A week, month or custom range that contains today ends today: days that
    have not happened are neither counted nor plotted. ``calendar_last`` then
    keeps the calendar period's last day, and the previous period is the same
    days of the period before (1–7 December against 1–7 November), so a period
    under way is compared like with like.
    """

    kind: str
    first: dt.date
    last: dt.date
    calendar_last: dt.date | None = None

    @property
    def to_date(self) -> bool:
        """Cut at today: the calendar period goes on after ``last``."""
        return self.calendar_last is not None and self.calendar_last > self.last

    @property
    def start_utc(self) -> dt.datetime:
        return local_day_start_utc(self.first)

    @property
    def end_utc(self) -> dt.datetime:
        """Exclusive: local midnight after the last day."""
        return local_day_start_utc(self.last + dt.timedelta(days=1))

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        if self.kind == "month":
            first = _add_months(self.first, -1)
            if self.to_date:
                # The same days of the month before (31 March to date: to the end of February).
                return Period("month", first, _add_months(self.last, -1))
            return Period("month", first, self.first - dt.timedelta(days=1))
        if self.kind == "week" and self.to_date:
            week = dt.timedelta(days=7)
            return Period("week", self.first - week, self.last - week)
        last = self.first - dt.timedelta(days=1)
        return Period(self.kind, last - dt.timedelta(days=self.days - 1), last)

    def label(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        if self.kind == "month" and self.first.day == 1 and self.last == _month_end(self.first):
            return self.first.strftime("%Y-%m")
        return f"{self.first.isoformat()} ~ {self.last.isoformat()}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "label": self.label(),
            "to_date": self.to_date,
        }


def _parse_day(value, field: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value or "").strip())
    except ValueError:
        raise ValidationError.single(field, "error.bad_date") from None


def make_period(
    kind: str,
    anchor: str | dt.date | None = None,
    end: str | dt.date | None = None,
    now: dt.datetime | None = None,
) -> Period:
    """The period of ``kind`` containing ``anchor`` (default today, local);
    for ``custom``, ``anchor`` .. ``end``. A period under way ends today
    (``now``, default the clock); one that has not begun is refused.
    Validates untrusted input."""
    if kind not in PERIOD_KINDS:
        raise ValidationError.single("period", "error.bad_choice")
    today = local_today(now)
    day = today if anchor in (None, "") else _parse_day(anchor, "anchor")
    if not dt.date(2000, 1, 1) <= day <= dt.date(2100, 1, 1):
        raise ValidationError.single("anchor", "error.bad_date")
    if kind == "day":
        first = last = day
    elif kind == "week":
        first = day - dt.timedelta(days=day.weekday())
        last = first + dt.timedelta(days=6)
    elif kind == "month":
        first, last = _month_start(day), _month_end(day)
    else:
        first = day
        last = _parse_day(end, "end") if end not in (None, "") else day
        if last < first:
            raise ValidationError.single("end", "report.error_range_order")
        if (last - first).days + 1 > MAX_CUSTOM_DAYS:
            raise ValidationError.single("end", "report.error_range_long", max=MAX_CUSTOM_DAYS)
    if first > today:
        raise ValidationError.single("anchor", "report.error_future")
    if last > today:
        return Period(kind, first, today, calendar_last=last)
    return Period(kind, first, last)


def bucket_starts(granularity: str, last_day: dt.date, count: int) -> list[dt.date]:
    """``count`` consecutive bucket start days, the last bucket containing ``last_day``."""
    if granularity not in GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    count = max(1, min(int(count), MAX_BUCKETS))
    if granularity == "day":
        return [last_day - dt.timedelta(days=i) for i in range(count - 1, -1, -1)]
    if granularity == "week":
        monday = last_day - dt.timedelta(days=last_day.weekday())
        return [monday - dt.timedelta(weeks=i) for i in range(count - 1, -1, -1)]
    first = _month_start(last_day)
    return [_add_months(first, -i) for i in range(count - 1, -1, -1)]


def _bucket_end(granularity: str, start: dt.date) -> dt.date:
    """Exclusive end day of the bucket starting at ``start``."""
    if granularity == "day":
        return start + dt.timedelta(days=1)
    if granularity == "week":
        return start + dt.timedelta(days=7)
    return _add_months(start, 1)


# --- cache -----------------------------------------------------------------------------

_version_lock = threading.Lock()
_write_version = 0


def _bump_version() -> None:
    global _write_version
    with _version_lock:
        _write_version += 1


def note_customer_change() -> None:
    """Customer data changed (told by services/customers/changes.py after the commit):
    every cached figure is recomputed at its next read (``allow_stale`` callers are
    given the old one meanwhile, while it is recomputed in the background)."""
    _bump_version()


class _ReportCache:
    """(name, args) -> (data signature, computed at, value); LRU-bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[tuple, float, object]] = OrderedDict()

    def get(self, key: tuple) -> tuple[tuple, float, object] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, signature: tuple, value: object) -> None:
        with self._lock:
            self._entries[key] = (signature, time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _ReportCache()


def invalidate_cache() -> None:
    """Drop every cached figure: the next read computes afresh, never served stale
    (after a change of who reaches which customer)."""
    _cache.clear()
    _bump_version()


def _data_signature(conn: Connection) -> tuple:
    maxima = conn.execute(
        select(
            select(func.max(C.id)).scalar_subquery(),
            select(func.max(OC.id)).scalar_subquery(),
            select(func.max(CV.id)).scalar_subquery(),
            select(func.max(EV.id)).scalar_subquery(),
        )
    ).one()
    # The customer-list generation changes with every customer write by any worker
    # (edits, merges, archiving), which the highest ids alone would not show.
    from meiqia_app.services.customers.listing import data_generation

    return (_write_version, data_generation(conn), *maxima)


def _compute_and_store(key: tuple, compute: Callable[[Connection], object]) -> object:
    outer = getattr(_local, "excluded", None)
    _local.excluded = None  # the archived / trashed ids are read afresh for each computation
    try:
        with get_engine().connect() as conn:
            signature = _data_signature(conn)
            value = compute(conn)
    finally:
        _local.excluded = outer
    _cache.put(key, signature, value)
    return value


def _refresh_in_background(key: tuple, compute: Callable[[Connection], object]) -> None:
    """Recompute a stale figure on a runner thread, one at a time per figure.

    The figure lives in this process's cache only, so it is no job row (a
    restart empties the cache: nothing to resume); a failure is logged with
    its traceback and the next request computes it in the foreground.
    """
    jobs.run_in_process(f"report-refresh:{key!r}", lambda: _compute_and_store(key, compute), f"report-{key[0]}")


def _cached(name: str, args: tuple, compute: Callable[[Connection], object], allow_stale: bool = False):
    """The cached value when the data have not changed; else recompute.

    With ``allow_stale`` (the dashboard page), a value computed before the last
    change is returned at once while a background thread recomputes it, so a
    busy system (a write every second) never makes a person wait for the cold
    aggregate; the page shows when the figures were computed.
    """
    # The database and the zone are part of what is asked (tests and a restore switch databases).
    key = (name, args, str(get_engine().url), str(local_zone()))
    entry = _cache.get(key)
    if entry is not None:
        stored_signature, stored_at, value = entry
        fresh = time.monotonic() - stored_at <= CACHE_TTL_SECONDS
        with get_engine().connect() as conn:
            current = _data_signature(conn)
        if fresh and stored_signature == current:
            return value
        if allow_stale:
            _refresh_in_background(key, compute)
            _stale_flag.served = True
            return value
    return _compute_and_store(key, compute)


_stale_flag = threading.local()


def take_served_stale() -> bool:
    """Whether this thread was given a stale figure (being recomputed) since the last call."""
    served = getattr(_stale_flag, "served", False)
    _stale_flag.served = False
    return served


# --- raw measures (no permission check; used by the public functions below) -------------

# With the literal condition of the (SQLite partial) working-set indexes: models/customer.py.
ACTIVE = and_(C.status == "active", IN_WORKING_SET_INDEXES)


def _count_customers(conn: Connection, *conditions) -> int:
    return conn.execute(select(func.count()).select_from(Customer.__table__).where(ACTIVE, *conditions)).scalar_one()


def _scoped_segment(actor: Actor, segment: ListQuery | None, action: str) -> ListQuery | None:
    """The segment under the matching rules of the actor's role (services/customers/query):
    a saved view's search finds for an analyst only what an analyst may match.

    A role with a narrower data scope than all has no "whole population": its
    reports without a segment are those of every active customer within its
    scope (the segment of the plain active list), computed from the rows or
    the per-customer ledger like any segment, never from the precomputed
    whole-population aggregates."""
    if segment is None and CustomerAccess(actor).scope != "all":
        segment = ListQuery()
    if segment is None:
        return None
    from meiqia_app.services.customers.listing import scoped_query

    return scoped_query(actor, segment, action=action)


def _segment_key(access: CustomerAccess, segment: ListQuery | None) -> str:
    """A segment's part of cache keys: its matching set and the actor's reach (access.set_key)."""
    if segment is None:
        return ""
    return f"{access.set_key(segment.status)}:{segment.signature()}"


def _segment_conditions(conn: Connection, access: CustomerAccess, segment: ListQuery | None) -> list:
    """Conditions on the customer table for a segment (always within the working set), within ``access``'s reach."""
    if segment is None:
        return []
    from meiqia_app.services.customers.listing import all_conditions

    return all_conditions(conn, access, segment)


EXCLUDED_CHUNK = 2000
EXCLUDED_LIMIT = 100_000  # above this many archived / trashed customers, join instead
_local = threading.local()
# Subtract the excluded customers' part only when the range holds many more
# rows than there are excluded customers; otherwise join each row to its customer.
_JOIN_FACTOR = 3


def _excluded_chunks(conn: Connection) -> list[list[int]] | None:
    """Ids of archived / trashed customers in chunks (None: too many, join instead).

    Read once per computation (kept in a thread-local that ``_compute_and_store``
    clears), through the status index.
    """
    cached = getattr(_local, "excluded", None)
    if cached is not None:
        return cached[0]
    # Archived and trashed customers sit in different (SQLite partial) indexes: read each through its own.
    ids = list(
        conn.execute(
            select(C.id).where(C.status == "archived", IN_WORKING_SET_INDEXES).limit(EXCLUDED_LIMIT + 1)
        ).scalars()
    )
    if len(ids) <= EXCLUDED_LIMIT:
        ids += conn.execute(select(C.id).where(IN_TRASH).limit(EXCLUDED_LIMIT + 1 - len(ids))).scalars()
        ids.sort()
    chunks = (
        None if len(ids) > EXCLUDED_LIMIT else [ids[i : i + EXCLUDED_CHUNK] for i in range(0, len(ids), EXCLUDED_CHUNK)]
    )
    _local.excluded = (chunks,)
    return chunks


def _combine(conn: Connection, statement, table, customer_column, seg: list) -> tuple[int, ...]:
    """Run an additive aggregate over the working set (optionally a segment).

    For a segment the rows are joined to their customer. For the whole working
    set (the dashboard) that join would cost one customer look-up per row, so
    the aggregate runs over every row through a covering index, and the part
    belonging to archived / trashed customers (a small set: their ids, in
    chunks, probe the per-customer indexes) is subtracted. Counts, sums and
    per-customer distinct counts are additive over disjoint sets of customers.
    """
    chunks = None if seg else _excluded_chunks(conn)
    if seg or chunks is None:
        joined = statement.select_from(table.join(Customer.__table__, C.id == customer_column)).where(ACTIVE, *seg)
        return tuple(int(v or 0) for v in conn.execute(joined).one())
    totals = [int(v or 0) for v in conn.execute(statement.select_from(table)).one()]
    if totals[0] <= _JOIN_FACTOR * sum(len(c) for c in chunks):
        # Few rows in the range (a short period): one customer look-up per row is cheaper.
        joined = statement.select_from(table.join(Customer.__table__, C.id == customer_column)).where(ACTIVE)
        return tuple(int(v or 0) for v in conn.execute(joined).one())
    for chunk in chunks:
        # Led by the customer ids (a join on the primary key), so the planner
        # probes the per-customer index instead of scanning the time range.
        part = conn.execute(
            statement.select_from(Customer.__table__.join(table, customer_column == C.id)).where(C.id.in_(chunk))
        ).one()
        totals = [t - int(v or 0) for t, v in zip(totals, part)]
    return tuple(totals)


def _active_customers(conn: Connection, start: dt.datetime, end: dt.datetime, seg: list) -> int:
    """Customers of the working set with an event, an order or a conversation in the range."""

    def ids(*conditions):
        return union(
            select(EV.customer_id).where(
                EV.occurred_at >= start, EV.occurred_at < end, *[c(EV.customer_id) for c in conditions]
            ),
            select(OC.customer_id).where(
                OC.created_at >= start, OC.created_at < end, *[c(OC.customer_id) for c in conditions]
            ),
            select(CV.customer_id).where(
                CV.started_at >= start, CV.started_at < end, *[c(CV.customer_id) for c in conditions]
            ),
        ).subquery()

    chunks = None if seg else _excluded_chunks(conn)
    if seg or chunks is None:
        every = ids()
        statement = (
            select(func.count())
            .select_from(every.join(Customer.__table__, C.id == every.c.customer_id))
            .where(ACTIVE, *seg)
        )
        return conn.execute(statement).scalar_one()
    total = conn.execute(select(func.count()).select_from(ids())).scalar_one()
    if total <= _JOIN_FACTOR * sum(len(c) for c in chunks):
        every = ids()
        return conn.execute(
            select(func.count()).select_from(every.join(Customer.__table__, C.id == every.c.customer_id)).where(ACTIVE)
        ).scalar_one()
    for chunk in chunks:
        total -= conn.execute(
            select(func.count()).select_from(ids(lambda column, chunk=chunk: column.in_(chunk)))
        ).scalar_one()
    return int(total)


def _paid_orders(conn: Connection, start: dt.datetime, end: dt.datetime, seg: list) -> tuple[int, int, int]:
    """(orders, amount in cents, distinct buyers) of paid orders paid within the range."""
    statement = select(
        func.count(), func.coalesce(func.sum(OC.amount_cents), 0), func.count(distinct(OC.customer_id))
    ).where(OC.status == "paid", OC.paid_at >= start, OC.paid_at < end)
    orders, amount, buyers = _combine(conn, statement, Order.__table__, OC.customer_id, seg)
    return orders, amount, buyers


def _repeat_buyers(conn: Connection, start: dt.datetime, end: dt.datetime, seg: list) -> tuple[int, int]:
    """(buyers in the range, of whom with >= 2 paid orders up to the range's end)."""
    O2 = Order.__table__.alias("o2")

    def count_for(buyers_from, *conditions) -> tuple[int, int]:
        buyers = (
            select(OC.customer_id.label("cid"))
            .select_from(buyers_from)
            .where(OC.status == "paid", OC.paid_at >= start, OC.paid_at < end, *conditions)
            .group_by(OC.customer_id)
            .subquery()
        )
        paid_before_end = (
            select(func.count())
            .select_from(O2)
            .where(O2.c.customer_id == buyers.c.cid, O2.c.status == "paid", O2.c.paid_at < end)
            .scalar_subquery()
        )
        total, repeat = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((paid_before_end >= 2, 1), else_=0)), 0)).select_from(
                buyers
            )
        ).one()
        return int(total), int(repeat)

    chunks = None if seg else _excluded_chunks(conn)
    if seg or chunks is None:
        return count_for(Customer.__table__.join(Order.__table__, OC.customer_id == C.id), ACTIVE, *seg)
    total, repeat = count_for(Order.__table__)
    if total <= _JOIN_FACTOR * sum(len(c) for c in chunks):
        return count_for(Customer.__table__.join(Order.__table__, OC.customer_id == C.id), ACTIVE)
    for chunk in chunks:
        excluded_total, excluded_repeat = count_for(
            Customer.__table__.join(Order.__table__, OC.customer_id == C.id), C.id.in_(chunk)
        )
        total, repeat = total - excluded_total, repeat - excluded_repeat
    return total, repeat


def _conversations(conn: Connection, start: dt.datetime, end: dt.datetime, seg: list) -> tuple[int, int, int, int]:
    """(conversations, complaints, rated, sum of ratings) started within the range."""
    statement = select(
        func.count(),
        func.coalesce(func.sum(case((CV.category == "complaint", 1), else_=0)), 0),
        func.count(CV.rating),
        func.coalesce(func.sum(CV.rating), 0),
    ).where(CV.started_at >= start, CV.started_at < end)
    return _combine(conn, statement, Conversation.__table__, CV.customer_id, seg)


def _conversion(conn: Connection, start: dt.datetime, end: dt.datetime, seg: list) -> tuple[int, int]:
    """(registered in the range, of whom purchased before its end)."""
    statement = (
        select(
            func.count(),
            func.coalesce(
                func.sum(case((and_(C.first_purchase_at.is_not(None), C.first_purchase_at < end), 1), else_=0)), 0
            ),
        )
        .select_from(Customer.__table__)
        .where(ACTIVE, C.registered_at >= start, C.registered_at < end, *seg)
    )
    registered, purchased = conn.execute(statement).one()
    return int(registered), int(purchased)


def _group_counts(conn: Connection, column, *conditions) -> dict[str, int]:
    statement = select(column, func.count()).select_from(Customer.__table__).where(ACTIVE, *conditions).group_by(column)
    return {str(key or ""): int(n) for key, n in conn.execute(statement).all()}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# --- DTOs ------------------------------------------------------------------------------


@dataclasses.dataclass
class Measure:
    key: str  # message key of the label, e.g. "dash.total_customers"
    kind: str  # count | rate | money | score
    value: float | None
    previous: float | None

    @property
    def change(self) -> float | None:
        """Relative change for counts and money; percentage points for rates; absolute for scores."""
        if self.value is None or self.previous is None:
            return None
        if self.kind == "rate":
            return (self.value - self.previous) * 100
        if self.kind == "score":
            return self.value - self.previous
        if not self.previous:
            return None
        return (self.value - self.previous) / self.previous

    @property
    def better(self) -> str | None:
        """Which way is good news: "up", "down", or None when neither is."""
        return BETTER_DIRECTION.get(self.key, "up")


# Which way each measure should move (default "up"). Fewer complaints are good
# news; more inquiries are more work or more interest, so neither way is.
BETTER_DIRECTION: dict[str, str | None] = {"complaint_share": "down", "complaints": "down", "conversations": None}


def period_measures(conn: Connection, period: Period, seg: list) -> dict[str, float | None]:
    """Every headline figure for one period (raw numbers; cents for money)."""
    start, end = period.start_utc, period.end_utc
    if seg:
        total = _count_customers(conn, C.registered_at < end, *seg)
    else:
        # Today's working set (cached apart, shared with the breakdowns) minus
        # those registered after the period: a short index range for recent periods.
        working_set = sum(_snapshot_totals(conn, C.lifecycle_stage).values())
        total = working_set - _count_customers(conn, C.registered_at >= end)
    new = _count_customers(conn, C.registered_at >= start, C.registered_at < end, *seg)
    active = _active_customers(conn, start, end, seg)
    registered, purchased = _conversion(conn, start, end, seg)
    orders, amount, buyers = _paid_orders(conn, start, end, seg)
    buyer_count, repeat = _repeat_buyers(conn, start, end, seg)
    conversations, complaints, rated, rating_sum = _conversations(conn, start, end, seg)
    return {
        "total_customers": total,
        "new_customers": new,
        "active_customers": active,
        "active_rate": _ratio(active, total),
        "conversion_rate": _ratio(purchased, registered),
        "registered": registered,
        "converted": purchased,
        "orders": orders,
        "amount_cents": amount,
        "buyers": buyers,
        "repeat_buyers": repeat,
        "repeat_rate": _ratio(repeat, buyer_count),
        "conversations": conversations,
        "complaints": complaints,
        "complaint_share": _ratio(complaints, conversations),
        "satisfaction": (rating_sum / rated) if rated else None,
    }


DASHBOARD_MEASURES: tuple[tuple[str, str], ...] = (
    ("total_customers", "count"),
    ("new_customers", "count"),
    ("active_rate", "rate"),
    ("conversion_rate", "rate"),
    ("repeat_rate", "rate"),
    ("satisfaction", "score"),
    ("complaint_share", "rate"),
    ("orders", "count"),
    ("amount_cents", "money"),
)

COMPARISON_MEASURES: tuple[tuple[str, str], ...] = (
    ("orders", "count"),
    ("amount_cents", "money"),
    ("buyers", "count"),
    ("conversations", "count"),
    ("new_customers", "count"),
    ("conversion_rate", "rate"),
    ("active_rate", "rate"),
    ("repeat_rate", "rate"),
    ("satisfaction", "score"),
    ("complaint_share", "rate"),
)


@dataclasses.dataclass
class Breakdown:
    key: str  # source code / province / lifecycle stage
    total: int  # snapshot: customers in the working set now
    new: int  # registered within the period
    new_previous: int


@dataclasses.dataclass
class Dashboard:
    period: dict
    previous: dict
    measures: list[Measure]
    lifecycle: list[Breakdown]
    sources: list[Breakdown]
    regions: list[Breakdown]
    raw: dict
    raw_previous: dict
    computed_at: str = ""
    computing: bool = False  # the aggregates are being built: no figures yet


def _snapshot_totals(conn: Connection, column) -> dict[str, int]:
    """Today's working set per group: the same for every period, so cached on its own."""
    return _cached(f"totals:{column.name}", (), lambda c: _group_counts(c, column))


def _breakdowns(
    conn: Connection, column, period: Period, keys: tuple[str, ...] | None, limit: int | None
) -> list[Breakdown]:
    previous = period.previous()
    totals = _snapshot_totals(conn, column)
    new = _group_counts(conn, column, C.registered_at >= period.start_utc, C.registered_at < period.end_utc)
    new_prev = _group_counts(conn, column, C.registered_at >= previous.start_utc, C.registered_at < previous.end_utc)
    return _breakdown_list(totals, new, new_prev, keys, limit)


def _aggregate_breakdowns(
    conn: Connection, column, period: Period, keys: tuple[str, ...] | None, limit: int | None
) -> list[Breakdown]:
    previous = period.previous()
    return _breakdown_list(
        aggregates.group_counts(conn, column.name),
        aggregates.group_counts(conn, column.name, period.first, period.last),
        aggregates.group_counts(conn, column.name, previous.first, previous.last),
        keys,
        limit,
    )


def _breakdown_list(
    totals: dict[str, int],
    new: dict[str, int],
    new_prev: dict[str, int],
    keys: tuple[str, ...] | None,
    limit: int | None,
) -> list[Breakdown]:
    if keys is None:
        ordered = sorted(totals, key=lambda k: (-totals[k], k))
        if limit is not None and len(ordered) > limit:
            head = ordered[:limit]
            rest = ordered[limit:]
            rows = [Breakdown(k, totals[k], new.get(k, 0), new_prev.get(k, 0)) for k in head]
            rows.append(
                Breakdown(
                    "__other__",
                    sum(totals[k] for k in rest),
                    sum(new.get(k, 0) for k in rest),
                    sum(new_prev.get(k, 0) for k in rest),
                )
            )
            return rows
        keys = tuple(ordered)
    return [Breakdown(k, totals.get(k, 0), new.get(k, 0), new_prev.get(k, 0)) for k in keys]


def _aggregate_measures(
    conn: Connection, period: Period, segment_totals: aggregates.SegmentTotals | None = None
) -> dict[str, float | None]:
    """period_measures for the whole working set (the daily aggregates) or a
    segment (its customers' contributions summed, ``segment_totals``)."""
    if segment_totals is not None:
        m = segment_totals.measures(period.first, period.last)
    else:
        m = aggregates.measures(conn, period.first, period.last)
    return {
        "total_customers": m["total"],
        "new_customers": m["new"],
        "active_customers": m["active"],
        "active_rate": _ratio(m["active"], m["total"]),
        "conversion_rate": _ratio(m["converted"], m["registered"]),
        "registered": m["registered"],
        "converted": m["converted"],
        "orders": m["orders"],
        "amount_cents": m["amount"],
        "buyers": m["buyers"],
        "repeat_buyers": m["repeat"],
        "repeat_rate": _ratio(m["repeat"], m["buyers"]),
        "conversations": m["conversations"],
        "complaints": m["complaints"],
        "complaint_share": _ratio(m["complaints"], m["conversations"]),
        "satisfaction": (m["rating_sum"] / m["rated"]) if m["rated"] else None,
    }


SEGMENT_MEMO_SECONDS = 30
SEGMENT_LEDGER_MAX = 50_000  # customers (~150 µs each); bigger segments are computed from the rows (8-14 s at 1M)
_segment_memo: OrderedDict[tuple, tuple[float, aggregates.SegmentTotals | None]] = OrderedDict()
_segment_memo_lock = threading.Lock()


def _ledger_usable(segment: ListQuery | None) -> bool:
    """Whether a segment can be answered from the ledger now: the aggregates are
    built and every change is applied (called BEFORE opening the connection that
    reads them, so its snapshot includes what this call applied)."""
    if segment is None:
        return False
    ready, behind = aggregates.ensure_current()
    return ready and not behind


def _segment_totals(
    conn: Connection, access: CustomerAccess, segment: ListQuery | None, usable: bool
) -> aggregates.SegmentTotals | None:
    """A segment's figures from the ledger of its customers (one pass serves the
    comparison, the cohorts and the top products of a report), or None when the
    aggregates cannot answer exactly right now (first build, or many changes
    still being applied): the callers then compute from the rows."""
    if segment is None or not usable:
        return None
    # Kept for a few seconds (a report asks three times) and while nothing changed.
    key = (
        str(get_engine().url),
        str(local_zone()),
        _segment_key(access, segment),
        _data_signature(conn),
        aggregates.applied_version,
    )
    with _segment_memo_lock:
        found = _segment_memo.get(key)
    if found is not None and time.monotonic() - found[0] <= SEGMENT_MEMO_SECONDS:
        return found[1]
    ids = select(C.id).where(ACTIVE, *_segment_conditions(conn, access, segment))
    # Summing the ledger costs per customer of the segment (~35 figures each);
    # the SQL over the rows costs per row in the periods whatever the segment's
    # size. Small segments (a city, a tag, a saved view) take the ledger.
    size = conn.execute(select(func.count()).select_from(ids.limit(SEGMENT_LEDGER_MAX + 1).subquery())).scalar_one()
    totals = aggregates.SegmentTotals.load(conn, ids) if size <= SEGMENT_LEDGER_MAX else None
    with _segment_memo_lock:
        _segment_memo[key] = (time.monotonic(), totals)
        while len(_segment_memo) > 4:
            _segment_memo.popitem(last=False)
    return totals


def _aggregates_ready() -> bool:
    """Whether the daily aggregates can answer now (building them first when small;
    flags the answer as behind when many changes are still being applied)."""
    ready, behind = aggregates.ensure_current()
    if behind:
        _stale_flag.served = True
    return ready


def dashboard(actor: Actor, period: Period, allow_stale: bool = False) -> Dashboard:
    """Everything the dashboard shows for ``period`` and the one before it.

    Read from the daily aggregates (services/reports/aggregates.py), brought up
    to date first with the customers changed since; while they are first being
    built the answer has ``computing`` set and no figures. ``allow_stale`` is
    kept for callers; the answer is never older than the last applied change.
    """
    require(actor, "report.view", action="report.dashboard")
    if CustomerAccess(actor).scope != "all":
        # The dashboard is read from the whole-population aggregates only: not for a narrower scope.
        refuse(actor, "report.dashboard", "report.scope_all_only")
    previous = period.previous()
    if not _aggregates_ready():
        empty = dict.fromkeys(
            (
                "total_customers",
                "new_customers",
                "active_customers",
                "registered",
                "converted",
                "orders",
                "amount_cents",
                "buyers",
                "repeat_buyers",
                "conversations",
                "complaints",
            ),
            0,
        )
        empty.update(active_rate=None, conversion_rate=None, repeat_rate=None, complaint_share=None, satisfaction=None)
        return Dashboard(
            period=period.to_dict(),
            previous=previous.to_dict(),
            measures=[Measure(k, kind, None, None) for k, kind in DASHBOARD_MEASURES],
            lifecycle=[],
            sources=[],
            regions=[],
            raw=dict(empty),
            raw_previous=dict(empty),
            computed_at="",
            computing=True,
        )
    with get_engine().connect() as conn:
        current = _aggregate_measures(conn, period)
        before = _aggregate_measures(conn, previous)
        return Dashboard(
            period=period.to_dict(),
            previous=previous.to_dict(),
            measures=[Measure(k, kind, current[k], before[k]) for k, kind in DASHBOARD_MEASURES],
            lifecycle=_aggregate_breakdowns(conn, C.lifecycle_stage, period, LIFECYCLE_STAGES, None),
            sources=_aggregate_breakdowns(conn, C.source, period, SOURCES, None),
            regions=_aggregate_breakdowns(conn, C.province, period, None, TOP_REGIONS),
            raw=current,
            raw_previous=before,
            computed_at=utcnow().isoformat(),
        )


def warm_cache() -> None:
    """Nightly (scheduler task ``reports_warmup``, just after local midnight):
    apply pending changes and drop aggregate rows that went back to zero.
    (Also builds the aggregates when they are missing.)"""
    ready, _behind = aggregates.ensure_current()
    if ready:
        aggregates.apply_pending()
        aggregates.prune()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The few figures an agent sees on the dashboard (customer.view is enough)."""

    total_customers: int
    new_today: int
    new_this_month: int


def agent_snapshot(actor: Actor) -> Snapshot:
    require(actor, "customer.view", action="report.snapshot")
    today = today_local()
    access = CustomerAccess(actor)
    scope = access.scope_conditions()

    if not scope and _aggregates_ready():
        with get_engine().connect() as conn:
            total = sum(aggregates.group_counts(conn, "lifecycle_stage").values())
            month = aggregates.measures(conn, _month_start(today), today)
            day = aggregates.measures(conn, today, today)
        return Snapshot(total_customers=total, new_today=day["new"], new_this_month=month["new"])

    def compute(conn: Connection) -> Snapshot:
        day = make_period("day", today)
        month = make_period("month", today)
        return Snapshot(
            total_customers=_count_customers(conn, *scope),
            new_today=_count_customers(conn, C.registered_at >= day.start_utc, C.registered_at < day.end_utc, *scope),
            new_this_month=_count_customers(
                conn, C.registered_at >= month.start_utc, C.registered_at < month.end_utc, *scope
            ),
        )

    return _cached("snapshot", (today, access.scope_key()), compute, allow_stale=True)


# --- trends ------------------------------------------------------------------------------


@dataclasses.dataclass
class TrendPoint:
    start: str  # first local day of the bucket (ISO)
    label: str
    new_customers: int
    orders: int
    amount_cents: int
    conversations: int
    partial: bool = False  # the bucket (a week or month) is under way: only the days up to today


def trend(
    actor: Actor,
    granularity: str,
    last_day: dt.date | str | None = None,
    count: int | None = None,
    segment: ListQuery | None = None,
    allow_stale: bool = False,
    now: dt.datetime | None = None,
) -> list[TrendPoint]:
    """New customers, paid orders, amount and conversations per local bucket; empty buckets are 0.

    The buckets end at ``last_day`` or today (``now``), whichever is earlier:
    days that have not happened are not plotted. A week or month under way is
    flagged ``partial``."""
    require(actor, "report.view", action="report.trend")
    segment = _scoped_segment(actor, segment, "report.trend")
    access = CustomerAccess(actor)
    if granularity not in GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    today = local_today(now)
    day = today if last_day in (None, "") else min(_parse_day(last_day, "last_day"), today)
    count = TREND_DEFAULT_BUCKETS[granularity] if count is None else count
    starts = bucket_starts(granularity, day, count)

    def under_way(start_day: dt.date) -> bool:
        return _bucket_end(granularity, start_day) > today + dt.timedelta(days=1)

    if segment is None and _aggregates_ready():
        with get_engine().connect() as conn:
            per_day = aggregates.daily(conn, starts[0], _bucket_end(granularity, starts[-1]) - dt.timedelta(days=1))
        points = []
        for start_day in starts:
            sums = [0, 0, 0, 0]
            first, end = start_day.toordinal(), _bucket_end(granularity, start_day).toordinal()
            for ordinal in range(first, end):
                values = per_day.get(ordinal)
                if values:
                    sums = [a + b for a, b in zip(sums, values)]
            label = start_day.strftime("%Y-%m") if granularity == "month" else start_day.strftime("%m-%d")
            points.append(TrendPoint(start_day.isoformat(), label, *sums, partial=under_way(start_day)))
        return points

    def compute(conn: Connection) -> list[TrendPoint]:
        seg = _segment_conditions(conn, access, segment)
        bounds = [local_day_start_utc(day) for day in starts] + [
            local_day_start_utc(_bucket_end(granularity, starts[-1]))
        ]
        chunks = None if seg else _excluded_chunks(conn)
        # Whole working set: per bucket the covered range aggregate, minus the
        # archived / trashed customers' rows, read once for the whole range and
        # bucketed here (they are few).
        excluded_orders: list[tuple[dt.datetime, int]] = []
        excluded_chats: list[dt.datetime] = []
        for chunk in chunks or []:
            excluded_orders += [
                (as_utc(paid), int(amount))
                for paid, amount in conn.execute(
                    select(OC.paid_at, OC.amount_cents)
                    .select_from(Customer.__table__.join(Order.__table__, OC.customer_id == C.id))
                    .where(C.id.in_(chunk), OC.status == "paid", OC.paid_at >= bounds[0], OC.paid_at < bounds[-1])
                )
            ]
            excluded_chats += [
                as_utc(started)
                for (started,) in conn.execute(
                    select(CV.started_at)
                    .select_from(Customer.__table__.join(Conversation.__table__, CV.customer_id == C.id))
                    .where(C.id.in_(chunk), CV.started_at >= bounds[0], CV.started_at < bounds[-1])
                )
            ]
        points = []
        for index, start_day in enumerate(starts):
            start, end = bounds[index], bounds[index + 1]
            new = _count_customers(conn, C.registered_at >= start, C.registered_at < end, *seg)
            order_totals = select(func.count(), func.coalesce(func.sum(OC.amount_cents), 0)).where(
                OC.status == "paid", OC.paid_at >= start, OC.paid_at < end
            )
            chat_totals = select(func.count()).where(CV.started_at >= start, CV.started_at < end)
            if seg or chunks is None:
                orders, amount = _combine(conn, order_totals, Order.__table__, OC.customer_id, seg)
                (chats,) = _combine(conn, chat_totals, Conversation.__table__, CV.customer_id, seg)
            else:
                orders, amount = (int(v or 0) for v in conn.execute(order_totals.select_from(Order.__table__)).one())
                chats = int(conn.execute(chat_totals.select_from(Conversation.__table__)).scalar_one())
                mine = [a for paid, a in excluded_orders if start <= paid < end]
                orders, amount = orders - len(mine), amount - sum(mine)
                chats -= sum(1 for started in excluded_chats if start <= started < end)
            label = start_day.strftime("%Y-%m") if granularity == "month" else start_day.strftime("%m-%d")
            points.append(
                TrendPoint(start_day.isoformat(), label, new, orders, amount, int(chats), partial=under_way(start_day))
            )
        return points

    signature = _segment_key(access, segment)
    return _cached("trend", (granularity, starts[0], len(starts), signature, today), compute, allow_stale)


# --- segment reports -----------------------------------------------------------------------


@dataclasses.dataclass
class Comparison:
    period_a: dict
    period_b: dict
    measures: list[Measure]  # value = period B ("after"), previous = period A ("before")
    raw_a: dict
    raw_b: dict


def compare_periods(actor: Actor, segment: ListQuery | None, period_a: Period, period_b: Period) -> Comparison:
    """The same measures for a segment in two periods, e.g. before / after a campaign."""
    require(actor, "report.view", action="report.compare")
    segment = _scoped_segment(actor, segment, "report.compare")
    access = CustomerAccess(actor)
    whole = segment is None and _aggregates_ready()
    usable = _ledger_usable(segment)

    def compute(conn: Connection) -> Comparison:
        totals = None if whole else _segment_totals(conn, access, segment, usable)
        if whole or totals is not None:
            a, b = _aggregate_measures(conn, period_a, totals), _aggregate_measures(conn, period_b, totals)
        else:
            seg = _segment_conditions(conn, access, segment)
            a = period_measures(conn, period_a, seg)
            b = period_measures(conn, period_b, seg)
        return Comparison(
            period_a=period_a.to_dict(),
            period_b=period_b.to_dict(),
            measures=[Measure(k, kind, b[k], a[k]) for k, kind in COMPARISON_MEASURES],
            raw_a=a,
            raw_b=b,
        )

    if whole:
        with get_engine().connect() as conn:
            return compute(conn)
    signature = _segment_key(access, segment)
    return _cached("compare", (signature, period_a, period_b), compute)


@dataclasses.dataclass
class CohortRow:
    month: str  # YYYY-MM of registration
    size: int
    retained: list[int | None]  # per COHORT_OFFSETS; None while that month has not ended

    def rates(self) -> list[float | None]:
        return [None if n is None or not self.size else n / self.size for n in self.retained]


def cohorts(
    actor: Actor,
    months: int = 12,
    last_month: dt.date | str | None = None,
    segment: ListQuery | None = None,
    now: dt.datetime | None = None,
) -> list[CohortRow]:
    """Customers registered in month M and still active (last activity on or
    after the start of month M+k) for k in COHORT_OFFSETS.

    A figure is given only once month M+k has ended (``now``, default the
    clock): before that the window is incomplete and the figure is None."""
    require(actor, "report.view", action="report.cohorts")
    segment = _scoped_segment(actor, segment, "report.cohorts")
    access = CustomerAccess(actor)
    months = max(1, min(int(months), 36))
    now = as_utc(now) if now is not None else utcnow()
    anchor = local_today(now) if last_month in (None, "") else _parse_day(last_month, "last_month")
    firsts = [_add_months(_month_start(anchor), -i) for i in range(months - 1, -1, -1)]

    def complete(first: dt.date) -> list[bool]:
        return [local_day_start_utc(_add_months(first, k + 1)) <= now for k in COHORT_OFFSETS]

    if segment is None and _aggregates_ready():
        rows = []
        with get_engine().connect() as conn:
            for first in firsts:
                boundaries = [_add_months(first, k) for k in COHORT_OFFSETS]
                size, retained = aggregates.cohort(conn, first, boundaries)
                opened = complete(first)
                rows.append(
                    CohortRow(
                        first.strftime("%Y-%m"), size, [n if is_open else None for n, is_open in zip(retained, opened)]
                    )
                )
        return rows

    usable = _ledger_usable(segment)

    def compute(conn: Connection) -> list[CohortRow]:
        totals = _segment_totals(conn, access, segment, usable)
        if totals is not None:
            rows = []
            for first in firsts:
                boundaries = [_add_months(first, k) for k in COHORT_OFFSETS]
                size, retained = totals.cohort(first, boundaries)
                opened = complete(first)
                rows.append(
                    CohortRow(
                        first.strftime("%Y-%m"), size, [n if is_open else None for n, is_open in zip(retained, opened)]
                    )
                )
            return rows
        seg = _segment_conditions(conn, access, segment)
        rows = []
        for first in firsts:
            start = local_day_start_utc(first)
            end = local_day_start_utc(_add_months(first, 1))
            columns = [func.count()]
            offsets_open = complete(first)
            for k in COHORT_OFFSETS:
                boundary = local_day_start_utc(_add_months(first, k))
                columns.append(func.coalesce(func.sum(case((C.last_active_at >= boundary, 1), else_=0)), 0))
            values = conn.execute(
                select(*columns)
                .select_from(Customer.__table__)
                .where(ACTIVE, C.registered_at >= start, C.registered_at < end, *seg)
            ).one()
            retained = [int(v) if is_open else None for v, is_open in zip(values[1:], offsets_open)]
            rows.append(CohortRow(first.strftime("%Y-%m"), int(values[0]), retained))
        return rows

    signature = _segment_key(access, segment)
    return _cached("cohorts", (signature, firsts[0], months, local_today(now)), compute)


@dataclasses.dataclass
class ProductRow:
    product: str
    orders: int
    quantity: int
    amount_cents: int
    buyers: int


def top_products(actor: Actor, segment: ListQuery | None, period: Period, limit: int = 10) -> list[ProductRow]:
    """Products by paid amount among the segment's paid orders in the period."""
    require(actor, "report.view", action="report.top_products")
    segment = _scoped_segment(actor, segment, "report.top_products")
    access = CustomerAccess(actor)
    limit = max(1, min(int(limit), 50))
    if segment is None and _aggregates_ready():
        with get_engine().connect() as conn:
            found = aggregates.products(conn, period.first, period.last)
        found.sort(key=lambda r: (-r[3], r[0]))
        return [ProductRow(*row) for row in found[:limit]]

    usable = _ledger_usable(segment)

    def compute(conn: Connection) -> list[ProductRow]:
        totals = _segment_totals(conn, access, segment, usable)
        if totals is not None:
            found = totals.products(period.first, period.last)
            found.sort(key=lambda r: (-r[3], r[0]))
            return [ProductRow(*row) for row in found[:limit]]
        seg = _segment_conditions(conn, access, segment)
        amount = func.sum(OC.amount_cents)
        statement = (
            select(OC.product_name, func.count(), func.sum(OC.quantity), amount, func.count(distinct(OC.customer_id)))
            .select_from(Order.__table__.join(Customer.__table__, C.id == OC.customer_id))
            .where(OC.status == "paid", OC.paid_at >= period.start_utc, OC.paid_at < period.end_utc, ACTIVE, *seg)
            .group_by(OC.product_name)
            .order_by(amount.desc(), OC.product_name)
            .limit(limit)
        )
        return [
            ProductRow(str(name), int(n), int(q or 0), int(a or 0), int(b))
            for name, n, q, a, b in conn.execute(statement)
        ]

    signature = _segment_key(access, segment)
    return _cached("top_products", (signature, period, limit), compute)


# --- formatting (both languages group thousands the same way) ----------------------------


def format_value(kind: str, value: float | None) -> str:
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"¥{value / 100:,.2f}"
    if kind == "score":
        return f"{value:.2f}"
    return f"{int(value):,}"


def format_change(measure: Measure) -> str:
    change = measure.change
    if change is None:
        return "—"
    if measure.kind == "rate":
        return f"{change:+.1f} pp"
    if measure.kind == "score":
        return f"{change:+.2f}"
    return f"{change * 100:+.1f}%"


def change_direction(measure: Measure) -> str:
    change = measure.change
    if change is None or abs(change) < 1e-12:
        return "flat"
    return "up" if change > 0 else "down"


def change_tone(measure: Measure) -> str:
    """ "good", "bad" or "neutral": the change read against the way the measure should move."""
    direction = change_direction(measure)
    better = measure.better
    if direction == "flat" or better is None:
        return "neutral"
    return "good" if direction == better else "bad"
