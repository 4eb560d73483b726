"""In Chromium: another site cannot log anyone out, and a session alone cannot move
two-step verification to a new authenticator (which then ends the other sessions)."""

from __future__ import annotations

import time

import pyotp
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_for_path
from tests.e2e.harness import SESSION_COOKIE, wait_ready

EVIL = "http://evil.test"


def _revoked_logouts(app_server, username: str) -> int:
    with app_server.sql() as db:
        return db.execute(
            "SELECT count(*) FROM user_session s JOIN app_user u ON u.id = s.user_id "
            "WHERE u.username = ? AND s.revoked_reason = 'logout'",
            (username,),
        ).fetchone()[0]


def test_another_site_cannot_log_the_user_out(page, app_server):
    login(page, app_server, "analyst", "/customers")
    before = _revoked_logouts(app_server, "analyst")
    clear = f"{app_server.url}/api/session/clear"
    # A page on another site: a link (top-level GET, which carries the SameSite=Lax
    # cookie) and a form posting to the logout route.
    page.route(
        f"{EVIL}/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=(
                f'<a id="go" href="{clear}">win a prize</a>'
                f'<form id="f" method="post" action="{clear}"><button id="post">go</button></form>'
            ),
        ),
    )
    page.goto(f"{EVIL}/")
    page.locator("#go").click()
    page.wait_for_load_state()
    page.goto(f"{EVIL}/")
    page.locator("#post").click()
    page.wait_for_load_state()
    # Requests with the user's cookie but no same-origin proof: a GET, a POST from elsewhere, a bare POST.
    assert page.request.get(clear, max_redirects=0).status == 405
    assert page.request.post(clear, headers={"Origin": EVIL}, max_redirects=0).status == 403
    assert page.request.post(clear, max_redirects=0).status == 403
    assert any(c["name"] == SESSION_COOKIE for c in page.context.cookies())
    page.goto("/customers")
    wait_for_path(page, "/customers")
    expect(page.locator("#customer-table .customer-row").first).to_be_visible()
    assert _revoked_logouts(app_server, "analyst") == before


def _enrolled_user_with_recovery_codes(page, app_server, username: str, password: str) -> list[str]:
    """Create a user without two-step set up; its first login enrols and shows the recovery codes."""
    app_server.cli("create-user", "--username", username, "--password", password, "--role", "agent")
    with app_server.sql() as db:  # the CLI enrols the user; start over as a user an admin just created
        db.execute("UPDATE app_user SET totp_secret_enc = NULL WHERE username = ?", (username,))
    page.goto("/login?next=/account")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.locator("#login-submit").click()
    expect(page.locator("#enrol-secret")).not_to_have_text("")
    secret = page.locator("#enrol-secret").inner_text().strip()
    page.locator("#code").fill(pyotp.TOTP(secret).now())
    page.locator("#code-submit").click()
    expect(page.locator("#recovery-codes .recovery-code").first).to_be_visible()
    codes = [c.strip() for c in page.locator("#recovery-codes .recovery-code").all_inner_texts()]
    assert len(codes) == 10
    page.locator("#recovery-done").click()
    wait_for_path(page, "/account")
    wait_ready(page)
    return codes


def _login_with_recovery_code(page, username: str, password: str, code: str) -> None:
    page.goto("/login?next=/account")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.locator("#login-submit").click()
    page.locator("#code").fill(code)
    page.locator("#code-submit").click()
    wait_for_path(page, "/account")
    wait_ready(page)


