"""Custom fields in the duplicate merge (choose the value, union of a multi select,
sensitive fields locked for a role that sees them masked, audited) and in the
timeline's change history (label at the time, old → new, masked, deleted fields)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import timeline
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.identity import users
from meiqia_app.services.platform import jobs
from tests.conftest import built_once, load_actors

C = Customer.__table__.c


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _document(customer_id: int) -> dict:
    with get_engine().connect() as conn:
        doc = conn.execute(select(C.custom_fields).where(C.id == customer_id)).scalar_one()
    return doc if isinstance(doc, dict) else json.loads(doc or "{}")


def _version(customer_id: int) -> int:
    with read_session() as session:
        return session.get(Customer, customer_id).version


def _set(actor, customer_id: int, values: dict) -> None:
    customer_edit.update_customer(actor, customer_id, _version(customer_id), {"custom_fields": values})


def _entries(action: str) -> list[AuditEntry]:
    with read_session() as session:
        return list(
            session.execute(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).scalars()
        )


@built_once("seeded_db")
def world(actors):
    admin = actors["admin"]
    made = {
        "member_source": custom_fields.create_field(
            admin,
            {
                "key": "member_source",
                "label_zh": "会员来源",
                "label_en": "Member source",
                "field_type": "single_select",
                "options": "官网 / Website\n门店 / Store",
            },
        ),
        "hobbies": custom_fields.create_field(
            admin,
            {
                "key": "hobbies",
                "label_zh": "爱好",
                "field_type": "multi_select",
                "options": "跑步 / Running\n读书 / Reading\n旅行 / Travel",
            },
        ),
        "budget": custom_fields.create_field(admin, {"key": "budget", "label_zh": "预算", "field_type": "money"}),
        "id_number": custom_fields.create_field(
            admin, {"key": "id_number", "label_zh": "证件号", "field_type": "text", "sensitive": "true"}
        ),
    }
    survivor = customer_edit.create_customer(admin, {"name": "合并甲", "phone": "13911112222"}, acknowledged=None)
    other = customer_edit.create_customer(admin, {"name": "合并乙", "phone": "13911112222"}, acknowledged=None)
    _set(admin, survivor, {"member_source": "官网", "hobbies": ["跑步"], "id_number": "A111"})
    _set(admin, other, {"member_source": "门店", "hobbies": ["读书", "旅行"], "budget": "88", "id_number": "B222"})
    return {"admin": admin, "survivor": survivor, "other": other, "fields": made}


def _merge(actor, world, choices):
    s, o = world["survivor"], world["other"]
    return duplicate_merging.merge_customers(actor, s, [o], choices, {s: _version(s), o: _version(o)})


def test_preview_offers_each_custom_field_by_label_with_a_union_for_multi_selects(world):
    s, o = world["survivor"], world["other"]
    preview = duplicate_merging.merge_preview(world["admin"], [s, o], lang="en")
    fields = {f.field: f for f in preview.fields}
    source = fields["cf.member_source"]
    assert source.label == "Member source" and source.differs and not source.locked
    assert [(v.customer_id, v.value) for v in source.values] == [(s, "Website"), (o, "Store")]
    assert fields["cf.hobbies"].union and not fields["cf.member_source"].union
    assert [v.value for v in fields["cf.budget"].values] == ["", "¥88.00"]
    assert fields["cf.budget"].default_customer_id == o  # the survivor has none: the other's
    assert fields["cf.id_number"].values[1].value == "B222"


def test_the_chosen_values_and_a_union_reach_the_survivor_and_the_audit(world):
    s, o = world["survivor"], world["other"]
    _merge(world["admin"], world, {"cf.member_source": o, "cf.hobbies": "union", "cf.id_number": s})
    assert _document(s) == {
        "member_source": "o2",
        "hobbies": ["o1", "o2", "o3"],
        "budget": 8800,  # the survivor had none: the other's, as for built-in fields
        "id_number": "A111",
    }
    (entry,) = _entries("customer.merge")
    details = json.loads(entry.details)
    assert details["survivor_changes"]["cf.member_source"] == ["o1", "o2"]
    assert details["survivor_changes"]["cf.hobbies"] == [["o1"], ["o1", "o2", "o3"]]
    assert details["survivor_changes"]["cf.budget"] == [None, 8800]
    assert "cf.id_number" not in details["survivor_changes"]
    assert details["field_choices"]["cf.hobbies"] == "union"
    assert details["field_labels"]["cf.member_source"] == {"zh": "会员来源", "en": "Member source"}
    # the merged customer's snapshot keeps its document with the sensitive value masked
    snapshot = details["merged"][str(o)]["fields"]["custom_fields"]
    assert snapshot["member_source"] == "o2" and snapshot["id_number"] != "B222"
    assert "B222" not in entry.details and "A111" not in entry.details


def test_a_role_that_sees_a_field_masked_gets_no_choice_and_the_survivor_keeps_its_value(world):
    admin = world["admin"]
    users.create_role(admin, "merger", "合并员", "Merger", ["customer.view", "customer.merge"])
    users.create_user(admin, "merger1", "Merger-pass-1", "merger", "Merger One")
    merger = load_actors()["merger1"]
    s, o = world["survivor"], world["other"]
    preview = duplicate_merging.merge_preview(merger, [s, o])
    hidden = {f.field: f for f in preview.fields}["cf.id_number"]
    assert hidden.locked and "A111" not in str(hidden.values) and "B222" not in str(hidden.values)
    with pytest.raises(PermissionDenied):
        _merge(merger, world, {"cf.id_number": o})
    refusals = [e for e in _entries("customer.merge") if e.result == "refused"]
    assert refusals and "cf.id_number" in refusals[0].details
    assert _document(s)["id_number"] == "A111"  # nothing merged
    _merge(merger, world, {"cf.member_source": o})
    assert _document(s)["id_number"] == "A111" and _document(s)["member_source"] == "o2"


def _field_items(actor, customer_id: int, lang: str = "zh") -> list[timeline.TimelineItem]:
    page = timeline.customer_timeline(actor, customer_id, {"field"}, limit=50, lang=lang)
    return page.items


def test_custom_field_edits_show_in_the_timeline_with_labels_and_masking(world, seeded_actors):
    admin, agent = world["admin"], seeded_actors["agent"]
    s = world["survivor"]
    _set(admin, s, {"member_source": "门店", "budget": "12.5"})
    items = _field_items(admin, s)
    assert all(item.kind == "field" and item.title == "字段变更" for item in items)
    newest = items[0].summary
    assert "会员来源：官网 → 门店" in newest and "预算：（空） → ¥12.50" in newest
    english = _field_items(admin, s, "en")[0].summary
    assert "Member source: Website → Store" in english
    # the sensitive field: masked in the history for everyone (the audit keeps it masked)
    first = items[-1].summary
    assert "证件号" in first and "A111" not in first
    assert all("A111" not in item.summary for item in _field_items(agent, s))
    # a field renamed later keeps the label it had; a deleted one is still shown
    change = world["fields"]["member_source"]
    custom_fields.update_field(admin, change.field_id, change.version, {"label_zh": "会员渠道"})
    assert "会员来源：官网 → 门店" in _field_items(admin, s)[0].summary
    custom_fields.delete_field(admin, world["fields"]["budget"].field_id, "budget")
    summary = _field_items(admin, s)[0].summary
    assert "预算（字段已删除）：（空） → 1250" in summary
    # the other kinds are unaffected: every kind together still pages
    assert timeline.customer_timeline(admin, s, None, limit=50).items


def test_a_merge_shows_in_the_survivors_field_history(world):
    s, o = world["survivor"], world["other"]
    _merge(world["admin"], world, {"cf.member_source": o})
    assert "会员来源：官网 → 门店" in _field_items(world["admin"], s)[0].summary
