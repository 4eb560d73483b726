"""Customers' custom field values for other services: read (masked), write, filter, sort.

- **Read**: :func:`value_views` turns a customer's stored document into
  display-ready, masked views (the detail page, grouped with
  :func:`grouped`; the edit and new-customer forms); :func:`column_values` does
  the same for a page of rows (list columns). A sensitive field is masked for
  an actor without customer.view_sensitive through ``CustomerAccess.mask``,
  whose one table of sensitive fields holds the custom ones too.
- **Write**: :func:`clean_changes` validates the values a form or an API
  client sent against the definitions (types, options, required, defaults on
  create) and gives the keys to set and remove; services/customer_edit.py
  applies them inside its versioned UPDATE as a patch of the stored document
  (dbadapter ``custom_patch``) and audits them with the customer's other changes.
- **Filter and sort** (for customer_query): :func:`condition` (equals, any of,
  range, empty, not empty), :func:`range_condition` (a range that chooses
  between the field's index and the sort index), :func:`sort_expression` and
  :func:`order_by`.

Only active fields are read, written, filtered or sorted: a retired field's
values stay in the document, untouched and unseen, until it is restored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Connection, and_, func, select

from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer
from meiqia_app.services import custom_field_catalog
from meiqia_app.services.custom_field_types import (
    FieldDef,
    FieldValueError,
    coerce,
    display,
    form_value,
    is_empty,
    key_of,
    sql_bound,
)
from meiqia_app.services.customer_access import CustomerAccess
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.rbac import refuse
from meiqia_app.timeutil import local_day_start_utc

C = Customer.__table__.c
MAX_ANY_OF = 50
# A range matching at most this many customers is read through the field's index and
# sorted; a wider one walks the sort index and checks each row (see range_condition).
RANGE_CANDIDATE_CAP = 6_000
# The action a refused filter or sort on a masked field is audited as (the list's).
FILTER_ACTION = "customer.list"


@dataclasses.dataclass
class OptionChoice:
    id: str
    label: str


@dataclasses.dataclass
class FieldValueView:
    """One custom field of one customer, as a page shows and edits it (masked as the actor sees it)."""

    key: str
    name: str
    label: str
    group: str
    field_type: str
    display: str
    value: str  # the form's text ("" when masked)
    values: list[str]  # a multi select's option ids ([] when masked)
    masked: bool
    required: bool
    sensitive: bool
    options: list[OptionChoice]


@dataclasses.dataclass
class FieldGroupView:
    name: str
    fields: list[FieldValueView]


def active_fields() -> tuple[FieldDef, ...]:
    return custom_field_catalog.catalog().active


def _document(stored: object) -> dict:
    return stored if isinstance(stored, dict) else {}


def _choices(field: FieldDef, value: object, lang: str) -> list[OptionChoice]:
    """The options a form offers: the live ones, and a retired one the customer still holds."""
    held = set(value if isinstance(value, list) else [value] if value else [])
    return [
        OptionChoice(o.id, o.label(lang) + ("" if not o.retired else " ×"))
        for o in field.ordered_options(include_retired=True)
        if not o.retired or o.id in held
    ]


def value_views(
    access: CustomerAccess, stored: object, lang: str = "zh", fields: Sequence[FieldDef] | None = None
) -> list[FieldValueView]:
    """Every active field with the customer's value (``stored``: the customer's document;
    ``{}`` for a new customer, whose form shows the defaults)."""
    document = _document(stored)
    views = []
    for field in active_fields() if fields is None else fields:
        value = document.get(field.key)
        shown = display(field, value, lang)
        masked_text = access.mask(field.name, shown)
        masked = value is not None and masked_text != shown
        form = form_value(field, value)
        views.append(
            FieldValueView(
                key=field.key,
                name=field.name,
                label=field.label(lang),
                group=field.group(lang),
                field_type=field.field_type,
                display=str(masked_text),
                value="" if masked or isinstance(form, list) else form,
                values=[] if masked or not isinstance(form, list) else form,
                masked=masked,
                required=field.required,
                sensitive=field.sensitive,
                options=_choices(field, value, lang),
            )
        )
    return views


def new_customer_views(access: CustomerAccess, lang: str = "zh") -> list[FieldValueView]:
    """The new-customer form's fields, with their defaults filled in."""
    defaults = {f.key: f.default for f in active_fields() if f.default is not None}
    return value_views(access, defaults, lang)


def grouped(views: Iterable[FieldValueView], ungrouped: str = "") -> list[FieldGroupView]:
    """Views by group, groups in the order their first field comes (fields are in the admin's order)."""
    groups: dict[str, list[FieldValueView]] = {}
    for view in views:
        groups.setdefault(view.group or ungrouped, []).append(view)
    return [FieldGroupView(name, fields) for name, fields in groups.items()]


