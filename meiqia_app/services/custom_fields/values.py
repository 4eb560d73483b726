"""Customers' custom field values for other services: read (masked), write, filter, sort.

- **Read**: :func:`value_views` turns a customer's stored document into
  display-ready, masked views (the detail page, grouped with
  :func:`grouped`; the edit and new-customer forms); :func:`column_values` does
  the same for a page of rows (list columns). A sensitive field is masked for
  an actor without customer.view_sensitive through ``CustomerAccess.mask``,
  whose one table of sensitive fields holds the custom ones too.
- **Write**: :func:`clean_changes` validates the values a form or an API
  client sent against the definitions (types, options, required, defaults on
  create) and gives the keys to set and remove; services/customers/edit.py
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
import re
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import (
    FieldDef,
    FieldValueError,
    coerce,
    display,
    field_name,
    form_value,
    is_empty,
    key_of,
    sql_bound,
)
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
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
    chosen: list[str]  # a multi select's option ids ([] when masked)
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
        value = effective(field, document)
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
                chosen=[] if masked or not isinstance(form, list) else form,
                masked=masked,
                required=field.required,
                sensitive=field.sensitive,
                options=_choices(field, value, lang),
            )
        )
    return views


def new_customer_views(access: CustomerAccess, lang: str = "zh") -> list[FieldValueView]:
    """The new-customer form's fields, with their defaults filled in."""
    return value_views(access, {}, lang)


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
        result[customer_id] = {
            f.key: str(access.mask(f.name, display(f, effective(f, document), lang))) for f in fields
        }
    return result


# --- writing -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CustomChanges:
    """What an edit does to a customer's document: keys to write (a None value writes JSON
    null: explicitly empty, where the field has a default), keys to take out, and each
    changed field's value before (the default where the key was absent)."""

    sets: dict[str, object] = dataclasses.field(default_factory=dict)
    removes: tuple[str, ...] = ()
    before: dict[str, object] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sets or self.removes)

    def diff(self) -> dict[str, tuple[object, object]]:
        """{"cf.<key>": (before, after)} for the audit entry and the webhook."""
        changed = {field_name(key): (self.before.get(key), value) for key, value in self.sets.items()}
        changed.update({field_name(key): (self.before.get(key), None) for key in self.removes})
        return changed


def clean_changes(
    access: CustomerAccess, raw: object, current: object, *, creating: bool = False, require_all: bool = True
) -> CustomChanges:
    """The change the custom values ``raw`` ({key: input}) make to a customer whose stored
    document is ``current``; raises ValidationError keyed "cf.<key>" (every bad field at once).

    - Only active fields; an unknown or retired key is refused.
    - A field's default is what a customer without the key has: nothing is written for
      it (creating a customer writes only the values given). Clearing a field that has a
      default writes JSON null (explicitly empty); without one, the key goes.
    - A sensitive field the actor sees masked: an empty input keeps the stored value
      (the form offers it empty), as for phone and e-mail.
    - Required: an empty value is refused when the field is sent, and on create when
      it is not sent and has no default (``require_all``: the caller offers every field,
      as the console's form does; a caller that knows no custom fields, such as an
      open API client today, creates customers with the defaults only).
    """
    if raw is None:
        raw = {}
    if not raw and not creating:
        return CustomChanges()
    if not isinstance(raw, dict):
        raise ValidationError.single("custom_fields", "error.bad_choice")
    document = _document(current)
    catalog = custom_field_catalog.catalog()
    errors: dict[str, tuple[str, dict]] = {}
    sets: dict[str, object] = {}
    removes: list[str] = []
    before: dict[str, object] = {}
    for key, given in raw.items():
        field = catalog.get(key if isinstance(key, str) else None)
        if field is None or not field.active:
            errors[f"cf.{str(key)[:40]}"] = ("error.cf_unknown_field", {})
            continue
        old = effective(field, document)
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
                before[field.key] = old
                if field.default is not None:
                    sets[field.key] = None
                else:
                    removes.append(field.key)
        elif value != old or type(value) is not type(old):
            before[field.key] = old
            sets[field.key] = value
    if creating and require_all:
        for field in catalog.active:
            if field.key not in raw and field.required and field.default is None:
                errors[field.name] = ("error.cf_required", {"field": field.labels})
    if errors:
        raise ValidationError(errors)
    return CustomChanges(sets, tuple(removes), before)


