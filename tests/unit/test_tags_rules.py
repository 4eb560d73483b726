"""The rules engine: every field/operator/window against an independent Python
computation on the seeded data, preview, add-only vs sync runs, manual assignments kept."""

from __future__ import annotations

import collections
import datetime as dt
import json

import pytest
from sqlalchemy import select

from meiqia_app.db import get_engine
from meiqia_app.models import (
    AuditEntry,
    BehaviorEvent,
    Conversation,
    Customer,
    Order,
    Tag,
    TagAssignment,
)
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.tags import catalog as tags
from meiqia_app.services.tags.rules import conditions as rule_conditions
from meiqia_app.services.tags.rules import definitions as rule_definitions
from meiqia_app.services.tags.rules import runs as rules
from meiqia_app.services.tags.rules.conditions import Condition, compile_rule
from meiqia_app.timeutil import as_utc, local_day_start_utc

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
C = Customer.__table__.c
TA = TagAssignment.__table__.c


@pytest.fixture()
def world(seeded_db):
    """Everything the Python twin needs, read straight from the tables."""
    with get_engine().connect() as conn:
        customers = [r._asdict() for r in conn.execute(select(Customer.__table__).where(C.status == "active"))]
        orders = collections.defaultdict(list)
        for r in conn.execute(select(Order.__table__)):
            orders[r.customer_id].append(r)
        convs = collections.defaultdict(list)
        for r in conn.execute(select(Conversation.__table__)):
            convs[r.customer_id].append(r)
        events = collections.defaultdict(list)
        for r in conn.execute(select(BehaviorEvent.__table__)):
            events[r.customer_id].append(r)
    product_counts = collections.Counter(o.product_id for rows in orders.values() for o in rows if o.status == "paid")
    product = product_counts.most_common(1)[0][0]
    return {"customers": customers, "orders": orders, "convs": convs, "events": events, "product": product}


def _t(value):
    return as_utc(value) if value is not None else None


def _in_window(value, days):
    value = _t(value)
    if value is None or value > NOW:
        return False
    return days == 0 or value >= NOW - dt.timedelta(days=days)


OPS = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}


def python_value(world, c: dict, cond: Condition) -> bool:
    """An independent, row-by-row evaluation of one condition."""
    f, op, v = cond.field, cond.op, cond.value
    cid = c["id"]
    if f in ("source", "lifecycle_stage", "membership_tier"):
        return {"eq": c[f] == v, "ne": c[f] != v, "in": c[f] in v, "not_in": c[f] not in v}[op]
    if f in ("province", "city"):
        return c[f] == v if op == "eq" else c[f] != v
    if f == "registered_at":
        edge = local_day_start_utc(dt.date.fromisoformat(v))
        return _t(c["registered_at"]) < edge if op == "before" else _t(c["registered_at"]) >= edge
    if f in ("registered_days", "days_since_active"):
        column = "registered_at" if f == "registered_days" else "last_active_at"
        days = (NOW - _t(c[column])) / dt.timedelta(days=1)
        return OPS[op](days, v)
    if f == "total_spent":
        return OPS[op](c["total_spent_cents"], round(v * 100))
    if f == "order_count":
        return OPS[op](c["order_count"], v)
    if f in ("consent_marketing", "consent_analytics"):
        return bool(c[f]) == v
    if f == "first_purchase_days":
        if c["first_purchase_at"] is None:
            return False
        return OPS[op]((_t(c["first_purchase_at"]) - _t(c["registered_at"])) / dt.timedelta(days=1), v)
    orders, convs, events = world["orders"][cid], world["convs"][cid], world["events"][cid]
    if f == "orders_paid_count":
        return OPS[op](sum(1 for o in orders if o.status == "paid" and _in_window(o.paid_at, cond.days)), v)
    if f == "orders_paid_amount":
        total = sum(o.amount_cents for o in orders if o.status == "paid" and _in_window(o.paid_at, cond.days))
        return OPS[op](total, round(v * 100))
    if f == "orders_count":
        return OPS[op](sum(1 for o in orders if _in_window(o.created_at, cond.days)), v)
    if f == "bought_product":
        bought = any(
            o.status == "paid" and o.product_id == cond.product_id and _in_window(o.paid_at, cond.days) for o in orders
        )
        return bought if op == "yes" else not bought
    if f in ("complaint_count", "inquiry_count"):
        category = "complaint" if f == "complaint_count" else "inquiry"
        return OPS[op](sum(1 for x in convs if x.category == category and _in_window(x.started_at, cond.days)), v)
    if f == "product_views":
        return OPS[op](
            sum(
                1
                for e in events
                if e.product_id == cond.product_id
                and e.kind in ("product_view", "page_view")
                and _in_window(e.occurred_at, cond.days)
            ),
            v,
        )
    raise AssertionError(f)


