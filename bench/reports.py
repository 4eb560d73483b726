"""Dashboard and report latency at 1,000,000 customers (not a test: prints figures).

    .venv/bin/python bench/reports.py --copy-to /tmp/bench-reports-1m   # once: copy + migrate (~4 min)
    .venv/bin/python bench/reports.py --db /tmp/bench-reports-1m/meiqia.db [--runs 5]

The reports need the covering indexes of migration 0002_reports. The shared
1M database (/work/bench-data/1m) must not be modified, so ``--copy-to`` makes
an online backup of it (read through ``mode=ro``) and migrates the copy. The
timed runs open the database READ-ONLY (SQLite URI ``mode=ro``). Times,
through the same services the pages call:
- cold: first computation of a period (empty in-process cache);
- warm: the same call again (cache hit; the data signature is re-read);
- stale: after a write elsewhere (simulated by bumping the write counter), with
  ``allow_stale=True`` as the dashboard page calls it — the old figures are
  returned at once and recomputed in a background thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def line(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<48} n={len(ms):2}  median={statistics.median(ms):9.1f} ms  max={max(ms):9.1f} ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="/work/bench-data/1m/meiqia.db")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--copy-to", default="", help="copy --db (read-only) into this folder, migrate the copy, exit")
    args = parser.parse_args()

    if args.copy_to:
        import sqlite3

        target = Path(args.copy_to) / "meiqia.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(f"file:{args.db}?mode=ro", uri=True) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
        os.environ["DATABASE_URL"] = f"sqlite:///{target}"
        os.environ["MEIQIA_DATA_DIR"] = str(target.parent)
        from meiqia_app.migrate import upgrade_to_head

        upgrade_to_head()
        with sqlite3.connect(target) as copy:
            copy.execute("ANALYZE")
        print(f"copied and migrated: {target}")
        return 0

    os.environ["DATABASE_URL"] = f"sqlite:///file:{args.db}?mode=ro&uri=true"
    os.environ["MEIQIA_SCHEDULER"] = "0"
    os.environ.setdefault("MEIQIA_DATA_DIR", "/tmp/meiqia-bench-reports")
    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.services import report_views, reports
    from meiqia_app.services.customer_query import ListQuery
    from meiqia_app.services.rbac import BUILTIN_ROLES, Actor

    manager = Actor(user_id=1, username="bench", display_name="bench", role_name="manager",
                    permissions=frozenset(BUILTIN_ROLES["manager"]["permissions"]))
    with get_engine().connect() as conn:
        customers = conn.execute(text("select count(*) from customer")).scalar_one()
        orders = conn.execute(text("select count(*) from customer_order")).scalar_one()
        chats = conn.execute(text("select count(*) from conversation")).scalar_one()
        events = conn.execute(text("select count(*) from behavior_event")).scalar_one()
    print(f"database: {args.db} (read-only) customers={customers:,} orders={orders:,} conversations={chats:,} events={events:,}")

    for kind in ("day", "week", "month"):
        reports.invalidate_cache()
        params = {"kind": kind, "granularity": "day"}
        cold = [timed(report_views.dashboard_view, manager, params)]
        line(f"dashboard {kind:5} cold (both periods + trend)", cold)
        warm = [timed(report_views.dashboard_view, manager, params) for _ in range(args.runs)]
        line(f"dashboard {kind:5} warm (cache hit)", warm)
        stale = []
        for _ in range(args.runs):
            reports._bump_version()  # what any write in this process does
            stale.append(timed(report_views.dashboard_view, manager, params, True))
        line(f"dashboard {kind:5} after a write, allow_stale", stale)
        # Let the background refresh finish before the next case.
        while reports._cache._refreshing:
            time.sleep(0.2)

    period = reports.make_period("month")
    previous = period.previous()
    for name, segment in (("all customers", None), ("segment source=wechat", ListQuery(sources=("wechat",)))):
        reports.invalidate_cache()
        line(f"compare two months, {name}, cold", [timed(reports.compare_periods, manager, segment, previous, period)])
        line(f"cohorts 12 months, {name}, cold", [timed(reports.cohorts, manager, 12, None, segment)])
        line(f"top products, {name}, cold", [timed(reports.top_products, manager, segment, period)])
    reports.invalidate_cache()
    line("trend 24 months, cold", [timed(reports.trend, manager, "month", None, 24)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
