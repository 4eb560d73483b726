"""One customer: the profile card (CUST-4) and the open API's customer record."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlmodel import select

from meiqia_app.db import read_connection, read_session
from meiqia_app.i18n import tr
from meiqia_app.models import Customer, ErasureRequest
from meiqia_app.models.customer import STATUS_ACTIVE, STATUS_TRASHED
from meiqia_app.services.customer_dto import TagChip, label, money, region_text, tags_for
from meiqia_app.services.errors import NotFound, ReadOnly
from meiqia_app.services.masking import MASK, mask_address, mask_email, mask_phone
from meiqia_app.services.rbac import Actor, require
from meiqia_app.timeutil import as_utc, format_local


@dataclasses.dataclass
class ConsentView:
    key: str
    label: str
    granted: bool
    at: str


@dataclasses.dataclass
class CustomerDetail:
    id: int
    name: str
    gender: str
    gender_code: str
    birthday: str
    phone: str
    email: str
    address: str
    province: str
    city: str
    region: str
    company: str
    source: str
    source_code: str
    external_id: str
    visitor_id: str
    registered_at: str
    last_active_at: str
    last_login_at: str
    first_purchase_at: str
    last_purchase_at: str
    order_count: int
    total_spent: str
    lifecycle: str
    lifecycle_code: str
    tier: str
    tier_code: str
    status: str
    status_code: str
    tags: list[TagChip]
    consents: list[ConsentView]
    custom_attributes: list[list[str]]
    version: int
    updated_at: str
    updated_by: str
    updated_line: str  # "last changed by …", or "from an import / the seed" when nobody has
    read_only: bool  # archived or trashed: nothing changes until it is restored
    sensitive_visible: bool
    erasure_pending: bool
    erased: bool


def parse_id(value: object) -> int:
    """An id from untrusted input; anything that is not one is simply not found."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise NotFound() from None


def _get_row(session, customer_id: int) -> Customer:
    customer = session.get(Customer, parse_id(customer_id))
    if customer is None:
        raise NotFound()
    return customer


def writable_customer(session, customer_id: int) -> Customer:
    """A customer that systems may still change (orders, the open API, ingestion).

    Trashed or erased: not found. Archived (out of the working set until
    restored) or with an erasure pending: read-only (ReadOnly). People's
    changes go through editable_customer, which adds who may see the trash.
    """
    customer = _get_row(session, customer_id)
    if customer.status == STATUS_TRASHED or customer.erased_at is not None:
        raise NotFound()
    _refuse_read_only(session, customer)
    return customer


def editable_customer(session, customer_id: int, actor: Actor) -> Customer:
    """A customer a person may change (profile, tags, notes, consent): an active one.

    An archived or trashed customer is read-only until it is restored
    (ReadOnly); one in the trash is simply not found for someone who may
    not see the trash, and an erased one for everybody.
    """
    customer = _get_row(session, customer_id)
    if customer.erased_at is not None:
        raise NotFound()
    if customer.status == STATUS_TRASHED and not actor.can("customer.delete"):
        raise NotFound()
    _refuse_read_only(session, customer)
    return customer


def _refuse_read_only(session, customer: Customer) -> None:
    if customer.status == "archived":
        raise ReadOnly("error.customer_archived", status=customer.status)
    if customer.status != STATUS_ACTIVE:
        raise ReadOnly(status=customer.status)
    if erasure_pending(session, customer.id):
        raise ReadOnly("error.erasure_pending")


def updated_line(lang: str, by_name: str | None, at) -> str:
    """ "Last changed by … at …", or, for a customer no person has changed yet
    (seeded or created by the system), that it came from an import or the seed."""
    when = format_local(at)
    if by_name:
        return tr(lang, "customer.updated_by", by=by_name, at=when)
    return tr(lang, "customer.created_by_system", at=when)


def erasure_pending(session, customer_id: int) -> bool:
    return (
        session.exec(
            select(ErasureRequest.id).where(
                ErasureRequest.customer_id == customer_id, ErasureRequest.status == "pending"
            )
        ).first()
        is not None
    )


def get_customer(actor: Actor, customer_id: int, lang: str = "zh") -> CustomerDetail:
    require(actor, "customer.view", action="customer.view", target_type="customer", target_id=customer_id)
    with read_session() as session:
        c = _get_row(session, customer_id)
        if c.status == "trashed" and not actor.can("customer.delete"):
            raise NotFound()
        pending = erasure_pending(session, c.id)
        sensitive = actor.can("customer.view_sensitive")
        with read_connection() as conn:
            tags = tags_for(conn, [c.id], limit=None).get(c.id, [])
        try:
            attributes = json.loads(c.custom_attributes or "{}")
        except ValueError:
            attributes = {}
        return CustomerDetail(
            id=c.id,
            name=c.name,
            gender=label(lang, "gender", c.gender),
            gender_code=c.gender,
            birthday=(c.birthday.isoformat() if c.birthday else "") if sensitive else (MASK if c.birthday else ""),
            phone=(c.phone or "") if sensitive else mask_phone(c.phone),
            email=(c.email or "") if sensitive else mask_email(c.email),
            address=(c.address or "") if sensitive else mask_address(c.address),
            province=c.province or "",
            city=c.city or "",
            region=region_text(c.province, c.city),
            company=c.company or "",
            source=label(lang, "source", c.source),
            source_code=c.source,
            external_id=c.external_id or "",
            visitor_id=c.visitor_id or "",
            registered_at=format_local(c.registered_at),
            last_active_at=format_local(c.last_active_at),
            last_login_at=format_local(c.last_login_at),
            first_purchase_at=format_local(c.first_purchase_at),
            last_purchase_at=format_local(c.last_purchase_at),
            order_count=c.order_count,
            total_spent=money(c.total_spent_cents) if sensitive else MASK,
            lifecycle=label(lang, "lifecycle", c.lifecycle_stage),
            lifecycle_code=c.lifecycle_stage,
            tier=label(lang, "tier", c.membership_tier),
            tier_code=c.membership_tier,
            status=label(lang, "status", c.status),
            status_code=c.status,
            tags=tags,
            consents=[
                ConsentView(
                    "marketing",
                    label(lang, "consent", "marketing"),
                    c.consent_marketing,
                    format_local(c.consent_marketing_at),
                ),
                ConsentView(
                    "analytics",
                    label(lang, "consent", "analytics"),
                    c.consent_analytics,
                    format_local(c.consent_analytics_at),
                ),
            ],
            custom_attributes=[[str(k), str(v)] for k, v in attributes.items()],
            version=c.version,
            updated_at=format_local(c.updated_at),
            updated_by=c.updated_by_name or "",
            updated_line=updated_line(lang, c.updated_by_name, c.updated_at),
            read_only=c.status != STATUS_ACTIVE or c.erased_at is not None,
            sensitive_visible=sensitive,
            erasure_pending=pending,
            erased=c.erased_at is not None,
        )


