"""What Reflex stores of a browser tab, and who can get it back (security issue, items 1, 8, 10).

- A manager who enrols an authenticator at login, sees unmasked phones, and
  re-enrols on /account; an admin who erases a customer: afterwards no state
  file (no Redis key under ``make test-pg``) holds either session cookie, a
  TOTP secret, a recovery code, or the erased customer's phone, name or
  e-mail; the states folder is 0700 and its files 0600.
- A closed tab's client token, replayed by a browser without the cookie,
  hydrates an empty tab: no phone the manager saw comes over the websocket.
- A page opened from an origin the websocket refuses says so (instead of a
  login page that hangs); the app itself runs on a random port with the
  default origins (the harness sets none).
- An event naming an unknown handler is logged without the session cookie.
"""

from __future__ import annotations

import stat
import time

import pyotp
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.harness import SESSION_COOKIE, wait_for_path, wait_ready

ERASED = {"name": "隐私态删", "phone": "13712340987", "email": "state.erase.e2e@example.net"}
MANAGER = {"username": "privacy_mgr", "password": "Privacy-mgr-2026!", "role": "manager"}


def _is_pg(app_server) -> bool:
    return app_server.env.get("DATABASE_URL", "").startswith("postgresql")


def _commit(db, app_server) -> None:
    if not _is_pg(app_server):
        db.commit()


def _choose(page, trigger: str, option: str) -> None:
    page.locator(trigger).click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(trigger)).to_contain_text(option)


