"""Custom fields (issue 23): an admin defines them at /admin/fields, an agent fills them in on a customer."""

from __future__ import annotations

import json
import time

from playwright.sync_api import expect

from tests.e2e import axe
from tests.e2e.conftest import login
from tests.e2e.site_pages import open_route

KEYS = ("member_source", "id_number")
PHONE = {"width": 390, "height": 844}


def _serious(page) -> list[dict]:
    """axe-core's critical and serious findings on the page as it is now."""
    expect(page.locator("[data-sonner-toast]")).to_have_count(0)  # toasts come and go; the page stays
    return [v for v in axe.run_axe(page, axe.ensure_axe()) if v["impact"] in ("critical", "serious")]


def _fits(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    width = page.evaluate("window.innerWidth")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box, width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def _define_select_and_sensitive_text(page) -> None:
    open_route(page, "/admin/fields")
    page.locator("#field-key").fill("member_source")
    page.locator("#field-label-zh").fill("会员来源")
    page.locator("#field-label-en").fill("Member source")
    page.locator("#field-group-zh").fill("会员信息")
    page.locator("#field-type").click()
    page.get_by_role("option", name="单选", exact=True).click()
    page.locator("#field-options").fill("官网 / Website\n门店 / Store\n老客户推荐 / Referral")
    page.locator("#field-create").click()
    expect(page.get_by_text("已创建字段 会员来源")).to_be_visible()
    expect(page.locator("#field-card-member_source")).to_contain_text("门店")

    page.locator("#field-key").fill("id_number")
    page.locator("#field-label-zh").fill("证件号码")
    page.locator("#field-group-zh").fill("会员信息")
    page.locator("#field-type").click()
    page.get_by_role("option", name="单行文本", exact=True).click()
    page.locator("#field-new-sensitive").click()
    page.locator("#field-create").click()
    expect(page.get_by_text("已创建字段 证件号码")).to_be_visible()
    expect(page.locator("#field-card-id_number")).to_contain_text("敏感")


def test_admin_defines_fields_and_an_agent_fills_them_in_seeing_the_sensitive_one_masked(page, app_server):
    with app_server.sql() as db:
        customer_id = db.execute(
            "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL AND owner_id IS NULL "
            "ORDER BY id LIMIT 1 OFFSET 37"
        ).fetchone()[0]
    try:
        login(page, app_server, "admin", "/admin/fields")
        _define_select_and_sensitive_text(page)
        assert _serious(page) == []
        page.set_viewport_size(PHONE)  # usable on a phone: nothing scrolls sideways
        _fits(page, "#field-card-member_source")
        page.locator("#field-options-member_source").click()
        _fits(page, "[role=dialog]")
        page.keyboard.press("Escape")
        page.set_viewport_size({"width": 1400, "height": 900})

        page.context.clear_cookies()  # another user: the admin's session must not stay in the way
        login(page, app_server, "agent", f"/customers/{customer_id}")
        expect(page.locator("#customer-name")).to_be_visible()
        page.locator("#edit-customer").click()
        expect(page.locator("#edit-cf-member_source")).to_be_visible()
        assert _serious(page) == []
        page.locator("#edit-cf-member_source").select_option(label="门店")
        page.locator("#edit-cf-id_number").fill("110101199001011234")
        page.locator("#edit-save").click()
        expect(page.get_by_text("已保存")).to_be_visible()
        expect(page.locator("#field-cf-member_source")).to_have_text("门店")
        expect(page.locator("#field-cf-id_number")).to_have_text("****")
        expect(page.get_by_role("heading", name="会员信息")).to_be_visible()

        with app_server.sql() as db:
            stored = db.execute("SELECT custom_fields FROM customer WHERE id = ?", (customer_id,)).fetchone()[0]
            details = db.execute(
                "SELECT details FROM audit_entry WHERE action = 'customer.update' AND target_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (str(customer_id),),
            ).fetchone()[0]
        stored = json.loads(stored) if isinstance(stored, str) else stored
        assert stored == {"member_source": "o2", "id_number": "110101199001011234"}
        changes = json.loads(details)["changes"]
        assert changes["cf.member_source"] == [None, "o2"] and changes["cf.id_number"] == [None, "****"]

        # The form offers the masked value empty; saving it so keeps the value.
        page.locator("#edit-customer").click()
        expect(page.locator("#edit-cf-id_number")).to_have_value("")
        page.locator("#edit-save").click()
        expect(page.locator("#field-cf-id_number")).to_have_text("****")
        with app_server.sql() as db:
            kept = db.execute("SELECT custom_fields FROM customer WHERE id = ?", (customer_id,)).fetchone()[0]
        kept = json.loads(kept) if isinstance(kept, str) else kept
        assert kept["id_number"] == "110101199001011234"
    finally:
        # Later tests see the app without these fields.
        with app_server.sql() as db:
            for key in KEYS:
                db.execute(f"DROP INDEX IF EXISTS ix_cf_{key}")
            db.execute("DELETE FROM custom_field WHERE key IN (?, ?)", KEYS)
            db.execute("UPDATE customer SET custom_fields = '{}' WHERE id = ?", (customer_id,))


def test_admin_edits_options_renames_the_label_and_deletes_the_field_by_its_key(page, app_server):
    try:
        login(page, app_server, "admin", "/admin/fields")
        open_route(page, "/admin/fields")
        page.locator("#field-key").fill("visit_channel")
        page.locator("#field-label-zh").fill("来访渠道")
        page.locator("#field-type").click()
        page.get_by_role("option", name="多选", exact=True).click()
        page.locator("#field-options").fill("电话\n微信")
        page.locator("#field-create").click()
        expect(page.locator("#field-card-visit_channel")).to_contain_text("微信")

        page.locator("#field-options-visit_channel").click()
        page.locator("#option-new-zh").fill("邮件")
        page.locator("#option-add").click()
        expect(page.locator("#option-zh-o3")).to_have_value("邮件")
        page.locator("#option-zh-o1").fill("电话回访")
        page.locator("#option-rename-o1").click()
        expect(page.locator("#field-card-visit_channel")).to_contain_text("电话回访")
        page.locator("#option-retire-o2").click()
        expect(page.locator("#option-restore-o2")).to_be_visible()
        page.keyboard.press("Escape")

        page.locator("#field-edit-visit_channel").click()
        page.locator("#field-edit-label-zh").fill("客户来访渠道")
        page.locator("#field-edit-save").click()
        expect(page.locator("#field-card-visit_channel")).to_contain_text("客户来访渠道")
        with app_server.sql() as db:
            key, label, options = db.execute(
                "SELECT key, label_zh, options FROM custom_field WHERE key = 'visit_channel'"
            ).fetchone()
        assert (key, label) == ("visit_channel", "客户来访渠道")  # renaming never changes the key
        assert [(o["id"], o["zh"], o["retired"]) for o in json.loads(options)] == [
            ("o1", "电话回访", False),
            ("o2", "微信", True),
            ("o3", "邮件", False),
        ]

        page.locator("#field-delete-visit_channel").click()
        page.locator("#field-delete-confirm").fill("来访渠道")
        page.locator("#field-delete-submit").click()
        expect(page.get_by_text("请输入该字段的标识以确认删除")).to_be_visible()
        page.locator("#field-delete-confirm").fill("visit_channel")
        page.locator("#field-delete-submit").click()
        expect(page.locator("#field-card-visit_channel")).to_have_count(0)
        with app_server.sql() as db:
            for _ in range(40):  # the purge job removes the definition when the values are gone
                if db.execute("SELECT count(*) FROM custom_field WHERE key = 'visit_channel'").fetchone()[0] == 0:
                    break
                time.sleep(0.5)
            assert db.execute("SELECT count(*) FROM custom_field WHERE key = 'visit_channel'").fetchone()[0] == 0
            assert (
                db.execute(
                    "SELECT count(*) FROM audit_entry WHERE action IN ('field.delete', 'field.purge', 'field.option')"
                ).fetchone()[0]
                >= 5
            )
    finally:
        with app_server.sql() as db:
            db.execute("DELETE FROM custom_field WHERE key = 'visit_channel'")
