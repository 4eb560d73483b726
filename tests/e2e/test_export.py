"""Exports in the browser: the wizard from the customer list's filter to a
downloaded XLSX whose cells match the database, and an analyst's request that
waits for a manager's approval."""

from __future__ import annotations

import json
import os

import openpyxl
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import CHROMIUM_ARGS, login, wait_for_path  # noqa: F401


def _shot(page, name: str) -> None:
    """MEIQIA_E2E_SHOTS=<dir> keeps screenshots of the wizard's steps for a look."""
    folder = os.environ.get("MEIQIA_E2E_SHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"export-{name}.png"), full_page=True)


def _run_and_download(page, target):
    """Run the reviewed export, wait for it, download the file to ``target``: (target, suggested name)."""
    page.locator("#export-run").click()
    download_button = page.locator("#export-download")
    expect(download_button).to_be_visible(timeout=60_000)
    with page.expect_download() as info:
        download_button.click()
    info.value.save_as(target)
    return target, info.value.suggested_filename


def _db(app_server):
    return app_server.sql()


@pytest.mark.pg
def test_manager_exports_the_current_filter_to_xlsx_and_the_cells_match_the_database(page, app_server, tmp_path):
    login(page, app_server, "manager")
    page.locator("#open-filters").click()
    page.get_by_role("checkbox", name="微信").click()
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(1)
    page.get_by_role("link", name="数据导出").click()
    wait_for_path(page, "/export")
    expect(page.locator("#current-filter-text")).to_contain_text("来源渠道: 微信")
    expect(page.locator("#scope-current")).to_have_attribute("data-state", "checked")
    page.locator("#export-next").click()
    # Fields: the minimal default set minus city and source, plus the order count.
    page.locator("#field-city").click()
    page.locator("#field-source").click()
    page.locator("#field-order_count").click()
    expect(page.locator("#field-reason-phone")).to_have_count(0)  # managers may export phones
    _shot(page, "fields")
    page.locator("#export-next").click()
    page.locator("#format-xlsx").click()
    page.locator("#export-next").click()
    with _db(app_server) as db:
        expected = db.execute(
            "SELECT id, name, lifecycle_stage, registered_at, order_count FROM customer "
            "WHERE status='active' AND source='wechat' ORDER BY id"
        ).fetchall()
    expect(page.locator("#review-rows")).to_have_text(str(len(expected)))
    expect(page.locator("#review-allowed")).to_be_visible()
    _shot(page, "review")
    target, suggested = _run_and_download(page, tmp_path / "export.xlsx")
    assert suggested.endswith(".xlsx")
    sheet = openpyxl.load_workbook(target).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("客户ID", "姓名", "生命周期", "注册时间", "订单数")
    assert [(r[0], r[1], r[4]) for r in rows[1:]] == [(e[0], e[1], e[4]) for e in expected]
    # The link was single-use: the history offers a fresh one and shows the hash.
    page.goto("/exports")
    expect(page.locator("#export-history")).to_contain_text("XLSX")
    _shot(page, "history")
    with _db(app_server) as db:
        actions = [r[0] for r in db.execute("SELECT action FROM audit_entry WHERE action LIKE 'export.%' ORDER BY id")]
    assert {"export.request", "export.run", "export.download"} <= set(actions)


def test_audit_page_exports_preset_shows_only_export_steps(page, app_server):
    login(page, app_server, "admin", "/audit")
    expect(page.locator("#audit-table .audit-row").first).to_be_visible()
    logins = page.locator('#audit-table .audit-row[data-action="auth.login"]')
    expect(logins.first).to_be_visible()
    page.locator("#audit-preset-exports").click()
    expect(page.locator("#audit-preset-exports")).to_have_attribute("data-active", "true")
    expect(logins).to_have_count(0)
    rows = page.locator("#audit-table .audit-row")
    for i in range(rows.count()):
        action = rows.nth(i).get_attribute("data-action")  # the raw action code of the entry
        assert action.startswith("export.") or action in ("report.export", "role.export_policy"), action
    page.locator("#audit-preset-export-alerts").click()
    expect(page.locator("#audit-preset-export-alerts")).to_have_attribute("data-active", "true")
    page.locator("#audit-preset-none").click()
    expect(logins.first).to_be_visible()


@pytest.mark.pg
def test_analyst_request_waits_for_approval_and_a_manager_approves(page, app_server, browser):
    with _db(app_server) as db:
        raw = db.execute("SELECT export_policy FROM role WHERE name='data_analyst'").fetchone()[0]
        policy = {**json.loads(raw), "approval_required": True, "approval_over_rows": 0, "window_days": 0}
        db.execute("UPDATE role SET export_policy=? WHERE name='data_analyst'", (json.dumps(policy),))
    try:
        _analyst_requests_and_manager_approves(page, app_server, browser)
    finally:  # the analyst's policy is shared by the whole run
        with _db(app_server) as db:
            db.execute("UPDATE role SET export_policy=? WHERE name='data_analyst'", (raw,))


def _analyst_requests_and_manager_approves(page, app_server, browser):
    login(page, app_server, "analyst", "/export")
    expect(page.locator("#scope-current")).to_be_disabled()  # no filter set in the customer list
    page.locator("#source-wechat").click()
    page.locator("#purpose").click()
    page.get_by_role("option", name="客户服务").click()
    page.locator("#export-next").click()
    expect(page.locator("#field-reason-phone")).to_be_visible()  # sensitive fields disabled with a reason
    page.locator("#export-step-4").click()
    expect(page.locator("#review-needs-approval")).to_be_visible()
    page.locator("#export-run").click()
    expect(page.locator("#export-pending")).to_be_visible()
    with _db(app_server) as db:
        export_id, status = db.execute(
            "SELECT id, status FROM export_job WHERE requested_by_name='analyst' ORDER BY id DESC"
        ).fetchone()
    assert status == "pending_approval"

    context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    manager = context.new_page()
    try:
        login(manager, app_server, "manager", "/exports/approvals")
        expect(manager.locator(f"#approve-{export_id}")).to_be_visible()
        # what the request is for, next to who asked
        row = manager.locator(f'.approval-card[data-export-id="{export_id}"]')
        expect(row.locator(".approval-purpose")).to_have_text("客户服务")
        _shot(manager, "approvals")
        manager.locator(f"#approve-{export_id}").click()
        manager.locator("#decision-comment").fill("用于季度复盘")
        manager.locator("#decision-submit").click()
        expect(manager.locator("#approvals-empty")).to_be_visible()
    finally:
        context.close()
    # The analyst's wizard, still open and never reloaded, follows the decision to the download.
    expect(page.locator("#export-download")).to_be_visible(timeout=30_000)
    expect(page.locator("#export-status")).to_have_attribute("data-status", "done")
    expect(page.locator("#export-decision")).to_contain_text("已由 manager 批准")
    expect(page.locator("#export-decision")).to_contain_text("用于季度复盘")
    expect(page.locator("#export-pending")).to_have_count(0)
    _shot(page, "approved-live")
    with _db(app_server) as db:
        status, approver = db.execute(
            "SELECT status, approver_name FROM export_job WHERE id=?", (export_id,)
        ).fetchone()
    assert approver == "manager" and status == "done"
    with page.expect_download() as download:
        page.locator("#export-download").click()
    assert download.value.suggested_filename.endswith(".csv")
    page.goto("/exports")
    expect(page.locator(f"#history-status-{export_id}")).to_have_attribute("data-status", "done", timeout=30_000)


def test_ticked_rows_of_the_list_are_the_export_scope(page, app_server, tmp_path):
    login(page, app_server, "manager")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.first).to_be_visible()
    ticked = sorted(int(rows.nth(i).get_attribute("data-customer-id")) for i in (0, 1))
    for i in (0, 1):
        rows.nth(i).locator(".row-select").click()
    page.locator("#bulk-export").click()
    wait_for_path(page, "/export")
    expect(page.locator("#scope-ticked")).to_have_attribute("data-state", "checked")
    expect(page.locator("#ticked-text")).to_contain_text("2")
    page.locator("#export-step-4").click()
    expect(page.locator("#review-rows")).to_have_text("2")
    target, _ = _run_and_download(page, tmp_path / "ticked.csv")
    lines = target.read_bytes().decode("utf-8-sig").split("\r\n")
    assert sorted(int(line.split(",")[0]) for line in lines[1:] if line) == ticked


