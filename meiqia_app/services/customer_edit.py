"""Creating and editing customers (CUST-4): validation, optimistic locking,
search-text upkeep and an audit entry with the masked field diff."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import update
from sqlmodel import Session

from meiqia_app.db import write_session
from meiqia_app.models import Customer, CustomerSearch
from meiqia_app.services import audit
from meiqia_app.services.customer_list import invalidate_counts, limit_exact_lookups
from meiqia_app.services.customer_validation import clean_customer_fields
from meiqia_app.services.customers import editable_customer
from meiqia_app.services.duplicate_check import existing_customers
from meiqia_app.services.errors import Conflict, DuplicateCustomer, ValidationError
from meiqia_app.services.masking import mask_diff
from meiqia_app.services.rbac import Actor, require
from meiqia_app.services.search_text import pinyin_of, search_row
from meiqia_app.timeutil import format_local, utcnow

SEARCH_FIELDS = ("name", "phone", "email", "external_id", "visitor_id")
# Fields an actor without customer.view_sensitive sees masked: the form sends
# them empty unless the person typed a new value, and empty means "keep".
SENSITIVE_EDIT_FIELDS = ("phone", "email", "address", "birthday")


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
    """
    require(actor, "customer.edit", action="customer.update", target_type="customer", target_id=customer_id)
    raw = dict(raw)
    if not actor.can("customer.view_sensitive"):
        for field in SENSITIVE_EDIT_FIELDS:
            if not str(raw.get(field) or "").strip():
                raw.pop(field, None)
    values = clean_customer_fields(raw, partial=True)
    with write_session() as session:
        customer = editable_customer(session, customer_id, actor)
        if customer.version != int(expected_version):
            raise Conflict(by=customer.updated_by_name or "?", at=format_local(customer.updated_at))
        diff = {
            field: (getattr(customer, field), value)
            for field, value in values.items()
            if getattr(customer, field) != value
        }
        if not diff:
            return customer.version
        changes = _with_pinyin({field: new for field, (_old, new) in diff.items()})
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
            fresh = session.get(Customer, customer.id)
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
            details={"changes": mask_diff(diff), "version": int(expected_version) + 1},
        )
        new_version = int(expected_version) + 1
    invalidate_counts()
    _refresh_rules(customer_id)
    return new_version


def create_customer(
    actor: Actor, raw: dict, session: Session | None = None, acknowledged: Iterable[int] | None = ()
) -> int:
    """A customer made by hand (or one row inside a caller's session).

    A customer who repeats an existing one's phone, e-mail or external id
    (services/duplicate_check) is not saved: DuplicateCustomer names them. The
    person may then save anyway: ``acknowledged`` holds the ids of the
    customers they were shown; only a repeat of someone else is refused again.
    ``acknowledged=None`` skips the check.
    """
    require(actor, "customer.create", action="customer.create", target_type="customer")
    values = _with_pinyin(clean_customer_fields(raw))
    seen = None if acknowledged is None else _clean_ids(acknowledged)
    if seen is not None and not actor.can("customer.view_sensitive"):
        # Saying "this number is 张伟's" is an exact look-up by a number the role
        # sees masked: it counts against the same hourly allowance as the search.
        # (Before the write transaction: a refusal is audited in one of its own.)
        limit_exact_lookups(
            actor, tuple(v for f in ("phone", "email") if (v := values.get(f))), "customer.create_duplicate_check"
        )
    if session is not None:
        return _insert(session, actor, values, seen)
    with write_session() as own:
        new_id = _insert(own, actor, values, seen)
    invalidate_counts()
    _refresh_rules(new_id)
    return new_id


def _clean_ids(values: Iterable) -> frozenset[int]:
    ids = set()
    for value in list(values)[:20]:
        try:
            ids.add(int(value))
        except (TypeError, ValueError):
            continue
    return frozenset(ids)


def _check_duplicates(session: Session, values: dict, acknowledged: frozenset[int]) -> list[int]:
    """Raise DuplicateCustomer unless every customer the new one repeats was acknowledged;
    returns the acknowledged repeats (for the audit entry)."""
    matches = existing_customers(session.connection(), values)
    if any(match.customer_id not in acknowledged for match in matches):
        raise DuplicateCustomer(matches)
    return sorted({match.customer_id for match in matches})


def _refresh_rules(customer_id: int) -> None:
    """Rule tags and lifecycle stage follow the customer's data (TAG-3); see services/rules.py."""
    from meiqia_app.services import rules  # rules imports customer services: import late

    rules.refresh_customer(customer_id)


def _insert(session: Session, actor: Actor, values: dict, acknowledged: frozenset[int] | None) -> int:
    repeats = [] if acknowledged is None else _check_duplicates(session, values, acknowledged)
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
        details={"fields": sorted(values), **({"saved_despite_duplicates": repeats} if repeats else {})},
    )
    return customer.id


__all__ = ["update_customer", "create_customer", "ValidationError"]
