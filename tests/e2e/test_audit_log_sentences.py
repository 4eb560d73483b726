"""In Chromium: /audit says what happened in a sentence, in the chosen language, and
shows the raw entry on a click."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import login


def test_a_role_change_reads_as_a_sentence_and_the_raw_entry_is_one_click_away(page, app_server):
    with app_server.sql() as db:
        before = db.execute("SELECT permissions FROM role WHERE name = 'data_analyst'").fetchone()[0]
    try:
        login(page, app_server, "admin", "/admin/roles")
        box = page.locator("#perm-data_analyst-report-view")
        expect(box).to_have_attribute("data-state", "checked")
        box.click()  # revoke…
        expect(box).to_have_attribute("data-state", "unchecked")
        box.click()  # …and grant again
        expect(box).to_have_attribute("data-state", "checked")

        page.goto("/audit")
        page.locator("#audit-action").fill("role.update")
        page.locator("#audit-apply").click()
        newest = page.locator("#audit-table .audit-row").first
        expect(newest.locator(".audit-sentence")).to_have_text("系统管理员 把「查看报告」授予角色「数据分析师」")
        expect(page.locator("#audit-table .audit-row").nth(1).locator(".audit-sentence")).to_have_text(
            "系统管理员 收回了角色「数据分析师」的「查看报告」"
        )
        raw = newest.locator(".audit-raw")
        expect(raw).not_to_be_visible()
        newest.locator(".audit-raw-toggle").click()
        expect(raw).to_be_visible()
        expect(raw).to_contain_text("role.update")
        expect(raw).to_contain_text('"granted"')
        expect(raw).to_contain_text('"report.view"')

        page.locator("#lang-switch").click()
        expect(newest.locator(".audit-sentence")).to_have_text(
            "系统管理员 granted “View reports” to the role “Data analyst”"
        )
        page.locator("#lang-switch").click()  # the language is kept per browser: back to Chinese
        expect(newest.locator(".audit-sentence")).to_contain_text("授予")
    finally:
        with app_server.sql() as db:  # the analyst role is shared by the whole run
            db.execute("UPDATE role SET permissions = ? WHERE name = 'data_analyst'", (before,))
