"""What a rule may say: the fields and operators of its conditions, how a rule is checked, and its SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import operator
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, MetaData, Table, and_, case, false, func, not_, or_, select, true

from meiqia_app.db import get_engine, read_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import BehaviorEvent, Conversation, Customer, Order, Product, Tag
from meiqia_app.models.customer import LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.services.customers.access import parse_id
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.tags.rules.custom_conditions import (
    clean_custom_condition,
    compile_custom_condition,
    is_custom,
)
from meiqia_app.timeutil import local_day_start_utc

C = Customer.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
EV = BehaviorEvent.__table__.c

MAX_CONDITIONS = 20
MAX_DAYS = 3650
MAX_NAME = 64
MATCHES = ("all", "any")
MODES = ("add_only", "sync")

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
    if is_custom(raw.get("field")):
        return Condition(*clean_custom_condition(raw, index))
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
    if is_custom(cond.field):
        return compile_custom_condition(cond.field, cond.op, cond.value)
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


# The matching customers of the rule being run, computed once per run: the
# condition (often a scan) is evaluated once, and reading the customer table
# is kept apart from writing assignments (interleaving them thrashes the cache).
MATCH_TABLE = Table(
    "rule_match", MetaData(), Column("customer_id", BigInteger, primary_key=True), prefixes=["TEMPORARY"]
)
M = MATCH_TABLE.c
