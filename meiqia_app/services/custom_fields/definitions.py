"""Custom field definitions (issue 23): create, change, retire, restore, delete.

Every call needs ``field.manage`` and is audited in the transaction of the
change (``field.*`` actions, services/audit_sentences.py). Each change names
the version it was made on (optimistic locking, like customer edits).

- The **key** is stable: ASCII, unique, never changed and never reused while
  the field exists (renaming changes the labels only, so saved views, rules,
  exports and API clients, which use the key, keep working).
- **Options** of selects have stable ids ("o1", "o2", … never reused): add,
  rename, reorder, retire (stored values are kept and still shown; a retired
  option is no longer offered) and restore.
- **Retire** hides a field everywhere and keeps its values (restorable);
  **delete** asks for the key typed again, then a job removes the values from
  every customer in batches and finally the definition.
- A field that can be filtered gets an expression index (dbadapter
  ``create_custom_field_index``), made by a job. A **default** is what every
  customer without a value of their own has, existing and new ones alike: it
  is part of the field's SQL value and index (a changed default: the job makes
  the index again), so setting one writes nothing to the customers (at 1M
  customers, writing it into every row took minutes: docs/architecture.md).

Jobs (services/jobs.py): ``field.setup`` (the index), ``field.purge``
(delete: values removed in batches, resumable from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import re

from sqlalchemy import func, select, update
from sqlmodel import Session

from meiqia_app.db import get_engine, read_connection, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import CUSTOM_FIELD_KEY, index_key
from meiqia_app.i18n import tr
from meiqia_app.models import Customer, CustomField
from meiqia_app.models.custom_field import FIELD_TYPES
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.catalog import definition_of
from meiqia_app.services.custom_fields.field_types import (
    SELECT_TYPES,
    FieldDef,
    FieldValueError,
    Option,
    coerce,
    display,
    form_value,
    option_sort_key,
)
from meiqia_app.services.customers.changes import EDITED, MANY, customers_changed
from meiqia_app.services.errors import Conflict, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import format_local, utcnow

C = Customer.__table__.c
F = CustomField.__table__.c

MAX_FIELDS = 200
MAX_OPTIONS = 200
LABEL_MAX = 64
GROUP_MAX = 32
PURGE_BATCH = 10_000
SETUP_JOB = "field.setup"
PURGE_JOB = "field.purge"


@dataclasses.dataclass
class OptionView:
    id: str
    zh: str
    en: str
    order: int
    retired: bool


@dataclasses.dataclass
class FieldView:
    """What the admin page shows of a definition."""

    id: int
    key: str
    label_zh: str
    label_en: str
    group_zh: str
    group_en: str
    field_type: str
    type_label: str
    options: list[OptionView]
    required: bool
    default_display: str
    default_form: str
    sensitive: bool
    shown_in_list: bool
    sort_order: int
    status: str
    version: int
    retired_at: str
    indexed: bool


@dataclasses.dataclass(frozen=True)
class FieldChange:
    """The outcome of a change: the field, its new version, and the job it started (0: none)."""

    field_id: int
    version: int
    job_id: int = 0


# --- reading ------------------------------------------------------------------------------------


def _view(row: CustomField, lang: str, indexes: set[str]) -> FieldView:
    field = definition_of(row)
    # The default as the edit form's text: options by their Chinese labels (which coerce reads back).
    default_form = (
        display(field, field.default, "zh") if field.field_type in SELECT_TYPES else form_value(field, field.default)
    )
    return FieldView(
        id=field.id,
        key=field.key,
        label_zh=field.label_zh,
        label_en=field.label_en,
        group_zh=field.group_zh,
        group_en=field.group_en,
        field_type=field.field_type,
        type_label=tr(lang, f"field.type.{field.field_type}"),
        options=[OptionView(o.id, o.zh, o.en, o.order, o.retired) for o in field.ordered_options(True)],
        required=field.required,
        default_display=display(field, field.default, lang),
        default_form=", ".join(default_form) if isinstance(default_form, list) else default_form,
        sensitive=field.sensitive,
        shown_in_list=field.shown_in_list,
        sort_order=field.sort_order,
        status=field.status,
        version=field.version,
        retired_at=format_local(row.retired_at),
        indexed=field.key in {index_key(name) for name in indexes},
    )


def list_fields(actor: Actor, lang: str = "zh") -> list[FieldView]:
    """Every definition (active, retired, being deleted), in order, for the admin page."""
    require(actor, "field.manage", action="field.list", target_type="custom_field")
    with read_session() as session:
        rows = session.execute(select(CustomField).order_by(F.sort_order, F.id)).scalars().all()
        indexes = get_adapter(session.get_bind()).custom_field_indexes(session.connection())
        return [_view(row, lang, indexes) for row in rows]


def get_field(actor: Actor, field_id: int, lang: str = "zh") -> FieldView:
    require(actor, "field.manage", action="field.list", target_type="custom_field", target_id=field_id)
    with read_session() as session:
        row = session.get(CustomField, _id(field_id))
        if row is None:
            raise NotFound()
        indexes = get_adapter(session.get_bind()).custom_field_indexes(session.connection())
        return _view(row, lang, indexes)


# --- validating definitions ------------------------------------------------------------------------


def _id(value: object) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise NotFound() from None
    if number <= 0:
        raise NotFound()
    return number


def _clean_text(value: object, field: str, limit: int, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValidationError.single(field, "error.bad_choice")
    text = " ".join(str(value).split())
    if "\x00" in text:
        raise ValidationError.single(field, "error.nul_character")
    if required and not text:
        raise ValidationError.single(field, "error.required")
    if len(text) > limit:
        raise ValidationError.single(field, "error.too_long", max=limit)
    return text


def _clean_bool(value: object, field: str) -> bool:
    if value in (None, ""):
        return False
    if isinstance(value, bool):
        return value
    if value in ("true", "on", "1", 1):
        return True
    if value in ("false", "off", "0", 0):
        return False
    raise ValidationError.single(field, "error.bad_choice")


def _clean_order(value: object) -> int:
    if value in (None, ""):
        return 0
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError.single("sort_order", "error.bad_number") from None
    if not 0 <= number <= 100_000:
        raise ValidationError.single("sort_order", "error.bad_number")
    return number


def clean_key(value: object) -> str:
    key = str(value or "").strip().lower()
    if not CUSTOM_FIELD_KEY.fullmatch(key):
        raise ValidationError.single("key", "error.cf_key")
    return key


def _option_labels(raw: object, field: str = "options") -> tuple[str, str]:
    """(zh, en) of an option given as "label", "中文 / English" or {"zh": …, "en": …}."""
    if isinstance(raw, dict):
        zh, en = raw.get("zh"), raw.get("en")
    elif isinstance(raw, str):
        zh, _slash, en = raw.partition(" / ")
    else:
        raise ValidationError.single(field, "error.bad_choice")
    zh = _clean_text(zh, field, LABEL_MAX, required=True)
    en = _clean_text(en, field, LABEL_MAX)
    return zh, en


def _check_option_labels(options: list[Option], field: str = "options") -> None:
    seen: set[str] = set()
    for option in options:
        if option.retired:
            continue
        for label in {option.zh.casefold(), (option.en or "").casefold()} - {""}:
            if label in seen:
                raise ValidationError.single(field, "error.cf_option_taken", value=option.zh)
            seen.add(label)


def _options_json(options: list[Option]) -> str:
    return json.dumps([o.as_dict() for o in options], ensure_ascii=False)


_SPLIT_OPTIONS = re.compile(r"[\n;；]")


def _new_options(raw: object) -> list[Option]:
    if raw in (None, ""):
        return []
    if isinstance(raw, str):
        raw = [part for part in _SPLIT_OPTIONS.split(raw) if part.strip()]
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_OPTIONS:
        raise ValidationError.single("options", "error.cf_options", max=MAX_OPTIONS)
    options = []
    for position, item in enumerate(raw, start=1):
        zh, en = _option_labels(item)
        options.append(Option(id=f"o{position}", zh=zh, en=en, order=position))
    _check_option_labels(options)
    return options


def _default_of(field: FieldDef, raw: object) -> object:
    """The canonical default from the form's text (None: no default)."""
    try:
        value = coerce(field, raw)
    except FieldValueError as error:
        raise ValidationError({"default": (error.message_key, error.params)}) from None
    return value


