"""A manager creates a tag, builds a rule in the form, previews the count, saves and runs it."""

from __future__ import annotations

import sqlite3

from playwright.sync_api import expect

from tests.e2e.conftest import login


def _db(app_server):
    return sqlite3.connect(app_server.db_path())


def test_manager_builds_previews_and_runs_a_rule(page, app_server):
    login(page, app_server, "manager", next_path="/tags")
    expect(page.locator("#tag-table")).to_be_visible()

    page.locator("#new-tag").click()
    page.locator("#tag-name").fill("常客E2E")
    page.locator("#tag-save").click()
    expect(page.locator("#tag-table").get_by_text("常客E2E")).to_be_visible()
    with _db(app_server) as db:
        tag_id = db.execute("SELECT id FROM tag WHERE name = '常客E2E'").fetchone()[0]

    page.locator("#tab-rules").click()
    expect(page.locator("#rule-table")).to_be_visible()
    page.locator("#new-rule").click()
    page.locator("#rule-name").fill("微信常客")
    page.locator("#rule-tag").click()
    page.get_by_role("option", name="常客E2E").click()
    # The first row starts as "order count ≥ 3"; add "source = WeChat".
    expect(page.locator("#cond-value-0")).to_have_value("3")
    page.locator("#add-condition").click()
    expect(page.locator("#cond-choice-1")).to_contain_text("微信")
    page.locator("#rule-preview-button").click()

    with _db(app_server) as db:
        expected = {row[0] for row in db.execute(
            "SELECT id FROM customer WHERE status = 'active' AND order_count >= 3 AND source = 'wechat'")}
    assert expected
    expect(page.locator("#preview-matching")).to_have_text(str(len(expected)))
    expect(page.locator("#preview-gain")).to_have_text(str(len(expected)))

    page.locator("#rule-save").click()
    expect(page.locator("#rule-table").get_by_text("微信常客")).to_be_visible()
    with _db(app_server) as db:
        rule_id = db.execute("SELECT id FROM tag_rule WHERE name = '微信常客'").fetchone()[0]
    page.locator(f"#run-rule-{rule_id}").click()
    expect(page.locator("#job-status")).to_have_text("done", timeout=60_000)
    expect(page.locator("#job-result")).to_contain_text(f"新增 {len(expected)}")

    with _db(app_server) as db:
        rows = db.execute("SELECT customer_id, source, rule_id FROM tag_assignment WHERE tag_id = ?",
                          (tag_id,)).fetchall()
    assert {r[0] for r in rows} == expected
    assert {(r[1], r[2]) for r in rows} == {("rule", rule_id)}

    # The list filtered by the tag shows exactly those customers.
    page.goto("/customers")
    page.locator("#open-filters").click()
    page.locator("#filter-tags_any").click()
    page.get_by_role("option", name="常客E2E").click()
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_have_count(1)
    expect(page.locator("#match-count")).to_contain_text(f"{len(expected):,}")
