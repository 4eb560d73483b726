"""Running tag rules (TAG-3): one rule, all rules (a job, nightly), and the rules of
changed customers. A rule = a tag + conditions (conditions.py), kept in definitions.py.

A condition is data, never code: ``{"field": …, "op": …, "value": …, "days": …,
"product_id": …}``, checked against the allowlist in ``FIELDS`` and compiled
to SQLAlchemy conditions on the customer table with bound parameters.

Aggregates over a time window (orders paid in the last N days, complaints,
product views…) compile in two equivalent forms:

* set form, for whole-table runs: ``customer.id IN (SELECT customer_id …
  GROUP BY customer_id HAVING agg op value)`` — one pass over the window's
  index range. When the comparison holds for 0 (e.g. ``= 0``, ``< 2``) the
  complement is used: ``id NOT IN (… HAVING NOT (agg op value))``, because a
  customer with no rows in the window has the aggregate 0.
* correlated form, for one customer (``apply_rules_to_customer``): a scalar
  subquery per customer through the (customer_id, time) index.

Rules only look at active customers (archived ones left the working set). A
rule never removes a manual assignment; in ``sync`` mode it removes its own
assignments from customers who no longer match. Every assignment records its
source, the rule and the time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable

from sqlalchemy import and_, case, delete, exists, insert, literal, select
from sqlmodel import select as sm_select

from meiqia_app.db import read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer, Tag, TagAssignment, TagRule
from meiqia_app.models.tag import SOURCE_RULE
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import parse_id
from meiqia_app.services.customers.changes import MANY, RULE_TAGS, customers_changed
from meiqia_app.services.customers.lifecycle_update import recompute_lifecycle_in
from meiqia_app.services.errors import NotFound, RuleFieldGone
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags.rules.conditions import MATCH_TABLE, M, RuleSpec, clean_conditions, compile_rule
from meiqia_app.services.tags.rules.definitions import SCOPE, ensure_default_rules, removable_assignments
from meiqia_app.timeutil import utcnow

C = Customer.__table__.c
TA = TagAssignment.__table__.c
RUN_JOB_KIND = "rules.run"


@dataclasses.dataclass(frozen=True)
class RuleRunSummary:
    """One rule run over every active customer: how many matched, gained and lost its tag.

    A rule that names a custom field retired or deleted since is not run: ``skipped``
    says why ("field_gone") and ``fields`` names them; its tags stay as they are."""

    matched: int
    added: int
    removed: int
    at: str  # when it ran (ISO 8601)
    skipped: str = ""
    fields: str = ""

    def as_dict(self) -> dict:
        """The JSON form kept as the rule's last run summary and in the run job's result."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RuleTagChange:
    """The rule tags one customer gained and lost when their rules were applied (tag ids)."""

    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()


# --- running ------------------------------------------------------------------------


def _spec_of(rule: TagRule) -> RuleSpec:
    return RuleSpec(
        name=rule.name,
        tag_id=rule.tag_id,
        match=rule.match,
        mode=rule.mode,
        conditions=clean_conditions(rule.conditions, check_products=False),
        enabled=rule.enabled,
    )


def _run_one(rule_id: int, actor: Actor, now: dt.datetime) -> RuleRunSummary:
    """Apply one rule to every active customer in one transaction; returns the counts."""
    with write_session() as session:
        rule = session.get(TagRule, rule_id)
        if rule is None:
            raise NotFound()
        spec = _spec_of(rule)
        condition = compile_rule(spec.match, spec.conditions, now)
        conn = session.connection()
        MATCH_TABLE.drop(conn, checkfirst=True)
        MATCH_TABLE.create(conn)
        matched = conn.execute(
            insert(MATCH_TABLE).from_select(["customer_id"], select(C.id).where(SCOPE, condition))
        ).rowcount
        added = conn.execute(
            insert(TagAssignment.__table__).from_select(
                ["customer_id", "tag_id", "source", "rule_id", "assigned_at"],
                select(
                    M.customer_id,
                    literal(spec.tag_id),
                    literal(SOURCE_RULE),
                    literal(rule_id),
                    literal(now, TA.assigned_at.type),
                ).where(~exists().where(TA.customer_id == M.customer_id, TA.tag_id == spec.tag_id)),
            )
        ).rowcount
        removed = 0
        if spec.mode == "sync":
            removed = conn.execute(
                delete(TagAssignment.__table__).where(
                    TA.tag_id == spec.tag_id,
                    removable_assignments(rule_id),
                    # NOT EXISTS, not NOT IN: PostgreSQL runs NOT IN (subquery) as a nested scan once the
                    # matches outgrow work_mem (a rule over 1M customers took more than 8 minutes).
                    ~exists().where(M.customer_id == TA.customer_id),
                    exists().where(C.id == TA.customer_id, SCOPE),
                )
            ).rowcount
        MATCH_TABLE.drop(conn)
        if added or removed:
            customers_changed(session, MANY, RULE_TAGS)
        summary = RuleRunSummary(matched=matched, added=added, removed=removed, at=now.isoformat())
        rule.last_run_at = now
        rule.last_run_summary = json.dumps(summary.as_dict())
        session.add(rule)
        if added:
            tag = session.get(Tag, spec.tag_id)
            tag.last_assigned_at = now
            session.add(tag)
        audit.record(
            session,
            actor,
            "rule.run",
            target_type="tag_rule",
            target_id=rule_id,
            details={"name": rule.name, "tag_id": spec.tag_id, "mode": spec.mode, **summary.as_dict()},
        )
    return summary