def sql_ids(match, conditions, correlated=False) -> set[int]:
    with get_engine().connect() as conn:
        return set(
            conn.execute(
                select(C.id).where(rule_definitions.SCOPE, compile_rule(match, conditions, NOW, correlated))
            ).scalars()
        )


def python_ids(world, match, conditions) -> set[int]:
    combine = all if match == "all" else any
    return {c["id"] for c in world["customers"] if combine(python_value(world, c, cond) for cond in conditions)}


def CASES(product):
    return [
        {"field": "source", "op": "eq", "value": "wechat"},
        {"field": "source", "op": "ne", "value": "wechat"},
        {"field": "source", "op": "in", "value": ["web", "app"]},
        {"field": "source", "op": "not_in", "value": ["web", "app"]},
        {"field": "province", "op": "eq", "value": "广东"},
        {"field": "province", "op": "ne", "value": "广东"},
        {"field": "city", "op": "eq", "value": "上海"},
        {"field": "registered_at", "op": "before", "value": "2025-06-01"},
        {"field": "registered_at", "op": "since", "value": "2025-06-01"},
        {"field": "registered_days", "op": "gte", "value": 365},
        {"field": "registered_days", "op": "lt", "value": 100},
        {"field": "total_spent", "op": "gte", "value": 3000},
        {"field": "total_spent", "op": "lt", "value": 500.5},
        {"field": "total_spent", "op": "eq", "value": 0},
        {"field": "order_count", "op": "gt", "value": 3},
        {"field": "order_count", "op": "lte", "value": 1},
        {"field": "order_count", "op": "ne", "value": 0},
        {"field": "consent_marketing", "op": "eq", "value": True},
        {"field": "consent_analytics", "op": "eq", "value": "false"},
        {"field": "lifecycle_stage", "op": "in", "value": ["new", "active"]},
        {"field": "membership_tier", "op": "eq", "value": "gold"},
        {"field": "days_since_active", "op": "gt", "value": 180},
        {"field": "days_since_active", "op": "lte", "value": 30},
        {"field": "first_purchase_days", "op": "lte", "value": 30},
        {"field": "first_purchase_days", "op": "gt", "value": 100},
        {"field": "orders_paid_count", "op": "gte", "value": 2, "days": 90},
        {"field": "orders_paid_count", "op": "eq", "value": 0, "days": 30},
        {"field": "orders_paid_count", "op": "lt", "value": 2, "days": 365},
        {"field": "orders_paid_amount", "op": "gt", "value": 1000, "days": 180},
        {"field": "orders_paid_amount", "op": "lte", "value": 200, "days": 365},
        {"field": "orders_count", "op": "eq", "value": 0, "days": 14},
        {"field": "orders_count", "op": "gte", "value": 1, "days": 60},
        {"field": "bought_product", "op": "yes", "days": 0, "product_id": product},
        {"field": "bought_product", "op": "yes", "days": 180, "product_id": product},
        {"field": "bought_product", "op": "no", "days": 0, "product_id": product},
        {"field": "complaint_count", "op": "gte", "value": 1, "days": 90},
        {"field": "complaint_count", "op": "eq", "value": 0, "days": 365},
        {"field": "inquiry_count", "op": "gte", "value": 2, "days": 180},
        {"field": "product_views", "op": "gte", "value": 1, "days": 0, "product_id": product},
        {"field": "product_views", "op": "lt", "value": 2, "days": 90, "product_id": product},
    ]


