"""Every page, visited once per set-up: axe-core finds nothing critical or serious
(Chinese on a wide screen, English on a phone), and no page scrolls sideways on a
phone or a tablet.

One visit of each page serves both checks where the set-up is the same (English
at 390 px): visiting every page is what these tests spend their time on."""

from __future__ import annotations

import json
import os

import pytest
from playwright.sync_api import expect

from tests.e2e import axe
from tests.e2e.conftest import login
from tests.e2e.site_pages import open_route, routes


@pytest.fixture(scope="session")
def axe_js():
    return axe.ensure_axe()


def _report(findings: dict[str, list[dict]]) -> str:
    lines = []
    for route, violations in findings.items():
        for v in violations:
            lines.append(f"{route}: [{v['impact']}] {v['id']} x{v['count']} ({v['help']}) e.g. {v['targets'][:2]}")
    return "\n".join(lines)


def _sideways(page) -> int | None:
    """How wide the document is when wider than the window (else None): nothing may scroll sideways."""
    expect(page.locator(".app-sidebar")).to_be_hidden()  # the drawer's menu button instead
    expect(page.locator("h1")).to_be_visible()
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return scroll_width if scroll_width > inner_width else None


def _audit_every_page(page, app_server, axe_js, lang: str, width: int) -> dict[str, list[dict]]:
    narrow = width < 768
    findings: dict[str, list[dict]] = {}
    report = os.environ.get("MEIQIA_AXE_REPORT")  # the figures per page, for a report
    for route in routes(app_server):
        open_route(page, route)
        findings[route] = axe.run_axe(page, axe_js)
        if narrow and (too_wide := _sideways(page)):
            findings[route].append(
                {"id": "scrolls-sideways", "impact": "serious", "count": 1, "help": f"{too_wide}px", "targets": []}
            )
        html_lang = page.evaluate("document.documentElement.lang")
        if html_lang != ("en" if lang == "en" else "zh-CN"):
            findings[route].append(
                {"id": "html-lang-follows-language", "impact": "serious", "count": 1, "help": html_lang, "targets": []}
            )
        if report:  # written as each page is done: a sweep cut short still leaves its figures
            with open(report, "a") as handle:
                figures = {"lang": lang, "width": width, "route": route, **axe.summary(findings[route])}
                handle.write(json.dumps(figures) + "\n")
    return findings


def _blocking(findings: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        route: [v for v in violations if v["impact"] in axe.BLOCKING]
        for route, violations in findings.items()
        if any(v["impact"] in axe.BLOCKING for v in violations)
    }


# Chinese on a wide screen, English on a phone: both languages and both layouts
# (the sidebar, and the menu button with the list as cards); on the phone no page
# may scroll sideways either. For a report of the figures per page
# (MEIQIA_AXE_REPORT=file.jsonl), each language at each width.
AXE_SETS = [("zh", 1400), ("en", 390)]
if os.environ.get("MEIQIA_AXE_REPORT"):
    AXE_SETS += [("en", 1400), ("zh", 390)]


@pytest.mark.parametrize(("lang", "width"), AXE_SETS, ids=[f"{lang}-{width}" for lang, width in AXE_SETS])
def test_no_critical_or_serious_axe_finding_on_any_page(page, app_server, axe_js, lang, width):
    page.set_viewport_size({"width": width, "height": 900})
    if os.environ.get("MEIQIA_AXE_REPORT"):
        page.set_default_timeout(60_000)  # four sweeps for a report, often on a busy machine
    login(page, app_server, "admin", "/customers")
    if lang == "en":
        page.locator("#lang-switch").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Customers")
    blocking = _blocking(_audit_every_page(page, app_server, axe_js, lang, width))
    assert not blocking, _report(blocking)


def test_no_page_scrolls_sideways_on_a_tablet(page, app_server):
    page.set_viewport_size({"width": 768, "height": 1024})
    login(page, app_server, "admin", "/customers")
    wide = {}
    for route in routes(app_server):
        open_route(page, route)
        if too_wide := _sideways(page):
            wide[route] = too_wide
    assert wide == {}, f"pages wider than 768 px: {wide}"


def test_login_page_has_no_critical_or_serious_axe_finding(page, app_server, axe_js):
    page.goto("/login")
    expect(page.locator("#login-submit")).to_be_enabled()
    page.wait_for_load_state("networkidle")
    blocking = _blocking({"/login": axe.run_axe(page, axe_js)})
    assert not blocking, _report(blocking)
