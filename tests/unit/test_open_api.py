"""The open API (meiqia_app/web/api, services/integrations/api_keys.py): keys, refusals, masking by scope,
writes with their conflicts, idempotent POSTs, the contract with the OpenAPI document and a
bounded fuzzing run (schemathesis) against the in-process app."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import func, inspect, text
from sqlmodel import select

from meiqia_app.config import reload_settings
from meiqia_app.db import get_engine, read_session
from meiqia_app.models import ApiKey, Customer
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.integrations import api_keys
from tests.unit.api_support import ALL_SCOPES, assert_conforms, audit_rows, bearer, client, new_key

READ = ["customers:read"]


def _customer_with_contact() -> Customer:
    with read_session() as session:
        return session.exec(
            select(Customer)
            .where(Customer.phone.is_not(None), Customer.email.is_not(None), Customer.status == "active")
            .where(Customer.erased_at.is_(None), Customer.total_spent_cents > 0)
            .order_by(Customer.id)
            .limit(1)
        ).one()


# --- keys and refusals ---------------------------------------------------------------------------


def test_a_key_is_stored_as_its_hash_and_shown_once(seeded_db):
    raw = new_key("shop", ALL_SCOPES)
    assert raw.startswith("mqk_") and len(raw) >= 4 + 43  # 32 random bytes
    with get_engine().connect() as conn:
        dump = "\n".join(str(row) for row in conn.execute(text("SELECT * FROM api_key")))
        audit = "\n".join(str(row) for row in conn.execute(text("SELECT details FROM audit_entry")))
    assert raw not in dump and raw[12:] not in dump
    assert raw not in audit
    with read_session() as session:
        row = session.exec(select(ApiKey).where(ApiKey.name == "shop")).one()
    assert row.key_hash == api_keys.key_hash(raw) and row.prefix == raw[:12]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"Authorization": "Bearer mqk_" + "A" * 43}, "unknown"),
    ],
)
def test_no_key_or_a_bad_key_is_401_and_audited(seeded_db, headers, reason):
    api = client()
    response = api.get("/api/v1/customers", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == "/api/docs#problem-unauthorized" and body["reason"] == reason
    assert_conforms(api, response)
    entries = audit_rows("open_api.authenticate")
    assert [(e.result, json.loads(e.details)["reason"]) for e in entries] == [("refused", reason)]
    assert "A" * 43 not in entries[0].details


def test_a_revoked_key_is_refused_at_its_next_request_and_the_audit_names_it(seeded_db):
    raw = new_key("crm-sync", READ)
    api = client()
    assert api.get("/api/v1/customers?limit=1", headers=bearer(raw)).status_code == 200
    view = next(k for k in api_keys.list_keys(SYSTEM_ACTOR) if k.name == "crm-sync")
    api_keys.revoke_key(SYSTEM_ACTOR, view.id)
    response = api.get("/api/v1/customers?limit=1", headers=bearer(raw))
    assert response.status_code == 401 and response.json()["reason"] == "revoked"
    entry = audit_rows("open_api.authenticate")[-1]
    assert entry.actor_name == "api:crm-sync" and raw not in entry.details


def test_a_missing_scope_is_403_naming_the_scope_and_audited(seeded_db):
    raw = new_key("events-only", ["events:write"])
    api = client()
    response = api.get("/api/v1/customers/1", headers=bearer(raw))
    assert response.status_code == 403
    assert response.json()["missing_scope"] == "customers:read"
    assert_conforms(api, response)
    refused = [e for e in audit_rows("open_api.read") if e.result == "refused"]
    assert refused and refused[-1].actor_name == "api:events-only"
    assert json.loads(refused[-1].details)["missing_permission"] == "customer.view"


def test_a_key_over_its_rate_gets_429_with_retry_after(seeded_db, monkeypatch):
    monkeypatch.setenv("MEIQIA_API_RATE_PER_SECOND", "0.5")
    monkeypatch.setenv("MEIQIA_API_RATE_BURST", "2")
    reload_settings()
    raw = new_key("burst", READ)
    api = client()
    codes = [api.get("/api/v1/customers?limit=1", headers=bearer(raw)).status_code for _ in range(3)]
    assert codes[:2] == [200, 200]
    assert codes[2] == 429
    response = api.get("/api/v1/customers?limit=1", headers=bearer(raw))
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert_conforms(api, response)
    # Another key has a bucket of its own.
    assert api.get("/api/v1/customers?limit=1", headers=bearer(new_key("other", READ))).status_code == 200


def test_a_body_over_the_cap_is_413_before_anything_runs(seeded_db, monkeypatch):
    monkeypatch.setenv("MEIQIA_API_MAX_BODY_MB", "1")
    reload_settings()
    raw = new_key("big", ["events:write"])
    api = client()
    body = json.dumps({"events": [{"event_id": "x", "type": "page_view", "url": "/" + "a" * 2_000_000}]})
    response = api.post("/api/v1/events", content=body, headers={**bearer(raw), "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["limit_bytes"] == 1024 * 1024
    assert audit_rows("event.ingest") == []


def test_the_key_never_reaches_a_log_record(seeded_db, caplog):
    import meiqia_app.meiqia_app  # noqa: F401 - installs the log redaction, as the app does

    raw = new_key("logged", READ)
    with caplog.at_level(logging.INFO):
        logging.getLogger("somebody").warning("request headers %s", {"authorization": f"Bearer {raw}"})
        logging.getLogger("somebody").warning("retrying with key %s", raw)
    assert raw not in caplog.text and raw[4:20] not in caplog.text


# --- reading -------------------------------------------------------------------------------------


def test_masking_follows_the_scopes(seeded_db):
    customer = _customer_with_contact()
    api = client()
    masked = api.get(f"/api/v1/customers/{customer.id}", headers=bearer(new_key("masked", READ)))
    assert masked.status_code == 200
    assert_conforms(api, masked)
    body = masked.json()
    assert body["phone"] != customer.phone and customer.phone[-4:] in body["phone"] and "*" in body["phone"]
    assert body["email"] != customer.email and body["total_spent_cents"] is None
    assert "phone" in body["masked_fields"]
    assert masked.headers["etag"] == f'"{customer.version}"'
    full = api.get(
        f"/api/v1/customers/{customer.id}",
        headers=bearer(new_key("full", ["customers:read", "customers:read_sensitive"])),
    ).json()
    assert (full["phone"], full["email"], full["total_spent_cents"]) == (
        customer.phone,
        customer.email,
        customer.total_spent_cents,
    )
    assert full["masked_fields"] == []


def test_a_masked_key_cannot_find_a_customer_by_hidden_digits(seeded_db):
    """The list's search rules by role apply: a fragment from the hidden middle of a phone finds
    nobody for a key without customers:read_sensitive, the whole number does."""
    customer = _customer_with_contact()
    api = client()
    masked, full = new_key("m", READ), new_key("f", ["customers:read", "customers:read_sensitive"])
    hidden = customer.phone[3:8]
    found = api.get("/api/v1/customers", params={"q": hidden, "limit": 200}, headers=bearer(full)).json()["data"]
    assert customer.id in [c["id"] for c in found]
    found = api.get("/api/v1/customers", params={"q": hidden, "limit": 200}, headers=bearer(masked)).json()["data"]
    assert customer.id not in [c["id"] for c in found]
    whole = api.get("/api/v1/customers", params={"q": customer.phone}, headers=bearer(masked))
    assert_conforms(api, whole)
    assert customer.id in [c["id"] for c in whole.json()["data"]]


def test_cursor_pages_walk_the_list_without_repeats(seeded_db):
    api = client()
    raw = new_key("pages", READ)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 120, **({"cursor": cursor} if cursor else {})}
        response = api.get("/api/v1/customers", params=params, headers=bearer(raw))
        assert response.status_code == 200
        assert_conforms(api, response)
        page = response.json()
        seen += [c["id"] for c in page["data"]]
        cursor, pages = page["next_cursor"], pages + 1
        if not cursor:
            break
    with read_session() as session:
        working_set = session.exec(
            select(func.count()).select_from(Customer).where(Customer.status.in_(("active", "archived")))
        ).one()
    assert pages == 3 and len(seen) == len(set(seen)) == working_set


def test_lifecycle_tag_and_updated_since_filters(seeded_db):
    api = client()
    raw = new_key("filters", ["customers:read", "customers:write"])
    prospects = api.get("/api/v1/customers", params={"lifecycle": "prospect", "limit": 200}, headers=bearer(raw))
    assert {c["lifecycle_stage"] for c in prospects.json()["data"]} == {"prospect"}
    tagged = api.get("/api/v1/customers", params={"tag": "VIP客户", "limit": 200}, headers=bearer(raw)).json()["data"]
    assert tagged and all("VIP客户" in [t["name"] for t in c["tags"]] for c in tagged)
    assert api.get("/api/v1/customers", params={"tag": "no such tag"}, headers=bearer(raw)).json()["data"] == []
    created = api.post("/api/v1/customers", json={"name": "新客户甲"}, headers=bearer(raw)).json()["id"]
    since = api.get(f"/api/v1/customers/{created}", headers=bearer(raw)).json()["updated_at"]
    changed = api.get("/api/v1/customers", params={"updated_since": since}, headers=bearer(raw)).json()["data"]
    assert [c["id"] for c in changed] == [created]
    bad = api.get("/api/v1/customers", params={"updated_since": "yesterday"}, headers=bearer(raw))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "updated_since"


def test_timeline_lists_the_history_and_trashed_customers_are_not_found(seeded_db):
    api = client()
    raw = new_key("tl", READ)
    response = api.get("/api/v1/customers/3/timeline", params={"limit": 5}, headers=bearer(raw))
    assert response.status_code == 200
    assert_conforms(api, response)
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET status = 'trashed' WHERE id = 3"))
    for path in ("/api/v1/customers/3", "/api/v1/customers/3/timeline"):
        gone = api.get(path, headers=bearer(raw))
        assert gone.status_code == 404
        assert_conforms(api, gone)


# --- writing --------------------------------------------------------------------------------------


def test_create_is_audited_as_the_key_and_a_known_phone_is_409_with_the_existing_id(seeded_db):
    api = client()
    raw = new_key("shop", ["customers:read", "customers:write"])
    existing = _customer_with_contact()
    response = api.post(
        "/api/v1/customers", json={"name": "王五", "phone": f"+86 {existing.phone}"}, headers=bearer(raw)
    )
    assert response.status_code == 409
    assert_conforms(api, response)
    assert response.json()["existing_id"] == existing.id and response.json()["field"] == "phone"
    created = api.post("/api/v1/customers", json={"name": "王五", "phone": "139 0000 1111"}, headers=bearer(raw))
    assert created.status_code == 201
    assert_conforms(api, created)
    new_id = created.json()["id"]
    assert created.headers["location"] == f"/api/v1/customers/{new_id}"
    with read_session() as session:
        row = session.get(Customer, new_id)
    assert (row.phone, row.updated_by_name) == ("13900001111", "API: shop")
    entry = audit_rows("customer.create")[-1]
    assert entry.actor_name == "api:shop" and entry.target_id == str(new_id)
    bad = api.post("/api/v1/customers", json={"name": "x", "email": "not-an-email"}, headers=bearer(raw))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "email"
    assert_conforms(api, bad)


def test_patch_needs_if_match_and_a_stale_version_is_412(seeded_db):
    api = client()
    raw = new_key("crm", ["customers:read", "customers:write"])
    current = api.get("/api/v1/customers/7", headers=bearer(raw)).json()
    missing = api.patch("/api/v1/customers/7", json={"company": "甲公司"}, headers=bearer(raw))
    assert missing.status_code == 428
    assert_conforms(api, missing)
    ok = api.patch(
        "/api/v1/customers/7",
        json={"company": "甲公司", "custom_attributes": {"会员卡号": "M1"}, "consent_marketing": True},
        headers={**bearer(raw), "If-Match": f'"{current["version"]}"'},
    )
    assert ok.status_code == 200 and ok.json()["version"] == current["version"] + 1
    assert_conforms(api, ok)
    stale = api.patch(
        "/api/v1/customers/7", json={"company": "乙公司"}, headers={**bearer(raw), "If-Match": str(current["version"])}
    )
    assert stale.status_code == 412 and stale.json()["current_version"] == current["version"] + 1
    assert_conforms(api, stale)
    after = api.get("/api/v1/customers/7", headers=bearer(raw)).json()
    assert after["company"] == "甲公司" and after["custom_attributes"]["会员卡号"] == "M1"
    assert after["consent"]["marketing"] is True
    changes = json.loads(audit_rows("customer.update")[-1].details)["changes"]
    assert "M1" not in json.dumps(changes, ensure_ascii=False)  # attribute values are not audited


def test_archived_customers_are_read_only(seeded_db):
    api = client()
    raw = new_key("crm", ["customers:read", "customers:write", "tags:write"])
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET status = 'archived' WHERE id = 9"))
    version = api.get("/api/v1/customers/9", headers=bearer(raw)).json()["version"]
    response = api.patch(
        "/api/v1/customers/9", json={"company": "x"}, headers={**bearer(raw), "If-Match": str(version)}
    )
    assert response.status_code == 409 and response.json()["type"] == "/api/docs#problem-read-only"
    assert_conforms(api, response)
    tags = api.post("/api/v1/customers/9/tags", json={"tags": ["VIP客户"]}, headers=bearer(raw))
    assert tags.status_code == 409


def test_upsert_by_external_id_creates_then_updates(seeded_db):
    api = client()
    raw = new_key("shop", ["customers:read", "customers:write"])
    first = api.put("/api/v1/customers/by-external-id/SHOP-42", json={"name": "会员甲"}, headers=bearer(raw))
    assert first.status_code == 201 and first.json()["created"] is True
    assert_conforms(api, first)
    again = api.put(
        "/api/v1/customers/by-external-id/SHOP-42",
        json={"city": "杭州", "membership_tier": "gold"},
        headers=bearer(raw),
    )
    assert again.status_code == 200 and again.json() == {"id": first.json()["id"], "version": 2, "created": False}
    assert_conforms(api, again)
    record = api.get(f"/api/v1/customers/{first.json()['id']}", headers=bearer(raw)).json()
    assert (record["name"], record["city"], record["external_id"]) == ("会员甲", "杭州", "SHOP-42")
    with read_session() as session:
        assert (
            session.exec(select(func.count()).select_from(Customer).where(Customer.external_id == "SHOP-42")).one() == 1
        )
    nameless = api.put("/api/v1/customers/by-external-id/SHOP-43", json={"city": "杭州"}, headers=bearer(raw))
    assert nameless.status_code == 422 and nameless.json()["errors"][0]["field"] == "name"


def test_tags_are_added_by_name_and_removed(seeded_db):
    api = client()
    raw = new_key("tagger", ["tags:write"])
    added = api.post("/api/v1/customers/11/tags", json={"tags": ["VIP客户", "vip客户"]}, headers=bearer(raw))
    assert added.status_code == 200 and [t["name"] for t in added.json()["tags"]] == ["VIP客户"]
    assert_conforms(api, added)
    unknown = api.post("/api/v1/customers/11/tags", json={"tags": ["VIP客户", "不存在的标签"]}, headers=bearer(raw))
    assert unknown.status_code == 422
    removed = api.delete("/api/v1/customers/11/tags/vip客户", headers=bearer(raw))
    assert removed.status_code == 204
    assert api.delete("/api/v1/customers/11/tags/vip客户", headers=bearer(raw)).status_code == 404
    assert [e.actor_name for e in audit_rows("customer.tag_add")][-1] == "api:tagger"


def test_a_post_sent_again_with_its_idempotency_key_gets_the_first_answer(seeded_db):
    api = client()
    raw = new_key("retry", ["customers:write"])
    headers = {**bearer(raw), "Idempotency-Key": "order-sync-1"}
    first = api.post("/api/v1/customers", json={"name": "赵六", "phone": "13700001111"}, headers=headers)
    second = api.post("/api/v1/customers", json={"name": "赵六", "phone": "13700001111"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    with read_session() as session:
        assert (
            session.exec(select(func.count()).select_from(Customer).where(Customer.phone == "13700001111")).one() == 1
        )
    other = api.post("/api/v1/customers", json={"name": "赵七"}, headers=headers)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    # Another key's same Idempotency-Key is its own.
    mine = api.post(
        "/api/v1/customers",
        json={"name": "赵六"},
        headers={**bearer(new_key("retry2", ["customers:write"])), "Idempotency-Key": "order-sync-1"},
    )
    assert mine.status_code == 201 and mine.json()["id"] != first.json()["id"]


# --- the document and fuzzing ----------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_the_docs_page_loads_nothing_from_elsewhere(seeded_db):
    api = client()
    document = api.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    expected = {
        ("get", "/api/v1/customers"),
        ("post", "/api/v1/customers"),
        ("get", "/api/v1/customers/{customer_id}"),
        ("patch", "/api/v1/customers/{customer_id}"),
        ("get", "/api/v1/customers/{customer_id}/timeline"),
        ("put", "/api/v1/customers/by-external-id/{external_id}"),
        ("post", "/api/v1/customers/{customer_id}/tags"),
        ("delete", "/api/v1/customers/{customer_id}/tags/{tag}"),
        ("post", "/api/v1/events"),
        ("get", "/api/v1/webhooks"),
        ("post", "/api/v1/webhooks"),
        ("patch", "/api/v1/webhooks/{webhook_id}"),
        ("delete", "/api/v1/webhooks/{webhook_id}"),
    }
    present = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert expected <= present
    page = api.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script" not in html and "cdn" not in html.lower()
    assert not [url for url in __import__("re").findall(r'(?:src|href)="([^"#]+)"', html) if not url.startswith("/")]
    assert "/api/v1/events" in html and 'id="problem-rate-limited"' in html


def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_violation(seeded_db):
    """Property-based requests generated from the OpenAPI document (schemathesis, bounded: a few
    examples per operation, valid and invalid data) against the in-process app with a key that has
    every scope: no 5xx, every status documented, every body valid against its schema."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from meiqia_app.web.api import guard
    from meiqia_app.web.api.app import api_app

    raw = new_key("fuzz", ALL_SCOPES)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api_app())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for mode, examples in ((schemathesis.GenerationMode.POSITIVE, 8), (schemathesis.GenerationMode.NEGATIVE, 4)):
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def run(case):
                guard.buckets.clear()
                case.call_and_validate(headers=bearer(raw), checks=checks)

            run()


