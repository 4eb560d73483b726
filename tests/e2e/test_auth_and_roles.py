"""Logins, lockout, logout and the role matrix, in Chromium."""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path


def _password_step(page, username: str, password: str) -> None:
    page.goto("/login?next=/customers")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.locator("#login-submit").click()


def test_wrong_and_reused_codes_are_refused(page, app_server):
    account = app_server.accounts["analyst"]
    _password_step(page, account.username, account.password)
    right = account.fresh_code()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    page.locator("#code").fill(wrong)
    page.locator("#code-submit").click()
    expect(page.locator("#login-error")).to_contain_text("验证码错误")
    page.locator("#code").fill(right)
    page.locator("#code-submit").click()
    wait_for_path(page, "/customers")

    # Same code again, from a fresh browser: refused as already used.
    context = page.context.browser.new_context(base_url=app_server.url)
    other = context.new_page()
    try:
        _password_step(other, account.username, account.password)
        other.locator("#code").fill(right)
        other.locator("#code-submit").click()
        expect(other.locator("#login-error")).to_contain_text("已使用过")
    finally:
        context.close()


def _login_refusals(app_server, username: str) -> list[str]:
    with app_server.sql() as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT details FROM audit_entry WHERE actor_name = ? AND action = 'auth.login' ORDER BY id",
                (username,),
            )
        ]


def _wait_for_refusals(app_server, username: str, count: int) -> list[str]:
    """Each attempt must have reached the server before the next: the same error text
    on screen cannot tell attempt 3 from attempt 4."""
    deadline = time.monotonic() + 10
    while len(refusals := _login_refusals(app_server, username)) < count:
        assert time.monotonic() < deadline, f"only {len(refusals)} of {count} attempts reached the server"
        time.sleep(0.1)
    assert len(refusals) == count, refusals
    return refusals


@pytest.mark.pg
def test_five_wrong_passwords_lock_the_account(page, app_server, username="lockme"):
    app_server.cli(
        "create-user",
        "--username",
        username,
        "--password",
        "Lock-me-2026x",
        "--role",
        "agent",
        "--totp-secret",
        pyotp.random_base32(),
    )
    for attempt in range(1, 5):
        _password_step(page, username, "wrong-password-1")
        _wait_for_refusals(app_server, username, attempt)
        expect(page.locator("#login-error")).to_contain_text("用户名或密码错误")
    _password_step(page, username, "wrong-password-1")
    assert '"locked": true' in _wait_for_refusals(app_server, username, 5)[-1]
    expect(page.locator("#login-error")).to_contain_text("已锁定")
    # Even the right password is refused now.
    _password_step(page, username, "Lock-me-2026x")
    assert '"reason": "locked"' in _wait_for_refusals(app_server, username, 6)[-1]
    expect(page.locator("#login-error")).to_contain_text("已锁定")
    with app_server.sql() as db:
        actions = [
            row[0] for row in db.execute("SELECT action FROM audit_entry WHERE actor_name = ? ORDER BY id", (username,))
        ]
    assert "auth.lockout" in actions


@pytest.mark.pg
def test_logout_ends_the_session(page, app_server):
    login(page, app_server, "senior", fresh=True)
    # The senior agent's data scope is its team's customers (issue 21): the seed gives the demo team some.
    expect(page.locator("#customer-table .customer-row").first).to_be_visible()
    page.locator("#logout").click()
    wait_for_path(page, "/login")
    page.go_back()
    # The customers page must not show data again: back at the login.
    wait_for_path(page, "/login")
    expect(page.locator("#customer-table .customer-row")).to_have_count(0)
    with app_server.sql() as db:
        revoked = db.execute(
            "SELECT count(*) FROM user_session s JOIN app_user u ON u.id = s.user_id "
            "WHERE u.username = 'senior' AND s.revoked_reason = 'logout'"
        ).fetchone()[0]
    assert revoked >= 1


# Pages an agent may not open, each with a control or data it must not see.
REFUSED_PAGES = {
    "/admin/users": "#new-user, .user-row",
    "/admin/roles": "#new-role, #role-matrix",
    "/export": "#scope-all, #export-next",
    "/cleanup": "#crit-no_contact",
    "/import": "#import-upload-submit",
    "/tags": "#new-tag",
}


