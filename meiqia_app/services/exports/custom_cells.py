"""Custom fields (issue 23) in export rows: each type's cell in the Python-built rows
(``custom_cell``) and its column in the database-built ones (``custom_sql_column``).

Both give the same file (tests/unit/test_export_custom_fields.py compares them): numbers,
money and percents as numbers (XLSX number formats "General", "#,##0.00", "0.00%"), dates
and local times as date cells, yes/no as the export language's words, selects as their
option labels; a multi select (its labels joined in option order) is Python's only.
"""

from __future__ import annotations

import datetime as dt

from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import ExportColumn
from meiqia_app.services.custom_fields.field_types import FieldDef, option_sort_key
from meiqia_app.services.custom_fields.values import value_expression

#: Custom field types the database can write into an export row itself (a multi select's
#: labels are joined in Python).
SQL_CUSTOM_TYPES = frozenset(
    {"text", "long_text", "link", "phone", "email", "number", "money", "percent", "date", "datetime"}
    | {"single_select", "yes_no"}
)


def custom_sql_column(field: FieldDef, lang: str) -> ExportColumn:
    """A custom field's column of a database-built row: its value expression (the default
    included, services/custom_fields/values.value_expression) written as its type."""
    value = get_adapter().inline_sql(value_expression(field))
    kind = field.field_type
    if kind == "single_select":
        return ExportColumn("coded", value, tuple((o.id, o.label(lang)) for o in field.options))
    if kind == "datetime":
        # Stored "YYYY-MM-DDTHH:MM:SSZ": the built-in columns' "YYYY-MM-DD HH:MM:SS" (UTC).
        return ExportColumn("datetime", f"replace(replace({value}, 'T', ' '), 'Z', '')")
    found = {"number": "number", "percent": "percent", "money": "money_or_empty", "date": "date"}
    found["yes_no"] = "bool_or_empty"
    return ExportColumn(found.get(kind, "text"), value)


def custom_cell(field: FieldDef, lang: str, local_time, datetimes_as_text: bool = False):
    """A function: a custom field's stored value (not None) -> its export cell value.

    number / percent: int or float (a percent as its fraction: 12.5 % -> 0.125, shown by
    the XLSX "0.00%" format; CSV writes it back as "12.5%"); money: yuan as a float with
    two decimals; date: ``date``; datetime: naive local ``datetime`` (or its text for CSV);
    yes/no: bool (the writers say 是/否 or Yes/No in the export's language); selects: their
    option labels (multi: joined in option order); anything else as text. A value that
    does not fit its type (written by hand) is written as text."""
    kind = field.field_type
    if kind in ("number", "percent", "money"):
        scale = {"number": None, "percent": 100, "money": 100}[kind]

        def number(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return str(value)
            if scale is None:
                return value
            return round(value / scale, 2) if kind == "money" else value / scale

        if datetimes_as_text and kind == "percent":
            # CSV: the percent as people write it ("12.5%"), not a fraction that would need rounding back.
            return lambda value: percent_text(value) if isinstance(value, (int, float)) else str(value)
        return number
    if kind == "date":

        def day(value):
            try:
                return dt.date.fromisoformat(str(value))
            except ValueError:
                return str(value)

        return day
    if kind == "datetime":

        def moment(value):
            text = str(value)
            stored = text.replace("T", " ").removesuffix("Z")
            try:
                return local_time.text(stored) if datetimes_as_text else local_time(stored)
            except ValueError:
                return text

        return moment
    if kind == "yes_no":
        return lambda value: value if isinstance(value, bool) else str(value)
    if kind in ("single_select", "multi_select"):
        labels = {o.id: o.label(lang) for o in field.options}
        order = {o.id: (o.order, option_sort_key(o.id)) for o in field.options}
        separator = "、" if lang != "en" else ", "

        def chosen(value):
            if isinstance(value, list):
                ids = sorted((str(i) for i in value), key=lambda i: order.get(i, (1 << 30, option_sort_key(i))))
                return separator.join(labels.get(i, i) for i in ids)
            return labels.get(str(value), str(value))

        return chosen
    return lambda value: value if value.__class__ is str else str(value)


def percent_text(value: float) -> str:
    """A percent in percent units as text: 12.5 -> "12.5%", 30 -> "30%"."""
    text = repr(value) if isinstance(value, float) else str(value)
    return (text[:-2] if text.endswith(".0") else text) + "%"
