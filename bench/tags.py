"""Bulk tagging and rule runs at 1,000,000 customers (not a test: prints figures).

    .venv/bin/python bench/tags.py [--source /work/bench-data/1m] [--work-dir /tmp/bench-tags]

Works on a COPY of the reference database (it writes tag assignments): the
copy is made on first use (3 GB, about a minute) and reused afterwards, with
this run's tag and assignments removed first. Prints:

* a bulk "add tag" over a filter matching about half the customers, run
  through the same job worker the page uses (batches, checkpoints, audit);
* the same bulk "remove";
* each shipped default rule run over every customer (set-based), and the
  total, evaluated "as of" the newest order in the data;
* peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="/work/bench-data/1m")
    parser.add_argument("--work-dir", default="/tmp/bench-tags")
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--skip-rules", action="store_true")
    parser.add_argument("--skip-preview", action="store_true")
    args = parser.parse_args()

    work = Path(args.work_dir)
    if not (work / "meiqia.db").exists():
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"copying {args.source} to {work} …", flush=True)
        for name in ("meiqia.db", "secret.key", "demo_accounts.json"):
            if (Path(args.source) / name).exists():
                shutil.copy2(Path(args.source) / name, work / name)
        print(f"copied in {time.perf_counter() - started:.0f} s", flush=True)

    os.environ["MEIQIA_DATA_DIR"] = str(work)
    os.environ["MEIQIA_SCHEDULER"] = "0"
    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.selection import Selection
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.tags import catalog as tags
    from meiqia_app.services.tags.rules import definitions as rule_definitions
    from meiqia_app.services.tags.rules import runs as rules

    upgrade_to_head()
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM tag WHERE name = 'bench-bulk'"))
        total = conn.execute(text("SELECT count(*) FROM customer WHERE status = 'active'")).scalar_one()
        by_source = conn.execute(
            text("SELECT source, count(*) FROM customer WHERE status = 'active' GROUP BY source ORDER BY count(*) DESC")
        ).all()
        newest = conn.execute(text("SELECT max(created_at) FROM customer_order")).scalar_one()
    print(f"database: {total:,} active customers; peak RSS so far {rss_mb():.0f} MB\n", flush=True)

    if not args.skip_bulk:
        chosen, covered = [], 0
        for source, count in by_source:
            if covered >= total // 2:
                break
            chosen.append(source)
            covered += count
        tag_id = tags.create_tag(SYSTEM_ACTOR, "bench-bulk")
        selection = Selection.of_query(ListQuery.from_dict({"sources": chosen}))
        started = time.perf_counter()
        result = tags.bulk_tag(SYSTEM_ACTOR, selection, tag_id, "add")
        seconds = time.perf_counter() - started
        print(
            f"bulk add    sources={','.join(chosen)}: {result.changed:,} customers in {seconds:6.1f} s "
            f"({result.changed / seconds:,.0f}/s)  peak RSS {rss_mb():.0f} MB",
            flush=True,
        )
        started = time.perf_counter()
        result = tags.bulk_tag(SYSTEM_ACTOR, selection, tag_id, "remove")
        seconds = time.perf_counter() - started
        print(
            f"bulk remove same selection: {result.changed:,} customers in {seconds:6.1f} s  peak RSS {rss_mb():.0f} MB",
            flush=True,
        )
        tags.delete_tag(SYSTEM_ACTOR, tag_id)

    if not args.skip_rules:
        import datetime as dt

        from meiqia_app.timeutil import as_utc

        now = as_utc(newest if isinstance(newest, dt.datetime) else dt.datetime.fromisoformat(str(newest)))
        created = rule_definitions.ensure_default_rules()
        print(f"\nrules as of {now:%Y-%m-%d %H:%M} UTC (default rules created now: {created})", flush=True)
        with engine.begin() as conn:
            cleared = conn.execute(text("DELETE FROM tag_assignment WHERE source = 'rule'")).rowcount
        print(f"cleared {cleared:,} rule assignments left by an earlier run", flush=True)
        for label in ("first run (every assignment new)", "second run (nothing changes)"):
            print(f"-- {label}", flush=True)
            overall = time.perf_counter()
            for view in rule_definitions.list_rules(SYSTEM_ACTOR):
                if not view.enabled:
                    continue
                started = time.perf_counter()
                summary = rules.run_rule(SYSTEM_ACTOR, view.id, now=now)
                print(
                    f"rule {view.name:<8} {time.perf_counter() - started:6.1f} s  "
                    f"matched={summary.matched:>8,} added={summary.added:>8,} "
                    f"removed={summary.removed:>7,}  peak RSS {rss_mb():.0f} MB",
                    flush=True,
                )
            print(f"all rules: {time.perf_counter() - overall:.1f} s\n", flush=True)
        started = time.perf_counter()
        views = tags.list_tags(SYSTEM_ACTOR)
        print(f"tag table with usage counts ({len(views)} tags): {time.perf_counter() - started:.2f} s", flush=True)
    if not args.skip_preview:
        import datetime as dt

        from meiqia_app.timeutil import as_utc

        now = as_utc(newest if isinstance(newest, dt.datetime) else dt.datetime.fromisoformat(str(newest)))
        rule_definitions.ensure_default_rules()
        print("-- preview (matching / would gain / would lose / sample) of each default rule in sync mode", flush=True)
        for view in rule_definitions.list_rules(SYSTEM_ACTOR):
            data = {
                "name": view.name,
                "tag_id": view.tag_id,
                "match": view.match,
                "mode": "sync",
                "conditions": view.conditions,
            }
            started = time.perf_counter()
            preview = rule_definitions.preview_rule(SYSTEM_ACTOR, data, view.id, now=now)
            print(
                f"preview {view.name:<8} {time.perf_counter() - started:6.1f} s  matching={preview.matching:>8,} "
                f"gain={preview.would_gain:>7,} lose={preview.would_lose:>7,}  peak RSS {rss_mb():.0f} MB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
