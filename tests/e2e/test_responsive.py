"""Phones (390 px) and tablets (768 px): dialogs fit, the navigation is a drawer,
and an agent can find a customer and add a note; on a wide screen the sidebar
stays put while the page scrolls. (That no page scrolls sideways is checked on
the same visits as axe-core: test_accessibility.py.)"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path
from tests.e2e.site_pages import first_customer_id, open_route

PHONE = {"width": 390, "height": 844}
TABLET = {"width": 768, "height": 1024}
DESKTOP = {"width": 1440, "height": 900}
# The navigation's groups in the order people work (issue 20 item 2), the account after them.
NAV_GROUP_ORDER = ["customers", "tags", "reports", "export", "data", "system"]


def _sideways(page) -> list[int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def _assert_inside_viewport(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    width = page.evaluate("window.innerWidth")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box, width)


def _assert_dialog_fits(page) -> None:
    """The open dialog lies within the window (width and height), nothing in it sticks out
    sideways, what is taller than the window scrolls inside the dialog (its last button can
    be scrolled into view), and the page behind it does not scroll sideways."""
    dialog = page.locator("[role=dialog], [role=alertdialog]")
    expect(dialog).to_have_count(1)
    expect(dialog).to_be_visible()
    # Radix animates a dialog in (moved by a few pixels, scaled): measure it at rest.
    page.wait_for_function(
        "() => document.querySelector('[role=dialog], [role=alertdialog]')"
        ".getAnimations().every(a => a.playState !== 'running')"
    )
    box = dialog.evaluate(
        """el => {
            const r = el.getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                    width: innerWidth, height: innerHeight, page: document.documentElement.scrollWidth,
                    scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
                    scrollHeight: el.scrollHeight, clientHeight: el.clientHeight,
                    overflowY: getComputedStyle(el).overflowY};
        }"""
    )
    assert box["left"] >= 0 and box["right"] <= box["width"] + 0.5, box
    assert box["top"] >= 0 and box["bottom"] <= box["height"] + 0.5, box
    assert box["scrollWidth"] <= box["clientWidth"] + 1, box
    assert box["scrollHeight"] <= box["clientHeight"] + 1 or box["overflowY"] in ("auto", "scroll"), box
    assert box["page"] <= box["width"], box
    last = dialog.locator("button").last
    last.scroll_into_view_if_needed()
    button = last.bounding_box()
    assert button is not None and 0 <= button["y"] and button["y"] + button["height"] <= box["height"] + 0.5, button
    assert 0 <= button["x"] and button["x"] + button["width"] <= box["width"] + 0.5, button


def _dialog_fits_a_phone_and_a_tablet(page, opener: str) -> None:
    """Open the dialog with ``opener``, check it at 768 px and at 390 px, close it (Esc)."""
    page.locator(opener).click()
    for viewport in (TABLET, PHONE):
        page.set_viewport_size(viewport)
        _assert_dialog_fits(page)
    page.keyboard.press("Escape")
    expect(page.locator("[role=dialog], [role=alertdialog]")).to_have_count(0)


def _page_fits(page, selector: str) -> None:
    _assert_inside_viewport(page, selector)
    assert _sideways(page)[0] <= page.evaluate("window.innerWidth")


@pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=["390", "768"])
def test_dialogs_fit_the_screen(page, app_server, viewport):
    page.set_viewport_size(viewport)
    login(page, app_server, "admin", "/customers")
    page.locator("#new-customer").click()
    _assert_dialog_fits(page)
    page.keyboard.press("Escape")
    page.locator("#open-filters").click()
    _assert_inside_viewport(page, "[data-radix-popper-content-wrapper] .rt-PopoverContent")
    page.keyboard.press("Escape")

    open_route(page, f"/customers/{first_customer_id(app_server)}")
    page.locator("#edit-customer").click()
    _assert_dialog_fits(page)
    _assert_inside_viewport(page, "#edit-save")


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


def test_the_sidebar_stays_put_while_a_long_page_scrolls(page, app_server):
    page.set_viewport_size(DESKTOP)
    login(page, app_server, "admin", "/customers")
    expect(page.locator("#customer-table .customer-row").first).to_be_visible()
    height = page.evaluate("window.innerHeight")
    assert page.evaluate("document.documentElement.scrollHeight") > height + 400  # a long page
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("() => window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 1")
    assert page.evaluate("window.scrollY") > 400
    # Still from the top of the window to its bottom: its background does not end mid-screen.
    box = page.locator(".app-sidebar").bounding_box()
    assert box is not None and abs(box["y"]) <= 0.5 and box["y"] + box["height"] >= height - 0.5, (box, height)
    assert page.evaluate(
        "() => [10, innerHeight / 2, innerHeight - 2].every(y => !!document.elementFromPoint(20, y).closest('.app-sidebar'))"
    )
    expect(page.locator("#nav-customers")).to_be_in_viewport()
    # Grouped the way people work, in that order, the account last (as in the phone's drawer).
    groups = page.evaluate(
        """() => [...document.querySelectorAll('.app-sidebar .nav-group')].map(group => [
            group.querySelector('.nav-group-label').id,
            [...group.querySelectorAll('a.nav-link')].map(a => a.getAttribute('href')),
        ])"""
    )
    assert [label for label, _ in groups] == [f"nav-group-{group}" for group in NAV_GROUP_ORDER]
    hrefs = dict(groups)
    assert hrefs["nav-group-customers"] == ["/customers", "/duplicates", "/import"]
    assert hrefs["nav-group-tags"] == ["/tags"]
    assert hrefs["nav-group-reports"] == ["/", "/reports"]
    assert hrefs["nav-group-export"] == ["/export", "/exports", "/exports/approvals"]
    assert hrefs["nav-group-data"][:3] == ["/cleanup", "/cleanup/archive", "/admin/backups"]
    assert {"/admin/users", "/admin/roles", "/audit"} <= set(hrefs["nav-group-system"])
    last = page.locator(".app-sidebar a.nav-link").last
    expect(last).to_have_attribute("href", "/account")
    expect(page.locator(".app-sidebar .nav-bottom a.nav-link[href='/account']")).to_have_count(1)


def test_an_agent_on_a_phone_finds_a_customer_and_adds_a_note(page, app_server):
    page.set_viewport_size(PHONE)
    with app_server.sql() as db:
        # A customer with tags, in the agent's scope (own customers and the pool).
        customer_id, name, phone = db.execute(
            "SELECT c.id, c.name, c.phone FROM customer c WHERE c.status = 'active' AND c.erased_at IS NULL "
            "AND length(c.name) >= 2 AND c.phone IS NOT NULL "
            "AND (c.owner_id IS NULL OR c.owner_id = (SELECT id FROM app_user WHERE username = 'agent')) "
            "AND EXISTS (SELECT 1 FROM tag_assignment a WHERE a.customer_id = c.id) ORDER BY c.id LIMIT 1 OFFSET 5"
        ).fetchone()
        tags = {
            row[0]
            for row in db.execute(
                "SELECT t.name FROM tag t JOIN tag_assignment a ON a.tag_id = t.id WHERE a.customer_id = ?",
                (customer_id,),
            )
        }
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
    chips = card.locator(".col-tags .tag-chip")
    expect(chips.first).to_be_visible()
    shown = {text.strip() for text in chips.all_inner_texts()}
    assert shown and shown <= tags, (shown, tags)
    _assert_inside_viewport(page, f"#customer-table .customer-row[data-customer-id='{customer_id}'] .col-tags")
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

    # Adding a tag: the input, its suggestions and the button stay on the screen (phone and tablet).
    page.locator("#tag-input").click()
    expect(page.locator("#tag-suggestions .tag-suggestion").first).to_be_visible()
    for viewport in (PHONE, TABLET):
        page.set_viewport_size(viewport)
        for selector in ("#tag-input", "#tag-add", "#tag-suggestions", "#note-add"):
            _assert_inside_viewport(page, selector)
        assert _sideways(page)[0] <= viewport["width"]


def test_the_lists_dialogs_fit_a_phone_and_a_tablet(page, app_server):
    """Bulk actions on ticked cards and saving a view, as a manager on a phone."""
    page.set_viewport_size(PHONE)
    login(page, app_server, "manager", "/customers")
    cards = page.locator("#customer-table .customer-row")
    expect(cards.first).to_be_visible()
    cards.nth(0).locator(".row-select").click()
    cards.nth(1).locator(".row-select").click()
    expect(page.locator("#selection-bar")).to_be_visible()
    _page_fits(page, "#selection-bar")
    for opener in ("#bulk-add-tag", "#bulk-assign", "#bulk-edit", "#bulk-archive"):
        page.set_viewport_size(PHONE)
        _dialog_fits_a_phone_and_a_tablet(page, opener)
    page.locator("#clear-selection").click()
    page.locator("#views-menu").click()
    _dialog_fits_a_phone_and_a_tablet(page, "#save-view")


def test_the_merge_dialog_and_the_export_wizard_fit_a_phone_and_a_tablet(page, app_server):
    # A duplicate pair of its own: other tests merge, archive or erase the seeded ones.
    with app_server.sql() as db:
        first, second = db.execute(
            "SELECT id, phone FROM customer WHERE status = 'active' AND erased_at IS NULL"
            " AND phone IS NOT NULL ORDER BY last_active_at DESC LIMIT 2"
        ).fetchall()
        db.execute("UPDATE customer SET phone = ? WHERE id = ?", (first[1], second[0]))
    page.set_viewport_size(PHONE)
    login(page, app_server, "manager", "/duplicates")
    group = page.locator(".dup-group").first
    expect(group).to_be_visible()
    _dialog_fits_a_phone_and_a_tablet(page, ".dup-group >> nth=0 >> .dup-merge")

    page.set_viewport_size(PHONE)
    open_route(page, "/export")
    # Each step of the wizard, on a phone and a tablet.
    for step, shown in ((1, "#scope-all"), (2, "#field-city"), (3, "#format-csv"), (4, "#review-rows")):
        if step > 1:
            page.locator("#export-next").click()
        expect(page.locator(shown)).to_be_visible()
        for viewport in (TABLET, PHONE):
            page.set_viewport_size(viewport)
            _page_fits(page, "#main")
            _assert_inside_viewport(page, "#export-next" if step < 4 else "#export-run")


def test_the_admin_dialogs_fit_a_phone_and_a_tablet(page, app_server):
    """New user, new role, a custom field's dialogs (and the form that defines one), and the
    customer page's export and erasure dialogs."""
    page.set_viewport_size(PHONE)
    login(page, app_server, "admin", "/admin/users")
    _dialog_fits_a_phone_and_a_tablet(page, "#new-user")
    open_route(page, "/admin/roles")
    _dialog_fits_a_phone_and_a_tablet(page, "#new-role")

    open_route(page, "/admin/fields")
    for viewport in (TABLET, PHONE):  # the new-field form is on the page itself
        page.set_viewport_size(viewport)
        _page_fits(page, "#field-create-form")
    page.locator("#field-key").fill("phone_fit")
    page.locator("#field-label-zh").fill("手机适配")
    page.locator("#field-type").click()
    page.get_by_role("option", name="单选", exact=True).click()
    page.locator("#field-options").fill("甲 / A\n乙 / B")
    page.locator("#field-create").click()
    expect(page.locator("#field-card-phone_fit")).to_be_visible()
    for opener in ("#field-edit-phone_fit", "#field-options-phone_fit", "#field-delete-phone_fit"):
        _dialog_fits_a_phone_and_a_tablet(page, opener)

    open_route(page, f"/customers/{first_customer_id(app_server)}")
    for opener in ("#portability-open", "#request-erasure"):
        _dialog_fits_a_phone_and_a_tablet(page, opener)
