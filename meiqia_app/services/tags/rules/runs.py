"""Rule-based auto-tagging (TAG-3): a rule = a tag + conditions, combined with all / any.

A condition is data, never code: ``{"field": …, "op": …, "value": …, "days": …,
"product_id": …}``, checked against the allowlist in ``FIELDS`` and compiled
to SQLAlchemy conditions on the customer table with bound parameters.

Aggregates over a time window (orders paid in the last N days, complaints,
product views…) compile in two equivalent forms:

* set form, for whole-table runs: ``customer.id IN (SELECT customer_id …
  GROUP BY customer_id HAVING agg op value)`` — one pass over the window's
  index range. When the comparison holds for 0 (e.g. ``= 0``, ``< 2``) the
  complement is used: ``id NOT IN (… HAVING NOT (agg op value))``, because a
  customer with no rows in the window has the aggregate 0.
* correlated form, for one customer (``apply_rules_to_customer``): a scalar
  subquery per customer through the (customer_id, time) index.

Rules only look at active customers (archived ones left the working set). A
rule never removes a manual assignment; in ``sync`` mode it removes its own
assignments from customers who no longer match. Every assignment records its
source, the rule and the time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import operator
import re
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    Table,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlmodel import select as sm_select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import (
    AppSetting,
    BehaviorEvent,
    Conversation,
    Customer,
    Order,
    Product,
    Tag,
    TagAssignment,
    TagRule,
)
from meiqia_app.models.customer import IN_WORKING_SET_INDEXES, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.models.tag import SOURCE_RULE
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import MANY, RULE_TAGS, customers_changed
from meiqia_app.services.customers.lifecycle_update import recompute_lifecycle
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import jobs, scheduler
from meiqia_app.services.tags.names import tag_key
from meiqia_app.timeutil import format_local, local_day_start_utc, utcnow

log = logging.getLogger(__name__)

C = Customer.__table__.c
TA = TagAssignment.__table__.c
R = TagRule.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
EV = BehaviorEvent.__table__.c

MAX_CONDITIONS = 20
MAX_DAYS = 3650
MAX_NAME = 64
MATCHES = ("all", "any")
MODES = ("add_only", "sync")
RUN_JOB_KIND = "rules.run"
SAMPLE_SIZE = 10

NUM_OPS = ("gte", "gt", "lte", "lt", "eq", "ne")
DAYS_OPS = ("gte", "gt", "lte", "lt")
CHOICE_OPS = ("eq", "ne", "in", "not_in")
TEXT_OPS = ("eq", "ne")
BOOL_OPS = ("eq",)
DATE_OPS = ("before", "since")
HAS_OPS = ("yes", "no")

_PY_OPS: dict[str, Callable] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
    "eq": operator.eq,
    "ne": operator.ne,
}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    key: str
    kind: str  # number | days | choice | text | bool | date | has
    ops: tuple[str, ...]
    window: str = "none"  # none | required | optional (0 = ever)
    product: bool = False  # needs a product id
    choices: tuple[str, ...] = ()
    integer: bool = True  # number fields: whole numbers only
    aggregate: bool = False


FIELDS: dict[str, FieldSpec] = {
    spec.key: spec
    for spec in (
        FieldSpec("source", "choice", CHOICE_OPS, choices=SOURCES),
        FieldSpec("province", "text", TEXT_OPS),
        FieldSpec("city", "text", TEXT_OPS),
        FieldSpec("registered_at", "date", DATE_OPS),
        FieldSpec("registered_days", "days", DAYS_OPS),
        FieldSpec("total_spent", "number", NUM_OPS, integer=False),
        FieldSpec("order_count", "number", NUM_OPS),
        FieldSpec("consent_marketing", "bool", BOOL_OPS),
        FieldSpec("consent_analytics", "bool", BOOL_OPS),
        FieldSpec("lifecycle_stage", "choice", CHOICE_OPS, choices=LIFECYCLE_STAGES),
        FieldSpec("membership_tier", "choice", CHOICE_OPS, choices=MEMBERSHIP_TIERS),
        FieldSpec("days_since_active", "days", DAYS_OPS),
        FieldSpec("first_purchase_days", "number", ("lte", "lt", "gte", "gt")),
        FieldSpec("orders_paid_count", "number", NUM_OPS, window="required", aggregate=True),
        FieldSpec("orders_paid_amount", "number", NUM_OPS, window="required", integer=False, aggregate=True),
        FieldSpec("orders_count", "number", NUM_OPS, window="required", aggregate=True),
        FieldSpec("bought_product", "has", HAS_OPS, window="optional", product=True, aggregate=True),
        FieldSpec("complaint_count", "number", NUM_OPS, window="required", aggregate=True),
        FieldSpec("inquiry_count", "number", NUM_OPS, window="required", aggregate=True),
        FieldSpec("product_views", "number", NUM_OPS, window="optional", product=True, aggregate=True),
    )
}


@dataclasses.dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: object = None
    days: int = 0
    product_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "field": self.field,
            "op": self.op,
            "value": self.value,
            "days": self.days,
            "product_id": self.product_id,
        }


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """A validated rule (what the form sends, after ``clean_rule``)."""

    name: str
    tag_id: int
    match: str
    mode: str
    conditions: tuple[Condition, ...]
    enabled: bool = True


# --- validation ---------------------------------------------------------------------


def _bad(index: int, key: str = "rule.bad_condition", **params) -> ValidationError:
    return ValidationError(
        {f"condition_{index}": (key, {"n": index + 1, **params})}, message_key=key, n=index + 1, **params
    )


def product_choices(actor: Actor) -> list[tuple[int, str]]:
    """(id, name) of every product, for the "bought product X" conditions of the rule builder."""
    require(actor, "rule.manage", action="rule.products", target_type="product")
    with get_engine().connect() as conn:
        return [
            (row.id, row.name)
            for row in conn.execute(
                select(Product.__table__.c.id, Product.__table__.c.name).order_by(Product.__table__.c.id)
            )
        ]


def _clean_condition(raw: object, index: int, known_products: set[int] | None) -> Condition:
    if not isinstance(raw, dict):
        raise _bad(index)
    spec = FIELDS.get(str(raw.get("field") or ""))
    if spec is None:
        raise _bad(index, "rule.bad_field")
    op = str(raw.get("op") or "")
    if op not in spec.ops:
        raise _bad(index, "rule.bad_operator")
    value = raw.get("value")
    if spec.kind in ("number", "days"):
        try:
            number = float(str(value).strip())
        except (TypeError, ValueError):
            raise _bad(index, "rule.bad_number") from None
        if number != number or abs(number) > 1e12 or (spec.kind == "days" and number < 0):
            raise _bad(index, "rule.bad_number")
        if spec.integer or spec.kind == "days":
            if number != int(number):
                raise _bad(index, "rule.bad_number")
            value = int(number)
        else:
            value = round(number, 2)
    elif spec.kind == "choice":
        if op in ("in", "not_in"):
            items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
            items = [str(item).strip() for item in items if str(item).strip()]
            if not items or any(item not in spec.choices for item in items):
                raise _bad(index, "rule.bad_choice")
            value = sorted(set(items))
        else:
            value = str(value or "").strip()
            if value not in spec.choices:
                raise _bad(index, "rule.bad_choice")
    elif spec.kind == "text":
        value = " ".join(str(value or "").split())
        if not value or len(value) > 32:
            raise _bad(index, "rule.bad_text")
    elif spec.kind == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise _bad(index, "rule.bad_choice")
            value = value.lower() in ("true", "1", "yes")
        elif isinstance(value, bool):
            pass
        else:
            raise _bad(index, "rule.bad_choice")
    elif spec.kind == "date":
        try:
            value = dt.date.fromisoformat(str(value or "").strip()).isoformat()
        except ValueError:
            raise _bad(index, "rule.bad_date") from None
    elif spec.kind == "has":
        value = None
    days = 0
    if spec.window != "none":
        raw_days = raw.get("days")
        try:
            days = int(str(raw_days if raw_days not in (None, "") else 0).strip())
        except ValueError:
            raise _bad(index, "rule.bad_days") from None
        if days < 0 or days > MAX_DAYS or (spec.window == "required" and days == 0):
            raise _bad(index, "rule.bad_days")
    product_id = None
    if spec.product:
        try:
            product_id = int(str(raw.get("product_id") or "").strip())
        except ValueError:
            raise _bad(index, "rule.bad_product") from None
        if known_products is not None and product_id not in known_products:
            raise _bad(index, "rule.bad_product")
    return Condition(spec.key, op, value, days, product_id)


def clean_conditions(raw: object, check_products: bool = True) -> tuple[Condition, ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValidationError.single("conditions", "rule.bad_condition", n=1) from None
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValidationError.single("conditions", "rule.no_conditions")
    if len(raw) > MAX_CONDITIONS:
        raise ValidationError.single("conditions", "rule.too_many", max=MAX_CONDITIONS)
    products = None
    if check_products and any(
        isinstance(c, dict) and FIELDS.get(str(c.get("field"))) and FIELDS[str(c.get("field"))].product for c in raw
    ):
        with get_engine().connect() as conn:
            products = set(conn.execute(select(Product.__table__.c.id)).scalars())
    return tuple(_clean_condition(item, index, products) for index, item in enumerate(raw))


def clean_rule(data: object) -> RuleSpec:
    if not isinstance(data, dict):
        raise ValidationError.single("conditions", "rule.bad_condition", n=1)
    errors: dict[str, tuple[str, dict]] = {}
    name = " ".join(str(data.get("name") or "").split())
    if not name:
        errors["name"] = ("error.required", {})
    elif len(name) > MAX_NAME:
        errors["name"] = ("error.too_long", {"max": MAX_NAME})
    try:
        tag_id = parse_id(data.get("tag_id"))
    except NotFound:
        tag_id = 0
    if tag_id <= 0:
        tag_id = 0
        errors["tag_id"] = ("error.required", {})
    match = str(data.get("match") or "all")
    if match not in MATCHES:
        errors["match"] = ("error.bad_choice", {})
    mode = str(data.get("mode") or "add_only")
    if mode not in MODES:
        errors["mode"] = ("error.bad_choice", {})
    if errors:
        raise ValidationError(errors)
    if tag_id:
        with read_session() as session:
            if session.get(Tag, tag_id) is None:
                raise ValidationError.single("tag_id", "error.not_found")
    conditions = clean_conditions(data.get("conditions"))
    return RuleSpec(
        name=name, tag_id=tag_id, match=match, mode=mode, conditions=conditions, enabled=bool(data.get("enabled", True))
    )


# --- compiling ----------------------------------------------------------------------


def _days_between(later, earlier):
    """Days from ``earlier`` to ``later`` (fractional)."""
    return get_adapter().days_between(later, earlier)


def _compare(expression, op: str, value):
    return _PY_OPS[op](expression, value)


def _days_since(column, op: str, days: int, now: dt.datetime):
    """days-since(column) op N, as a range condition on the column (index friendly)."""
    edge = now - dt.timedelta(days=days)
    return {"gte": column <= edge, "gt": column < edge, "lte": column >= edge, "lt": column > edge}[op]


def _aggregate_source(cond: Condition, now: dt.datetime):
    """(customer id column, aggregate expression, where conditions, value to compare)."""
    since = now - dt.timedelta(days=cond.days) if cond.days else None

    def window(column):
        return [column <= now] + ([column >= since] if since is not None else [])

    field = cond.field
    if field == "orders_paid_count":
        return OC.customer_id, func.count(), [OC.status == "paid", *window(OC.paid_at)], cond.value
    if field == "orders_paid_amount":
        return (
            OC.customer_id,
            func.coalesce(func.sum(OC.amount_cents), 0),
            [OC.status == "paid", *window(OC.paid_at)],
            int(round(float(cond.value) * 100)),
        )
    if field == "orders_count":
        return OC.customer_id, func.count(), window(OC.created_at), cond.value
    if field == "bought_product":
        return (
            OC.customer_id,
            func.count(),
            [OC.status == "paid", OC.product_id == cond.product_id, *window(OC.paid_at)],
            None,
        )
    if field == "complaint_count":
        return CV.customer_id, func.count(), [CV.category == "complaint", *window(CV.started_at)], cond.value
    if field == "inquiry_count":
        return CV.customer_id, func.count(), [CV.category == "inquiry", *window(CV.started_at)], cond.value
    if field == "product_views":
        return (
            EV.customer_id,
            func.count(),
            [EV.product_id == cond.product_id, EV.kind.in_(("product_view", "page_view")), *window(EV.occurred_at)],
            cond.value,
        )
    raise ValueError(field)


def _aggregate_condition(cond: Condition, now: dt.datetime, correlated: bool):
    customer_col, agg, where, value = _aggregate_source(cond, now)
    if cond.field == "bought_product":
        op, value = ("gte", 1) if cond.op == "yes" else ("lt", 1)
    else:
        op = cond.op
    if correlated:
        scalar = select(agg).where(customer_col == C.id, *where).scalar_subquery()
        return _compare(func.coalesce(scalar, 0), op, value)
    holds_for_zero = _PY_OPS[op](0, value)
    grouped = select(customer_col).where(*where).group_by(customer_col)
    if holds_for_zero:
        return C.id.notin_(grouped.having(not_(_compare(agg, op, value))))
    return C.id.in_(grouped.having(_compare(agg, op, value)))


def compile_condition(cond: Condition, now: dt.datetime, correlated: bool = False):
    spec = FIELDS[cond.field]
    if spec.aggregate:
        return _aggregate_condition(cond, now, correlated)
    field, op, value = cond.field, cond.op, cond.value
    if field in ("source", "lifecycle_stage", "membership_tier"):
        column = getattr(C, field)
        return {
            "eq": lambda: column == value,
            "ne": lambda: column != value,
            "in": lambda: column.in_(value),
            "not_in": lambda: column.notin_(value),
        }[op]()
    if field in ("province", "city"):
        column = getattr(C, field)
        return column == value if op == "eq" else or_(column.is_(None), column != value)
    if field == "registered_at":
        edge = local_day_start_utc(dt.date.fromisoformat(value))
        return C.registered_at < edge if op == "before" else C.registered_at >= edge
    if field == "registered_days":
        return _days_since(C.registered_at, op, value, now)
    if field == "days_since_active":
        return _days_since(C.last_active_at, op, value, now)
    if field == "total_spent":
        return _compare(C.total_spent_cents, op, int(round(float(value) * 100)))
    if field == "order_count":
        return _compare(C.order_count, op, value)
    if field in ("consent_marketing", "consent_analytics"):
        return getattr(C, field).is_(true() if value else false())
    if field == "first_purchase_days":
        return and_(
            C.first_purchase_at.isnot(None), _compare(_days_between(C.first_purchase_at, C.registered_at), op, value)
        )
    raise ValueError(field)


def compile_rule(match: str, conditions, now: dt.datetime, correlated: bool = False):
    parts = [compile_condition(cond, now, correlated) for cond in conditions]
    return and_(*parts) if match == "all" else or_(*parts)


def _not(condition):
    """NOT that treats NULL (unknown) as not matching."""
    return case((condition, 1), else_=0) == 0


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


def _owned(rule_id: int | None):
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
    rule_id = parse_id(rule_id) if rule_id not in (None, "", 0) else None
    now = now or utcnow()
    condition = compile_rule(spec.match, spec.conditions, now)
    has_tag = exists().where(TA.customer_id == C.id, TA.tag_id == spec.tag_id)
    # What the person previewing may reach (a run itself works on every customer).
    access = CustomerAccess(actor)
    reach = access.scope_conditions()
    with get_engine().connect() as conn:
        _MATCH.drop(conn, checkfirst=True)
        _MATCH.create(conn)
        try:
            matching = conn.execute(
                insert(_MATCH).from_select(["customer_id"], select(C.id).where(SCOPE, condition, *reach))
            ).rowcount
            gain = conn.execute(
                select(func.count())
                .select_from(_MATCH)
                .where(~exists().where(TA.customer_id == M.customer_id, TA.tag_id == spec.tag_id))
            ).scalar_one()
            lose = 0
            if spec.mode == "sync":
                lose = conn.execute(
                    select(func.count())
                    .select_from(TagAssignment.__table__)
                    .where(
                        TA.tag_id == spec.tag_id,
                        _owned(rule_id),
                        TA.customer_id.notin_(select(M.customer_id)),
                        exists().where(C.id == TA.customer_id, SCOPE, *reach),
                    )
                ).scalar_one()
            rows = conn.execute(
                select(C.id, C.name, C.city, C.source, C.order_count, C.total_spent_cents, has_tag.label("has_tag"))
                .select_from(_MATCH.join(Customer.__table__, C.id == M.customer_id))
                .order_by(M.customer_id)
                .limit(SAMPLE_SIZE)
            ).all()
        finally:
            _MATCH.drop(conn)
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


def _rule_view(rule: TagRule, tag: Tag | None) -> RuleView:
    return RuleView(
        id=rule.id,
        name=rule.name,
        tag_id=rule.tag_id,
        tag_name=tag.name if tag else "",
        tag_color=tag.color if tag else "gray",
        match=rule.match,
        mode=rule.mode,
        enabled=rule.enabled,
        conditions=json.loads(rule.conditions or "[]"),
        last_run_at=format_local(rule.last_run_at),
        last_run=json.loads(rule.last_run_summary or "{}"),
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


# --- running ------------------------------------------------------------------------


def _spec_of(rule: TagRule) -> RuleSpec:
    return RuleSpec(
        name=rule.name,
        tag_id=rule.tag_id,
        match=rule.match,
        mode=rule.mode,
        conditions=clean_conditions(rule.conditions, check_products=False),
        enabled=rule.enabled,
    )


# The matching customers of the rule being run, computed once per run: the
# condition (often a scan) is evaluated once, and reading the customer table
# is kept apart from writing assignments (interleaving them thrashes the cache).
_MATCH = Table("rule_match", MetaData(), Column("customer_id", BigInteger, primary_key=True), prefixes=["TEMPORARY"])
M = _MATCH.c


def _run_one(rule_id: int, actor: Actor, now: dt.datetime) -> dict:
    """Apply one rule to every active customer in one transaction; returns the counts."""
    with write_session() as session:
        rule = session.get(TagRule, rule_id)
        if rule is None:
            raise NotFound()
        spec = _spec_of(rule)
        condition = compile_rule(spec.match, spec.conditions, now)
        conn = session.connection()
        _MATCH.drop(conn, checkfirst=True)
        _MATCH.create(conn)
        matched = conn.execute(
            insert(_MATCH).from_select(["customer_id"], select(C.id).where(SCOPE, condition))
        ).rowcount
        added = conn.execute(
            insert(TagAssignment.__table__).from_select(
                ["customer_id", "tag_id", "source", "rule_id", "assigned_at"],
                select(
                    M.customer_id,
                    literal(spec.tag_id),
                    literal(SOURCE_RULE),
                    literal(rule_id),
                    literal(now, TA.assigned_at.type),
                ).where(~exists().where(TA.customer_id == M.customer_id, TA.tag_id == spec.tag_id)),
            )
        ).rowcount
        removed = 0
        if spec.mode == "sync":
            removed = conn.execute(
                delete(TagAssignment.__table__).where(
                    TA.tag_id == spec.tag_id,
                    _owned(rule_id),
                    # NOT EXISTS, not NOT IN: PostgreSQL runs NOT IN (subquery) as a nested scan once the
                    # matches outgrow work_mem (a rule over 1M customers took more than 8 minutes).
                    ~exists().where(M.customer_id == TA.customer_id),
                    exists().where(C.id == TA.customer_id, SCOPE),
                )
            ).rowcount
        _MATCH.drop(conn)
        if added or removed:
            customers_changed(session, MANY, RULE_TAGS)
        summary = {"matched": matched, "added": added, "removed": removed, "at": now.isoformat()}
        rule.last_run_at = now
        rule.last_run_summary = json.dumps(summary)
        session.add(rule)
        if added:
            tag = session.get(Tag, spec.tag_id)
            tag.last_assigned_at = now
            session.add(tag)
        audit.record(
            session,
            actor,
            "rule.run",
            target_type="tag_rule",
            target_id=rule_id,
            details={"name": rule.name, "tag_id": spec.tag_id, "mode": spec.mode, **summary},
        )
    return summary


def run_rule(actor: Actor, rule_id: int, now: dt.datetime | None = None) -> dict:
    """Run one rule now (in this thread); returns {matched, added, removed}."""
    rule_id = parse_id(rule_id)
    require(actor, "rule.manage", action="rule.run", target_type="tag_rule", target_id=rule_id)
    return _run_one(rule_id, actor, now or utcnow())


def run_all_rules(
    actor: Actor = SYSTEM_ACTOR, now: dt.datetime | None = None, progress: Callable[[str], None] | None = None
) -> dict[int, dict]:
    """Run every enabled rule (nightly task, seed hook, CLI)."""
    require(actor, "rule.manage", action="rule.run_all")
    ensure_default_rules()
    now = now or utcnow()
    with read_session() as session:
        rules = session.exec(
            sm_select(TagRule.id, TagRule.name).where(TagRule.enabled.is_(True)).order_by(TagRule.id)
        ).all()
    results = {}
    for rule_id, name in rules:
        if progress:
            progress(f"rule {name}")
        results[rule_id] = _run_one(rule_id, actor, now)
    return results


def start_rule_run_job(actor: Actor, rule_id: int | None = None) -> int:
    """Run one rule (or all enabled ones with ``rule_id=None``) as a background job."""
    if rule_id not in (None, "", 0):
        rule_id = parse_id(rule_id)
        require(actor, "rule.manage", action="rule.run", target_type="tag_rule", target_id=rule_id)
        with read_session() as session:
            if session.get(TagRule, rule_id) is None:
                raise NotFound()
        ids = [rule_id]
    else:
        require(actor, "rule.manage", action="rule.run_all")
        with read_session() as session:
            ids = list(session.exec(sm_select(TagRule.id).where(TagRule.enabled.is_(True)).order_by(TagRule.id)))
    job_id = jobs.create_job(actor, RUN_JOB_KIND, {"rule_ids": ids}, total=len(ids))
    jobs.start_in_background(job_id)
    return job_id


def _run_worker(ctx: jobs.JobContext) -> dict:
    require(ctx.actor, "rule.manage", action="rule.run")
    ids = [int(i) for i in ctx.params.get("rule_ids", [])]
    done = list(ctx.checkpoint.get("done", []))
    results = dict(ctx.checkpoint.get("results", {}))
    now = utcnow()
    for rule_id in ids:
        if rule_id in done:
            continue
        try:
            results[str(rule_id)] = _run_one(rule_id, ctx.actor, now)
        except NotFound:
            results[str(rule_id)] = {"missing": True}
        done.append(rule_id)
        ctx.progress(len(done), {"done": done, "results": results})
    totals = {key: sum(r.get(key, 0) for r in results.values()) for key in ("matched", "added", "removed")}
    return {**totals, "rules": results}


# --- one customer ---------------------------------------------------------------------


def apply_rules_to_customer(customer_id: int, now: dt.datetime | None = None) -> dict:
    """Bring one customer's lifecycle stage and rule tags up to date after their data changed.

    Run for the customers of a change (services/customers/change_subscribers.py) and by the merge.
    Returns {"added": [tag ids], "removed": [tag ids]}.
    """
    customer_id = parse_id(customer_id)
    return apply_rules_to_customers([customer_id], now).get(customer_id, {"added": [], "removed": []})


@dataclasses.dataclass(frozen=True)
class _Assigned:
    customer_id: int
    source: str
    rule_id: int | None


def apply_rules_to_customers(customer_ids, now: dt.datetime | None = None) -> dict[int, dict]:
    """:func:`apply_rules_to_customer` for several customers at once (behaviour ingested in
    batches): the stage in one UPDATE, each rule checked once for the whole set.

    Returns {customer id: {"added": [tag ids], "removed": [tag ids]}} for the
    customers whose tags changed.
    """
    ids = sorted({parse_id(i) for i in customer_ids})
    now = now or utcnow()
    if not ids:
        return {}
    recompute_lifecycle(now=now, customer_ids=ids)
    changes: dict[int, dict] = {}
    with write_session() as session:
        rules = session.exec(sm_select(TagRule).where(TagRule.enabled.is_(True)).order_by(TagRule.id)).all()
        if not rules:
            return {}
        # Like the full runs: rules leave archived and trashed customers alone. The ids come
        # back packed in one value: an ingested batch names hundreds of customers, and each
        # row fetched alone hands Python's GIL over (up to 5 ms a row while agents work).
        conn = session.connection()
        active = [
            row[0]
            for row in get_adapter(conn).packed_rows(
                conn, select(C.id).where(C.id.in_(ids), C.status == "active"), ("id",)
            )
        ]
        if not active:
            return {}
        for rule in rules:
            spec = _spec_of(rule)
            condition = compile_rule(spec.match, spec.conditions, now, correlated=True)
            adapter = get_adapter(conn)
            matching = {
                row[0]
                for row in adapter.packed_rows(
                    conn,
                    select(C.id).select_from(Customer.__table__).where(C.id.in_(active), SCOPE, condition),
                    ("id",),
                )
            }
            assigned = {
                row[0]: _Assigned(*row)
                for row in adapter.packed_rows(
                    conn,
                    select(TA.customer_id, TA.source, TA.rule_id).where(
                        TA.tag_id == spec.tag_id, TA.customer_id.in_(active)
                    ),
                    ("customer_id", "source", "rule_id"),
                )
            }
            gained = [i for i in active if i in matching and i not in assigned]
            lost = [
                i
                for i in active
                if i not in matching
                and spec.mode == "sync"
                and i in assigned
                and assigned[i].source == SOURCE_RULE
                and assigned[i].rule_id in (rule.id, None)
            ]
            if gained:
                session.execute(
                    insert(TagAssignment.__table__),
                    [
                        {
                            "customer_id": i,
                            "tag_id": spec.tag_id,
                            "source": SOURCE_RULE,
                            "rule_id": rule.id,
                            "assigned_at": now,
                        }
                        for i in gained
                    ],
                )
            if lost:
                session.execute(
                    delete(TagAssignment.__table__).where(TA.tag_id == spec.tag_id, TA.customer_id.in_(lost))
                )
            for i in gained:
                changes.setdefault(i, {"added": [], "removed": []})["added"].append(spec.tag_id)
            for i in lost:
                changes.setdefault(i, {"added": [], "removed": []})["removed"].append(spec.tag_id)
        audit.record_many(
            session,
            SYSTEM_ACTOR,
            "rule.apply_customer",
            [
                {"target_type": "customer", "target_id": customer_id, "details": change}
                for customer_id, change in sorted(changes.items())
            ],
        )
        if changes:
            customers_changed(session, changes, RULE_TAGS)
    return changes


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


def nightly_run() -> None:
    """The nightly task ``tag_rules`` (services/platform/scheduled_tasks.py)."""
    run_all_rules(SYSTEM_ACTOR)


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


jobs.register_worker(RUN_JOB_KIND, _run_worker)
