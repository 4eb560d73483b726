"""The dashboard (REP-1) and an agent's snapshot: today's working set, breakdowns, and the period's measures."""

from __future__ import annotations

import dataclasses
import threading
import time

from sqlalchemy import Connection, func, select

from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.models.customer import LIFECYCLE_STAGES, SOURCES
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.reports import aggregate_queries, aggregates
from meiqia_app.services.reports.cache import cached_result, data_signature, stale_flag
from meiqia_app.services.reports.measures import (
    ACTIVE,
    DASHBOARD_MEASURES,
    TOP_REGIONS,
    Measure,
    count_customers,
    ratio_of,
    segment_conditions,
    segment_key,
    segment_memo,
    snapshot_totals,
    working_set_group_counts,
)
from meiqia_app.services.reports.periods import Period, make_period, month_start
from meiqia_app.timeutil import local_zone, today_local, utcnow

C = Customer.__table__.c


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


def _breakdowns(
    conn: Connection, column, period: Period, keys: tuple[str, ...] | None, limit: int | None
) -> list[Breakdown]:
    previous = period.previous()
    totals = snapshot_totals(conn, column)
    new = working_set_group_counts(conn, column, C.registered_at >= period.start_utc, C.registered_at < period.end_utc)
    new_prev = working_set_group_counts(
        conn, column, C.registered_at >= previous.start_utc, C.registered_at < previous.end_utc
    )
    return _breakdown_list(totals, new, new_prev, keys, limit)


def _aggregate_breakdowns(
    conn: Connection, column, period: Period, keys: tuple[str, ...] | None, limit: int | None
) -> list[Breakdown]:
    previous = period.previous()
    return _breakdown_list(
        aggregate_queries.group_counts(conn, column.name),
        aggregate_queries.group_counts(conn, column.name, period.first, period.last),
        aggregate_queries.group_counts(conn, column.name, previous.first, previous.last),
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


def aggregate_measures(
    conn: Connection, period: Period, segment_totals: aggregate_queries.SegmentTotals | None = None
) -> dict[str, float | None]:
    """period_measures for the whole working set (the daily aggregates) or a
    segment (its customers' contributions summed, ``segment_totals``)."""
    if segment_totals is not None:
        m = segment_totals.measures(period.first, period.last)
    else:
        m = aggregate_queries.measures(conn, period.first, period.last)
    return {
        "total_customers": m["total"],
        "new_customers": m["new"],
        "active_customers": m["active"],
        "active_rate": ratio_of(m["active"], m["total"]),
        "conversion_rate": ratio_of(m["converted"], m["registered"]),
        "registered": m["registered"],
        "converted": m["converted"],
        "orders": m["orders"],
        "amount_cents": m["amount"],
        "buyers": m["buyers"],
        "repeat_buyers": m["repeat"],
        "repeat_rate": ratio_of(m["repeat"], m["buyers"]),
        "conversations": m["conversations"],
        "complaints": m["complaints"],
        "complaint_share": ratio_of(m["complaints"], m["conversations"]),
        "satisfaction": (m["rating_sum"] / m["rated"]) if m["rated"] else None,
    }


SEGMENT_MEMO_SECONDS = 30
SEGMENT_LEDGER_MAX = 50_000  # customers (~150 µs each); bigger segments are computed from the rows (8-14 s at 1M)
_segment_memo_lock = threading.Lock()


def ledger_usable(segment: ListQuery | None) -> bool:
    """Whether a segment can be answered from the ledger now: the aggregates are
    built and every change is applied (called BEFORE opening the connection that
    reads them, so its snapshot includes what this call applied)."""
    if segment is None:
        return False
    ready, behind = aggregates.ensure_current()
    return ready and not behind


def ledger_segment_totals(
    conn: Connection, access: CustomerAccess, segment: ListQuery | None, usable: bool
) -> aggregate_queries.SegmentTotals | None:
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
        segment_key(access, segment),
        data_signature(conn),
        aggregates.applied_version,
    )
    with _segment_memo_lock:
        found = segment_memo.get(key)
    if found is not None and time.monotonic() - found[0] <= SEGMENT_MEMO_SECONDS:
        return found[1]
    ids = select(C.id).where(ACTIVE, *segment_conditions(conn, access, segment))
    # Summing the ledger costs per customer of the segment (~35 figures each);
    # the SQL over the rows costs per row in the periods whatever the segment's
    # size. Small segments (a city, a tag, a saved view) take the ledger.
    size = conn.execute(select(func.count()).select_from(ids.limit(SEGMENT_LEDGER_MAX + 1).subquery())).scalar_one()
    totals = aggregate_queries.SegmentTotals.load(conn, ids) if size <= SEGMENT_LEDGER_MAX else None
    with _segment_memo_lock:
        segment_memo[key] = (time.monotonic(), totals)
        while len(segment_memo) > 4:
            segment_memo.popitem(last=False)
    return totals


def aggregates_ready() -> bool:
    """Whether the daily aggregates can answer now (building them first when small;
    flags the answer as behind when many changes are still being applied)."""
    ready, behind = aggregates.ensure_current()
    if behind:
        stale_flag.served = True
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
    if not aggregates_ready():
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
        current = aggregate_measures(conn, period)
        before = aggregate_measures(conn, previous)
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

    if not scope and aggregates_ready():
        with get_engine().connect() as conn:
            total = sum(aggregate_queries.group_counts(conn, "lifecycle_stage").values())
            month = aggregate_queries.measures(conn, month_start(today), today)
            day = aggregate_queries.measures(conn, today, today)
        return Snapshot(total_customers=total, new_today=day["new"], new_this_month=month["new"])

    def compute(conn: Connection) -> Snapshot:
        day = make_period("day", today)
        month = make_period("month", today)
        return Snapshot(
            total_customers=count_customers(conn, *scope),
            new_today=count_customers(conn, C.registered_at >= day.start_utc, C.registered_at < day.end_utc, *scope),
            new_this_month=count_customers(
                conn, C.registered_at >= month.start_utc, C.registered_at < month.end_utc, *scope
            ),
        )

    return cached_result("snapshot", (today, access.scope_key()), compute, allow_stale=True)
