"""Webhooks (services/integrations/webhooks.py): signed deliveries checked by an independent implementation,
retries with backoff, a restart in the middle of retries, erasure not leaking, refused private
addresses, a rolled-back change sending nothing, and a failing endpoint disabled with its reason.

A real HTTP receiver runs on 127.0.0.1 in each test (MEIQIA_WEBHOOKS_ALLOW_PRIVATE=true)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import select

from meiqia_app.config import reload_settings
from meiqia_app.db import read_session, reset_engine, write_session
from meiqia_app.models import Customer, WebhookDelivery, WebhookEndpoint
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.integrations import webhook_delivery, webhooks
from meiqia_app.services.privacy import erasure
from meiqia_app.timeutil import as_utc, utcnow
from tests.unit.api_support import assert_conforms, audit_rows, bearer, client, new_key

SECRET = "test-secret-0123456789"
WEBHOOK_SCOPES = ["webhooks:manage", "customers:read", "customers:read_sensitive", "customers:write", "tags:write"]


class Receiver:
    """A webhook receiver: records each request; answers 500 to the first ``fail_first`` ones."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.always_fail = always_fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = receiver.always_fail or len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/meiqia"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def private_ok(monkeypatch):
    monkeypatch.setenv("MEIQIA_WEBHOOKS_ALLOW_PRIVATE", "true")
    reload_settings()


@pytest.fixture()
def receiver(private_ok):
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """An independent check of X-Meiqia-Signature, as a receiver would write it."""
    fields = dict(part.split("=", 1) for part in headers["x-meiqia-signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def _endpoint(api, raw, url, events=("customer.updated",), secret=SECRET) -> int:
    response = api.post(
        "/api/v1/webhooks", json={"url": url, "events": list(events), "secret": secret}, headers=bearer(raw)
    )
    assert response.status_code == 201, response.text
    assert_conforms(api, response)
    return response.json()["id"]


def _patch(api, raw, customer_id: int, **fields) -> None:
    version = api.get(f"/api/v1/customers/{customer_id}", headers=bearer(raw)).json()["version"]
    response = api.patch(
        f"/api/v1/customers/{customer_id}", json=fields, headers={**bearer(raw), "If-Match": str(version)}
    )
    assert response.status_code == 200, response.text


def _deliveries() -> list[WebhookDelivery]:
    with read_session() as session:
        return list(session.exec(select(WebhookDelivery).order_by(WebhookDelivery.id)).all())


def test_a_delivery_is_signed_and_the_signature_checks_out_independently(seeded_db, receiver):
    hook = receiver()
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url)
    _patch(api, raw, 12, company="签名测试公司")
    assert webhooks.deliver_due() == {"succeeded": 1}
    [(headers, body)] = hook.requests
    assert verify(headers, body, SECRET)
    assert not verify(headers, body.replace("签名".encode(), "篡改".encode()), SECRET)
    assert not verify(headers, body, SECRET + "x")
    payload = json.loads(body)
    assert payload["type"] == headers["x-meiqia-event"] == "customer.updated"
    assert payload["id"] == headers["x-meiqia-event-id"]
    assert payload["data"]["customer"]["id"] == 12 and payload["data"]["customer"]["company"] == "签名测试公司"
    assert payload["data"]["changes"] == ["company"]
    [delivery] = _deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    log = api.get(f"/api/v1/webhooks/{delivery.endpoint_id}/deliveries", headers=bearer(raw))
    assert_conforms(api, log)
    assert log.json()["data"][0]["status"] == "succeeded"


def test_a_receiver_that_fails_twice_gets_the_delivery_on_the_third_try(seeded_db, receiver):
    hook = receiver(fail_first=2)
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url)
    _patch(api, raw, 13, company="重试公司")
    t0 = utcnow()
    assert webhooks.deliver_due(now=t0) == {"pending": 1}
    [delivery] = _deliveries()
    wait = (as_utc(delivery.next_attempt_at) - t0).total_seconds()
    assert 25 <= wait <= 35 and delivery.last_status_code == 500
    assert webhooks.deliver_due(now=t0 + dt.timedelta(seconds=10)) == {}  # not due yet
    assert webhooks.deliver_due(now=t0 + dt.timedelta(seconds=40)) == {"pending": 1}
    [delivery] = _deliveries()
    assert 50 <= (as_utc(delivery.next_attempt_at) - (t0 + dt.timedelta(seconds=40))).total_seconds() <= 70
    assert webhooks.deliver_due(now=t0 + dt.timedelta(seconds=120)) == {"succeeded": 1}
    [delivery] = _deliveries()
    assert (delivery.status, delivery.attempts) == ("succeeded", 3)
    assert len(hook.requests) == 3
    assert len({headers["x-meiqia-event-id"] for headers, _ in hook.requests}) == 1
    assert all(verify(headers, body, SECRET) for headers, body in hook.requests)
    with read_session() as session:
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    assert endpoint.failing_since is None and endpoint.last_success_at is not None