# --- the open API's record ------------------------------------------------------------------


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 UTC ("2026-11-01T12:00:00Z"), None for none."""
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass
class CustomerRecord:
    """One customer as the open API and webhooks show it: codes and ISO times, masked
    like the profile card for an actor without customer.view_sensitive (phone, e-mail
    and address as the card shows them; birthday and amount spent left out)."""

    id: int
    name: str
    gender: str
    birthday: str | None
    phone: str | None
    email: str | None
    address: str | None
    province: str | None
    city: str | None
    company: str | None
    source: str
    external_id: str | None
    visitor_id: str | None
    lifecycle_stage: str
    membership_tier: str
    status: str
    registered_at: str | None
    last_active_at: str | None
    last_login_at: str | None
    first_purchase_at: str | None
    last_purchase_at: str | None
    order_count: int
    total_spent_cents: int | None
    consent: dict
    custom_attributes: dict
    tags: list[dict]
    version: int
    updated_at: str | None
    masked_fields: list[str]
    erasure_pending: bool
    erased: bool


MASKED_IN_RECORDS = ("phone", "email", "address", "birthday", "total_spent_cents")


def _attributes(raw: str | None) -> dict:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def record_of(c: Customer, sensitive: bool, tags: list[TagChip], pending: bool) -> CustomerRecord:
    """The record of a customer row (the caller checked that the actor may see it)."""
    return CustomerRecord(
        id=c.id,
        name=c.name,
        gender=c.gender,
        birthday=(c.birthday.isoformat() if c.birthday else None) if sensitive else None,
        phone=(c.phone or None) if sensitive else (mask_phone(c.phone) or None),
        email=(c.email or None) if sensitive else (mask_email(c.email) or None),
        address=(c.address or None) if sensitive else (mask_address(c.address) or None),
        province=c.province,
        city=c.city,
        company=c.company,
        source=c.source,
        external_id=c.external_id,
        visitor_id=c.visitor_id,
        lifecycle_stage=c.lifecycle_stage,
        membership_tier=c.membership_tier,
        status=c.status,
        registered_at=iso(c.registered_at),
        last_active_at=iso(c.last_active_at),
        last_login_at=iso(c.last_login_at),
        first_purchase_at=iso(c.first_purchase_at),
        last_purchase_at=iso(c.last_purchase_at),
        order_count=c.order_count,
        total_spent_cents=c.total_spent_cents if sensitive else None,
        consent={
            "marketing": bool(c.consent_marketing),
            "marketing_at": iso(c.consent_marketing_at),
            "analytics": bool(c.consent_analytics),
            "analytics_at": iso(c.consent_analytics_at),
        },
        custom_attributes=_attributes(c.custom_attributes),
        tags=[{"id": t.id, "name": t.name, "source": t.source} for t in tags],
        version=c.version,
        updated_at=iso(c.updated_at),
        masked_fields=[] if sensitive else list(MASKED_IN_RECORDS),
        erasure_pending=pending,
        erased=c.erased_at is not None,
    )


def get_customer_record(actor: Actor, customer_id: int) -> CustomerRecord:
    """One customer for the open API (same permission and visibility as the profile card)."""
    return customer_records(actor, [customer_id], action="customer.view")[0]


def customer_records(actor: Actor, customer_ids, action: str = "customer.list") -> list[CustomerRecord]:
    """Records of the given customers in that order; a single id that is not visible raises NotFound,
    in a list it is left out (trashed customers only with customer.delete, like the card)."""
    ids = [parse_id(i) for i in customer_ids]
    require(
        actor,
        "customer.view",
        action=action,
        target_type="customer",
        target_id=ids[0] if len(ids) == 1 else "",
    )
    if not ids:
        return []
    sensitive = actor.can("customer.view_sensitive")
    with read_session() as session:
        rows = {c.id: c for c in session.exec(select(Customer).where(Customer.id.in_(ids))).all()}
        visible = [rows[i] for i in ids if i in rows and (rows[i].status != "trashed" or actor.can("customer.delete"))]
        if len(ids) == 1 and not visible:
            raise NotFound()
        pending = set(
            session.exec(
                select(ErasureRequest.customer_id).where(
                    ErasureRequest.customer_id.in_([c.id for c in visible]), ErasureRequest.status == "pending"
                )
            ).all()
        )
        with read_connection() as conn:
            tags = tags_for(conn, [c.id for c in visible], limit=None)
        return [record_of(c, sensitive, tags.get(c.id, []), c.id in pending) for c in visible]
