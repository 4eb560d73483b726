"""Customer owners (负责人) and the pool (公海): claim, assign, transfer, release.

A customer has an owner (a user) or none; the customers without owner are the
pool. A customer's team is its owner's team. Who reaches which customers by
owner is the role's data scope (services/customers/access.py).

- **Claim** (customer.claim): take a pool customer. One conditional
  ``UPDATE … WHERE owner_id IS NULL``: of two people claiming at once exactly
  one wins; the other is told who has it (:class:`Conflict` ``owner.taken``).
- **Assign / transfer / release** (customer.assign; or a team lead within the
  lead's team; or an owner releasing their own customer): one customer, or a
  selection (ticked rows or "all N matching", services/customers/selection.py) in a job.

- **Back to the pool** (optional, an admin's setting on /admin/retention,
  services/cleanup/retention_policies.py): active customers nobody contacted for N
  days (``last_active_at`` older) leave their owner, nightly or "run now".

Each single change is one audit entry (customer.claim / assign / transfer /
release) and one ``owner_change`` row, which the customer's timeline shows
(services/customers/timeline.py). A bulk change is one audit entry with its count
(customer.bulk_assign, or the retention run's retention.run) and one
``owner_change`` row per customer, written set-based per batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from sqlalchemy import and_, case, func, insert, literal, or_, select, tuple_, update

from meiqia_app.db import read_connection, read_session, write_session
from meiqia_app.models import Customer, OwnerChange, Team, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import OWNER, customers_changed
from meiqia_app.services.customers.query import status_condition
from meiqia_app.services.customers.selection import (
    BulkResult,
    Selection,
    check_ticked_in_reach,
    iter_selected_ids,
    selection_count,
)
from meiqia_app.services.errors import Conflict, NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import format_local, utcnow

C = Customer.__table__.c
U = User.__table__.c
OC = OwnerChange.__table__.c

BULK_JOB_KIND = "customers.assign"
BULK_BATCH = 10_000
# A claim lost to another claim this recently names the winner even when the
# customer has since left the loser's scope (it was in the pool a moment ago);
# otherwise a customer out of scope is simply not found.
RACE_WINDOW = dt.timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class OwnerInfo:
    """A customer's owner as pages show it."""

    owner_id: int | None
    owner_name: str
    team_name: str

    @property
    def in_pool(self) -> bool:
        return self.owner_id is None


@dataclasses.dataclass(frozen=True)
class OwnerChangeResult:
    customer_id: int
    action: str  # claim | assign | transfer | release | none
    owner: OwnerInfo


def owner_infos(conn, owner_ids) -> dict[int, OwnerInfo]:
    """Owners' display names and team names, by user id (one query)."""
    ids = sorted({int(i) for i in owner_ids if i is not None})
    if not ids:
        return {}
    T = Team.__table__.c
    rows = conn.execute(
        select(U.id, U.username, U.display_name, T.name)
        .select_from(User.__table__.outerjoin(Team.__table__, T.id == U.team_id))
        .where(U.id.in_(ids))
    ).all()
    return {r[0]: OwnerInfo(r[0], r[2] or r[1], r[3] or "") for r in rows}


def owner_info(conn, owner_id: int | None) -> OwnerInfo:
    if owner_id is None:
        return OwnerInfo(None, "", "")
    return owner_infos(conn, [owner_id]).get(owner_id, OwnerInfo(owner_id, f"#{owner_id}", ""))


# --- who may do what -----------------------------------------------------------------------


def _led_team(conn, actor: Actor) -> tuple[int, tuple[int, ...]] | None:
    """The team ``actor`` leads (its id and members), if any."""
    if actor.user_id is None:
        return None
    T = Team.__table__.c
    team_id = conn.execute(select(T.id).where(T.lead_user_id == actor.user_id).order_by(T.id).limit(1)).scalar()
    if team_id is None:
        return None
    members = tuple(conn.execute(select(U.id).where(U.team_id == team_id)).scalars())
    return team_id, members


def _active_user(conn, user_id: object) -> int:
    user_id = parse_id_or_invalid(user_id)
    found = conn.execute(select(U.id).where(U.id == user_id, U.is_active.is_(True))).scalar()
    if found is None:
        raise ValidationError.single("owner", "owner.bad_user")
    return found


def parse_id_or_invalid(value: object) -> int:
    try:
        return parse_id(value)
    except NotFound:
        raise ValidationError.single("owner", "owner.bad_user") from None


