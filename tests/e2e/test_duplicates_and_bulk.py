"""Merging duplicates in the browser, the column chooser and bulk selection."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import login


def _db(app_server):
    return app_server.sql()


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
        orders_before = db.execute(f"SELECT count(*) FROM customer_order WHERE customer_id IN ({marks})", ids).fetchone()[0]
        chats_before = db.execute(f"SELECT count(*) FROM conversation WHERE customer_id IN ({marks})", ids).fetchone()[0]

    group.locator(".dup-merge").click()
    expect(page.locator(".merge-candidate")).to_have_count(len(ids))
    page.locator("#confirm-merge").click()
    expect(page.get_by_text(re.compile(r"已将 \d+ 位客户合并为"))).to_be_visible()

    with _db(app_server) as db:
        statuses = dict(db.execute(f"SELECT id, status FROM customer WHERE id IN ({marks})", ids).fetchall())
        survivors = [cid for cid, status in statuses.items() if status != "trashed"]
        assert len(survivors) == 1, statuses
        survivor = survivors[0]
        assert db.execute("SELECT count(*) FROM customer_order WHERE customer_id = ?", (survivor,)).fetchone()[0] \
            == orders_before
        assert db.execute("SELECT count(*) FROM conversation WHERE customer_id = ?", (survivor,)).fetchone()[0] \
            == chats_before
        audit = db.execute("SELECT actor_name, target_id FROM audit_entry WHERE action = 'customer.merge' "
                           "ORDER BY id DESC LIMIT 1").fetchone()
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