def effective(field: FieldDef, document: object) -> object:
    """The field's value for a customer: the stored one (None when explicitly empty), or the
    default when the key is absent."""
    document = _document(document)
    return document[field.key] if field.key in document else field.default


FORM_PREFIX = "cf."
MULTI_MARKER = "_multi"
_FORM_KEY = re.compile(r"[a-z][a-z0-9_]{1,39}")
_OPTION_ID = re.compile(r"o\d{1,6}")
MAX_FORM_FIELDS = 300
MAX_FORM_VALUE = 5000


def values_from_form(form: object) -> dict[str, object]:
    """The custom values of a submitted form (untrusted browser input), for clean_changes:

    - ``cf.<key>``: the field's text (inputs, text areas, selects);
    - ``cf.<key>._multi``: a multi select is on the form (so that no box ticked clears it),
      ``cf.<key>.<option id>`` = "on": that option ticked.

    Anything else is ignored; values are cut to MAX_FORM_VALUE characters.
    """
    if not isinstance(form, dict):
        return {}
    found: dict[str, object] = {}
    multi: dict[str, list[str]] = {}
    for name, value in list(form.items())[: MAX_FORM_FIELDS * 4]:
        if not isinstance(name, str) or not name.startswith(FORM_PREFIX):
            continue
        key, _dot, option = name[len(FORM_PREFIX) :].partition(".")
        if not _FORM_KEY.fullmatch(key):
            continue
        if not option:
            found[key] = "" if value is None else str(value)[:MAX_FORM_VALUE]
        elif option == MULTI_MARKER:
            multi.setdefault(key, [])
        elif _OPTION_ID.fullmatch(option) and value in ("on", "true", True):
            multi.setdefault(key, []).append(option)
    for key, chosen in multi.items():
        found[key] = chosen
    return dict(list(found.items())[:MAX_FORM_FIELDS])


def form_fields(actor: Actor, lang: str = "zh") -> list[FieldValueView]:
    """The new-customer form's custom fields (defaults filled in), for an actor who may create customers."""
    require(actor, "customer.create", action="customer.create", target_type="customer")
    return new_customer_views(CustomerAccess(actor), lang)


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
    """The field's value in SQL, its default included (the same expression as its index)."""
    if field.value_kind is None:
        raise _invalid(field, "error.cf_operator")
    return get_adapter().custom_value(C.custom_fields, field.key, field.value_kind, use_index, field.default)


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
        if field.value_kind is None:
            return _multi_empty(adapter, field, operator == "empty")
        expression = value_expression(field, use_index)
        return expression.is_(None) if operator == "empty" else expression.is_not(None)
    try:
        if operator == "any_of":
            items = value if isinstance(value, (list, tuple)) else [value]
            items = [item for item in items if not is_empty(item)]
            if not items or len(items) > MAX_ANY_OF:
                raise _invalid(field, "error.cf_range")
            bounds = list(dict.fromkeys(sql_bound(field, item) for item in items))
            if field.field_type == "multi_select":
                held = adapter.custom_has_any(C.custom_fields, field.key, bounds)
                if field.default and set(field.default) & set(bounds):
                    return or_(held, ~adapter.custom_has_key(C.custom_fields, field.key))
                return held
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


def _multi_empty(adapter, field: FieldDef, empty: bool) -> ColumnElement:
    """A multi select is empty: no key and no default, or an explicit JSON null."""
    value = adapter.custom_value(C.custom_fields, field.key, "text")
    if not field.default:
        return value.is_(None) if empty else value.is_not(None)
    has_key = adapter.custom_has_key(C.custom_fields, field.key)
    return and_(has_key, value.is_(None)) if empty else or_(value.is_not(None), ~has_key)


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