def run_rule(actor: Actor, rule_id: int, now: dt.datetime | None = None) -> RuleRunSummary:
    """Run one rule now (in this thread)."""
    rule_id = parse_id(rule_id)
    require(actor, "rule.manage", action="rule.run", target_type="tag_rule", target_id=rule_id)
    return _run_one(rule_id, actor, now or utcnow())


def run_all_rules(
    actor: Actor = SYSTEM_ACTOR, now: dt.datetime | None = None, progress: Callable[[str], None] | None = None
) -> dict[int, RuleRunSummary]:
    """Run every enabled rule (nightly task, seed hook, CLI): each rule's summary by rule id."""
    require(actor, "rule.manage", action="rule.run_all")
    ensure_default_rules()
    now = now or utcnow()
    with read_session() as session:
        rules = session.exec(
            sm_select(TagRule.id, TagRule.name).where(TagRule.enabled.is_(True)).order_by(TagRule.id)
        ).all()
    results = {}
    for rule_id, name in rules:
        if progress:
            progress(f"rule {name}")
        try:
            results[rule_id] = _run_one(rule_id, actor, now)
        except RuleFieldGone as gone:  # flagged on /tags; its tags stay as they are
            results[rule_id] = _skipped(gone, now)
    return results


def _skipped(gone: RuleFieldGone, now: dt.datetime) -> RuleRunSummary:
    """The result of a rule not run: it names a custom field that was retired or deleted."""
    return RuleRunSummary(0, 0, 0, now.isoformat(), skipped="field_gone", fields=str(gone.params.get("fields", "")))


def start_rule_run_job(actor: Actor, rule_id: int | None = None) -> int:
    """Run one rule (or all enabled ones with ``rule_id=None``) as a background job."""
    if rule_id not in (None, "", 0):
        rule_id = parse_id(rule_id)
        require(actor, "rule.manage", action="rule.run", target_type="tag_rule", target_id=rule_id)
        with read_session() as session:
            if session.get(TagRule, rule_id) is None:
                raise NotFound()
        ids = [rule_id]
    else:
        require(actor, "rule.manage", action="rule.run_all")
        with read_session() as session:
            ids = list(session.exec(sm_select(TagRule.id).where(TagRule.enabled.is_(True)).order_by(TagRule.id)))
    job_id = jobs.create_job(actor, RUN_JOB_KIND, {"rule_ids": ids}, total=len(ids))
    jobs.start_in_background(job_id)
    return job_id


def _run_worker(ctx: jobs.JobContext) -> dict:
    require(ctx.actor, "rule.manage", action="rule.run")
    ids = [int(i) for i in ctx.params.get("rule_ids", [])]
    done = list(ctx.checkpoint.get("done", []))
    results = dict(ctx.checkpoint.get("results", {}))
    now = utcnow()
    for rule_id in ids:
        if rule_id in done:
            continue
        try:
            results[str(rule_id)] = _run_one(rule_id, ctx.actor, now).as_dict()
        except NotFound:
            results[str(rule_id)] = {"missing": True}
        except RuleFieldGone as gone:
            results[str(rule_id)] = _skipped(gone, now).as_dict()
        done.append(rule_id)
        ctx.progress(len(done), {"done": done, "results": results})
    totals = {key: sum(r.get(key, 0) for r in results.values()) for key in ("matched", "added", "removed")}
    return {**totals, "rules": results}


# --- one customer ---------------------------------------------------------------------


def apply_rules_to_customer(customer_id: int, now: dt.datetime | None = None) -> RuleTagChange:
    """Bring one customer's lifecycle stage and rule tags up to date after their data changed.

    Run for the customers of a change (services/customers/change_subscribers.py) and by the merge.
    """
    customer_id = parse_id(customer_id)
    return apply_rules_to_customers([customer_id], now).get(customer_id, RuleTagChange())


def rule_reads(rule: TagRule, field: str) -> bool:
    """Whether one of the rule's conditions is on ``field`` (a built-in rule field or "cf.<key>")."""
    conditions = rule.conditions
    if isinstance(conditions, str):
        try:
            conditions = json.loads(conditions or "[]")
        except ValueError:
            return True  # unreadable: checked as any other rule would be
    return any(isinstance(c, dict) and c.get("field") == field for c in conditions or ())


@dataclasses.dataclass(frozen=True)
class _Assigned:
    customer_id: int
    source: str
    rule_id: int | None