def column_values(
    access: CustomerAccess, documents: dict[int, object], keys: Sequence[str], lang: str = "zh"
) -> dict[int, dict[str, str]]:
    """{customer id: {key: shown value}} for list columns (a page of rows), masked as the actor sees them."""
    catalog = custom_field_catalog.catalog()
    fields = [f for f in (catalog.get(k) for k in keys) if f is not None and f.active]
    result = {}
    for customer_id, stored in documents.items():
        document = _document(stored)
        result[customer_id] = {f.key: str(access.mask(f.name, display(f, document.get(f.key), lang))) for f in fields}
    return result


# --- writing -----------------------------------------------------------------------------------


def clean_changes(
    access: CustomerAccess, raw: object, current: object, *, creating: bool = False, require_all: bool = True
) -> tuple[dict[str, object], list[str]]:
    """(values to set, keys to remove) for the custom values ``raw`` ({key: input}) sent
    for a customer whose stored document is ``current``; raises ValidationError keyed
    "cf.<key>" (every bad field at once).

    - Only active fields; an unknown or retired key is refused.
    - A sensitive field the actor sees masked: an empty input keeps the stored value
      (the form offers it empty), as for phone and e-mail.
    - Required: an empty value is refused when the field is sent, and on create when
      it is not sent and has no default (``require_all``: the caller offers every field,
      as the console's form does; a caller that knows no custom fields, such as an
      open API client today, creates customers with the defaults only).
      ``creating``: fields not sent get their default.
    """
    if raw is None:
        raw = {}
    if not raw and not creating:
        return {}, []
    if not isinstance(raw, dict):
        raise ValidationError.single("custom_fields", "error.bad_choice")
    document = _document(current)
    catalog = custom_field_catalog.catalog()
    errors: dict[str, tuple[str, dict]] = {}
    sets: dict[str, object] = {}
    removes: list[str] = []
    for key, given in raw.items():
        field = catalog.get(key if isinstance(key, str) else None)
        if field is None or not field.active:
            errors[f"cf.{str(key)[:40]}"] = ("error.cf_unknown_field", {})
            continue
        old = document.get(field.key)
        if old is not None and is_empty(given) and not access.sees_sensitive and field.sensitive:
            continue  # shown masked, sent empty: keep
        try:
            value = coerce(field, given, old)
        except FieldValueError as error:
            errors[field.name] = (error.message_key, error.params)
            continue
        if value is None:
            if field.required:
                errors[field.name] = ("error.cf_required", {"field": field.labels})
            elif old is not None:
                removes.append(field.key)
        elif value != old or type(value) is not type(old):
            sets[field.key] = value
    if creating:
        for field in catalog.active:
            if field.key in raw:
                continue
            if field.default is not None:
                sets[field.key] = field.default
            elif field.required and require_all:
                errors[field.name] = ("error.cf_required", {"field": field.labels})
    if errors:
        raise ValidationError(errors)
    return sets, removes


def defaults() -> dict[str, object]:
    """The active fields' defaults: what a customer created without values starts with."""
    return {f.key: f.default for f in active_fields() if f.default is not None}


def apply(document: object, sets: dict[str, object], removes: Sequence[str]) -> dict:
    """The document after a change (what the database's patch gives, in Python)."""
    result = dict(_document(document))
    result.update(sets)
    for key in removes:
        result.pop(key, None)
    return result


# --- filtering and sorting ------------------------------------------------------------------------


def _filterable(access: CustomerAccess, key: object) -> FieldDef:
    field = custom_field_catalog.field(str(key)) if isinstance(key, str) else None
    if field is None or not field.active:
        raise ValidationError.single(f"cf.{str(key)[:40]}", "error.cf_unknown_field")
    if field.sensitive and not access.sees_sensitive:
        # Each answer would narrow a value the actor sees masked down (like the amount spent).
        refuse(access.actor, FILTER_ACTION, "error.hidden_value_filter", target_type="customer", fields=[field.name])
    return field


def _invalid(field: FieldDef, message_key: str) -> ValidationError:
    return ValidationError({field.name: (message_key, {"field": field.labels})})


def value_expression(field: FieldDef, use_index: bool = True) -> ColumnElement:
    adapter = get_adapter()
    return adapter.custom_value(C.custom_fields, field.key, field.value_kind or "text", use_index)


