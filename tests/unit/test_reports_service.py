"""Report measures against an independent computation over the stored rows.

The reference side reads the tables with the raw DB-API driver and computes
every figure in plain Python (zoneinfo for local days), so a mistake in the
service's SQL or period arithmetic cannot hide in shared code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.reports import cache as report_cache
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import formatting as report_formatting
from meiqia_app.services.reports import measures as reports
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends

UTC = dt.UTC


def _ts(value) -> dt.datetime | None:
    """A stored timestamp: text on SQLite, a datetime on PostgreSQL; UTC either way."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)


@contextlib.contextmanager
def raw_cursor():
    """A cursor of the bare driver on a connection of its own (no SQLAlchemy types, no listeners)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from meiqia_app.db import get_engine

    engine = create_engine(get_engine().url, poolclass=NullPool)
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        yield cursor
        conn.commit()
    finally:
        conn.close()
        engine.dispose()


def _all(cursor, sql: str) -> list:
    cursor.execute(sql)
    return cursor.fetchall()


class Rows:
    """Every customer, order, conversation and event, as plain tuples."""

    def __init__(self, data_dir) -> None:
        with raw_cursor() as cursor:
            self.customers = {
                r[0]: dict(
                    id=r[0],
                    status=r[1],
                    registered=_ts(r[2]),
                    first_purchase=_ts(r[3]),
                    last_active=_ts(r[4]),
                    source=r[5],
                    province=r[6] or "",
                    lifecycle=r[7],
                )
                for r in _all(
                    cursor,
                    "select id, status, registered_at, first_purchase_at, last_active_at, source, "
                    "province, lifecycle_stage from customer",
                )
            }
            self.orders = [
                dict(customer=r[0], status=r[1], created=_ts(r[2]), paid=_ts(r[3]), amount=r[4], product=r[5], qty=r[6])
                for r in _all(
                    cursor,
                    "select customer_id, status, created_at, paid_at, amount_cents, product_name, quantity "
                    "from customer_order",
                )
            ]
            self.chats = [
                dict(customer=r[0], category=r[1], rating=r[2], started=_ts(r[3]))
                for r in _all(cursor, "select customer_id, category, rating, started_at from conversation")
            ]
            self.events = [
                dict(customer=r[0], occurred=_ts(r[1]))
                for r in _all(cursor, "select customer_id, occurred_at from behavior_event")
            ]

    def live(self, cid: int, segment=lambda c: True) -> bool:
        c = self.customers.get(cid)
        return c is not None and c["status"] == "active" and segment(c)


def bounds(first: dt.date, last: dt.date, zone: str = "Asia/Shanghai") -> tuple[dt.datetime, dt.datetime]:
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(first, dt.time.min, tzinfo=tz).astimezone(UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, tzinfo=tz).astimezone(UTC)
    return start, end


def expected(rows: Rows, start: dt.datetime, end: dt.datetime, segment=lambda c: True) -> dict:
    live = [c for c in rows.customers.values() if c["status"] == "active" and segment(c)]
    total = [c for c in live if c["registered"] < end]
    new = [c for c in live if start <= c["registered"] < end]
    active_ids = {e["customer"] for e in rows.events if start <= e["occurred"] < end}
    active_ids |= {o["customer"] for o in rows.orders if start <= o["created"] < end}
    active_ids |= {ch["customer"] for ch in rows.chats if start <= ch["started"] < end}
    active = [c for c in live if c["id"] in active_ids]
    converted = [c for c in new if c["first_purchase"] is not None and c["first_purchase"] < end]
    paid = [
        o
        for o in rows.orders
        if o["status"] == "paid" and o["paid"] and start <= o["paid"] < end and rows.live(o["customer"], segment)
    ]
    buyers = {o["customer"] for o in paid}
    paid_by_end: dict[int, int] = {}
    for o in rows.orders:
        if o["status"] == "paid" and o["paid"] and o["paid"] < end:
            paid_by_end[o["customer"]] = paid_by_end.get(o["customer"], 0) + 1
    repeat = [b for b in buyers if paid_by_end.get(b, 0) >= 2]
    chats = [ch for ch in rows.chats if start <= ch["started"] < end and rows.live(ch["customer"], segment)]
    rated = [ch["rating"] for ch in chats if ch["rating"] is not None]
    complaints = [ch for ch in chats if ch["category"] == "complaint"]
    ratio = lambda a, b: (a / b) if b else None  # noqa: E731
    return {
        "total_customers": len(total),
        "new_customers": len(new),
        "active_customers": len(active),
        "active_rate": ratio(len(active), len(total)),
        "conversion_rate": ratio(len(converted), len(new)),
        "registered": len(new),
        "converted": len(converted),
        "orders": len(paid),
        "amount_cents": sum(o["amount"] for o in paid),
        "buyers": len(buyers),
        "repeat_buyers": len(repeat),
        "repeat_rate": ratio(len(repeat), len(buyers)),
        "conversations": len(chats),
        "complaints": len(complaints),
        "complaint_share": ratio(len(complaints), len(chats)),
        "satisfaction": (sum(rated) / len(rated)) if rated else None,
    }


def assert_same(actual: dict, wanted: dict) -> None:
    for key, value in wanted.items():
        if isinstance(value, float):
            assert actual[key] == pytest.approx(value), key
        else:
            assert actual[key] == value, key


# --- periods --------------------------------------------------------------------------


def test_periods_follow_the_local_calendar_and_previous_period_has_same_kind():
    month = report_periods.make_period("month", "2026-03-15")
    assert (month.first, month.last) == (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
    assert (month.previous().first, month.previous().last) == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    week = report_periods.make_period("week", "2026-11-01")  # a Sunday
    assert (week.first, week.last) == (dt.date(2026, 10, 26), dt.date(2026, 11, 1))
    assert week.previous().first == dt.date(2026, 10, 19)
    custom = report_periods.make_period("custom", "2026-01-10", "2026-01-19")
    assert custom.previous().first == dt.date(2025, 12, 31) and custom.previous().last == dt.date(2026, 1, 9)
    day = report_periods.make_period("day", "2026-11-01")
    # Local midnight in Shanghai is 16:00 UTC the day before.
    assert day.start_utc == dt.datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert day.end_utc == dt.datetime(2026, 11, 1, 16, tzinfo=UTC)


def test_bad_period_input_is_refused():
    with pytest.raises(ValidationError):
        report_periods.make_period("year", "2026-01-01")
    with pytest.raises(ValidationError):
        report_periods.make_period("day", "not-a-date")
    with pytest.raises(ValidationError):
        report_periods.make_period("custom", "2026-02-01", "2026-01-01")
    with pytest.raises(ValidationError):
        report_periods.make_period("custom", "2020-01-01", "2026-01-01")


# --- measures on seeded data -------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,anchor,end",
    [
        ("month", "2026-10-15", None),
        ("week", "2026-10-15", None),
        ("custom", "2026-05-01", "2026-09-30"),
        ("month", "2026-12-15", None),  # after the data: an empty period, not an error
    ],
)
def test_dashboard_measures_match_independent_computation(seeded_db, seeded_actors, kind, anchor, end):
    rows = Rows(seeded_db)
    period = report_periods.make_period(kind, anchor, end)
    board = report_dashboard.dashboard(seeded_actors["manager"], period)
    assert_same(board.raw, expected(rows, *bounds(period.first, period.last)))
    previous = period.previous()
    assert_same(board.raw_previous, expected(rows, *bounds(previous.first, previous.last)))
    by_key = {m.key: m for m in board.measures}
    assert by_key["new_customers"].value == board.raw["new_customers"]
    assert by_key["new_customers"].previous == board.raw_previous["new_customers"]


def test_seeded_month_has_figures_in_every_measure(seeded_db, seeded_actors):
    board = report_dashboard.dashboard(seeded_actors["analyst"], report_periods.make_period("month", "2026-10-15"))
    assert board.raw["new_customers"] > 0 and board.raw["orders"] > 0 and board.raw["conversations"] > 0
    assert board.raw["satisfaction"] is not None


def test_breakdowns_match_rows(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    period = report_periods.make_period("month", "2026-10-15")
    start, end = bounds(period.first, period.last)
    board = report_dashboard.dashboard(seeded_actors["manager"], period)
    live = [c for c in rows.customers.values() if c["status"] == "active"]
    for item in board.lifecycle:
        assert item.total == sum(1 for c in live if c["lifecycle"] == item.key)
    for item in board.sources:
        assert item.total == sum(1 for c in live if c["source"] == item.key)
        assert item.new == sum(1 for c in live if c["source"] == item.key and start <= c["registered"] < end)
    assert sum(item.total for item in board.regions) == len(live)
    assert sum(item.total for item in board.lifecycle) == len(live)


def test_archived_and_trashed_customers_are_excluded(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    assert any(c["status"] != "active" for c in rows.customers.values())  # the seed archives ~1%
    board = report_dashboard.dashboard(seeded_actors["manager"], report_periods.make_period("month", "2026-10-15"))
    assert board.raw["total_customers"] == sum(
        1
        for c in rows.customers.values()
        if c["status"] == "active" and c["registered"] < bounds(dt.date(2026, 10, 1), dt.date(2026, 10, 31))[1]
    )


def test_segment_comparison_matches_rows(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    segment = ListQuery(sources=("wechat", "app"))
    a = report_periods.make_period("month", "2026-08-10")
    b = report_periods.make_period("month", "2026-10-10")
    result = report_trends.compare_periods(seeded_actors["manager"], segment, a, b)
    in_segment = lambda c: c["source"] in ("wechat", "app")  # noqa: E731
    assert_same(result.raw_a, expected(rows, *bounds(a.first, a.last), segment=in_segment))
    assert_same(result.raw_b, expected(rows, *bounds(b.first, b.last), segment=in_segment))


def test_trend_buckets_are_local_and_empty_ones_are_zero(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    points = report_trends.trend(
        seeded_actors["manager"], "day", "2026-12-10", 60, now=dt.datetime(2026, 12, 31, tzinfo=UTC)
    )
    assert len(points) == 60
    assert points[-1].start == "2026-12-10" and points[-1].new_customers == 0 and points[-1].orders == 0
    for point in points:
        day = dt.date.fromisoformat(point.start)
        start, end = bounds(day, day)
        assert point.new_customers == sum(
            1 for c in rows.customers.values() if c["status"] == "active" and start <= c["registered"] < end
        )
    months = report_trends.trend(seeded_actors["manager"], "month", "2026-10-31", 12)
    assert [p.start for p in months][-2:] == ["2026-09-01", "2026-10-01"]
    for point in months:
        first = dt.date.fromisoformat(point.start)
        last = report_periods.add_months(first, 1) - dt.timedelta(days=1)
        wanted = expected(rows, *bounds(first, last))
        assert (point.orders, point.amount_cents, point.conversations) == (
            wanted["orders"],
            wanted["amount_cents"],
            wanted["conversations"],
        )
    weeks = report_trends.trend(seeded_actors["manager"], "week", "2026-10-15", 4)
    assert [dt.date.fromisoformat(p.start).weekday() for p in weeks] == [0, 0, 0, 0]


def test_cohorts_count_customers_still_active_k_months_later(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    now = dt.datetime(2026, 12, 7, 3, tzinfo=UTC)
    table = report_trends.cohorts(seeded_actors["manager"], 12, "2026-10-01", now=now)
    assert [r.month for r in table][-1] == "2026-10"
    tz = ZoneInfo("Asia/Shanghai")
    for row in table:
        first = dt.date.fromisoformat(row.month + "-01")
        start, end = bounds(first, report_periods.add_months(first, 1) - dt.timedelta(days=1))
        members = [c for c in rows.customers.values() if c["status"] == "active" and start <= c["registered"] < end]
        assert row.size == len(members)
        for k, value in zip(report_trends.COHORT_OFFSETS, row.retained):
            boundary = dt.datetime.combine(report_periods.add_months(first, k), dt.time.min, tzinfo=tz).astimezone(UTC)
            window_end = dt.datetime.combine(
                report_periods.add_months(first, k + 1), dt.time.min, tzinfo=tz
            ).astimezone(UTC)
            if window_end > now:
                assert value is None
            else:
                assert value == sum(1 for c in members if c["last_active"] >= boundary)


def test_top_products_rank_by_paid_amount_within_segment(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    period = report_periods.make_period("custom", "2026-01-01", "2026-10-31")
    start, end = bounds(period.first, period.last)
    segment = ListQuery(lifecycle=("active", "new", "dormant"))
    ranked = report_trends.top_products(seeded_actors["analyst"], segment, period, 5)
    totals: dict[str, int] = {}
    for o in rows.orders:
        c = rows.customers[o["customer"]]
        if (
            o["status"] == "paid"
            and start <= o["paid"] < end
            and c["status"] == "active"
            and c["lifecycle"] in segment.lifecycle
        ):
            totals[o["product"]] = totals.get(o["product"], 0) + o["amount"]
    wanted = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(p.product, p.amount_cents) for p in ranked] == wanted


# --- boundaries and time zones --------------------------------------------------------------


def _add_customer(session, name: str, registered: dt.datetime, **extra):
    from meiqia_app.models import Customer

    customer = Customer(name=name, registered_at=registered, last_active_at=registered, **extra)
    session.add(customer)
    session.flush()
    return customer


def _add_order(session, customer_id: int, no: str, paid: dt.datetime, amount: int):
    from meiqia_app.models import Order

    session.add(
        Order(
            order_no=no,
            customer_id=customer_id,
            product_name="P",
            amount_cents=amount,
            status="paid",
            created_at=paid,
            paid_at=paid,
        )
    )


@pytest.fixture()
def boundary_rows(db):
    from meiqia_app.db import write_session

    before = dt.datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on Oct 31 in Shanghai
    at = dt.datetime(2026, 10, 31, 16, 0, 0, tzinfo=UTC)  # 00:00 on Nov 1 in Shanghai
    with write_session() as session:
        a = _add_customer(session, "甲", before)
        b = _add_customer(session, "乙", at)
        _add_order(session, a.id, "B1", before, 100)
        _add_order(session, b.id, "B2", at, 250)
    return db


def test_local_midnight_is_the_day_boundary(boundary_rows, actors):
    manager = actors["manager"]
    nov1 = report_dashboard.dashboard(manager, report_periods.make_period("day", "2026-11-01"))
    assert (nov1.raw["new_customers"], nov1.raw["orders"], nov1.raw["amount_cents"]) == (1, 1, 250)
    assert nov1.raw["total_customers"] == 2
    assert (nov1.raw_previous["new_customers"], nov1.raw_previous["amount_cents"]) == (1, 100)
    points = report_trends.trend(manager, "day", "2026-11-01", 2)
    assert [(p.start, p.new_customers, p.amount_cents) for p in points] == [
        ("2026-10-31", 1, 100),
        ("2026-11-01", 1, 250),
    ]


def test_configured_time_zone_moves_the_boundary(boundary_rows, actors, monkeypatch):
    from meiqia_app.config import reload_settings

    monkeypatch.setenv("MEIQIA_TIMEZONE", "UTC")
    reload_settings()
    try:
        oct31 = report_dashboard.dashboard(actors["manager"], report_periods.make_period("day", "2026-10-31"))
        assert (oct31.raw["new_customers"], oct31.raw["amount_cents"]) == (2, 350)
        nov1 = report_dashboard.dashboard(actors["manager"], report_periods.make_period("day", "2026-11-01"))
        assert nov1.raw["new_customers"] == 0
    finally:
        monkeypatch.delenv("MEIQIA_TIMEZONE")
        reload_settings()


def test_empty_database_gives_zeros_and_no_rates(db, actors):
    board = report_dashboard.dashboard(actors["manager"], report_periods.make_period("month", "2026-10-01"))
    assert board.raw["total_customers"] == 0
    assert board.raw["active_rate"] is None and board.raw["satisfaction"] is None
    assert all(m.change is None for m in board.measures if m.kind in ("rate", "score"))
    assert report_formatting.format_value("rate", None) == "—"


# --- cache invalidation ----------------------------------------------------------------


def test_cache_sees_new_and_archived_customers(boundary_rows, actors):
    from sqlmodel import select

    from meiqia_app.db import write_session
    from meiqia_app.models import Customer

    period = report_periods.make_period("day", "2026-11-01")
    assert report_dashboard.dashboard(actors["manager"], period).raw["new_customers"] == 1
    with write_session() as session:
        _add_customer(session, "丙", dt.datetime(2026, 11, 1, 1, tzinfo=UTC))
    assert report_dashboard.dashboard(actors["manager"], period).raw["new_customers"] == 2
    with write_session() as session:
        customer = session.exec(select(Customer).where(Customer.name == "乙")).one()
        customer.status = "archived"
        session.add(customer)
    assert report_dashboard.dashboard(actors["manager"], period).raw["new_customers"] == 1


def test_cache_sees_raw_sql_writes_from_another_connection(boundary_rows, actors):
    period = report_periods.make_period("day", "2026-11-01")
    assert report_dashboard.dashboard(actors["manager"], period).raw["total_customers"] == 2
    # Another process: a bare driver connection, invisible to our listener; the
    # max-id part of the data signature catches the insert.
    with raw_cursor() as cursor:
        cursor.execute(
            "insert into customer (name, name_pinyin, name_initials, gender, source, registered_at, last_active_at, "
            "order_count, total_spent_cents, lifecycle_stage, membership_tier, consent_marketing, consent_analytics, "
            "status, custom_attributes, version, created_at, updated_at) values ('丁', '', '', 'U', 'web', "
            "'2026-11-01 02:00:00.000000', '2026-11-01 02:00:00.000000', 0, 0, 'prospect', 'regular', false, false, 'active', "
            "'{}', 1, '2026-11-01 02:00:00.000000', '2026-11-01 02:00:00.000000')"
        )
    assert report_dashboard.dashboard(actors["manager"], period).raw["total_customers"] == 3


# --- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["agent", "senior"])
def test_roles_without_report_view_are_refused_and_audited(db, actors, username):
    from sqlmodel import select

    from meiqia_app.db import read_session
    from meiqia_app.models import AuditEntry

    period = report_periods.make_period("month", "2026-10-01")
    with pytest.raises(PermissionDenied):
        report_dashboard.dashboard(actors[username], period)
    with pytest.raises(PermissionDenied):
        report_trends.compare_periods(actors[username], None, period, period.previous())
    with read_session() as session:
        actions = [e.action for e in session.exec(select(AuditEntry).where(AuditEntry.actor_name == username)).all()]
    assert "report.dashboard" in actions


def test_agents_get_the_small_snapshot(seeded_db, seeded_actors):
    rows = Rows(seeded_db)
    snap = report_dashboard.agent_snapshot(seeded_actors["agent"])
    assert snap.total_customers == sum(1 for c in rows.customers.values() if c["status"] == "active")


def test_change_formatting():
    m = reports.Measure("dash.new_customers", "count", 120, 100)
    assert report_formatting.format_change(m) == "+20.0%" and report_formatting.change_direction(m) == "up"
    r = reports.Measure("dash.active_rate", "rate", 0.25, 0.30)
    assert report_formatting.format_change(r) == "-5.0 pp" and report_formatting.change_direction(r) == "down"
    assert report_formatting.format_value("money", 123456789) == "¥1,234,567.89"
    assert report_formatting.format_value("count", 1234567) == "1,234,567"


def test_dashboard_shows_a_change_at_once(boundary_rows, actors):
    """No stale figures after an edit: the changed customer is applied to the daily aggregates first."""
    from meiqia_app.db import write_session

    period = report_periods.make_period("day", "2026-11-01")
    assert report_dashboard.dashboard(actors["manager"], period, allow_stale=True).raw["new_customers"] == 1
    with write_session() as session:
        _add_customer(session, "戊", dt.datetime(2026, 11, 1, 3, tzinfo=UTC))
    report_cache.take_served_stale()
    assert report_dashboard.dashboard(actors["manager"], period, allow_stale=True).raw["new_customers"] == 2
    assert not report_cache.take_served_stale()


def test_a_failed_refresh_of_a_stale_figure_is_logged_and_the_next_one_runs(db, caplog):
    """The stale-while-refreshing path once swallowed every error silently."""
    from meiqia_app.services.platform import jobs

    key = ("broken_figure", (), "test", "zone")
    calls = []

    def broken(conn):
        calls.append(1)
        raise ZeroDivisionError("figure went wrong")

    report_cache._refresh_in_background(key, broken)
    jobs.wait_in_process(30)
    assert "report-broken_figure failed" in caplog.text and "ZeroDivisionError: figure went wrong" in caplog.text
    report_cache._refresh_in_background(key, lambda conn: 42)  # not stuck "refreshing" after the failure
    jobs.wait_in_process(30)
    assert calls == [1] and report_cache._cache.get(key)[2] == 42


def test_warm_cache_runs_on_an_empty_database(db):
    from meiqia_app.services.reports import aggregates as report_aggregates

    report_cache.invalidate_cache()
    report_dashboard.warm_cache()
    assert report_aggregates.state()["status"] == "ready"


# --- a period under way (7 December: 1–7 December against 1–7 November) -------------------

DEC_7 = dt.datetime(2026, 12, 7, 3, tzinfo=UTC)  # 11:00 on Monday 7 December in Shanghai


def test_a_month_under_way_is_compared_with_the_same_days_of_the_month_before():
    month = report_periods.make_period("month", None, now=DEC_7)
    assert (month.first, month.last, month.to_date) == (dt.date(2026, 12, 1), dt.date(2026, 12, 7), True)
    before = month.previous()
    assert (before.first, before.last) == (dt.date(2026, 11, 1), dt.date(2026, 11, 7))
    assert month.label() == "2026-12-01 ~ 2026-12-07" and before.label() == "2026-11-01 ~ 2026-11-07"
    # A finished month is whole, and so is the one before it.
    november = report_periods.make_period("month", "2026-11-20", now=DEC_7)
    assert (november.first, november.last, november.to_date) == (dt.date(2026, 11, 1), dt.date(2026, 11, 30), False)
    assert (november.previous().first, november.previous().last) == (dt.date(2026, 10, 1), dt.date(2026, 10, 31))
    assert november.label() == "2026-11"
    # 30 March to date: the same days of February end with February.
    march = report_periods.make_period("month", None, now=dt.datetime(2027, 3, 30, 3, tzinfo=UTC))
    assert (march.previous().first, march.previous().last) == (dt.date(2027, 2, 1), dt.date(2027, 2, 28))
    # A period that has not begun is refused, not shown as zeros.
    with pytest.raises(ValidationError):
        report_periods.make_period("month", "2027-01-05", now=DEC_7)


def test_a_week_under_way_is_compared_with_the_same_weekdays_of_the_week_before():
    monday = report_periods.make_period("week", None, now=DEC_7)
    assert (monday.first, monday.last) == (dt.date(2026, 12, 7), dt.date(2026, 12, 7))
    assert (monday.previous().first, monday.previous().last) == (dt.date(2026, 11, 30), dt.date(2026, 11, 30))
    thursday = report_periods.make_period("week", None, now=dt.datetime(2026, 12, 10, 3, tzinfo=UTC))
    assert (thursday.first, thursday.last, thursday.to_date) == (dt.date(2026, 12, 7), dt.date(2026, 12, 10), True)
    assert (thursday.previous().first, thursday.previous().last) == (dt.date(2026, 11, 30), dt.date(2026, 12, 3))
    # A custom range into the future ends today; the one before has as many days.
    custom = report_periods.make_period("custom", "2026-12-01", "2026-12-31", now=DEC_7)
    assert (custom.last, custom.days, custom.previous().first) == (dt.date(2026, 12, 7), 7, dt.date(2026, 11, 24))


def test_dashboard_on_the_7th_compares_like_with_like_says_so_and_plots_no_future_day(seeded_db, seeded_actors):
    from meiqia_app.services.reports import views as report_views

    rows = Rows(seeded_db)
    manager = seeded_actors["manager"]
    now = dt.datetime(2026, 10, 7, 3, tzinfo=UTC)  # the seeded data end on 1 November
    view = report_views.dashboard_view(manager, {"kind": "month", "granularity": "day"}, now=now)
    assert (view.period["first"], view.period["last"]) == ("2026-10-01", "2026-10-07")
    assert (view.previous["first"], view.previous["last"]) == ("2026-09-01", "2026-09-07")
    board = report_dashboard.dashboard(manager, report_periods.make_period("month", None, now=now))
    assert_same(board.raw, expected(rows, *bounds(dt.date(2026, 10, 1), dt.date(2026, 10, 7))))
    assert_same(board.raw_previous, expected(rows, *bounds(dt.date(2026, 9, 1), dt.date(2026, 9, 7))))
    cards = {card["key"]: card for card in view.cards}
    assert cards["new_customers"]["previous"] == f"{board.raw_previous['new_customers']:,}"
    # The trend: 1..7 October, nothing after today.
    assert [p["start"] for p in view.trend] == [f"2026-10-0{d}" for d in range(1, 8)]
    # The page says what is compared, in both languages.
    assert view.note_zh == "本月截至今天：2026-10-01 ~ 2026-10-07（7 天），对比上月同期 2026-09-01 ~ 2026-09-07"
    assert "same days of last month, 2026-09-01 ~ 2026-09-07" in view.note_en
    assert view.latest is True
    # A finished month says "vs. previous" and has a later period to move to.
    september = report_views.dashboard_view(manager, {"kind": "month", "anchor": "2026-09-10"}, now=now)
    assert september.note_en == "vs. previous 2026-08" and september.latest is False

    # The week (Wednesday 14 October): Monday to Wednesday against the Monday to Wednesday before.
    wednesday = dt.datetime(2026, 10, 14, 3, tzinfo=UTC)
    week = report_views.dashboard_view(manager, {"kind": "week", "granularity": "day"}, now=wednesday)
    assert (week.period["first"], week.period["last"]) == ("2026-10-12", "2026-10-14")
    assert (week.previous["first"], week.previous["last"]) == ("2026-10-05", "2026-10-07")
    assert "本周截至今天" in week.note_zh and "same days of last week" in week.note_en
    assert max(p["start"] for p in week.trend) == "2026-10-14"
    # By week: the week under way is the last point, marked as such.
    weekly = report_views.dashboard_view(manager, {"kind": "week", "granularity": "week"}, now=wednesday)
    assert weekly.trend[-1]["start"] == "2026-10-12" and weekly.trend[-1]["partial"]
    assert weekly.trend[-1]["label"].endswith("*") and weekly.partial_bucket
    assert not any(p["partial"] for p in weekly.trend[:-1])


def test_cohort_windows_that_have_not_ended_are_none_and_shown_as_a_dash(seeded_db, seeded_actors):
    from meiqia_app.services.reports import views as report_views

    manager = seeded_actors["manager"]
    table = {row.month: row for row in report_trends.cohorts(manager, 12, None, now=DEC_7)}
    # Registered in November: December (the month after) is not over on the 7th.
    assert table["2026-11"].retained == [None, None, None]
    # October: November is over (1 month after); January (3 months after) has not come.
    assert table["2026-10"].retained[0] is not None and table["2026-10"].retained[1:] == [None, None]
    assert table["2026-08"].retained[1] is not None  # November = 3 months after August
    params = {"a_from": "2026-10-01", "a_to": "2026-10-31", "b_from": "2026-11-01", "b_to": "2026-12-07"}
    view = report_views.segment_report_view(manager, params, now=DEC_7)
    shown = {row["month"]: row for row in view.cohorts}
    assert shown["2026-11"]["r1"] == "—" and shown["2026-11"]["retained"][0] == "—"
    assert shown["2026-10"]["r1"] != "—" and shown["2026-10"]["r3"] == "—"


def test_each_measure_knows_whether_up_is_good():
    def tone(key: str, kind: str, value, previous) -> str:
        return report_formatting.change_tone(reports.Measure(key, kind, value, previous))

    # Fewer complaints: a down arrow, and good news.
    falling = reports.Measure("complaint_share", "rate", 0.05, 0.08)
    assert report_formatting.change_direction(falling) == "down" and report_formatting.change_tone(falling) == "good"
    assert tone("complaint_share", "rate", 0.10, 0.08) == "bad"
    assert tone("satisfaction", "score", 4.1, 4.5) == "bad"
    assert tone("new_customers", "count", 120, 100) == "good"
    assert tone("amount_cents", "money", 50, 100) == "bad"
    assert tone("conversations", "count", 120, 100) == "neutral"  # more inquiries: neither
    assert tone("orders", "count", 100, 100) == "neutral"
    from meiqia_app.services.reports import views as report_views

    row = report_views._measure_row(falling)
    assert (row["direction"], row["tone"]) == ("down", "good")
    assert row["arrow_zh"] == "下降（向好）" and row["arrow_en"] == "Down (better)"
