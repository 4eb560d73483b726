"""Custom fields on /customers (issue 23): what the list's state makes of its forms and chips.

Pure helpers for ``CustomerListState``: a filter form → one custom filter
(``{"key", "op", "value"}``, checked afterwards by ListQuery.from_dict and
services/customers/list_fields.check_query), a filter → its chip's text (the
field's label and the options' labels, never a key), the bulk edit form → the
raw value. Fields are ``list_fields.FieldColumn`` (as services give them).
"""

from __future__ import annotations

from collections.abc import Sequence

from meiqia_app.i18n import tr
from meiqia_app.services.customers.list_fields import FieldColumn

MAX_INPUT = 200
RANGE_TYPES = ("number", "money", "percent", "date", "datetime")


def field_of(fields: Sequence[FieldColumn], name_or_key: object) -> FieldColumn | None:
    """The field named "cf.<key>" (or by its key) among ``fields``."""
    if not isinstance(name_or_key, str):
        return None
    return next((f for f in fields if name_or_key in (f.name, f.key)), None)


def _text(form: dict, name: str) -> str:
    return str(form.get(name, "") or "").strip()[:MAX_INPUT]


def ticked_options(field: FieldColumn, form: dict) -> list[str]:
    return [o.value for o in field.options if form.get(f"opt:{o.value}") in ("on", True, "true")]


def filter_from_form(field: FieldColumn, op: object, form: dict) -> dict:
    """One custom filter from the filter dialog's form (shapes only; the service checks the rest)."""
    if op not in field.operators:
        op = "invalid"  # refused by ListQuery.from_dict with a clear message
    if op in ("empty", "not_empty"):
        return {"key": field.key, "op": op}
    if op == "range":
        return {"key": field.key, "op": op, "value": [_text(form, "low"), _text(form, "high")]}
    if op == "any_of":
        if field.options:
            chosen: list[str] = ticked_options(field, form)
        else:
            chosen = [part.strip() for part in _text(form, "value").replace("，", ",").split(",") if part.strip()]
        return {"key": field.key, "op": op, "value": chosen}
    return {"key": field.key, "op": op, "value": _text(form, "value")}


def _value_label(field: FieldColumn, value: object) -> str:
    labels = {o.value: o.label for o in field.options}
    if field.field_type == "yes_no":
        return labels.get(str(value).lower(), str(value))
    return labels.get(str(value), str(value))


def chip_text(lang: str, field: FieldColumn | None, item: dict, fallback: str = "") -> str:
    """A custom filter's chip: "会员来源：门店、官网", "积分：10 ~ 100", "生日：为空"."""
    label = field.label if field is not None else fallback
    op, value = item.get("op"), item.get("value")
    if op == "empty":
        return tr(lang, "cf_list.chip_empty", field=label)
    if op == "not_empty":
        return tr(lang, "cf_list.chip_not_empty", field=label)
    if op == "range" and isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (str(v) if v not in (None, "") else "…" for v in value)
        return tr(lang, "cf_list.chip_range", field=label, low=low, high=high)
    values = value if isinstance(value, (list, tuple)) else [value]
    shown = "、".join(_value_label(field, v) if field is not None else str(v) for v in values)
    return tr(lang, "cf_list.chip_value", field=label, value=shown)


def bulk_value_from_form(field: FieldColumn, form: dict) -> object:
    """The bulk edit form's value for ``field``: ticked options for a multi select, else the text."""
    if field.field_type == "multi_select":
        return ticked_options(field, form)
    return str(form.get("value", "") or "")[: MAX_INPUT * 20]
