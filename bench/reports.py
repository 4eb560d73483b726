"""Dashboard and report latency at 1,000,000 customers (not a test: prints figures).

    .venv/bin/python bench/reports.py --copy-to /tmp/reports-1m     # once: copy + migrate (~4 min)
    .venv/bin/python bench/reports.py --db /tmp/reports-1m/meiqia.db [--runs 5] [--rebuild]

The dashboard reads daily aggregates (services/reports/aggregates.py, migration
0003_reports) that are built once and then updated per changed customer. This
bench WRITES to the database it is given (it builds the aggregates and makes
edits), so it refuses the shared read-only databases: make a copy with
``--copy-to`` (an online backup of the shared 1M database read through
``mode=ro``, then migrated). Figures, through the same services the pages call:
- one-time build of the aggregates (only when missing, or with --rebuild);
- dashboard "warm": nothing changed since the last load;
- dashboard "cold after an edit": one customer's source changed and one order
  added just before (the changed customers are applied, then the figures read);
- dashboard after archiving 1,000 customers at once;
- /reports for all customers and for two segments (two periods compared,
  12-month cohorts, top products), each cold (the in-process cache of segment
  figures emptied first).
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
SHARED = ("/work/bench-data/", "/tmp/bench-reports-1m/")


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def line(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<58} n={len(ms):2}  median={statistics.median(ms):9.1f} ms  max={max(ms):9.1f} ms", flush=True)


def copy_and_migrate(source: str, folder: str) -> None:
    import sqlite3

    target = Path(folder) / "meiqia.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as copy:
        src.backup(copy)
    os.environ["DATABASE_URL"] = f"sqlite:///{target}"
    os.environ["MEIQIA_DATA_DIR"] = str(target.parent)
    from meiqia_app.migrate import upgrade_to_head

    upgrade_to_head()
    with sqlite3.connect(target) as copy:
        copy.execute("ANALYZE")
    print(f"copied and migrated: {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="/tmp/reports-1m/meiqia.db")
    parser.add_argument("--source", default="/work/bench-data/1m/meiqia.db", help="what --copy-to copies")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="time a full rebuild of the aggregates")
    parser.add_argument(
        "--copy-to", default="", help="copy --source (read-only) into this folder, migrate the copy, exit"
    )
    args = parser.parse_args()

    if args.copy_to:
        copy_and_migrate(args.source, args.copy_to)
        return 0
    db = str(Path(args.db).resolve())
    if db.startswith(SHARED):
        print(f"refusing to write to the shared database {db}: use --copy-to /tmp/reports-1m first", file=sys.stderr)
        return 2

    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["MEIQIA_SCHEDULER"] = "0"
    os.environ.setdefault("MEIQIA_DATA_DIR", str(Path(db).parent))
    from sqlalchemy import text

    from meiqia_app.db import get_engine, write_session
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.identity.rbac import BUILTIN_ROLES, Actor
    from meiqia_app.services.reports import aggregates
    from meiqia_app.services.reports import cache as report_cache
    from meiqia_app.services.reports import periods as report_periods
    from meiqia_app.services.reports import trends as report_trends
    from meiqia_app.services.reports import views as report_views

    upgrade_to_head()
    manager = Actor(
        user_id=1,
        username="bench",
        display_name="bench",
        role_name="manager",
        permissions=frozenset(BUILTIN_ROLES["manager"]["permissions"]),
    )
    with get_engine().connect() as conn:
        counts = [
            conn.execute(text(f"select count(*) from {t}")).scalar_one()
            for t in ("customer", "customer_order", "conversation", "behavior_event")
        ]
    print(
        f"database: {db} customers={counts[0]:,} orders={counts[1]:,} conversations={counts[2]:,} events={counts[3]:,}"
    )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)", flush=True)

    state = aggregates.state()
    if args.rebuild or state.get("status") != "ready":
        seconds = timed(aggregates.build, True)
        state = aggregates.state()
        print(
            f"one-time build of the daily aggregates: {seconds:.1f} s ({state.get('customers', 0):,} customers, "
            f"{state.get('rows', 0):,} rows)",
            flush=True,
        )
    seconds = timed(aggregates.apply_pending)
    print(f"pending changes applied before timing: {seconds * 1000:.0f} ms")

    def edit(step: int) -> None:
        """One customer's source changes and one paid order is added (triggers mark them)."""
        with write_session() as session:
            conn = session.connection()
            cid = 1000 + step * 7919 % 900_000
            conn.execute(
                text("UPDATE customer SET source = CASE source WHEN 'web' THEN 'app' ELSE 'web' END WHERE id = :id"),
                {"id": cid},
            )
            conn.execute(
                text(
                    "INSERT INTO customer_order (order_no, customer_id, product_name, quantity, amount_cents, status, created_at, paid_at) "
                    "VALUES (:no, :cid, 'bench', 1, 100, 'paid', :at, :at)"
                ),
                {"no": f"BENCH-{time.time_ns()}", "cid": cid + 1, "at": "2026-11-20 02:00:00.000000"},
            )

    step = 0
    for kind in ("day", "week", "month"):
        params = {"kind": kind, "granularity": "day"}
        report_views.dashboard_view(manager, params)
        line(
            f"dashboard {kind:5} warm (no change since last load)",
            [timed(report_views.dashboard_view, manager, params, True) for _ in range(args.runs)],
        )
        cold = []
        for _ in range(args.runs):
            step += 1
            edit(step)
            cold.append(timed(report_views.dashboard_view, manager, params, True))
        line(f"dashboard {kind:5} cold (after an edit + a new order)", cold)
    with write_session() as session:
        session.connection().execute(
            text(
                "UPDATE customer SET status = 'archived' WHERE id IN (SELECT id FROM customer WHERE status = 'active' "
                "AND id > 500000 ORDER BY id LIMIT 1000)"
            )
        )
    line(
        "dashboard month after archiving 1,000 customers",
        [timed(report_views.dashboard_view, manager, {"kind": "month"}, True)],
    )
    with write_session() as session:
        session.connection().execute(
            text(
                "UPDATE customer SET status = 'active' WHERE id IN (SELECT id FROM customer WHERE status = 'archived' "
                "AND id > 500000 ORDER BY id LIMIT 1000)"
            )
        )
    aggregates.apply_pending()

    defaults = report_views.default_segment_params()
    a = report_periods.make_period("custom", defaults["a_from"], defaults["a_to"])
    b = report_periods.make_period("custom", defaults["b_from"], defaults["b_to"])
    with get_engine().connect() as conn:
        city = conn.execute(
            text(
                "SELECT city, count(*) FROM customer WHERE status = 'active' AND city IS NOT NULL "
                "GROUP BY city ORDER BY 2 DESC LIMIT 1"
            )
        ).one()
    for name, segment in (
        ("all customers", None),
        (f"segment city={city[0]} ({city[1]:,} customers)", ListQuery(city=city[0])),
        ("segment source=wechat", ListQuery(sources=("wechat",))),
        ("segment lifecycle=active", ListQuery(lifecycle=("active",))),
    ):
        report_cache.invalidate_cache()
        line(
            f"/reports {name}: compare two 30-day periods",
            [timed(report_trends.compare_periods, manager, segment, a, b)],
        )
        line(f"/reports {name}: cohorts 12 months", [timed(report_trends.cohorts, manager, 12, b.last, segment)])
        line(f"/reports {name}: top products", [timed(report_trends.top_products, manager, segment, b)])
    for params in ({}, {"source": "wechat"}):
        report_cache.invalidate_cache()
        line(
            f"/reports page, whole view, cold {params or ''}",
            [timed(report_views.segment_report_view, manager, {**defaults, **params})],
        )
    line("trend 24 months (all customers)", [timed(report_trends.trend, manager, "month", None, 24)])
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
