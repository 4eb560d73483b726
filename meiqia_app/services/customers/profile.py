"""One customer: the profile card (CUST-4) and the open API's customer record."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlmodel import select

from meiqia_app.db import read_connection, read_session
from meiqia_app.i18n import tr
from meiqia_app.models import Customer, ErasureRequest
from meiqia_app.models.customer import STATUS_ACTIVE
from meiqia_app.services.custom_fields import records as custom_field_records
from meiqia_app.services.custom_fields.values import FieldGroupView, FieldValueView, grouped, value_views
from meiqia_app.services.customers.access import SENSITIVE, CustomerAccess, erasure_pending, parse_id
from meiqia_app.services.customers.dto import TagChip, label, money, region_text, tags_for
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.services.errors import NotFound
from meiqia_app.services.identity.rbac import Actor, require
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
    # The editable fields this actor sees masked (customer_access.SENSITIVE): the edit
    # form offers them empty, with the masked value as a hint; empty keeps the value.
    masked_fields: list[str] = dataclasses.field(default_factory=list)
    # The defined custom fields (services/custom_field_values.py), masked as the actor
    # sees them: by group for the card, all of them in order for the edit form.
    custom_groups: list[FieldGroupView] = dataclasses.field(default_factory=list)
    custom_fields: list[FieldValueView] = dataclasses.field(default_factory=list)


def updated_line(lang: str, by_name: str | None, at) -> str:
    """ "Last changed by … at …", or, for a customer no person has changed yet
    (seeded or created by the system), that it came from an import or the seed."""
    when = format_local(at)
    if by_name:
        return tr(lang, "customer.updated_by", by=by_name, at=when)
    return tr(lang, "customer.created_by_system", at=when)


def get_customer(actor: Actor, customer_id: int, lang: str = "zh") -> CustomerDetail:
    require(actor, "customer.view", action="customer.view", target_type="customer", target_id=customer_id)
    access = CustomerAccess(actor)
    with read_session() as session:
        c = access.load(session, customer_id)
        pending = erasure_pending(session, c.id)
        sensitive = access.sees_sensitive
        with read_connection() as conn:
            tags = tags_for(conn, [c.id], limit=None).get(c.id, [])
        try:
            attributes = json.loads(c.custom_attributes or "{}")
        except ValueError:
            attributes = {}
        custom = value_views(access, c.custom_fields, lang)
        # Every personal value through access.mask: the table of sensitive fields decides.
        return CustomerDetail(
            id=c.id,
            name=access.mask("name", c.name),
            gender=label(lang, "gender", c.gender),
            gender_code=c.gender,
            birthday=access.mask("birthday", c.birthday.isoformat() if c.birthday else ""),
            phone=access.mask("phone", c.phone or ""),
            email=access.mask("email", c.email or ""),
            address=access.mask("address", c.address or ""),
            province=c.province or "",
            city=c.city or "",
            region=region_text(c.province, c.city),
            company=access.mask("company", c.company or ""),
            source=label(lang, "source", c.source),
            source_code=c.source,
            external_id=access.mask("external_id", c.external_id or ""),
            visitor_id=access.mask("visitor_id", c.visitor_id or ""),
            registered_at=format_local(c.registered_at),
            last_active_at=format_local(c.last_active_at),
            last_login_at=format_local(c.last_login_at),
            first_purchase_at=format_local(c.first_purchase_at),
            last_purchase_at=format_local(c.last_purchase_at),
            order_count=c.order_count,
            total_spent=access.mask("total_spent", money(c.total_spent_cents)),
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
            masked_fields=list(access.masked_fields(EDITABLE_FIELDS)),
            custom_groups=grouped(custom, tr(lang, "field.group_other")),
            custom_fields=custom,
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
    # The defined custom fields, typed JSON by key (services/custom_fields/records.py).
    custom_fields: dict
    tags: list[dict]
    version: int
    updated_at: str | None
    masked_fields: list[str]
    erasure_pending: bool
    erased: bool


def _attributes(raw: str | None) -> dict:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


# The record's fields a role without customer.view_sensitive gets masked (phone, e-mail, address)
# or left out (None: birthday, amount spent), from the one table of sensitive fields.
def masked_in_records() -> tuple[str, ...]:
    return tuple(f for f in SENSITIVE if f in {field.name for field in dataclasses.fields(CustomerRecord)})


def record_of(c: Customer, access: CustomerAccess, tags: list[TagChip], pending: bool) -> CustomerRecord:
    """The record of a customer row (loaded through ``access``)."""
    return CustomerRecord(
        id=c.id,
        name=c.name,
        gender=c.gender,
        birthday=access.mask("birthday", c.birthday.isoformat() if c.birthday else None, hidden=None),
        phone=access.mask("phone", c.phone or None) or None,
        email=access.mask("email", c.email or None) or None,
        address=access.mask("address", c.address or None) or None,
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
        total_spent_cents=access.mask("total_spent_cents", c.total_spent_cents, hidden=None),
        consent={
            "marketing": bool(c.consent_marketing),
            "marketing_at": iso(c.consent_marketing_at),
            "analytics": bool(c.consent_analytics),
            "analytics_at": iso(c.consent_analytics_at),
        },
        custom_attributes=_attributes(c.custom_attributes),
        custom_fields=custom_field_records.record_values(access, c.custom_fields),
        tags=[{"id": t.id, "name": t.name, "source": t.source} for t in tags],
        version=c.version,
        updated_at=iso(c.updated_at),
        masked_fields=[*access.masked_fields(masked_in_records()), *custom_field_records.masked_names(access)],
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
    access = CustomerAccess(actor)
    with read_session() as session:
        reachable = access.load_models(session, ids)
        visible = [reachable[i] for i in ids if i in reachable]
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
        return [record_of(c, access, tags.get(c.id, []), c.id in pending) for c in visible]
