"""Custom fields in the open API (services/custom_fields/records.py, web/api/custom_field_schema.py):
typed values in customer bodies, masked by scope; writes validated by type with problems naming
``custom_fields.<key>``; the OpenAPI document made from the live definitions; webhook payloads."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from meiqia_app.config import reload_settings
from meiqia_app.db import read_session
from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import jobs
from tests.unit import api_support
from tests.unit.api_support import assert_conforms, audit_rows, bearer, client, new_key
from tests.unit.test_webhooks import Receiver, _endpoint

FULL = ["customers:read", "customers:read_sensitive", "customers:write"]
MASKED = ["customers:read", "customers:write"]


@pytest.fixture(autouse=True)
def _fresh_document(monkeypatch):
    """Field definitions change in these tests: the contract check reads the document anew."""
    monkeypatch.setattr(api_support, "_document", None)
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


@pytest.fixture()
def hook(monkeypatch):
    """A webhook receiver on this machine (private addresses allowed, as the webhook tests do)."""
    monkeypatch.setenv("MEIQIA_WEBHOOKS_ALLOW_PRIVATE", "true")
    reload_settings()
    one = Receiver()
    yield one
    one.close()


def _define(admin) -> dict[str, int]:
    specs = [
        {
            "key": "member_source",
            "label_zh": "会员来源",
            "label_en": "Member source",
            "group_zh": "会员信息",
            "field_type": "single_select",
            "options": "官网 / Website\n门店 / Store\n老客户推荐 / Referral",
        },
        {"key": "hobbies", "label_zh": "爱好", "field_type": "multi_select", "options": "阅读\n跑步\n旅行"},
        {"key": "deposit", "label_zh": "储值", "label_en": "Deposit", "field_type": "money"},
        {"key": "score", "label_zh": "评分", "field_type": "number"},
        {"key": "joined_on", "label_zh": "入会日期", "field_type": "date"},
        {"key": "is_vip", "label_zh": "贵宾", "field_type": "yes_no"},
        {"key": "backup_phone", "label_zh": "备用电话", "field_type": "phone", "sensitive": True},
        {"key": "id_number", "label_zh": "证件号", "field_type": "text", "sensitive": True},
    ]
    return {spec["key"]: custom_fields.create_field(admin, spec).field_id for spec in specs}


def _stored(customer_id: int) -> tuple[dict, int]:
    with read_session() as session:
        row = session.get(Customer, customer_id)
        return dict(row.custom_fields or {}), row.version


def _active_customer_id() -> int:
    with read_session() as session:
        return session.exec(
            select(Customer.id).where(Customer.status == "active", Customer.erased_at.is_(None)).order_by(Customer.id)
        ).first()


def _set(admin, customer_id: int, values: dict) -> None:
    customer_edit.update_customer(admin, customer_id, _stored(customer_id)[1], {"custom_fields": values})


def _patch(api, raw, customer_id: int, body: dict, version: int | None = None):
    version = _stored(customer_id)[1] if version is None else version
    return api.patch(f"/api/v1/customers/{customer_id}", json=body, headers={**bearer(raw), "If-Match": f'"{version}"'})


VALUES = {
    "member_source": "门店",
    "hobbies": ["旅行", "阅读"],
    "deposit": "¥12.30",
    "score": "7.5",
    "joined_on": "2026-01-05",
    "is_vip": True,
    "backup_phone": "138 0013 8000",
    "id_number": "110101199001011234",
}


# --- reading -------------------------------------------------------------------------------------


def test_a_customer_body_carries_typed_values_and_masks_sensitive_ones_without_read_sensitive(seeded_db, seeded_actors):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    _set(seeded_actors["admin"], customer_id, VALUES)
    api = client()
    full = api.get(f"/api/v1/customers/{customer_id}", headers=bearer(new_key("full", FULL)))
    assert full.status_code == 200
    assert_conforms(api, full)
    assert full.json()["custom_fields"] == {
        "member_source": "o2",  # the option's id: stable when its label is renamed
        "hobbies": ["o1", "o3"],
        "deposit": 12.3,  # yuan, as a number
        "score": 7.5,
        "joined_on": "2026-01-05",
        "is_vip": True,
        "backup_phone": "13800138000",
        "id_number": "110101199001011234",
    }
    assert not [name for name in full.json()["masked_fields"] if name.startswith("cf.")]
    masked = api.get(f"/api/v1/customers/{customer_id}", headers=bearer(new_key("masked", ["customers:read"])))
    assert_conforms(api, masked)
    body = masked.json()
    assert body["custom_fields"]["backup_phone"] == "138****8000"  # as the console shows a phone
    assert body["custom_fields"]["id_number"] is None  # hidden, like the birthday
    assert body["custom_fields"]["member_source"] == "o2" and body["custom_fields"]["deposit"] == 12.3
    assert {"cf.backup_phone", "cf.id_number", "phone"} <= set(body["masked_fields"])
    assert "110101199001011234" not in masked.text and "13800138000" not in masked.text
    listed = api.get("/api/v1/customers?limit=200", headers=bearer(new_key("lister", ["customers:read"])))
    assert_conforms(api, listed)
    row = next(r for r in listed.json()["data"] if r["id"] == customer_id)
    assert row["custom_fields"]["backup_phone"] == "138****8000" and row["custom_fields"]["id_number"] is None
    other = next(r for r in listed.json()["data"] if r["id"] != customer_id)
    assert other["custom_fields"]["score"] is None  # every active field, null when empty


def test_retired_fields_are_left_out_of_bodies_and_refused_in_writes(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    ids = _define(admin)
    customer_id = _active_customer_id()
    _set(admin, customer_id, {"score": 3})
    custom_fields.retire_field(admin, ids["score"], 1)
    api, raw = client(), new_key("full", FULL)
    body = api.get(f"/api/v1/customers/{customer_id}", headers=bearer(raw)).json()
    assert "score" not in body["custom_fields"]
    response = _patch(api, raw, customer_id, {"custom_fields": {"score": 4}})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["custom_fields.score"]
    assert _stored(customer_id)[0]["score"] == 3  # kept, untouched


# --- writing -------------------------------------------------------------------------------------


def test_patch_validates_by_type_stores_canonical_values_and_audits_as_the_key(seeded_db, seeded_actors):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    api, raw = client(), new_key("crm", FULL)
    before = _stored(customer_id)[1]
    response = _patch(api, raw, customer_id, {"company": "甲公司", "custom_fields": VALUES})
    assert response.status_code == 200, response.text
    assert_conforms(api, response)
    stored, version = _stored(customer_id)
    assert version == before + 1
    assert stored == {
        "member_source": "o2",
        "hobbies": ["o1", "o3"],
        "deposit": 1230,
        "score": 7.5,
        "joined_on": "2026-01-05",
        "is_vip": True,
        "backup_phone": "13800138000",
        "id_number": "110101199001011234",
    }
    # PATCH semantics: only the keys sent change; null clears.
    response = _patch(api, raw, customer_id, {"custom_fields": {"score": None, "deposit": 99}})
    assert response.status_code == 200
    stored, _version = _stored(customer_id)
    assert "score" not in stored and stored["deposit"] == 9900 and stored["member_source"] == "o2"
    entry = audit_rows("customer.update")[-1]
    assert entry.actor_name == "api:crm" and entry.target_id == str(customer_id)
    changes = json.loads(entry.details)["changes"]
    assert changes["cf.deposit"] == [1230, 9900] and changes["cf.score"] == [7.5, None]
    first = json.loads(audit_rows("customer.update")[-2].details)["changes"]
    assert "cf.id_number" in first and "110101199001011234" not in json.dumps(first)  # sensitive: masked
    with read_session() as session:
        assert session.get(Customer, customer_id).updated_by_name == "API: crm"


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ({"score": "many"}, ["custom_fields.score"]),
        ({"joined_on": "2026-13-45"}, ["custom_fields.joined_on"]),
        ({"member_source": "电视广告"}, ["custom_fields.member_source"]),
        ({"is_vip": "maybe", "deposit": "12.345"}, ["custom_fields.deposit", "custom_fields.is_vip"]),
        ({"backup_phone": "12"}, ["custom_fields.backup_phone"]),
        ({"no_such_field": "x"}, ["custom_fields.no_such_field"]),
        ({"hobbies": {"a": 1}}, ["custom_fields.hobbies"]),
    ],
)
def test_bad_values_and_unknown_keys_are_422_problems_naming_the_field_and_change_nothing(
    seeded_db, seeded_actors, values, fields
):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    api, raw = client(), new_key("crm", FULL)
    before = _stored(customer_id)
    response = _patch(api, raw, customer_id, {"company": "不会保存", "custom_fields": values})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert_conforms(api, response)
    problem = response.json()
    assert problem["type"] == "/api/docs#problem-validation"
    assert sorted(e["field"] for e in problem["errors"]) == fields
    assert all(e["message"] for e in problem["errors"])
    assert _stored(customer_id) == before


def test_a_stale_version_with_custom_fields_is_412_and_nothing_is_written(seeded_db, seeded_actors):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    api, raw = client(), new_key("crm", FULL)
    version = _stored(customer_id)[1]
    assert _patch(api, raw, customer_id, {"custom_fields": {"score": 1}}, version).status_code == 200
    stale = _patch(api, raw, customer_id, {"custom_fields": {"score": 2}}, version)
    assert stale.status_code == 412 and stale.json()["current_version"] == version + 1
    assert _stored(customer_id)[0]["score"] == 1


def test_create_and_upsert_take_custom_fields(seeded_db, seeded_actors):
    _define(seeded_actors["admin"])
    api, raw = client(), new_key("shop", FULL)
    created = api.post(
        "/api/v1/customers",
        json={"name": "赵六", "custom_fields": {"member_source": "o1", "deposit": 5}},
        headers=bearer(raw),
    )
    assert created.status_code == 201, created.text
    assert _stored(created.json()["id"])[0] == {"member_source": "o1", "deposit": 500}
    bad = api.post("/api/v1/customers", json={"name": "钱七", "custom_fields": {"mystery": 1}}, headers=bearer(raw))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "custom_fields.mystery"
    first = api.put(
        "/api/v1/customers/by-external-id/SHOP-7",
        json={"name": "会员乙", "custom_fields": {"is_vip": False, "hobbies": ["跑步"]}},
        headers=bearer(raw),
    )
    assert first.status_code == 201
    again = api.put(
        "/api/v1/customers/by-external-id/SHOP-7", json={"custom_fields": {"is_vip": True}}, headers=bearer(raw)
    )
    assert again.status_code == 200 and again.json()["version"] == 2
    record = api.get(f"/api/v1/customers/{first.json()['id']}", headers=bearer(raw)).json()
    assert record["custom_fields"]["is_vip"] is True and record["custom_fields"]["hobbies"] == ["o2"]
    bad_upsert = api.put(
        "/api/v1/customers/by-external-id/SHOP-7", json={"custom_fields": {"score": "x"}}, headers=bearer(raw)
    )
    assert bad_upsert.status_code == 422 and bad_upsert.json()["errors"][0]["field"] == "custom_fields.score"


def test_a_masked_key_sending_a_sensitive_field_empty_keeps_it(seeded_db, seeded_actors):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    _set(seeded_actors["admin"], customer_id, {"id_number": "110101199001011234"})
    api, raw = client(), new_key("masked", MASKED)
    body = api.get(f"/api/v1/customers/{customer_id}", headers=bearer(raw)).json()
    assert body["custom_fields"]["id_number"] is None
    # Sending back what it read (null for a masked value) does not erase the value it cannot see.
    response = _patch(api, raw, customer_id, {"custom_fields": body["custom_fields"]})
    assert response.status_code == 200, response.text
    assert _stored(customer_id)[0]["id_number"] == "110101199001011234"


# --- the OpenAPI document ------------------------------------------------------------------------


def test_the_document_lists_defined_fields_and_follows_their_changes(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    api = client()
    document = api.get("/api/v1/openapi.json").json()
    assert document["components"]["schemas"]["CustomFields"]["properties"] == {}
    out = document["components"]["schemas"]["CustomerOut"]["properties"]["custom_fields"]
    assert out["allOf"] == [{"$ref": "#/components/schemas/CustomFields"}]
    ids = _define(admin)
    schema = api.get("/api/v1/openapi.json").json()["components"]["schemas"]["CustomFields"]
    assert list(schema["properties"]) == list(ids)
    assert schema["additionalProperties"] is False
    source = schema["properties"]["member_source"]
    assert source["enum"] == ["o1", "o2", "o3", None]
    assert "会员来源 / Member source" in source["description"] and "o2 = 门店 / Store" in source["description"]
    assert schema["properties"]["hobbies"]["items"]["enum"] == ["o1", "o2", "o3"]
    assert schema["properties"]["deposit"]["type"] == ["number", "null"]
    assert schema["properties"]["is_vip"]["type"] == ["boolean", "null"]
    assert schema["properties"]["joined_on"]["format"] == "date"
    assert "sensitive" in schema["properties"]["id_number"]["description"]
    custom_fields.delete_field(admin, ids["score"], "score")
    custom_fields.retire_field(admin, ids["is_vip"], 1)
    custom_fields.create_field(admin, {"key": "grade", "label_zh": "等级", "field_type": "text"})
    after = api.get("/api/v1/openapi.json").json()["components"]["schemas"]["CustomFields"]["properties"]
    assert "score" not in after and "is_vip" not in after and "grade" in after
    page = api.get("/api/docs").text
    assert 'id="schema-CustomFields"' in page and "grade" in page and "member_source" in page


# --- webhooks ------------------------------------------------------------------------------------


def test_webhook_payloads_carry_custom_fields_masked_as_their_creator_sees_them(seeded_db, seeded_actors, hook):
    _define(seeded_actors["admin"])
    customer_id = _active_customer_id()
    api = client()
    writer = new_key("writer", FULL)
    full = new_key("full-hook", ["webhooks:manage", *FULL])
    masked = new_key("masked-hook", ["webhooks:manage", "customers:read"])
    _endpoint(api, full, hook.url)
    _endpoint(api, masked, hook.url)
    assert _patch(api, writer, customer_id, {"custom_fields": VALUES}).status_code == 200
    assert webhooks.deliver_due() == {"succeeded": 2}
    payloads = [json.loads(body) for _headers, body in hook.requests]
    assert {p["type"] for p in payloads} == {"customer.updated"}
    assert all("cf.backup_phone" in p["data"]["changes"] for p in payloads)
    by_level = {bool(p["data"]["customer"]["custom_fields"]["id_number"]): p["data"]["customer"] for p in payloads}
    assert by_level[True]["custom_fields"]["backup_phone"] == "13800138000"
    seen_masked = by_level[False]
    assert seen_masked["custom_fields"]["backup_phone"] == "138****8000"
    assert seen_masked["custom_fields"]["member_source"] == "o2" and seen_masked["custom_fields"]["deposit"] == 12.3
    assert "cf.id_number" in seen_masked["masked_fields"]
    raw_masked = next(body for _h, body in hook.requests if b"138****8000" in body)
    assert b"110101199001011234" not in raw_masked and b"13800138000" not in raw_masked


def test_fuzzing_the_customer_operations_with_fields_defined_finds_no_error(seeded_db, seeded_actors):
    """schemathesis from the document with custom fields in it (bounded): bodies generated from the
    CustomFields schema are taken or refused with a documented problem, never a 5xx, and every
    answer validates against the document."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    from meiqia_app.web.api import guard
    from meiqia_app.web.api.app import api_app

    _define(seeded_actors["admin"])
    raw = new_key("fuzz", api_support.ALL_SCOPES)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api_app())
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    wanted = {
        ("POST", "/api/v1/customers"),
        ("PATCH", "/api/v1/customers/{customer_id}"),
        ("PUT", "/api/v1/customers/by-external-id/{external_id}"),
        ("GET", "/api/v1/customers/{customer_id}"),
    }
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if (op.method.upper(), op.path) in wanted]
    assert len(operations) == len(wanted)
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
        @settings(
            max_examples=12,
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
