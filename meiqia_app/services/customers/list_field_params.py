"""Custom field filters given as query parameters (the open API's ``GET /customers``).

The parameters name a field by its KEY (a label rename keeps every client working):

- ``cf.<key>=<value>``: single select: the option id (``o2``); multi select: holds the
  option; yes/no: ``true`` / ``false``; text, phone, e-mail, link: equals; number, money
  (in yuan), percent, date: equals. Repeated, for a select or a text field: any of them.
- ``cf.<key>.min`` / ``cf.<key>.max``: number, money, percent, date, datetime (a datetime
  bound given as a day covers the whole local day); inclusive, either alone.
- ``cf.<key>.empty=true|false``: no value / a value, for every type.

Each becomes one :class:`~meiqia_app.services.customers.query.CustomFilter` of the list
query, checked here by the list's own filter builder (custom_fields/values.condition,
the SQL the list page uses): nothing here writes SQL. Anything wrong is a
ValidationError keyed by the PARAMETER's name (the caller answers 400 naming it): an
unknown or retired key, an unknown suffix, a value the type refuses, an option id that
does not exist, a parameter the type does not take, or two that contradict each other.

A sensitive field can be filtered only with customer.view_sensitive: without it, the
filter is refused (and audited) whatever the value, so that a key cannot probe values it
sees masked (each answer would narrow the hidden value down, like the list's filters).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX, SELECT_TYPES, FieldDef
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.query import (
    MAX_CUSTOM_ANY_OF,
    MAX_CUSTOM_FILTERS,
    MAX_CUSTOM_VALUE_CHARS,
    CustomFilter,
)
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require

SUFFIXES = ("", "min", "max", "empty")
RANGE_TYPES = ("number", "money", "percent", "date", "datetime")
#: Parameters starting with "cf." one request may carry (values of one "any of" included).
MAX_PARAMS = 100
_KEY = re.compile(r"[a-z][a-z0-9_]{1,39}")
_BOOLEANS = {"true": True, "false": False}


@dataclasses.dataclass(frozen=True)
class ParamFilters:
    """The custom field filters of a request's query parameters, checked, one per field."""

    filters: tuple[CustomFilter, ...] = ()  # as ListQuery.from_dict takes them ("custom_filters")


def _bad(param: str, message_key: str = "api.cf_param_value", **params: object) -> ValidationError:
    return ValidationError({param[:80]: (message_key, params)})


def _grouped(items: Iterable[tuple[object, object]]) -> dict[str, dict[str, list[str]]]:
    """{key: {suffix: [values]}} of the "cf." parameters, in the order first given."""
    found: dict[str, dict[str, list[str]]] = {}
    count = 0
    for name, value in items:
        if not isinstance(name, str) or not name.startswith(FIELD_PREFIX):
            continue
        count += 1
        if count > MAX_PARAMS:
            raise _bad(name, "api.cf_param_too_many", max=MAX_PARAMS)
        key, _dot, suffix = name[len(FIELD_PREFIX) :].partition(".")
        if not _KEY.fullmatch(key) or suffix not in SUFFIXES or (_dot and not suffix):
            raise _bad(name, "api.cf_param_unknown")
        text = value if isinstance(value, str) else ""
        if len(text) > MAX_CUSTOM_VALUE_CHARS or "\x00" in text:
            raise _bad(name)
        found.setdefault(key, {}).setdefault(suffix, []).append(text.strip())
        if len(found) > MAX_CUSTOM_FILTERS:
            raise _bad(name, "api.cf_param_too_many_fields", max=MAX_CUSTOM_FILTERS)
    return found


def _once(param: str, values: list[str]) -> str:
    if len(values) != 1:
        raise _bad(param, "api.cf_param_once")
    if not values[0]:
        raise _bad(param)
    return values[0]


