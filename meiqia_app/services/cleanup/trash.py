"""Archived and trashed customers: the list of parked customers, restoring them, and purging the trash for good."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select, update

from meiqia_app.db import get_engine, write_session
from meiqia_app.models import Customer
from meiqia_app.models.customer import STATUS_ACTIVE, STATUS_ARCHIVED, STATUS_TRASHED
from meiqia_app.services.audit import log as audit
from meiqia_app.services.cleanup.actions import CleanupOutcome, purge_batches, purge_condition
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.changes import MANY, STATUS, customers_changed
from meiqia_app.services.customers.selection import Selection, ticked_out_of_reach
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import as_utc, format_local, utcnow

C = Customer.__table__.c


# --- archive / trash browsing and restore -------------------------------------------------


def _trash_retention():
    """The trash policy's setting (days, on/off): /admin/retention, else MEIQIA_TRASH_RETENTION_DAYS."""
    from meiqia_app.services.cleanup import retention

    return retention.current("trash_purge")


@dataclasses.dataclass
class ParkedRow:
    id: int
    name: str
    phone: str
    status: str
    since: str
    purge_on: str


def list_parked(actor: Actor, status: str, after_id: int = 0, limit: int = 50) -> list[ParkedRow]:
    """Archived or trashed customers, in id order, one page after ``after_id``."""
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    require(
        actor,
        "customer.archive" if status == STATUS_ARCHIVED else "customer.delete",
        action="cleanup.browse",
        target_type="customer",
    )
    limit = max(1, min(int(limit), 200))
    access = CustomerAccess(actor)
    policy = _trash_retention()
    retention = dt.timedelta(days=policy.value) if policy.enabled else None
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(C.id, C.name, C.phone, C.status, C.archived_at, C.trashed_at)
            .where(*access.status_conditions(status), C.id > int(after_id))
            .order_by(C.id)
            .limit(limit)
        ).all()
    return [
        ParkedRow(
            id=r.id,
            name=r.name,
            phone=access.mask("phone", r.phone or ""),
            status=r.status,
            since=format_local(r.archived_at if status == STATUS_ARCHIVED else r.trashed_at),
            purge_on=format_local(as_utc(r.trashed_at) + retention)
            if status == STATUS_TRASHED and r.trashed_at and retention is not None
            else "",
        )
        for r in rows
    ]


def count_parked(actor: Actor, status: str) -> int:
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    require(actor, "customer.view", action="cleanup.browse", target_type="customer")
    with get_engine().connect() as conn:
        return conn.execute(
            select(func.count()).select_from(Customer.__table__).where(*CustomerAccess(actor).status_conditions(status))
        ).scalar_one()


def restore(actor: Actor, status: str, ids: Sequence[int] | None = None) -> int:
    """Bring archived (or trashed) customers back: the given ids, or all of that status when ``ids`` is None.

    Trashed customers go back to where they were (archived if they had been archived).
    """
    if status not in (STATUS_ARCHIVED, STATUS_TRASHED):
        raise ValidationError.single("status", "error.bad_choice")
    permission = "customer.archive" if status == STATUS_ARCHIVED else "customer.delete"
    require(actor, permission, action=f"cleanup.restore_{status}", target_type="customer")
    if ids is not None:
        try:
            ids = sorted({int(i) for i in ids})
        except (TypeError, ValueError):
            raise ValidationError.single("ids", "error.bad_choice") from None
        if not ids or len(ids) > 10_000 or ids[0] <= 0:
            raise ValidationError.single("ids", "error.bad_choice")
        # Ids naming no customer in reach (missing or out of scope alike) are left alone
        # (the UPDATE below is cut to the reach) and audited as one refusal.
        access = CustomerAccess(actor)
        unreachable = ticked_out_of_reach(access, Selection.of_ids(ids))
        if unreachable:
            access.not_found(unreachable, f"cleanup.restore_{status}")
    now = utcnow()
    common = {
        "updated_at": now,
        "updated_by_id": actor.user_id,
        "updated_by_name": actor.username,
        "version": C.version + 1,
    }
    with write_session() as session:
        scope = CustomerAccess(actor).status_conditions(status) + ([C.id.in_(ids)] if ids is not None else [])
        if status == STATUS_ARCHIVED:
            changed = session.execute(
                update(Customer.__table__).where(*scope).values(status=STATUS_ACTIVE, archived_at=None, **common)
            ).rowcount
        else:
            changed = session.execute(
                update(Customer.__table__)
                .where(*scope, C.archived_at.is_not(None))
                .values(status=STATUS_ARCHIVED, trashed_at=None, **common)
            ).rowcount
            changed += session.execute(
                update(Customer.__table__)
                .where(*scope, C.archived_at.is_(None))
                .values(status=STATUS_ACTIVE, trashed_at=None, **common)
            ).rowcount
        audit.record(
            session,
            actor,
            f"cleanup.restore_{status}",
            target_type="customer",
            details={"restored": changed, "ids": (ids or [])[:50], "all": ids is None},
        )
        if changed:
            customers_changed(session, MANY if ids is None else ids, STATUS)
    return changed


def trash_preview(cutoff: dt.datetime, sample_size: int) -> tuple[int, list[tuple[int, str]]]:
    """How many customers were trashed before ``cutoff``, and the first few (id, trashed at)."""
    where = purge_condition({"all": False, "cutoff": cutoff.isoformat()})
    with get_engine().connect() as conn:
        count = conn.execute(select(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
        rows = conn.execute(select(C.id, C.trashed_at).where(where).order_by(C.id).limit(sample_size)).all()
    return count, [(row.id, format_local(row.trashed_at)) for row in rows]


def purge_trashed_before(ctx: jobs.JobContext, cutoff: dt.datetime) -> CleanupOutcome:
    """The trash retention policy's run: the purge job's batches for what was trashed before ``cutoff``.

    Takes the same automatic backup first; the caller writes the audit entry.
    """
    params = {"all": False, "cutoff": cutoff.isoformat()}
    return purge_batches(ctx, params, f"before retention purge job {ctx.job_id}")


def start_purge(actor: Actor, all_trash: bool = True, confirm: str | None = None) -> int:
    """Admin "empty trash" (all) — or only what is past the retention window — as a job."""
    require(actor, "customer.delete", action="cleanup.purge", target_type="customer")
    cutoff = utcnow() - dt.timedelta(days=_trash_retention().value)
    params = {"all": bool(all_trash), "cutoff": cutoff.isoformat(), "started_at": utcnow().isoformat()}
    with get_engine().connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(Customer.__table__).where(purge_condition(params))
        ).scalar_one()
    if confirm is not None and confirm.strip() != str(count):
        raise ValidationError.single("confirm", "cleanup.confirm_mismatch", count=count)
    job_id = jobs.create_job(actor, "cleanup.purge", params, total=count)
    jobs.start_in_background(job_id)
    return job_id