def _assign_rights(conn, actor: Actor, action: str, target: int | None, customer_id: object = "") -> tuple | None:
    """None: customer.assign (any customer in reach, any owner). A tuple of team member
    ids: a team lead, limited to customers owned in the team or in the pool and to
    owners in the team. Otherwise refused and audited."""
    if actor.can("customer.assign"):
        return None
    led = _led_team(conn, actor)
    if led is None:
        require(actor, "customer.assign", action=action, target_type="customer", target_id=customer_id)
    members = led[1]
    if target is not None and target not in members:
        refuse(actor, action, "owner.outside_team", target_type="customer", target_id=customer_id)
    return members


# --- one customer ----------------------------------------------------------------------------


def _record(session, actor: Actor, action: str, customer_id: int, old: int | None, new: int | None) -> None:
    entry = audit.record(
        session,
        actor,
        action,
        target_type="customer",
        target_id=customer_id,
        details={"old_owner_id": old, "owner_id": new},
    )
    session.add(
        OwnerChange(
            customer_id=customer_id,
            action=action.removeprefix("customer."),
            old_owner_id=old,
            new_owner_id=new,
            actor_id=actor.user_id,
            actor_name=(actor.display_name or actor.username)[:64],
            audit_id=entry.id,
        )
    )


def claim(actor: Actor, customer_id: object) -> OwnerChangeResult:
    """Take a pool customer. Two at once: exactly one wins; the other gets
    Conflict("owner.taken", name=the winner)."""
    require(actor, "customer.claim", action="customer.claim", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    if actor.user_id is None:
        raise NotFound()
    access = CustomerAccess(actor)
    with write_session() as session:
        customer = access.load_for_claim(session, customer_id)
        result = session.execute(
            update(Customer.__table__).where(C.id == customer_id, C.owner_id.is_(None)).values(owner_id=actor.user_id)
        )
        if result.rowcount != 1:
            # Read afresh: on PostgreSQL the winner committed after this transaction began.
            owner = access.owner_of(session.connection(), customer_id)
            if owner == actor.user_id:
                return OwnerChangeResult(customer_id, "none", owner_info(session.connection(), owner))
            lost_race = (
                session.execute(
                    select(OC.id).where(
                        OC.customer_id == customer_id,
                        OC.action == "claim",
                        OC.new_owner_id == owner,
                        OC.changed_at >= utcnow() - RACE_WINDOW,
                    )
                ).first()
                is not None
            )
            customer.owner_id = owner
            if not lost_race and not access.reaches(customer.status, customer):
                raise access.not_found(customer_id, "customer.claim")
            raise Conflict("owner.taken", name=owner_info(session.connection(), owner).owner_name)
        _record(session, actor, "customer.claim", customer_id, None, actor.user_id)
        customers_changed(session, [customer_id], OWNER)
        info = owner_info(session.connection(), actor.user_id)
    return OwnerChangeResult(customer_id, "claim", info)


def assign(actor: Actor, customer_id: object, owner_id: object) -> OwnerChangeResult:
    """Give the customer to ``owner_id`` (an active user), or release it to the pool (None / "").

    customer.assign: any customer in reach. A team lead: customers of the team or
    the pool, to members of the team (or the pool). An owner may release their
    own customer (with customer.claim).
    """
    releasing = owner_id in (None, "", 0, "0")
    customer_id = parse_id(customer_id)
    access = CustomerAccess(actor)
    # Rights first, outside the write transaction (a refusal is audited in its own).
    with read_connection() as conn:
        target = None if releasing else _active_user(conn, owner_id)
        old = access.load_row(
            conn, customer_id, C.owner_id, action="customer.release" if releasing else "customer.assign"
        ).owner_id
        own_release = releasing and old is not None and old == actor.user_id and actor.can("customer.claim")
        members = None
        if not own_release:
            members = _assign_rights(
                conn, actor, "customer.release" if releasing else "customer.assign", target, customer_id
            )
    if members is not None and old is not None and old not in members:
        refuse(
            actor,
            "customer.release" if releasing else "customer.assign",
            "owner.outside_team",
            target_type="customer",
            target_id=customer_id,
        )
    with write_session() as session:
        conn = session.connection()
        customer = access.load(
            session, customer_id, for_write=True, action="customer.release" if releasing else "customer.assign"
        )
        if customer.owner_id != old:  # changed since the rights were checked
            raise Conflict("owner.taken", name=owner_info(conn, customer.owner_id).owner_name or "?")
        if old == target:
            return OwnerChangeResult(customer_id, "none", owner_info(conn, old))
        result = session.execute(
            update(Customer.__table__)
            .where(C.id == customer_id, C.owner_id.is_(None) if old is None else C.owner_id == old)
            .values(owner_id=target)
        )
        if result.rowcount != 1:
            now_owner = access.owner_of(conn, customer_id)
            raise Conflict("owner.taken", name=owner_info(conn, now_owner).owner_name or "?")
        if releasing:
            kind = "release"
            _record(session, actor, "customer.release", customer_id, old, target)
        elif old is None:
            kind = "assign"
            _record(session, actor, "customer.assign", customer_id, old, target)
        else:
            kind = "transfer"
            _record(session, actor, "customer.transfer", customer_id, old, target)
        customers_changed(session, [customer_id], OWNER)
        info = owner_info(conn, target)
    return OwnerChangeResult(customer_id, kind, info)


def release(actor: Actor, customer_id: object) -> OwnerChangeResult:
    return assign(actor, customer_id, None)


# --- many customers --------------------------------------------------------------------------


def _bulk_params(actor: Actor, selection, owner_id: object) -> tuple[Selection, int | None, dict]:
    releasing = owner_id in (None, "", 0, "0")
    with read_connection() as conn:
        target = None if releasing else _active_user(conn, owner_id)
        _assign_rights(conn, actor, "customer.bulk_assign", target)
    if not isinstance(selection, Selection):
        selection = Selection.from_dict(selection)
    check_ticked_in_reach(actor, selection, "customer.bulk_assign")
    params = {"owner_id": target, "selection": selection.to_dict(), "described": selection.describe()}
    return selection, target, params


def start_bulk_assign_job(actor: Actor, selection, owner_id: object) -> int:
    """Assign (or, with owner None, release) every customer of ``selection`` in a
    background job; returns the job id for ``jobs.job_view``."""
    selection, _target, params = _bulk_params(actor, selection, owner_id)
    total = selection_count(actor, selection, exact=True)
    job_id = jobs.create_job(actor, BULK_JOB_KIND, params, total=total)
    jobs.start_in_background(job_id)
    return job_id


def bulk_assign(actor: Actor, selection, owner_id: object) -> BulkResult:
    """The same as the job, run in this thread (CLI, tests, benchmarks)."""
    selection, _target, params = _bulk_params(actor, selection, owner_id)
    job_id = jobs.create_job(actor, BULK_JOB_KIND, params, total=selection_count(actor, selection, exact=True))
    view = jobs.run_job(job_id)
    return BulkResult.of_job(view)


def _apply_batch(conn, ids: list[int], target: int | None, members, actor: Actor, job_id: int, now) -> int:
    """One batch: an owner_change row per customer that changes, then the UPDATE."""
    conditions = [
        C.id.in_(ids),
        C.status == "active",
        C.erased_at.is_(None),
        C.owner_id.is_not(None) if target is None else or_(C.owner_id.is_(None), C.owner_id != target),
    ]
    if members is not None:  # a team lead: the team's customers and the pool's
        conditions.append(or_(C.owner_id.is_(None), C.owner_id.in_(members)))
    where = and_(*conditions)
    conn.execute(
        insert(OwnerChange.__table__).from_select(
            ["customer_id", "changed_at", "action", "old_owner_id", "new_owner_id", "actor_id", "actor_name", "job_id"],
            select(
                C.id,
                literal(now, OC.changed_at.type),
                literal("release" if target is None else "assign"),
                C.owner_id,
                literal(target, OC.new_owner_id.type),
                literal(actor.user_id, OC.actor_id.type),
                literal((actor.display_name or actor.username)[:64]),
                literal(job_id, OC.job_id.type),
            ).where(where),
        )
    )
    return conn.execute(update(Customer.__table__).where(where).values(owner_id=target)).rowcount


def _bulk_worker(ctx: jobs.JobContext) -> dict:
    params = ctx.params
    actor = ctx.actor
    target = params.get("owner_id")
    with read_connection() as conn:
        if target is not None:
            target = _active_user(conn, target)
        members = _assign_rights(conn, actor, "customer.bulk_assign", target)
    selection = Selection.from_dict(params["selection"])
    after_id = int(ctx.checkpoint.get("after_id", 0))
    changed = int(ctx.checkpoint.get("changed", 0))
    processed = ctx.processed
    now = utcnow()
    for ids in iter_selected_ids(actor, selection, after_id=after_id, batch=BULK_BATCH):
        with write_session() as session:
            batch_changed = _apply_batch(session.connection(), ids, target, members, actor, ctx.job_id, now)
            if batch_changed:
                customers_changed(session, ids, OWNER)  # once per batch, told after its commit
        changed += batch_changed
        processed += len(ids)
        after_id = ids[-1]
        ctx.progress(processed, {"after_id": after_id, "changed": changed})
    with write_session() as session:
        audit.record(
            session,
            actor,
            "customer.bulk_assign",
            target_type="user" if target is not None else "",
            target_id=target or "",
            details={
                "owner_id": target,
                "count": changed,
                "selected": processed,
                "selection": params.get("described"),
                "job_id": ctx.job_id,
            },
        )
    return {"changed": changed, "selected": processed}


jobs.register_worker(BULK_JOB_KIND, _bulk_worker)


# --- back to the pool: customers nobody contacted for N days ----------------------------------

POOL_RETURN_BATCH = 5_000
POOL_RETURN = "return"  # owner_change.action


def _stale(owner_id: int, cutoff: dt.datetime) -> list:
    """The owner's active customers last active before ``cutoff``: one range of
    ix_customer_status_owner (status, owner_id, last_active_at, id)."""
    return [status_condition("active"), C.owner_id == owner_id, C.last_active_at < cutoff]


def _owner_ids(conn) -> list[int]:
    """Whoever may own customers: the users (never deleted; owner_id has no foreign key)."""
    return list(conn.execute(select(U.id).order_by(U.id)).scalars())


def _silent_erased(cutoff: dt.datetime):
    """How many erased customers are owned, active and silent since before ``cutoff``: read
    through the partial index of the erased customers (ix_customer_erased_owner, a handful).
    The conditions sit in the CASE so that no other index (by last_active_at: every silent
    customer) looks better to the planner."""
    silent = case((and_(C.status == "active", C.owner_id.is_not(None), C.last_active_at < cutoff), 1), else_=0)
    return select(func.coalesce(func.sum(silent), 0)).where(C.erased_at.is_not(None))


def pool_return_preview(days: int, now: dt.datetime, sample_size: int) -> tuple[int, list[str]]:
    """How many customers a pool return after ``days`` without contact would release, and
    the longest-silent few ("#id · owner · last active": ids, colleagues' names and dates,
    no customer's data). Counted per owner along the owner index."""
    cutoff = now - dt.timedelta(days=days)
    with read_connection() as conn:
        count = 0
        for owner in _owner_ids(conn):  # index-only: no erased_at here
            count += conn.execute(
                select(func.count()).select_from(Customer.__table__).where(*_stale(owner, cutoff))
            ).scalar_one()
        count -= conn.execute(_silent_erased(cutoff)).scalar_one()  # they keep their owner
        rows = conn.execute(
            select(C.id, C.owner_id, C.last_active_at)
            .where(
                status_condition("active"), C.owner_id.is_not(None), C.last_active_at < cutoff, C.erased_at.is_(None)
            )
            .order_by(C.last_active_at, C.id)
            .limit(sample_size)
        ).all()
        owners = owner_infos(conn, [r.owner_id for r in rows])
    sample = [
        f"#{r.id} · {owners[r.owner_id].owner_name if r.owner_id in owners else r.owner_id} · "
        f"{format_local(r.last_active_at)}"
        for r in rows
    ]
    return int(count), sample


def return_to_pool(
    actor: Actor,
    days: int,
    now: dt.datetime,
    job_id: int | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> int:
    """Release every active customer nobody contacted for ``days`` (before ``now``) to the
    pool; returns how many. Per owner, in batches along the owner index (_return_batch),
    each its own transaction. ``after_batch(returned so far)`` after each (a job's progress;
    it may raise to cancel). The caller writes the run's one audit entry (retention.run).
    Running it again (a resumed job) finds only what is left."""
    require(actor, "customer.assign", action="retention.run", target_type="retention", target_id="pool_return")
    cutoff = now - dt.timedelta(days=days)
    with read_connection() as conn:
        owners = _owner_ids(conn)
    returned = 0
    for owner in owners:
        after = None
        while after != ():
            released, after = _return_batch(actor, owner, cutoff, after, job_id)
            returned += released
            if after_batch is not None and released:
                after_batch(returned)
    return returned


def _return_batch(
    actor: Actor, owner: int, cutoff: dt.datetime, after: tuple | None, job_id: int | None
) -> tuple[int, tuple]:
    """One batch of ``owner``'s silent customers after the cursor ``after`` ((last_active_at,
    id); None: from the start): one UPDATE … RETURNING and an ``owner_change`` row each
    (action "return": their timeline). Erased customers keep their owner (the cursor passes
    them). Returns (released, the next cursor; () when the owner has no more)."""
    with write_session() as session:
        conn = session.connection()
        walk = _stale(owner, cutoff)
        if after is not None:
            walk.append(tuple_(C.last_active_at, C.id) > tuple_(*after))
        rows = conn.execute(
            select(C.id, C.last_active_at, C.erased_at)
            .where(*walk)
            .order_by(C.last_active_at, C.id)
            .limit(POOL_RETURN_BATCH)
        ).all()
        ids = [r.id for r in rows if r.erased_at is None]
        released = []
        if ids:
            released = (
                conn.execute(
                    update(Customer.__table__)
                    .where(C.id.in_(ids), *_stale(owner, cutoff))
                    .values(owner_id=None)
                    .returning(C.id)
                )
                .scalars()
                .all()
            )
        if released:
            by = (actor.display_name or actor.username)[:64]
            conn.execute(
                insert(OwnerChange.__table__),
                [
                    {
                        "customer_id": customer_id,
                        "changed_at": utcnow(),
                        "action": POOL_RETURN,
                        "old_owner_id": owner,
                        "new_owner_id": None,
                        "actor_id": actor.user_id,
                        "actor_name": by,
                        "audit_id": None,
                        "job_id": job_id,
                    }
                    for customer_id in released
                ],
            )
            customers_changed(session, released, OWNER)  # once per batch, told after its commit
    more = len(rows) == POOL_RETURN_BATCH
    return len(released), (rows[-1].last_active_at, rows[-1].id) if more else ()


# --- what pages show ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OwnerCard:
    """The owner line of a customer page and what the viewer may do."""

    owner_name: str
    team_name: str
    in_pool: bool
    mine: bool
    can_claim: bool
    can_assign: bool
    can_release: bool


def owner_card(actor: Actor, customer_id: object) -> OwnerCard:
    require(actor, "customer.view", action="customer.view", target_type="customer", target_id=customer_id)
    with read_session() as session:
        customer = CustomerAccess(actor).load(session, customer_id, action="customer.view")
        conn = session.connection()
        info = owner_info(conn, customer.owner_id)
        active = customer.status == "active" and customer.erased_at is None
        led = None if actor.can("customer.assign") else _led_team(conn, actor)
    mine = customer.owner_id is not None and customer.owner_id == actor.user_id
    may_assign = actor.can("customer.assign") or (
        led is not None and (customer.owner_id is None or customer.owner_id in led[1])
    )
    return OwnerCard(
        owner_name=info.owner_name,
        team_name=info.team_name,
        in_pool=info.in_pool,
        mine=mine,
        can_claim=active and info.in_pool and actor.can("customer.claim") and actor.user_id is not None,
        can_assign=active and may_assign,
        can_release=active and not info.in_pool and (may_assign or (mine and actor.can("customer.claim"))),
    )


@dataclasses.dataclass(frozen=True)
class OwnerOption:
    id: int
    name: str
    team: str


def _active_users(owners: tuple[int, ...] | None) -> list[OwnerOption]:
    """Active users (all, or these) with their team's name, by team then user name."""
    T = Team.__table__.c
    statement = (
        select(U.id, U.username, U.display_name, T.name)
        .select_from(User.__table__.outerjoin(Team.__table__, T.id == U.team_id))
        .where(U.is_active.is_(True))
        .order_by(T.name, U.username)
    )
    if owners is not None:
        statement = statement.where(U.id.in_(owners))
    with read_connection() as conn:
        return [OwnerOption(r[0], r[2] or r[1], r[3] or "") for r in conn.execute(statement)]


def owner_options(actor: Actor) -> list[OwnerOption]:
    """The users a customer may be assigned to by ``actor`` (active ones; a lead: the team's)."""
    require(actor, "customer.view", action="customer.list")
    if actor.can("customer.assign"):
        return _active_users(None)
    with read_connection() as conn:
        led = _led_team(conn, actor)
    return [] if led is None else _active_users(tuple(led[1]))


def owner_filter_options(actor: Actor) -> list[OwnerOption]:
    """The owners the list's owner filter offers: those whose customers ``actor`` reaches
    (every active user for a whole-book scope, the team's members for a team scope; none
    for "own + pool", where the 我的客户 quick filter says it all)."""
    require(actor, "customer.view", action="customer.list")
    access = CustomerAccess(actor)
    if access.scope == "own_pool":
        return []
    return _active_users(access.owners_in_scope())


@dataclasses.dataclass(frozen=True)
class TeamOption:
    id: int
    name: str


def team_options(actor: Actor) -> list[TeamOption]:
    """The teams, for the list's team filter (names only; the filter stays within the scope)."""
    require(actor, "customer.view", action="customer.list")
    T = Team.__table__.c
    with read_connection() as conn:
        return [TeamOption(r[0], r[1]) for r in conn.execute(select(T.id, T.name).order_by(T.name))]
