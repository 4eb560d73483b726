"""Custom fields on the customer list (issue 23): the admin defines a select "会员来源" and a
sensitive text through /admin/fields, an agent sets both on a customer (the sensitive one shown
masked after saving), filters the list by the select and shows both columns, saves the view; the
admin renames the label and the saved view still finds the customer."""

from __future__ import annotations

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