def _check_label_free(session: Session, label_zh: str, field_id: int | None = None) -> None:
    query = select(F.id).where(func.lower(F.label_zh) == label_zh.lower(), F.status != "deleting")
    if field_id is not None:
        query = query.where(F.id != field_id)
    if session.execute(query).first() is not None:
        raise ValidationError.single("label_zh", "error.cf_label_taken")


def _load(session: Session, field_id: object, expected_version: object | None) -> CustomField:
    row = session.get(CustomField, _id(field_id))
    if row is None or row.status == "deleting":
        raise NotFound()
    if expected_version is not None:
        try:
            version = int(expected_version)
        except (TypeError, ValueError):
            raise ValidationError.single("version", "error.bad_number") from None
        if row.version != version:
            raise Conflict(by=row.updated_by_name or "?", at=format_local(row.updated_at))
    return row


def _touch(row: CustomField, actor: Actor) -> None:
    row.version = (row.version or 1) + 1
    row.updated_at = utcnow()
    row.updated_by_name = actor.display_name or actor.username


def _audit(session: Session, actor: Actor, action: str, row: CustomField, **details) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type="custom_field",
        target_id=row.id,
        details={"key": row.key, "label": row.label_zh, **details},
    )


# --- creating and changing -------------------------------------------------------------------------


