"""Cleanup and backup figures at 1,000,000 customers (not a test: prints figures).

    .venv/bin/python bench/cleanup.py [--source /work/bench-data/1m] [--work /tmp/cleanup-1m/work] [--n 100000]
    # PostgreSQL: a database seeded with DATABASE_URL=… python -m meiqia_app seed (data dir DIR)
    .venv/bin/python bench/cleanup.py --source DIR --database-url postgresql+psycopg://…/bench1m

1. Backup of the whole source database with the SQLite online backup API
   (MB/s; the source is opened read only and never modified); the copy
   becomes the working database and is migrated to the newest schema
   (0002_reports indexes, 0004_cleanup index + ANALYZE; timed on its own).
2. Dry run of "inactive > 12 months" on the copy.
3. Archive ``--n`` customers (a cleanup job: batches with checkpoint), move
   them to the trash, purge them. Trash and purge take the automatic backup
   first (online backup + sha256 + PRAGMA integrity_check); its time is
   printed separately and NOT included in the trash / purge figures.
Peak RSS is printed at the end (bounded memory).

Before (2026-11-23, 10,000-id batches, one IN list per statement; load 4.5–6.5):
  archive 100,073 customers 64 s; trash 35 s; purge 105,256 + 1.0 M child rows 98 s.
After (set-based windows of BULK_BATCH customers, a bigger page cache per batch, migration
0003's ANALYZE; 2026-11-23 18:20–18:33, shared 2-core machine, load average 3–7):
  dry run inactive > 12 months (191,097)        0.03–0.06 s (0.5 s with erase effects)
  backup, online backup API                     3,128 MB in 22 s = 141 MB/s
    automatic pre-purge backup incl. sha256 + PRAGMA integrity_check: 870 s at load 7–9
  archive 100k: 50k batches + 1 GiB cache 27.6 s (load 4); 25k + 256 MiB 31–48 s;
                one 100k batch + 1 GiB 17.5 s (load 7); before: 64 s
  trash 101k (25k + 256 MiB)                    24 s
  purge 100k + ~860k child rows: 50k + 512 MiB 48 s (load 7), 50k + 1 GiB 92 s (load 3→6),
                25k + 256 MiB 133 s; before: 98 s. Customer DELETE 13–41 s, FTS delete
                12–20 s, events 9–13 s, orders 8–12 s, the rest commits.
  peak RSS 1.3 GB (archive) – 2.0 GB (purge) with the 1 GiB bulk cache
  Final settings (50k + 1 GiB), fresh migrated copy, load 6.4 → 3.6 (18:33): archive 100,098
  27.8 s, trash 101,096 45.0 s, purge 101,096 + 871k child rows 72.1 s (backups excluded),
  peak RSS 2.1 GB.
2026-12-03, fresh 1M seed (3.7 GB), quiet 2-core VM (load ~1), two full runs:
  backup 3,689 MB in 5.6 s = 661 MB/s (source in the OS cache); dry run inactive > 12 months
  (190,984) 0.01-0.04 s; archive 100,156 in 16.8-17.6 s; trash 101,154 in 10.3-10.9 s;
  purge 101,154 + ~980k child rows 39.8-42.4 s with the purge's foreign-key checks off
  (automatic backups, with fsync + sha256 + integrity_check, 105-121 s each, excluded);
  peak RSS 1.6 GB. The purge alone on a fresh copy (100,000 trashed by one UPDATE,
  /tmp-style experiment, same code): 30.1-32.3 s in four runs, of which commits (WAL
  writes of ~1.5 GB per 50k batch: the scattered deletes dirty most pages of the
  customer table, its 17 indexes and the child tables) ~11 s, customer DELETE 5.6-6.5 s,
  events 3.6-4.1, orders 3.2-4.0, FTS 3.1-3.5; the report triggers and secure_delete
  cost nothing measurable. Before the foreign-key change: 45-50 s.
Later on 2026-12-03, another 2-core VM (the same code purged 100k in 46-49 s on a fresh
copy, 56.2 s in the sequence), after migration 0005 dropped the three prefix indexes:
  SQLite: archive 100,070 in 17.7 s; trash 101,068 in 11.7 s; purge 101,068 in 38.6 s
  (39.8-40.5 s on a fresh copy); automatic backups 117-119 s each, excluded. Of the purge,
  ~13.5 s are the two commits (each writes ~1.6 GB of WAL: the scattered customers' rows,
  children and index entries sit on 612,000 of the file's 918,000 pages), customer DELETE
  7.2-7.5, events 6.2-6.6, FTS 4.4-5.3, orders 3.5-3.9 (6.2 before 0005).
  PostgreSQL 15 (fsync and full_page_writes on, shared_buffers 4 GB), two runs, same data:
  copy (CREATE DATABASE TEMPLATE) 30 s; dry run 0.06-0.07 s; archive 100,043 in 14.1 s;
  trash 101,041 in 15.7-18.7 s; purge 101,041 + ~980k child rows in 19.9-20.4 s;
  automatic pg_dump backups (with pg_restore --list) 47-50 s each, excluded; peak RSS 151 MB.
  PostgreSQL deletes without touching the indexes (VACUUM reclaims them later), which is
  why it stays well inside 30 s where SQLite rewrites two thirds of its file.
Same VM, after migration 0006 (SQLite: the eleven status-led customer indexes partial, without
the trash; the (kind, occurred_at) event index dropped) and with 16 KiB pages (source rewritten
by `python -m meiqia_app compact`), two full runs:
  archive 100,070 in 22.2-22.8 s; trash 101,068 in 6.9-9.0 s; purge 101,068 + ~980k child rows
  in 23.7-25.1 s (was 38.6 s); automatic backups 118-155 s each, excluded; peak RSS 1.5 GB.
  Purge on a fresh copy (purge alone, 100,000 trashed by one UPDATE): 4 KiB pages 40-42 s before
  0006, 30.0-32.9 s after; 16 KiB + 0006 30.4-30.7 s. Deleting the 100,000 customer rows alone:
  7.5 s with the trash in the working-set indexes, 2.4 s without; 32 and 64 KiB pages were slower
  (45, 52 s). A background WAL checkpoint overlapping the next batch made it worse (80 s), reverted.
What costs is index upkeep (12 status-leading customer indexes, 17 in all; 5–8 per child
table): every batch dirties nearly every leaf page of them, so the figures follow the
number of batches and the machine's load more than the number of statements.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MEIQIA_SCHEDULER", "0")


def point_at(data_dir: Path) -> None:
    from meiqia_app.config import reload_settings
    from meiqia_app.db import reset_engine
    from meiqia_app.services.customers import listing as customer_list

    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    reload_settings()
    reset_engine()
    customer_list.invalidate_counts()


def copy_sqlite_database(source: Path, target: Path) -> None:
    """1. Backup of the whole database with the online backup API; the copy is the working database."""
    size = source.stat().st_size
    started = time.perf_counter()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    src.backup(dst, pages=4096)
    dst.close()
    src.close()
    seconds = time.perf_counter() - started
    print(f"backup (online backup API) {size / 1e6:,.0f} MB in {seconds:.1f} s = {size / 1e6 / seconds:,.0f} MB/s")


def copy_postgresql_database(source_url: str) -> str:
    """The working database is a copy of the source (CREATE DATABASE … TEMPLATE, a file copy).
    The backup figure on PostgreSQL is the automatic pg_dump before trash and purge, timed below."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    source = make_url(source_url)
    work_name = f"{source.database}_cleanup_work"
    admin = create_engine(source.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{work_name}"'))
        size = conn.execute(text("SELECT pg_database_size(:n)"), {"n": source.database}).scalar_one()
        started = time.perf_counter()
        conn.execute(text(f'CREATE DATABASE "{work_name}" TEMPLATE "{source.database}"'))
        print(
            f"copy of the PostgreSQL database ({size / 1e6:,.0f} MB, CREATE DATABASE … TEMPLATE): "
            f"{time.perf_counter() - started:.1f} s"
        )
    admin.dispose()
    work_url = source.set(database=work_name).render_as_string(hide_password=False)
    os.environ["DATABASE_URL"] = work_url
    return work_url


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="/work/bench-data/1m")
    parser.add_argument("--work", default="/tmp/cleanup-1m/work")
    parser.add_argument("--verify-copy", action="store_true", help="also time sha256 + integrity_check of the copy")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        default="",
        help="a seeded PostgreSQL database (its data dir is --source): work on a copy of it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working copy")
    args = parser.parse_args()
    source, work = Path(args.source), Path(args.work)

    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.services.cleanup import actions as cleanup
    from meiqia_app.services.cleanup import preview as cleanup_preview
    from meiqia_app.services.cleanup import trash as cleanup_trash
    from meiqia_app.services.cleanup.criteria import Criteria
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.platform import jobs

    print("load:", os.getloadavg())
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("secret.key", "demo_accounts.json"):
        if (source / name).exists():
            shutil.copy2(source / name, work / name)
    work_url = copy_postgresql_database(args.database_url) if args.database_url else ""
    if not work_url:
        copy_sqlite_database(source / "meiqia.db", work / "meiqia.db")
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.platform import backup

    point_at(work)
    started = time.perf_counter()
    upgrade_to_head()
    point_at(work)
    print(f"migrate the copy to the newest schema: {time.perf_counter() - started:.1f} s")

    # 2. dry run
    criteria = Criteria(inactive_months=12)
    for attempt in range(3):
        started = time.perf_counter()
        result = cleanup_preview.dry_run(SYSTEM_ACTOR, criteria, "archive")
        seconds = time.perf_counter() - started
        print(
            f"dry run inactive>12 months (run {attempt + 1}): {result.count:,} matches, "
            f"sample {len(result.sample)}, {seconds:.2f} s"
        )
    started = time.perf_counter()
    result = cleanup_preview.dry_run(SYSTEM_ACTOR, criteria, "erase")
    print(f"dry run inactive>12 months with erase effects (all tables): {time.perf_counter() - started:.2f} s")
    if args.verify_copy:
        started = time.perf_counter()
        digest = backup.sha256_of(work / "meiqia.db")
        print(f"  sha256 of the copy: {time.perf_counter() - started:.1f} s ({digest[:12]}…)")
        started = time.perf_counter()
        print(f"  integrity_check: {backup.verify_file(work / 'meiqia.db')} in {time.perf_counter() - started:.1f} s")
    # The automatic backups taken before trash and purge are timed on their own:
    # the action figures below exclude them.
    backup_seconds: list[float] = []
    original_take = cleanup._take_backup

    def timed_take(ctx, note):
        t0 = time.perf_counter()
        try:
            return original_take(ctx, note)
        finally:
            backup_seconds.append(time.perf_counter() - t0)

    cleanup._take_backup = timed_take

    # 3. writes on the copy
    jobs.start_in_background = lambda job_id: jobs.run_job(job_id)  # run inline, timed
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.saved_views import save_view
    from tests.conftest import load_actors

    if work_url:  # importing the tests' conftest drops DATABASE_URL (the tests choose their own)
        os.environ["DATABASE_URL"] = work_url

    admin = load_actors()["admin"]
    # About N customers: those registered up to the day of the N-th registration
    # (a saved view, the way a person would pick them).
    with get_engine().connect() as conn:
        reg = conn.execute(
            text("SELECT registered_at FROM customer WHERE status='active' ORDER BY registered_at LIMIT 1 OFFSET :n"),
            {"n": args.n - 1},
        ).scalar_one()
    view = save_view(admin, "bench-first-n", ListQuery(registered_to=str(reg)[:10]))
    crit = Criteria(view_id=view.id)
    count = cleanup_preview.count_matching(admin, crit)
    list_before = cleanup_preview.list_query_ms(admin)
    started = time.perf_counter()
    job_id = cleanup.start_action(admin, crit, "archive", confirm=str(count))
    seconds = time.perf_counter() - started
    view_done = jobs.job_view(admin, job_id)
    print(
        f"archive {count:,} customers: {seconds:.1f} s ({count / seconds:,.0f}/s), status {view_done.status}, "
        f"load {os.getloadavg()[0]:.1f}; "
        f"list query {view_done.result.get('list_ms_before')} ms before, {view_done.result.get('list_ms_after')} ms after "
        f"(measured here before: {list_before} ms)"
    )
    trash_crit = Criteria(view_id=view.id, scope="archived")
    count = cleanup_preview.count_matching(admin, trash_crit)
    started = time.perf_counter()
    job_id = cleanup.start_action(admin, trash_crit, "trash", confirm=str(count))
    seconds = time.perf_counter() - started
    result = jobs.job_view(admin, job_id).result
    print(
        f"trash {count:,} customers: {seconds - backup_seconds[-1]:.1f} s, load {os.getloadavg()[0]:.1f} "
        f"(+ automatic backup with sha256 and integrity_check {backup_seconds[-1]:.1f} s: {result.get('backup')})"
    )
    started = time.perf_counter()
    job_id = cleanup_trash.start_purge(admin, all_trash=True)
    seconds = time.perf_counter() - started
    result = jobs.job_view(admin, job_id).result
    print(
        f"purge {result['processed']:,} customers from the trash: {seconds - backup_seconds[-1]:.1f} s, "
        f"load {os.getloadavg()[0]:.1f} "
        f"(+ automatic backup {backup_seconds[-1]:.1f} s); rows {result['counts']}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB")
    if not args.keep:
        shutil.rmtree(work)
        if work_url:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            from meiqia_app.db import reset_engine

            reset_engine()
            parsed = make_url(work_url)
            admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
