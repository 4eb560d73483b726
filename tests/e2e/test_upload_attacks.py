"""Raw requests to the real app's /_upload: without the request's own session, with another
user's tab, or too big, an upload is refused before anything is stored."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.harness import SESSION_COOKIE, wait_ready

BOUNDARY = "----meiqia-e2e-boundary"


def _multipart(name: str, content: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post(app_server, headers: dict, body: bytes, cookie: str | None = None) -> tuple[int, bytes]:
    """POST ``body`` to /_upload; the answer also when the server refuses before reading the body
    (it answers and closes while the body is still being sent: the point of the guard)."""
    host = urlsplit(app_server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    try:
        conn.putrequest("POST", "/_upload")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(len(body)))
        for key, value in headers.items():
            conn.putheader(key, value)
        if cookie:
            conn.putheader("Cookie", f"{SESSION_COOKIE}={cookie}")
        conn.endheaders()
        try:
            for start in range(0, len(body), 1 << 16):
                conn.send(body[start : start + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stored(app_server) -> set[str]:
    folder = app_server.data_dir / "imports"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _cookie_of(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)


def test_uploads_need_the_requests_own_session_and_the_tabs_own_user(page, browser, app_server, tmp_path):
    # A real upload by the manager, to learn what the browser sends.
    csv_file = tmp_path / "legit.csv"
    csv_file.write_text("姓名,手机号码\n上传甲,13912345670\n", encoding="utf-8")
    login(page, app_server, "manager", "/import")
    page.locator("#import-upload input[type=file]").set_input_files(str(csv_file))
    with page.expect_request("**/_upload") as captured:
        page.locator("#import-upload-submit").click()
    expect(page.locator(".mapping-row")).to_have_count(2)
    sent = captured.value.headers
    tab = {"Reflex-Client-Token": sent["reflex-client-token"], "Reflex-Event-Handler": sent["reflex-event-handler"]}
    body = _multipart("evil.csv", "姓名\n攻击者\n".encode() * 50_000)  # ~700 KB
    before = _stored(app_server)

    # 1. The manager's tab token and no cookie: refused before the body is read.
    status, _ = _post(app_server, tab, body)
    assert status == 401
    # 2. An agent's session (no import permission) with the manager's tab: refused.
    agent_context = browser.new_context(base_url=app_server.url, locale="zh-CN")
    try:
        agent_page = agent_context.new_page()
        agent_page.set_default_timeout(20_000)
        login(agent_page, app_server, "agent", "/customers")
        status, _ = _post(app_server, tab, body, cookie=_cookie_of(agent_page))
        assert status == 403
    finally:
        agent_context.close()
    # 3. Another importer's session (admin) with the manager's tab: the file does not land in the manager's page.
    admin_context = browser.new_context(base_url=app_server.url, locale="zh-CN")
    try:
        admin_page = admin_context.new_page()
        admin_page.set_default_timeout(20_000)
        login(admin_page, app_server, "admin", "/customers")
        status, answer = _post(app_server, tab, body, cookie=_cookie_of(admin_page))
        assert status == 200 and "上传被拒绝".encode() in answer
    finally:
        admin_context.close()
    assert _stored(app_server) == before

    # 4. The manager's own session, but 60 MB declared: 413 before a byte of it is read.
    host = urlsplit(app_server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    try:
        conn.putrequest("POST", "/_upload")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(60 * 1024 * 1024))
        conn.putheader("Cookie", f"{SESSION_COOKIE}={_cookie_of(page)}")
        for key, value in tab.items():
            conn.putheader(key, value)
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert _stored(app_server) == before

    # The manager's own page still works. (Requests with another session reset the
    # tab they named, so nothing of the manager's stays in it; a reload binds the tab
    # to the manager's session again.)
    again = tmp_path / "again.csv"
    again.write_text("姓名\n上传乙\n", encoding="utf-8")
    page.reload()
    wait_ready(page)
    page.locator("#import-upload input[type=file]").set_input_files(str(again))
    page.locator("#import-upload-submit").click()
    expect(page.locator(".mapping-row")).to_have_count(1)
    assert len(_stored(app_server) - before) == 1