def test_every_field_operator_and_window_matches_a_python_twin(world):
    cases = CASES(world["product"])
    covered = {c["field"] for c in cases}
    assert covered == set(rule_conditions.FIELDS), set(rule_conditions.FIELDS) - covered
    nonempty = 0
    for raw in cases:
        conditions = rule_conditions.clean_conditions([raw])
        expected = python_ids(world, "all", conditions)
        assert sql_ids("all", conditions) == expected, raw
        assert sql_ids("all", conditions, correlated=True) == expected, raw
        nonempty += bool(expected) and len(expected) < len(world["customers"])
    # The seeded data makes most cases selective, so equality above means something.
    assert nonempty >= len(cases) * 2 // 3


def test_all_and_any_combine_conditions(world):
    raw = [
        {"field": "source", "op": "eq", "value": "wechat"},
        {"field": "orders_paid_count", "op": "gte", "value": 1, "days": 180},
    ]
    conditions = rule_conditions.clean_conditions(raw)
    for match in ("all", "any"):
        expected = python_ids(world, match, conditions)
        assert sql_ids(match, conditions) == expected
        assert sql_ids(match, conditions, correlated=True) == expected
    assert sql_ids("all", conditions) < sql_ids("any", conditions)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"field": "password_hash", "op": "eq", "value": "x"}],
        [{"field": "order_count", "op": "like", "value": 1}],
        [{"field": "order_count", "op": "gte", "value": "1; drop table customer"}],
        [{"field": "order_count", "op": "gte", "value": 1.5}],
        [{"field": "orders_paid_count", "op": "gte", "value": 1}],  # window required
        [{"field": "orders_paid_count", "op": "gte", "value": 1, "days": 99999}],
        [{"field": "bought_product", "op": "yes", "product_id": 987654}],
        [{"field": "source", "op": "eq", "value": "fax"}],
        [{"field": "registered_at", "op": "before", "value": "yesterday"}],
        [{"field": "days_since_active", "op": "eq", "value": 3}],
        "not json",
        [{"field": "city", "op": "eq", "value": ""}],
    ],
)
def test_crafted_conditions_are_refused(seeded_db, bad):
    with pytest.raises(ValidationError):
        rule_conditions.clean_conditions(bad)


def _rule_data(tag_id, conditions, mode="sync", match="all", name="test rule"):
    return {"name": name, "tag_id": tag_id, "match": match, "mode": mode, "conditions": conditions}


def _assigned(tag_id):
    with get_engine().connect() as conn:
        return {
            r.customer_id: (r.source, r.rule_id)
            for r in conn.execute(select(TA.customer_id, TA.source, TA.rule_id).where(TA.tag_id == tag_id))
        }


def test_preview_then_sync_run_gains_loses_and_keeps_manual(world, seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "rule-sync")
    conditions = [{"field": "order_count", "op": "gte", "value": 3}, {"field": "source", "op": "eq", "value": "wechat"}]
    expected = python_ids(world, "all", rule_conditions.clean_conditions(conditions))
    assert expected
    outsiders = sorted({c["id"] for c in world["customers"]} - expected)[:3]
    insider = sorted(expected)[0]
    with get_engine().begin() as conn:
        # a stale rule assignment (loses it), a manual one outside (kept), an insider who has it manually
        conn.execute(
            TagAssignment.__table__.insert(),
            [
                {"customer_id": outsiders[0], "tag_id": tag_id, "source": "rule", "rule_id": None, "assigned_at": NOW},
                {
                    "customer_id": outsiders[1],
                    "tag_id": tag_id,
                    "source": "manual",
                    "rule_id": None,
                    "assigned_at": NOW,
                },
                {"customer_id": insider, "tag_id": tag_id, "source": "manual", "rule_id": None, "assigned_at": NOW},
            ],
        )
    data = _rule_data(tag_id, conditions)
    preview = rule_definitions.preview_rule(manager, data, now=NOW)
    assert preview.matching == len(expected)
    assert preview.would_gain == len(expected) - 1
    assert preview.would_lose == 1
    assert 0 < len(preview.sample) <= rule_definitions.SAMPLE_SIZE and {s["id"] for s in preview.sample} <= expected

    rule_id = rule_definitions.save_rule(manager, data)
    summary = rules.run_rule(manager, rule_id, now=NOW)
    assert summary == rules.RuleRunSummary(
        matched=len(expected), added=len(expected) - 1, removed=1, at=NOW.isoformat()
    )
    assigned = _assigned(tag_id)
    assert set(assigned) == expected | {outsiders[1]}
    assert assigned[outsiders[1]] == ("manual", None)
    assert assigned[insider] == ("manual", None)
    assert all(assigned[i] == ("rule", rule_id) for i in expected - {insider})
    # A second run changes nothing.
    again = rules.run_rule(manager, rule_id, now=NOW)
    assert (again.added, again.removed) == (0, 0)
    # Narrow the rule: sync removes its own assignments only.
    narrower = conditions + [{"field": "total_spent", "op": "gte", "value": 3000}]
    rule_definitions.save_rule(manager, _rule_data(tag_id, narrower), rule_id=rule_id)
    narrow_expected = python_ids(world, "all", rule_conditions.clean_conditions(narrower))
    result = rules.run_rule(manager, rule_id, now=NOW)
    assert result.removed == len(expected - narrow_expected - {insider})
    assert set(_assigned(tag_id)) == narrow_expected | {outsiders[1], insider}
    with get_engine().connect() as conn:
        runs = (
            conn.execute(
                select(AuditEntry.__table__.c.details)
                .where(AuditEntry.__table__.c.action == "rule.run", AuditEntry.__table__.c.target_id == str(rule_id))
                .order_by(AuditEntry.__table__.c.id)
            )
            .scalars()
            .all()
        )
    assert len(runs) == 3 and json.loads(runs[0])["added"] == len(expected) - 1