def test_a_restart_in_the_middle_of_retries_delivers_once_the_dead_claim_expires(seeded_db, receiver):
    hook = receiver(fail_first=1)
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url)
    _patch(api, raw, 14, company="重启公司")
    t0 = utcnow()
    assert webhooks.deliver_due(now=t0) == {"pending": 1}
    # A worker claims the retry and dies before sending it (its claim stays in the database).
    [delivery] = _deliveries()
    due = as_utc(delivery.next_attempt_at) + dt.timedelta(seconds=1)
    assert webhook_delivery._claim(delivery.id, due) is not None
    # The app restarts: a new engine, nothing in memory; the row is still there.
    reset_engine()
    assert webhooks.deliver_due(now=due + dt.timedelta(seconds=5)) == {}  # the claim has not expired
    later = due + dt.timedelta(seconds=webhook_delivery.CLAIM_GRACE_SECONDS + 15)
    assert webhooks.deliver_due(now=later) == {"succeeded": 1}
    assert webhooks.deliver_due(now=later + dt.timedelta(hours=1)) == {}  # sent once
    [delivery] = _deliveries()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    assert len(hook.requests) == 2


def test_an_erased_customer_is_in_no_later_delivery(seeded_db, receiver):
    hook = receiver()
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url, events=("customer.updated", "customer.erased", "customer.tagged"))
    with read_session() as session:
        customer = session.exec(
            select(Customer).where(Customer.phone.is_not(None), Customer.email.is_not(None)).order_by(Customer.id)
        ).first()
    name, phone, email = customer.name, customer.phone, customer.email
    _patch(api, raw, customer.id, company="将被删除的公司")
    assert (
        api.post(f"/api/v1/customers/{customer.id}/tags", json={"tags": ["VIP客户"]}, headers=bearer(raw)).status_code
        == 200
    )
    assert [d.status for d in _deliveries()] == ["pending", "pending"]
    erasure.erase_customer(SYSTEM_ACTOR, customer.id, confirm=str(customer.id))
    assert webhooks.deliver_due() == {"succeeded": 3}
    assert len(hook.requests) == 3
    for headers, body in hook.requests:
        text = body.decode("utf-8")
        for value in (name, phone, email, "将被删除的公司"):
            assert value not in text
        payload = json.loads(body)
        assert payload["data"]["customer"] == {"id": customer.id, "erased": True}
        assert verify(headers, body, SECRET)
    assert sorted(json.loads(b)["type"] for _, b in hook.requests) == [
        "customer.erased",
        "customer.tagged",
        "customer.updated",
    ]
    # A retry or "send again" after the erasure carries nothing either.
    old = _deliveries()[0]
    resent = api.post(f"/api/v1/webhooks/deliveries/{old.id}/resend", headers=bearer(raw))
    assert resent.status_code == 202
    assert_conforms(api, resent)
    webhooks.deliver_due()
    assert json.loads(hook.requests[-1][1])["data"] == {"customer": {"id": customer.id, "erased": True}}


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:8080/hook", "private_address"),
        ("http://localhost/hook", "private_address"),
        ("http://10.1.2.3/hook", "private_address"),
        ("http://192.168.0.10/hook", "private_address"),
        ("http://169.254.169.254/latest/meta-data", "private_address"),
        ("http://[::1]/hook", "private_address"),
        ("http://100.64.0.1/hook", "private_address"),
        ("http://user:pw@example.com/hook", "credentials_in_url"),
        ("ftp://example.com/hook", "bad_scheme"),
        ("file:///etc/passwd", "bad_scheme"),
    ],
)
def test_loopback_private_and_link_local_targets_are_refused(seeded_db, url, code):
    api, raw = client(), new_key("ops", ["webhooks:manage"])
    response = api.post("/api/v1/webhooks", json={"url": url, "events": ["customer.created"]}, headers=bearer(raw))
    assert response.status_code == 422
    assert_conforms(api, response)
    assert response.json()["errors"][0] == {**response.json()["errors"][0], "field": "url", "code": code}


