"""End-to-end harness: the real app in prod mode, its own seeded database,
and Debian's Chromium driven by Playwright.

One app per test session (a production build takes a while on 2 cores); each
test gets a fresh browser context. Everything is stopped at the end, also when
a test fails or the run is interrupted. The app itself is started by
``tests/e2e/harness.py`` (shared with the browser benchmarks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.harness import (  # noqa: F401 - re-exported for the test modules
    CHROMIUM,
    CHROMIUM_ARGS,
    Account,
    RunningApp,
    login,
    running_app,
    wait_for_path,
)

# Playwright's assertions wait 5 s by default; an app event on a loaded 2-core machine
# (the unit suite runs beside this one) can take longer. Actions already wait 20 s.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> RunningApp:
    with running_app(tmp_path_factory.mktemp("meiqia-e2e")) as app:
        yield app


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (make test installs it with apt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, app_server):
    context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()
