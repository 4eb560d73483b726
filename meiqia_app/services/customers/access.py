"""Who may reach which customer, and what of it they see: the one access policy.

Every service reaches customer rows through a :class:`CustomerAccess` built from
the acting user (``CustomerAccess(actor)``):

- **Sets** (list, counts, search, bulk "all matching", exports, report
  segments, rule previews): :meth:`CustomerAccess.status_conditions` gives the
  SQL conditions for a status filter, :meth:`CustomerAccess.reach_condition`
  the condition for any row the actor may reach.
- **One customer by id**: :meth:`CustomerAccess.load` (an ORM row),
  :meth:`CustomerAccess.load_row` (chosen columns through a connection) and
  :meth:`CustomerAccess.load_many`. A customer out of reach is *not found*
  (:class:`NotFound`), never "forbidden": ids cannot be probed. For an actor
  with a narrower data scope than "all", each such refusal is also audited
  (:meth:`CustomerAccess.not_found`: the actor, the action, the id), a missing
  id exactly like one out of scope, so neither the answer nor its cost tells
  them apart.
  ``tests/unit/test_architecture.py`` checks that nothing else reads a
  customer by id.
- **Sensitive fields**: the one table :data:`SENSITIVE` (field -> how a role
  without customer.view_sensitive sees it) behind :meth:`CustomerAccess.mask`
  and :func:`mask_value`; the detail card, the edit form, exports, the open
  API's records, portability, the timeline and the audit log's diffs derive
  their lists from it. Custom fields an admin marked sensitive are in it as
  "cf.<key>" (read from their definitions: :class:`SensitiveFields`).

Reach:

- a trashed customer only with customer.delete (the trash is theirs to see);
- everything else, an erased customer included (its anonymised row keeps its
  place in lists and history),
- within the role's data scope (issue 21 part 2, :meth:`scope_condition`):
  own customers + the pool (own_pool), the team's + the pool (team_pool),
  the team's (team), or all. The pool (公海) is the customers without owner;
  a customer's team is its owner's team.

Changes (``for_write=True``) also need an active customer: archived, trashed
or with an erasure pending is read-only (:class:`ReadOnly`) until restored,
and an erased one is not found. ``writer="system"`` (orders, the open API,
ingestion) never writes to a trashed customer, even for an actor who may see
the trash.

The scope lives in :meth:`CustomerAccess.scope_condition` and
:meth:`CustomerAccess._in_scope` only; every set and every loader picks it up
from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence

from sqlalchemy import ColumnElement, and_, false, or_, select, true

from meiqia_app.db import after_write_transaction
from meiqia_app.models import Customer, ErasureRequest
from meiqia_app.models.customer import STATUS_ACTIVE, STATUS_ARCHIVED, STATUS_TRASHED
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX
from meiqia_app.services.customers.masking import MASK, mask_address, mask_email, mask_phone
from meiqia_app.services.customers.query import status_condition
from meiqia_app.services.errors import NotFound, ReadOnly
from meiqia_app.services.identity.rbac import Actor

C = Customer.__table__.c
_ER = ErasureRequest.__table__.c

# --- the sensitive fields ---------------------------------------------------------------------


def _hidden(_value: object) -> str:
    return MASK


# Field -> how a role without customer.view_sensitive sees a non-empty value.
# Names cover the customer's columns, the export catalogue (exports/fields.py)
# and order rows (timeline, portability). Keep the order: records list their
# masked fields in it.
FIXED_SENSITIVE: dict[str, Callable[[object], object]] = {
    "phone": lambda v: mask_phone(str(v)),
    "email": lambda v: mask_email(str(v)),
    "address": lambda v: mask_address(str(v)),
    "birthday": _hidden,
    "total_spent": _hidden,
    "total_spent_cents": _hidden,
    "purchase_history": _hidden,
    "last_order": _hidden,
    "order_amount": _hidden,
    "recipient_name": _hidden,
    "recipient_phone": lambda v: mask_phone(str(v)),
    "shipping_address": lambda v: mask_address(str(v)),
}

# How a sensitive custom field's value looks masked, by its type (others: hidden).
_CUSTOM_MASKERS: dict[str, Callable[[object], object]] = {
    "phone": lambda v: mask_phone(str(v)),
    "email": lambda v: mask_email(str(v)),
}


class SensitiveFields(MutableMapping):
    """The one table of sensitive fields: the fixed ones above, then every custom field
    an admin marked sensitive ("cf.<key>", services/custom_field_catalog.py), whatever
    its status (a retired field's kept values stay masked).

    Looking up a name that is not "cf.…" never reads the definitions. Membership
    (``in``, ``[]``) answers for both parts; iterating lists the fixed part only (the
    names of the built-in catalogues that consumers filter; the sensitive custom
    fields are ``custom_field_catalog.catalog().sensitive``). Setting or deleting an
    entry changes the fixed part (custom fields are marked sensitive in their
    definitions, services/custom_fields.py).
    """

    def __init__(self, fixed: dict[str, Callable[[object], object]]) -> None:
        self._fixed = fixed

    def _custom(self, field: object) -> Callable[[object], object] | None:
        if not isinstance(field, str) or not field.startswith(FIELD_PREFIX):
            return None
        found = custom_field_catalog.sensitive_field(field)
        if found is None:
            return None
        return _CUSTOM_MASKERS.get(found.field_type, _hidden)

    def __getitem__(self, field: str) -> Callable[[object], object]:
        if field in self._fixed:
            return self._fixed[field]
        masker = self._custom(field)
        if masker is None:
            raise KeyError(field)
        return masker

    def __setitem__(self, field: str, masker: Callable[[object], object]) -> None:
        self._fixed[field] = masker

    def __delitem__(self, field: str) -> None:
        del self._fixed[field]

    def __contains__(self, field: object) -> bool:
        return field in self._fixed or self._custom(field) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fixed)

    def __len__(self) -> int:
        return len(self._fixed)


SENSITIVE = SensitiveFields(FIXED_SENSITIVE)


def is_sensitive(field: str) -> bool:
    return field in SENSITIVE


def sensitive_of(fields: Iterable[str]) -> tuple[str, ...]:
    """The sensitive ones of ``fields``, in their order."""
    return tuple(f for f in fields if f in SENSITIVE)


def mask_value(field: str, value: object, hidden: object = MASK) -> object:
    """``value`` of ``field`` as a role without customer.view_sensitive sees it.

    Empty values and fields that are not sensitive pass through; a fully
    hidden value becomes ``hidden`` (MASK; the open API's records use None).
    """
    if value is None or value == "" or value == [] or field not in SENSITIVE:
        return value
    masker = SENSITIVE[field]
    return hidden if masker is _hidden else masker(value)


def mask_diff(diff: dict[str, tuple[object, object]]) -> dict[str, list[object]]:
    """A field diff for the audit log: sensitive values always masked (the log is never erased)."""
    return {field: [mask_value(field, old), mask_value(field, new)] for field, (old, new) in diff.items()}


# --- ids ----------------------------------------------------------------------------------------


def parse_id(value: object) -> int:
    """An id from untrusted input; anything that is not one is simply not found."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise NotFound() from None


def erasure_pending(session, customer_id: int) -> bool:
    return (
        session.execute(select(_ER.id).where(_ER.customer_id == customer_id, _ER.status == "pending")).first()
        is not None
    )


WRITERS = ("person", "system")


class _AsPool:
    """A row without owner, for asking whether the pool is within a scope."""

    owner_id = None


class CustomerAccess:
    """The customers ``actor`` may reach, and how they see them."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    # --- what the actor may see ----------------------------------------------------------------

    @property
    def sees_trash(self) -> bool:
        return self.actor.can("customer.delete")

    @property
    def sees_sensitive(self) -> bool:
        return self.actor.can("customer.view_sensitive")

    # --- sets -------------------------------------------------------------------------------------

    @property
    def scope(self) -> str:
        """The actor's data scope: own_pool, team_pool, team or all (API keys, the system: all)."""
        scope = self.actor.data_scope
        return scope if scope in ("own_pool", "team_pool", "team") else "all"

    def _owners(self) -> tuple[int, ...]:
        """The owners whose customers are in scope (the team's members; without a team, oneself)."""
        me = (self.actor.user_id,) if self.actor.user_id is not None else ()
        if self.scope == "own_pool" or self.actor.team_id is None:
            return me
        return tuple(sorted(set(self.actor.team_member_ids) | set(me)))

    def owners_in_scope(self) -> tuple[int, ...] | None:
        """The owners whose customers this actor reaches besides the pool (None: everyone's)."""
        return None if self.scope == "all" else self._owners()

    def _with_pool(self) -> bool:
        return self.scope in ("own_pool", "team_pool")

    def scope_condition(self) -> ColumnElement | None:
        """The customers within the actor's data scope; None: all of them (no condition at all).

        - own_pool: ``owner_id = :me OR owner_id IS NULL``
        - team_pool: ``owner_id IN (:team's members) OR owner_id IS NULL``
        - team: ``owner_id IN (:team's members)``
        - all: None (the SQL stays exactly as without scopes)

        A user in no team under a team scope: their own customers (and the pool for team_pool).
        The member ids are read with the session (services/identity/sessions.resolve_session), so a
        customer's team is always its owner's current team.
        """
        if self.scope == "all":
            return None
        owners = self._owners()
        if not owners:
            owned = false()
        elif len(owners) == 1:
            owned = C.owner_id == owners[0]
        else:
            owned = C.owner_id.in_(owners)
        return or_(owned, C.owner_id.is_(None)) if self._with_pool() else owned

    def scope_conditions(self) -> list[ColumnElement]:
        """scope_condition as a list to splat into a WHERE: [] for scope all."""
        scope = self.scope_condition()
        return [] if scope is None else [scope]

    def scope_key(self) -> str:
        """Names the set scope_condition gives (cached counts' keys): "" for all."""
        if self.scope == "all":
            return ""
        owners = ",".join(str(i) for i in self._owners())
        return f"{self.scope}:{owners}"

    def _in_scope(self, row) -> bool:
        """The Python form of scope_condition for one loaded row (it must carry ``owner_id``)."""
        if self.scope == "all":
            return True
        owner = row.owner_id
        if owner is None:
            return self._with_pool()
        return owner in self._owners()

    def status_conditions(self, status: str) -> list[ColumnElement]:
        """The conditions for the list's status filter (``active``, ``archived``,
        ``trashed``, ``all``) within reach: the status condition carrying its
        partial index's literal (customer_query.status_condition), the scope.

        The trash without customer.delete: nothing.
        """
        if status == STATUS_TRASHED and not self.sees_trash:
            return [false()]
        return [status_condition(status), *self.scope_conditions()]

    def set_key(self, status: str) -> str:
        """Names the set status_conditions(status) gives (part of cached counts' keys):
        equal for actors whose conditions are equal; the status itself for scope all."""
        if status == STATUS_TRASHED and not self.sees_trash:
            return "none"
        scope = self.scope_key()
        return f"{status}|{scope}" if scope else status

    def reach_condition(self) -> ColumnElement:
        """Any customer row the actor may reach, whatever its status."""
        conditions = ([] if self.sees_trash else [C.status != STATUS_TRASHED]) + self.scope_conditions()
        return and_(*conditions) if conditions else true()

    # --- one customer ------------------------------------------------------------------------------

    @property
    def audits_misses(self) -> bool:
        """Whether a by-id look-up that finds nothing in reach is audited: for a scope
        narrower than "all" (there a crafted id may name somebody else's customer).
        Decided by the actor alone, never by the row: a missing id and one out of scope
        both write the same entry."""
        return self.scope != "all"

    def not_found(self, customer_ids: object, action: str, target_type: str = "customer") -> NotFound:
        """The NotFound to raise for ids the actor cannot reach (missing or out of scope
        alike), with its refusal audited for :attr:`audits_misses` actors: the action and
        the ids, the same entry whatever the reason (nothing in it tells a probe which ids
        exist). Written in a transaction of its own once the caller's write transaction,
        if any, has ended (db.after_write_transaction).

        ``target_type``: what the ids name when they are not customers' but records of a
        customer (a note, a conversation: :meth:`record_customer`)."""
        if self.audits_misses:
            ids = customer_ids if isinstance(customer_ids, (list, tuple)) else [customer_ids]
            target = ",".join(str(i) for i in ids)[:64]
            actor = self.actor

            def record() -> None:
                audit.record_refusal(
                    actor, action, target_type=target_type, target_id=target, details={"reason": "error.not_found"}
                )

            after_write_transaction(record)
        return NotFound()

    def record_customer(
        self, conn, target_type: str, record_id: object, customer_id: int | None, action: str, *columns
    ):
        """The customer (chosen columns, as :meth:`find_row`) of a record found by its own id
        (a note, a conversation): NotFound when the record is missing (``customer_id`` None)
        or its customer is out of reach, the two alike, audited as one refusal naming the
        record (:meth:`not_found`), so a crafted record id tells nothing about other
        customers' records."""
        row = None if customer_id is None else self.find_row(conn, customer_id, *columns)
        if row is None:
            raise self.not_found(record_id, action, target_type=target_type)
        return row

    def reaches(self, status: str, row=None) -> bool:
        """Whether a customer with ``status`` (and, for the scope, its ``row``) is within reach."""
        if status == STATUS_TRASHED and not self.sees_trash:
            return False
        return row is None or self._in_scope(row)

    def load(
        self,
        session,
        customer_id: object,
        for_write: bool = False,
        writer: str = "person",
        action: str = "customer.view",
    ) -> Customer:
        """The customer (ORM row) by id; NotFound when missing or out of reach (audited
        under ``action``, see :meth:`not_found`).

        ``for_write``: the customer must accept changes: erased -> NotFound;
        archived, trashed or erasure pending -> ReadOnly. ``writer="system"``
        (orders, the open API, ingestion): a trashed customer is not found
        even for an actor who may see the trash.
        """
        if writer not in WRITERS:
            raise ValueError(writer)
        customer_id = parse_id(customer_id)
        customer = session.get(Customer, customer_id)
        if customer is None or not self.reaches(customer.status, customer):
            raise self.not_found(customer_id, action)
        if for_write:
            erased = customer.erased_at is not None
            self.check_writable(customer.status, erased, lambda: erasure_pending(session, customer.id), writer)
        return customer

    def load_for_claim(self, session, customer_id: object, action: str = "customer.claim") -> Customer:
        """A customer to claim from the pool (ORM row, writable): found when it would be in
        reach as a pool customer, whoever owns it now (the claim itself is conditional on
        the pool, and the loser of a race is told who won: services/customers/ownership.py)."""
        customer_id = parse_id(customer_id)
        customer = session.get(Customer, customer_id)
        if customer is None or not self.reaches(customer.status, _AsPool()):
            raise self.not_found(customer_id, action)
        self.check_writable(
            customer.status, customer.erased_at is not None, lambda: erasure_pending(session, customer.id)
        )
        return customer

    def owner_of(self, conn, customer_id: int) -> int | None:
        """The current owner id of a customer already found (read afresh, e.g. after a lost claim)."""
        return conn.execute(select(C.owner_id).where(C.id == parse_id(customer_id))).scalar()

    def check_writable(self, status: str, erased: bool, pending, writer: str = "person", row=None) -> None:
        """The write rule for a customer already found: NotFound (out of reach, erased, or
        trashed for a system's write) or ReadOnly (archived, trashed, erasure pending).

        ``pending``: whether an erasure is pending, or a callable asking it (only
        asked when it matters). For set-based writers that look customers up
        themselves (ingestion); :meth:`load` applies it for ``for_write``.
        """
        if writer not in WRITERS:
            raise ValueError(writer)
        if not self.reaches(status, row) or erased or (writer == "system" and status == STATUS_TRASHED):
            raise NotFound()
        if status == STATUS_ARCHIVED:
            raise ReadOnly("error.customer_archived", status=status)
        if status != STATUS_ACTIVE:
            raise ReadOnly(status=status)
        if pending() if callable(pending) else pending:
            raise ReadOnly("error.erasure_pending")

    def load_row(self, conn, customer_id: object, *columns, action: str = "customer.view"):
        """Chosen columns of one customer through a connection (plus ``status``); NotFound when
        out of reach (audited under ``action``, see :meth:`not_found`)."""
        customer_id = parse_id(customer_id)
        row = self.find_row(conn, customer_id, *columns)
        if row is None:
            raise self.not_found(customer_id, action)
        return row

    def find_row(self, conn, customer_id: object, *columns):
        """:meth:`load_row`, but None instead of NotFound (a poll, a webhook payload)."""
        wanted = [C.status, C.owner_id, *(c for c in columns if c is not C.status and c is not C.owner_id)]
        row = conn.execute(select(*wanted).where(C.id == parse_id(customer_id))).first()
        if row is None or not self.reaches(row.status, row):
            return None
        return row

    def load_many(self, conn_or_session, customer_ids: Sequence[int], columns: Sequence | None = None) -> dict:
        """Rows (all columns, or ``columns`` plus id and status) of the reachable customers among ``ids``, by id."""
        ids = [parse_id(i) for i in customer_ids]
        if not ids:
            return {}
        wanted = (
            [Customer.__table__]
            if columns is None
            else [
                C.id,
                C.status,
                C.owner_id,
                *(c for c in columns if all(c is not k for k in (C.id, C.status, C.owner_id))),
            ]
        )
        rows = conn_or_session.execute(select(*wanted).where(C.id.in_(ids))).all()
        return {r.id: r for r in rows if self.reaches(r.status, r)}

    def load_models(self, session, customer_ids: Sequence[int]) -> dict[int, Customer]:
        """ORM rows of the reachable customers among ``ids``, by id."""
        ids = [parse_id(i) for i in customer_ids]
        if not ids:
            return {}
        customers = session.scalars(select(Customer).where(C.id.in_(ids))).all()
        return {c.id: c for c in customers if self.reaches(c.status, c)}

    # --- what the actor sees of it -------------------------------------------------------------------

    def mask(self, field: str, value: object, hidden: object = MASK) -> object:
        """``value`` as this actor sees it (masked without customer.view_sensitive)."""
        return value if self.sees_sensitive else mask_value(field, value, hidden)

    def masked_fields(self, fields: Iterable[str]) -> tuple[str, ...]:
        """The ones of ``fields`` this actor sees masked."""
        return () if self.sees_sensitive else sensitive_of(fields)
