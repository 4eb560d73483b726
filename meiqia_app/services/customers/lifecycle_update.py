"""Keeping ``customer.lifecycle_stage`` / ``membership_tier`` current (TAG-4).

The rules of the stages are in services/customers/lifecycle.py; this module applies
them with one set-based UPDATE (nightly, or for one customer when their
activity changed) using the thresholds an admin configured in the
``lifecycle.thresholds`` setting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlalchemy import case, or_, update

from meiqia_app.db import read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import AppSetting, Customer
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.changes import LIFECYCLE, MANY, customers_changed
from meiqia_app.services.customers.lifecycle import LifecycleThresholds, TierThresholds
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import utcnow

SETTING_KEY = "lifecycle.thresholds"
C = Customer.__table__.c


def get_thresholds() -> LifecycleThresholds:
    with read_session() as session:
        row = session.get(AppSetting, SETTING_KEY)
    if row is None:
        return LifecycleThresholds()
    try:
        values = json.loads(row.value)
        thresholds = LifecycleThresholds(int(values["new_days"]), int(values["active_days"]), int(values["churn_days"]))
        thresholds.validate()
        return thresholds
    except (ValueError, KeyError, TypeError):
        return LifecycleThresholds()


def set_thresholds(actor: Actor, new_days: object, active_days: object, churn_days: object) -> LifecycleThresholds:
    """Admin setting; takes effect at the next recompute (nightly or ``recompute_lifecycle``)."""
    require(actor, "settings.manage", action="lifecycle.thresholds", target_type="setting", target_id=SETTING_KEY)
    try:
        thresholds = LifecycleThresholds(int(str(new_days)), int(str(active_days)), int(str(churn_days)))
    except (TypeError, ValueError):
        raise ValidationError.single("thresholds", "error.bad_number") from None
    try:
        thresholds.validate()
    except ValueError:
        raise ValidationError.single("thresholds", "tagadmin.bad_thresholds") from None
    before = get_thresholds()
    with write_session() as session:
        row = session.get(AppSetting, SETTING_KEY) or AppSetting(key=SETTING_KEY)
        row.value = json.dumps(dataclasses.asdict(thresholds))
        row.updated_at = utcnow()
        row.updated_by_name = actor.username
        session.add(row)
        audit.record(
            session,
            actor,
            "setting.update",
            target_type="setting",
            target_id=SETTING_KEY,
            details={"before": dataclasses.asdict(before), "after": dataclasses.asdict(thresholds)},
        )
    return thresholds


def stage_expression(now: dt.datetime, t: LifecycleThresholds):
    """SQL twin of lifecycle.lifecycle_stage."""
    return case(
        (C.first_purchase_at.is_(None), "prospect"),
        (C.first_purchase_at >= now - dt.timedelta(days=t.new_days), "new"),
        (C.last_active_at >= now - dt.timedelta(days=t.active_days), "active"),
        (C.last_active_at < now - dt.timedelta(days=t.churn_days), "churned"),
        else_="dormant",
    )


def tier_expression(t: TierThresholds | None = None):
    """SQL twin of lifecycle.membership_tier."""
    t = t or TierThresholds()
    return case(
        (C.total_spent_cents >= t.gold_cents, "gold"),
        (C.total_spent_cents >= t.silver_cents, "silver"),
        else_="regular",
    )


def recompute_lifecycle(
    now: dt.datetime | None = None, customer_id: int | None = None, customer_ids: list[int] | None = None
) -> int:
    """Set every (or one, or the given) customer's stage and tier from their activity; returns rows changed."""
    named = None
    if customer_id is not None:
        named = [customer_id]
    if customer_ids is not None:
        if not customer_ids:
            return 0
        named = list(customer_ids) if named is None else [i for i in named if i in set(customer_ids)]
    with write_session() as session:
        if named is None:
            statement = _stage_update(now or utcnow())
            changed = session.execute(statement).rowcount
            if changed:
                customers_changed(session, MANY, LIFECYCLE)
            return changed
        return recompute_lifecycle_in(session, named, now)


def recompute_lifecycle_in(session, customer_ids, now: dt.datetime | None = None) -> int:
    """The named customers' stage and tier, in the caller's write transaction (the rules of
    changed customers run in the same one: services/tags/rules/runs.py); returns rows changed.
    The customers are locked in id order first, as an ingest batch locks them (PostgreSQL)."""
    named = sorted(set(customer_ids))
    if not named:
        return 0
    conn = session.connection()
    # After an ingest batch, beside the next one: the same customers, locked in the same order.
    get_adapter(conn).lock_rows_in_id_order(conn, Customer.__table__, named)
    changed = session.execute(_stage_update(now or utcnow()).where(C.id.in_(named))).rowcount
    if changed:
        customers_changed(session, named, LIFECYCLE)
    return changed


def _stage_update(now: dt.datetime):
    thresholds = get_thresholds()
    stage, tier = stage_expression(now, thresholds), tier_expression()
    return (
        update(Customer.__table__)
        .where(or_(C.lifecycle_stage != stage, C.membership_tier != tier))
        .values(lifecycle_stage=stage, membership_tier=tier)
    )


RECOMPUTE_JOB_KIND = "lifecycle.recompute"


def start_recompute_job(actor: Actor) -> int:
    """Recompute every customer's stage in the background (after the thresholds changed)."""
    require(actor, "settings.manage", action="lifecycle.recompute")
    job_id = jobs.create_job(actor, RECOMPUTE_JOB_KIND, {}, total=1)
    jobs.start_in_background(job_id)
    return job_id


def _recompute_worker(ctx: jobs.JobContext) -> dict:
    require(ctx.actor, "settings.manage", action="lifecycle.recompute")
    changed = recompute_lifecycle()
    audit.record_now(ctx.actor, "lifecycle.recompute", details={"changed": changed, "job_id": ctx.job_id})
    ctx.progress(1)
    return {"changed": changed}


def nightly_recompute() -> None:
    """The nightly task ``lifecycle`` (services/platform/scheduled_tasks.py)."""
    changed = recompute_lifecycle()
    audit.record_now(SYSTEM_ACTOR, "lifecycle.recompute", details={"changed": changed})


jobs.register_worker(RECOMPUTE_JOB_KIND, _recompute_worker)
