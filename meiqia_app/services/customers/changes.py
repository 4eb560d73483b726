"""One signal: "these customers changed" — told after the change is committed.

Whoever writes customer data (a customer row, its orders, conversations,
events, tags, owner or status) says so in its write transaction:

    with write_session() as session:
        ...
        customers_changed(session, [customer_id], EDITED)

The ids and kinds are collected on the session. When the transaction commits,
and once ``write_session`` has closed the session and given its connection
back, one :class:`CustomersChanged` is published to the subscribers (in the
committing thread, before ``write_session`` returns to the caller). A
transaction that rolls back publishes nothing. Bulk paths say it once per
batch; more than ``MANY_IDS`` ids (or ``MANY``) become "many customers".

Subscribers are registered in one place, services/customers/change_subscribers.py
(the list counts, the report caches, the on-change tag rules); the app
registers them at start and ``publish`` does so in any process that did not
(CLI, scripts, tests), so no entry point can forget them. A subscriber marked
``writes`` (the rules) runs first and may change customers itself: what it
publishes meanwhile joins the change the others are told of, so an edit and
the rule tags it caused retire the caches once.

The report aggregates need no subscriber: database triggers (migration
0003_reports) mark changed customers in the same transaction as the change.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session

from meiqia_app.db import call_after_close

log = logging.getLogger(__name__)

# What changed. Subscribers choose by kind (services/customers/change_subscribers.py).
CREATED = "created"  # new customers (by hand, the open API, an ingested visitor)
EDITED = "edited"  # profile fields (edit form, API update / upsert)
# One field set on many customers by a bulk edit (services/customers/bulk_edit.py), which
# applies the on-change rules that read that field itself, set-based per batch.
BULK_EDITED = "bulk_edited"
ORDERS = "orders"  # an order added by hand
ACTIVITY = "activity"  # ingested behaviour: events, chats, orders, last active
CONSENT = "consent"
TAGS = "tags"  # manual tag assignments, tag merges and deletions
RULE_TAGS = "rule_tags"  # assignments made or removed by tag rules
LIFECYCLE = "lifecycle"  # stage / tier recomputed
STATUS = "status"  # archived, trashed, restored
DELETED = "deleted"  # purged
MERGED = "merged"
ERASED = "erased"
IMPORTED = "imported"
OWNER = "owner"  # claimed, assigned, transferred, released
TEAM = "team"  # a user changed teams: their customers' team changed with them
RESTORED = "restored"  # a backup replaced the database
SEEDED = "seeded"
KINDS = frozenset(
    {
        CREATED,
        EDITED,
        BULK_EDITED,
        ORDERS,
        ACTIVITY,
        CONSENT,
        TAGS,
        RULE_TAGS,
        LIFECYCLE,
        STATUS,
        DELETED,
        MERGED,
        ERASED,
        IMPORTED,
        OWNER,
        TEAM,
        RESTORED,
        SEEDED,
    }
)

MANY = "many"  # instead of ids: too many to list, or not known one by one
MANY_IDS = 10_000


@dataclasses.dataclass(frozen=True)
class CustomersChanged:
    """``ids`` None means many (or unknown) customers."""

    ids: frozenset[int] | None
    kinds: frozenset[str]

    @property
    def many(self) -> bool:
        return self.ids is None

    def merged(self, other: CustomersChanged) -> CustomersChanged:
        ids = None if self.ids is None or other.ids is None else self.ids | other.ids
        if ids is not None and len(ids) > MANY_IDS:
            ids = None
        return CustomersChanged(ids, self.kinds | other.kinds)


def _change(ids, kinds) -> CustomersChanged:
    kinds = frozenset((kinds,) if isinstance(kinds, str) else kinds)
    unknown = kinds - KINDS
    if not kinds or unknown:
        raise ValueError(f"unknown kind of customer change: {sorted(unknown) or 'none'}")
    if isinstance(ids, str):
        if ids != MANY:
            raise ValueError(f"ids must be customer ids or MANY, not {ids!r}")
        return CustomersChanged(None, kinds)
    found = frozenset(int(i) for i in ids)
    return CustomersChanged(None if len(found) > MANY_IDS else found, kinds)


# --- collected on the write session ---------------------------------------------------------

_PENDING = "customer_changes.pending"  # recorded in the open transaction
_COMMITTED = "customer_changes.committed"  # committed, not yet published
_AFTER_CLOSE = "customer_changes.after_close"  # published when write_session has closed


def customers_changed(session: Session, ids: Iterable[int] | str, kinds: str | Iterable[str]) -> None:
    """Record, in ``session``'s transaction, that these customers (or ``MANY``) changed.

    Published after the commit (nothing on a rollback). ``session`` should be a
    ``write_session``: its change is published once the session has closed; any
    other session's right at its commit."""
    change = _change(ids, kinds)
    if not change.many and not change.ids:
        return
    if not session.in_transaction():
        session.begin()  # so that its commit or rollback is the one that decides (no SQL is sent)
    info = session.info
    if _AFTER_CLOSE not in info:
        info[_AFTER_CLOSE] = call_after_close(session, lambda: _publish_committed(session))
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)
    pending = info.get(_PENDING)
    info[_PENDING] = change if pending is None else pending.merged(change)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: its outer transaction decides
        return
    pending = session.info.pop(_PENDING, None)
    if pending is None:
        return
    committed = session.info.get(_COMMITTED)
    session.info[_COMMITTED] = pending if committed is None else committed.merged(pending)
    if not session.info[_AFTER_CLOSE]:
        _publish_committed(session)


