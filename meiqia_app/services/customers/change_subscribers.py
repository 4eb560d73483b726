"""Who hears that customers changed (services/customers/changes.py), in one place.

- the on-change tag rules and lifecycle stage (``rules.apply_rules_to_customers``)
  for the customers named, after the changes that ran them before this signal
  existed: a customer made or edited by hand or through the open API, an order
  added by hand, ingested behaviour. (Merges apply them themselves, to report
  the rule tags the survivor got; imports, bulk work and consent do not run them.)
- the customer list's cached counts (``customer_list.invalidate_counts``: this
  process's cache, and a new generation in the database for the other workers);
- the report caches (``reports``): every change makes cached figures recompute
  at their next read; a change of who reaches which customer (owner, team) or
  a restored database drops them, so nobody is served a figure of a scope that
  no longer holds.

The report aggregates are not here: database triggers mark the customers whose
rows changed in the change's own transaction (services/reports/aggregates.py).

Only this module calls ``invalidate_counts`` / ``invalidate_cache``
(tests/unit/test_architecture.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from meiqia_app.services.customers import changes
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.changes import CustomersChanged
from meiqia_app.services.reports import cache as report_cache
from meiqia_app.services.tags.rules import runs as rules

RULE_TRIGGERS = frozenset({changes.CREATED, changes.EDITED, changes.ORDERS, changes.ACTIVITY})
# Ingested behaviour alone (last active, events, chats) leaves the counts to expire
# within a minute, as before: a new generation per batch would add a write to every batch.
COUNTS_UNMOVED_BY = frozenset({changes.ACTIVITY})
# An ingest batch (ACTIVITY, with whatever it caused: prospects made for new visitors, stages,
# rule tags) retires the counts at most once in this many seconds per process. A steady feed
# sends a batch every second or two, and each retirement made every agent's list count its
# customers again (an exact count over 1M rows) and re-read its page: with 20 agents beside
# the feed, most of the app's database time (bench/ingest.py, docs/api.md). What a held-back
# batch changed shows with the next retirement or when the cached counts expire (a minute).
INGEST_RETIRES_COUNTS_EVERY_S = 30.0
_ingest_retired = {"at": None}
_ingest_retired_lock = threading.Lock()
_clock = time.monotonic
# Who reaches which customer changed (or everything did): cached figures are dropped.
DROPS_REPORT_FIGURES = frozenset({changes.OWNER, changes.TEAM, changes.RESTORED})


def apply_rules(change: CustomersChanged) -> None:
    """Stage and rule tags follow the named customers' data (their own change is told too)."""
    if change.many or not change.kinds & RULE_TRIGGERS:
        return
    rules.apply_rules_to_customers(sorted(change.ids))


def retire_counts(change: CustomersChanged) -> None:
    if change.kinds <= COUNTS_UNMOVED_BY:
        return
    if changes.ACTIVITY in change.kinds and not _ingest_may_retire(_clock()):
        return
    customer_list.invalidate_counts()


def forget_ingest_retirement() -> None:
    """The next ingest batch retires the counts (a process switching databases: tests)."""
    with _ingest_retired_lock:
        _ingest_retired["at"] = None


def _ingest_may_retire(now: float) -> bool:
    with _ingest_retired_lock:
        last = _ingest_retired["at"]
        if last is not None and now - last < INGEST_RETIRES_COUNTS_EVERY_S:
            return False
        _ingest_retired["at"] = now
        return True


def retire_report_figures(change: CustomersChanged) -> None:
    if change.kinds & DROPS_REPORT_FIGURES:
        report_cache.invalidate_cache()
    else:
        report_cache.note_customer_change()


def register(subscribe: Callable[..., None]) -> None:
    """Called once per process by ``customer_changes.register_subscribers``."""
    subscribe(apply_rules, writes=True)
    subscribe(retire_counts)
    subscribe(retire_report_figures)
