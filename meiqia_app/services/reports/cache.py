"""The in-process cache of report results computed from rows, checked against a data signature."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Connection, func, select

from meiqia_app.db import get_engine
from meiqia_app.models import BehaviorEvent, Conversation, Customer, Order
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import local_zone

C = Customer.__table__.c
OC = Order.__table__.c
CV = Conversation.__table__.c
EV = BehaviorEvent.__table__.c
CACHE_TTL_SECONDS = 300
CACHE_SIZE = 256


# --- cache -----------------------------------------------------------------------------

_version_lock = threading.Lock()
_write_version = 0


def _bump_version() -> None:
    global _write_version
    with _version_lock:
        _write_version += 1


def note_customer_change() -> None:
    """Customer data changed (told by services/customers/changes.py after the commit):
    every cached figure is recomputed at its next read (``allow_stale`` callers are
    given the old one meanwhile, while it is recomputed in the background)."""
    _bump_version()


class _ReportCache:
    """(name, args) -> (data signature, computed at, value); LRU-bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[tuple, float, object]] = OrderedDict()

    def get(self, key: tuple) -> tuple[tuple, float, object] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, signature: tuple, value: object) -> None:
        with self._lock:
            self._entries[key] = (signature, time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _ReportCache()


def invalidate_cache() -> None:
    """Drop every cached figure: the next read computes afresh, never served stale
    (after a change of who reaches which customer)."""
    _cache.clear()
    _bump_version()


def data_signature(conn: Connection) -> tuple:
    maxima = conn.execute(
        select(
            select(func.max(C.id)).scalar_subquery(),
            select(func.max(OC.id)).scalar_subquery(),
            select(func.max(CV.id)).scalar_subquery(),
            select(func.max(EV.id)).scalar_subquery(),
        )
    ).one()
    # The customer-list generation changes with every customer write by any worker
    # (edits, merges, archiving), which the highest ids alone would not show.
    from meiqia_app.services.customers.listing import data_generation

    return (_write_version, data_generation(conn), *maxima)


def _compute_and_store(key: tuple, compute: Callable[[Connection], object]) -> object:
    outer = getattr(computation_state, "excluded", None)
    computation_state.excluded = None  # the archived / trashed ids are read afresh for each computation
    try:
        with get_engine().connect() as conn:
            signature = data_signature(conn)
            value = compute(conn)
    finally:
        computation_state.excluded = outer
    _cache.put(key, signature, value)
    return value


def _refresh_in_background(key: tuple, compute: Callable[[Connection], object]) -> None:
    """Recompute a stale figure on a runner thread, one at a time per figure.

    The figure lives in this process's cache only, so it is no job row (a
    restart empties the cache: nothing to resume); a failure is logged with
    its traceback and the next request computes it in the foreground.
    """
    jobs.run_in_process(f"report-refresh:{key!r}", lambda: _compute_and_store(key, compute), f"report-{key[0]}")


def cached_result(name: str, args: tuple, compute: Callable[[Connection], object], allow_stale: bool = False):
    """The cached value when the data have not changed; else recompute.

    With ``allow_stale`` (the dashboard page), a value computed before the last
    change is returned at once while a background thread recomputes it, so a
    busy system (a write every second) never makes a person wait for the cold
    aggregate; the page shows when the figures were computed.
    """
    # The database and the zone are part of what is asked (tests and a restore switch databases).
    key = (name, args, str(get_engine().url), str(local_zone()))
    entry = _cache.get(key)
    if entry is not None:
        stored_signature, stored_at, value = entry
        fresh = time.monotonic() - stored_at <= CACHE_TTL_SECONDS
        with get_engine().connect() as conn:
            current = data_signature(conn)
        if fresh and stored_signature == current:
            return value
        if allow_stale:
            _refresh_in_background(key, compute)
            stale_flag.served = True
            return value
    return _compute_and_store(key, compute)


stale_flag = threading.local()


def take_served_stale() -> bool:
    """Whether this thread was given a stale figure (being recomputed) since the last call."""
    served = getattr(stale_flag, "served", False)
    stale_flag.served = False
    return served


computation_state = threading.local()