def test_paid_orders_are_a_list_chip_and_an_export_scope(page, app_server, tmp_path):
    """已付款: a chip in the customer list, and in the wizard's own scope the file holds
    exactly the customers with a paid order."""
    login(page, app_server, "manager")
    page.locator("#open-filters").click()
    page.get_by_role("checkbox", name="已付款").click()
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(1)
    expect(page.locator(".filter-chip")).to_contain_text("有订单状态: 已付款")
    page.locator("#clear-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(0)
    page.get_by_role("link", name="数据导出").click()
    wait_for_path(page, "/export")
    expect(page.locator("#scope-all")).to_have_attribute("data-state", "checked")
    page.locator("#order-status-paid").click()
    _shot(page, "scope-order-status")
    with _db(app_server) as db:
        expected = [
            r[0]
            for r in db.execute(
                "SELECT id FROM customer WHERE status='active' AND id IN "
                "(SELECT customer_id FROM customer_order WHERE status='paid') ORDER BY id"
            ).fetchall()
        ]
        active = db.execute("SELECT count(*) FROM customer WHERE status='active'").fetchone()[0]
    assert 0 < len(expected) < active
    page.locator("#export-step-4").click()
    expect(page.locator("#review-scope")).to_contain_text("有订单状态: 已付款")
    expect(page.locator("#review-rows")).to_have_text(str(len(expected)))
    target, _ = _run_and_download(page, tmp_path / "paid.csv")
    lines = target.read_bytes().decode("utf-8-sig").split("\r\n")
    assert [int(line.split(",")[0]) for line in lines[1:] if line] == expected
