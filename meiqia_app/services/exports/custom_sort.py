"""Exports sorted by a custom field ("cf.<key>", the stable key: a label rename keeps a saved
request and a rerun working).

Only sortable fields (those with an index: number, money, percent, date, datetime, single
select, yes/no; services/custom_fields/field_types.INDEX_SHAPE) may sort an export. A single
select sorts by its stored option id, as the list does. The request checks the field
(:func:`check_sort`: active and sortable, else a ValidationError on "sort"; a sensitive field
for a role that sees it masked is refused and audited, as the built-in amount spent is: the
order would rank the hidden values). A field retired or deleted after the request was made
sorts the file by id instead (:func:`present_sort`), as its columns are left out.

Rows with a value come first in the chosen direction, **empty values last** in both
directions. The walk has two legs, each an index range of the field's expression index
(``custom_fields/values.value_expression``, its default included): the rows with a value
in (value, [last active,] id) order, then the empty ones in ([last active,] id) order. Both
legs are keyset pages, so memory stays bounded by the batch like the other sorts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import ColumnElement, Connection, Text, and_, select, tuple_, type_coerce

from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FieldDef, key_of
from meiqia_app.services.custom_fields.values import value_expression
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse

C = Customer.__table__.c
ACTION = "export.request"


def is_custom_sort(name: object) -> bool:
    """Whether ``name`` names a custom field ("cf.<key>"), whatever its state."""
    return isinstance(name, str) and bool(key_of(name))


def sort_field_of(name: object) -> FieldDef | None:
    """The active, sortable custom field ``name`` ("cf.<key>") names, or None."""
    key = key_of(name) if isinstance(name, str) else None
    field = custom_field_catalog.field(key) if key else None
    return field if field is not None and field.active and field.sortable else None


def sortable_names(names: Sequence[str]) -> list[str]:
    """The names among ``names`` an export may be sorted by as custom fields, in their order."""
    return [name for name in names if sort_field_of(name) is not None]


def check_sort(actor: Actor, name: str) -> FieldDef:
    """The field a request sorts by: refused (ValidationError on "sort") unless active and
    sortable; a sensitive one for a role without customer.view_sensitive is refused and audited."""
    field = sort_field_of(name)
    if field is None:
        raise ValidationError.single("sort", "export.error.cf_sort")
    if field.sensitive and not actor.can("customer.view_sensitive"):
        refuse(actor, ACTION, "error.hidden_value_filter", target_type="export", fields=["sort_field"])
    return field


def present_sort(name: str) -> str:
    """The sort of a stored export when it runs: a custom field gone (or no longer sortable) since: "id"."""
    if is_custom_sort(name) and sort_field_of(name) is None:
        return "id"
    return name


def _tail(field: FieldDef) -> list[ColumnElement]:
    """The terms after the value, as in the field's index: last active (selects, yes/no), then id.
    Timestamps are read as the stored text, as the export's other sorts read them."""
    if field.index_shape == "equality":
        return [type_coerce(C.last_active_at, Text), C.id]
    return [C.id]


def walk(
    conn: Connection,
    columns: Sequence,
    conditions: Sequence[ColumnElement],
    field: FieldDef,
    descending: bool,
    batch: int,
) -> Iterator[list]:
    """Keyset batches of raw DBAPI tuples of ``columns`` (plus the sort terms after them) in the
    order of custom field ``field``: values in ``descending`` or ascending order, empty values last."""
    value = value_expression(field)
    tail = _tail(field)
    width = len(columns)
    for with_value in (True, False):
        terms = [value, *tail] if with_value else tail
        selected = [*columns, *(term.label(f"cf_sort_{i}") for i, term in enumerate(terms))]
        leg = value.is_not(None) if with_value else value.is_(None)
        order = [term.desc() if descending else term.asc() for term in terms]
        cursor = None
        while True:
            where = [*conditions, leg]
            if cursor is not None:
                key = tuple_(*terms)
                where.append(key < tuple_(*cursor) if descending else key > tuple_(*cursor))
            statement = (
                select(*selected).select_from(Customer.__table__).where(and_(*where)).order_by(*order).limit(batch)
            )
            result = conn.execute(statement)
            records = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
            if not records:
                break
            cursor = tuple(records[-1][width:])
            yield records
            if len(records) < batch:
                break