def test_the_address_is_checked_again_when_sending(seeded_db, receiver, monkeypatch):
    hook = receiver()
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url)
    _patch(api, raw, 15, company="x")
    monkeypatch.setenv("MEIQIA_WEBHOOKS_ALLOW_PRIVATE", "false")
    reload_settings()
    assert webhooks.deliver_due() == {"pending": 1}
    assert hook.requests == []
    assert _deliveries()[0].last_error == "refused: webhook.private_address"


def test_a_change_that_rolls_back_sends_nothing(seeded_db, receiver):
    hook = receiver()
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    _endpoint(api, raw, hook.url, events=("customer.updated",))
    with pytest.raises(RuntimeError), write_session() as session:
        webhooks.emit(session, "customer.updated", 16, {"changes": ["name"]})
        raise RuntimeError("the change failed after the outbox row was written")
    assert _deliveries() == []
    # A refused edit (stale version) queues nothing either.
    response = api.patch("/api/v1/customers/16", json={"company": "y"}, headers={**bearer(raw), "If-Match": "999"})
    assert response.status_code == 412
    assert _deliveries() == []


def test_an_endpoint_failing_for_24_hours_is_disabled_with_the_reason(seeded_db, receiver):
    hook = receiver(always_fail=True)
    api, raw = client(), new_key("ops", WEBHOOK_SCOPES)
    endpoint_id = _endpoint(api, raw, hook.url)
    _patch(api, raw, 17, company="z")
    t0 = utcnow()
    assert webhooks.deliver_due(now=t0) == {"pending": 1}
    later = t0 + dt.timedelta(hours=24, minutes=1)
    assert webhooks.deliver_due(now=later) == {"failed": 1}
    shown = api.get(f"/api/v1/webhooks/{endpoint_id}", headers=bearer(raw))
    assert_conforms(api, shown)
    body = shown.json()
    assert body["enabled"] is False and body["disabled_reason"].startswith("failing since ")
    assert "HTTP 500" in body["disabled_reason"]
    assert audit_rows("webhook.disabled")[-1].target_id == str(endpoint_id)
    # Disabled: new events are not queued for it; enabling it again clears the failure.
    _patch(api, raw, 17, company="zz")
    assert len(_deliveries()) == 1
    enabled = api.patch(f"/api/v1/webhooks/{endpoint_id}", json={"enabled": True}, headers=bearer(raw)).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] == "" and enabled["failing_since"] is None