def create_field(actor: Actor, data: dict) -> FieldChange:
    """A new field from the admin's form: key, label_zh, label_en, group_zh, group_en,
    field_type, options (selects), required, default, sensitive, shown_in_list, sort_order.

    Starts a job that makes the field's index (filterable types). A default needs no
    writing: every customer without a value has it (custom_field_values.effective)."""
    require(actor, "field.manage", action="field.create", target_type="custom_field")
    if not isinstance(data, dict):
        raise ValidationError.single("key", "error.bad_choice")
    key = clean_key(data.get("key"))
    field_type = data.get("field_type")
    if field_type not in FIELD_TYPES:
        raise ValidationError.single("field_type", "error.bad_choice")
    label_zh = _clean_text(data.get("label_zh"), "label_zh", LABEL_MAX, required=True)
    label_en = _clean_text(data.get("label_en"), "label_en", LABEL_MAX)
    group_zh = _clean_text(data.get("group_zh"), "group_zh", GROUP_MAX)
    group_en = _clean_text(data.get("group_en"), "group_en", GROUP_MAX)
    options = _new_options(data.get("options")) if field_type in SELECT_TYPES else []
    if field_type in SELECT_TYPES and not options:
        raise ValidationError.single("options", "error.cf_options_missing")
    draft = FieldDef(id=0, key=key, label_zh=label_zh, label_en=label_en, field_type=field_type, options=tuple(options))
    default = _default_of(draft, data.get("default"))
    required = _clean_bool(data.get("required"), "required")
    sensitive = _clean_bool(data.get("sensitive"), "sensitive")
    shown = _clean_bool(data.get("shown_in_list"), "shown_in_list")
    order = _clean_order(data.get("sort_order"))
    now = utcnow()
    with write_session() as session:
        if session.execute(select(func.count()).select_from(CustomField.__table__)).scalar_one() >= MAX_FIELDS:
            raise ValidationError.single("key", "error.cf_too_many_fields", max=MAX_FIELDS)
        if session.execute(select(F.id).where(F.key == key)).first() is not None:
            raise ValidationError.single("key", "error.cf_key_taken")
        _check_label_free(session, label_zh)
        if not order:
            order = (session.execute(select(func.max(F.sort_order))).scalar() or 0) + 10
        row = CustomField(
            key=key,
            label_zh=label_zh,
            label_en=label_en,
            group_zh=group_zh,
            group_en=group_en,
            field_type=field_type,
            options=_options_json(options),
            required=required,
            default_value=None if default is None else json.dumps(default, ensure_ascii=False),
            sensitive=sensitive,
            shown_in_list=shown,
            sort_order=order,
            status="active",
            created_at=now,
            created_by_id=actor.user_id,
            updated_at=now,
            updated_by_name=actor.display_name or actor.username,
            version=1,
        )
        session.add(row)
        session.flush()
        _audit(
            session,
            actor,
            "field.create",
            row,
            type=field_type,
            options=len(options),
            required=required,
            sensitive=sensitive,
            has_default=default is not None,
        )
        field_id = row.id
    custom_field_catalog.invalidate()
    job_id = _start_setup(actor, definition_of(row))
    return FieldChange(field_id, 1, job_id)


