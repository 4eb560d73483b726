"""Phones (390 px) and tablets (768 px): dialogs fit, the navigation is a drawer,
and an agent can find a customer and add a note. (That no page scrolls sideways
is checked on the same visits as axe-core: test_accessibility.py.)"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path
from tests.e2e.site_pages import first_customer_id, open_route

PHONE = {"width": 390, "height": 844}
TABLET = {"width": 768, "height": 1024}


def _sideways(page) -> list[int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def _assert_inside_viewport(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    width = page.evaluate("window.innerWidth")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box, width)


@pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=["390", "768"])
def test_dialogs_fit_the_screen(page, app_server, viewport):
    page.set_viewport_size(viewport)
    login(page, app_server, "admin", "/customers")
    page.locator("#new-customer").click()
    _assert_inside_viewport(page, "[role=dialog]")
    assert _sideways(page)[0] <= viewport["width"]
    page.keyboard.press("Escape")
    page.locator("#open-filters").click()
    _assert_inside_viewport(page, "[data-radix-popper-content-wrapper] .rt-PopoverContent")
    page.keyboard.press("Escape")

    open_route(page, f"/customers/{first_customer_id(app_server)}")
    page.locator("#edit-customer").click()
    _assert_inside_viewport(page, "[role=dialog]")
    _assert_inside_viewport(page, "#edit-save")
    assert _sideways(page)[0] <= viewport["width"]


def test_the_navigation_is_a_drawer_behind_the_menu_button(page, app_server):
    page.set_viewport_size(PHONE)
    login(page, app_server, "admin", "/customers")
    expect(page.locator("#nav-customers")).to_be_hidden()
    page.locator("#menu-button").click()
    drawer = page.locator("#nav-drawer")
    expect(drawer).to_be_visible()
    _assert_inside_viewport(page, "#nav-drawer")
    # Focus stays inside while it is open; Esc closes it.
    for _ in range(40):
        page.keyboard.press("Tab")
    assert page.evaluate("!!document.activeElement.closest('#nav-drawer')")
    page.keyboard.press("Escape")
    expect(drawer).to_have_count(0)
    # Grouped the way people work, the account last.
    page.locator("#menu-button").click()
    links = drawer.locator("a.nav-link")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs[0] == "/customers" and hrefs[-1] == "/account"
    assert hrefs.index("/duplicates") < hrefs.index("/tags") < hrefs.index("/") < hrefs.index("/export")
    assert hrefs.index("/export") < hrefs.index("/cleanup") < hrefs.index("/admin/users") < hrefs.index("/audit")
    page.locator("#drawer-nav-audit").click()
    wait_for_path(page, "/audit")
    expect(drawer).to_have_count(0)
    expect(page.locator("h1")).to_have_text("审计日志")


def test_an_agent_on_a_phone_finds_a_customer_and_adds_a_note(page, app_server):
    page.set_viewport_size(PHONE)
    with app_server.sql() as db:
        customer_id, name, phone = db.execute(
            "SELECT id, name, phone FROM customer WHERE status = 'active' AND length(name) >= 2 "
            "AND phone IS NOT NULL ORDER BY id LIMIT 1 OFFSET 5"
        ).fetchone()
    login(page, app_server, "agent", "/customers")
    search = page.locator("#customer-search")
    assert search.bounding_box()["width"] >= 300
    # Typed a key at a time, as on a phone: the text stays in the order typed.
    search.press_sequentially(name, delay=60)
    expect(search).to_have_value(name)
    card = page.locator(f"#customer-table .customer-row[data-customer-id='{customer_id}']")
    expect(card).to_be_visible()
    # Name, phone (masked for an agent) and tags are on the card, inside the screen.
    expect(card.locator("th")).to_contain_text(name)
    expect(card.locator(".col-phone")).to_be_visible()
    expect(card.locator(".col-phone")).to_contain_text(phone[:3])
    _assert_inside_viewport(page, f"#customer-table .customer-row[data-customer-id='{customer_id}']")
    assert _sideways(page)[0] <= PHONE["width"]

    card.locator("th a").click()
    wait_for_path(page, f"/customers/{customer_id}")
    expect(page.locator("#customer-name")).to_have_text(name)
    _assert_inside_viewport(page, "#field-phone")
    text = f"手机上记录的备注 {time.time_ns()}"
    page.locator("#note-text").fill(text)
    page.locator("#note-add").click()
    expect(page.locator("#timeline .timeline-item").first).to_contain_text(text)
    assert _sideways(page)[0] <= PHONE["width"]
    with app_server.sql() as db:
        body = db.execute("SELECT body FROM note WHERE customer_id = ? ORDER BY id DESC LIMIT 1", (customer_id,))
        assert body.fetchone()[0] == text
