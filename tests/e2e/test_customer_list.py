"""The customer list and detail, driven in Chromium like an agent would."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path


def _customer_with_phone(app_server) -> tuple[int, str, str]:
    with app_server.sql() as db:
        row = db.execute(
            "SELECT id, name, phone FROM customer WHERE phone IS NOT NULL AND length(phone) = 11 "
            "AND status = 'active' ORDER BY id LIMIT 1 OFFSET 17"
        ).fetchone()
    return row


def test_protected_page_sends_anonymous_visitor_to_login(page):
    page.goto("/customers")
    wait_for_path(page, "/login")
    assert page.evaluate("location.search") == "?next=/customers"
    expect(page.get_by_label("用户名")).to_be_visible()


def test_list_loads_and_shows_customers(page, app_server):
    login(page, app_server, "agent")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.first).to_be_visible()
    assert rows.count() == 50
    expect(page.locator("#match-count")).to_contain_text(re.compile(r"\d"))


@pytest.mark.pg
def test_phone_fragment_finds_customer_and_detail_shows_name(page, app_server):
    customer_id, name, phone = _customer_with_phone(app_server)
    login(page, app_server, "agent")
    page.get_by_role("searchbox").fill(phone[3:8])
    rows = page.locator("#customer-table .customer-row")
    expect(rows.filter(has_text=name).first).to_be_visible()
    # Agents lack customer.view_sensitive: the list shows the phone masked.
    expect(page.locator("#customer-table")).not_to_contain_text(phone)
    expect(rows.filter(has_text=name).first).to_contain_text(phone[:3] + "****" + phone[-4:])
    rows.filter(has_text=name).first.click()
    wait_for_path(page, f"/customers/{customer_id}")
    expect(page.locator("#customer-name")).to_have_text(name)


def test_english_switch_changes_labels(page, app_server):
    login(page, app_server, "manager")
    expect(page.get_by_role("heading", level=1)).to_have_text("客户管理")
    page.locator("#lang-switch").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Customers")
    # Kept per browser: a reload stays in English.
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Customers")


@pytest.mark.pg
def test_back_to_the_list_keeps_the_page_and_shows_an_edit_made_meanwhile(page, app_server):
    login(page, app_server, "agent")
    rows = page.locator("#customer-table .customer-row")
    expect(rows.first).to_be_visible()
    first_of_page_one = rows.first.text_content()
    page.locator("#page-next").click()
    expect(page.locator("#page-number")).to_contain_text("2")
    expect(rows.first).not_to_have_text(first_of_page_one)
    first_of_page_two = rows.first.text_content()
    rows.first.click()
    expect(page.locator("#customer-name")).to_be_visible()
    page.go_back()
    wait_for_path(page, "/customers")
    # Nothing changed: the same page comes back, not page 1 again.
    expect(page.locator("#page-number")).to_contain_text("2")
    expect(rows.first).to_have_text(first_of_page_two)

    # An edit made meanwhile is there on coming back.
    page.locator("#page-first").click()
    expect(rows.first).to_have_text(first_of_page_one)
    rows.first.click()
    expect(page.locator("#customer-name")).to_be_visible()
    customer_id = int(page.evaluate("location.pathname").rstrip("/").rsplit("/", 1)[1])
    page.locator("#edit-customer").click()
    page.locator("#edit-name").fill("回到列表测试")
    page.locator("#edit-save").click()
    expect(page.locator("#customer-name")).to_have_text("回到列表测试")
    page.go_back()
    wait_for_path(page, "/customers")
    expect(rows.filter(has_text="回到列表测试")).to_have_count(1)
    with app_server.sql() as db:
        assert db.execute("SELECT name FROM customer WHERE id = ?", (customer_id,)).fetchone()[0] == "回到列表测试"
