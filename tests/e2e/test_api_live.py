"""The open API feeding an open customer page: a connected system sends a chat message and an
order for the customer an agent is looking at; the agent's timeline shows both within two
seconds, without a reload, and "last active" moves (services/ingest.py, the live watcher in
state/customer_activity.py)."""

from __future__ import annotations

import json
import secrets
import time
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
def test_a_chat_message_and_an_order_sent_through_the_api_appear_on_the_open_page_within_2_seconds(
    page, app_server
):
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
