"""Custom fields on the customer list (issue 23): the admin defines a select "会员来源" and a
sensitive text through /admin/fields, an agent sets both on a customer (the sensitive one shown
masked after saving), filters the list by the select and shows both columns, saves the view; the
admin renames the label and the saved view still finds the customer."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.site_pages import open_route
from tests.e2e.test_custom_fields import KEYS, _define_select_and_sensitive_text

PHONE = {"width": 390, "height": 844}
VIEW = "门店会员"


def _pick(page, trigger: str, option: str) -> None:
    page.locator(trigger).click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.pg
def test_the_list_filters_by_a_custom_select_shows_its_columns_and_a_saved_view_survives_a_rename(page, app_server):
    with app_server.sql() as db:
        customer_id = db.execute(
            "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL AND owner_id IS NULL "
            "ORDER BY id LIMIT 1 OFFSET 41"
        ).fetchone()[0]
    try:
        login(page, app_server, "admin", "/admin/fields")
        _define_select_and_sensitive_text(page)

        page.context.clear_cookies()
        login(page, app_server, "agent", f"/customers/{customer_id}")
        page.locator("#edit-customer").click()
        page.locator("#edit-cf-member_source").select_option(label="门店")
        page.locator("#edit-cf-id_number").fill("110101199001011234")
        page.locator("#edit-save").click()
        expect(page.locator("#field-cf-member_source")).to_have_text("门店")
        expect(page.locator("#field-cf-id_number")).to_have_text("****")  # the agent lacks view_sensitive

        open_route(page, "/customers")
        # The filter offers the select, never the field the agent sees masked.
        page.locator("#open-cf-filter").click()
        page.locator("#cf-filter-field").click()
        expect(page.get_by_role("option", name="证件号码")).to_have_count(0)
        page.get_by_role("option", name="会员来源", exact=True).click()
        _pick(page, "#cf-filter-value", "门店")
        page.locator("#cf-filter-apply").click()
        expect(page.locator(".filter-chip")).to_have_text("会员来源：门店")
        rows = page.locator("#customer-table .customer-row")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-customer-id", str(customer_id))
        expect(page.locator("#match-count")).to_contain_text("1")

        # Both custom columns, by label: the select's value and the sensitive one masked.
        page.locator("#choose-columns").click()
        page.locator(".cf-column-choice[data-field='cf.member_source']").click()
        page.locator(".cf-column-choice[data-field='cf.id_number']").click()
        page.keyboard.press("Escape")
        expect(page.locator("th[data-field='cf.member_source']")).to_have_text("会员来源")
        expect(rows.first.locator("td[data-field='cf.member_source']")).to_have_text("门店")
        expect(rows.first.locator("td[data-field='cf.id_number']")).to_have_text("****")

        # At phone width the chip and the row still fit.
        page.set_viewport_size(PHONE)
        chip = page.locator(".filter-chip").bounding_box()
        assert chip is not None and chip["x"] >= 0 and chip["x"] + chip["width"] <= PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.set_viewport_size({"width": 1400, "height": 900})

        page.locator("#views-menu").click()
        page.locator("#save-view").click()
        page.locator("#view-name").fill(VIEW)
        page.locator("#save-view-submit").click()
        expect(page.get_by_text(f"已保存视图 {VIEW}")).to_be_visible()

        # The admin renames the label; the view names the field by its key.
        page.context.clear_cookies()
        login(page, app_server, "admin", "/admin/fields")
        open_route(page, "/admin/fields")
        page.locator("#field-edit-member_source").click()
        page.locator("#field-edit-label-zh").fill("会员来源渠道")
        page.locator("#field-edit-save").click()
        expect(page.locator("#field-card-member_source")).to_contain_text("会员来源渠道")

        page.context.clear_cookies()
        login(page, app_server, "agent", "/customers")
        page.locator("#views-menu").click()
        page.locator(".view-item").filter(has_text=VIEW).click()
        expect(page.locator(".filter-chip")).to_have_text("会员来源渠道：门店")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-customer-id", str(customer_id))
        expect(page.locator("th[data-field='cf.member_source']")).to_have_text("会员来源渠道")
        expect(page.locator("#cf-ignored-notice")).to_have_count(0)
    finally:
        with app_server.sql() as db:
            for key in KEYS:
                db.execute(f"DROP INDEX IF EXISTS ix_cf_{key}")
            db.execute("DELETE FROM custom_field WHERE key IN (?, ?)", KEYS)
            db.execute("DELETE FROM saved_view WHERE name = ?", (VIEW,))
            db.execute("UPDATE customer SET custom_fields = '{}' WHERE id = ?", (customer_id,))


def test_manager_sets_a_custom_field_on_ticked_rows_with_the_typed_count_and_sorts_by_it(page, app_server):
    """Bulk edit from the list: the count typed wrong is refused, typed right the job runs and the
    column shows the new value; the custom column sorts."""
    with app_server.sql() as db:
        db.execute(
            "INSERT INTO custom_field (key, label_zh, label_en, field_type, options, group_zh, group_en, required,"
            " sensitive, shown_in_list, sort_order, status, version, created_at, updated_at, updated_by_name)"
            " VALUES ('bulk_level', '等级', 'Level', 'single_select',"
            ' \'[{"id":"o1","zh":"甲","en":"","order":1},{"id":"o2","zh":"乙","en":"","order":2}]\','
            " '', '', 0, 0, 1, 99, 'active', 1, '2026-01-01', '2026-01-01', '')"
        )
    ids: list[str] = []
    try:
        login(page, app_server, "manager", "/customers")
        # The field was written straight to the database, so the app sees it once its cached
        # definitions expire (catalog.CACHE_SECONDS): open the list again until the column is there.
        header = page.locator("th[data-field='cf.bulk_level']")
        deadline = time.monotonic() + 20
        while not header.count() and time.monotonic() < deadline:
            open_route(page, "/customers")
        expect(header).to_have_text("等级")
        # Customers erased by other tests stay as tombstones (read-only: a bulk edit passes them by).
        rows = page.locator("#customer-table .customer-row").filter(has_not_text="已删除")
        ids += [rows.nth(i).get_attribute("data-customer-id") for i in range(2)]
        rows.nth(0).locator(".row-select").click()
        rows.nth(1).locator(".row-select").click()
        page.locator("#bulk-edit").click()
        page.locator("#bulk-edit-field").click()
        page.get_by_role("option", name="等级", exact=True).click()
        page.locator("#bulk-edit-value").click()
        page.get_by_role("option", name="乙", exact=True).click()
        page.locator("#bulk-edit-check").click()
        expect(page.locator("#bulk-edit-explained")).to_contain_text("2")
        page.locator("#bulk-edit-confirm").fill("3")
        page.locator("#bulk-edit-submit").click()
        expect(page.locator("#bulk-edit-error")).to_be_visible()
        page.locator("#bulk-edit-confirm").fill("2")
        page.locator("#bulk-edit-submit").click()
        expect(page.get_by_text("已修改 2 位客户")).to_be_visible(timeout=20000)
        expect(rows.nth(0).locator("td[data-field='cf.bulk_level']")).to_have_text("乙")
        with app_server.sql() as db:
            docs = [db.execute("SELECT custom_fields FROM customer WHERE id = ?", (int(i),)).fetchone()[0] for i in ids]
            audited = db.execute(
                "SELECT details FROM audit_entry WHERE action = 'customer.bulk_edit' ORDER BY id DESC LIMIT 1"
            ).fetchone()[0]
        assert [(json.loads(d) if isinstance(d, str) else d).get("bulk_level") for d in docs] == ["o2", "o2"]
        assert json.loads(audited)["field"] == "cf.bulk_level" and json.loads(audited)["count"] == 2
        page.locator("#customer-table th button.cf-sort").click()
        expect(page.locator("th[data-field='cf.bulk_level']")).to_have_attribute("aria-sort", "ascending")
    finally:
        with app_server.sql() as db:
            db.execute("DELETE FROM custom_field WHERE key = 'bulk_level'")
            for customer_id in ids:
                db.execute("UPDATE customer SET custom_fields = '{}' WHERE id = ?", (int(customer_id),))
