"""Custom fields (issue 23) in an import: columns mapped to "cf.<key>", each cell checked by
its field's type (the same rules as the edit form: custom_fields/field_types.coerce), and for
select fields the options a file names that do not exist yet, created on the fly when the
importer asked for it and may manage fields (``field.manage``); otherwise an unknown option
is a row error like any bad value.

A sensitive custom field is importable only by a role that sees (and so edits) such values
in clear, ``customer.view_sensitive``, as an edit of a masked value would be refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import definitions as custom_field_definitions
from meiqia_app.services.custom_fields.field_types import SELECT_TYPES, FieldDef, FieldValueError, coerce, key_of
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse

#: How a multi-select cell separates its options (the same separators the type accepts).
LIST_SEPARATORS = re.compile(r"[,，、;；\n]")
#: New options one import may create per field (a file of free text in a select column stops here).
MAX_NEW_OPTIONS = 50


def field_of(name: str) -> FieldDef | None:
    """The active custom field named "cf.<key>", or None."""
    key = key_of(name)
    found = custom_field_catalog.field(key) if key else None
    return found if found is not None and found.active else None


def header_names(field: FieldDef) -> tuple[str, ...]:
    """What a header may say to be this field's column: its label in either language or its key."""
    return tuple(n for n in (field.label_zh, field.label_en, field.key, field.name) if n)


def active_fields() -> tuple[FieldDef, ...]:
    return custom_field_catalog.catalog().active


def check_mapped(actor: Actor | None, fields: Iterable[str]) -> None:
    """Refuse (audited) a sensitive custom field for an importer who does not see such values in clear."""
    if actor is None:
        return
    sensitive = [f for f in fields if (found := field_of(f)) is not None and found.sensitive]
    if sensitive and not actor.can("customer.view_sensitive"):
        refuse(actor, "customer.import", "import.cf_sensitive_refused", target_type="customer", fields=sensitive)


def unmapped_required(fields: Iterable[str]) -> tuple[FieldDef, ...]:
    """The active required custom fields without a default that no column of ``fields`` fills:
    every customer the import makes would lack them."""
    mapped = {f for f in fields if isinstance(f, str)}
    return tuple(f for f in active_fields() if f.required and f.default is None and f.name not in mapped)


def check_required_mapped(fields: Iterable[str]) -> None:
    """Refuse a mapping that leaves a required custom field (without a default) unmapped:
    ValidationError on "mapping" naming the fields by label, in both languages."""
    missing = unmapped_required(fields)
    if missing:
        labels = {"zh": "、".join(f.label("zh") for f in missing), "en": ", ".join(f.label("en") for f in missing)}
        raise ValidationError.single("mapping", "import.cf_required_unmapped", fields=labels)


def check_create_options(actor: Actor, create_options: bool) -> None:
    """Creating missing options is for a person who may manage the fields (refused and audited otherwise)."""
    if create_options and not actor.can("field.manage"):
        refuse(actor, "field.option", "import.cf_create_options_refused", target_type="custom_field")


def _missing_options(field: FieldDef, text: str) -> list[str]:
    """The parts of a select cell that name no option (by id or label, either language)."""
    parts = [p.strip() for p in (LIST_SEPARATORS.split(text) if field.field_type == "multi_select" else [text])]
    known = {o.id for o in field.options} | {o.zh.casefold() for o in field.options}
    known |= {o.en.casefold() for o in field.options if o.en}
    return [p for p in parts if p and p not in known and p.casefold() not in known]


def check_cells(
    number: int, raw: dict[str, str], creatable: bool
) -> tuple[dict[str, object], list[tuple[str, str, dict, str]], dict[str, list[str]]]:
    """One row's custom cells ({"cf.<key>": text}) -> (values {key: stored form}, problems
    [(field name, message key, params, value)], missing options {field name: labels}).

    A blank cell sets nothing (the field's default applies). ``creatable``: an unknown option
    of a select is not a problem but a missing option (the caller creates it, then checks again).
    """
    values: dict[str, object] = {}
    problems: list[tuple[str, str, dict, str]] = []
    missing: dict[str, list[str]] = {}
    for name, text in raw.items():
        field = field_of(name)
        if field is None or not text:
            if field is not None and not text and field.required and field.default is None:
                problems.append((name, "error.cf_required", {"field": field.labels}, ""))
            continue
        if creatable and field.field_type in SELECT_TYPES:
            unknown = _missing_options(field, text)
            if unknown:
                missing[name] = unknown
                continue
        try:
            value = coerce(field, text)
        except FieldValueError as error:
            problems.append((name, error.message_key, dict(error.params), text))
            continue
        if value is not None:
            values[field.key] = value
        elif field.required and field.default is None:
            # A cell of separators only ("，" in a multi select): nothing to store either.
            problems.append((name, "error.cf_required", {"field": field.labels}, text))
    return values, problems, missing


def create_options(actor: Actor, missing: dict[str, set[str]]) -> dict[str, list[str]]:
    """Add the missing options (in the order first met) to their fields, as the admin's page
    would (audited there); returns {field name: labels added}."""
    added: dict[str, list[str]] = {}
    for name, labels in missing.items():
        field = field_of(name)
        if field is None:
            continue
        for label in list(labels)[:MAX_NEW_OPTIONS]:
            current = custom_field_catalog.field(field.key)
            if current is None or not _missing_options(current, label):
                continue
            try:
                custom_field_definitions.add_option(actor, current.id, current.version, label[:60])
            except ValidationError:
                continue  # a label the field refuses (too long, …): the rows stay errors
            added.setdefault(name, []).append(label)
    return added
