"""Tag-rule conditions on custom fields (issue 23): ``{"field": "cf.<key>", "op": …, "value": …}``.

A condition names the field by its key (a label may change; the key never does)
and takes the operators its type allows (``CUSTOM_OPS``). The value is kept in a
form that survives label changes: a select's option ids, yes/no as a boolean,
numbers, money (yuan), percent and dates as the text the person typed (checked
here, turned into the stored form by ``field_types.sql_bound`` when compiled).

The SQL is the field's value expression (``custom_fields.values``: the stored value
or the field's default, the same expression as its index), so a rule sees what
the list's filter sees.

A rule whose field was retired or deleted since it was saved cannot be compiled:
``missing_fields`` names those fields, ``RuleFieldGone`` is raised when such a
rule is checked, previewed or run (the runs skip it and say so; the rule list
flags it), so it never matches everyone nor takes its tag from everyone.

Sensitive fields (custom ones an admin marked sensitive, and the built-in
``total_spent``): a rule on them narrows customers by a value the person may not
see, so only someone who sees them unmasked (customer.view_sensitive) may preview
or save such a rule (``check_sensitive``: refused and audited otherwise, like the
list's filters). Runs of saved rules are the system's and are not affected.
"""

from __future__ import annotations

import dataclasses
import re

from sqlalchemy import ColumnElement, func

from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.custom_fields.field_types import (
    FIELD_PREFIX,
    FieldDef,
    FieldValueError,
    display,
    is_empty,
    key_of,
    option_label,
    sql_bound,
)
from meiqia_app.services.customers.access import CustomerAccess, is_sensitive
from meiqia_app.services.errors import RuleFieldGone, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, refuse

TEXT_OPS = ("eq", "contains", "empty", "not_empty")
ORDERED_OPS = ("eq", "gt", "gte", "lt", "lte", "between", "empty", "not_empty")
# The operators a rule offers per custom field type (the value's SQL kind decides what compares).
CUSTOM_OPS: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "long_text": ("contains", "empty", "not_empty"),
    "link": TEXT_OPS,
    "phone": TEXT_OPS,
    "email": TEXT_OPS,
    "number": ORDERED_OPS,
    "money": ORDERED_OPS,
    "percent": ORDERED_OPS,
    "date": ORDERED_OPS,
    # a moment compared with days: from the start of the first to the end of the last
    "datetime": ("gte", "lte", "between", "empty", "not_empty"),
    "single_select": ("eq", "in", "empty", "not_empty"),
    "multi_select": ("in", "empty", "not_empty"),
    "yes_no": ("eq", "empty", "not_empty"),
}
VALUELESS_OPS = ("empty", "not_empty")
MAX_TEXT = 64
_RANGE_SPLIT = re.compile(r"\s*(?:,|，|~|～|–|—)\s*")


def is_custom(field_name: object) -> bool:
    return isinstance(field_name, str) and field_name.startswith(FIELD_PREFIX)


def active_field(name: str) -> FieldDef | None:
    """The active custom field named "cf.<key>", or None (unknown, retired, being deleted)."""
    found = custom_field_catalog.catalog().get(key_of(name))
    return found if found is not None and found.active else None


def missing_fields(conditions: object) -> list[str]:
    """The keys of the custom fields ``conditions`` (stored dicts) name that are no longer active."""
    if not isinstance(conditions, (list, tuple)):
        return []
    names = [c.get("field") for c in conditions if isinstance(c, dict) and is_custom(c.get("field"))]
    return list(dict.fromkeys(key_of(n) or "" for n in names if active_field(n) is None))


def _bad(index: int, key: str, **params) -> ValidationError:
    return ValidationError(
        {f"condition_{index}": (key, {"n": index + 1, **params})}, message_key=key, n=index + 1, **params
    )


def clean_custom_value(field: FieldDef, op: str, value: object, index: int) -> object:
    """The condition's value as kept in the rule; raises ValidationError (keyed condition_<index>)."""
    if op in VALUELESS_OPS:
        return None
    try:
        if op == "between":
            parts = value if isinstance(value, (list, tuple)) else _RANGE_SPLIT.split(str(value or "").strip())
            parts = [str(p).strip() for p in parts]
            if len(parts) != 2 or all(not p for p in parts):
                raise _bad(index, "rule.cf_bad_range")
            for part in parts:
                if part:
                    sql_bound(field, part)
            return parts
        if op == "in":
            items = value if isinstance(value, (list, tuple)) else re.split(r"[,，、]", str(value or ""))
            items = [str(item).strip() for item in items if not is_empty(item)]
            if not items or len(items) > custom_values.MAX_ANY_OF:
                raise _bad(index, "rule.bad_choice")
            return sorted({sql_bound(field, item) for item in items})
        if field.field_type == "yes_no":
            bound = sql_bound(field, value)
            return bool(bound)
        if field.field_type == "single_select":
            return sql_bound(field, value)
        text = " ".join(str(value if value is not None else "").split())
        if not text or len(text) > MAX_TEXT:
            raise _bad(index, "rule.bad_text")
        if op != "contains":
            sql_bound(field, text)  # checks numbers, dates, e-mails…
        return text
    except FieldValueError as error:
        raise _bad(index, "rule.cf_bad_value", field=field.labels, reason=error.message_key) from None


