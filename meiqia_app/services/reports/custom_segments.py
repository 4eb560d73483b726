"""Custom fields in segment reports (issue 23): filter a segment by a custom field, and
group its customers by a single select, multi select or yes/no field.

- **Filter**: ``params["cf_key"]`` + ``params["cf_value"]`` (an option id, "true" /
  "false", or ``EMPTY`` for "no value") narrows the segment. The segment is then a
  :class:`CustomSegment`, a ``ListQuery`` with the field's condition on top, so every
  report figure (periods, cohorts, products, their caches keyed by the query's
  signature) sees it through ``measures.segment_conditions``.
- **Group by**: :func:`group_counts` counts the segment's customers per option
  (multi select: per option held, so the rows may add up to more than the total),
  plus those without a value; labels in the reader's language, never option ids.

Both read through ``CustomerAccess``: the segment is within the actor's scope, and a
sensitive field the actor sees masked is refused and audited (like the list's
filters: each answer would narrow a hidden value down).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, case, func, select

from meiqia_app.db import read_connection
from meiqia_app.i18n import tr
from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.custom_fields.field_types import FieldDef, display, option_sort_key
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse

C = Customer.__table__.c
GROUP_TYPES = ("single_select", "multi_select", "yes_no")
EMPTY = "__empty__"
ACTION = "report.segment"


@dataclasses.dataclass(frozen=True)
class CustomSegment(ListQuery):
    """A segment narrowed by one custom field: (key, value) as the report's params give it."""

    custom_filter: tuple[str, str] = ()


def _groupable(actor: Actor, key: object, types: tuple[str, ...] = GROUP_TYPES) -> FieldDef:
    field = custom_field_catalog.field(key) if isinstance(key, str) else None
    if field is None or not field.active or field.field_type not in types:
        raise ValidationError.single("cf_key", "report.cf_not_groupable")
    if field.sensitive and not CustomerAccess(actor).sees_sensitive:
        refuse(actor, ACTION, "error.hidden_value_filter", target_type="customer", fields=[field.name])
    return field


def _clean_value(field: FieldDef, value: object) -> str:
    value = str(value or "").strip()
    if value == EMPTY:
        return EMPTY
    if field.field_type == "yes_no":
        if value not in ("true", "false"):
            raise ValidationError.single("cf_value", "error.bad_choice")
        return value
    if field.option(value) is None:
        raise ValidationError.single("cf_value", "error.bad_choice")
    return value


def narrowed(actor: Actor, segment: ListQuery | None, params: dict) -> ListQuery | None:
    """The segment narrowed by the params' custom field filter (unchanged without one)."""
    key = params.get("cf_key") or ""
    if not key:
        return segment
    field = _groupable(actor, key)
    value = _clean_value(field, params.get("cf_value"))
    base = segment if segment is not None else ListQuery()
    return CustomSegment(**dataclasses.asdict(base), custom_filter=(field.key, value))


def custom_conditions(access: CustomerAccess, segment: ListQuery | None) -> list:
    """The SQL of a CustomSegment's custom field filter ([] for any other segment)."""
    if not isinstance(segment, CustomSegment) or not segment.custom_filter:
        return []
    key, value = segment.custom_filter
    if value == EMPTY:
        return [custom_values.condition(access, key, "empty")]
    field = custom_field_catalog.field(key)
    if field is not None and field.field_type == "multi_select":
        return [custom_values.condition(access, key, "any_of", [value])]
    return [custom_values.condition(access, key, "equals", value == "true" if value in ("true", "false") else value)]


def filter_text(params: dict, lang: str) -> str:
    """The filter as people read it ("会员来源 = 门店"); "" without one."""
    field = custom_field_catalog.field(str(params.get("cf_key") or ""))
    if field is None:
        return ""
    value = str(params.get("cf_value") or "")
    if value == EMPTY:
        shown = tr(lang, "report.cf_empty")
    elif field.field_type == "yes_no":
        shown = display(field, value == "true", lang)
    else:
        shown = display(field, value, lang)
    return f"{field.label(lang)} = {shown}"


