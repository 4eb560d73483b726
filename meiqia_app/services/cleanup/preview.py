"""What a cleanup would do before it runs: the dry run (matches, a sample, effects on other tables) and the list's timing."""

from __future__ import annotations

import dataclasses
import statistics
import time

from sqlalchemy import func, select

from meiqia_app.db import get_engine
from meiqia_app.models import BehaviorEvent, Conversation, Customer, ErasureRequest, Message, Note, Order, TagAssignment
from meiqia_app.models.tag import SOURCE_MANUAL
from meiqia_app.services.cleanup.criteria import Criteria, check_action, criteria_conditions, skip_unreachable_ticked
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.listing import list_customers
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor
from meiqia_app.services.privacy import mentions
from meiqia_app.timeutil import format_local

C = Customer.__table__.c
SAMPLE_SIZE = 20
# Rough bytes per row (beside measured text lengths) for the dry run's estimate.
ROW_BYTES = {
    "customer": 320,
    "customer_search": 80,
    "customer_order": 140,
    "conversation": 90,
    "message": 60,
    "behavior_event": 70,
    "note": 60,
    "tag_assignment": 30,
    "erasure_request": 80,
}


# --- dry run ----------------------------------------------------------------------------


@dataclasses.dataclass
class SampleRow:
    id: int
    name: str
    phone: str
    email: str
    status: str
    last_active: str
    reasons: list[str]


@dataclasses.dataclass
class DryRun:
    count: int
    sample: list[SampleRow]
    action: str
    tables: dict[str, int]  # rows the action changes, per table
    approx_bytes: int
    seconds: float
    # Erasure: other customers' notes and messages naming the customers (services/privacy/mentions.py),
    # for the admin to tick the ones to redact; None when not searched (too many customers).
    mentions: list[dict] | None = None
    # Ticked ids that are no customer within reach (missing or out of scope): left alone, audited.
    skipped: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


EXACT_EFFECTS_MAX = 5000


def _table_effects(conn, action: str, where) -> tuple[dict[str, int], int]:
    """Rows each table would change and an approximate byte figure.

    For an erasure of many customers the child tables are counted for the
    first EXACT_EFFECTS_MAX matching customers and scaled up (an estimate:
    counting every message of 200,000 customers would take a minute).
    """
    count = conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
    if action in ("archive", "trash"):
        return {"customer": count}, count * ROW_BYTES["customer"]
    if action == "tag":
        return {"tag_assignment": count}, count * ROW_BYTES["tag_assignment"]
    ids = list(conn.execute(select(C.id).where(where).order_by(C.id).limit(EXACT_EFFECTS_MAX)).scalars())
    scale = (count / len(ids)) if ids else 0
    o, cv, m, n, e = (
        Order.__table__.c,
        Conversation.__table__.c,
        Message.__table__.c,
        Note.__table__.c,
        BehaviorEvent.__table__.c,
    )
    ta, er = TagAssignment.__table__.c, ErasureRequest.__table__.c
    conv_ids = select(cv.id).where(cv.customer_id.in_(ids))

    def scaled(statement) -> int:
        return int(round((conn.execute(statement).scalar_one() or 0) * scale)) if ids else 0

    tables = {
        "customer": count,
        "customer_search": count,
        "note": scaled(select(func.count()).where(n.customer_id.in_(ids))),
        "message": scaled(select(func.count()).where(m.conversation_id.in_(conv_ids))),
        "conversation": scaled(select(func.count()).where(cv.customer_id.in_(ids))),
        "customer_order": scaled(select(func.count()).where(o.customer_id.in_(ids))),
        "behavior_event": scaled(select(func.count()).where(e.customer_id.in_(ids))),
        "tag_assignment": scaled(select(func.count()).where(ta.customer_id.in_(ids), ta.source == SOURCE_MANUAL)),
        "erasure_request": scaled(select(func.count()).where(er.customer_id.in_(ids), er.status == "pending")),
    }
    text_bytes = scaled(select(func.coalesce(func.sum(func.length(n.body)), 0)).where(n.customer_id.in_(ids)))
    text_bytes += scaled(select(func.coalesce(func.sum(func.length(m.body)), 0)).where(m.conversation_id.in_(conv_ids)))
    approx = int(text_bytes) + sum(ROW_BYTES.get(name, 60) * rows for name, rows in tables.items())
    return tables, approx


def dry_run(actor: Actor, criteria: Criteria, action: str = "archive") -> DryRun:
    """Count, a sample with the reason(s) each matched, and what the action would change."""
    check_action(actor, action, "dry_run", criteria)
    skipped = skip_unreachable_ticked(actor, criteria, "cleanup.dry_run")
    started = time.perf_counter()
    access = CustomerAccess(actor)
    with get_engine().connect() as conn:
        where, reasons = criteria_conditions(conn, actor, criteria)
        flags = [func.coalesce(cond, False).label(f"r_{name}") for name, cond in reasons.items()]
        rows = conn.execute(
            select(C.id, C.name, C.phone, C.email, C.status, C.last_active_at, *flags)
            .where(where)
            .order_by(C.id)
            .limit(SAMPLE_SIZE)
        ).all()
        tables, approx = _table_effects(conn, action, where)
    sample = [
        SampleRow(
            id=row.id,
            name=row.name,
            phone=access.mask("phone", row.phone or ""),
            email=access.mask("email", row.email or ""),
            status=row.status,
            last_active=format_local(row.last_active_at),
            reasons=[name for name in reasons if getattr(row, f"r_{name}")],
        )
        for row in rows
    ]
    count = tables.get("customer", tables.get("tag_assignment", 0))
    found = None
    if action == "erase" and count <= mentions.MAX_CUSTOMERS:
        from meiqia_app.services.privacy import erasure

        with get_engine().connect() as conn:
            ids = list(conn.execute(select(C.id).where(where).order_by(C.id)).scalars())
        found = [dataclasses.asdict(m) | {"key": m.key} for m in erasure.find_mentions(actor, ids) or []]
    return DryRun(
        count=count,
        sample=sample,
        action=action,
        tables=tables,
        approx_bytes=approx,
        seconds=round(time.perf_counter() - started, 3),
        mentions=found,
        skipped=len(skipped),
    )


def count_matching(actor: Actor, criteria: Criteria) -> int:
    with get_engine().connect() as conn:
        where, _ = criteria_conditions(conn, actor, criteria)
        return conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()


# --- CLEAN-7: the working set's list speed ------------------------------------------------


def list_query_ms(actor: Actor = SYSTEM_ACTOR, runs: int = 3) -> float:
    """Median time of the customer list's first page (the daily working set)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        list_customers(actor, ListQuery())
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)