def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        # A savepoint rolled back: what it recorded cannot be told apart from its outer
        # transaction's, so it stays (telling of a change that did not happen costs a cache).
        return
    session.info.pop(_PENDING, None)


def _publish_committed(session: Session) -> None:
    change = session.info.pop(_COMMITTED, None)
    if change is not None:
        _dispatch(change)


def publish_committed(ids: Iterable[int] | str, kinds: str | Iterable[str]) -> None:
    """Tell of a change already committed outside any session this code holds
    (a restored database file). Everything else uses :func:`customers_changed`."""
    _dispatch(_change(ids, kinds))


# --- subscribers -------------------------------------------------------------------------------

Subscriber = Callable[[CustomersChanged], None]

_lock = threading.Lock()
_writers: list[Subscriber] = []
_readers: list[Subscriber] = []
_registration = threading.Lock()
_registered = False


def subscribe(callback: Subscriber, writes: bool = False) -> None:
    """Tell ``callback`` of every committed change. ``writes``: it may change customers
    itself (it runs before the others, and its own changes join the one they are told of)."""
    with _lock:
        target = _writers if writes else _readers
        if callback not in target:
            target.append(callback)


def unsubscribe(callback: Subscriber) -> None:
    with _lock:
        for target in (_writers, _readers):
            if callback in target:
                target.remove(callback)


def register_subscribers() -> None:
    """The subscribers of services/customers/change_subscribers.py, once per process
    (the app at start; any other process at its first change)."""
    global _registered
    if _registered:
        return
    with _registration:  # a change told meanwhile by another thread waits for the list
        if _registered:
            return
        from meiqia_app.services.customers import change_subscribers as customer_change_subscribers

        customer_change_subscribers.register(subscribe)
        _registered = True


_local = threading.local()


def _dispatch(change: CustomersChanged) -> None:
    """Tell the subscribers, in this thread. A change published while the writing
    subscribers run (their own commits) is merged into this one."""
    collecting = getattr(_local, "collecting", None)
    if collecting is not None:
        collecting.append(change)
        return
    register_subscribers()
    with _lock:
        writers, readers = list(_writers), list(_readers)
    told = change
    _local.collecting = []
    try:
        fresh = change
        for _round in range(5):  # a writer answering its own changes stops within a round or two
            for callback in writers:
                _call(callback, fresh)
            if not _local.collecting:
                break
            fresh = _local.collecting[0]
            for more in _local.collecting[1:]:
                fresh = fresh.merged(more)
            _local.collecting = []
            told = told.merged(fresh)
        else:
            log.warning("customer changes kept causing changes; stopped after five rounds")
    finally:
        _local.collecting = None
    for callback in readers:
        _call(callback, told)


def _call(callback: Subscriber, change: CustomersChanged) -> None:
    # The change is committed: a failing subscriber must not turn it into an error.
    try:
        callback(change)
    except Exception:  # noqa: BLE001 - logged; the other subscribers still run
        log.exception("a subscriber to customer changes failed: %r", callback)