def test_agent_sees_no_admin_menus_and_admin_pages_show_no_access(page, app_server):
    login(page, app_server, "agent")
    expect(page.locator("#nav-customers")).to_be_visible()
    for hidden in ("#nav-audit", "#nav-admin-users", "#nav-admin-roles", "#nav-export", "#nav-tags"):
        expect(page.locator(hidden)).to_have_count(0)
    for path, controls in REFUSED_PAGES.items():
        page.goto(path)
        expect(page.locator("#no-access")).to_contain_text("没有访问权限")
        expect(page.locator("#no-access-home")).to_have_attribute("href", "/")
        expect(page.locator(controls)).to_have_count(0)
    page.locator("#lang-switch").click()
    expect(page.locator("#no-access")).to_contain_text("No access")
    page.locator("#lang-switch").click()
    with app_server.sql() as db:
        refused = dict(
            db.execute(
                "SELECT target_id, count(*) FROM audit_entry WHERE actor_name = 'agent' "
                "AND action = 'page.open' AND result = 'refused' GROUP BY target_id"
            ).fetchall()
        )
        # The page loaded nothing: its services were not even asked.
        listed = db.execute(
            "SELECT count(*) FROM audit_entry WHERE actor_name = 'agent' AND action IN ('user.list', 'role.list')"
        ).fetchone()[0]
    assert set(refused) >= set(REFUSED_PAGES)
    assert listed == 0


@pytest.mark.pg
def test_admin_edits_role_matrix_and_it_applies_at_next_load(page, browser, app_server):
    with app_server.sql() as db:
        granted_before = db.execute("SELECT permissions FROM role WHERE name = 'agent'").fetchone()[0]
    agent_context = browser.new_context(base_url=app_server.url)
    agent_page = agent_context.new_page()
    try:
        login(agent_page, app_server, "agent")
        expect(agent_page.locator("#nav-audit")).to_have_count(0)

        login(page, app_server, "admin", "/admin/roles")
        box = page.locator("#perm-agent-audit-view")
        expect(box).to_have_attribute("data-state", "unchecked")
        box.click()
        expect(box).to_have_attribute("data-state", "checked")

        agent_page.reload()
        expect(agent_page.locator("#nav-audit")).to_be_visible()
        agent_page.locator("#nav-audit").click()
        expect(agent_page.locator("#audit-table .audit-row").first).to_be_visible()
        with app_server.sql() as db:
            granted = db.execute(
                "SELECT details FROM audit_entry WHERE action = 'role.update' ORDER BY id DESC LIMIT 1"
            ).fetchone()[0]
        assert "audit.view" in granted

        box.click()  # revoke again; the agent loses the page at the next load
        expect(box).to_have_attribute("data-state", "unchecked")
        agent_page.reload()
        expect(agent_page.locator("#nav-audit")).to_have_count(0)
    finally:
        agent_context.close()
        with app_server.sql() as db:  # the agent role is shared by the whole run, also when this test fails
            db.execute("UPDATE role SET permissions = ? WHERE name = 'agent'", (granted_before,))


def test_revoking_a_permission_shows_no_access_on_the_open_page_at_its_next_event(page, browser, app_server):
    with app_server.sql() as db:
        granted_before = db.execute("SELECT permissions FROM role WHERE name = 'data_analyst'").fetchone()[0]
    analyst_context = browser.new_context(base_url=app_server.url)
    analyst_context.set_default_timeout(20_000)
    analyst = analyst_context.new_page()
    try:
        login(analyst, app_server, "analyst", "/reports")
        expect(analyst.locator("#comparison-table")).to_be_visible()

        login(page, app_server, "admin", "/admin/roles")
        box = page.locator("#perm-data_analyst-report-view")
        expect(box).to_have_attribute("data-state", "checked")
        box.click()
        expect(box).to_have_attribute("data-state", "unchecked")

        # No reload: the analyst's next click on the open page.
        analyst.locator("#report-run").click()
        expect(analyst.locator("#no-access")).to_be_visible()
        expect(analyst.locator("#comparison-table")).to_have_count(0)
        expect(analyst.locator("#nav-reports")).to_have_count(0)
    finally:
        analyst_context.close()
        with app_server.sql() as db:  # the role is shared by the whole run, also when this test fails
            db.execute("UPDATE role SET permissions = ? WHERE name = 'data_analyst'", (granted_before,))


def test_english_login_errors(page, app_server):
    page.goto("/login")
    page.locator("#lang-switch").click()
    page.get_by_label("Username").fill("nobody-here")
    page.get_by_label("Password").fill("whatever-123")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_have_text("Wrong username or password")


def test_back_from_the_code_step_keeps_the_username(page, app_server):
    account = app_server.accounts["analyst"]
    _password_step(page, account.username, account.password)
    expect(page.locator("#code")).to_be_visible()
    page.locator("#code-form button[type=button]").click()
    expect(page.locator("#username")).to_have_value(account.username)
    expect(page.locator("#password")).to_have_value("")