@dataclasses.dataclass(frozen=True)
class CustomGroup:
    """One row of a segment grouped by a custom field."""

    value: str  # option id, "true" / "false", or EMPTY
    label: str
    customers: int
    share: str  # of the segment's customers, e.g. "12.5%"
    ratio: float = 0.0  # the same share as a fraction (0.125): typed cells of the report's files


@dataclasses.dataclass(frozen=True)
class CustomField:
    """A field a segment may be grouped or filtered by, as the page offers it."""

    key: str
    label: str
    field_type: str
    values: tuple[tuple[str, str], ...]  # (value, label): options, or yes / no


def groupable_fields(actor: Actor, lang: str = "zh") -> list[CustomField]:
    """The active single select, multi select and yes/no fields the actor may group by."""
    sees = CustomerAccess(actor).sees_sensitive
    found = []
    for field in custom_field_catalog.catalog().active:
        if field.field_type not in GROUP_TYPES or (field.sensitive and not sees):
            continue
        if field.field_type == "yes_no":
            choices = (("true", display(field, True, lang)), ("false", display(field, False, lang)))
        else:
            choices = tuple((o.id, o.label(lang)) for o in field.ordered_options())
        found.append(CustomField(field.key, field.label(lang), field.field_type, choices))
    return found


def group_counts(
    actor: Actor, segment: ListQuery | None, key: str, lang: str = "zh", conn: Connection | None = None
) -> list[CustomGroup]:
    """The segment's active customers per value of custom field ``key`` (the caller has checked
    report.view), within the actor's scope, the empty ones last."""
    from meiqia_app.services.reports.measures import ACTIVE, scoped_segment, segment_conditions

    field = _groupable(actor, key)
    access = CustomerAccess(actor)
    segment = scoped_segment(actor, segment, ACTION)
    if conn is None:
        with read_connection() as own:
            return group_counts(actor, segment, key, lang, own)
    where = [ACTIVE, *segment_conditions(conn, access, segment)]
    total = conn.execute(select(func.count()).select_from(Customer.__table__).where(*where)).scalar_one()
    counts: dict[str, int] = {}
    if field.field_type == "multi_select":
        held = [o.id for o in field.ordered_options(include_retired=True)]
        columns = [
            func.sum(case((custom_values.condition(access, field.key, "any_of", [option]), 1), else_=0))
            for option in held
        ]
        empty = custom_values.condition(access, field.key, "empty")
        row = conn.execute(
            select(*columns, func.sum(case((empty, 1), else_=0))).select_from(Customer.__table__).where(*where)
        ).one()
        counts = {option: int(n or 0) for option, n in zip(held, row[:-1], strict=True)}
        counts[EMPTY] = int(row[-1] or 0)
    else:
        expression = custom_values.value_expression(field)
        statement = select(expression, func.count()).select_from(Customer.__table__).where(*where).group_by(expression)
        for value, n in conn.execute(statement):
            if value is None:
                counts[EMPTY] = counts.get(EMPTY, 0) + int(n)
            else:
                name = (
                    ("true" if value in (True, 1, "1", "true") else "false") if field.field_type == "yes_no" else value
                )
                counts[str(name)] = counts.get(str(name), 0) + int(n)
    if field.field_type == "yes_no":
        order = [("true", display(field, True, lang)), ("false", display(field, False, lang))]
    else:
        live = [(o.id, o.label(lang)) for o in field.ordered_options()]
        retired = sorted(
            ((o.id, o.label(lang) + " ×") for o in field.options if o.retired and counts.get(o.id)),
            key=lambda pair: option_sort_key(pair[0]),
        )
        order = live + retired
    order.append((EMPTY, tr(lang, "report.cf_empty")))
    groups = []
    for value, label in order:
        ratio = counts.get(value, 0) / total if total else 0.0
        groups.append(CustomGroup(value, label, counts.get(value, 0), f"{ratio * 100:.1f}%", ratio))
    return groups