def test_add_only_rule_never_removes(world, seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "rule-add")
    broad = [{"field": "order_count", "op": "gte", "value": 1}]
    rule_id = rule_definitions.save_rule(manager, _rule_data(tag_id, broad, mode="add_only"))
    rules.run_rule(manager, rule_id, now=NOW)
    first = set(_assigned(tag_id))
    rule_definitions.save_rule(
        manager,
        _rule_data(tag_id, [{"field": "order_count", "op": "gte", "value": 5}], mode="add_only"),
        rule_id=rule_id,
    )
    assert (
        rule_definitions.preview_rule(
            manager,
            _rule_data(tag_id, [{"field": "order_count", "op": "gte", "value": 5}], mode="add_only"),
            rule_id,
            now=NOW,
        ).would_lose
        == 0
    )
    result = rules.run_rule(manager, rule_id, now=NOW)
    assert result.removed == 0 and set(_assigned(tag_id)) == first


def test_rules_need_rule_manage(seeded_actors):
    tag_id = tags.create_tag(seeded_actors["manager"], "perm")
    data = _rule_data(tag_id, [{"field": "order_count", "op": "gte", "value": 1}])
    for call in (
        lambda a: rule_definitions.save_rule(a, data),
        lambda a: rule_definitions.preview_rule(a, data),
        lambda a: rule_definitions.list_rules(a),
    ):
        with pytest.raises(PermissionDenied):
            call(seeded_actors["agent"])


def test_default_rules_are_shipped_and_editable(seeded_actors):
    manager = seeded_actors["manager"]
    views = {v.name: v for v in rule_definitions.list_rules(manager)}
    assert {"新客户", "高频客户", "金卡会员", "银卡会员", "普通会员", "投诉客户", "待回访"} <= set(views)
    frequent = views["高频客户"]
    assert frequent.conditions[0]["field"] == "orders_paid_count" and frequent.conditions[0]["days"] == 30
    # the seed ran them once: members are tagged by tier
    with get_engine().connect() as conn:
        gold_tag = conn.execute(select(Tag.__table__.c.id).where(Tag.__table__.c.name == "金卡会员")).scalar_one()
        gold = set(conn.execute(select(C.id).where(C.status == "active", C.total_spent_cents >= 1_000_000)).scalars())
    assert {i for i, (src, _) in _assigned(gold_tag).items() if src == "rule"} == gold
    # editing keeps it; deleting does not bring it back
    rule_definitions.save_rule(
        manager,
        {
            **_rule_data(frequent.tag_id, [{"field": "orders_paid_count", "op": "gte", "value": 2, "days": 30}]),
            "name": "高频客户",
        },
        rule_id=frequent.id,
    )
    rule_definitions.delete_rule(manager, views["待回访"].id)
    assert rule_definitions.ensure_default_rules() == 0
    names = {v.name: v for v in rule_definitions.list_rules(manager)}
    assert "待回访" not in names and names["高频客户"].conditions[0]["value"] == 2