# What update_field may change (never the key or the type: stored values follow the type).
EDITABLE = (
    "label_zh",
    "label_en",
    "group_zh",
    "group_en",
    "required",
    "default",
    "sensitive",
    "shown_in_list",
    "sort_order",
)


def update_field(actor: Actor, field_id: int, expected_version: int, data: dict) -> FieldChange:
    """Change labels, group, required, default, sensitive, shown in list or order (the
    keys of ``data`` present). A new or changed default applies at once to every customer
    without a value of their own; the field's index, which holds it, is made again by a job.
    without a value, by a job."""
    require(actor, "field.manage", action="field.update", target_type="custom_field", target_id=field_id)
    if not isinstance(data, dict):
        raise ValidationError.single("label_zh", "error.bad_choice")
    data = {k: v for k, v in data.items() if k in EDITABLE}
    with write_session() as session:
        row = _load(session, field_id, expected_version)
        field = definition_of(row)
        changes: dict[str, list] = {}

        def change(column: str, new: object) -> None:
            old = getattr(row, column)
            if old != new:
                changes[column] = [old, new]
                setattr(row, column, new)

        if "label_zh" in data:
            label = _clean_text(data["label_zh"], "label_zh", LABEL_MAX, required=True)
            _check_label_free(session, label, row.id)
            change("label_zh", label)
        if "label_en" in data:
            change("label_en", _clean_text(data["label_en"], "label_en", LABEL_MAX))
        for column in ("group_zh", "group_en"):
            if column in data:
                change(column, _clean_text(data[column], column, GROUP_MAX))
        for column in ("required", "sensitive", "shown_in_list"):
            if column in data:
                change(column, _clean_bool(data[column], column))
        if "sort_order" in data:
            change("sort_order", _clean_order(data["sort_order"]))
        reindex = False
        if "default" in data:
            default = _default_of(field, data["default"])  # (a retired option is refused)
            stored = None if default is None else json.dumps(default, ensure_ascii=False)
            if stored != row.default_value:
                # As "had one / has one": the value itself stays out of the log.
                changes["default"] = [field.default is not None, default is not None]
                row.default_value = stored
                reindex = row.status == "active"
        if not changes:
            return FieldChange(row.id, row.version)
        _touch(row, actor)
        _audit(session, actor, "field.update", row, changes=changes)
        version = row.version
        fresh = definition_of(row)
    custom_field_catalog.invalidate()
    job_id = _start_setup(actor, fresh) if reindex else 0
    return FieldChange(fresh.id, version, job_id)


# --- options ---------------------------------------------------------------------------------------


def _select_row(session: Session, field_id: object, expected_version: object) -> tuple[CustomField, FieldDef]:
    row = _load(session, field_id, expected_version)
    field = definition_of(row)
    if field.field_type not in SELECT_TYPES:
        raise ValidationError.single("options", "error.cf_not_select")
    return row, field


def _save_options(
    session: Session, actor: Actor, row: CustomField, options: list[Option], change: str, option: Option
) -> FieldChange:
    _check_option_labels(options)
    row.options = _options_json(options)
    _touch(row, actor)
    _audit(session, actor, "field.option", row, change=change, option=option.id, option_label=option.zh)
    return FieldChange(row.id, row.version)