def _bounds(field: FieldDef, value: object) -> tuple[object, object, bool]:
    """(low, high, high is exclusive) of a range; either may be None. A datetime range given
    in days covers whole local days."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _invalid(field, "error.cf_range")
    low_raw, high_raw = value
    exclusive = False
    low = high = None
    try:
        if field.field_type == "datetime":
            if not is_empty(low_raw):
                low = _moment_bound(field, low_raw, start=True)
            if not is_empty(high_raw):
                high, exclusive = _moment_bound(field, high_raw, start=False), _is_day(high_raw)
        else:
            low = None if is_empty(low_raw) else sql_bound(field, low_raw)
            high = None if is_empty(high_raw) else sql_bound(field, high_raw)
    except FieldValueError as error:
        raise ValidationError({field.name: (error.message_key, error.params)}) from None
    if low is None and high is None:
        raise _invalid(field, "error.cf_range")
    return low, high, exclusive


def _is_day(raw: object) -> bool:
    if isinstance(raw, dt.date):
        return not isinstance(raw, dt.datetime)
    return isinstance(raw, str) and len(raw.strip()) == 10


def _moment_bound(field: FieldDef, raw: object, start: bool) -> str:
    if _is_day(raw):
        try:
            day = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw))
        except ValueError:
            raise FieldValueError(field, "error.cf_date") from None
        moment = local_day_start_utc(day if start else day + dt.timedelta(days=1))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return sql_bound(field, raw)


def condition(
    access: CustomerAccess,
    key: str,
    operator: str,
    value: object = None,
    *,
    use_index: bool = True,
) -> ColumnElement:
    """A WHERE condition on custom field ``key`` for ``access``'s actor:

    - ``equals``: ``value`` (an option id or label for a select, yuan for money);
    - ``any_of``: a list of values (a multi select: holds any of these options);
    - ``range``: ``[low, high]``, inclusive, either may be empty (a datetime range
      given as days covers the whole of the last day);
    - ``empty`` / ``not_empty``.

    A sensitive field for an actor who sees it masked is refused and audited
    (as ``customer.list``), like the filter on the amount spent. Raises ValidationError for an
    unknown or retired field, an operator the type does not offer, or a bad value.
    """
    field = _filterable(access, key)
    if operator not in field.operators:
        raise _invalid(field, "error.cf_operator")
    adapter = get_adapter()
    if operator in ("empty", "not_empty"):
        expression = adapter.custom_value(C.custom_fields, field.key, field.value_kind or "text", use_index)
        return expression.is_(None) if operator == "empty" else expression.is_not(None)
    try:
        if operator == "any_of":
            items = value if isinstance(value, (list, tuple)) else [value]
            items = [item for item in items if not is_empty(item)]
            if not items or len(items) > MAX_ANY_OF:
                raise _invalid(field, "error.cf_range")
            bounds = list(dict.fromkeys(sql_bound(field, item) for item in items))
            if field.field_type == "multi_select":
                return adapter.custom_has_any(C.custom_fields, field.key, bounds)
            return value_expression(field, use_index).in_(bounds)
        if operator == "equals":
            return value_expression(field, use_index) == sql_bound(field, value)
    except FieldValueError as error:
        raise ValidationError({field.name: (error.message_key, error.params)}) from None
    low, high, exclusive = _bounds(field, value)
    expression = value_expression(field, use_index)
    parts = []
    if low is not None:
        parts.append(expression >= low)
    if high is not None:
        parts.append(expression < high if exclusive else expression <= high)
    return and_(*parts)


def range_condition(
    conn: Connection,
    access: CustomerAccess,
    conditions: Sequence[ColumnElement],
    key: str,
    value: object,
) -> ColumnElement:
    """A range for a page in the list's order (not the field's): counts the matches
    through the field's index up to RANGE_CANDIDATE_CAP; few matches are read by that
    index and sorted, many are found by walking the sort index and checking each row
    (a wide range fills a page within a few hundred rows). SQLite's planner cannot
    tell the two apart itself (it has no range statistics); PostgreSQL's can, and is
    given the same condition either way.

    ``conditions``: the page's other conditions (status and reach first)."""
    indexed = condition(access, key, "range", value)
    probe = select(func.count()).select_from(
        select(C.id).where(and_(*conditions, indexed)).limit(RANGE_CANDIDATE_CAP + 1).subquery()
    )
    if conn.execute(probe).scalar_one() <= RANGE_CANDIDATE_CAP:
        return indexed
    return condition(access, key, "range", value, use_index=False)


def sort_expression(access: CustomerAccess, key: str) -> ColumnElement:
    """The value a sort by custom field ``key`` orders by (only indexed types are sortable)."""
    field = _filterable(access, key)
    if not field.sortable:
        raise _invalid(field, "error.cf_operator")
    return value_expression(field)


def order_by(access: CustomerAccess, key: str, descending: bool) -> list:
    """ORDER BY terms for a sort by custom field ``key``, in its index's order: (value,
    last active, id) for selects and yes/no, (value, id) for the others. Empty values
    come last when descending and first when ascending, on both databases (as the
    built-in nullable sorts: customer_query.order_by)."""
    field = _filterable(access, key)
    if not field.sortable:
        raise _invalid(field, "error.cf_operator")
    value = value_expression(field)
    tail = [C.last_active_at, C.id] if field.index_shape == "equality" else [C.id]
    if descending:
        return [value.desc().nulls_last(), *(column.desc() for column in tail)]
    return [value.asc().nulls_first(), *(column.asc() for column in tail)]


def field_of_name(name: str) -> FieldDef | None:
    """The active field named "cf.<key>", or None."""
    field = custom_field_catalog.field(key_of(name) or "")
    return field if field is not None and field.active else None