def test_customer_edit_applies_rules_for_that_customer(seeded_actors):
    from meiqia_app.services.customers import edit as customer_edit

    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "from-weibo")
    rule_id = rule_definitions.save_rule(
        manager, _rule_data(tag_id, [{"field": "source", "op": "eq", "value": "weibo"}])
    )
    with get_engine().connect() as conn:
        customer = conn.execute(
            select(C.id, C.version).where(C.status == "active", C.source == "web").order_by(C.id).limit(1)
        ).one()
    version = customer_edit.update_customer(manager, customer.id, customer.version, {"source": "weibo"})
    assert _assigned(tag_id) == {customer.id: ("rule", rule_id)}
    customer_edit.update_customer(manager, customer.id, version, {"source": "web"})
    assert _assigned(tag_id) == {}
    new_id = customer_edit.create_customer(manager, {"name": "规则测试", "source": "weibo", "phone": "13900001111"})
    assert _assigned(tag_id) == {new_id: ("rule", rule_id)}


def test_lifecycle_recompute_follows_configured_thresholds(world, seeded_actors):
    from meiqia_app.services.customers import lifecycle_update
    from meiqia_app.services.customers.lifecycle import LifecycleThresholds, lifecycle_stage, membership_tier

    admin = seeded_actors["admin"]
    with pytest.raises(ValidationError):
        lifecycle_update.set_thresholds(admin, 30, 200, 100)
    with pytest.raises(PermissionDenied):
        lifecycle_update.set_thresholds(seeded_actors["manager"], 30, 60, 120)
    lifecycle_update.set_thresholds(admin, 45, 60, 120)
    lifecycle_update.recompute_lifecycle(now=NOW)
    thresholds = LifecycleThresholds(45, 60, 120)
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(
                C.id, C.first_purchase_at, C.last_active_at, C.total_spent_cents, C.lifecycle_stage, C.membership_tier
            )
        ).all()
    for r in rows:
        assert r.lifecycle_stage == lifecycle_stage(_t(r.first_purchase_at), _t(r.last_active_at), NOW, thresholds)
        assert r.membership_tier == membership_tier(r.total_spent_cents)
    assert len({r.lifecycle_stage for r in rows}) >= 4


def test_adding_orders_makes_a_rule_tag_appear_without_a_run(seeded_actors):
    from meiqia_app.models import Product
    from meiqia_app.services.customers import orders as customer_orders

    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "busy-week")
    rule_definitions.save_rule(
        manager, _rule_data(tag_id, [{"field": "orders_paid_count", "op": "gte", "value": 2, "days": 7}])
    )
    with get_engine().connect() as conn:
        product_id = conn.execute(select(Product.__table__.c.id).limit(1)).scalar_one()
        customer_id, orders_before = conn.execute(
            select(C.id, C.order_count)
            .where(C.status == "active", C.first_purchase_at.is_(None))
            .order_by(C.id)
            .limit(1)
        ).one()
    customer_orders.add_order(manager, customer_id, product_id)
    assert customer_id not in _assigned(tag_id)
    customer_orders.add_order(manager, customer_id, product_id, amount_yuan=12.5)
    assert _assigned(tag_id)[customer_id][0] == "rule"
    with get_engine().connect() as conn:
        row = conn.execute(
            select(C.order_count, C.lifecycle_stage, C.first_purchase_at).where(C.id == customer_id)
        ).one()
    assert row.order_count == orders_before + 2
    assert row.lifecycle_stage == "new" and row.first_purchase_at is not None
    with pytest.raises(PermissionDenied):
        customer_orders.add_order(seeded_actors["analyst"], customer_id, product_id)


def test_rule_schedule_is_configurable(seeded_actors):
    from meiqia_app.services.platform import scheduler

    manager = seeded_actors["manager"]
    assert rule_definitions.get_rule_schedule() == "02:30"
    assert rule_definitions.set_rule_schedule(manager, "03:15") == "03:15"
    assert scheduler.task_time("tag_rules") == "03:15"
    rule_definitions.set_rule_schedule(manager, "OFF")
    assert scheduler.task_time("tag_rules") is None and rule_definitions.get_rule_schedule() == "off"
    with pytest.raises(ValidationError):
        rule_definitions.set_rule_schedule(manager, "25:00")
    with pytest.raises(PermissionDenied):
        rule_definitions.set_rule_schedule(seeded_actors["agent"], "01:00")