def _new_page(browser, app_server):
    context = browser.new_context(base_url=app_server.url, locale="zh-CN", viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    return context, context.new_page()


def _session_cookie(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)


def _stored_states(app_server) -> dict[str, bytes]:
    """Every stored tab state: the files of the states folder, or every Redis key."""
    redis_url = app_server.env.get("REFLEX_REDIS_URL", "")
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        stored = {}
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                stored[key.decode(errors="replace")] = key + b"=" + (client.get(key) or b"")
            elif kind == b"hash":
                stored[key.decode(errors="replace")] = key + repr(client.hgetall(key)).encode()
            else:
                stored[key.decode(errors="replace")] = key
        return stored
    folder = app_server.data_dir / "states"
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _unmasked_phones(page) -> list[str]:
    """The phones the customer list shows, unmasked (a manager's view)."""
    expect(page.locator("#customer-table .customer-row").first).to_be_visible()
    phones = [
        text.strip()
        for text in page.locator("#customer-table .customer-row .col-phone").all_inner_texts()
        if text.strip() and "*" not in text
    ]
    assert len(phones) >= 10
    return phones


def _enrol_at_login(page, app_server) -> tuple[str, list[str]]:
    """Log in as a manager who has no authenticator yet: enrol, note the codes, go on."""
    page.goto("/login?next=/customers")
    page.get_by_label("用户名").fill(MANAGER["username"])
    page.get_by_label("密码").fill(MANAGER["password"])
    page.locator("#login-submit").click()
    expect(page.locator("#enrol-secret")).not_to_have_text("")
    secret = page.locator("#enrol-secret").inner_text().strip()
    page.locator("#code").fill(pyotp.TOTP(secret).now())
    page.locator("#code-submit").click()
    expect(page.locator("#recovery-codes .recovery-code").first).to_be_visible()
    codes = [c.strip() for c in page.locator("#recovery-codes .recovery-code").all_inner_texts()]
    page.locator("#recovery-done").click()  # the browser hands back the ticket it was given
    wait_for_path(page, "/customers")
    wait_ready(page)
    return secret, codes


def _reenrol(page, recovery_code: str) -> tuple[str, list[str]]:
    """Move to a new authenticator: the current password and a recovery code first."""
    page.goto("/account")
    wait_ready(page)
    page.locator("#start-reenrol").click()
    page.locator("#reenrol-password").fill(MANAGER["password"])
    page.locator("#reenrol-current-code").fill(recovery_code)
    page.locator("#reenrol-verify-submit").click()
    expect(page.locator("#reenrol-secret")).not_to_have_text("")
    secret = page.locator("#reenrol-secret").inner_text().strip()
    page.locator("#reenrol-code").fill(pyotp.TOTP(secret).now())
    page.locator("#reenrol-submit").click()
    expect(page.locator("#new-recovery-codes code").first).to_be_visible()
    codes = [c.strip() for c in page.locator("#new-recovery-codes code").all_inner_texts()]
    return secret, codes


def _erase(page, app_server, customer_id: int) -> None:
    """The admin files the erasure request and executes it in the cleanup wizard."""
    with app_server.sql() as db:
        pending = db.execute(
            "SELECT count(DISTINCT r.customer_id) FROM erasure_request r JOIN customer c "
            "ON c.id=r.customer_id WHERE r.status='pending' AND c.status='active'"
        ).fetchone()[0]
    login(page, app_server, "admin", f"/customers/{customer_id}")
    page.locator("#request-erasure").click()
    page.locator("#erasure-reason").fill("客户要求删除（状态存储测试）")
    page.locator("#erasure-submit").click()
    expect(page.get_by_text("已申请删除个人数据，等待执行")).to_be_visible()
    page.goto("/cleanup")
    wait_ready(page)
    page.locator("#crit-erasure_pending").click()
    expect(page.locator("#crit-erasure_pending")).to_have_attribute("data-state", "checked")
    _choose(page, "#cleanup-action", "删除个人数据（不可恢复）")
    page.locator("#cleanup-dry-run").click()
    expect(page.locator("#cleanup-count")).to_contain_text(str(pending + 1))
    page.locator("#cleanup-confirm").fill(str(pending + 1))
    page.locator("#cleanup-run").click()
    expect(page.locator("#cleanup-report")).to_contain_text("已完成", timeout=60_000)
    with app_server.sql() as db:
        status = db.execute("SELECT status FROM erasure_request WHERE customer_id=?", (customer_id,)).fetchone()[0]
        phone = db.execute("SELECT phone FROM customer WHERE id=?", (customer_id,)).fetchone()[0]
    assert status == "done" and phone != ERASED["phone"]


@pytest.mark.pg
def test_stored_tab_states_hold_no_cookie_totp_secret_recovery_code_or_erased_customer(browser, app_server):
    app_server.cli(
        "create-user", "--username", MANAGER["username"], "--password", MANAGER["password"], "--role", "manager"
    )
    with app_server.sql() as db:
        # This manager enrols an authenticator at the first login.
        db.execute("UPDATE app_user SET totp_secret_enc=NULL WHERE username=?", (MANAGER["username"],))
        customer_id = db.execute(
            "SELECT c.id FROM customer c WHERE status='active' AND phone IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM erasure_request r WHERE r.customer_id=c.id) ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
        # Values found nowhere else, so "no stored state holds them" is a sharp check.
        db.execute(
            "UPDATE customer SET name=?, phone=?, email=? WHERE id=?",
            (ERASED["name"], ERASED["phone"], ERASED["email"], customer_id),
        )
        db.execute(
            "UPDATE customer_search SET text=? WHERE customer_id=?",
            (f"{ERASED['name']} {ERASED['phone']} {ERASED['email']}", customer_id),
        )
        _commit(db, app_server)

    manager_context, manager = _new_page(browser, app_server)
    admin_context, admin = _new_page(browser, app_server)
    try:
        enrol_secret, login_codes = _enrol_at_login(manager, app_server)
        list_phones = _unmasked_phones(manager)  # a manager may see phones
        manager.goto(f"/customers/{customer_id}")
        wait_ready(manager)
        expect(manager.locator("#main")).to_contain_text(ERASED["phone"])
        reenrol_secret, new_codes = _reenrol(manager, login_codes[0])
        manager_cookie = _session_cookie(manager)

        _erase(admin, app_server, customer_id)
        admin_cookie = _session_cookie(admin)
    finally:
        manager_context.close()
        admin_context.close()
    time.sleep(5)  # the disk manager writes a tab's state 2 s after its last event

    secrets = {
        "manager's session cookie": manager_cookie,
        "admin's session cookie": admin_cookie,
        "TOTP secret shown at enrolment": enrol_secret,
        "TOTP secret shown at re-enrolment": reenrol_secret,
        **{f"recovery code {code}": code for code in [*login_codes, *new_codes]},
        **{f"erased {field}": value for field, value in ERASED.items()},
        **{f"phone on the list {phone}": phone for phone in list_phones},
    }
    stored = _stored_states(app_server)
    assert len(stored) > 10  # the tabs above were stored
    leaks = [
        (what, where) for where, data in stored.items() for what, value in secrets.items() if value.encode() in data
    ]
    assert leaks == []
    if not app_server.env.get("REFLEX_REDIS_URL"):
        folder = app_server.data_dir / "states"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir() if path.is_file()}
        assert {name: oct(mode) for name, mode in modes.items() if mode != 0o600} == {}


@pytest.mark.pg
def test_a_closed_tabs_client_token_without_the_cookie_gets_no_data(browser, app_server):
    victim_context, victim = _new_page(browser, app_server)
    try:
        login(victim, app_server, "manager", "/customers")
        phones = _unmasked_phones(victim)
        token = victim.evaluate("() => window.sessionStorage.getItem('token')")
    finally:
        victim_context.close()  # the tab is gone; its state stays on the server
    assert phones and token
    time.sleep(2)  # the server has noticed the disconnect

    attacker_context, attacker = _new_page(browser, app_server)
    frames: list[str] = []
    attacker.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    attacker.add_init_script(f"window.sessionStorage.setItem('token', {token!r})")
    try:
        attacker.goto("/customers")
        wait_for_path(attacker, "/login")
        expect(attacker.locator("#login-submit")).to_be_enabled()  # hydrated
        assert attacker.evaluate("() => window.sessionStorage.getItem('token')") == token  # the stolen token was used
    finally:
        attacker_context.close()
    received = "".join(frames)
    assert "is_hydrated" in received  # the hydration snapshot came
    assert [phone for phone in phones if phone in received] == []
    assert "manager" not in received.replace("privacy_mgr", "")


def test_a_page_from_a_refused_origin_says_why_instead_of_hanging(page, app_server):
    port = app_server.url.rsplit(":", 1)[1]
    refused = f"http://127.0.0.2:{port}"  # loopback too, but not the app's own origin
    page.goto(f"{refused}/login")
    banner = page.locator("#connection-error")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("MEIQIA_ALLOWED_ORIGINS")
    expect(banner).to_contain_text(refused)
    # The app's own address works with the default origins.
    page.goto(f"{app_server.url}/login")
    expect(page.locator("#login-submit")).to_be_enabled()
    expect(page.locator("#connection-error")).to_have_count(0)


def test_an_event_for_an_unknown_handler_leaves_no_cookie_in_the_log(page, app_server):
    login(page, app_server, "admin", "/customers")
    cookie = _session_cookie(page)
    before = app_server.log_path.read_text(errors="replace")
    # A crafted websocket message (Socket.IO over the page's own connection rules: the browser sends the cookie).
    answer = page.evaluate(
        """async () => {
            const token = window.sessionStorage.getItem('token') + '-probe';
            const url = location.origin.replace('http', 'ws') + '/_event/?EIO=4&transport=websocket&token=' + token;
            const ws = new WebSocket(url);
            const received = [];
            await new Promise((resolve, reject) => {
                ws.onmessage = (m) => {
                    received.push(m.data);
                    if (m.data.startsWith('0')) ws.send('40/_event,');
                    if (m.data.startsWith('40/_event')) {
                        ws.send('42/_event,' + JSON.stringify(['event', {
                            name: 'reflex___state____state.no_such_handler_probe',
                            payload: {},
                            router_data: {pathname: '/customers', query: {}},
                        }]));
                        setTimeout(resolve, 1500);
                    }
                };
                ws.onerror = reject;
            });
            ws.close();
            return received;
        }"""
    )
    assert any(message.startswith("40/_event") for message in answer)
    deadline = time.time() + 10
    log = ""
    while time.time() < deadline:
        log = app_server.log_path.read_text(errors="replace")[len(before) :]
        if "no_such_handler_probe" in log:
            break
        time.sleep(0.5)
    assert "no_such_handler_probe" in log  # the event was logged
    assert cookie not in log.replace("\n", "").replace(" ", "")
