"""Merging duplicate customers (CUST-dup): the preview with a value per field, then one customer kept with the others' records moved to it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from meiqia_app.db import get_engine, write_session
from meiqia_app.i18n import tr
from meiqia_app.models import (
    BehaviorEvent,
    Conversation,
    Customer,
    CustomerSearch,
    ErasureRequest,
    Note,
    Order,
    TagAssignment,
)
from meiqia_app.models.customer import STATUS_TRASHED
from meiqia_app.models.tag import SOURCE_MANUAL
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, mask_value
from meiqia_app.services.customers.changes import MERGED, customers_changed
from meiqia_app.services.customers.dto import label, money
from meiqia_app.services.customers.duplicates import custom_merge
from meiqia_app.services.customers.search_text import pinyin_of, search_row
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.services.errors import Conflict, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.timeutil import as_utc, format_local, utcnow

log = logging.getLogger(__name__)
C = Customer.__table__.c
TA = TagAssignment.__table__.c
MIN_MERGE = 2
MAX_MERGE = 5

# Where each editable field's label lives, and which code fields are shown translated.
FIELD_LABEL_KEYS = {
    "name": "customer.name",
    "gender": "customer.gender",
    "birthday": "customer.birthday",
    "phone": "customer.phone",
    "email": "customer.email",
    "address": "customer.address",
    "province": "customer.province",
    "city": "customer.city",
    "company": "customer.company",
    "source": "customer.source",
    "external_id": "customer.external_id",
    "visitor_id": "customer.visitor_id",
    "lifecycle_stage": "customer.lifecycle",
    "membership_tier": "customer.tier",
}
CODE_PREFIXES = {"gender": "gender", "source": "source", "lifecycle_stage": "lifecycle", "membership_tier": "tier"}
# Fields the audit snapshot of a merged customer leaves out (bookkeeping only).
SNAPSHOT_SKIP = ("name_pinyin", "name_initials")
# Rows that belong to a customer and move to the survivor, by audit name.
MOVED_TABLES = (
    ("orders", Order.__table__),
    ("conversations", Conversation.__table__),
    ("events", BehaviorEvent.__table__),
    ("notes", Note.__table__),
)
# Survivor columns derived from all the merged customers (old and new values go into the audit entry).
RECOMPUTED_FIELDS = (
    "order_count",
    "total_spent_cents",
    "first_purchase_at",
    "last_purchase_at",
    "registered_at",
    "last_active_at",
    "last_login_at",
)
# Moved rows whose ids go into the audit entry (events are only counted: there can be thousands).
MOVED_IDS_LOGGED = ("orders", "conversations", "notes")


@dataclasses.dataclass
class MergeCandidate:
    id: int
    name: str
    version: int
    status: str
    registered: str
    last_active: str
    total_spent: str
    paid_orders: int  # the profile's "orders" figure (order_count: paid orders)
    orders: int  # every order the customer has (any status): what moves to the survivor
    conversations: int
    events: int
    notes: int
    tags: int


@dataclasses.dataclass
class FieldValue:
    customer_id: int
    value: str  # display text, masked for actors without customer.view_sensitive
    empty: bool


@dataclasses.dataclass
class MergeField:
    field: str
    label_key: str
    label: str  # the field's name in the caller's language
    values: list[FieldValue]
    differs: bool
    default_customer_id: int  # for the suggested survivor; see default_choices()
    union: bool = False  # a multi-select custom field: "all options of both" may be chosen ("union")
    locked: bool = False  # a sensitive custom field the actor sees masked: not chosen, see custom_merge


@dataclasses.dataclass
class MergePreview:
    customers: list[MergeCandidate]
    fields: list[MergeField]
    suggested_survivor_id: int
    sensitive_visible: bool


@dataclasses.dataclass
class MergeResult:
    survivor_id: int
    merged_ids: list[int]
    survivor_version: int
    moved: dict[str, int]
    audit_id: int
    # Rule tags the survivor gained and lost when they were recomputed on its merged data.
    rule_tags: dict[str, list[int]] = dataclasses.field(default_factory=dict)


# --- merge preview -----------------------------------------------------------------------------


def _clean_ids(ids: Iterable) -> list[int]:
    try:
        if isinstance(ids, (str, bytes)) or any(isinstance(i, bool) for i in ids):
            raise TypeError
        cleaned = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValidationError.single("ids", "dup.count_range", min=MIN_MERGE, max=MAX_MERGE) from None
    if len(set(cleaned)) != len(cleaned) or not MIN_MERGE <= len(cleaned) <= MAX_MERGE:
        raise ValidationError.single("ids", "dup.count_range", min=MIN_MERGE, max=MAX_MERGE)
    return cleaned


def _load_mergeable(
    conn_or_session,
    access: CustomerAccess,
    ids: Sequence[int],
    versions: dict[int, int] | None = None,
    action: str = "customer.merge",
) -> dict[int, object]:
    """The customers' rows by id; refuses missing, out of reach, trashed and erased ones
    (missing and out of reach: not found, audited under ``action``: CustomerAccess.not_found).

    With ``versions``, a customer changed since the dialog read it raises
    Conflict first (a customer merged away meanwhile is "changed", not "gone").
    """
    rows = access.load_many(conn_or_session, ids)
    unreachable = [customer_id for customer_id in ids if customer_id not in rows]
    if unreachable:
        raise access.not_found(unreachable, action)
    for customer_id in ids:
        row = rows[customer_id]
        if versions is not None and row.version != versions[customer_id]:
            raise Conflict(by=row.updated_by_name or "?", at=format_local(row.updated_at), customer_id=customer_id)
    if any(rows[customer_id].status == STATUS_TRASHED for customer_id in ids):
        raise NotFound()
    pending = (
        conn_or_session.execute(
            select(ErasureRequest.__table__.c.customer_id).where(
                ErasureRequest.__table__.c.customer_id.in_(list(ids)), ErasureRequest.__table__.c.status == "pending"
            )
        )
        .scalars()
        .all()
    )
    blocked = sorted({r.id for r in rows.values() if r.erased_at is not None} | set(pending))
    if blocked:
        raise ValidationError.single("ids", "dup.erasure_blocks", ids=", ".join(map(str, blocked)))
    return rows


def _count_rows(conn, ids: Sequence[int]) -> dict[str, dict[int, int]]:
    counts: dict[str, dict[int, int]] = {}
    for name, table in MOVED_TABLES + (("tags", TagAssignment.__table__),):
        rows = conn.execute(
            select(table.c.customer_id, func.count())
            .where(table.c.customer_id.in_(list(ids)))
            .group_by(table.c.customer_id)
        )
        counts[name] = dict(rows.all())
    return counts


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _display(field: str, value, access: CustomerAccess, lang: str) -> str:
    if _is_empty(value):
        return ""
    if isinstance(value, dt.date):
        value = value.isoformat()
    value = access.mask(field, value)
    if field in CODE_PREFIXES:
        return label(lang, CODE_PREFIXES[field], str(value))
    return str(value)


def default_choices(values: dict[int, dict[str, object]], survivor_id: int, order: Sequence[int]) -> dict[str, int]:
    """Which customer each field comes from when nobody chose: the survivor's
    value, or where the survivor has none, the first customer (in ``order``) who has one."""
    choices = {}
    for field in EDITABLE_FIELDS:
        choice = survivor_id
        if _is_empty(values[survivor_id][field]):
            choice = next((cid for cid in order if not _is_empty(values[cid][field])), survivor_id)
        choices[field] = choice
    return choices


def merge_preview(actor: Actor, ids: Sequence[int], lang: str = "zh") -> MergePreview:
    """What the merge dialog shows: each field's values per customer and what each customer has."""
    shown = ",".join(map(str, ids[: MAX_MERGE + 1])) if isinstance(ids, (list, tuple)) else ""
    require(actor, "customer.merge", action="customer.merge_preview", target_type="customer", target_id=shown[:64])
    ids = _clean_ids(ids)
    access = CustomerAccess(actor)
    sensitive = access.sees_sensitive
    with get_engine().connect() as conn:
        rows = _load_mergeable(conn, access, ids, action="customer.merge_preview")
        counts = _count_rows(conn, ids)
    # The original record: the earliest registered (ties: the lowest id).
    survivor = min(ids, key=lambda i: (as_utc(rows[i].registered_at), i))
    values = {i: {f: getattr(rows[i], f) for f in EDITABLE_FIELDS} for i in ids}
    defaults = default_choices(values, survivor, ids)
    fields = []
    for field in EDITABLE_FIELDS:
        raw = [values[i][field] for i in ids]
        fields.append(
            MergeField(
                field=field,
                label_key=FIELD_LABEL_KEYS[field],
                label=tr(lang, FIELD_LABEL_KEYS[field]),
                values=[
                    FieldValue(i, _display(field, values[i][field], access, lang), _is_empty(values[i][field]))
                    for i in ids
                ],
                differs=len({None if _is_empty(v) else v for v in raw}) > 1,
                default_customer_id=defaults[field],
            )
        )
    for view in custom_merge.field_views(access, {i: rows[i].custom_fields for i in ids}, survivor, ids, lang):
        fields.append(
            MergeField(
                field=view.field,
                label_key="",
                label=view.label,
                values=[FieldValue(*value) for value in view.values],
                differs=view.differs,
                default_customer_id=view.default_customer_id,
                union=view.union,
                locked=view.locked,
            )
        )
    customers = [
        MergeCandidate(
            id=i,
            name=rows[i].name,
            version=rows[i].version,
            status=rows[i].status,
            registered=format_local(rows[i].registered_at),
            last_active=format_local(rows[i].last_active_at),
            total_spent=access.mask("total_spent", money(rows[i].total_spent_cents)),
            paid_orders=rows[i].order_count,
            orders=counts["orders"].get(i, 0),
            conversations=counts["conversations"].get(i, 0),
            events=counts["events"].get(i, 0),
            notes=counts["notes"].get(i, 0),
            tags=counts["tags"].get(i, 0),
        )
        for i in ids
    ]
    return MergePreview(customers=customers, fields=fields, suggested_survivor_id=survivor, sensitive_visible=sensitive)


