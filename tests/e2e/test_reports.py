"""Dashboard and reports in Chromium: a manager changes the period, compares
two periods and exports; the figures match the database and the XLSX."""

from __future__ import annotations

import datetime as dt
import io
import os
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path

ZONE = ZoneInfo("Asia/Shanghai")


def _month_bounds(first: dt.date) -> tuple[str, str]:
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    start = dt.datetime.combine(first, dt.time.min, tzinfo=ZONE).astimezone(dt.UTC)
    end = dt.datetime.combine(nxt, dt.time.min, tzinfo=ZONE).astimezone(dt.UTC)
    return start.strftime(fmt), end.strftime(fmt)


def _new_customers(app_server, first: dt.date) -> int:
    start, end = _month_bounds(first)
    with app_server.sql() as db:
        return db.execute(
            "SELECT count(*) FROM customer WHERE status = 'active' AND registered_at >= ? AND registered_at < ?",
            (start, end),
        ).fetchone()[0]


def _shot(page, name: str) -> None:
    """Screenshots for a person to look at, when MEIQIA_E2E_SHOTS names a folder."""
    folder = os.environ.get("MEIQIA_E2E_SHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def _pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)


def _number(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_anonymous_visitor_at_root_goes_to_login(page):
    page.goto("/")
    wait_for_path(page, "/login")


@pytest.mark.pg
def test_manager_dashboard_period_change_and_export(page, app_server):
    login(page, app_server, "manager", next_path="/")
    value = page.locator("#kpi-new_customers-value")
    expect(value).to_be_visible(timeout=30_000)
    # Just after the server starts, the daily aggregates may still be in their
    # first build: the page says so and fetches the figures once they are ready.
    expect(page.locator("#dashboard-computing")).to_have_count(0, timeout=120_000)
    today = dt.datetime.now(ZONE).date()
    this_month = today.replace(day=1)
    # This month is under way: its days up to today, against the same days of last month.
    so_far = today.isoformat() if today == this_month else f"{this_month.isoformat()} ~ {today.isoformat()}"
    month_ends_today = (today + dt.timedelta(days=1)).day == 1
    if month_ends_today:  # the whole month has happened: compared with the whole month before
        so_far = this_month.strftime("%Y-%m")
    expect(page.locator("#period-label")).to_have_text(so_far)
    if not month_ends_today:
        expect(page.locator("#period-note")).to_contain_text("本月截至今天")
        expect(page.locator("#period-note")).to_contain_text("对比上月同期")
    expect(page.locator("#period-next")).to_be_disabled()
    expect(value).to_have_text(f"{_new_customers(app_server, this_month):,}")
    # Tables beside the charts are filled; the trend has no day after today.
    expect(page.locator("#trend-table tbody tr")).to_have_count(today.day)
    expect(page.locator("#trend-table tbody tr").last).to_contain_text(today.isoformat())
    expect(page.locator("#sources-table tbody tr")).to_have_count(8)
    # The arrow's colour says whether the change is good news: fewer complaints are.
    complaints = page.locator("#kpi-complaint_share .kpi-change")
    change = complaints.inner_text()  # "-0.7 pp", "+1.2 pp", "+0.0 pp" or "—"
    points = float(change.split()[0]) if change.startswith(("+", "-")) else 0.0
    if points:
        expect(complaints).to_have_attribute("data-tone", "good" if points < 0 else "bad")
    _shot(page, "dashboard-manager")

    # This week so far, against the same weekdays of last week; back to the month.
    page.locator("#period-week").click()
    if today.weekday() < 6:  # on a Sunday the week is whole
        expect(page.locator("#period-note")).to_contain_text("本周截至今天")
        expect(page.locator("#period-note")).to_contain_text("对比上周同期")
    expect(page.locator("#period-next")).to_be_disabled()
    page.locator("#period-month").click()
    expect(page.locator("#period-label")).to_have_text(so_far)

    # The month before: the figures change and match the database.
    previous_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    page.locator("#period-prev").click()
    expect(page.locator("#period-label")).to_have_text(previous_month.strftime("%Y-%m"))
    expect(page.locator("#period-note")).to_contain_text("对比上期")
    expect(page.locator("#period-next")).to_be_enabled()
    expect(value).to_have_text(f"{_new_customers(app_server, previous_month):,}")
    shown = _number(value.inner_text())
    shown_total = _number(page.locator("#kpi-total_customers-value").inner_text())

    # Week view changes the label to a range.
    page.locator("#period-week").click()
    expect(page.locator("#period-label")).to_contain_text("~")
    page.locator("#period-month").click()
    expect(page.locator("#period-label")).to_have_text(previous_month.strftime("%Y-%m"))

    with page.expect_download() as info:
        page.locator("#dashboard-export").click()
    download = info.value
    assert download.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(open(download.path(), "rb").read()))
    assert book.sheetnames == ["概览", "趋势", "生命周期", "来源渠道", "地区"]
    summary = {row[0]: row for row in book["概览"].iter_rows(min_row=2, values_only=True)}
    assert summary["新增客户"][2] == shown
    assert summary["客户总数"][2] == shown_total
    with app_server.sql() as db:
        assert (
            db.execute(
                "SELECT count(*) FROM audit_entry WHERE action = 'report.export' AND actor_name = 'manager'"
            ).fetchone()[0]
            >= 1
        )

    # The PDF of the same period: downloaded through the single-use token route, same figures.
    with page.expect_download() as info:
        page.locator("#dashboard-export-pdf").click()
    pdf = info.value
    assert pdf.suggested_filename.endswith(".pdf")
    lines = [line.strip() for line in _pdf_text(pdf.path()).splitlines()]
    at = lines.index("新增客户")
    assert lines[at + 2] == f"{shown:,}"  # previous, current, change
    assert "客户总数" in lines and f"{shown_total:,}" in lines
    with app_server.sql() as db:
        assert db.execute("SELECT count(*) FROM export_job WHERE kind = 'report' AND format = 'pdf'").fetchone()[0] >= 1


def test_manager_compares_two_periods_and_exports(page, app_server):
    login(page, app_server, "manager", next_path="/reports")
    table = page.locator("#comparison-table tbody tr")
    expect(table.first).to_be_visible(timeout=30_000)
    cohorts = page.locator("#cohort-table tbody tr")
    expect(cohorts).to_have_count(12)
    # The month after last month's registrations is still under way: no retention figure yet.
    for row in (cohorts.nth(11), cohorts.nth(10)):
        expect(row.locator("td").nth(2)).to_have_text("—")
    # Period B: this month so far; period A: the month before.
    today = dt.datetime.now(ZONE).date()
    first = today.replace(day=1)
    a_last = first - dt.timedelta(days=1)
    page.locator("#report-a_from").fill(a_last.replace(day=1).isoformat())
    page.locator("#report-a_to").fill(a_last.isoformat())
    page.locator("#report-b_from").fill(first.isoformat())
    page.locator("#report-b_to").fill(today.isoformat())
    page.locator("#report-run").click()
    new_row = page.locator("#comparison-table tbody tr", has_text="新增客户")
    expect(new_row.locator("td").nth(1)).to_have_text(f"{_new_customers(app_server, a_last.replace(day=1)):,}")
    expect(new_row.locator("td").nth(2)).to_have_text(f"{_new_customers(app_server, first):,}")
    _shot(page, "reports")
    with page.expect_download() as info:
        page.locator("#report-export").click()
    book = load_workbook(io.BytesIO(open(info.value.path(), "rb").read()))
    rows = {row[0]: row for row in book["周期对比"].iter_rows(min_row=2, values_only=True)}
    assert f"{rows['新增客户'][1]:,}" == new_row.locator("td").nth(1).inner_text()
    assert f"{rows['新增客户'][2]:,}" == new_row.locator("td").nth(2).inner_text()


def test_agent_gets_quick_search_not_reports(page, app_server):
    login(page, app_server, "agent", next_path="/")
    expect(page.locator("#quick-search")).to_be_visible(timeout=30_000)
    expect(page.locator("#kpi-cards")).to_have_count(0)
    expect(page.locator("#nav-reports")).to_have_count(0)
    _shot(page, "dashboard-agent")
    with app_server.sql() as db:
        name = db.execute("SELECT name FROM customer WHERE status = 'active' ORDER BY id LIMIT 1").fetchone()[0]
    page.locator("#quick-search").fill(name)
    page.locator("#quick-search-submit").click()
    wait_for_path(page, "/customers")
    expect(page.locator("#customer-table .customer-row").first).to_contain_text(name)