def clean_custom_condition(raw: dict, index: int) -> tuple[str, str, object]:
    """(field name, op, value) of a condition on a custom field; RuleFieldGone when the
    field is not active (any more)."""
    name = str(raw.get("field") or "")
    field = active_field(name)
    if field is None:
        raise RuleFieldGone(fields=key_of(name) or name, n=index + 1)
    op = str(raw.get("op") or "")
    if op not in CUSTOM_OPS[field.field_type]:
        raise _bad(index, "rule.bad_operator")
    return field.name, op, clean_custom_value(field, op, raw.get("value"), index)


def compile_custom_condition(field_name: str, op: str, value: object) -> ColumnElement:
    """The SQL of a cleaned condition (the field's value expression, its default included)."""
    field = active_field(field_name)
    if field is None:
        raise RuleFieldGone(fields=key_of(field_name) or field_name, n=1)
    access = CustomerAccess(SYSTEM_ACTOR)  # a rule looks at every value; who may build it: check_sensitive
    key = field.key
    if op in VALUELESS_OPS:
        return custom_values.condition(access, key, op)
    if op == "in":
        return custom_values.condition(access, key, "any_of", list(value))
    if op == "between":
        low, high = value
        return custom_values.condition(access, key, "range", [low or None, high or None])
    if op == "gte":
        return custom_values.condition(access, key, "range", [value, None])
    if op == "lte":
        return custom_values.condition(access, key, "range", [None, value])
    if op == "contains":
        expression = custom_values.value_expression(field, use_index=False)
        return func.lower(expression).contains(str(value).lower(), autoescape=True)
    bound = sql_bound(field, value)
    expression = custom_values.value_expression(field)
    if op == "eq":
        return expression == bound
    if op == "gt":
        return expression > bound
    if op == "lt":
        return expression < bound
    raise ValueError(op)


def check_sensitive(actor: Actor, conditions, saving: bool) -> None:
    """Refuse (audited as rule.save or rule.preview) a rule on a sensitive field for an actor who sees it masked."""
    if CustomerAccess(actor).sees_sensitive:
        return
    hidden = sorted({c.field for c in conditions if is_sensitive(c.field)})
    if hidden:
        refuse(
            actor,
            "rule.save" if saving else "rule.preview",
            "error.hidden_value_filter",
            target_type="tag_rule",
            fields=hidden,
        )


# --- what the rule editor shows ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuleFieldChoice:
    """A custom field as the rule editor offers it: its name, label, type, operators and options."""

    name: str
    label: str
    field_type: str
    ops: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (option id, label), live options only


def rule_field_choices(actor: Actor, lang: str = "zh") -> list[RuleFieldChoice]:
    """The active custom fields ``actor`` may build a rule on (sensitive ones only unmasked), by label."""
    sees = CustomerAccess(actor).sees_sensitive
    return [
        RuleFieldChoice(
            name=f.name,
            label=f.label(lang),
            field_type=f.field_type,
            ops=CUSTOM_OPS[f.field_type],
            options=tuple((o.id, o.label(lang)) for o in f.ordered_options()),
        )
        for f in custom_field_catalog.catalog().active
        if sees or not f.sensitive
    ]


def describe_value(field_name: str, op: str, value: object, lang: str = "zh") -> str:
    """A condition's value as people read it (option labels, not ids; "" without a value)."""
    if op in VALUELESS_OPS or value is None:
        return ""
    found = custom_field_catalog.catalog().get(key_of(field_name))
    items = value if isinstance(value, (list, tuple)) else [value]
    if found is None:
        return ", ".join(str(v) for v in items)
    if op == "between":
        return " ~ ".join(str(v) for v in items)
    if found.field_type in ("single_select", "multi_select"):
        return ", ".join(option_label(found, str(v), lang) for v in items)
    if found.field_type == "yes_no":
        return display(found, bool(value), lang)
    return ", ".join(str(v) for v in items)


def field_label(field_name: str, lang: str = "zh") -> str:
    """The label of a custom field (any status); its key when the field is gone."""
    found = custom_field_catalog.catalog().get(key_of(field_name))
    return found.label(lang) if found is not None else (key_of(field_name) or field_name)