# --- the shipped 新客户 rule ------------------------------------------------------------------


def _new_customer_tag() -> int:
    with get_engine().connect() as conn:
        return conn.execute(select(Tag.__table__.c.id).where(Tag.__table__.c.name == "新客户")).scalar_one()


def _registered_within(days: int, now: dt.datetime) -> set[int]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(C.id, C.registered_at).where(C.status == "active")).all()
    return {r.id for r in rows if as_utc(r.registered_at) >= now - dt.timedelta(days=days)}


def test_shipped_new_customer_rule_tags_only_customers_registered_in_the_last_30_days(seeded_actors):
    from meiqia_app.db import write_session
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    tag_id = _new_customer_tag()
    registered = NOW - dt.timedelta(days=29)
    with write_session() as session:
        fresh = Customer(name="新注册客户", registered_at=registered, last_active_at=registered)
        session.add(fresh)
        session.flush()
        fresh_id = fresh.id
    rules.run_all_rules(SYSTEM_ACTOR, now=NOW)
    tagged = set(_assigned(tag_id))
    assert fresh_id in tagged
    assert tagged == _registered_within(30, NOW)
    # Customers registered long ago who bought within 30 days of registering (what the
    # old rule tagged, for ever) do not have it.
    with get_engine().connect() as conn:
        quick_old_buyers = {
            r.id
            for r in conn.execute(select(C.id, C.registered_at, C.first_purchase_at).where(C.status == "active"))
            if r.first_purchase_at is not None
            and as_utc(r.registered_at) < NOW - dt.timedelta(days=365)
            and as_utc(r.first_purchase_at) - as_utc(r.registered_at) <= dt.timedelta(days=30)
        }
    assert quick_old_buyers and not quick_old_buyers & tagged
    # 31 days after registering, the nightly run takes the tag off.
    later = registered + dt.timedelta(days=31)
    rules.run_all_rules(SYSTEM_ACTOR, now=later)
    assert fresh_id not in _assigned(tag_id)
    assert set(_assigned(tag_id)) == _registered_within(30, later)


def test_migration_corrects_the_shipped_new_customer_rule_of_an_existing_database(seeded_db):
    from sqlalchemy import text, update

    from meiqia_app.migrate import upgrade_to
    from meiqia_app.models import TagRule
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR

    R = TagRule.__table__.c
    T = Tag.__table__.c
    shipped_before = [{"field": "first_purchase_days", "op": "lte", "value": 30, "days": 0, "product_id": None}]
    edited = [{"field": "first_purchase_days", "op": "lte", "value": 45, "days": 0, "product_id": None}]

    def database_at_0006(conditions: list[dict]) -> None:
        with get_engine().begin() as conn:
            conn.execute(update(TagRule.__table__).where(R.name == "新客户").values(conditions=json.dumps(conditions)))
            conn.execute(update(Tag.__table__).where(T.name == "新客户").values(description="注册后 30 天内首次购买"))
            conn.execute(text("UPDATE alembic_version SET version_num = '0006_partial_status_indexes'"))

    def stored() -> tuple[list, str]:
        with get_engine().connect() as conn:
            conditions = conn.execute(select(R.conditions).where(R.name == "新客户")).scalar_one()
            description = conn.execute(select(T.description).where(T.name == "新客户")).scalar_one()
        return json.loads(conditions), description

    # An administrator's own version of the rule is left alone.
    database_at_0006(edited)
    upgrade_to("0007_new_customer_rule")
    assert stored()[0] == edited
    # The rule as shipped before is corrected, and the tag's description with it.
    database_at_0006(shipped_before)
    upgrade_to("0007_new_customer_rule")
    conditions, description = stored()
    assert conditions == [{"field": "registered_days", "op": "lte", "value": 30, "days": 0, "product_id": None}]
    assert description == "最近 30 天内注册"
    rules.run_all_rules(SYSTEM_ACTOR, now=NOW)
    assert set(_assigned(_new_customer_tag())) == _registered_within(30, NOW)
