"""Tag-rule conditions on custom fields (issue 23): every type's operators against a
Python twin over the stored documents (defaults included), preview / run / on-change,
a retired or deleted field flags the rule instead of matching everybody, and only
someone who sees a sensitive field unmasked may build a rule on it.

The whole unit suite runs on PostgreSQL too (``make test-pg``): these tests check the
JSON / JSONB value expressions of both databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer, TagAssignment
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.errors import PermissionDenied, RuleFieldGone, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags import catalog as tags
from meiqia_app.services.tags.rules import conditions as rule_conditions
from meiqia_app.services.tags.rules import custom_conditions
from meiqia_app.services.tags.rules import definitions as rule_definitions
from meiqia_app.services.tags.rules import runs as rules
from tests.conftest import built_once

C = Customer.__table__.c
TA = TagAssignment.__table__.c
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


FIELDS = [
    {"key": "note_text", "label_zh": "备注文本", "label_en": "Note text", "field_type": "text"},
    {"key": "score", "label_zh": "积分", "label_en": "Score", "field_type": "number"},
    {"key": "budget", "label_zh": "预算", "label_en": "Budget", "field_type": "money"},
    {"key": "discount", "label_zh": "折扣", "label_en": "Discount", "field_type": "percent"},
    {"key": "visit_day", "label_zh": "到店日", "label_en": "Visit day", "field_type": "date"},
    {"key": "seen_at", "label_zh": "最近到访", "label_en": "Seen at", "field_type": "datetime"},
    {
        "key": "member_source",
        "label_zh": "会员来源",
        "label_en": "Member source",
        "field_type": "single_select",
        "options": "官网 / Website\n门店 / Store\n老客户推荐 / Referral",
    },
    {
        "key": "hobbies",
        "label_zh": "爱好",
        "label_en": "Hobbies",
        "field_type": "multi_select",
        "options": "跑步 / Running\n读书 / Reading\n旅行 / Travel",
    },
    {"key": "vip_flag", "label_zh": "重点客户", "label_en": "Key account", "field_type": "yes_no", "default": "否"},
]
# Values set on the first customers (the rest keep nothing, or the default).
VALUES = [
    {
        "note_text": "喜欢红色",
        "score": 10,
        "budget": "12.50",
        "discount": 5,
        "visit_day": "2026-03-01",
        "seen_at": "2026-03-01T10:00",
        "member_source": "官网",
        "hobbies": ["跑步", "读书"],
        "vip_flag": "是",
    },
    {"note_text": "Red Car", "score": 25, "budget": "300", "visit_day": "2026-05-20", "member_source": "门店"},
    {"score": 25.5, "discount": 12.5, "hobbies": ["旅行"], "member_source": "门店", "vip_flag": "否"},
    {"note_text": "蓝色", "budget": "0.99", "seen_at": "2026-06-30T23:30", "member_source": "老客户推荐"},
    {"score": -3, "visit_day": "2025-12-31", "hobbies": ["读书"], "vip_flag": "是"},
]


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _set(actor, customer_id: int, values: dict) -> None:
    with read_session() as session:
        version = session.get(Customer, customer_id).version
    customer_edit.update_customer(actor, customer_id, version, {"custom_fields": values})


@built_once("seeded_db")
def fields(actors):
    admin = actors["admin"]
    made = {f["key"]: custom_fields.create_field(admin, f) for f in FIELDS}
    ids = _active_ids(len(VALUES))
    for customer_id, values in zip(ids, VALUES, strict=True):
        _set(admin, customer_id, values)
    return {"ids": ids, "changes": made}


def _documents() -> dict[int, dict]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(C.id, C.custom_fields).where(C.status == "active")).all()
    return {cid: (doc if isinstance(doc, dict) else json.loads(doc or "{}")) for cid, doc in rows}


def sql_ids(conditions, match="all", correlated=False) -> set[int]:
    cleaned = rule_conditions.clean_conditions(conditions)
    with get_engine().connect() as conn:
        return set(
            conn.execute(
                select(C.id).where(
                    rule_definitions.SCOPE, rule_conditions.compile_rule(match, cleaned, NOW, correlated)
                )
            ).scalars()
        )


DEFAULTS = {"vip_flag": False}


def _twin(key: str, predicate) -> set[int]:
    """Active customers whose effective value of ``key`` (stored, else the default) satisfies ``predicate``."""
    out = set()
    for cid, doc in _documents().items():
        value = doc[key] if key in doc else DEFAULTS.get(key)
        if predicate(value):
            out.add(cid)
    return out


def _num(v):
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


CASES = [
    # (condition, key, Python predicate over the stored value)
    ({"field": "cf.note_text", "op": "eq", "value": "蓝色"}, "note_text", lambda v: v == "蓝色"),
    ({"field": "cf.note_text", "op": "contains", "value": "red"}, "note_text", lambda v: v and "red" in v.lower()),
    ({"field": "cf.note_text", "op": "empty"}, "note_text", lambda v: v is None),
    ({"field": "cf.note_text", "op": "not_empty"}, "note_text", lambda v: v is not None),
    ({"field": "cf.score", "op": "eq", "value": "25"}, "score", lambda v: v is not None and _num(v) == 25),
    ({"field": "cf.score", "op": "gt", "value": "10"}, "score", lambda v: v is not None and _num(v) > 10),
    ({"field": "cf.score", "op": "gte", "value": "10"}, "score", lambda v: v is not None and _num(v) >= 10),
    ({"field": "cf.score", "op": "lt", "value": "10"}, "score", lambda v: v is not None and _num(v) < 10),
    ({"field": "cf.score", "op": "lte", "value": "25"}, "score", lambda v: v is not None and _num(v) <= 25),
    (
        {"field": "cf.score", "op": "between", "value": "0,25.5"},
        "score",
        lambda v: v is not None and 0 <= _num(v) <= Decimal("25.5"),
    ),
    ({"field": "cf.budget", "op": "gte", "value": "12.5"}, "budget", lambda v: v is not None and v >= 1250),
    ({"field": "cf.budget", "op": "lt", "value": "1"}, "budget", lambda v: v is not None and v < 100),
    ({"field": "cf.budget", "op": "between", "value": ",100"}, "budget", lambda v: v is not None and v <= 10000),
    ({"field": "cf.discount", "op": "gt", "value": "5"}, "discount", lambda v: v is not None and _num(v) > 5),
    ({"field": "cf.discount", "op": "empty"}, "discount", lambda v: v is None),
    ({"field": "cf.visit_day", "op": "eq", "value": "2026-05-20"}, "visit_day", lambda v: v == "2026-05-20"),
    (
        {"field": "cf.visit_day", "op": "lt", "value": "2026-03-01"},
        "visit_day",
        lambda v: v is not None and v < "2026-03-01",
    ),
    (
        {"field": "cf.visit_day", "op": "between", "value": "2026-01-01,2026-12-31"},
        "visit_day",
        lambda v: v is not None and "2026-01-01" <= v <= "2026-12-31",
    ),
    ({"field": "cf.seen_at", "op": "gte", "value": "2026-06-01"}, "seen_at", lambda v: v is not None and v > "2026-06"),
    (
        {"field": "cf.seen_at", "op": "lte", "value": "2026-03-01"},
        "seen_at",
        lambda v: v is not None and v < "2026-03-02",
    ),
    ({"field": "cf.member_source", "op": "eq", "value": "门店"}, "member_source", lambda v: v == "o2"),
    ({"field": "cf.member_source", "op": "eq", "value": "o1"}, "member_source", lambda v: v == "o1"),
    (
        {"field": "cf.member_source", "op": "in", "value": ["o1", "Referral"]},
        "member_source",
        lambda v: v in ("o1", "o3"),
    ),
    ({"field": "cf.member_source", "op": "empty"}, "member_source", lambda v: v is None),
    ({"field": "cf.hobbies", "op": "in", "value": "读书,旅行"}, "hobbies", lambda v: bool(v and {"o2", "o3"} & set(v))),
    ({"field": "cf.hobbies", "op": "not_empty"}, "hobbies", lambda v: bool(v)),
    ({"field": "cf.vip_flag", "op": "eq", "value": "true"}, "vip_flag", lambda v: v is True),
    ({"field": "cf.vip_flag", "op": "eq", "value": False}, "vip_flag", lambda v: v is False),  # the default
]


def test_every_custom_field_type_and_operator_matches_a_python_twin(fields):
    ids = set(fields["ids"])
    for condition, key, predicate in CASES:
        expected = _twin(key, predicate)
        assert sql_ids([condition]) == expected, condition
        # the one-customer form (on-change rules) agrees on the customers that hold values
        assert sql_ids([condition], correlated=True) & ids == expected & ids, condition
    # something on both sides of every comparison
    assert _twin("score", lambda v: v is not None and _num(v) > 10) and _twin("vip_flag", lambda v: v is False)


def test_a_select_condition_keeps_the_option_id_so_a_renamed_label_still_matches(fields, seeded_actors):
    admin = seeded_actors["admin"]
    (cond,) = rule_conditions.clean_conditions([{"field": "cf.member_source", "op": "in", "value": "官网, 门店"}])
    assert cond.value == ["o1", "o2"]
    before = sql_ids([cond.as_dict()])
    change = fields["changes"]["member_source"]
    custom_fields.update_field(admin, change.field_id, change.version, {"label_zh": "会员渠道"})
    assert sql_ids([cond.as_dict()]) == before and before


@pytest.mark.parametrize(
    "bad",
    [
        {"field": "cf.score", "op": "contains", "value": "1"},  # not an operator of numbers
        {"field": "cf.score", "op": "gt", "value": "abc"},
        {"field": "cf.score", "op": "between", "value": ","},
        {"field": "cf.member_source", "op": "eq", "value": "火星"},
        {"field": "cf.hobbies", "op": "eq", "value": "o1"},
        {"field": "cf.visit_day", "op": "eq", "value": "2026-13-01"},
        {"field": "cf.nope", "op": "empty"},
        {"field": "cf.vip_flag", "op": "eq", "value": "maybe"},
    ],
)
def test_bad_custom_conditions_are_refused(fields, bad):
    with pytest.raises(ValidationError):
        rule_conditions.clean_conditions([bad])


def _assigned(tag_id: int) -> set[int]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(TA.customer_id).where(TA.tag_id == tag_id)).scalars())


def _rule(tag_id, conditions, mode="sync"):
    return {"name": "cf rule", "tag_id": tag_id, "match": "all", "mode": mode, "conditions": conditions}


def test_preview_run_and_on_change_follow_a_select_field(fields, seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "store-members")
    data = _rule(tag_id, [{"field": "cf.member_source", "op": "eq", "value": "门店"}])
    expected = _twin("member_source", lambda v: v == "o2")
    assert len(expected) == 2
    preview = rule_definitions.preview_rule(manager, data)
    assert (preview.matching, preview.would_gain) == (2, 2)
    rule_id = rule_definitions.save_rule(manager, data)
    assert rules.run_rule(manager, rule_id).added == 2
    assert _assigned(tag_id) == expected
    # an edit of the custom value brings the tag (on-change rules), and takes it away in sync mode
    newcomer = fields["ids"][0]
    _set(manager, newcomer, {"member_source": "门店"})
    assert _assigned(tag_id) == expected | {newcomer}
    _set(manager, newcomer, {"member_source": "官网"})
    assert _assigned(tag_id) == expected


def test_a_rule_on_a_retired_or_deleted_field_is_flagged_and_never_run(fields, seeded_actors):
    admin, manager = seeded_actors["admin"], seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "scored")
    rule_id = rule_definitions.save_rule(manager, _rule(tag_id, [{"field": "cf.score", "op": "gte", "value": "10"}]))
    rules.run_rule(manager, rule_id)
    holders = _assigned(tag_id)
    assert len(holders) == 3
    change = fields["changes"]["score"]
    custom_fields.retire_field(admin, change.field_id, change.version)

    (view,) = [r for r in rule_definitions.list_rules(manager) if r.id == rule_id]
    assert view.missing_fields == ["score"]
    with pytest.raises(RuleFieldGone) as caught:
        rules.run_rule(manager, rule_id)
    assert caught.value.params["fields"] == "score"
    with pytest.raises(RuleFieldGone):
        rule_definitions.preview_rule(manager, _rule(tag_id, [{"field": "cf.score", "op": "gte", "value": "10"}]))
    results = rules.run_all_rules(manager)
    assert (results[rule_id].skipped, results[rule_id].fields, results[rule_id].added) == ("field_gone", "score", 0)
    # on-change: an edit of a holder neither crashes nor takes the tag (sync mode would)
    _set(manager, sorted(holders)[0], {"note_text": "改一下"})
    assert _assigned(tag_id) == holders
    # deleted: still flagged by its key
    custom_fields.delete_field(admin, change.field_id, "score")
    (view,) = [r for r in rule_definitions.list_rules(manager) if r.id == rule_id]
    assert view.missing_fields == ["score"]
    assert rules.run_all_rules(manager)[rule_id].skipped == "field_gone"
    assert _assigned(tag_id) == holders


def test_only_someone_who_sees_a_sensitive_field_may_build_a_rule_on_it(fields, seeded_actors):
    admin, manager = seeded_actors["admin"], seeded_actors["manager"]
    custom_fields.create_field(
        admin, {"key": "id_number", "label_zh": "证件号", "field_type": "text", "sensitive": "true"}
    )
    tag_id = tags.create_tag(manager, "has-id")
    data = _rule(tag_id, [{"field": "cf.id_number", "op": "not_empty"}])
    masked_manager = dataclasses.replace(
        manager, permissions=frozenset(manager.permissions - {"customer.view_sensitive"})
    )
    for attempt in (rule_definitions.preview_rule, rule_definitions.save_rule):
        with pytest.raises(PermissionDenied):
            attempt(masked_manager, data)
    with read_session() as session:
        refusals = (
            session.execute(
                select(AuditEntry).where(
                    AuditEntry.action.in_(("rule.preview", "rule.save")), AuditEntry.result == "refused"
                )
            )
            .scalars()
            .all()
        )
    assert {e.action for e in refusals} == {"rule.preview", "rule.save"}
    assert all("cf.id_number" in e.details for e in refusals)
    # the editor does not offer it to them; those who see it unmasked may use it
    assert "cf.id_number" not in {c.name for c in custom_conditions.rule_field_choices(masked_manager)}
    assert "cf.id_number" in {c.name for c in custom_conditions.rule_field_choices(manager)}
    assert rule_definitions.save_rule(manager, data) > 0


def test_the_editor_lists_fields_by_label_in_the_language(fields, seeded_actors):
    manager = seeded_actors["manager"]
    zh = {c.name: c for c in custom_conditions.rule_field_choices(manager, "zh")}
    en = {c.name: c for c in custom_conditions.rule_field_choices(manager, "en")}
    assert zh["cf.member_source"].label == "会员来源" and en["cf.member_source"].label == "Member source"
    assert en["cf.member_source"].options == (("o1", "Website"), ("o2", "Store"), ("o3", "Referral"))
    assert zh["cf.score"].ops == custom_conditions.CUSTOM_OPS["number"]
    assert custom_conditions.describe_value("cf.member_source", "in", ["o1", "o3"], "en") == "Website, Referral"