def apply_rules_to_customers(
    customer_ids, now: dt.datetime | None = None, reading: str | None = None
) -> dict[int, RuleTagChange]:
    """:func:`apply_rules_to_customer` for several customers at once (behaviour ingested in
    batches), in one pass and one transaction: the stage in one UPDATE, then every enabled
    rule checked in one query (a column per rule) and the rules' tags read in another.

    Rules are applied in id order, as the whole-table runs apply them: a rule sees the tags
    the rules before it gave or took (kept in memory here; no condition reads tags).

    ``reading``: only one field changed (a bulk edit, services/customers/bulk_edit.py):
    only the rules with a condition on that field are checked, and the stage (computed
    from activity and spending, never from an editable field) is left alone.

    Returns the change of each customer whose tags changed, by customer id.
    """
    ids = sorted({parse_id(i) for i in customer_ids})
    now = now or utcnow()
    if not ids:
        return {}
    changes: dict[int, dict] = {}
    with write_session() as session:
        if reading is None:
            # The stage first (rules may name it), with the customers locked in id order.
            recompute_lifecycle_in(session, ids, now)
        rules = session.exec(sm_select(TagRule).where(TagRule.enabled.is_(True)).order_by(TagRule.id)).all()
        if reading is not None:
            rules = [rule for rule in rules if rule_reads(rule, reading)]
        compiled = []
        for rule in rules:
            try:
                spec = _spec_of(rule)
                compiled.append((rule, spec, compile_rule(spec.match, spec.conditions, now, correlated=True)))
            except RuleFieldGone:  # not run until edited (flagged on /tags): no tag given or taken
                continue
        if not compiled:
            return {}
        # Like the full runs: rules leave archived and trashed customers alone. The rows come
        # back packed in one value: an ingested batch names hundreds of customers, and each
        # row fetched alone hands Python's GIL over (up to 5 ms a row while agents work).
        conn = session.connection()
        packed = get_adapter(conn).packed_rows
        columns = [f"r{n}" for n in range(len(compiled))]
        rows = packed(
            conn,
            select(
                C.id,
                *(
                    case((and_(SCOPE, condition), 1), else_=0).label(name)
                    for name, (_rule, _spec, condition) in zip(columns, compiled, strict=True)
                ),
            ).where(C.id.in_(ids), C.status == "active"),
            ("id", *columns),
        )
        active = sorted(row[0] for row in rows)
        if not active:
            return {}
        matching = [{row[0] for row in rows if row[n + 1]} for n in range(len(compiled))]
        assigned: dict[tuple[int, int], _Assigned] = {
            (tag_id, customer_id): _Assigned(customer_id, source, rule_id)
            for customer_id, tag_id, source, rule_id in packed(
                conn,
                select(TA.customer_id, TA.tag_id, TA.source, TA.rule_id).where(
                    TA.tag_id.in_(sorted({spec.tag_id for _rule, spec, _condition in compiled})),
                    TA.customer_id.in_(active),
                ),
                ("customer_id", "tag_id", "source", "rule_id"),
            )
        }
        for (rule, spec, _condition), matched in zip(compiled, matching, strict=True):
            tag = spec.tag_id
            gained = [i for i in active if i in matched and (tag, i) not in assigned]
            lost = [
                i
                for i in active
                if i not in matched
                and spec.mode == "sync"
                and (tag, i) in assigned
                and assigned[(tag, i)].source == SOURCE_RULE
                and assigned[(tag, i)].rule_id in (rule.id, None)
            ]
            if gained:
                session.execute(
                    insert(TagAssignment.__table__),
                    [
                        {"customer_id": i, "tag_id": tag, "source": SOURCE_RULE, "rule_id": rule.id, "assigned_at": now}
                        for i in gained
                    ],
                )
            if lost:
                session.execute(delete(TagAssignment.__table__).where(TA.tag_id == tag, TA.customer_id.in_(lost)))
            for i in gained:
                assigned[(tag, i)] = _Assigned(i, SOURCE_RULE, rule.id)
                changes.setdefault(i, {"added": [], "removed": []})["added"].append(tag)
            for i in lost:
                del assigned[(tag, i)]
                changes.setdefault(i, {"added": [], "removed": []})["removed"].append(tag)
        audit.record_many(
            session,
            SYSTEM_ACTOR,
            "rule.apply_customer",
            [
                {"target_type": "customer", "target_id": customer_id, "details": change}
                for customer_id, change in sorted(changes.items())
            ],
        )
        if changes:
            customers_changed(session, changes, RULE_TAGS)
    return {i: RuleTagChange(added=tuple(c["added"]), removed=tuple(c["removed"])) for i, c in changes.items()}


def nightly_run() -> None:
    """The nightly task ``tag_rules`` (services/platform/scheduled_tasks.py)."""
    run_all_rules(SYSTEM_ACTOR)


jobs.register_worker(RUN_JOB_KIND, _run_worker)