def test_moving_to_a_new_authenticator_needs_password_and_code_and_ends_other_sessions(page, browser, app_server):
    username, password = "moving", "Moving-day-2026x"
    codes = _enrolled_user_with_recovery_codes(page, app_server, username, password)
    other = browser.new_context(base_url=app_server.url, locale="zh-CN")
    other.set_default_timeout(20_000)
    try:
        other_page = other.new_page()
        _login_with_recovery_code(other_page, username, password, codes[0])

        page.locator("#start-reenrol").click()
        # A session alone shows no new secret: first the password and a current code.
        expect(page.locator("#reenrol-password")).to_be_visible()
        expect(page.locator("#reenrol-secret")).to_have_count(0)
        page.locator("#reenrol-password").fill("Not-my-password-1")
        page.locator("#reenrol-current-code").fill(codes[1])
        page.locator("#reenrol-verify-submit").click()
        expect(page.get_by_text("原密码不正确")).to_be_visible()
        expect(page.locator("#reenrol-secret")).to_have_count(0)

        page.locator("#reenrol-password").fill(password)
        page.locator("#reenrol-current-code").fill(codes[1])
        page.locator("#reenrol-verify-submit").click()
        new_secret = page.locator("#reenrol-secret").inner_text().strip()
        page.locator("#reenrol-code").fill(pyotp.TOTP(new_secret).now())
        page.locator("#reenrol-submit").click()
        expect(page.locator("#new-recovery-codes code")).to_have_count(10)

        with app_server.sql() as db:
            reasons = [
                row[0]
                for row in db.execute(
                    "SELECT s.revoked_reason FROM user_session s JOIN app_user u ON u.id = s.user_id "
                    "WHERE u.username = ? ORDER BY s.id",
                    (username,),
                )
            ]
            actions = [
                row[0]
                for row in db.execute(
                    "SELECT action || ':' || result FROM audit_entry WHERE actor_name = ? ORDER BY id", (username,)
                )
            ]
        assert reasons == [None, "totp_reenrolled"]  # this browser stays, the other one is out
        assert "auth.totp_reenrol:refused" in actions and "auth.totp_reenrolled:ok" in actions
        other_page.goto("/customers")
        wait_for_path(other_page, "/login")  # the other browser is logged out
    finally:
        other.close()


def _log_in_with_totp(page, username: str, password: str, code: str) -> None:
    page.goto("/login?next=/account")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.locator("#login-submit").click()
    page.locator("#code").fill(code)
    page.locator("#code-submit").click()
    wait_for_path(page, "/account")
    wait_ready(page)


def test_admin_makes_new_recovery_codes_logs_in_with_one_and_signs_the_other_session_out(page, browser, app_server):
    """An admin with no recovery codes left makes new ones (password + authenticator code,
    shown once), logs in with one in another browser, sees both sessions on /account and
    signs the other one out, which ends it."""
    username, password, secret = "keymaster", "Keymaster-vault-2026x", pyotp.random_base32()
    app_server.cli(
        "create-user", "--username", username, "--password", password, "--role", "admin", "--totp-secret", secret
    )
    totp = pyotp.TOTP(secret)
    _log_in_with_totp(page, username, password, totp.now())
    expect(page.locator("#no-recovery-left")).to_be_visible()
    expect(page.locator("#recovery-left")).to_contain_text("0")

    page.locator("#start-regen").click()
    page.locator("#regen-password").fill(password)
    page.locator("#regen-code").fill("000000")
    page.locator("#regen-submit").click()
    expect(page.get_by_text("验证码错误")).to_be_visible()
    expect(page.locator("#regenerated-codes code")).to_have_count(0)
    page.locator("#regen-password").fill(password)
    # The login used this 30-second step's code; the next step's is accepted (one step of drift).
    page.locator("#regen-code").fill(totp.at(time.time() + 30))
    page.locator("#regen-submit").click()
    expect(page.locator("#regenerated-codes code")).to_have_count(10)
    codes = [c.strip() for c in page.locator("#regenerated-codes code").all_inner_texts()]
    expect(page.locator("#recovery-left")).to_contain_text("10")
    page.locator("#regen-done").click()
    expect(page.locator("#regenerated-codes")).to_have_count(0)

    other = browser.new_context(base_url=app_server.url, locale="zh-CN")
    other.set_default_timeout(20_000)
    try:
        other_page = other.new_page()
        _login_with_recovery_code(other_page, username, password, codes[0])
        expect(other_page.locator("#recovery-left")).to_contain_text("9")

        page.reload()
        wait_ready(page)
        rows = page.locator("#session-list .session-row")
        expect(rows).to_have_count(2)
        expect(page.locator('#session-list .session-row[data-current="true"]')).to_contain_text("当前会话")
        other_row = page.locator('#session-list .session-row[data-current="false"]')
        expect(other_row).to_contain_text("Chrome")
        expect(other_row).to_contain_text("127.0.0.1")
        other_row.get_by_role("button", name="退出此会话").click()
        expect(rows).to_have_count(1)

        other_page.goto("/customers")
        wait_for_path(other_page, "/login")  # the signed-out browser is logged out
        page.goto("/customers")
        wait_for_path(page, "/customers")  # this one is not
    finally:
        other.close()
    with app_server.sql() as db:
        actions = [
            row[0]
            for row in db.execute(
                "SELECT action || ':' || result FROM audit_entry WHERE actor_name = ? ORDER BY id", (username,)
            )
        ]
    assert actions.count("auth.recovery_codes_renew:refused") == 1
    assert "auth.recovery_codes_renew:ok" in actions and "auth.session_revoke:ok" in actions
