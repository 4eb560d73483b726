"""Custom fields in the duplicate merge (issue 23): which value the kept customer takes.

Like a built-in field, each active custom field whose values differ is offered with
every customer's value (shown as people read it: option labels, money, dates),
the survivor's own value chosen unless it has none (then the first customer who has
one). A multi select may also take "all options of both" (``"union"``), as the merge
unites the customers' custom attributes. Chosen values are copied in their stored
form; a customer without the key has the field's default, so choosing them removes
the key from the survivor (it then has the default too).

Sensitive custom fields for someone who sees them masked: the values are shown
masked and the field is *locked* (no choice offered; a choice sent anyway is refused
and audited): the survivor keeps its value, or where it has none takes the first
other customer's (nothing is lost, nothing is revealed by choosing blind).

The audit entry (``customer.merge``) carries each changed field as
``"cf.<key>": [before, after]`` in ``survivor_changes``, masked for sensitive
fields and as a reference for free text (as ``customers/edit.py`` does), and the
labels at the time (``field_labels``) for the timeline's change history. The
merged customers' snapshots keep their documents with sensitive values masked.
"""

from __future__ import annotations

import dataclasses
import json

from sqlalchemy.orm import Session

from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import (
    FIELD_PREFIX,
    FREE_TEXT_TYPES,
    FieldDef,
    display,
    key_of,
    option_sort_key,
)
from meiqia_app.services.custom_fields.values import effective
from meiqia_app.services.customers.access import CustomerAccess, mask_value
from meiqia_app.services.errors import ValidationError

C = Customer.__table__.c
UNION = "union"


def is_custom(name: object) -> bool:
    return isinstance(name, str) and name.startswith(FIELD_PREFIX)


def _document(stored: object) -> dict:
    if isinstance(stored, str):
        try:
            stored = json.loads(stored or "{}")
        except ValueError:
            return {}
    return stored if isinstance(stored, dict) else {}


def _same(a: object, b: object) -> bool:
    return (sorted(a) if isinstance(a, list) else a) == (sorted(b) if isinstance(b, list) else b) and type(a) is type(b)


def _held(value: object) -> bool:
    return value is not None and value != []


def _default_choice(field: FieldDef, documents: dict[int, dict], survivor: int, order: list[int]) -> int:
    if _held(effective(field, documents[survivor])):
        return survivor
    return next((i for i in order if _held(effective(field, documents[i]))), survivor)


@dataclasses.dataclass(frozen=True)
class CustomFieldOffer:
    """One custom field of the merge dialog: each customer's value (customer id, shown, empty)."""

    field: str
    label: str
    values: tuple[tuple[int, str, bool], ...]
    differs: bool
    default_customer_id: int
    union: bool
    locked: bool


def field_views(
    access: CustomerAccess, stored: dict[int, object], survivor: int, order: list[int], lang: str = "zh"
) -> list[CustomFieldOffer]:
    """The active custom fields as the merge dialog offers them (masked as ``access``'s actor sees them)."""
    documents = {i: _document(v) for i, v in stored.items()}
    offers = []
    for field in custom_field_catalog.catalog().active:
        held = {i: effective(field, documents[i]) for i in order}
        distinct = []
        for value in held.values():
            if not any(_same(value, seen) for seen in distinct):
                distinct.append(value)
        offers.append(
            CustomFieldOffer(
                field=field.name,
                label=field.label(lang),
                values=tuple(
                    (i, str(access.mask(field.name, display(field, held[i], lang))), not _held(held[i])) for i in order
                ),
                differs=len(distinct) > 1,
                default_customer_id=_default_choice(field, documents, survivor, order),
                union=field.field_type == "multi_select" and sum(1 for v in held.values() if _held(v)) > 1,
                locked=field.sensitive and not access.sees_sensitive,
            )
        )
    return offers


