"""A tag rule on a custom select field (issue 23): an admin defines the field, a manager
builds the rule in the rules editor by the field's label, previews the count, saves
and runs it; the tag lands on exactly the customers holding the option."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.site_pages import open_route

KEY = "rule_channel"


def test_manager_previews_and_runs_a_rule_on_a_custom_select_field(page, app_server):
    with app_server.sql() as db:
        *chosen, online = [
            row[0]
            for row in db.execute(
                "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL ORDER BY id LIMIT 5 OFFSET 11"
            ).fetchall()
        ]
    try:
        login(page, app_server, "admin", "/admin/fields")
        open_route(page, "/admin/fields")
        page.locator("#field-key").fill(KEY)
        page.locator("#field-label-zh").fill("渠道E2E")
        page.locator("#field-label-en").fill("Channel E2E")
        page.locator("#field-type").click()
        page.get_by_role("option", name="单选", exact=True).click()
        page.locator("#field-options").fill("线上 / Online\n线下 / Offline")
        page.locator("#field-create").click()
        expect(page.get_by_text("已创建字段 渠道E2E")).to_be_visible()
        with app_server.sql() as db:
            for customer_id in chosen:
                db.execute("UPDATE customer SET custom_fields = ? WHERE id = ?", (json.dumps({KEY: "o2"}), customer_id))
            db.execute("UPDATE customer SET custom_fields = ? WHERE id = ?", (json.dumps({KEY: "o1"}), online))

        page.context.clear_cookies()
        login(page, app_server, "manager", next_path="/tags")
        page.locator("#new-tag").click()
        page.locator("#tag-name").fill("线下E2E")
        page.locator("#tag-save").click()
        expect(page.locator("#tag-table").get_by_text("线下E2E")).to_be_visible()
        page.locator("#tab-rules").click()
        expect(page.locator("#rule-table")).to_be_visible()
        page.locator("#new-rule").click()
        page.locator("#rule-name").fill("线下渠道")
        page.locator("#rule-tag").click()
        page.get_by_role("option", name="线下E2E").click()
        page.locator("#cond-field-0").click()
        page.get_by_role("option", name="渠道E2E").click()
        expect(page.locator("#cond-choice-0")).to_contain_text("线上")
        page.locator("#cond-choice-0").click()
        page.get_by_role("option", name="线下").click()
        page.locator("#rule-preview-button").click()
        expect(page.locator("#preview-matching")).to_have_text(str(len(chosen)))

        page.locator("#rule-save").click()
        expect(page.locator("#rule-table").get_by_text("线下渠道")).to_be_visible()
        expect(page.locator("#rule-table")).to_contain_text("渠道E2E = 线下")
        with app_server.sql() as db:
            rule_id, conditions = db.execute("SELECT id, conditions FROM tag_rule WHERE name = '线下渠道'").fetchone()
            tag_id = db.execute("SELECT id FROM tag WHERE name = '线下E2E'").fetchone()[0]
        assert f'"cf.{KEY}"' in conditions and '"o2"' in conditions  # the option id, not the label
        page.locator(f"#run-rule-{rule_id}").click()
        expect(page.locator("#job-status")).to_have_text("done", timeout=60_000)
        with app_server.sql() as db:
            tagged = {r[0] for r in db.execute("SELECT customer_id FROM tag_assignment WHERE tag_id = ?", (tag_id,))}
        assert tagged == set(chosen)
    finally:
        with app_server.sql() as db:
            db.execute("DELETE FROM tag_rule WHERE name = '线下渠道'")
            db.execute(f"DROP INDEX IF EXISTS ix_cf_{KEY}")
            db.execute("DELETE FROM custom_field WHERE key = ?", (KEY,))
            for customer_id in [*chosen, online]:
                db.execute("UPDATE customer SET custom_fields = '{}' WHERE id = ?", (customer_id,))