def test_what_a_delivery_carries_is_what_its_creator_may_see(seeded_db, receiver):
    hook = receiver()
    api = client()
    admin = new_key("admin", WEBHOOK_SCOPES)
    masked = new_key("masked", ["webhooks:manage", "customers:read"])
    blind = new_key("blind", ["webhooks:manage"])
    for raw in (masked, blind):
        _endpoint(api, raw, hook.url)
    with read_session() as session:
        customer = session.exec(
            select(Customer).where(Customer.phone.like("1%"), Customer.status == "active").order_by(Customer.id)
        ).first()
    _patch(api, admin, customer.id, company="可见性测试")
    assert webhooks.deliver_due() == {"succeeded": 2}
    bodies = {json.loads(body)["data"]["customer"].get("phone", "absent") for _, body in hook.requests}
    assert customer.phone not in "".join(bodies)
    customers = [json.loads(body)["data"]["customer"] for _, body in hook.requests]
    assert {tuple(sorted(c)) == ("id",) for c in customers} == {True, False}  # one ids-only, one masked
    masked_one = next(c for c in customers if len(c) > 1)
    assert "*" in masked_one["phone"] and masked_one["total_spent_cents"] is None


def test_a_generated_secret_is_shown_once_and_not_kept_in_a_replayable_answer(seeded_db, receiver):
    hook = receiver()
    api, raw = client(), new_key("ops", ["webhooks:manage"])
    headers = {**bearer(raw), "Idempotency-Key": "hook-1"}
    body = {"url": hook.url, "events": ["customer.created"]}
    first = api.post("/api/v1/webhooks", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["secret"].startswith("whsec_")
    again = api.post("/api/v1/webhooks", json=body, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"] and again.json()["secret"] is None
    listed = api.get("/api/v1/webhooks", headers=bearer(raw))
    assert_conforms(api, listed)
    assert all(item["secret"] is None for item in listed.json())


def _types() -> list[tuple[str, int | None, dict]]:
    return [(d.event_type, d.customer_id, json.loads(d.details)) for d in _deliveries()]


def test_merges_and_archiving_queue_their_events(seeded_db, receiver, seeded_actors):
    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.models import Customer as CustomerModel
    from meiqia_app.services.cleanup import actions as cleanup
    from meiqia_app.services.customers.duplicates import merging as duplicate_merging

    hook = receiver()
    api, raw = client(), new_key("ops", ["webhooks:manage"])
    _endpoint(api, raw, hook.url, events=("customer.merged", "customer.archived", "customer.created"))
    manager = seeded_actors["manager"]
    with read_session() as session:
        survivor, other = session.exec(
            select(CustomerModel).where(CustomerModel.status == "active").order_by(CustomerModel.id).limit(2)
        ).all()
    duplicate_merging.merge_customers(
        manager, survivor.id, [other.id], {}, {survivor.id: survivor.version, other.id: other.version}
    )
    with write_session() as session:
        in_batch = CustomerModel.__table__.c.id.in_([40, 41])
        cleanup._set_status(session, in_batch, "archived", ("active",), manager)
    with get_engine().connect() as conn:
        archived = {
            row[0] for row in conn.execute(text("SELECT id FROM customer WHERE id IN (40, 41) AND status = 'archived'"))
        }
    queued = _types()
    assert ("customer.merged", survivor.id, {"merged_ids": [other.id]}) in queued
    assert {c for t, c, _ in queued if t == "customer.archived"} == archived and archived
    assert webhooks.deliver_due() == {"succeeded": len(queued)}


def test_the_cli_prints_a_key_once_that_works(seeded_db, capsys):
    from meiqia_app import cli

    assert cli.main(["create-api-key", "--name", "cli-key", "--scopes", "customers:read,events:write"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    key = printed[-1]
    assert key.startswith("mqk_") and "cli-key" in printed[0]
    api = client()
    assert api.get("/api/v1/customers?limit=1", headers=bearer(key)).status_code == 200
    assert audit_rows("apikey.create")[-1].actor_name == "system"
    assert cli.main(["create-api-key", "--name", "bad", "--scopes", "customers:everything"]) == 2