# --- merging -----------------------------------------------------------------------------------


def _clean_merge_input(survivor_id, other_ids, field_choices, expected_versions):
    if isinstance(other_ids, (str, bytes)) or not isinstance(other_ids, Iterable):
        raise ValidationError.single("ids", "dup.count_range", min=MIN_MERGE, max=MAX_MERGE)
    ids = _clean_ids([survivor_id, *other_ids])
    survivor, others = ids[0], ids[1:]
    choices: dict[str, int] = {}
    for field, customer_id in dict(field_choices or {}).items():
        if custom_merge.is_custom(field):
            choices[field] = custom_merge.clean_choice(field, customer_id, ids)
            continue
        if field not in EDITABLE_FIELDS:
            raise ValidationError.single("field_choices", "dup.unknown_field", name=str(field)[:40])
        try:
            customer_id = int(customer_id)
        except (TypeError, ValueError):
            customer_id = None
        if customer_id not in ids:
            raise ValidationError.single(field, "dup.choice_not_in_merge")
        choices[field] = customer_id
    versions: dict[int, int] = {}
    try:
        for key, value in dict(expected_versions or {}).items():
            versions[int(key)] = int(value)  # keys arrive as strings from the browser
    except (TypeError, ValueError):
        raise ValidationError.single("expected_versions", "dup.version_missing") from None
    if any(i not in versions for i in ids):
        raise ValidationError.single("expected_versions", "dup.version_missing")
    return survivor, others, choices, versions