def add_option(actor: Actor, field_id: int, expected_version: int, zh: object, en: object = "") -> FieldChange:
    """A new option at the end, with the next unused id."""
    require(actor, "field.manage", action="field.option", target_type="custom_field", target_id=field_id)
    label_zh, label_en = _option_labels({"zh": zh, "en": en}, "option")
    with write_session() as session:
        row, field = _select_row(session, field_id, expected_version)
        if len(field.options) >= MAX_OPTIONS:
            raise ValidationError.single("option", "error.cf_options", max=MAX_OPTIONS)
        next_number = max((option_sort_key(o.id)[0] for o in field.options if o.id[1:].isdigit()), default=0) + 1
        option = Option(
            id=f"o{next_number}",
            zh=label_zh,
            en=label_en,
            order=max((o.order for o in field.options), default=0) + 1,
        )
        result = _save_options(session, actor, row, [*field.options, option], "add", option)
    custom_field_catalog.invalidate()
    return result


def update_option(
    actor: Actor,
    field_id: int,
    expected_version: int,
    option_id: str,
    *,
    zh: object = None,
    en: object = None,
    move: str = "",
    retired: bool | None = None,
) -> FieldChange:
    """Rename (zh / en), move up or down among the options, retire or restore one option.
    Stored values keep the option's id: nothing changes on any customer."""
    require(actor, "field.manage", action="field.option", target_type="custom_field", target_id=field_id)
    if move not in ("", "up", "down") or retired not in (None, True, False):
        raise ValidationError.single("option", "error.bad_choice")
    with write_session() as session:
        row, field = _select_row(session, field_id, expected_version)
        current = field.option(str(option_id))
        if current is None:
            raise NotFound()
        updated, change = current, ""
        if zh is not None or en is not None:
            label_zh, label_en = _option_labels(
                {"zh": current.zh if zh is None else zh, "en": current.en if en is None else en}, "option"
            )
            updated = dataclasses.replace(updated, zh=label_zh, en=label_en)
            change = "rename"
        if retired is not None:
            updated = dataclasses.replace(updated, retired=retired)
            change = "retire" if retired else "restore"
        options = [updated if o.id == current.id else o for o in field.options]
        if move:
            ordered = sorted(options, key=lambda o: (o.order, option_sort_key(o.id)))
            position = next(i for i, o in enumerate(ordered) if o.id == current.id)
            other = position - 1 if move == "up" else position + 1
            if 0 <= other < len(ordered):
                ordered[position], ordered[other] = ordered[other], ordered[position]
            options = [dataclasses.replace(o, order=i + 1) for i, o in enumerate(ordered)]
            change = "move"
        if options == list(field.options):
            return FieldChange(row.id, row.version)
        result = _save_options(session, actor, row, options, change, updated)
    custom_field_catalog.invalidate()
    return result


# --- retire, restore, delete -----------------------------------------------------------------------


def retire_field(actor: Actor, field_id: int, expected_version: int) -> FieldChange:
    """Hide the field everywhere; its values stay on the customers (restore brings them back).
    Its index goes (writes stop paying for it)."""
    require(actor, "field.manage", action="field.retire", target_type="custom_field", target_id=field_id)
    with write_session() as session:
        row = _load(session, field_id, expected_version)
        if row.status != "active":
            return FieldChange(row.id, row.version)
        row.status = "retired"
        row.retired_at = utcnow()
        _touch(row, actor)
        _audit(session, actor, "field.retire", row)
        result, key = FieldChange(row.id, row.version), row.key
    custom_field_catalog.invalidate()
    engine = get_engine()
    get_adapter(engine).drop_custom_field_index(engine, key)
    return result


def restore_field(actor: Actor, field_id: int, expected_version: int) -> FieldChange:
    """Bring a retired field back, with the values it had; its index is made again (a job)."""
    require(actor, "field.manage", action="field.restore", target_type="custom_field", target_id=field_id)
    with write_session() as session:
        row = _load(session, field_id, expected_version)
        if row.status != "retired":
            return FieldChange(row.id, row.version)
        row.status = "active"
        row.retired_at = None
        _touch(row, actor)
        _audit(session, actor, "field.restore", row)
        version, field = row.version, definition_of(row)
    custom_field_catalog.invalidate()
    job_id = _start_setup(actor, field)
    return FieldChange(field.id, version, job_id)


