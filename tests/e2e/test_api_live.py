"""The open API feeding an open customer page: a connected system sends a chat message and an
order for the customer an agent is looking at; the agent's timeline shows both within two
seconds, without a reload, and "last active" moves (services/integrations/ingest.py, the live watcher in
state/customer_activity.py)."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.e2e.harness import login

LIVE_SECONDS = 2.0


def _post(app_server, key: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        app_server.url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.pg
def test_a_chat_message_and_an_order_sent_through_the_api_appear_on_the_open_page_within_2_seconds(page, app_server):
    output = app_server.cli("create-api-key", "--name", f"live-{secrets.token_hex(3)}", "--scopes", "events:write")
    key = output.strip().splitlines()[-1]
    assert key.startswith("mqk_")
    with app_server.sql() as db:
        customer_id, last_active = db.execute(
            "SELECT id, last_active_at FROM customer WHERE status = 'active' AND erased_at IS NULL "
            "AND last_active_at < '2026-01-01' AND id NOT IN (SELECT customer_id FROM erasure_request) "
            "AND id IN (SELECT customer_id FROM behavior_event) "
            "ORDER BY id LIMIT 1"
        ).fetchone()
    login(page, app_server, "agent", f"/customers/{customer_id}")
    expect(page.locator("#timeline .timeline-item").first).to_be_visible()
    before = page.locator("#field-last_active_at").inner_text()
    # Give the page's watcher a moment to start (it is started by the timeline's load).
    page.wait_for_timeout(300)

    tag = secrets.token_hex(3)
    text = f"你好，我想问一下订单什么时候发货？#{tag}"
    order_id = f"LIVE-{tag}"
    answer = _post(
        app_server,
        key,
        "/api/v1/events",
        {
            "events": [
                {
                    "event_id": f"chat-{tag}",
                    "type": "chat_message",
                    "customer": {"id": customer_id},
                    "conversation_id": f"conv-{tag}",
                    "direction": "in",
                    "text": text,
                },
                {
                    "event_id": f"order-{tag}",
                    "type": "order",
                    "customer": {"id": customer_id},
                    "order_id": order_id,
                    "status": "paid",
                    "items": [{"sku": "LIVE-1", "name": "实时商品", "quantity": 1, "price_cents": 19900}],
                },
            ]
        },
    )
    sent = time.monotonic()
    assert answer["accepted"] == 2, answer
    timeline = page.locator("#timeline")
    expect(timeline.get_by_text(order_id)).to_be_visible(timeout=10_000)
    expect(timeline.get_by_text(f"#{tag}")).to_be_visible(timeout=10_000)
    shown_after = time.monotonic() - sent
    print(f"live: shown {shown_after:.2f} s after the API answered")
    assert shown_after <= LIVE_SECONDS, f"shown after {shown_after:.2f} s"
    expect(page.locator("#field-last_active_at")).not_to_have_text(before)
    assert page.url.endswith(f"/customers/{customer_id}")  # no reload, no navigation
    assert last_active is not None


def _get(app_server, key: str, path: str) -> int:
    request = urllib.request.Request(app_server.url + path, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_makes_a_key_sees_it_once_uses_it_and_revokes_it(page, app_server):
    login(page, app_server, "admin", "/admin/api-keys")
    name = f"crm-{secrets.token_hex(3)}"
    page.locator("#api-key-name").fill(name)
    page.get_by_role("checkbox", name="customers:read 读取客户（敏感字段脱敏）", exact=True).click()
    page.locator("#api-key-create").click()
    shown = page.locator("#api-key-new")
    expect(shown).to_be_visible()
    key = shown.inner_text().strip()
    assert key.startswith("mqk_")
    page.locator("#api-key-new-close").click()
    expect(shown).to_be_hidden()
    row = page.locator(".api-key-row", has_text=name)
    expect(row).to_contain_text(key[:12])
    assert key not in page.content()  # listed by its prefix only
    assert _get(app_server, key, "/api/v1/customers?limit=1") == 200
    with app_server.sql() as db:
        stored = db.execute("SELECT key_hash, prefix FROM api_key WHERE name = ?", (name,)).fetchone()
    assert stored[1] == key[:12] and key not in stored[0]
    row.get_by_role("button", name="吊销").click()
    page.locator("#api-key-revoke-dialog-confirm").click()
    expect(row).to_contain_text("已吊销")
    assert _get(app_server, key, "/api/v1/customers?limit=1") == 401


def test_admin_adds_a_webhook_and_sees_the_delivery_in_its_log(page, app_server):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        login(page, app_server, "admin", "/admin/webhooks")
        page.locator("#webhook-add").click()
        page.locator("#webhook-url").fill(url)
        page.locator("#webhook-save").click()
        secret = page.locator("#webhook-new-secret")
        expect(secret).to_contain_text("whsec_")
        page.locator("#webhook-secret-close").click()  # the secret dialog is modal: the rows behind it are hidden
        expect(secret).to_be_hidden()
        row = page.locator(".webhook-row", has_text=url)
        expect(row).to_be_visible()
        output = app_server.cli(
            "create-api-key", "--name", f"hook-{secrets.token_hex(3)}", "--scopes", "customers:write"
        )
        key = output.strip().splitlines()[-1]
        created = _post(app_server, key, "/api/v1/customers", {"name": f"钩子客户{secrets.token_hex(2)}"})
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert received and json.loads(received[0])["data"]["customer"]["id"] == created["id"]
        row.get_by_role("button", name="发送记录").click()
        log = page.locator("#webhook-deliveries .delivery-row").first
        expect(log).to_contain_text("成功")
        expect(log).to_contain_text("204")
        log.get_by_role("button", name="重新发送").click()
        deadline = time.monotonic() + 15
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(received) == 2 and json.loads(received[1])["id"] == json.loads(received[0])["id"]
    finally:
        server.shutdown()
        server.server_close()