def _audit_value(field: str, value):
    if isinstance(value, dt.datetime):
        value = as_utc(value).isoformat()
    elif isinstance(value, dt.date):
        value = value.isoformat()
    return mask_value(field, value)


def _snapshot(row) -> dict:
    """Every column of a customer, sensitive values masked, for the audit entry."""
    snapshot = {
        column.name: _audit_value(column.name, getattr(row, column.name))
        for column in Customer.__table__.columns
        if column.name not in SNAPSHOT_SKIP
    }
    snapshot["custom_fields"] = custom_merge.audited_document(row.custom_fields)
    return snapshot


def _merged_attributes(rows: Sequence) -> tuple[str, list[str]]:
    """The survivor's custom attributes plus the others' keys it lacks (its own values win)."""

    def parse(raw):
        try:
            value = json.loads(raw or "{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    survivor = parse(rows[0].custom_attributes)
    if survivor is None:  # unreadable: leave it exactly as it is
        return rows[0].custom_attributes, []
    added = []
    for row in rows[1:]:
        for key, value in (parse(row.custom_attributes) or {}).items():
            if key not in survivor:
                survivor[key] = value
                added.append(key)
    return json.dumps(survivor, ensure_ascii=False), added


def _purchase_figures(session: Session, customer_id: int) -> dict:
    """order_count, total_spent_cents and first/last purchase from the customer's paid
    orders, the way the seed computes them (a purchase is dated by its order's creation)."""
    o = Order.__table__.c
    count, spent, first, last = session.execute(
        select(
            func.count(), func.coalesce(func.sum(o.amount_cents), 0), func.min(o.created_at), func.max(o.created_at)
        ).where(o.customer_id == customer_id, o.status == "paid")
    ).one()
    return {"order_count": count, "total_spent_cents": int(spent), "first_purchase_at": first, "last_purchase_at": last}


def _latest(values: Iterable[dt.datetime | None]) -> dt.datetime | None:
    present = [as_utc(v) for v in values if v is not None]
    return max(present) if present else None


def _unite_tags(session: Session, survivor: int, others: Sequence[int]) -> tuple[int, int, dict[int, list[int]]]:
    """Give the survivor every tag a person put on the others (the earliest
    assignment of each); remove the others' assignments.

    Rule-managed tags are not copied: they follow the customer's data, and the
    survivor's data changed with the merge, so they are recomputed on the
    survivor afterwards (``rules.apply_rules_to_customer``); copying them gave
    the survivor 普通会员 and 银卡会员 at once. A tag the survivor has from a
    rule that a person gave one of the others becomes a manual one.
    """
    rows = session.execute(
        select(TA.customer_id, TA.tag_id, TA.source, TA.rule_id, TA.assigned_at, TA.assigned_by_id).where(
            TA.customer_id.in_([survivor, *others])
        )
    ).all()
    have = {r.tag_id: r for r in rows if r.customer_id == survivor}
    best: dict[int, object] = {}
    tags_of: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        if r.customer_id == survivor:
            continue
        tags_of[r.customer_id].append(r.tag_id)
        if r.source != SOURCE_MANUAL:
            continue
        own = have.get(r.tag_id)
        if own is not None and own.source == SOURCE_MANUAL:
            continue
        current = best.get(r.tag_id)
        if current is None or as_utc(r.assigned_at) < as_utc(current.assigned_at):
            best[r.tag_id] = r
    # Rule assignments of the survivor that a person's assignment replaces.
    made_manual = [tag_id for tag_id in best if tag_id in have]
    if made_manual:
        session.execute(delete(TagAssignment.__table__).where(TA.customer_id == survivor, TA.tag_id.in_(made_manual)))
    if best:
        session.execute(
            insert(TagAssignment.__table__),
            [
                {
                    "customer_id": survivor,
                    "tag_id": r.tag_id,
                    "source": SOURCE_MANUAL,
                    "rule_id": None,
                    "assigned_at": r.assigned_at,
                    "assigned_by_id": r.assigned_by_id,
                }
                for r in best.values()
            ],
        )
    removed = session.execute(delete(TagAssignment.__table__).where(TA.customer_id.in_(list(others)))).rowcount
    return len(best) - len(made_manual), removed, {k: sorted(v) for k, v in tags_of.items()}


def _recompute_rule_tags(survivor: int) -> dict[str, list[int]]:
    """The survivor's lifecycle stage and rule tags from its merged data (after the
    merge has committed: the rules read what the merge wrote)."""
    from meiqia_app.services.tags.rules import runs as rules  # rules imports customer services: import late

    try:
        change = rules.apply_rules_to_customer(survivor)
        return {"added": list(change.added), "removed": list(change.removed)}
    except Exception:  # noqa: BLE001 - the merge is saved; the nightly run will catch up
        log.exception("recomputing rule tags of merged customer %s failed", survivor)
        return {"added": [], "removed": []}


def _guarded_update(session: Session, row, expected: int, values: dict) -> None:
    result = session.execute(update(Customer.__table__).where(C.id == row.id, C.version == expected).values(**values))
    if result.rowcount != 1:  # someone saved in between (the read above is not a lock on PostgreSQL)
        raise Conflict(by=row.updated_by_name or "?", at=format_local(row.updated_at), customer_id=row.id)


def _refresh_search(session: Session, customer_id: int, values: dict) -> None:
    row = search_row(values["name"], values["phone"], values["email"], values["external_id"], values["visitor_id"])
    result = session.execute(
        update(CustomerSearch.__table__).where(CustomerSearch.__table__.c.customer_id == customer_id).values(**row)
    )
    if result.rowcount == 0:
        session.execute(insert(CustomerSearch.__table__).values(customer_id=customer_id, **row))


def merge_customers(
    actor: Actor,
    survivor_id: int,
    other_ids: Sequence[int],
    field_choices: dict[str, int],
    expected_versions: dict[int, int],
) -> MergeResult:
    """Merge ``other_ids`` into ``survivor_id`` in one transaction (see the module doc).

    ``field_choices`` maps an editable field to the customer whose value the
    survivor takes; fields not named keep the survivor's value, or where it has
    none take the first other customer's (``default_choices``).
    ``expected_versions`` holds the version of every customer the dialog showed;
    any change since raises Conflict and nothing is written.
    """
    require(actor, "customer.merge", action="customer.merge", target_type="customer", target_id=survivor_id)
    survivor, others, choices, versions = _clean_merge_input(survivor_id, other_ids, field_choices, expected_versions)
    ids = [survivor, *others]
    now = utcnow()
    by_name = actor.display_name or actor.username
    access = CustomerAccess(actor)
    masked = custom_merge.masked_choices(access, choices)
    if masked:  # the dialog offers no choice of a value the actor sees masked
        refuse(
            actor, "customer.merge", "dup.cf_masked_choice", target_type="customer", target_id=survivor, fields=masked
        )
    with write_session() as session:
        rows = _load_mergeable(session, access, ids, versions)
        custom = custom_merge.merged_values(
            {i: rows[i].custom_fields for i in ids}, survivor, ids, {f: c for f, c in choices.items() if "." in f}
        )
        choices = {f: c for f, c in choices.items() if "." not in f}
        old = {i: {f: getattr(rows[i], f) for f in EDITABLE_FIELDS} for i in ids}
        choices = {**default_choices(old, survivor, ids), **choices}
        new_fields = {field: old[choices[field]][field] for field in EDITABLE_FIELDS}

        # Move the others' history to the survivor.
        moved: dict[str, int] = {}
        moved_ids: dict[int, dict[str, list[int]]] = defaultdict(dict)
        per_customer: dict[int, dict[str, int]] = defaultdict(dict)
        for name, table in MOVED_TABLES:
            if name in MOVED_IDS_LOGGED:
                for owner, row_id in session.execute(
                    select(table.c.customer_id, table.c.id).where(table.c.customer_id.in_(others)).order_by(table.c.id)
                ):
                    moved_ids[owner].setdefault(name, []).append(row_id)
            for owner, count in session.execute(
                select(table.c.customer_id, func.count())
                .where(table.c.customer_id.in_(others))
                .group_by(table.c.customer_id)
            ):
                per_customer[owner][name] = count
            moved[name] = session.execute(
                update(table).where(table.c.customer_id.in_(others)).values(customer_id=survivor)
            ).rowcount
        tags_added, tag_rows_removed, tags_of = _unite_tags(session, survivor, others)
        moved["tags_added"] = tags_added
        moved["tag_assignments_removed"] = tag_rows_removed

        # The survivor: chosen fields, united attributes, recomputed figures.
        survivor_row = rows[survivor]
        attributes, attributes_added = _merged_attributes([survivor_row, *(rows[i] for i in others)])
        changes = {f: v for f, v in new_fields.items() if v != old[survivor][f]}
        values = dict(changes)
        if "name" in changes:
            full, initials = pinyin_of(new_fields["name"])
            values.update(name_pinyin=full[:256], name_initials=initials[:64])
        if custom:
            values["custom_fields"] = custom.patch(session)
        values.update(_purchase_figures(session, survivor))
        values.update(
            custom_attributes=attributes,
            registered_at=min(as_utc(rows[i].registered_at) for i in ids),
            last_active_at=_latest(rows[i].last_active_at for i in ids),
            last_login_at=_latest(rows[i].last_login_at for i in ids),
            version=versions[survivor] + 1,
            updated_at=now,
            updated_by_id=actor.user_id,
            updated_by_name=by_name,
        )
        _guarded_update(session, survivor_row, versions[survivor], values)
        if any(f in changes for f in ("name", "phone", "email", "external_id", "visitor_id")):
            _refresh_search(session, survivor, new_fields)

        # The others: to the trash (recoverable); their history now lives on the survivor.
        for customer_id in others:
            _guarded_update(
                session,
                rows[customer_id],
                versions[customer_id],
                {
                    "status": STATUS_TRASHED,
                    "trashed_at": now,
                    "order_count": 0,
                    "total_spent_cents": 0,
                    "first_purchase_at": None,
                    "last_purchase_at": None,
                    "version": versions[customer_id] + 1,
                    "updated_at": now,
                    "updated_by_id": actor.user_id,
                    "updated_by_name": by_name,
                },
            )

        entry = audit.record(
            session,
            actor,
            "customer.merge",
            target_type="customer",
            target_id=survivor,
            details={
                "survivor_id": survivor,
                "merged_ids": others,
                "moved": moved,
                "field_choices": {**choices, **custom.choices},
                "survivor_changes": {
                    **{f: [_audit_value(f, old[survivor][f]), _audit_value(f, v)] for f, v in changes.items()},
                    **custom.audited_changes(),
                },
                **custom.field_labels(),
                "survivor_recomputed": {
                    f: [_audit_value(f, getattr(survivor_row, f)), _audit_value(f, values[f])]
                    for f in RECOMPUTED_FIELDS
                },
                "custom_attributes_added": attributes_added,
                "versions": {str(i): [versions[i], versions[i] + 1] for i in ids},
                "merged": {
                    str(i): {
                        "fields": _snapshot(rows[i]),
                        "tag_ids": tags_of.get(i, []),
                        "moved": {name: per_customer[i].get(name, 0) for name, _ in MOVED_TABLES},
                        "moved_ids": moved_ids.get(i, {}),
                    }
                    for i in others
                },
            },
        )
        webhooks.emit(session, "customer.merged", survivor, {"merged_ids": list(others)})
        customers_changed(session, [survivor, *others], MERGED)
        audit_id = entry.id
    rule_tags = _recompute_rule_tags(survivor)
    return MergeResult(
        survivor_id=survivor,
        merged_ids=others,
        survivor_version=versions[survivor] + 1,
        moved=moved,
        audit_id=audit_id,
        rule_tags=rule_tags,
    )