def delete_field(actor: Actor, field_id: int, confirm_key: object) -> FieldChange:
    """Delete a field and its values: the admin types the key again. The field disappears
    at once; a job removes the values from every customer in batches, then the definition."""
    require(actor, "field.manage", action="field.delete", target_type="custom_field", target_id=field_id)
    with write_session() as session:
        row = _load(session, field_id, None)
        if str(confirm_key or "").strip() != row.key:
            raise ValidationError.single("confirm", "error.cf_confirm_key")
        row.status = "deleting"
        _touch(row, actor)
        _audit(session, actor, "field.delete", row)
        field_id, key, version = row.id, row.key, row.version
    custom_field_catalog.invalidate()
    job_id = jobs.create_job(actor, PURGE_JOB, {"field_id": field_id, "key": key})
    jobs.start_in_background(job_id)
    return FieldChange(field_id, version, job_id)


# --- jobs ------------------------------------------------------------------------------------------


def _start_setup(actor: Actor, field: FieldDef) -> int:
    """Queue the job that makes the field's index for its current definition (0: none needed)."""
    if field.index_shape is None:
        return 0
    job_id = jobs.create_job(actor, SETUP_JOB, {"field_id": field.id, "key": field.key})
    jobs.start_in_background(job_id)
    return job_id


def _current(field_id: int) -> FieldDef | None:
    with read_session() as session:
        row = session.get(CustomField, field_id)
        return definition_of(row) if row is not None else None


def _top_id() -> int:
    with read_connection() as conn:
        return conn.execute(select(func.max(C.id))).scalar() or 0


def _setup_worker(ctx: jobs.JobContext) -> dict:
    """Make the index of the field as it is defined now (its default is part of the indexed
    value) and drop the indexes made for an earlier definition. Nothing is written to the
    customers. A field retired, deleted or changed again meanwhile: the job that change
    started (if any) makes the right index."""
    field_id, key = int(ctx.params["field_id"]), str(ctx.params["key"])
    require(ctx.actor, "field.manage", action="field.update", target_type="custom_field", target_id=field_id)
    field = _current(field_id)
    if field is None or field.key != key or not field.active or field.index_shape is None:
        return {"skipped": True}
    engine = get_engine()
    name = get_adapter(engine).create_custom_field_index(
        engine, key, field.value_kind, field.index_shape == "equality", field.default
    )
    ctx.progress(1, {"index": name}, total=1)
    return {"index": name}


def _purge_worker(ctx: jobs.JobContext) -> dict:
    """Remove a deleted field's values from every customer, then its definition."""
    field_id, key = int(ctx.params["field_id"]), str(ctx.params["key"])
    require(ctx.actor, "field.manage", action="field.purge", target_type="custom_field", target_id=field_id)
    engine = get_engine()
    adapter = get_adapter(engine)
    adapter.drop_custom_field_index(engine, key)  # the updates below then skip it
    after = int(ctx.checkpoint.get("after", 0))
    removed = int(ctx.checkpoint.get("removed", 0))
    while True:
        top = _top_id()
        if after >= top:
            break
        upto = after + PURGE_BATCH
        with write_session() as session:
            removed += session.execute(
                update(Customer.__table__)
                .where(C.id > after, C.id <= upto, adapter.custom_has_key(C.custom_fields, key))
                .values(custom_fields=adapter.custom_patch(C.custom_fields, {}, (key,)))
            ).rowcount
        after = upto
        ctx.progress(min(after, top), {"after": after, "removed": removed}, total=top)
    with write_session() as session:
        row = session.get(CustomField, field_id)
        if row is not None and row.key == key and row.status == "deleting":
            _audit(session, ctx.actor, "field.purge", row, removed=removed)
            session.delete(row)
        if removed:
            customers_changed(session, MANY, EDITED)  # their values went: counts and filters follow
    custom_field_catalog.invalidate()
    return {"removed": removed}


jobs.register_worker(SETUP_JOB, _setup_worker)
jobs.register_worker(PURGE_JOB, _purge_worker)
