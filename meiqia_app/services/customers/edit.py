"""Creating and editing customers (CUST-4): validation, optimistic locking,
search-text upkeep and an audit entry with the masked field diff."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlmodel import Session

from meiqia_app.db import read_connection, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer, CustomerSearch
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import values as custom_field_values
from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX, FREE_TEXT_TYPES, field_name, key_of
from meiqia_app.services.customers.access import CustomerAccess, mask_diff
from meiqia_app.services.customers.changes import CREATED, EDITED, customers_changed
from meiqia_app.services.customers.duplicates.check import IDENTITY_FIELDS, existing_customers
from meiqia_app.services.customers.listing import limit_exact_lookups
from meiqia_app.services.customers.search_text import pinyin_of, search_row
from meiqia_app.services.customers.validation import EDITABLE_FIELDS, TEXT_LIMITS, clean_customer_fields, clean_extras
from meiqia_app.services.errors import Conflict, DuplicateCustomer, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.timeutil import format_local, utcnow

SEARCH_FIELDS = ("name", "phone", "email", "external_id", "visitor_id")


def _refresh_search_text(session: Session, customer: Customer) -> None:
    values = search_row(customer.name, customer.phone, customer.email, customer.external_id, customer.visitor_id)
    row = session.get(CustomerSearch, customer.id)
    if row is None:
        session.add(CustomerSearch(customer_id=customer.id, **values))
    elif any(getattr(row, column) != value for column, value in values.items()):
        for column, value in values.items():
            setattr(row, column, value)
        session.add(row)


def _with_pinyin(values: dict) -> dict:
    if "name" in values:
        full, initials = pinyin_of(values["name"])
        values = {**values, "name_pinyin": full[:256], "name_initials": initials[:64]}
    return values


def update_customer(actor: Actor, customer_id: int, expected_version: int, raw: dict) -> int:
    """Save an edit made on version ``expected_version``; returns the new version.

    Raises Conflict when someone saved in between (nothing is overwritten).
    ``raw`` may also carry ``custom_attributes`` (merged: a None value removes
    a key), the consents ``consent_marketing`` / ``consent_analytics``, and
    ``custom_fields``: {key: value} of the defined custom fields (validated by
    type, an empty value clears; services/custom_field_values.clean_changes),
    written as a patch of the stored document inside the same versioned UPDATE
    and audited with the other changes as "cf.<key>" (before: the default where
    the customer had no value).
    """
    require(actor, "customer.edit", action="customer.update", target_type="customer", target_id=customer_id)
    raw = dict(raw)
    access = CustomerAccess(actor)
    if not access.sees_sensitive:
        # Fields this actor sees masked (customer_access.SENSITIVE): the form sends
        # them empty unless the person typed a new value, and empty means "keep".
        for field in access.masked_fields(EDITABLE_FIELDS):
            if not str(raw.get(field) or "").strip():
                raw.pop(field, None)
    values = clean_customer_fields(raw, partial=True)
    extras = clean_extras(raw)
    with write_session() as session:
        customer = access.load(session, customer_id, for_write=True, action="customer.update")
        if customer.version != int(expected_version):
            raise Conflict(by=customer.updated_by_name or "?", at=format_local(customer.updated_at))
        values.update(_extra_values(customer, extras))
        diff = {
            field: (getattr(customer, field), value)
            for field, value in values.items()
            if getattr(customer, field) != value
        }
        custom = custom_field_values.clean_changes(access, raw.get("custom_fields"), customer.custom_fields)
        diff.update(custom.diff())
        if not diff:
            return customer.version
        changes = _with_pinyin(
            {field: new for field, (_old, new) in diff.items() if not field.startswith(FIELD_PREFIX)}
        )
        if custom:
            column = Customer.__table__.c.custom_fields
            changes["custom_fields"] = get_adapter(session.get_bind()).custom_patch(column, custom.sets, custom.removes)
        now = utcnow()
        # The version check is repeated in the UPDATE itself: two saves racing
        # past the read above cannot both win.
        result = session.execute(
            update(Customer)
            .where(Customer.id == customer.id, Customer.version == int(expected_version))
            .values(
                **changes,
                version=Customer.version + 1,
                updated_at=now,
                updated_by_id=actor.user_id,
                updated_by_name=actor.display_name or actor.username,
            )
        )
        if result.rowcount != 1:
            session.rollback()
            fresh = access.load(session, customer.id)
            raise Conflict(by=fresh.updated_by_name or "?", at=format_local(fresh.updated_at))
        session.expire(customer)
        if any(field in diff for field in SEARCH_FIELDS):
            _refresh_search_text(session, customer)
        audit.record(
            session,
            actor,
            "customer.update",
            target_type="customer",
            target_id=customer.id,
            details={
                "changes": mask_diff(_audited(diff)),
                "version": int(expected_version) + 1,
                **_custom_field_labels(diff),
            },
        )
        webhooks.emit(session, "customer.updated", customer.id, {"changes": sorted(diff)})
        # Counts, report caches and the on-change rules follow (services/customers/change_subscribers.py).
        customers_changed(session, [customer.id], EDITED)
        new_version = int(expected_version) + 1
    return new_version


# Free text that names or identifies a person: the audit log (never erased) keeps a
# keyed hash and the length (audit.text_ref), not the text, like note bodies.
# Contact fields are masked (mask_diff); choices (gender, source, stage, tier)
# and the coarse region stay readable.
AUDIT_TEXT_REF_FIELDS = ("name", "company", "external_id", "visitor_id")


def _as_text_ref(field: str) -> bool:
    """Kept as a reference: the free-text built-in fields, and custom fields of a free-text
    type (text, long text, link, phone, e-mail) unless sensitive (mask_diff masks those)."""
    if field in AUDIT_TEXT_REF_FIELDS:
        return True
    key = key_of(field)
    custom = custom_field_catalog.field(key) if key else None
    return custom is not None and custom.field_type in FREE_TEXT_TYPES and not custom.sensitive


def _custom_field_labels(diff: dict) -> dict:
    """``{"field_labels": {"cf.<key>": {"zh", "en"}}}`` for the custom fields of a diff: the
    labels at the time, so the timeline names a field the same after it is renamed or
    deleted (services/customers/timeline.py); ``{}`` when no custom field changed."""
    labels = {}
    for name in diff:
        field = custom_field_catalog.field(key_of(name) or "") if name.startswith(FIELD_PREFIX) else None
        if field is not None:
            labels[name] = field.labels
    return {"field_labels": labels} if labels else {}


def _audited(diff: dict) -> dict:
    """The diff as the audit log keeps it: personal free text as references, custom
    attributes (which may hold personal values) as the keys that changed."""
    kept = {
        field: tuple(audit.text_ref(value) if value else value for value in pair) if _as_text_ref(field) else pair
        for field, pair in diff.items()
    }
    if "custom_attributes" not in diff:
        return kept
    old, new = (json.loads(v or "{}") for v in diff["custom_attributes"])
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return {**kept, "custom_attributes": (None, {"keys": keys})}


def _extra_values(customer: Customer | None, extras: dict) -> dict:
    """Column values for the cleaned extras (custom attributes merged into the customer's)."""
    values: dict = {}
    if "custom_attributes" in extras:
        merged = json.loads(customer.custom_attributes or "{}") if customer is not None else {}
        if not isinstance(merged, dict):
            merged = {}
        for key, value in extras["custom_attributes"].items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if len(merged) > MAX_ATTRIBUTES:
            raise ValidationError.single("custom_attributes", "error.too_many", max=MAX_ATTRIBUTES)
        values["custom_attributes"] = json.dumps(merged, ensure_ascii=False, sort_keys=True)
    now = utcnow()
    for consent in ("consent_marketing", "consent_analytics"):
        if consent in extras and (customer is None or bool(getattr(customer, consent)) != extras[consent]):
            values[consent] = extras[consent]
            values[f"{consent}_at"] = now
    return values


MAX_ATTRIBUTES = 50


def create_customer(
    actor: Actor,
    raw: dict,
    session: Session | None = None,
    acknowledged: Iterable[int] | None = (),
    acknowledged_hidden: Iterable[str] = (),
) -> int:
    """A customer made by hand, through the open API, or one row inside a caller's session.

    A customer who repeats an existing one's phone, e-mail or external id
    (services/customers/duplicates/check) is not saved: DuplicateCustomer names them (the
    open API answers 409 with the first one's id). One outside the actor's data
    scope is named by its field only ("a customer you cannot see already has
    this phone"): no id, no name. The person may then save anyway:
    ``acknowledged`` holds the ids of the customers they were shown,
    ``acknowledged_hidden`` the fields of those they could not see; only a
    repeat of someone else is refused again. ``acknowledged=None`` skips the check.
    """
    require(actor, "customer.create", action="customer.create", target_type="customer")
    seen = None if acknowledged is None else (_clean_ids(acknowledged), _clean_fields(acknowledged_hidden))
    if seen is not None and actor.user_id is not None and not actor.can("customer.view_sensitive"):
        # Saying "this number is 张伟's" is an exact look-up by a number the role
        # sees masked: it counts against the same hourly allowance as the search.
        # (Before the write transaction: a refusal is audited in one of its own.
        # An API key is an integration the admin issued: each miss creates a
        # customer, so guessing through it is loud; see docs/api.md.)
        values = clean_customer_fields(raw)
        limit_exact_lookups(
            actor, tuple(v for f in ("phone", "email") if (v := values.get(f))), "customer.create_duplicate_check"
        )
    if session is not None:
        return new_customer(session, actor, raw, seen)
    with write_session() as own:
        new_id = new_customer(own, actor, raw, seen)
    return new_id


def _clean_ids(values: Iterable) -> frozenset[int]:
    ids = set()
    for value in list(values)[:20]:
        try:
            ids.add(int(value))
        except (TypeError, ValueError):
            continue
    return frozenset(ids)


def _clean_fields(values: Iterable) -> frozenset[str]:
    return frozenset(v for v in list(values or ())[:10] if isinstance(v, str) and v in IDENTITY_FIELDS)


Acknowledged = tuple[frozenset[int], frozenset[str]]  # ids shown, fields of customers not shown


def _check_duplicates(session: Session, actor: Actor, values: dict, acknowledged: Acknowledged) -> list[int]:
    """Raise DuplicateCustomer unless every customer the new one repeats was acknowledged
    (one the actor may not see: by its field); returns the repeats (for the audit entry).
    The error carries what the actor may be told only (ExistingCustomer.as_shown)."""
    ids, fields = acknowledged
    matches = existing_customers(session.connection(), values, CustomerAccess(actor))
    if any((m.field not in fields) if not m.visible else (m.customer_id not in ids) for m in matches):
        raise DuplicateCustomer([m.as_shown() for m in matches])
    return sorted({match.customer_id for match in matches})


def new_customer(
    session: Session, actor: Actor, raw: dict, acknowledged: Acknowledged | None = (frozenset(), frozenset())
) -> int:
    """Validate and insert a customer in the caller's transaction (the caller checked its
    own permission: customer.create, or event.ingest for a visitor's prospect).
    ``acknowledged``: (ids, fields), see create_customer; None: no duplicate check."""
    values = _with_pinyin(clean_customer_fields(raw))
    values.update(_extra_values(None, clean_extras(raw)))
    # Custom fields: the values sent (required ones checked); defaults need no writing.
    custom = custom_field_values.clean_changes(
        CustomerAccess(actor), raw.get("custom_fields"), {}, creating=True, require_all="custom_fields" in raw
    )
    if custom.sets:
        values["custom_fields"] = {key: value for key, value in custom.sets.items() if value is not None}
    return _insert(session, actor, values, acknowledged)


def find_by_external_id(actor: Actor, external_id) -> int | None:
    """The working-set customer with this external id (the lowest id if several), or None."""
    require(actor, "customer.view", action="customer.lookup", target_type="customer")
    value = _clean_external_id(external_id)
    C = Customer.__table__.c
    with read_connection() as conn:
        return conn.execute(
            select(C.id)
            .where(C.external_id == value, C.status != "trashed", C.erased_at.is_(None))
            .order_by(C.id)
            .limit(1)
        ).scalar()


def _clean_external_id(raw) -> str:
    value = str(raw or "").strip()
    if not value:
        raise ValidationError.single("external_id", "error.required")
    if len(value) > TEXT_LIMITS["external_id"]:
        raise ValidationError.single("external_id", "error.too_long", max=TEXT_LIMITS["external_id"])
    return value


def upsert_by_external_id(actor: Actor, external_id, raw: dict) -> tuple[int, bool, int]:
    """Create or update the customer with this external id (a shop syncing its members).

    Returns (id, created, version). Only the fields given change; creating
    refuses a phone or e-mail another customer has (DuplicateCustomer), like the API's
    create. An update races nobody's form: it is applied to the version read
    just before (retried once when someone saved in between).
    """
    require(actor, "customer.edit", action="customer.upsert", target_type="customer")
    value = _clean_external_id(external_id)
    fields = {k: v for k, v in dict(raw).items() if k != "external_id"}
    C = Customer.__table__.c
    for _attempt in range(2):
        with read_connection() as conn:
            found = conn.execute(
                select(C.id, C.version)
                .where(C.external_id == value, C.status != "trashed", C.erased_at.is_(None))
                .order_by(C.id)
                .limit(1)
            ).first()
        if found is None:
            new_id = create_customer(actor, {**fields, "external_id": value})
            return new_id, True, 1
        try:
            version = update_customer(actor, found.id, found.version, fields)
        except Conflict:
            continue
        except NotFound:
            continue
        return found.id, False, version
    raise Conflict(by="?", at="")


def _insert(session: Session, actor: Actor, values: dict, acknowledged: Acknowledged | None) -> int:
    repeats = [] if acknowledged is None else _check_duplicates(session, actor, values, acknowledged)
    now = utcnow()
    customer = Customer(
        **values,
        registered_at=now,
        last_active_at=now,
        created_at=now,
        updated_at=now,
        updated_by_id=actor.user_id,
        updated_by_name=actor.display_name or actor.username,
    )
    session.add(customer)
    session.flush()
    _refresh_search_text(session, customer)
    audit.record(
        session,
        actor,
        "customer.create",
        target_type="customer",
        target_id=customer.id,
        details={
            "fields": sorted(_created_fields(values)),
            **({"saved_despite_duplicates": repeats} if repeats else {}),
        },
    )
    webhooks.emit(session, "customer.created", customer.id)
    customers_changed(session, [customer.id], CREATED)
    return customer.id


def _created_fields(values: dict) -> list[str]:
    """The fields a new customer was given, custom ones as "cf.<key>"."""
    names = [field for field in values if field != "custom_fields"]
    return names + [field_name(key) for key in values.get("custom_fields") or {}]


def new_customers_bulk(
    session: Session, actor: Actor, raws: list[dict], registered_at=None, audit_each: bool = True
) -> list[int | ValidationError]:
    """Several customers in one statement (visitors seen for the first time by behaviour
    ingestion), validated like any other; in the caller's transaction, which checked its own
    permission. Returns, per raw, the new id or the ValidationError that refused it. Each
    customer gets its search row, its audit entry (unless the caller's entry lists them:
    ``audit_each=False``) and its customer.created notification."""
    from sqlalchemy import insert

    now = utcnow()
    results: list[int | ValidationError] = []
    rows, positions = [], []
    for position, raw in enumerate(raws):
        try:
            values = _with_pinyin(clean_customer_fields(raw))
        except ValidationError as error:
            results.append(error)
            continue
        results.append(0)
        moment = registered_at or now
        model = Customer(
            **values,
            registered_at=moment,
            last_active_at=moment,
            created_at=now,
            updated_at=now,
            updated_by_id=actor.user_id,
            updated_by_name=actor.display_name or actor.username,
        )
        # Every column, the model's defaults included: one multi-row INSERT … RETURNING.
        rows.append({key: value for key, value in model.model_dump().items() if key != "id"})
        positions.append(position)
    if not rows:
        return results
    inserted = (
        session.execute(
            insert(Customer.__table__).returning(Customer.__table__.c.id, sort_by_parameter_order=True), rows
        )
        .scalars()
        .all()
    )
    session.execute(
        insert(CustomerSearch.__table__),
        [
            {"customer_id": new_id, **search_row(*(row[field] for field in SEARCH_FIELDS))}
            for new_id, row in zip(inserted, rows, strict=True)
        ],
    )
    for position, new_id, row in zip(positions, inserted, rows, strict=True):
        results[position] = new_id
        if not audit_each:
            continue
        audit.record(
            session,
            actor,
            "customer.create",
            target_type="customer",
            target_id=new_id,
            details={"fields": sorted(k for k, v in row.items() if k in EDITABLE_AUDIT and v is not None)},
        )
    webhooks.emit_many(session, "customer.created", list(inserted))
    customers_changed(session, inserted, CREATED)
    return results


EDITABLE_AUDIT = frozenset(
    ("name", "gender", "birthday", "phone", "email", "address", "province", "city", "company", "source")
    + ("external_id", "visitor_id", "lifecycle_stage", "membership_tier")
)


__all__ = ["update_customer", "create_customer", "new_customer", "upsert_by_external_id", "ValidationError"]
