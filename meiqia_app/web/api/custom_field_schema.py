"""The ``CustomFields`` schema of the OpenAPI document, made from the live field definitions.

Each active custom field is a property named by its key, with its JSON type
(services/custom_fields/records.py says which), the options' ids as an enum
for selects (retired ones included: a customer may still hold one) and its
labels, group, type and rules as the description. Retired and deleted fields
are not in it, and other keys are refused (``additionalProperties: false``).

The document is made again when the definitions change: ``fingerprint`` is
compared at every request for it (the definitions are cached for two seconds
per process, services/custom_fields/catalog.py, so another worker's change
shows within that time too).
"""

from __future__ import annotations

from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FieldDef

SCHEMA_NAME = "CustomFields"
REF = f"#/components/schemas/{SCHEMA_NAME}"

_TYPES: dict[str, dict] = {
    "text": {"type": ["string", "null"], "maxLength": 255},
    "long_text": {"type": ["string", "null"], "maxLength": 4000},
    "number": {"type": ["number", "null"]},
    "money": {"type": ["number", "null"]},
    "percent": {"type": ["number", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
    "yes_no": {"type": ["boolean", "null"]},
    "link": {"type": ["string", "null"], "maxLength": 2048},
    "phone": {"type": ["string", "null"]},
    "email": {"type": ["string", "null"]},
}
_READS = {
    "money": "in yuan (12.3 = ¥12.30)",
    "percent": "in percent (12.5 = 12.5 %)",
    "date": "YYYY-MM-DD",
    "datetime": "ISO 8601 UTC; a time without offset is read as the app's local time",
    "single_select": "an option id (a label is accepted when writing)",
    "multi_select": "option ids (labels are accepted when writing)",
}


def fingerprint() -> str:
    """Changes whenever a definition the schema shows changes."""
    return repr(custom_field_catalog.catalog().active)


def _description(field: FieldDef) -> str:
    parts = [field.label_zh + (f" / {field.label_en}" if field.label_en else "")]
    group = field.group_zh + (f" / {field.group_en}" if field.group_en else "")
    if group:
        parts.append(f"group: {group}")
    kind = field.field_type + (f", {_READS[field.field_type]}" if field.field_type in _READS else "")
    parts.append(f"type: {kind}")
    if field.options:
        parts.append(
            "options: "
            + "; ".join(
                f"{o.id} = {o.zh}" + (f" / {o.en}" if o.en else "") + (" (retired)" if o.retired else "")
                for o in field.ordered_options(include_retired=True)
            )
        )
    if field.required:
        parts.append("required")
    if field.default is not None:
        parts.append("has a default")
    if field.sensitive:
        parts.append("sensitive: masked without customers:read_sensitive (listed in masked_fields)")
    return ". ".join(parts) + "."


def property_schema(field: FieldDef) -> dict:
    option_ids = [o.id for o in field.ordered_options(include_retired=True)]
    if field.field_type == "single_select":
        schema: dict = {"type": ["string", "null"], "enum": [*option_ids, None]}
    elif field.field_type == "multi_select":
        schema = {"type": ["array", "null"], "items": {"type": "string", "enum": option_ids}, "uniqueItems": True}
    else:
        schema = dict(_TYPES[field.field_type])
    return {"title": field.label_en or field.label_zh, "description": _description(field), **schema}


def custom_fields_schema() -> dict:
    fields = custom_field_catalog.catalog().active
    return {
        "type": "object",
        "title": SCHEMA_NAME,
        "description": (
            "The custom fields an admin defined (/admin/fields), by key: each customer has every "
            "active field (null when empty). Writes change the keys given (PATCH semantics; null "
            "clears); an unknown or retired key is refused (422, field `custom_fields.<key>`)."
        ),
        "properties": {field.key: property_schema(field) for field in fields},
        "additionalProperties": False,
    }


# --- filter parameters of GET /customers (services/customers/list_field_params.py) ----------------

_TEXT_FILTER = ("text", "link", "phone", "email")
_RANGE_SCHEMAS: dict[str, dict] = {
    "number": {"type": "number"},
    "money": {"type": "number"},
    "percent": {"type": "number"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "maxLength": 40},
}
_SENSITIVE_NOTE = " Sensitive: needs customers:read_sensitive (403 without it, whatever the value)."


def _parameter(name: str, schema: dict, description: str, field: FieldDef) -> dict:
    note = _SENSITIVE_NOTE if field.sensitive else ""
    label = field.label_zh + (f" / {field.label_en}" if field.label_en else "")
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": f"{label} ({field.field_type}): {description}.{note}",
    }


def _equality_parameter(field: FieldDef) -> dict | None:
    kind = field.field_type
    option_ids = [o.id for o in field.ordered_options(include_retired=True)]
    if kind == "single_select":
        schema = {"type": "array", "items": {"type": "string", "enum": option_ids}, "maxItems": 50}
        text = "equals this option id; repeated: any of them"
    elif kind == "multi_select":
        schema = {"type": "array", "items": {"type": "string", "enum": option_ids}, "maxItems": 50}
        text = "holds this option id; repeated: holds any of them"
    elif kind == "yes_no":
        schema, text = {"type": "boolean"}, "true or false"
    elif kind == "text":
        schema = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 50}
        text = "equals this text; repeated: any of them"
    elif kind in _TEXT_FILTER:
        schema, text = {"type": "string", "minLength": 1, "maxLength": 200}, "equals"
    elif kind in ("number", "money", "percent", "date"):
        schema = dict(_RANGE_SCHEMAS[kind])
        text = "equals" + (f", {_READS[kind]}" if kind in _READS else "")
    else:
        return None  # long text, datetime: empty / not empty (and ranges for a datetime) only
    return _parameter(field.name, schema, text, field)


def filter_parameters() -> list[dict]:
    """The query parameters ``GET /customers`` takes for the active custom fields, by key."""
    found = []
    for field in custom_field_catalog.catalog().active:
        equality = _equality_parameter(field)
        if equality is not None:
            found.append(equality)
        if field.field_type in _RANGE_SCHEMAS:
            reads = _READS.get(field.field_type, "")
            if field.field_type == "datetime":
                reads = "YYYY-MM-DD (the whole local day) or an ISO 8601 time"
            for suffix, text in (("min", "at least"), ("max", "at most")):
                description = f"{text} (inclusive)" + (f", {reads}" if reads else "")
                found.append(
                    _parameter(f"{field.name}.{suffix}", dict(_RANGE_SCHEMAS[field.field_type]), description, field)
                )
        found.append(
            _parameter(f"{field.name}.empty", {"type": "boolean"}, "true: no value; false: has a value", field)
        )
    return found
