"""GET /api/v1/customers filtered by custom fields (services/customers/list_field_params.py):
``cf.<key>=<value>`` (select option id, multi select holds, yes/no, text equals, repeated = any
of), ``cf.<key>.min`` / ``.max`` and ``cf.<key>.empty``, through the list's own filters; an
unknown key, suffix or bad value is a 400 problem naming the parameter; a sensitive field needs
customers:read_sensitive (403, audited) whatever the operator; the OpenAPI document lists the
parameters of the defined fields."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import catalog
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.platform import jobs
from tests.unit import api_support
from tests.unit.api_support import assert_conforms, audit_rows, bearer, client, new_key
from tests.unit.test_open_api_custom_fields import FULL, MASKED, _define, _set

# position -> values (member_source: o1 官网 / o2 门店 / o3 推荐; hobbies: o1 阅读 / o2 跑步 / o3 旅行)
VALUES = {
    0: {"member_source": "o1", "hobbies": ["o1"], "score": 5, "deposit": "12.30", "is_vip": True, "grade": "A"},
    1: {"member_source": "o2", "hobbies": ["o1", "o2"], "score": 10, "joined_on": "2026-01-05", "grade": "B"},
    2: {"member_source": "o2", "score": 20, "deposit": "99", "is_vip": False, "id_number": "110101199001011234"},
    3: {"member_source": "o3", "hobbies": ["o3"], "joined_on": "2026-02-01", "backup_phone": "13800138000"},
    4: {"score": 20.5, "is_vip": True, "grade": "A"},
}


@pytest.fixture(autouse=True)
def _fresh_document(monkeypatch):
    monkeypatch.setattr(api_support, "_document", None)
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


@pytest.fixture()
def world(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin)
    custom_fields.create_field(admin, {"key": "grade", "label_zh": "等级", "field_type": "text"})
    custom_fields.create_field(admin, {"key": "memo", "label_zh": "备忘", "field_type": "long_text"})
    with read_session() as session:
        ids = list(session.exec(select(Customer.id).where(Customer.status == "active").order_by(Customer.id).limit(5)))
    for position, values in VALUES.items():
        _set(admin, ids[position], values)
    return {"ids": ids, "api": client(), "full": new_key("full", FULL), "masked": new_key("masked", MASKED)}


def _found(world, query: str, key: str = "full") -> set[int]:
    response = world["api"].get(f"/api/v1/customers?limit=200&{query}", headers=bearer(world[key]))
    assert response.status_code == 200, response.text
    assert_conforms(world["api"], response)
    assert response.json()["next_cursor"] is None or query.endswith("empty=true")
    return {row["id"] for row in response.json()["data"]}


def _ours(world, *positions: int) -> set[int]:
    return {world["ids"][p] for p in positions}


def test_each_kind_of_filter_finds_the_customers_holding_the_value(world):
    assert _found(world, "cf.member_source=o2") == _ours(world, 1, 2)
    assert _found(world, "cf.member_source=o1&cf.member_source=o3") == _ours(world, 0, 3)  # any of
    assert _found(world, "cf.hobbies=o1") == _ours(world, 0, 1)  # holds
    assert _found(world, "cf.hobbies=o2&cf.hobbies=o3") == _ours(world, 1, 3)
    assert _found(world, "cf.is_vip=true") == _ours(world, 0, 4)
    assert _found(world, "cf.is_vip=false") == _ours(world, 2)
    assert _found(world, "cf.grade=A") == _ours(world, 0, 4)
    assert _found(world, "cf.score=10") == _ours(world, 1)
    assert _found(world, "cf.score.min=10&cf.score.max=20") == _ours(world, 1, 2)  # inclusive
    assert _found(world, "cf.score.min=20") == _ours(world, 2, 4)
    assert _found(world, "cf.deposit.max=12.3") == _ours(world, 0)  # money in yuan
    assert _found(world, "cf.joined_on.min=2026-01-06") == _ours(world, 3)
    assert _found(world, "cf.score.empty=false") == _ours(world, 0, 1, 2, 4)
    assert _found(world, "cf.hobbies.empty=true&cf.member_source=o2") == _ours(world, 2)  # two fields: both
    assert _found(world, "cf.score.min=5&lifecycle=active") <= _ours(world, 0, 1, 2, 4)
    empty = _found(world, "cf.score.empty=true")
    assert empty and not empty & _ours(world, 0, 1, 2, 4)  # (a first page of the many without one)


@pytest.mark.parametrize(
    ("query", "parameter", "code"),
    [
        ("cf.no_such_field=1", "cf.no_such_field", "cf_param_unknown_field"),
        ("cf.no_such_field.min=1", "cf.no_such_field.min", "cf_param_unknown_field"),
        ("cf.score.avg=1", "cf.score.avg", "cf_param_unknown"),
        ("cf.Bad-Key=1", "cf.Bad-Key", "cf_param_unknown"),
        ("cf.score.min=lots", "cf.score.min", "cf_number"),
        ("cf.score.max=1&cf.score.min=x", "cf.score.min", "cf_number"),
        ("cf.joined_on.max=2026-02-30", "cf.joined_on.max", "cf_date"),
        ("cf.member_source=o9", "cf.member_source", "cf_param_option"),
        ("cf.member_source=门店", "cf.member_source", "cf_param_option"),  # by option id, never a label
        ("cf.is_vip=maybe", "cf.is_vip", "cf_param_boolean"),
        ("cf.is_vip=true&cf.is_vip=false", "cf.is_vip", "cf_param_once"),
        ("cf.score.empty=yes", "cf.score.empty", "cf_param_boolean"),
        ("cf.score.empty=true&cf.score.min=1", "cf.score.empty", "cf_param_combined"),
        ("cf.score=1&cf.score.max=3", "cf.score", "cf_param_combined"),
        ("cf.grade.min=1", "cf.grade.min", "cf_param_not_for_type"),
        ("cf.memo=x", "cf.memo", "cf_param_not_for_type"),
        ("cf.grade=", "cf.grade", "cf_param_value"),
    ],
)
def test_a_bad_filter_is_a_400_problem_naming_the_parameter(world, query, parameter, code):
    response = world["api"].get(f"/api/v1/customers?{query}", headers=bearer(world["full"]))
    assert response.status_code == 400, response.text
    assert_conforms(world["api"], response)
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert body["type"].endswith("#problem-bad-parameter") and body["status"] == 400
    assert body["errors"][0]["field"] == parameter and body["errors"][0]["code"] == code, body


def test_a_retired_field_is_an_unknown_key(world):
    field = catalog.field("grade")
    custom_fields.retire_field(api_support_admin(), field.id, field.version)
    response = world["api"].get("/api/v1/customers?cf.grade=A", headers=bearer(world["full"]))
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "cf.grade"


def api_support_admin():
    from tests.conftest import load_actors

    return load_actors()["admin"]


@pytest.mark.parametrize(
    "query", ["cf.id_number=110101199001011234", "cf.backup_phone.empty=false", "cf.id_number.empty=true"]
)
def test_a_sensitive_field_needs_read_sensitive_whatever_the_operator(world, query):
    refused_before = len([e for e in audit_rows("customer.list") if e.result == "refused"])
    response = world["api"].get(f"/api/v1/customers?{query}", headers=bearer(world["masked"]))
    assert response.status_code == 403, response.text
    assert_conforms(world["api"], response)
    assert response.json()["missing_scope"] == "customers:read_sensitive"
    refused = [e for e in audit_rows("customer.list") if e.result == "refused"]
    assert len(refused) == refused_before + 1 and refused[-1].actor_name == "api:masked"
    assert json.loads(refused[-1].details)["missing_permission"] == "customer.view_sensitive"
    # the full key may: the filter finds the holder
    full = _found(world, query)
    if query.startswith("cf.id_number="):
        assert full == _ours(world, 2)
    if query.startswith("cf.backup_phone"):
        assert full == _ours(world, 3)


def test_the_document_lists_each_fields_filter_parameters(world):
    api = world["api"]
    operation = api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/customers"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["cf.member_source"]["schema"]["items"]["enum"] == ["o1", "o2", "o3"]
    assert parameters["cf.is_vip"]["schema"] == {"type": "boolean"}
    assert {"cf.score", "cf.score.min", "cf.score.max", "cf.score.empty"} <= set(parameters)
    assert parameters["cf.joined_on.min"]["schema"]["format"] == "date"
    assert "cf.memo" not in parameters and "cf.memo.empty" in parameters and "cf.memo.min" not in parameters
    assert "cf.grade.min" not in parameters
    assert "customers:read_sensitive" in parameters["cf.id_number"]["description"]
    assert "400" in operation["responses"]
    assert operation["responses"]["400"]["content"]["application/problem+json"]
    custom_fields.create_field(api_support_admin(), {"key": "region_code", "label_zh": "区号", "field_type": "number"})
    after = api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/customers"]["get"]["parameters"]
    assert "cf.region_code.min" in {p["name"] for p in after}
    page = api.get("/api/docs").text
    assert "cf.member_source" in page and "cf.score.min" in page
