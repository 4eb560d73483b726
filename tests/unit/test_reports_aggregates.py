"""The daily report aggregates stay equal to an independent computation after
every kind of change (edits, new orders, refunds, merges, archive, erasure,
imports, raw SQL from another connection, deletions), incrementally — and equal
to a full rebuild; zone changes rebuild; big databases build in the background
while the dashboard says "being computed"."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import text

from meiqia_app.db import get_engine, write_session
from meiqia_app.services.reports import aggregates
from meiqia_app.services.reports import cache as report_cache
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends
from meiqia_app.services.reports import views as report_views
from tests.unit.test_reports_service import UTC, Rows, assert_same, bounds, expected, raw_cursor

PERIODS = [
    report_periods.make_period("month", "2026-10-15"),
    report_periods.make_period("week", "2026-10-15"),
    report_periods.make_period("day", "2026-10-20"),
    report_periods.make_period("custom", "2026-03-01", "2026-09-30"),
    report_periods.make_period("month", "2025-12-15"),
]


def _daily_rows() -> dict:
    with get_engine().connect() as conn:
        return {
            tuple(r[:5]): tuple(r[5:])
            for r in conn.execute(text("SELECT kind, day, k1, k2, k3, n, s1, s2, s3 FROM report_daily"))
            if any(r[5:])
        }


def check_everything(actor, zone: str = "Asia/Shanghai") -> None:
    """Every measure of the dashboard, trend, breakdowns, cohorts and top products
    against plain Python over the rows; then the incremental state against a rebuild."""
    report_dashboard.dashboard(
        actor, PERIODS[0]
    )  # applies the changes (in the request, or in the background when many)
    aggregates.wait_for_background()
    rows = Rows(None)
    tz = ZoneInfo(zone)
    live = [c for c in rows.customers.values() if c["status"] == "active"]
    for period in PERIODS:
        board = report_dashboard.dashboard(actor, period)
        assert not board.computing
        assert_same(board.raw, expected(rows, *bounds(period.first, period.last, zone)))
        previous = period.previous()
        assert_same(board.raw_previous, expected(rows, *bounds(previous.first, previous.last, zone)))
        start, end = bounds(period.first, period.last, zone)
        for item in board.sources:
            assert item.total == sum(1 for c in live if c["source"] == item.key)
            assert item.new == sum(1 for c in live if c["source"] == item.key and start <= c["registered"] < end)
        for item in board.lifecycle:
            assert item.total == sum(1 for c in live if c["lifecycle"] == item.key)
        assert sum(item.total for item in board.regions) == len(live)
    for point in report_trends.trend(actor, "month", "2026-11-30", 14):
        first = dt.date.fromisoformat(point.start)
        wanted = expected(rows, *bounds(first, report_periods.add_months(first, 1) - dt.timedelta(days=1), zone))
        assert (point.new_customers, point.orders, point.amount_cents, point.conversations) == (
            wanted["new_customers"],
            wanted["orders"],
            wanted["amount_cents"],
            wanted["conversations"],
        )
    now = dt.datetime(2026, 12, 7, 3, tzinfo=UTC)

    def retained_wanted(members, first: dt.date, k: int):
        """None until month M+k has ended; then those active on or after its start."""
        boundary = dt.datetime.combine(report_periods.add_months(first, k), dt.time.min, tzinfo=tz).astimezone(UTC)
        window_end = dt.datetime.combine(report_periods.add_months(first, k + 1), dt.time.min, tzinfo=tz).astimezone(
            UTC
        )
        if window_end > now:
            return None
        return sum(1 for c in members if c["last_active"] and c["last_active"] >= boundary)

    for row in report_trends.cohorts(actor, 12, "2026-10-01", now=now):
        first = dt.date.fromisoformat(row.month + "-01")
        start, end = bounds(first, report_periods.add_months(first, 1) - dt.timedelta(days=1), zone)
        members = [c for c in live if start <= c["registered"] < end]
        assert row.size == len(members)
        for k, value in zip(report_trends.COHORT_OFFSETS, row.retained):
            assert value == retained_wanted(members, first, k)
    period = report_periods.make_period("custom", "2026-01-01", "2026-10-31")
    start_p, end_p = bounds(period.first, period.last, zone)
    totals: dict[str, list] = {}
    for o in rows.orders:
        if o["status"] == "paid" and o["paid"] and start_p <= o["paid"] < end_p and rows.live(o["customer"]):
            entry = totals.setdefault(o["product"], [0, 0, 0, set()])
            entry[0] += 1
            entry[1] += o["qty"] or 0
            entry[2] += o["amount"]
            entry[3].add(o["customer"])
    wanted = sorted(((p, v[0], v[1], v[2], len(v[3])) for p, v in totals.items()), key=lambda r: (-r[3], r[0]))[:10]
    got = report_trends.top_products(actor, None, period, 10)
    assert [(p.product, p.orders, p.quantity, p.amount_cents, p.buyers) for p in got] == wanted
    # A segment (summed from the ledger of its customers): comparison, cohorts, top products.
    from meiqia_app.services.customers.query import ListQuery

    segment = ListQuery(sources=("wechat", "app"), lifecycle=("active", "new", "churned"))
    in_segment = lambda c: c["source"] in ("wechat", "app") and c["lifecycle"] in ("active", "new", "churned")  # noqa: E731
    report_cache.invalidate_cache()
    a, b = PERIODS[3], PERIODS[0]
    result = report_trends.compare_periods(actor, segment, a, b)
    assert_same(result.raw_a, expected(rows, *bounds(a.first, a.last, zone), segment=in_segment))
    assert_same(result.raw_b, expected(rows, *bounds(b.first, b.last, zone), segment=in_segment))
    for row in report_trends.cohorts(actor, 6, "2026-10-01", segment, now=now):
        first = dt.date.fromisoformat(row.month + "-01")
        start, end = bounds(first, report_periods.add_months(first, 1) - dt.timedelta(days=1), zone)
        members = [c for c in live if start <= c["registered"] < end and in_segment(c)]
        assert row.size == len(members)
        for k, value in zip(report_trends.COHORT_OFFSETS, row.retained):
            assert value == retained_wanted(members, first, k)
    seg_totals: dict[str, list] = {}
    for o in rows.orders:
        if (
            o["status"] == "paid"
            and o["paid"]
            and start_p <= o["paid"] < end_p
            and rows.live(o["customer"], in_segment)
        ):
            entry = seg_totals.setdefault(o["product"], [0, 0, 0, set()])
            entry[0] += 1
            entry[1] += o["qty"] or 0
            entry[2] += o["amount"]
            entry[3].add(o["customer"])
    wanted = sorted(((p, v[0], v[1], v[2], len(v[3])) for p, v in seg_totals.items()), key=lambda r: (-r[3], r[0]))[:10]
    got = report_trends.top_products(actor, segment, period, 10)
    assert [(p.product, p.orders, p.quantity, p.amount_cents, p.buyers) for p in got] == wanted
    # Incremental == from scratch.
    incremental = _daily_rows()
    aggregates.build(force=True)
    assert _daily_rows() == incremental


def _execute(sql: str, **params) -> None:
    with write_session() as session:
        session.connection().execute(text(sql), params)


def _ids(sql: str, **params) -> list[int]:
    with get_engine().connect() as conn:
        return [r[0] for r in conn.execute(text(sql), params)]


def test_aggregates_match_after_every_kind_of_change(seeded_db, seeded_actors):
    from meiqia_app.services.customers import orders as customer_orders
    from meiqia_app.services.customers.duplicates import merging as duplicate_merging
    from meiqia_app.services.privacy import erasure

    manager, admin = seeded_actors["manager"], seeded_actors["admin"]
    check_everything(manager)
    assert aggregates.state()["status"] == "ready"
    active = _ids("SELECT id FROM customer WHERE status = 'active' ORDER BY id")
    # An edit of the fields the reports group by.
    _execute(
        "UPDATE customer SET source = 'app', province = '西藏', lifecycle_stage = 'churned' WHERE id = :id",
        id=active[0],
    )
    # New orders through the service (paid and pending), and a refund.
    product = _ids("SELECT id FROM product ORDER BY id LIMIT 1")[0]
    customer_orders.add_order(admin, active[1], product, 2, 88.5, "paid", dt.datetime(2026, 10, 20, 2, tzinfo=UTC))
    customer_orders.add_order(admin, active[2], product, 1, None, "pending", dt.datetime(2026, 10, 21, 2, tzinfo=UTC))
    refunded = _ids(
        "SELECT id FROM customer_order WHERE status = 'paid' AND paid_at >= '2026-10-01' ORDER BY id LIMIT 2"
    )
    _execute(f"UPDATE customer_order SET status = 'refunded' WHERE id IN ({','.join(map(str, refunded))})")
    # Archive and trash.
    _execute("UPDATE customer SET status = 'archived' WHERE id = :id", id=active[3])
    _execute("UPDATE customer SET status = 'trashed' WHERE id = :id", id=active[4])
    # Merge two customers (orders, chats and events move to the survivor).
    survivor, other = active[5], active[6]
    with get_engine().connect() as conn:
        versions = {
            r[0]: r[1]
            for r in conn.execute(
                text("SELECT id, version FROM customer WHERE id IN (:a, :b)"), {"a": survivor, "b": other}
            )
        }
    duplicate_merging.merge_customers(admin, survivor, [other], {}, versions)
    # Erasure.
    erasure.erase_customer(admin, active[7], str(active[7]))
    # A bulk import from another connection (bare driver): a customer with events and a chat.
    mark = "%s" if get_engine().dialect.name == "postgresql" else "?"  # the bare driver's parameter style
    with raw_cursor() as cursor:
        cursor.execute(
            "insert into customer (name, name_pinyin, name_initials, gender, source, province, registered_at, "
            "last_active_at, order_count, total_spent_cents, lifecycle_stage, membership_tier, consent_marketing, "
            "consent_analytics, status, custom_attributes, version, created_at, updated_at) values ('导入', '', '', "
            "'U', 'import', '浙江', '2026-10-19 16:30:00.000000', '2026-10-20 03:00:00.000000', 0, 0, 'new', "
            "'regular', false, false, 'active', '{}', 1, '2026-10-19 16:30:00.000000', '2026-10-19 16:30:00.000000')"
        )
        cursor.execute("select max(id) from customer")
        new_id = cursor.fetchone()[0]
        for at in ("2026-10-19 16:10:00.000000", "2026-10-20 03:00:00.000000", "2026-10-20 04:00:00.000000"):
            cursor.execute(
                f"insert into behavior_event (customer_id, kind, occurred_at) values ({mark}, 'page_view', {mark})",
                (new_id, at),
            )
        cursor.execute(
            "insert into conversation (customer_id, channel, category, rating, started_at) "
            f"values ({mark}, 'web', 'complaint', 2, '2026-10-20 05:00:00.000000')",
            (new_id,),
        )
    # Deletions and a changed rating.
    _execute("DELETE FROM behavior_event WHERE id IN (SELECT id FROM behavior_event ORDER BY id LIMIT 25)")
    _execute(
        "UPDATE conversation SET rating = 5 WHERE id IN (SELECT id FROM conversation WHERE rating IS NOT NULL ORDER BY id LIMIT 5)"
    )
    _execute("DELETE FROM customer_order WHERE id IN (SELECT id FROM customer_order ORDER BY id DESC LIMIT 3)")
    with get_engine().connect() as conn:
        assert aggregates.pending_count(conn) > 5
    check_everything(manager)
    with get_engine().connect() as conn:
        assert aggregates.pending_count(conn) == 0


def test_a_change_updates_only_the_changed_customer(seeded_db, seeded_actors):
    manager = seeded_actors["manager"]
    period = report_periods.make_period("month", "2026-10-15")
    before = report_dashboard.dashboard(manager, period).raw
    customer = _ids(
        "SELECT id FROM customer WHERE status = 'active' AND registered_at >= '2026-09-30 16:00' "
        "AND registered_at < '2026-10-31 16:00' ORDER BY id LIMIT 1"
    )[0]
    _execute("UPDATE customer SET status = 'archived' WHERE id = :id", id=customer)
    with get_engine().connect() as conn:
        assert aggregates.pending_count(conn) == 1
    assert aggregates.apply_pending() == 1
    after = report_dashboard.dashboard(manager, period).raw
    assert after["new_customers"] == before["new_customers"] - 1
    assert after["total_customers"] == before["total_customers"] - 1


def test_a_write_that_changes_nothing_reported_marks_nobody(seeded_db, seeded_actors):
    report_dashboard.dashboard(seeded_actors["manager"], PERIODS[0])
    _execute("UPDATE customer SET company = 'ACME' WHERE id = 1")
    with get_engine().connect() as conn:
        assert aggregates.pending_count(conn) == 0


def test_changing_the_zone_rebuilds_for_the_new_local_days(seeded_db, seeded_actors, monkeypatch):
    from meiqia_app.config import reload_settings

    check_everything(seeded_actors["manager"])
    monkeypatch.setenv("MEIQIA_TIMEZONE", "America/New_York")  # with daylight saving time
    reload_settings()
    try:
        check_everything(seeded_actors["manager"], "America/New_York")
        assert aggregates.state()["zone"] == "America/New_York"
    finally:
        monkeypatch.delenv("MEIQIA_TIMEZONE")
        reload_settings()
    report_dashboard.dashboard(seeded_actors["manager"], PERIODS[0])
    assert aggregates.state()["zone"] == "Asia/Shanghai"


def test_big_database_builds_in_the_background_and_dashboard_says_computing(seeded_db, seeded_actors, monkeypatch):
    monkeypatch.setattr(aggregates, "SYNC_BUILD_LIMIT", 10)
    manager = seeded_actors["manager"]
    _execute("DELETE FROM app_setting WHERE key = :k", k=aggregates.STATE_KEY)
    view = report_views.dashboard_view(manager, {"kind": "month", "anchor": "2026-10-15"}, True)
    if view.computing:
        assert view.stale and view.trend == [] and all(c["value"] == "—" for c in view.cards)
    aggregates.wait_for_background()
    view = report_views.dashboard_view(manager, {"kind": "month", "anchor": "2026-10-15"}, True)
    assert not view.computing and not view.stale
    with get_engine().connect() as conn:
        built = conn.execute(
            text("SELECT status, processed FROM job WHERE kind = :k"), {"k": "reports.aggregates_build"}
        )
        assert [tuple(row) for row in built] == [("done", aggregates.state()["customers"])]  # a job of the runner
    check_everything(manager)


def test_a_build_interrupted_by_a_restart_resumes_and_takes_its_own_claim_over(seeded_db, seeded_actors):
    """The build's job was running in a process that died a moment ago: its claim still looks
    alive (fresh heartbeat), yet the resumed job takes it over instead of waiting minutes."""
    from meiqia_app.models import Job
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.platform import jobs
    from meiqia_app.timeutil import utcnow

    job_id = jobs.create_job(SYSTEM_ACTOR, aggregates.BUILD_JOB_KIND, {})
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.owner, job.heartbeat_at = "running", "gone-host|b|n|1|2", utcnow() - dt.timedelta(hours=1)
        session.add(job)
    claim = {"status": "building", "zone": "Asia/Shanghai", "heartbeat": utcnow().isoformat(), "token": f"job-{job_id}"}
    with write_session() as session:
        aggregates._write_state(session.connection(), claim)
    assert aggregates.ensure_current() == (False, True)  # "being computed" by that (dead) build

    assert jobs.resume_interrupted_jobs() == [job_id]
    assert jobs.wait([job_id], 60)
    assert aggregates.state()["status"] == "ready"
    assert jobs.job_view(SYSTEM_ACTOR, job_id).result["built"] is True
    check_everything(seeded_actors["manager"])


def test_many_changes_are_applied_in_the_background(seeded_db, seeded_actors, monkeypatch):
    manager = seeded_actors["manager"]
    report_dashboard.dashboard(manager, PERIODS[0])
    monkeypatch.setattr(aggregates, "SYNC_APPLY_LIMIT", 5)
    _execute(
        "UPDATE customer SET status = 'archived' WHERE id IN (SELECT id FROM customer WHERE status = 'active' "
        "ORDER BY id LIMIT 40)"
    )
    report_cache.take_served_stale()
    report_dashboard.dashboard(manager, PERIODS[0])
    assert report_cache.take_served_stale()  # figures behind: the page asks again
    aggregates.wait_for_background()
    check_everything(manager)


def test_empty_database_needs_no_build_time(db, actors):
    board = report_dashboard.dashboard(actors["manager"], report_periods.make_period("month", "2026-10-01"))
    assert not board.computing and board.raw["total_customers"] == 0
    assert aggregates.state()["status"] == "ready"


def test_local_day_of_fractional_offset_zone():
    day_of = aggregates.DayOf(ZoneInfo("Asia/Kolkata"))  # +05:30: local midnight at 18:30 UTC
    assert dt.date.fromordinal(day_of("2026-10-31 18:29:59.999999")) == dt.date(2026, 10, 31)
    assert dt.date.fromordinal(day_of("2026-10-31 18:30:00.000000")) == dt.date(2026, 11, 1)
    assert dt.date.fromordinal(day_of(dt.datetime(2026, 10, 31, 18, 45, tzinfo=UTC))) == dt.date(2026, 11, 1)
    assert day_of(None) == 0


def test_big_segments_are_computed_from_the_rows_with_the_same_figures(seeded_db, seeded_actors, monkeypatch):
    from meiqia_app.services.customers.query import ListQuery

    monkeypatch.setattr(report_dashboard, "SEGMENT_LEDGER_MAX", 0)  # as for a segment of more than 50k customers
    report_cache.invalidate_cache()
    rows = Rows(None)
    manager = seeded_actors["manager"]
    segment = ListQuery(sources=("wechat", "app"), lifecycle=("active", "new", "churned"))
    in_segment = lambda c: c["source"] in ("wechat", "app") and c["lifecycle"] in ("active", "new", "churned")  # noqa: E731
    for a, b in ((PERIODS[3], PERIODS[0]), (PERIODS[2], PERIODS[1])):
        result = report_trends.compare_periods(manager, segment, a, b)
        assert_same(result.raw_a, expected(rows, *bounds(a.first, a.last), segment=in_segment))
        assert_same(result.raw_b, expected(rows, *bounds(b.first, b.last), segment=in_segment))
    # The same segment from the ledger gives the same answer.
    monkeypatch.setattr(report_dashboard, "SEGMENT_LEDGER_MAX", 50_000)
    report_cache.invalidate_cache()
    again = report_trends.compare_periods(manager, segment, PERIODS[2], PERIODS[1])
    assert again.raw_a == result.raw_a and again.raw_b == result.raw_b