def clean_choice(name: str, choice: object, ids: list[int]) -> int | str:
    """A choice sent for custom field ``name``: a customer of the merge, or "union" (multi select)."""
    field = custom_field_catalog.catalog().get(key_of(name))
    if field is None or not field.active:
        raise ValidationError.single("field_choices", "dup.unknown_field", name=str(name)[:40])
    if choice == UNION:
        if field.field_type != "multi_select":
            raise ValidationError.single(name, "dup.choice_not_in_merge")
        return UNION
    try:
        customer_id = int(choice) if not isinstance(choice, bool) else None
    except (TypeError, ValueError):
        customer_id = None
    if customer_id not in ids:
        raise ValidationError.single(name, "dup.choice_not_in_merge")
    return customer_id


def masked_choices(access: CustomerAccess, choices: dict) -> list[str]:
    """The custom fields of ``choices`` the actor sees masked (they may not choose them)."""
    if access.sees_sensitive:
        return []
    catalog = custom_field_catalog.catalog()
    return sorted(
        name
        for name in choices
        if is_custom(name) and (field := catalog.get(key_of(name))) is not None and field.sensitive
    )


@dataclasses.dataclass(frozen=True)
class CustomMerge:
    """What the merge does to the survivor's document, and how it is audited."""

    sets: dict[str, object] = dataclasses.field(default_factory=dict)
    removes: tuple[str, ...] = ()
    before: dict[str, object] = dataclasses.field(default_factory=dict)  # effective values, by key
    after: dict[str, object] = dataclasses.field(default_factory=dict)
    choices: dict[str, object] = dataclasses.field(default_factory=dict)  # "cf.<key>" -> customer id or "union"
    labels: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sets or self.removes)

    def patch(self, session: Session):
        """The SQL value of the survivor's new document (a patch of the stored one)."""
        return get_adapter(session.get_bind()).custom_patch(C.custom_fields, self.sets, self.removes)

    def audited_changes(self) -> dict[str, list[object]]:
        catalog = custom_field_catalog.catalog()
        changes = {}
        for key in self.before:
            field = catalog.get(key)
            name = FIELD_PREFIX + key
            pair = [self.before[key], self.after[key]]
            if field is not None and field.field_type in FREE_TEXT_TYPES and not field.sensitive:
                pair = [audit.text_ref(v) if v else v for v in pair]
            changes[name] = [mask_value(name, v) for v in pair]
        return changes

    def field_labels(self) -> dict[str, dict[str, dict[str, str]]]:
        return {"field_labels": self.labels} if self.labels else {}


def merged_values(stored: dict[int, object], survivor: int, order: list[int], choices: dict) -> CustomMerge:
    """The survivor's custom values after the merge: the chosen customer's per field (the
    survivor's own by default, or the first other's where it has none), or the union of a
    multi select's options."""
    documents = {i: _document(v) for i, v in stored.items()}
    mine = documents[survivor]
    sets: dict[str, object] = {}
    removes: list[str] = []
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    chosen: dict[str, object] = {}
    labels: dict[str, dict[str, str]] = {}
    for field in custom_field_catalog.catalog().active:
        choice = choices.get(field.name, _default_choice(field, documents, survivor, order))
        if choice == survivor:
            continue
        old = effective(field, mine)
        if choice == UNION:
            union = {str(o) for i in order for o in (effective(field, documents[i]) or []) if isinstance(o, str)}
            new = sorted(union, key=option_sort_key) or None
            stored_new, remove = new, False
        else:
            source = documents[choice]
            remove = field.key not in source
            stored_new = None if remove else source[field.key]
            new = effective(field, source)
        if _same(old, new) and (remove == (field.key not in mine)):
            continue
        if remove:
            removes.append(field.key)
        else:
            sets[field.key] = stored_new
        before[field.key], after[field.key] = old, new
        chosen[field.name] = choice
        labels[field.name] = field.labels
    return CustomMerge(sets, tuple(removes), before, after, chosen, labels)


def audited_document(stored: object) -> dict:
    """A merged customer's document for the audit snapshot: sensitive values masked."""
    return {key: mask_value(FIELD_PREFIX + key, value) for key, value in _document(stored).items()}
