"""Custom fields on the customer list (issue 23): filters, the sort, columns.

A list query names a custom field by its KEY (``cf.<key>`` as a sort or a
column, ``{"key", "op", "value"}`` as a filter), never by its label: renaming
a label keeps every saved view, selection and export scope working.

- **Filters** (:class:`CustomFilter`): built from untrusted input with a
  structural check here (key shape, operator, value shape, at most
  MAX_CUSTOM_FILTERS); the field, its operators and the value are checked
  against the definitions when the SQL is built
  (services/custom_fields/values.condition: unknown or retired field, an
  operator the type does not offer, a bad value → ValidationError; a sensitive
  field for a role that sees it masked → refused and audited).
- **Gone fields**: a query kept somewhere (a saved view, the tab's state, an
  export scope) may name a field that was retired or deleted since.
  :func:`without_gone_fields` drops those filters (and such a sort, for the
  default one) so that the list still loads; the list tells the person which
  were ignored.
- **Sort** by a sortable custom field: :func:`sort_terms` (values.order_by:
  value, then last active for selects and yes/no, then id) with keyset cursors
  over the same terms (:func:`encode_sort_cursor`, :func:`after_custom`).
- **Columns**: :func:`column_options` (active fields by label, the default
  ones those "shown in list by default") and :func:`cells` (masked values of a
  page of rows, in the order of the shown columns).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, and_, or_, tuple_

from meiqia_app.i18n import tr
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX, FieldDef, display
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.dto import CustomCell
from meiqia_app.services.customers.query import (
    MAX_CUSTOM_VALUE_CHARS,
    C,
    CustomFilter,
    ListQuery,
    custom_sort_key,
    status_index_condition,
)
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require

MAX_CUSTOM_COLUMNS = 30
DEFAULT_SORT = "last_active_at"


def sort_key_of(sort: object) -> str | None:
    """The field key of a custom sort ("cf.<key>"), or None for a built-in sort."""
    return custom_sort_key(sort)


def conditions(
    access: CustomerAccess,
    filters: Sequence[CustomFilter],
    range_conn: Connection | None = None,
    prior: Sequence[ColumnElement] = (),
) -> list[ColumnElement]:
    """The WHERE conditions of the custom filters (checked against the definitions).

    ``range_conn``: a page in the list's order is read: a range chooses between the
    field's index and the sort index (values.range_condition, given ``prior``: the
    query's other conditions, status first)."""
    result = []
    for item in filters:
        value = list(item.value) if isinstance(item.value, tuple) else item.value
        if item.op == "range" and range_conn is not None:
            result.append(custom_values.range_condition(range_conn, access, [*prior, *result], item.key, value))
        else:
            result.append(custom_values.condition(access, item.key, item.op, value))
    return result


def check(access: CustomerAccess, query: ListQuery) -> None:
    """Everything about the query's custom filters and sort, as the list would build it
    (raises ValidationError / PermissionDenied): for an event that sets them."""
    conditions(access, query.custom_filters)
    key = sort_key_of(query.sort)
    if key is not None:
        custom_values.order_by(access, key, query.direction == "desc")


# --- fields gone since the query was made --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GoneFields:
    """What :func:`without_gone_fields` took out of a query: the fields' keys and how to name them."""

    keys: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def labels(self, lang: str = "zh") -> list[str]:
        """A retired field by its label; a deleted one as "a deleted field" (its key means nothing to people)."""
        catalog = custom_field_catalog.catalog()
        names = []
        for key in self.keys:
            field = catalog.get(key)
            names.append(field.label(lang) if field is not None else tr(lang, "cf_list.deleted_field"))
        return names


def _gone(key: str) -> bool:
    field = custom_field_catalog.field(key)
    return field is None or not field.active


def without_gone_fields(query: ListQuery) -> tuple[ListQuery, GoneFields]:
    """The query without its filters (and sort) on fields no longer active."""
    gone: list[str] = [f.key for f in query.custom_filters if _gone(f.key)]
    changes: dict[str, object] = {}
    if gone:
        changes["custom_filters"] = tuple(f for f in query.custom_filters if f.key not in gone)
    sort_key = sort_key_of(query.sort)
    if sort_key is not None and _gone(sort_key):
        gone.append(sort_key)
        changes.update(sort=DEFAULT_SORT, direction="desc")
    if not changes:
        return query, GoneFields()
    return dataclasses.replace(query, **changes), GoneFields(tuple(dict.fromkeys(gone)))


# --- sorting by a custom field --------------------------------------------------------------------


def sort_field(access: CustomerAccess, query: ListQuery) -> FieldDef | None:
    """The field a query sorts by (None: a built-in sort); checked as values.order_by checks it."""
    key = sort_key_of(query.sort)
    if key is None:
        return None
    custom_values.sort_expression(access, key)
    return custom_field_catalog.field(key)


def sort_value_expression(field: FieldDef) -> ColumnElement:
    return custom_values.value_expression(field)


def has_activity_tail(field: FieldDef) -> bool:
    """Selects and yes/no sort by (value, last active, id): their index's order."""
    return field.index_shape == "equality"


