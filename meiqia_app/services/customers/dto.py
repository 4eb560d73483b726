"""What pages receive about customers: small dataclasses with display-ready,
masked values. Table models never leave the services (Reflex would serialise
every column of a model placed in a frontend var)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Connection, select

from meiqia_app.i18n import tr
from meiqia_app.models import Tag, TagAssignment
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.timeutil import format_local

TAGS_PER_ROW = 6


@dataclasses.dataclass
class TagChip:
    id: int
    name: str
    color: str
    source: str = "manual"


@dataclasses.dataclass
class CustomCell:
    """One custom column's value in a list row (masked as the actor sees it)."""

    name: str  # "cf.<key>"
    label: str
    value: str


@dataclasses.dataclass
class CustomerRow:
    id: int
    name: str
    phone: str
    email: str
    region: str
    source: str
    lifecycle: str
    tier: str
    tags: list[TagChip]
    last_active: str
    registered: str
    last_purchase: str
    total_spent: str
    order_count: int
    status: str
    # Why the row matched the search ("手机尾号匹配 · 访客 ID 匹配"), "" without a search.
    match: str = ""
    # The owner (负责人) and their team; "" and in_pool for a pool (公海) customer.
    owner: str = ""
    team: str = ""
    in_pool: bool = True
    status_code: str = "active"
    # The shown custom columns (list_fields.CustomCell: name, label, masked value), in column order.
    custom: list[CustomCell] = dataclasses.field(default_factory=list)


def money(cents: int | None) -> str:
    return f"¥{(cents or 0) / 100:,.2f}"


def region_text(province: str | None, city: str | None) -> str:
    """北京 for municipalities, 广东 深圳 otherwise."""
    if province and city and province != city:
        return f"{province} {city}"
    return province or city or ""


def label(lang: str, prefix: str, code: str | None) -> str:
    return tr(lang, f"{prefix}.{code}") if code else ""


def tags_for(
    conn: Connection, customer_ids: Sequence[int], limit: int | None = TAGS_PER_ROW
) -> dict[int, list[TagChip]]:
    if not customer_ids:
        return {}
    ta = TagAssignment.__table__.c
    t = Tag.__table__.c
    rows = conn.execute(
        select(ta.customer_id, t.id, t.name, t.color, ta.source)
        .join(Tag.__table__, t.id == ta.tag_id)
        .where(ta.customer_id.in_(list(customer_ids)))
        .order_by(ta.customer_id, t.group, t.name)
    )
    result: dict[int, list[TagChip]] = defaultdict(list)
    for customer_id, tag_id, name, color, source in rows:
        if limit is None or len(result[customer_id]) < limit:
            result[customer_id].append(TagChip(tag_id, name, color, source))
    return result


def customer_rows(
    conn: Connection,
    actor: Actor,
    records: Sequence,
    lang: str = "zh",
    reasons: dict[int, list[str]] | None = None,
) -> list[CustomerRow]:
    """List rows from raw records, masked for actors without customer.view_sensitive.

    ``reasons``: why each row matched the search (match.* message keys), by id.
    """
    reasons = reasons or {}
    from meiqia_app.services.customers.ownership import owner_infos

    access = CustomerAccess(actor)
    tags = tags_for(conn, [r.id for r in records])
    owners = owner_infos(conn, [getattr(r, "owner_id", None) for r in records])
    rows = []
    for r in records:
        owner_id = getattr(r, "owner_id", None)
        owner = owners.get(owner_id) if owner_id is not None else None
        rows.append(
            CustomerRow(
                id=r.id,
                name=r.name,
                phone=access.mask("phone", r.phone or ""),
                email=access.mask("email", r.email or ""),
                region=region_text(r.province, r.city),
                source=label(lang, "source", r.source),
                lifecycle=label(lang, "lifecycle", r.lifecycle_stage),
                tier=label(lang, "tier", r.membership_tier),
                tags=tags.get(r.id, []),
                last_active=format_local(r.last_active_at),
                registered=format_local(r.registered_at),
                last_purchase=format_local(r.last_purchase_at),
                total_spent=access.mask("total_spent", money(r.total_spent_cents)),
                order_count=r.order_count,
                status=label(lang, "status", r.status),
                match=" · ".join(tr(lang, key) for key in reasons.get(r.id, ())),
                owner=(owner.owner_name if owner else tr(lang, "owner.unknown")) if owner_id is not None else "",
                team=owner.team_name if owner else "",
                in_pool=owner_id is None,
                status_code=r.status,
            )
        )
    return rows
