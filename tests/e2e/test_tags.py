"""A manager creates a tag, builds a rule in the form, previews the count, saves and runs it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login


def _db(app_server):
    return app_server.sql()


@pytest.mark.pg
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
        expected = {
            row[0]
            for row in db.execute(
                "SELECT id FROM customer WHERE status = 'active' AND order_count >= 3 AND source = 'wechat'"
            )
        }
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
        rows = db.execute(
            "SELECT customer_id, source, rule_id FROM tag_assignment WHERE tag_id = ?", (tag_id,)
        ).fetchall()
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


def test_manager_merges_and_deletes_tags_with_counts(page, app_server):
    login(page, app_server, "manager", next_path="/tags")
    for name in ("合并源E2E", "合并目标E2E"):
        page.locator("#new-tag").click()
        page.locator("#tag-name").fill(name)
        page.locator("#tag-save").click()
        expect(page.locator("#tag-table").get_by_text(name)).to_be_visible()
    with _db(app_server) as db:
        source = db.execute("SELECT id FROM tag WHERE name = '合并源E2E'").fetchone()[0]
        target = db.execute("SELECT id FROM tag WHERE name = '合并目标E2E'").fetchone()[0]
        ids = [r[0] for r in db.execute("SELECT id FROM customer WHERE status = 'active' ORDER BY id LIMIT 5")]
        db.executemany(
            "INSERT INTO tag_assignment (customer_id, tag_id, source, assigned_at) "
            "VALUES (?, ?, 'manual', '2026-11-01 00:00:00.000000')",
            [(i, source) for i in ids[:4]] + [(i, target) for i in ids[3:]],
        )
    page.reload()
    expect(page.locator(f"#usage-{source}")).to_have_text("4")

    page.locator(f"#merge-tag-{source}").click()
    page.locator("#merge-target").click()
    page.get_by_role("option", name="合并目标E2E").click()
    # Both tags' counts before anything is merged; small tags need no typed confirmation.
    expect(page.locator("#merge-counts")).to_contain_text("“合并源E2E”：4 位客户")
    expect(page.locator("#merge-counts")).to_contain_text("“合并目标E2E”：2 位客户")
    expect(page.locator("#merge-counts")).to_contain_text("其中 1 位客户两个标签都有")
    expect(page.locator("#merge-confirm")).to_have_count(0)
    page.locator("#merge-submit").click()
    expect(page.locator("#tag-table").get_by_text("合并源E2E")).to_have_count(0)
    expect(page.locator(f"#usage-{target}")).to_have_text("5")

    page.locator(f"#delete-tag-{target}").click()
    expect(page.locator("#delete-tag-dialog")).to_contain_text("5 位客户")
    page.locator("#delete-tag-dialog-confirm").click()
    expect(page.locator("#tag-table").get_by_text("合并目标E2E")).to_have_count(0)
    with _db(app_server) as db:
        assert db.execute("SELECT count(*) FROM tag WHERE id IN (?, ?)", (source, target)).fetchone()[0] == 0
        assert (
            db.execute("SELECT count(*) FROM tag_assignment WHERE tag_id IN (?, ?)", (source, target)).fetchone()[0]
            == 0
        )
        actions = {
            r[0] for r in db.execute("SELECT action FROM audit_entry WHERE action IN ('tag.merge', 'tag.delete')")
        }
    assert actions == {"tag.merge", "tag.delete"}

    page.locator("#tab-hygiene").click()
    expect(page.get_by_text("从未使用的标签")).to_be_visible()
    # Gold and silver members are different tiers, not a misspelling of one another.
    expect(page.locator(".near-duplicate", has_text="金卡会员").filter(has_text="银卡会员")).to_have_count(0)


def test_merging_two_big_tags_needs_the_typed_name(page, app_server):
    login(page, app_server, "manager", next_path="/tags")
    for name in ("大源E2E", "大目标E2E"):
        page.locator("#new-tag").click()
        page.locator("#tag-name").fill(name)
        page.locator("#tag-save").click()
        expect(page.locator("#tag-table").get_by_text(name)).to_be_visible()
    with _db(app_server) as db:
        source = db.execute("SELECT id FROM tag WHERE name = '大源E2E'").fetchone()[0]
        target = db.execute("SELECT id FROM tag WHERE name = '大目标E2E'").fetchone()[0]
        ids = [r[0] for r in db.execute("SELECT id FROM customer WHERE status = 'active' ORDER BY id LIMIT 120")]
        db.executemany(
            "INSERT INTO tag_assignment (customer_id, tag_id, source, assigned_at) "
            "VALUES (?, ?, 'manual', '2026-11-01 00:00:00.000000')",
            [(i, source) for i in ids[:60]] + [(i, target) for i in ids[60:]],
        )
    page.reload()
    expect(page.locator(f"#usage-{source}")).to_have_text("60")
    page.locator(f"#merge-tag-{source}").click()
    page.locator("#merge-target").click()
    page.get_by_role("option", name="大目标E2E").click()
    expect(page.locator("#merge-counts")).to_contain_text("“大源E2E”：60 位客户")
    expect(page.locator("#merge-counts")).to_contain_text("“大目标E2E”：60 位客户")
    submit = page.locator("#merge-submit")
    expect(submit).to_be_disabled()
    page.locator("#merge-confirm").fill("大目标E2E")
    expect(submit).to_be_disabled()
    page.locator("#merge-confirm").fill("大源E2E")
    expect(submit).to_be_enabled()
    submit.click()
    expect(page.locator("#tag-table").get_by_text("大源E2E")).to_have_count(0)
    expect(page.locator(f"#usage-{target}")).to_have_text("120")
