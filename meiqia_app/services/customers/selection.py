"""What a bulk action works on (CUST-1): "all N matching this filter" or ticked rows.

Bulk tagging, archiving, deleting, exporting and cleanup all receive one of
these. It is built from untrusted input (a browser event), so ``from_dict``
validates it; walking it never holds more than one batch of ids in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from sqlalchemy import and_, select

from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.listing import all_conditions, count_customers, matching_ids, scoped_query
from meiqia_app.services.customers.masking import mask_search_term
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require

C = Customer.__table__.c

# Ticked rows come from pages of at most a few hundred; a bigger list is a
# crafted event, and "all matching" is the way to act on more.
MAX_TICKED_IDS = 10_000
KIND_QUERY = "query"
KIND_IDS = "ids"


@dataclasses.dataclass(frozen=True)
class Selection:
    kind: str = KIND_QUERY
    query: ListQuery = dataclasses.field(default_factory=ListQuery)
    ids: tuple[int, ...] = ()

    @classmethod
    def of_query(cls, query: ListQuery) -> Selection:
        return cls(kind=KIND_QUERY, query=query)

    @classmethod
    def of_ids(cls, ids, status: str = "all") -> Selection:
        """Ticked rows; ``status`` keeps e.g. archived rows out unless the list showed them."""
        return cls.from_dict({"kind": KIND_IDS, "ids": list(ids), "query": {"status": status}})

    @classmethod
    def from_dict(cls, data) -> Selection:
        if not isinstance(data, dict):
            raise ValidationError.single("selection", "error.bad_choice")
        kind = data.get("kind")
        query = ListQuery.from_dict(data.get("query") or {})
        if kind == KIND_QUERY:
            return cls(kind=KIND_QUERY, query=query)
        if kind != KIND_IDS:
            raise ValidationError.single("selection", "error.bad_choice")
        raw = data.get("ids")
        if not isinstance(raw, (list, tuple)) or not raw or len(raw) > MAX_TICKED_IDS:
            raise ValidationError.single("selection", "error.bad_choice")
        try:
            ids = tuple(sorted({int(value) for value in raw}))
        except (TypeError, ValueError):
            raise ValidationError.single("selection", "error.bad_choice") from None
        if ids[0] <= 0:
            raise ValidationError.single("selection", "error.bad_choice")
        # Only the status of the list matters for ticked rows; its search and
        # filters were already applied when the rows were shown.
        return cls(kind=KIND_IDS, query=ListQuery(status=query.status), ids=ids)

    def to_dict(self) -> dict:
        if self.kind == KIND_IDS:
            return {"kind": KIND_IDS, "ids": list(self.ids), "query": {"status": self.query.status}}
        return {"kind": KIND_QUERY, "query": self.query.to_dict()}

    def describe(self) -> dict:
        """For audit entries and job parameters: what was selected, not the rows (a JSON document stored as-is)."""
        if self.kind == KIND_IDS:
            return {
                "kind": KIND_IDS,
                "count": len(self.ids),
                "status": self.query.status,
                "ids_sample": list(self.ids[:20]),
            }
        return {"kind": KIND_QUERY, "query": described_query(self.query)}


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """A bulk action run in this thread (bulk tag, bulk assign): its job and what it changed."""

    job_id: int
    status: str  # the job's final status: done | failed | cancelled
    changed: int = 0  # customers changed
    selected: int = 0  # customers the selection held when walked
    error: str = ""

    @classmethod
    def of_job(cls, view) -> BulkResult:
        """From the final ``jobs.JobView`` of a bulk job (its result holds changed / selected)."""
        result = view.result or {}
        return cls(
            job_id=view.id,
            status=view.status,
            changed=int(result.get("changed", 0)),
            selected=int(result.get("selected", 0)),
            error=view.error or "",
        )


def described_query(query) -> dict:
    """A list query for audit entries: the typed search masked (see mask_search_term)."""
    data = query.to_dict()
    if data.get("q"):
        data["q"] = mask_search_term(data["q"])
    return data


def selection_count(actor: Actor, selection: Selection, exact: bool = True) -> int:
    """How many customers the selection holds now."""
    require(actor, "customer.view", action="customer.list")
    if selection.kind == KIND_QUERY:
        return count_customers(actor, selection.query, exact=exact).value
    return sum(len(batch) for batch in _existing_ids_batches(CustomerAccess(actor), selection, 0, 1000))


def check_ticked_in_reach(actor: Actor, selection: Selection, action: str) -> None:
    """Ticked rows must all be customers the actor may reach (whatever their status now):
    the list only ever shows those, so another id is a crafted one. NotFound, audited for
    a scoped actor (CustomerAccess.not_found); nothing in the answer says which id.
    A selection of "all matching" is cut to the reach by its query instead."""
    access = CustomerAccess(actor)
    unreachable = ticked_out_of_reach(access, selection)
    if unreachable:
        raise access.not_found(unreachable, action)


def ticked_out_of_reach(access: CustomerAccess, selection: Selection) -> list[int]:
    """The ticked ids that name no customer ``access`` reaches (missing or out of scope
    alike, whatever their status); [] for a selection of "all matching"."""
    if selection.kind != KIND_IDS:
        return []
    reach = access.reach_condition()
    found: set[int] = set()
    with get_engine().connect() as conn:
        for start in range(0, len(selection.ids), 1000):
            chunk = list(selection.ids[start : start + 1000])
            found.update(conn.execute(select(C.id).where(C.id.in_(chunk), reach)).scalars())
    return [i for i in selection.ids if i not in found]


def _existing_ids_batches(
    access: CustomerAccess, selection: Selection, after_id: int, batch: int
) -> Iterator[list[int]]:
    """Ticked ids that still exist in the list's status within reach, in id order."""
    status = access.status_conditions(selection.query.status)
    pending = [i for i in selection.ids if i > after_id]
    with get_engine().connect() as conn:
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            statement = select(C.id).where(and_(C.id.in_(chunk), *status)).order_by(C.id)
            found = list(conn.execute(statement).scalars())
            if found:
                yield found


def iter_selected_ids(actor: Actor, selection: Selection, after_id: int = 0, batch: int = 5000) -> Iterator[list[int]]:
    """Batches of customer ids in ascending id order, starting after ``after_id``.

    A job records the last id of each finished batch as its checkpoint and
    resumes from there after a restart.
    """
    require(actor, "customer.view", action="customer.list")
    if selection.kind == KIND_IDS:
        yield from _existing_ids_batches(CustomerAccess(actor), selection, after_id, batch)
        return
    while True:
        ids = matching_ids(actor, selection.query, after_id=after_id, batch=batch)
        if not ids:
            return
        yield ids
        after_id = ids[-1]


def selection_conditions(conn, selection: Selection, actor: Actor) -> list:
    """SQL conditions equivalent to the selection, for set-based statements
    (``INSERT … SELECT``, ``UPDATE … WHERE``) that should not pull ids into Python.
    The search matches under the rules of ``actor``'s role (customer_query)."""
    access = CustomerAccess(actor)
    if selection.kind == KIND_IDS:
        return [C.id.in_(selection.ids), *access.status_conditions(selection.query.status)]
    return all_conditions(conn, access, scoped_query(actor, selection.query))
