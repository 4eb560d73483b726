"""The rules people keep: list, save, switch on or off, delete, preview; the default rules; the nightly run's time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

from sqlalchemy import and_, exists, func, insert, or_, select
from sqlmodel import select as sm_select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AppSetting, Customer, Tag, TagAssignment, TagRule
from meiqia_app.models.customer import IN_WORKING_SET_INDEXES
from meiqia_app.models.tag import SOURCE_RULE
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import scheduler
from meiqia_app.services.tags.names import tag_key
from meiqia_app.services.tags.rules.conditions import MATCH_TABLE, M, clean_conditions, clean_rule, compile_rule
from meiqia_app.services.tags.rules.custom_conditions import check_sensitive, missing_fields
from meiqia_app.timeutil import format_local, utcnow

C = Customer.__table__.c
TA = TagAssignment.__table__.c
SAMPLE_SIZE = 10


# Rules look at active customers. Written so that the planner does not walk a
# status-led index for it (99% of rows are active: random row lookups through
# such an index made a full-table rule 5x slower than a plain scan); indexes
# that suit the conditions themselves are still used. The literal working-set
# condition lets it read those (SQLite partial) indexes: models/customer.py.
SCOPE = and_(func.coalesce(C.status, "") == "active", IN_WORKING_SET_INDEXES)


# --- preview ------------------------------------------------------------------------


@dataclasses.dataclass
class Preview:
    matching: int
    would_gain: int
    would_lose: int
    sample: list[dict]


def removable_assignments(rule_id: int | None):
    """Assignments a rule may take away: its own, or orphans of a deleted rule."""
    owned = TA.rule_id.is_(None) if rule_id is None else or_(TA.rule_id == rule_id, TA.rule_id.is_(None))
    return and_(TA.source == SOURCE_RULE, owned)


def preview_rule(actor: Actor, data: dict, rule_id: int | None = None, now: dt.datetime | None = None) -> Preview:
    """How many customers match now, would gain / lose the tag, and a sample.

    The condition is evaluated once into a temporary table (as in a run), then
    the counts and the sample are read from it; nothing else is written.
    """
    require(actor, "rule.manage", action="rule.preview")
    spec = clean_rule(data)
    check_sensitive(actor, spec.conditions, saving=False)
    rule_id = parse_id(rule_id) if rule_id not in (None, "", 0) else None
    now = now or utcnow()
    condition = compile_rule(spec.match, spec.conditions, now)
    has_tag = exists().where(TA.customer_id == C.id, TA.tag_id == spec.tag_id)
    # What the person previewing may reach (a run itself works on every customer).
    access = CustomerAccess(actor)
    reach = access.scope_conditions()
    with get_engine().connect() as conn:
        MATCH_TABLE.drop(conn, checkfirst=True)
        MATCH_TABLE.create(conn)
        try:
            matching = conn.execute(
                insert(MATCH_TABLE).from_select(["customer_id"], select(C.id).where(SCOPE, condition, *reach))
            ).rowcount
            gain = conn.execute(
                select(func.count())
                .select_from(MATCH_TABLE)
                .where(~exists().where(TA.customer_id == M.customer_id, TA.tag_id == spec.tag_id))
            ).scalar_one()
            lose = 0
            if spec.mode == "sync":
                lose = conn.execute(
                    select(func.count())
                    .select_from(TagAssignment.__table__)
                    .where(
                        TA.tag_id == spec.tag_id,
                        removable_assignments(rule_id),
                        TA.customer_id.notin_(select(M.customer_id)),
                        exists().where(C.id == TA.customer_id, SCOPE, *reach),
                    )
                ).scalar_one()
            rows = conn.execute(
                select(C.id, C.name, C.city, C.source, C.order_count, C.total_spent_cents, has_tag.label("has_tag"))
                .select_from(MATCH_TABLE.join(Customer.__table__, C.id == M.customer_id))
                .order_by(M.customer_id)
                .limit(SAMPLE_SIZE)
            ).all()
        finally:
            MATCH_TABLE.drop(conn)
            conn.rollback()
    sample = [
        {
            "id": r.id,
            "name": r.name,
            "city": r.city or "",
            "source": r.source,
            "orders": r.order_count,
            "spent": access.mask("total_spent", f"{r.total_spent_cents / 100:.2f}"),
            "gains": not r.has_tag,
        }
        for r in rows
    ]
    return Preview(matching=matching, would_gain=gain, would_lose=lose, sample=sample)


# --- CRUD ---------------------------------------------------------------------------


@dataclasses.dataclass
class RuleView:
    id: int
    name: str
    tag_id: int
    tag_name: str
    tag_color: str
    match: str
    mode: str
    enabled: bool
    conditions: list[dict]
    last_run_at: str
    last_run: dict
    # keys of custom fields the rule names that were retired or deleted: it is not run until edited
    missing_fields: list[str] = dataclasses.field(default_factory=list)


def _rule_view(rule: TagRule, tag: Tag | None) -> RuleView:
    conditions = json.loads(rule.conditions or "[]")
    return RuleView(
        id=rule.id,
        name=rule.name,
        tag_id=rule.tag_id,
        tag_name=tag.name if tag else "",
        tag_color=tag.color if tag else "gray",
        match=rule.match,
        mode=rule.mode,
        enabled=rule.enabled,
        conditions=conditions,
        last_run_at=format_local(rule.last_run_at),
        last_run=json.loads(rule.last_run_summary or "{}"),
        missing_fields=missing_fields(conditions),
    )


def list_rules(actor: Actor) -> list[RuleView]:
    require(actor, "rule.manage", action="rule.list")
    ensure_default_rules()
    with read_session() as session:
        rows = session.exec(sm_select(TagRule, Tag).join(Tag, Tag.id == TagRule.tag_id).order_by(TagRule.id)).all()
        return [_rule_view(rule, tag) for rule, tag in rows]


def get_rule(actor: Actor, rule_id: int) -> RuleView:
    require(actor, "rule.manage", action="rule.view")
    with read_session() as session:
        rule = session.get(TagRule, parse_id(rule_id))
        if rule is None:
            raise NotFound()
        return _rule_view(rule, session.get(Tag, rule.tag_id))


def save_rule(actor: Actor, data: dict, rule_id: int | None = None) -> int:
    """Create (``rule_id`` None) or update a rule; returns its id."""
    require(actor, "rule.manage", action="rule.save", target_type="tag_rule", target_id=rule_id or "")
    spec = clean_rule(data)
    check_sensitive(actor, spec.conditions, saving=True)
    conditions = json.dumps([c.as_dict() for c in spec.conditions], ensure_ascii=False)
    now = utcnow()
    with write_session() as session:
        if rule_id in (None, "", 0):
            rule = TagRule(created_by_id=actor.user_id, created_at=now)
            before = None
        else:
            rule = session.get(TagRule, parse_id(rule_id))
            if rule is None:
                raise NotFound()
            before = {
                "name": rule.name,
                "tag_id": rule.tag_id,
                "match": rule.match,
                "mode": rule.mode,
                "conditions": json.loads(rule.conditions),
                "enabled": rule.enabled,
            }
        rule.name, rule.tag_id, rule.match, rule.mode = spec.name, spec.tag_id, spec.match, spec.mode
        rule.conditions, rule.enabled, rule.updated_at = conditions, spec.enabled, now
        session.add(rule)
        session.flush()
        after = {
            "name": rule.name,
            "tag_id": rule.tag_id,
            "match": rule.match,
            "mode": rule.mode,
            "conditions": json.loads(conditions),
            "enabled": rule.enabled,
        }
        audit.record(
            session,
            actor,
            "rule.create" if before is None else "rule.update",
            target_type="tag_rule",
            target_id=rule.id,
            details={"after": after, **({"before": before} if before else {})},
        )
        return rule.id


def set_rule_enabled(actor: Actor, rule_id: int, enabled: bool) -> None:
    rule_id = parse_id(rule_id)
    require(actor, "rule.manage", action="rule.enable", target_type="tag_rule", target_id=rule_id)
    with write_session() as session:
        rule = session.get(TagRule, rule_id)
        if rule is None:
            raise NotFound()
        if rule.enabled == bool(enabled):
            return
        rule.enabled = bool(enabled)
        session.add(rule)
        audit.record(
            session,
            actor,
            "rule.enable" if enabled else "rule.disable",
            target_type="tag_rule",
            target_id=rule_id,
            details={"name": rule.name},
        )


def delete_rule(actor: Actor, rule_id: int) -> None:
    """Delete a rule; the assignments it made stay (as orphans a later sync rule may take back)."""
    rule_id = parse_id(rule_id)
    require(actor, "rule.manage", action="rule.delete", target_type="tag_rule", target_id=rule_id)
    with write_session() as session:
        rule = session.get(TagRule, rule_id)
        if rule is None:
            raise NotFound()
        name = rule.name
        session.delete(rule)
        audit.record(session, actor, "rule.delete", target_type="tag_rule", target_id=rule_id, details={"name": name})


# --- shipped defaults -----------------------------------------------------------------

DEFAULTS_MARKER = "rules.defaults_installed"

DEFAULT_RULES: tuple[tuple[str, str, str, list[dict]], ...] = (
    # tag name, match, mode, conditions
    # New = registered within the last 30 days; in sync mode the nightly run takes it off again.
    ("新客户", "all", "sync", [{"field": "registered_days", "op": "lte", "value": 30}]),
    ("高频客户", "all", "sync", [{"field": "orders_paid_count", "op": "gte", "value": 3, "days": 30}]),
    ("金卡会员", "all", "sync", [{"field": "total_spent", "op": "gte", "value": 10000}]),
    (
        "银卡会员",
        "all",
        "sync",
        [{"field": "total_spent", "op": "gte", "value": 3000}, {"field": "total_spent", "op": "lt", "value": 10000}],
    ),
    ("普通会员", "all", "sync", [{"field": "total_spent", "op": "lt", "value": 3000}]),
    ("投诉客户", "all", "sync", [{"field": "complaint_count", "op": "gte", "value": 1, "days": 90}]),
    (
        "待回访",
        "all",
        "sync",
        [
            {"field": "inquiry_count", "op": "gte", "value": 1, "days": 14},
            {"field": "orders_count", "op": "eq", "value": 0, "days": 14},
        ],
    ),
)


def ensure_default_rules() -> int:
    """Create the shipped rules once (for the default tags that exist); editable afterwards.

    A marker setting records that it was done, so a rule an admin deleted does not come back.
    """
    with read_session() as session:
        if session.get(AppSetting, DEFAULTS_MARKER) is not None:
            return 0
    created = 0
    now = utcnow()
    with write_session() as session:
        if session.get(AppSetting, DEFAULTS_MARKER) is not None:
            return 0
        for tag_name, match, mode, raw in DEFAULT_RULES:
            tag = session.exec(sm_select(Tag).where(Tag.name_key == tag_key(tag_name))).first()
            if tag is None:
                continue
            conditions = [c.as_dict() for c in clean_conditions(raw, check_products=False)]
            session.add(
                TagRule(
                    name=tag_name,
                    tag_id=tag.id,
                    match=match,
                    mode=mode,
                    conditions=json.dumps(conditions, ensure_ascii=False),
                    created_at=now,
                    updated_at=now,
                )
            )
            created += 1
        session.add(AppSetting(key=DEFAULTS_MARKER, value=json.dumps(now.isoformat()), updated_by_name="system"))
        audit.record(session, SYSTEM_ACTOR, "rule.defaults_installed", details={"rules": created})
    return created


SCHEDULE_TASK = "tag_rules"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def get_rule_schedule() -> str:
    """The local "HH:MM" the rules run every day, or "off"."""
    return scheduler.task_time(SCHEDULE_TASK) or "off"


def set_rule_schedule(actor: Actor, value: object) -> str:
    """Move the daily rule run (the ``schedule.tag_rules`` setting) or switch it off."""
    require(actor, "rule.manage", action="rule.schedule", target_type="setting", target_id=f"schedule.{SCHEDULE_TASK}")
    value = str(value or "").strip().lower()
    if value != "off" and not _HHMM.match(value):
        raise ValidationError.single("schedule", "rule.bad_schedule")
    key = f"schedule.{SCHEDULE_TASK}"
    before = get_rule_schedule()
    with write_session() as session:
        row = session.get(AppSetting, key) or AppSetting(key=key)
        row.value = json.dumps(value)
        row.updated_at = utcnow()
        row.updated_by_name = actor.username
        session.add(row)
        audit.record(
            session,
            actor,
            "setting.update",
            target_type="setting",
            target_id=key,
            details={"before": before, "after": value},
        )
    return value
