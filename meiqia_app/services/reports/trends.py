"""Reports over time (REP-2): trends per bucket, two periods compared, cohorts, top products."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Connection, case, distinct, func, select

from meiqia_app.db import get_engine
from meiqia_app.models import Conversation, Customer, Order
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.reports import aggregate_queries
from meiqia_app.services.reports.cache import cached_result
from meiqia_app.services.reports.dashboard import (
    aggregate_measures,
    aggregates_ready,
    ledger_segment_totals,
    ledger_usable,
)
from meiqia_app.services.reports.measures import (
    ACTIVE,
    COMPARISON_MEASURES,
    Measure,
    count_customers,
    excluded_chunks,
    period_measures,
    scoped_segment,
    segment_conditions,
    segment_key,
    working_set_aggregate,
)
from meiqia_app.services.reports.periods import (
    GRANULARITIES,
    Period,
    add_months,
    bucket_end,
    bucket_starts,
    local_today,
    month_start,
    parse_day,
)
from meiqia_app.timeutil import as_utc, local_day_start_utc, utcnow

C = Customer.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
TREND_DEFAULT_BUCKETS = {"day": 30, "week": 12, "month": 12}
COHORT_OFFSETS = (1, 3, 6)


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
    segment = scoped_segment(actor, segment, "report.trend")
    access = CustomerAccess(actor)
    if granularity not in GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    today = local_today(now)
    day = today if last_day in (None, "") else min(parse_day(last_day, "last_day"), today)
    count = TREND_DEFAULT_BUCKETS[granularity] if count is None else count
    starts = bucket_starts(granularity, day, count)

    def under_way(start_day: dt.date) -> bool:
        return bucket_end(granularity, start_day) > today + dt.timedelta(days=1)

    if segment is None and aggregates_ready():
        with get_engine().connect() as conn:
            per_day = aggregate_queries.daily(
                conn, starts[0], bucket_end(granularity, starts[-1]) - dt.timedelta(days=1)
            )
        points = []
        for start_day in starts:
            sums = [0, 0, 0, 0]
            first, end = start_day.toordinal(), bucket_end(granularity, start_day).toordinal()
            for ordinal in range(first, end):
                values = per_day.get(ordinal)
                if values:
                    sums = [a + b for a, b in zip(sums, values)]
            label = start_day.strftime("%Y-%m") if granularity == "month" else start_day.strftime("%m-%d")
            points.append(TrendPoint(start_day.isoformat(), label, *sums, partial=under_way(start_day)))
        return points

    def compute(conn: Connection) -> list[TrendPoint]:
        seg = segment_conditions(conn, access, segment)
        bounds = [local_day_start_utc(day) for day in starts] + [
            local_day_start_utc(bucket_end(granularity, starts[-1]))
        ]
        chunks = None if seg else excluded_chunks(conn)
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
            new = count_customers(conn, C.registered_at >= start, C.registered_at < end, *seg)
            order_totals = select(func.count(), func.coalesce(func.sum(OC.amount_cents), 0)).where(
                OC.status == "paid", OC.paid_at >= start, OC.paid_at < end
            )
            chat_totals = select(func.count()).where(CV.started_at >= start, CV.started_at < end)
            if seg or chunks is None:
                orders, amount = working_set_aggregate(conn, order_totals, Order.__table__, OC.customer_id, seg)
                (chats,) = working_set_aggregate(conn, chat_totals, Conversation.__table__, CV.customer_id, seg)
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

    signature = segment_key(access, segment)
    return cached_result("trend", (granularity, starts[0], len(starts), signature, today), compute, allow_stale)


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
    segment = scoped_segment(actor, segment, "report.compare")
    access = CustomerAccess(actor)
    whole = segment is None and aggregates_ready()
    usable = ledger_usable(segment)

    def compute(conn: Connection) -> Comparison:
        totals = None if whole else ledger_segment_totals(conn, access, segment, usable)
        if whole or totals is not None:
            a, b = aggregate_measures(conn, period_a, totals), aggregate_measures(conn, period_b, totals)
        else:
            seg = segment_conditions(conn, access, segment)
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
    signature = segment_key(access, segment)
    return cached_result("compare", (signature, period_a, period_b), compute)


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
    segment = scoped_segment(actor, segment, "report.cohorts")
    access = CustomerAccess(actor)
    months = max(1, min(int(months), 36))
    now = as_utc(now) if now is not None else utcnow()
    anchor = local_today(now) if last_month in (None, "") else parse_day(last_month, "last_month")
    firsts = [add_months(month_start(anchor), -i) for i in range(months - 1, -1, -1)]

    def complete(first: dt.date) -> list[bool]:
        return [local_day_start_utc(add_months(first, k + 1)) <= now for k in COHORT_OFFSETS]

    if segment is None and aggregates_ready():
        rows = []
        with get_engine().connect() as conn:
            for first in firsts:
                boundaries = [add_months(first, k) for k in COHORT_OFFSETS]
                size, retained = aggregate_queries.cohort(conn, first, boundaries)
                opened = complete(first)
                rows.append(
                    CohortRow(
                        first.strftime("%Y-%m"), size, [n if is_open else None for n, is_open in zip(retained, opened)]
                    )
                )
        return rows

    usable = ledger_usable(segment)

    def compute(conn: Connection) -> list[CohortRow]:
        totals = ledger_segment_totals(conn, access, segment, usable)
        if totals is not None:
            rows = []
            for first in firsts:
                boundaries = [add_months(first, k) for k in COHORT_OFFSETS]
                size, retained = totals.cohort(first, boundaries)
                opened = complete(first)
                rows.append(
                    CohortRow(
                        first.strftime("%Y-%m"), size, [n if is_open else None for n, is_open in zip(retained, opened)]
                    )
                )
            return rows
        seg = segment_conditions(conn, access, segment)
        rows = []
        for first in firsts:
            start = local_day_start_utc(first)
            end = local_day_start_utc(add_months(first, 1))
            columns = [func.count()]
            offsets_open = complete(first)
            for k in COHORT_OFFSETS:
                boundary = local_day_start_utc(add_months(first, k))
                columns.append(func.coalesce(func.sum(case((C.last_active_at >= boundary, 1), else_=0)), 0))
            values = conn.execute(
                select(*columns)
                .select_from(Customer.__table__)
                .where(ACTIVE, C.registered_at >= start, C.registered_at < end, *seg)
            ).one()
            retained = [int(v) if is_open else None for v, is_open in zip(values[1:], offsets_open)]
            rows.append(CohortRow(first.strftime("%Y-%m"), int(values[0]), retained))
        return rows

    signature = segment_key(access, segment)
    return cached_result("cohorts", (signature, firsts[0], months, local_today(now)), compute)


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
    segment = scoped_segment(actor, segment, "report.top_products")
    access = CustomerAccess(actor)
    limit = max(1, min(int(limit), 50))
    if segment is None and aggregates_ready():
        with get_engine().connect() as conn:
            found = aggregate_queries.products(conn, period.first, period.last)
        found.sort(key=lambda r: (-r[3], r[0]))
        return [ProductRow(*row) for row in found[:limit]]

    usable = ledger_usable(segment)

    def compute(conn: Connection) -> list[ProductRow]:
        totals = ledger_segment_totals(conn, access, segment, usable)
        if totals is not None:
            found = totals.products(period.first, period.last)
            found.sort(key=lambda r: (-r[3], r[0]))
            return [ProductRow(*row) for row in found[:limit]]
        seg = segment_conditions(conn, access, segment)
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

    signature = segment_key(access, segment)
    return cached_result("top_products", (signature, period, limit), compute)
