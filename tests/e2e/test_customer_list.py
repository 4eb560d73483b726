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
    search = page.get_by_role("searchbox")
    rows = page.locator("#customer-table .customer-row")
    # An agent sees 138****5678: the visible last four digits find the customer,
    # ranked with the other numbers ending in them and labelled as such.
    search.fill(phone[-4:])
    row = rows.filter(has_text=name).first
    expect(row).to_be_visible()
    expect(row.locator(".match-reason")).to_have_text("手机尾号匹配")
    # Agents lack customer.view_sensitive: the list shows the phone masked.
    expect(page.locator("#customer-table")).not_to_contain_text(phone)
    expect(row).to_contain_text(phone[:3] + "****" + phone[-4:])
    # The hidden middle digits find nothing that would give them away.
    search.fill(phone[3:8])
    expect(rows.filter(has_text=name)).to_have_count(0)
    search.fill(phone[-4:])
    row.click()
    wait_for_path(page, f"/customers/{customer_id}")
    expect(page.locator("#customer-name")).to_have_text(name)


def _unused_number(app_server, prefix: str) -> str:
    with app_server.sql() as db:
        for tail in range(9244, 9999):
            if not db.execute("SELECT 1 FROM customer WHERE phone = ?", (f"{prefix}{tail}",)).fetchone():
                return f"{tail}"
    raise AssertionError("no free number")


def _create(page, name: str, phone: str = "", email: str = "") -> None:
    page.locator("#new-customer").click()
    page.locator("#new-name").fill(name)
    if phone:
        page.locator("#new-phone").fill(phone)
    if email:
        page.locator("#new-email").fill(email)
    page.locator("#new-customer-save").click()
    page.wait_for_function("() => /^\\/customers\\/\\d+/.test(window.location.pathname)")
    page.goto("/customers")


def test_a_pasted_international_number_finds_the_customer_and_suffix_matches_rank_first(page, app_server):
    """Issues 12 and 13: "+86 151 7396 9244" as pasted finds the customer the form
    saved from it; its last four digits list the numbers ending in them first,
    before a more recently active customer that matched elsewhere, each row
    saying why it matched."""
    tail = _unused_number(app_server, "1517396")
    login(page, app_server, "agent")
    _create(page, "粘贴号码客户", phone=f"+86 151 7396 {tail}")
    _create(page, "邮箱含尾号客户", email=f"v@x{tail}.com")  # newer: first by last activity
    search = page.get_by_role("searchbox")
    rows = page.locator("#customer-table .customer-row")

    search.fill(f"+86 151 7396 {tail}")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("粘贴号码客户")
    expect(rows.first).to_contain_text(f"151****{tail}")
    expect(rows.first.locator(".match-reason")).to_have_text("手机号完全匹配")

    search.fill(tail)
    expect(rows.filter(has_text="邮箱含尾号客户")).to_have_count(1)
    listed = []  # (name cell text, why-label) per row, in order
    for i in range(rows.count()):
        reason = rows.nth(i).locator(".match-reason")
        listed.append((rows.nth(i).locator("th").inner_text(), reason.inner_text() if reason.count() else ""))
    reasons = [reason for _name, reason in listed]
    names = [name for name, _reason in listed]
    suffix_rows = [i for i, reason in enumerate(reasons) if reason == "手机尾号匹配"]
    assert suffix_rows == list(range(len(suffix_rows))) and suffix_rows, reasons  # suffix matches first
    assert any("粘贴号码客户" in names[i] for i in suffix_rows)
    email_row = next(i for i, name in enumerate(names) if "邮箱含尾号客户" in name)
    assert reasons[email_row] == "邮箱匹配" and email_row > suffix_rows[-1]


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
