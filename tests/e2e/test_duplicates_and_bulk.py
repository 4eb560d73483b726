"""Merging duplicates in the browser, the column chooser and bulk selection."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login


def _db(app_server):
    return app_server.sql()


@pytest.mark.pg
def test_manager_merges_a_duplicate_group_and_the_survivor_has_every_order(page, app_server):
    login(page, app_server, "manager")
    page.goto("/duplicates")
    group = page.locator(".dup-group").first
    expect(group).to_be_visible()
    hrefs = group.locator(".dup-member a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    ids = [int(re.search(r"(\d+)$", href).group(1)) for href in hrefs][:5]
    assert len(ids) >= 2
    marks = ",".join("?" * len(ids))
    with _db(app_server) as db:
        orders_before = db.execute(
            f"SELECT count(*) FROM customer_order WHERE customer_id IN ({marks})", ids
        ).fetchone()[0]
        chats_before = db.execute(f"SELECT count(*) FROM conversation WHERE customer_id IN ({marks})", ids).fetchone()[
            0
        ]

    group.locator(".dup-merge").click()
    expect(page.locator(".merge-candidate")).to_have_count(len(ids))
    page.locator("#confirm-merge").click()
    expect(page.get_by_text(re.compile(r"已将 \d+ 位客户合并为"))).to_be_visible()

    with _db(app_server) as db:
        statuses = dict(db.execute(f"SELECT id, status FROM customer WHERE id IN ({marks})", ids).fetchall())
        survivors = [cid for cid, status in statuses.items() if status != "trashed"]
        assert len(survivors) == 1, statuses
        survivor = survivors[0]
        assert (
            db.execute("SELECT count(*) FROM customer_order WHERE customer_id = ?", (survivor,)).fetchone()[0]
            == orders_before
        )
        assert (
            db.execute("SELECT count(*) FROM conversation WHERE customer_id = ?", (survivor,)).fetchone()[0]
            == chats_before
        )
        audit = db.execute(
            "SELECT actor_name, target_id FROM audit_entry WHERE action = 'customer.merge' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert audit == ("manager", str(survivor))


def test_column_chooser_and_selecting_all_matching(page, app_server):
    login(page, app_server, "agent")
    table = page.locator("#customer-table")
    expect(table.locator(".customer-row").first).to_be_visible()
    expect(table.get_by_role("columnheader", name="邮箱")).to_have_count(0)
    page.locator("#choose-columns").click()
    page.locator("#column-email").click()
    page.keyboard.press("Escape")
    expect(table.get_by_role("columnheader", name="邮箱")).to_be_visible()

    rows = table.locator(".customer-row")
    rows.nth(0).locator(".row-select").click()
    rows.nth(1).locator(".row-select").click()
    expect(page.locator("#selection-bar")).to_contain_text("已选择 2 位客户")
    assert page.url.endswith("/customers") or "/customers" in page.url  # ticking did not open a customer

    page.locator("#select-page").click()
    with _db(app_server) as db:
        active = db.execute("SELECT count(*) FROM customer WHERE status = 'active'").fetchone()[0]
    page.locator("#select-all-matching").click()
    expect(page.locator("#selection-bar")).to_contain_text(f"已选择全部 {active:,} 位匹配的客户")
    page.locator("#clear-selection").click()
    expect(page.locator("#selection-bar")).to_have_count(0)


@pytest.mark.pg
def test_manager_tags_ticked_rows_then_every_matching_customer(page, app_server):
    with app_server.sql() as db:
        tag_id, tag_name = db.execute("SELECT id, name FROM tag ORDER BY id LIMIT 1").fetchone()
    login(page, app_server, "manager")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.first).to_be_visible()
    ticked = [int(rows.nth(i).get_attribute("data-customer-id")) for i in (0, 1)]
    for i in (0, 1):
        rows.nth(i).locator(".row-select").click()

    page.locator("#bulk-remove-tag").click()
    page.locator("#bulk-tag").click()
    page.get_by_role("option", name=tag_name, exact=True).click()
    page.locator("#bulk-tag-submit").click()
    expect(page.get_by_text(re.compile(r"已从 \d+ 位客户移除标签"))).to_be_visible()
    with app_server.sql() as db:
        left = db.execute(
            "SELECT count(*) FROM tag_assignment WHERE tag_id = ? AND customer_id IN (?, ?)", (tag_id, *ticked)
        ).fetchone()[0]
    assert left == 0

    page.locator("#select-page").click()
    page.locator("#select-all-matching").click()
    page.locator("#bulk-add-tag").click()
    page.locator("#bulk-tag").click()
    page.get_by_role("option", name=tag_name, exact=True).click()
    page.locator("#bulk-tag-submit").click()
    expect(page.get_by_text(re.compile(r"已为 [\d,]+ 位客户添加标签"))).to_be_visible()
    with app_server.sql() as db:
        untagged = db.execute(
            "SELECT count(*) FROM customer c WHERE c.status = 'active' AND NOT EXISTS ("
            "SELECT 1 FROM tag_assignment a WHERE a.customer_id = c.id AND a.tag_id = ?)",
            (tag_id,),
        ).fetchone()[0]
        audit = db.execute(
            "SELECT actor_name FROM audit_entry WHERE action = 'tag.bulk_add' ORDER BY id DESC"
        ).fetchone()
    assert untagged == 0
    assert audit == ("manager",)


def test_manager_archives_ticked_rows_with_typed_confirmation(page, app_server):
    login(page, app_server, "manager")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.first).to_be_visible()
    ticked = [int(rows.nth(i).get_attribute("data-customer-id")) for i in (2, 3)]
    for i in (2, 3):
        rows.nth(i).locator(".row-select").click()
    page.locator("#bulk-archive").click()
    page.locator("#status-confirm").fill("3")
    page.locator("#status-confirm-submit").click()
    expect(page.locator("#status-error")).to_contain_text("2")  # the wrong count is refused
    page.locator("#status-confirm").fill("2")
    page.locator("#status-confirm-submit").click()
    expect(page.get_by_text("已归档 2 位客户")).to_be_visible()
    with app_server.sql() as db:
        statuses = {r[0] for r in db.execute("SELECT status FROM customer WHERE id IN (?, ?)", ticked)}
        audit = db.execute(
            "SELECT actor_name FROM audit_entry WHERE action = 'cleanup.archive' ORDER BY id DESC"
        ).fetchone()
    assert statuses == {"archived"} and audit == ("manager",)
    expect(page.locator(f"#customer-table .customer-row[data-customer-id='{ticked[0]}']")).to_have_count(0)
