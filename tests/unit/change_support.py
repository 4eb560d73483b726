"""Helper of the tests of customer changes: what services/customers/changes.py publishes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from meiqia_app.services.customers import changes as customer_changes
from meiqia_app.services.customers.changes import CustomersChanged


@contextlib.contextmanager
def published() -> Iterator[list[CustomersChanged]]:
    """The changes published while the block runs (as the caches' subscribers hear them)."""
    seen: list[CustomersChanged] = []
    customer_changes.register_subscribers()  # the real ones first, as in the app
    customer_changes.subscribe(seen.append)
    try:
        yield seen
    finally:
        customer_changes.unsubscribe(seen.append)


def told(ids, *kinds: str) -> CustomersChanged:
    return CustomersChanged(None if ids is None else frozenset(ids), frozenset(kinds))