def _checked(access: CustomerAccess, param: str, key: str, op: str, value: object) -> None:
    """The list's own filter builder accepts it (else a ValidationError naming ``param``)."""
    try:
        custom_values.condition(access, key, op, value)
    except ValidationError as error:
        message_key, params = next(iter(error.field_errors.values()), ("api.cf_param_value", {}))
        raise _bad(param, message_key, **params) from None


def _equality(access: CustomerAccess, field: FieldDef, values: list[str]) -> CustomFilter:
    param = field.name
    if "equals" not in field.operators and field.field_type not in SELECT_TYPES:
        raise _bad(param, "api.cf_param_not_for_type")
    if any(not v for v in values) or len(values) > MAX_CUSTOM_ANY_OF:
        raise _bad(param)
    if field.field_type in SELECT_TYPES:
        if any(field.option(v) is None for v in values):
            raise _bad(param, "api.cf_param_option", options=", ".join(o.id for o in field.options))
        op = "any_of" if field.field_type == "multi_select" or len(values) > 1 else "equals"
    elif len(values) > 1:
        if "any_of" not in field.operators:
            raise _bad(param, "api.cf_param_once")
        op = "any_of"
    else:
        op = "equals"
    value: object = tuple(dict.fromkeys(values)) if op == "any_of" else values[0]
    if field.field_type == "yes_no":
        if values[0] not in _BOOLEANS:
            raise _bad(param, "api.cf_param_boolean")
        value = _BOOLEANS[values[0]]
    _checked(access, param, field.key, op, list(value) if isinstance(value, tuple) else value)
    return CustomFilter(field.key, op, value)


def _range(access: CustomerAccess, field: FieldDef, given: dict[str, list[str]]) -> CustomFilter:
    bounds: dict[str, str | None] = {"min": None, "max": None}
    for suffix in ("min", "max"):
        if suffix not in given:
            continue
        param = f"{field.name}.{suffix}"
        if field.field_type not in RANGE_TYPES:
            raise _bad(param, "api.cf_param_not_for_type")
        bounds[suffix] = _once(param, given[suffix])
        pair = [bounds[suffix], None] if suffix == "min" else [None, bounds[suffix]]
        _checked(access, param, field.key, "range", pair)
    return CustomFilter(field.key, "range", (bounds["min"], bounds["max"]))


def filters_from_params(actor: Actor, items: Iterable[tuple[object, object]]) -> ParamFilters:
    """The custom field filters of a request's query parameters ((name, value) pairs, every
    parameter of the request: those not starting with "cf." are left alone), checked against
    the definitions for ``actor``. Raises ValidationError keyed by the parameter, or
    PermissionDenied (audited) for a sensitive field without customer.view_sensitive."""
    require(actor, "customer.view", action="customer.list", target_type="customer")
    grouped = _grouped(items)
    if not grouped:
        return ParamFilters()
    access = CustomerAccess(actor)
    filters = []
    for key, given in grouped.items():
        first = f"{FIELD_PREFIX}{key}" + (f".{next(iter(given))}" if next(iter(given)) else "")
        field = custom_field_catalog.field(key)
        if field is None or not field.active:
            raise _bad(first, "api.cf_param_unknown_field", name=key)
        if field.sensitive:
            # Whatever the value: each answer would narrow a value the key sees masked down.
            require(actor, "customer.view_sensitive", action="customer.list", target_type="customer")
        if "empty" in given:
            param = f"{field.name}.empty"
            if len(given) > 1:
                raise _bad(param, "api.cf_param_combined")
            flag = _once(param, given["empty"])
            if flag not in _BOOLEANS:
                raise _bad(param, "api.cf_param_boolean")
            filters.append(CustomFilter(field.key, "empty" if _BOOLEANS[flag] else "not_empty"))
        elif "" in given:
            if len(given) > 1:
                raise _bad(field.name, "api.cf_param_combined")
            filters.append(_equality(access, field, given[""]))
        else:
            filters.append(_range(access, field, given))
    return ParamFilters(tuple(filters))
