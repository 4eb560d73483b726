"""The pool return at 1,000,000 customers (issue 21 part 2; not a test: prints figures).

    .venv/bin/python bench/pool_return.py [--data-dir data/bench-scope-1m] [--copy-from /work/bench-data/1m]

The database as bench/scope.py makes it (a copy of a 1M bench database or a
fresh seed, migrated; 20 teams of 10 agents, owners spread unevenly, 30 % of
the customers in the pool). Figures:

- the preview (how many customers would return, the longest-silent five),
  as /admin/retention computes it, for a few periods;
- one run for the period whose count is closest to --target (default
  100,000 customers), the way the nightly task runs it (a retention job, as
  the system): seconds and customers per second;

then the customers it returned get their owners back and its owner_change
rows are removed, so the next run starts from the same book.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-scope-1m"))
    parser.add_argument("--copy-from", default="", help="a data dir holding a 1M meiqia.db to copy")
    parser.add_argument("--target", type=int, default=100_000, help="about how many customers the run returns")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / "meiqia.db"
    if not db_file.exists() and args.copy_from:
        import shutil

        print(f"copying {args.copy_from}/meiqia.db …")
        shutil.copyfile(Path(args.copy_from) / "meiqia.db", db_file)
        if (Path(args.copy_from) / "secret.key").exists():
            shutil.copyfile(Path(args.copy_from) / "secret.key", data_dir / "secret.key")
    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")

    from scope import setup_owners
    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.cleanup import retention
    from meiqia_app.services.customers import ownership
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.timeutil import utcnow

    if not db_file.exists():
        from meiqia_app.seed.loader import seed

        print(f"seeding 1,000,000 customers into {data_dir} …")
        seed(1_000_000, seed_value=42)
    upgrade_to_head()
    with get_engine().begin() as conn:
        fresh = not conn.execute(text("SELECT count(*) FROM team WHERE name LIKE 'bench-%'")).scalar_one()
        setup_owners(conn)
    if fresh:
        with get_engine().begin() as conn:
            conn.exec_driver_sql("ANALYZE customer")

    with get_engine().connect() as conn:
        total, owned = conn.execute(
            text("SELECT count(*), count(owner_id) FROM customer WHERE status = 'active'")
        ).one()
    print(f"database: {total:,} active customers, {owned:,} owned; load average {os.getloadavg()}")

    now = utcnow()
    print("\npreview (count and the five longest silent), as /admin/retention shows it")
    previews = {}
    for days in (30, 90, 180, 365, 730, 1095):
        started = time.perf_counter()
        count, sample = ownership.pool_return_preview(days, now, retention.SAMPLE_SIZE)
        seconds = time.perf_counter() - started
        previews[days] = count
        print(f"  {days:>5} days: {count:>9,} customers  {seconds * 1000:8.1f} ms   e.g. {sample[:1]}")

    days = min(previews, key=lambda d: abs(previews[d] - args.target))
    print(f"\nrun: {days} days ({previews[days]:,} customers), as the nightly task (a retention job, the system)")
    retention.update(SYSTEM_ACTOR, "pool_return", True, str(days))
    print(f"load average before: {os.getloadavg()}")
    started = time.perf_counter()
    view = retention.run_scheduled("pool_return")
    seconds = time.perf_counter() - started
    returned = (view.result or {}).get("counts", {}).get("customers", 0)
    print(
        f"returned {returned:,} customers in {seconds:,.1f} s ({returned / max(seconds, 1e-9):,.0f}/s); "
        f"job {view.id} {view.status}; load average after: {os.getloadavg()}"
    )

    # Give them back to their owners for the next run.
    retention.update(SYSTEM_ACTOR, "pool_return", False, str(days))
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE customer SET owner_id = (SELECT old_owner_id FROM owner_change oc "
                "WHERE oc.customer_id = customer.id AND oc.job_id = :job) "
                "WHERE id IN (SELECT customer_id FROM owner_change WHERE job_id = :job)"
            ),
            {"job": view.id},
        )
        conn.execute(text("DELETE FROM owner_change WHERE job_id = :job"), {"job": view.id})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