# --- migration 0011 and the layering --------------------------------------------------------------


def _migrate(target: str, down: bool = False) -> None:
    from alembic import command

    from meiqia_app.migrate import alembic_config

    with get_engine().begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, target)


def test_migration_0011_gives_the_admin_role_of_an_existing_database_the_new_permissions(seeded_db):
    _migrate("0010_masked_search", down=True)
    with get_engine().connect() as conn:
        before = json.loads(conn.execute(text("SELECT permissions FROM role WHERE name = 'admin'")).scalar_one())
        manager = conn.execute(text("SELECT permissions FROM role WHERE name = 'manager'")).scalar_one()
        tables = set(inspect(conn).get_table_names())
    assert "apikey.manage" not in before and "api_key" not in tables
    _migrate("0011_open_api")  # later revisions grant their own permissions (0013: the manager's)
    with get_engine().connect() as conn:
        after = json.loads(conn.execute(text("SELECT permissions FROM role WHERE name = 'admin'")).scalar_one())
        assert conn.execute(text("SELECT permissions FROM role WHERE name = 'manager'")).scalar_one() == manager
        assert conn.execute(text("SELECT count(*) FROM customer WHERE activity_seq != 0")).scalar_one() == 0
    assert {"apikey.manage", "webhook.manage", "event.ingest"} <= set(after)
    assert after[: len(before)] == before
    _migrate("head")


