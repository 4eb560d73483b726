"""Report measures (REP-1, REP-2): what each figure means and how it is computed
for a period, the working set or a segment. The package: periods, cache,
measures, dashboard, trends (with comparison, cohorts, top products),
formatting, aggregates, views.

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
results are kept in an in-process cache (``_ReportCache``, cache.py) keyed by the
function, its arguments, the database URL and the zone, and checked against a
data signature (a counter bumped by every committed customer change, told by
services/customers/changes.py; the customer-data generation, which tells other
workers; the highest ids; entries expire after ``CACHE_TTL_SECONDS``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import OrderedDict

from sqlalchemy import Connection, and_, case, distinct, func, select, union

from meiqia_app.models import BehaviorEvent, Conversation, Customer, Order
from meiqia_app.models.customer import IN_TRASH, IN_WORKING_SET_INDEXES
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.reports import aggregate_queries
from meiqia_app.services.reports.cache import cached_result, computation_state
from meiqia_app.services.reports.periods import Period

C = Customer.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
EV = BehaviorEvent.__table__.c
TOP_REGIONS = 10


# --- raw measures (no permission check; used by the public functions below) -------------

# With the literal condition of the (SQLite partial) working-set indexes: models/customer.py.
ACTIVE = and_(C.status == "active", IN_WORKING_SET_INDEXES)


def count_customers(conn: Connection, *conditions) -> int:
    return conn.execute(select(func.count()).select_from(Customer.__table__).where(ACTIVE, *conditions)).scalar_one()


def scoped_segment(actor: Actor, segment: ListQuery | None, action: str) -> ListQuery | None:
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


def segment_key(access: CustomerAccess, segment: ListQuery | None) -> str:
    """A segment's part of cache keys: its matching set and the actor's reach (access.set_key)."""
    if segment is None:
        return ""
    return f"{access.set_key(segment.status)}:{segment.signature()}"


def segment_conditions(conn: Connection, access: CustomerAccess, segment: ListQuery | None) -> list:
    """Conditions on the customer table for a segment (always within the working set), within ``access``'s reach."""
    if segment is None:
        return []
    from meiqia_app.services.customers.listing import all_conditions
    from meiqia_app.services.reports.custom_segments import custom_conditions

    return all_conditions(conn, access, segment) + custom_conditions(access, segment)


EXCLUDED_CHUNK = 2000
EXCLUDED_LIMIT = 100_000  # above this many archived / trashed customers, join instead
# Subtract the excluded customers' part only when the range holds many more
# rows than there are excluded customers; otherwise join each row to its customer.
_JOIN_FACTOR = 3


def excluded_chunks(conn: Connection) -> list[list[int]] | None:
    """Ids of archived / trashed customers in chunks (None: too many, join instead).

    Read once per computation (kept in a thread-local that ``_compute_and_store``
    clears), through the status index.
    """
    cached = getattr(computation_state, "excluded", None)
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
    computation_state.excluded = (chunks,)
    return chunks


def working_set_aggregate(conn: Connection, statement, table, customer_column, seg: list) -> tuple[int, ...]:
    """Run an additive aggregate over the working set (optionally a segment).

    For a segment the rows are joined to their customer. For the whole working
    set (the dashboard) that join would cost one customer look-up per row, so
    the aggregate runs over every row through a covering index, and the part
    belonging to archived / trashed customers (a small set: their ids, in
    chunks, probe the per-customer indexes) is subtracted. Counts, sums and
    per-customer distinct counts are additive over disjoint sets of customers.
    """
    chunks = None if seg else excluded_chunks(conn)
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

    chunks = None if seg else excluded_chunks(conn)
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
    orders, amount, buyers = working_set_aggregate(conn, statement, Order.__table__, OC.customer_id, seg)
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

    chunks = None if seg else excluded_chunks(conn)
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
    return working_set_aggregate(conn, statement, Conversation.__table__, CV.customer_id, seg)


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


def working_set_group_counts(conn: Connection, column, *conditions) -> dict[str, int]:
    statement = select(column, func.count()).select_from(Customer.__table__).where(ACTIVE, *conditions).group_by(column)
    return {str(key or ""): int(n) for key, n in conn.execute(statement).all()}


def ratio_of(numerator: int, denominator: int) -> float | None:
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
        total = count_customers(conn, C.registered_at < end, *seg)
    else:
        # Today's working set (cached apart, shared with the breakdowns) minus
        # those registered after the period: a short index range for recent periods.
        working_set = sum(snapshot_totals(conn, C.lifecycle_stage).values())
        total = working_set - count_customers(conn, C.registered_at >= end)
    new = count_customers(conn, C.registered_at >= start, C.registered_at < end, *seg)
    active = _active_customers(conn, start, end, seg)
    registered, purchased = _conversion(conn, start, end, seg)
    orders, amount, buyers = _paid_orders(conn, start, end, seg)
    buyer_count, repeat = _repeat_buyers(conn, start, end, seg)
    conversations, complaints, rated, rating_sum = _conversations(conn, start, end, seg)
    return {
        "total_customers": total,
        "new_customers": new,
        "active_customers": active,
        "active_rate": ratio_of(active, total),
        "conversion_rate": ratio_of(purchased, registered),
        "registered": registered,
        "converted": purchased,
        "orders": orders,
        "amount_cents": amount,
        "buyers": buyers,
        "repeat_buyers": repeat,
        "repeat_rate": ratio_of(repeat, buyer_count),
        "conversations": conversations,
        "complaints": complaints,
        "complaint_share": ratio_of(complaints, conversations),
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


def snapshot_totals(conn: Connection, column) -> dict[str, int]:
    """Today's working set per group: the same for every period, so cached on its own."""
    return cached_result(f"totals:{column.name}", (), lambda c: working_set_group_counts(c, column))


segment_memo: OrderedDict[tuple, tuple[float, aggregate_queries.SegmentTotals | None]] = OrderedDict()
