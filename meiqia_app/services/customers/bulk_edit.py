"""Bulk edit from the list (issue 23): set one field to one value on many customers.

The field is a built-in one of :data:`BUILTIN_FIELDS` (choices and plain
profile text; identities such as name, phone or e-mail are never set in bulk)
or an active custom field (``cf.<key>``). The selection is the list's (ticked
rows or all matching, services/customers/selection.py). The person confirms by
typing the number of customers (:func:`preview` gives it); the work is a job
(``customers.bulk_edit``) that writes in transactions of :data:`TX_ROWS`
customers (set-based statements over :data:`BATCH` ids each), with progress and
Stop between transactions, and resumes after a restart from its last one (a
sensitive value is kept in the job's memory only: such a job ends as failed
after a restart, saying to run it again).

Each batch, for the customers that do not hold the value yet (trashed and
erased ones never written; a resumed batch changes nothing twice), set-based:
a ``field_change`` row per customer (the customer's timeline shows it: the
value, masked when sensitive, nothing of free text), a ``customer.updated``
webhook delivery per customer and subscribed endpoint (only when an enabled
endpoint subscribes to it), then the UPDATE that patches the custom field
document (dbadapter ``custom_patch``, so other keys are untouched) or sets the
column and bumps each customer's version (an edit form open meanwhile gets a
conflict instead of overwriting). After each transaction: the on-change tag
rules that read the field, for the customers of the batch (no other rule can
change its verdict, and the lifecycle stage does not read editable fields),
then ``customers_changed(BULK_EDITED)`` (counts, report caches). One audit
entry when the job ends: the field, its value (masked when the field is
sensitive; free text as a reference, as in the edit's audit), the number of
customers changed.

Why transactions of thousands of customers (sized to take about
:data:`TX_SECONDS`): on SQLite the index entries of a batch's customers are
spread over every page of each index on the document (one per custom field: a
customer's entries move in all of them when the document is rewritten), so a
transaction dirties about as many pages for 5,000 customers as for 50,000 (its
commit costs about the same); with the bulk page cache (dbadapter
``begin_bulk_writes``) each page is written once per transaction. The rewrite
itself costs ~10 µs per field index per customer on SQLite (measured: 195k
rows/s without the field indexes, ~4k with 23), the floor of a bulk edit of
the document. Figures: docs/architecture.md (custom fields).

Permissions: ``customer.edit``; a sensitive field (one the actor would see
masked) also needs ``customer.view_sensitive`` — refused and audited
otherwise, like the edit form, which never lets such a role overwrite a
masked value blindly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

from sqlalchemy import and_, insert, literal, or_, select, update

from meiqia_app.db import write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.i18n import tr
from meiqia_app.models import Customer, FieldChange
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.custom_fields.field_types import (
    FIELD_PREFIX,
    FREE_TEXT_TYPES,
    FieldDef,
    FieldValueError,
    coerce,
    display,
)
from meiqia_app.services.customers import list_fields
from meiqia_app.services.customers.access import CustomerAccess, is_sensitive, mask_value
from meiqia_app.services.customers.changes import BULK_EDITED, customers_changed
from meiqia_app.services.customers.list_fields import FieldColumn, FilterOption
from meiqia_app.services.customers.selection import (
    BulkResult,
    Selection,
    check_ticked_in_reach,
    iter_selected_ids,
    selection_count,
)
from meiqia_app.services.customers.validation import CHOICES, clean_customer_fields
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags.rules import runs as rules
from meiqia_app.timeutil import utcnow

JOB_KIND = "customers.bulk_edit"
ACTION = "customer.bulk_edit"
BATCH = 5_000  # ids per statement
# Customers per transaction (see the module's docstring): the first one TX_ROWS, the next ones
# sized to take about TX_SECONDS (a transaction holds SQLite's write lock: other writers wait up
# to the busy timeout, 15 s), between TX_MIN_ROWS and TX_MAX_ROWS.
TX_ROWS = 20_000
TX_MIN_ROWS = 2_000
TX_MAX_ROWS = 100_000
TX_SECONDS = 5.0
# Built-in fields a bulk edit may set: choices and plain profile text (not the lifecycle stage or
# tier: computed from the customer's activity and spending, services/customers/lifecycle_update.py).
BUILTIN_FIELDS = ("source", "gender", "province", "city", "company")
BUILTIN_LABEL_KEYS = {
    "source": "customer.source",
    "gender": "customer.gender",
    "province": "customer.province",
    "city": "customer.city",
    "company": "customer.company",
}
CHOICE_PREFIX = {"source": "source", "gender": "gender"}
C = Customer.__table__.c
FC = FieldChange.__table__.c


@dataclasses.dataclass(frozen=True)
class BulkEdit:
    """A checked bulk edit: which field, the value to store, how it reads in the audit log."""

    field: str  # a built-in column or "cf.<key>"
    value: object  # the stored form (None: clear)
    shown: str  # for the audit entry: masked when sensitive, a reference for free text
    sensitive: bool

    @property
    def custom_key(self) -> str | None:
        return self.field[len(FIELD_PREFIX) :] if self.field.startswith(FIELD_PREFIX) else None


@dataclasses.dataclass(frozen=True)
class BulkEditPreview:
    """What the confirmation shows: how many customers, which field, the value as shown."""

    count: int
    field: str
    value: str


def _custom_field(name: str) -> FieldDef:
    field = custom_values.field_of_name(name)
    if field is None:
        raise ValidationError.single("field", "error.cf_unknown_field")
    return field


def check_field(actor: Actor, field: object) -> FieldDef | None:
    """The actor may set ``field`` in bulk (its definition for a custom field, else None)."""
    require(actor, "customer.edit", action=ACTION, target_type="customer")
    if not isinstance(field, str) or not (field in BUILTIN_FIELDS or field.startswith(FIELD_PREFIX)):
        raise ValidationError.single("field", "error.bad_choice")
    access = CustomerAccess(actor)
    definition = _custom_field(field) if field.startswith(FIELD_PREFIX) else None
    if (definition is not None and definition.sensitive and not access.sees_sensitive) or (
        definition is None and access.masked_fields([field])
    ):
        refuse(actor, ACTION, "cf_list.sensitive_refused", target_type="customer", fields=[field])
    return definition


def check_edit(actor: Actor, field: object, raw: object) -> BulkEdit:
    """Permission and value checks (raises PermissionDenied, audited, or ValidationError)."""
    definition = check_field(actor, field)
    if definition is not None:
        try:
            value = coerce(definition, raw, None)
        except FieldValueError as error:
            raise ValidationError({"value": (error.message_key, error.params)}) from None
        if value is None and definition.required:
            raise ValidationError.single("value", "error.cf_required", field=definition.labels)
        shown = display(definition, value, "zh") if value is not None else ""
        if definition.sensitive and value is not None:
            shown = mask_value(definition.name, shown)
        elif definition.field_type in FREE_TEXT_TYPES and value is not None:
            shown = audit.text_ref(shown)
        return BulkEdit(field, value, shown, definition.sensitive)
    text = "" if raw is None else str(raw)[:300]
    if not text.strip() and field in CHOICES:
        raise ValidationError.single("value", "error.required")
    value = clean_customer_fields({field: text}, partial=True).get(field)
    shown = "" if value is None else str(value)
    if field == "company" and value is not None:
        shown = audit.text_ref(shown)
    return BulkEdit(field, value, shown, is_sensitive(field))


def bulk_fields(actor: Actor, lang: str = "zh") -> list[FieldColumn]:
    """The fields the actor may set in bulk: the built-in ones, then the active custom
    fields (not those it sees masked), each with its choices."""
    require(actor, "customer.edit", action=ACTION, target_type="customer")
    access = CustomerAccess(actor)
    built_in = []
    for field in BUILTIN_FIELDS:
        choices = [FilterOption(code, tr(lang, f"{CHOICE_PREFIX[field]}.{code}")) for code in CHOICES.get(field, ())]
        built_in.append(
            FieldColumn(
                name=field,
                key=field,
                label=tr(lang, BUILTIN_LABEL_KEYS[field]),
                field_type="single_select" if choices else "text",
                sortable=False,
                filterable=False,
                operators=[],
                options=choices,
                shown_by_default=False,
                sensitive=False,
            )
        )
    custom = [c for c in list_fields.column_options(access, lang) if c.filterable]
    return built_in + custom


def _selection(selection) -> Selection:
    return selection if isinstance(selection, Selection) else Selection.from_dict(selection)


def preview(actor: Actor, selection, field: object, raw: object, lang: str = "zh") -> BulkEditPreview:
    """The count to confirm (the selection now, within the actor's reach) and the value as shown."""
    edit = check_edit(actor, field, raw)
    selection = _selection(selection)
    check_ticked_in_reach(actor, selection, ACTION)
    count = selection_count(actor, selection, exact=True)
    if edit.custom_key is not None:
        definition = _custom_field(edit.field)
        shown = display(definition, edit.value, lang) if edit.value is not None else ""
    else:
        shown = "" if edit.value is None else str(edit.value)
    return BulkEditPreview(count=count, field=edit.field, value=shown)


def _params(actor: Actor, selection, field, raw, confirm: object) -> tuple[BulkEdit, Selection, dict, int]:
    edit = check_edit(actor, field, raw)
    selection = _selection(selection)
    check_ticked_in_reach(actor, selection, ACTION)
    count = selection_count(actor, selection, exact=True)
    typed = str(confirm or "").strip().replace(",", "").replace("，", "")
    if typed != str(count):
        raise ValidationError.single("confirm", "cleanup.confirm_mismatch", count=count)
    params = {
        "field": edit.field,
        "shown": edit.shown,
        "sensitive": edit.sensitive,
        "selection": selection.to_dict(),
        "described": selection.describe(),
    }
    if not edit.sensitive:
        params["value"] = edit.value
    return edit, selection, params, count


def start_bulk_edit_job(actor: Actor, selection, field: object, raw: object, confirm: object) -> int:
    """Queue and start the job; returns its id for ``jobs.job_view`` (Stop: ``jobs.request_cancel``)."""
    edit, _selection_, params, count = _params(actor, selection, field, raw, confirm)
    job_id = jobs.create_job(actor, JOB_KIND, params, total=count)
    jobs.start_in_background(job_id, memory={"value": edit.value} if edit.sensitive else None)
    return job_id


def bulk_edit(actor: Actor, selection, field: object, raw: object, confirm: object) -> BulkResult:
    """The same as the job, run in this thread (CLI, tests, benchmarks)."""
    edit, _selection_, params, count = _params(actor, selection, field, raw, confirm)
    job_id = jobs.create_job(actor, JOB_KIND, params, total=count)
    return BulkResult.of_job(jobs.run_job(job_id, memory={"value": edit.value} if edit.sensitive else None))


def _changes(session, edit: BulkEdit) -> tuple[dict, object]:
    """(the UPDATE's values, the condition "does not hold the value yet")."""
    key = edit.custom_key
    if key is None:
        column = C[edit.field]
        if edit.value is None:
            return {edit.field: None}, column.is_not(None)
        return {edit.field: edit.value}, or_(column.is_(None), column != edit.value)
    definition = _custom_field(edit.field)
    adapter = get_adapter(session.get_bind())
    if edit.value is None:
        # Explicitly empty where a default would show, else no key (as the edit form does).
        sets, removes = ({key: None}, ()) if definition.default is not None else ({}, (key,))
    else:
        sets, removes = {key: edit.value}, ()
    patch = adapter.custom_patch(C.custom_fields, sets, removes)
    if definition.value_kind is None:  # a multi select: no single SQL value to compare
        return {"custom_fields": patch}, None
    current = custom_values.value_expression(definition, use_index=False)
    if edit.value is None:
        return {"custom_fields": patch}, current.is_not(None)
    return {"custom_fields": patch}, or_(current.is_(None), current != edit.value)


def _trace(edit: BulkEdit) -> tuple[str | None, str]:
    """What each customer's ``field_change`` row keeps: (value as JSON, note)."""
    if edit.sensitive:
        return json.dumps(edit.shown, ensure_ascii=False), "masked"
    if isinstance(edit.shown, dict):  # free text: a reference in the audit, nothing here
        return None, "text"
    return json.dumps(edit.value, ensure_ascii=False), ""


def apply_batch(
    session, ids: list[int], edit: BulkEdit, actor: Actor, now: dt.datetime, job_id: int | None = None
) -> int:
    """One batch: every customer of ``ids`` not trashed, not erased and not holding the value
    yet gets a ``field_change`` row and (when subscribed) a ``customer.updated`` delivery,
    then the value. Returns how many changed."""
    values, differs = _changes(session, edit)
    conditions = [C.id.in_(ids), C.status != "trashed", C.erased_at.is_(None)]
    if differs is not None:
        conditions.append(differs)
    where = and_(*conditions)
    value, note = _trace(edit)
    session.execute(
        insert(FieldChange.__table__).from_select(
            ["customer_id", "changed_at", "field", "value", "note", "actor_id", "actor_name", "job_id"],
            select(
                C.id,
                literal(now, FC.changed_at.type),
                literal(edit.field),
                literal(value, FC.value.type),
                literal(note),
                literal(actor.user_id, FC.actor_id.type),
                literal((actor.display_name or actor.username)[:64]),
                literal(job_id, FC.job_id.type),
            ).where(where),
        )
    )
    webhooks.emit_for_select(session, "customer.updated", select(C.id).where(where), {"changes": [edit.field]})
    statement = (
        update(Customer.__table__)
        .where(where)
        .values(
            **values,
            version=C.version + 1,
            updated_at=now,
            updated_by_id=actor.user_id,
            updated_by_name=(actor.display_name or actor.username)[:64],
        )
    )
    return session.execute(statement).rowcount


def _write_transaction(ids: list[int], edit: BulkEdit, actor: Actor, now: dt.datetime, job_id: int) -> int:
    """One transaction: the batches of ``ids``, then the rules reading the field and the signal."""
    changed = 0
    with write_session() as session:
        conn = session.connection()
        adapter = get_adapter(conn)
        adapter.begin_bulk_writes(conn)
        try:
            for start in range(0, len(ids), BATCH):
                changed += apply_batch(session, ids[start : start + BATCH], edit, actor, now, job_id)
            if changed:
                customers_changed(session, ids, BULK_EDITED)  # told after the commit
        finally:
            adapter.end_bulk_writes(conn)
    if changed:
        # Only the rules with a condition on this field can change their verdict.
        rules.apply_rules_to_customers(ids, now, reading=edit.field)
    return changed


def _worker(ctx: jobs.JobContext) -> dict:
    params = ctx.params
    actor = ctx.actor
    field = params["field"]
    sensitive = bool(params.get("sensitive"))
    if sensitive and "value" not in ctx.memory:
        # The value was never stored: a restarted process cannot go on.
        raise jobs.JobFailed("cf_list.bulk_interrupted")
    value = ctx.memory["value"] if sensitive else params.get("value")
    # Checked again: a permission or the field may have changed since the job was queued.
    check_field(actor, field)
    edit = BulkEdit(field, value, params.get("shown", ""), sensitive)
    selection = Selection.from_dict(params["selection"])
    after_id = int(ctx.checkpoint.get("after_id", 0))
    changed = int(ctx.checkpoint.get("changed", 0))
    processed = ctx.processed
    now = utcnow()
    size = TX_ROWS
    try:
        while True:
            ids = next(iter_selected_ids(actor, selection, after_id=after_id, batch=size), None)
            if not ids:
                break
            started = time.monotonic()
            changed += _write_transaction(ids, edit, actor, now, ctx.job_id)
            seconds = time.monotonic() - started
            processed += len(ids)
            after_id = ids[-1]
            ctx.progress(processed, {"after_id": after_id, "changed": changed})
            if len(ids) == size and seconds > 0:
                size = int(min(TX_MAX_ROWS, max(TX_MIN_ROWS, size * TX_SECONDS / seconds, size / 2), size * 2))
    except jobs.JobCancelled:
        _audit(actor, params, edit, changed, processed, ctx.job_id, stopped=True)
        raise jobs.JobCancelled({"changed": changed, "selected": processed}) from None
    _audit(actor, params, edit, changed, processed, ctx.job_id)
    return {"changed": changed, "selected": processed}


def _audit(actor: Actor, params: dict, edit: BulkEdit, changed: int, processed: int, job_id: int, stopped=False):
    definition = custom_field_catalog.catalog().by_name(edit.field) if edit.custom_key else None
    with write_session() as session:
        audit.record(
            session,
            actor,
            ACTION,
            target_type="customer",
            details={
                "field": edit.field,
                "label": definition.labels if definition is not None else {},
                "value": edit.shown,
                "count": changed,
                "selected": processed,
                "selection": params.get("described"),
                "job_id": job_id,
                "stopped": stopped,
            },
        )


jobs.register_worker(JOB_KIND, _worker)