def encode_sort_cursor(value: object, last_active: object, row_id: int) -> str:
    """A cursor of a custom sort: [value, last active (selects, yes/no) or null, id]."""
    moment = last_active.isoformat() if isinstance(last_active, dt.datetime) else None
    raw = json.dumps([value, moment, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_sort_cursor(cursor: str, field: FieldDef) -> tuple[object, dt.datetime | None, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, moment, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if type(row_id) is not int:
            raise ValueError
        if value is not None and not isinstance(value, (int, float, str, bool)):
            raise ValueError
        if isinstance(value, str) and len(value) > MAX_CUSTOM_VALUE_CHARS:
            raise ValueError
        last_active = dt.datetime.fromisoformat(moment) if moment is not None else None
        if has_activity_tail(field) and last_active is None:
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError.single("cursor", "error.bad_cursor") from None
    return value, last_active, row_id


def after_custom(
    field: FieldDef, descending: bool, value: object, last_active: dt.datetime | None, row_id: int, status: str
) -> ColumnElement:
    """Rows strictly after the cursor in the order of values.order_by (empty values last when
    descending, first when ascending). The partial index's condition goes into every branch
    of an OR (see customer_query.keyset_after)."""
    expression = sort_value_expression(field)
    tail = [C.last_active_at, C.id] if has_activity_tail(field) else [C.id]
    at_tail = [last_active, row_id] if has_activity_tail(field) else [row_id]
    index = status_index_condition(status)
    tail_after = tuple_(*tail) < tuple_(*at_tail) if descending else tuple_(*tail) > tuple_(*at_tail)
    if value is None:
        if descending:
            return and_(expression.is_(None), tail_after)
        return or_(and_(expression.is_(None), tail_after, index), and_(expression.is_not(None), index))
    pair, at = tuple_(expression, *tail), tuple_(value, *at_tail)
    if descending:
        return or_(and_(pair < at, index), and_(expression.is_(None), index))
    return pair > at


# --- columns --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FilterOption:
    """A choice a filter or bulk edit offers for a select or yes/no field."""

    value: str
    label: str


@dataclasses.dataclass(frozen=True)
class FieldColumn:
    """An active custom field as the list offers it: column, filter chip, sort, bulk edit."""

    name: str  # "cf.<key>": the column's and sort's name
    key: str
    label: str
    field_type: str
    sortable: bool
    filterable: bool  # false for a sensitive field the actor sees masked
    operators: list[str]
    options: list[FilterOption]
    shown_by_default: bool
    sensitive: bool


def column_options(access: CustomerAccess, lang: str = "zh") -> list[FieldColumn]:
    """Every active field, in the admin's order, with its label in ``lang``."""
    result = []
    for field in custom_field_catalog.catalog().active:
        masked = field.sensitive and not access.sees_sensitive
        if field.field_type == "yes_no":
            options = [FilterOption("true", tr(lang, "common.yes")), FilterOption("false", tr(lang, "common.no"))]
        else:
            options = [FilterOption(o.id, o.label(lang)) for o in field.ordered_options(include_retired=False)]
        result.append(
            FieldColumn(
                name=field.name,
                key=field.key,
                label=field.label(lang),
                field_type=field.field_type,
                sortable=field.sortable and not masked,
                filterable=not masked,
                operators=list(field.operators),
                options=options,
                shown_by_default=field.shown_in_list,
                sensitive=field.sensitive,
            )
        )
    return result


def clean_column_names(names: Sequence[object]) -> list[str]:
    """The "cf.<key>" names of active fields among ``names``, in the admin's order."""
    wanted = {str(n) for n in list(names)[:200] if isinstance(n, str) and n.startswith(FIELD_PREFIX)}
    return [f.name for f in custom_field_catalog.catalog().active if f.name in wanted][:MAX_CUSTOM_COLUMNS]


def default_column_names() -> list[str]:
    return [f.name for f in custom_field_catalog.catalog().active if f.shown_in_list][:MAX_CUSTOM_COLUMNS]


def cells(
    access: CustomerAccess, records: Sequence, names: Sequence[str], lang: str = "zh"
) -> dict[int, list[CustomCell]]:
    """{customer id: cells of the shown custom columns}, masked like the detail page masks them."""
    catalog = custom_field_catalog.catalog()
    fields = [f for f in (catalog.by_name(n) for n in names) if f is not None and f.active]
    if not fields:
        return {}
    result = {}
    for record in records:
        document = getattr(record, "custom_fields", None)
        document = document if isinstance(document, dict) else {}
        result[record.id] = [
            CustomCell(
                f.name,
                f.label(lang),
                str(access.mask(f.name, display(f, custom_values.effective(f, document), lang))),
            )
            for f in fields
        ]
    return result


@dataclasses.dataclass(frozen=True)
class ListSetup:
    """What the list page needs of the custom fields: the active ones (columns, filters,
    sort) and the columns shown before anyone chose."""

    fields: list[FieldColumn]
    default_columns: list[str]


def list_setup(actor: Actor, lang: str = "zh") -> ListSetup:
    require(actor, "customer.view", action="customer.list")
    from meiqia_app.services.customers.saved_views import default_columns  # saved_views imports this module

    return ListSetup(column_options(CustomerAccess(actor), lang), default_columns())


def check_query(actor: Actor, query: ListQuery) -> None:
    """A query's custom filters and sort as the list would build them for ``actor``: raises
    ValidationError (unknown field, operator, bad value) or PermissionDenied (audited: a
    field the actor sees masked). For the event that sets them, before anything is kept."""
    require(actor, "customer.view", action="customer.list")
    check(CustomerAccess(actor), query)