def test_the_api_layer_never_touches_the_database_or_reflex():
    """web/api is a thin HTTP layer: every read and write goes through a service (which checks
    the permission, masks, validates), never a table or a session of its own."""
    from tests.unit.test_architecture import database_access_in_ui, reflex_imports

    assert database_access_in_ui(("web/api",)) == []
    assert reflex_imports(("web/api",)) == []


def test_nul_characters_are_refused_before_they_reach_the_database(seeded_db):
    """Found by the fuzzing on PostgreSQL (which cannot store NUL in text): a 500 there,
    silently stored on SQLite. Refused the same on both, by the API and by the services."""
    from meiqia_app.services.customers.validation import clean_customer_fields
    from meiqia_app.services.errors import ValidationError

    api = client()
    raw = new_key("nul", ["customers:read", "customers:write", "events:write"])
    for response in (
        api.post("/api/v1/customers", json={"name": "a\u0000b"}, headers=bearer(raw)),
        api.post(
            "/api/v1/events",
            json={
                "events": [{"event_id": "n1", "type": "page_view", "customer": {"visitor_id": "v\u0000"}, "url": "/"}]
            },
            headers=bearer(raw),
        ),
        api.get("/api/v1/customers", params={"q": "张\u0000"}, headers=bearer(raw)),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["code"] == "nul_character"
        assert_conforms(api, response)
    with pytest.raises(ValidationError) as refused:
        clean_customer_fields({"name": "a\x00b"})
    assert refused.value.field_errors["name"][0] == "error.nul_character"
