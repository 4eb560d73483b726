"""Custom fields at scale (issue 23; not a test: prints figures).

    .venv/bin/python bench/custom_fields.py [--data-dir data/bench-cf] [--copy-from /work/bench-data/1m]
        [--customers 200000] [--database-url postgresql+psycopg://…/db] [--runs 30] [--skip-add]

The database: a copy of an existing bench database (``--copy-from``, SQLite),
or seeded with ``--customers`` on first use (SQLite in ``--data-dir``, or the
PostgreSQL database of ``--database-url``); then migrated, and on first use
given 30 custom field definitions of every type, 10 of them set on ~90 % of
the customers (written set-based before the indexes are made, as an import
would), then the fields' indexes (the field.setup job) and ANALYZE.

Figures, through the services and the query shapes the list page uses
(services/custom_field_values.py, a manager: every customer, sensitive values
visible), each case ``--runs`` times with different values:

- filter by one single select (options of 0.5 %–30 % of the customers) +
  sort by last active, first page of 50: p50 / p95 (target p95 ≤ 100 ms);
- a number range (widths from 0.1 % to 50 % of the values, through
  ``range_condition``) + sort by last active (target p95 ≤ 150 ms);
- first page with 5 custom columns shown (target p95 ≤ 50 ms);
- reading every customer with 10 custom columns formatted as CSV
  (target ≥ 150,000 rows/s): the document parsed in Python, and the values
  extracted in SQL;
- adding a field with a default to every customer (the definition and the
  field.setup job: its index, which holds the default; target ≤ 60 s), changing
  its default, 200 single edits of it, then deleting it (field.purge);
- ``--cases bulk``: a bulk edit from the list (one field set on every active
  customer through the job's batches): a built-in column, an indexed select, a
  text field; rows/s and the time that means at 1M (target ≤ 60 s).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# key, type, options, share of customers with a value (30 fields, 10 set on most customers)
FIELDS = [
    ("bench_source", "single_select", ["官网", "门店", "老客户推荐", "展会", "广告", "其他"], 0.9),
    ("bench_level", "single_select", ["普通", "银卡", "金卡", "钻石"], 0.9),
    ("bench_region", "single_select", [f"区域{i}" for i in range(1, 11)], 0.9),
    ("bench_channel", "single_select", ["微信", "电话", "邮件"], 0.0),
    ("bench_sel5", "single_select", ["甲", "乙"], 0.0),
    ("bench_sel6", "single_select", ["丙", "丁"], 0.0),
    ("bench_interests", "multi_select", ["数码", "服饰", "美妆", "家居", "食品", "运动", "图书", "母婴"], 0.9),
    ("bench_multi2", "multi_select", ["A", "B"], 0.0),
    ("bench_points", "number", None, 0.9),
    ("bench_score", "number", None, 0.9),
    ("bench_num3", "number", None, 0.0),
    ("bench_num4", "number", None, 0.0),
    ("bench_num5", "number", None, 0.0),
    ("bench_spent", "money", None, 0.9),
    ("bench_money2", "money", None, 0.0),
    ("bench_money3", "money", None, 0.0),
    ("bench_rate", "percent", None, 0.0),
    ("bench_pct2", "percent", None, 0.0),
    ("bench_joined", "date", None, 0.9),
    ("bench_date2", "date", None, 0.0),
    ("bench_date3", "date", None, 0.0),
    ("bench_visit", "datetime", None, 0.0),
    ("bench_dt2", "datetime", None, 0.0),
    ("bench_vip", "yes_no", None, 0.9),
    ("bench_yn2", "yes_no", None, 0.0),
    ("bench_nick", "text", None, 0.9),
    ("bench_text2", "text", None, 0.0),
    ("bench_text3", "text", None, 0.0),
    ("bench_memo", "long_text", None, 0.0),
    ("bench_url", "link", None, 0.0),
]
# Skewed option weights: the region's options range from ~30 % to ~0.5 % of the customers.
REGION_WEIGHTS = [30, 20, 15, 10, 8, 6, 5, 3, 2, 0.5]
SHOWN = ("bench_source", "bench_level", "bench_points", "bench_spent", "bench_joined")
EXPORTED = (
    "bench_source",
    "bench_level",
    "bench_region",
    "bench_interests",
    "bench_points",
    "bench_score",
    "bench_spent",
    "bench_joined",
    "bench_vip",
    "bench_nick",
)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def report(name: str, timings: list[float], target_ms: float | None = None) -> None:
    ms = [t * 1000 for t in timings]
    verdict = "" if target_ms is None else ("  ok" if percentile(ms, 95) <= target_ms else f"  OVER {target_ms:.0f} ms")
    print(
        f"{name:<52} n={len(ms):3}  p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
        f"max={max(ms):7.1f} ms{verdict}",
        flush=True,
    )


def document(rng: random.Random, customer_id: int) -> dict:
    doc: dict = {}
    for key, field_type, options, share in FIELDS:
        if not share or rng.random() >= share:
            continue
        if field_type == "single_select":
            weights = REGION_WEIGHTS if key == "bench_region" else None
            doc[key] = "o" + str(rng.choices(range(1, len(options) + 1), weights=weights)[0])
        elif field_type == "multi_select":
            doc[key] = sorted(
                {f"o{rng.randint(1, len(options))}" for _ in range(rng.randint(1, 3))}, key=lambda o: int(o[1:])
            )
        elif key == "bench_points":
            doc[key] = rng.randint(0, 100_000)
        elif key == "bench_score":
            doc[key] = round(rng.uniform(0, 100), 2)
        elif field_type == "money":
            doc[key] = rng.randint(0, 10_000_000)
        elif field_type == "date":
            doc[key] = f"{rng.randint(2015, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif field_type == "yes_no":
            doc[key] = rng.random() < 0.2
        elif field_type == "text":
            doc[key] = f"昵称{customer_id % 997}"
    return doc


def setup(actor, set_up_jobs: bool = True) -> None:
    """30 definitions, 10 fields filled set-based, then the indexes (the field.setup jobs) and ANALYZE."""
    from sqlalchemy import bindparam, func, select, text, update

    from meiqia_app.db import get_engine
    from meiqia_app.models import Customer
    from meiqia_app.services.custom_fields import definitions as custom_fields
    from meiqia_app.services.platform import jobs

    started = time.perf_counter()
    queued: list[int] = []
    real_start = jobs.start_in_background
    jobs.start_in_background = queued.append  # the indexes after the data, as after an import
    try:
        for position, (key, field_type, options, _share) in enumerate(FIELDS, start=1):
            data = {
                "key": key,
                "label_zh": f"字段{position}",
                "label_en": f"Field {position}",
                "field_type": field_type,
            }
            if options:
                data["options"] = "\n".join(options)
            custom_fields.create_field(actor, data)
    finally:
        jobs.start_in_background = real_start
    print(f"30 definitions in {time.perf_counter() - started:.1f} s", flush=True)

    C = Customer.__table__.c
    engine = get_engine()
    with engine.connect() as conn:
        top = conn.execute(select(func.max(C.id))).scalar() or 0
    rng = random.Random(23)
    started = time.perf_counter()
    statement = (
        update(Customer.__table__)
        .where(C.id == bindparam("cid"))
        .values(custom_fields=bindparam("doc", type_=Customer.__table__.c.custom_fields.type))
    )
    batch = 20_000
    for low in range(0, top, batch):
        rows = [{"cid": cid, "doc": document(rng, cid)} for cid in range(low + 1, min(top, low + batch) + 1)]
        with engine.begin() as conn:
            conn.execute(statement, rows)
        if (low // batch) % 10 == 9:
            print(f"  values written up to id {low + batch:,} ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"10 fields' values for {top:,} ids in {time.perf_counter() - started:.1f} s", flush=True)
    if set_up_jobs:
        started = time.perf_counter()
        for job_id in queued:
            jobs.run_job(job_id)
        print(f"{len(queued)} field indexes in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE customer"))
    print(f"ANALYZE customer in {time.perf_counter() - started:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-cf"))
    parser.add_argument("--copy-from", default="", help="a data dir holding a meiqia.db to copy (SQLite)")
    parser.add_argument("--database-url", default="", help="a PostgreSQL database to use instead of SQLite")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--skip-add", action="store_true", help="do not time adding / deleting a field")
    parser.add_argument("--runs-export", type=int, default=3, help="export_job: runs per case (the best is kept)")
    parser.add_argument(
        "--cases",
        default="filters,page,export,add",
        help="which of filters, page, export, export_job, add, bulk to run (comma list)",
    )
    parser.add_argument(
        "--bulk-fields",
        default="city,cf.bench_level,cf.bench_nick",
        help="--cases bulk: which of city, cf.bench_level, cf.bench_nick to set (comma list)",
    )
    parser.add_argument("--bulk-alt", action="store_true", help="--cases bulk: set other values than the default run")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / "meiqia.db"
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    elif not db_file.exists() and args.copy_from:
        print(f"copying {args.copy_from}/meiqia.db …", flush=True)
        shutil.copyfile(Path(args.copy_from) / "meiqia.db", db_file)
        for name in ("secret.key",):
            if (Path(args.copy_from) / name).exists():
                shutil.copyfile(Path(args.copy_from) / name, data_dir / name)
    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("MEIQIA_SCHEDULER", "off")
    from sqlalchemy import func, inspect, select, text

    from meiqia_app.db import get_engine, read_connection
    from meiqia_app.dbadapter import get_adapter
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.models import Customer
    from meiqia_app.services.custom_fields import catalog as custom_field_catalog
    from meiqia_app.services.custom_fields import definitions as custom_fields
    from meiqia_app.services.custom_fields import values
    from meiqia_app.services.custom_fields.field_types import display
    from meiqia_app.services.customers.access import CustomerAccess
    from meiqia_app.services.customers.listing import LIST_COLUMNS
    from meiqia_app.services.customers.query import base_select
    from meiqia_app.services.identity.rbac import BUILTIN_ROLES, SYSTEM_ACTOR, Actor
    from meiqia_app.services.platform import jobs

    engine = get_engine()
    with engine.connect() as conn:
        empty = (
            "customer" not in set(inspect(conn).get_table_names())
            or not conn.execute(text("SELECT count(*) FROM customer")).scalar_one()
        )
    if empty:
        from meiqia_app.seed.loader import seed

        print(f"seeding {args.customers:,} customers …", flush=True)
        seeded = seed(args.customers, seed_value=42)
        print(f"seeded in {seeded.seconds:,.0f} s", flush=True)
    started = time.perf_counter()
    upgrade_to_head()
    print(f"migrated in {time.perf_counter() - started:.1f} s", flush=True)
    if custom_field_catalog.catalog().get("bench_source") is None:
        setup(SYSTEM_ACTOR)
    adapter = get_adapter(engine)
    C = Customer.__table__.c
    manager = Actor(
        user_id=-2,
        username="bench-manager",
        display_name="bench",
        role_name="manager",
        permissions=frozenset(BUILTIN_ROLES["manager"]["permissions"]),
    )
    access = CustomerAccess(manager)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM customer")).scalar_one()
        indexes = adapter.custom_field_indexes(conn)
    print(
        f"\n{adapter.name}: {total:,} customers, {len(custom_field_catalog.catalog().active)} fields, "
        f"{len(indexes)} field indexes; load average {os.getloadavg()}; {args.runs} runs per case\n",
        flush=True,
    )
    columns = [*LIST_COLUMNS, C.custom_fields]
    page_order = [C.last_active_at.desc(), C.id.desc()]

    def page(conditions) -> list:
        query = base_select(columns, [*access.status_conditions("active"), *conditions]).order_by(*page_order)
        with read_connection() as conn:
            return conn.execute(query.limit(51)).all()

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    rng = random.Random(5)
    for _ in range(3):
        page([])

    def run_filters() -> None:
        # 1. one single select + newest activity first
        choices = [("bench_source", f"o{i}") for i in range(1, 7)] + [("bench_region", f"o{i}") for i in range(1, 11)]
        choices += [("bench_level", f"o{i}") for i in range(1, 5)]
        timings = []
        for run in range(args.runs):
            key, option = choices[run % len(choices)]
            timings.append(
                timed(lambda key=key, option=option: page([values.condition(access, key, "equals", option)]))
            )
        report("single select = option, by last active (page of 50)", timings, 100)
        timings = []
        for _ in range(args.runs):
            key, option = rng.choice(choices)
            other = f"o{int(option[1:]) % 4 + 1}"
            timings.append(
                timed(lambda key=key, a=option, b=other: page([values.condition(access, key, "any_of", [a, b])]))
            )
        report("single select any of two options, by last active", timings)

        # 2. a number range + newest activity first (range_condition picks the index or the walk)
        widths = [100, 1_000, 5_000, 20_000, 50_000]
        timings = []
        by_width: dict[int, list[float]] = {}
        for run in range(args.runs):
            width = widths[run % len(widths)]
            low = rng.randint(0, 100_000 - width)

            def ranged(low=low, width=width) -> None:
                base = access.status_conditions("active")
                with read_connection() as conn:
                    condition = values.range_condition(conn, access, base, "bench_points", [low, low + width])
                page([condition])

            timings.append(timed(ranged))
            by_width.setdefault(width, []).append(timings[-1])
        report("number range (0.1 %–50 %), by last active", timings, 150)
        print(
            "    by width: "
            + ", ".join(f"{w / 1000:g}%: max {max(t) * 1000:.0f} ms" for w, t in sorted(by_width.items())),
            flush=True,
        )
        timings = []
        for run in range(args.runs):
            width = widths[run % len(widths)] * 100
            low = rng.randint(0, 10_000_000 - width) / 100

            def money(low=low, width=width) -> None:
                base = access.status_conditions("active")
                with read_connection() as conn:
                    condition = values.range_condition(
                        conn, access, base, "bench_spent", [low, round(low + width / 100, 2)]
                    )
                page([condition])

            timings.append(timed(money))
        report("money range (0.1 %–50 %), by last active", timings, 150)
        timings = [
            timed(lambda: page([values.condition(access, "bench_vip", "equals", True)])) for _ in range(args.runs)
        ]
        report("yes/no = yes (20 %), by last active", timings, 100)
        timings = [
            timed(lambda o=f"o{run % 8 + 1}": page([values.condition(access, "bench_interests", "any_of", [o])]))
            for run in range(args.runs)
        ]
        report("multi select has option (no index: walk), by last active", timings)

    def run_first_page() -> None:
        # 3. first page with 5 custom columns, formatted and masked as the list would
        def first_page() -> None:
            rows = page([])
            values.column_values(access, {r.id: r.custom_fields for r in rows}, SHOWN, "zh")

        report("first page of 50 with 5 custom columns", [timed(first_page) for _ in range(args.runs)], 50)

    def run_export() -> None:
        # 4. every customer with 10 custom columns as CSV lines
        catalog = custom_field_catalog.catalog()
        exported = [catalog.get(key) for key in EXPORTED]

        def export(in_sql: bool) -> tuple[int, float]:
            out = io.StringIO()
            writer = csv.writer(out)
            extracted = [
                values.value_expression(f) if f.value_kind else adapter.custom_value(C.custom_fields, f.key, "text")
                for f in exported
            ]
            wanted = [C.id, C.name, C.city, *(extracted if in_sql else [C.custom_fields])]
            after, rows_written = 0, 0
            started = time.perf_counter()
            with read_connection() as conn:
                while True:
                    rows = conn.execute(
                        select(*wanted).where(C.id > after, C.status != "trashed").order_by(C.id).limit(10_000)
                    ).all()
                    if not rows:
                        break
                    for row in rows:
                        if in_sql:
                            cells = [display(f, _json_value(f, v)) for f, v in zip(exported, row[3:], strict=True)]
                        else:
                            doc = row[3] or {}
                            cells = [display(f, doc.get(f.key)) for f in exported]
                        writer.writerow([row[0], row[1], row[2] or "", *cells])
                    rows_written += len(rows)
                    after = rows[-1][0]
                    out.seek(0)
                    out.truncate()
            return rows_written, time.perf_counter() - started

        def export_sql_rows(workers: int = 2, mode: str = "custom") -> tuple[int, float]:
            """Whole CSV lines built by the database (the export's row expression, dbadapter
            export_row_sql), as an export job builds them, by ``workers`` threads (the export's
            default: two), each over its share of the ids. ``mode``: "custom": id, name and the
            10 custom values (selects as their labels, numbers and dates as stored, money as
            yuan, yes/no as words); "builtin": id, name and 10 built-in columns instead (the
            machine's figure for today's exports, for comparison); "hybrid": the database
            builds id and name, Python appends the custom cells from the document."""
            import threading

            from sqlalchemy import literal_column

            from meiqia_app.dbadapter.base import ExportColumn, ExportRowFormat
            from meiqia_app.services.exports.rows import csv_field
            from meiqia_app.timeutil import local_zone

            def sql_of(expression) -> str:
                return str(expression.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))

            cells = [ExportColumn("int", "customer.id"), ExportColumn("text", "customer.name")]
            if mode == "builtin":
                for name in ("phone", "email", "province", "city", "company", "external_id", "visitor_id"):
                    cells.append(ExportColumn("text", f"customer.{name}"))
                cells += [
                    ExportColumn("int", "customer.order_count"),
                    ExportColumn("money", "customer.total_spent_cents"),
                    ExportColumn("bool", "customer.consent_marketing"),
                ]
            for field in exported if mode == "custom" else ():
                kind = field.value_kind or "text"
                value = sql_of(adapter.custom_value(C.custom_fields, field.key, kind))
                if field.field_type == "single_select":
                    cells.append(ExportColumn("coded", value, tuple((o.id, o.zh) for o in field.options)))
                elif field.field_type in ("number", "date"):
                    cells.append(ExportColumn("int", value))  # written as stored
                elif field.field_type == "money":
                    cells.append(ExportColumn("money", value))
                elif field.field_type == "yes_no":
                    cells.append(ExportColumn("bool", value))
                else:
                    cells.append(ExportColumn("text", value))
            row_format = ExportRowFormat(
                fmt="csv",
                columns=tuple(cells),
                zone=local_zone(),
                true_text="是",
                false_text="否",
                local_text=str,
                local_cell=str,
                xml_text=str,
                csv_quote=csv_field,
                xml_cell=str,
            )
            with engine.connect() as conn:
                top = conn.execute(select(func.max(C.id))).scalar() or 0
            counts = [0] * workers

            formatters = [_fast_formatter(field) for field in exported]

            def work(slot: int) -> None:
                after, upto = top * slot // workers, top * (slot + 1) // workers
                with engine.connect() as conn:
                    line = literal_column(adapter.export_row_sql(conn, row_format))
                    wanted = [C.id, line] + ([C.custom_fields] if mode == "hybrid" else [])
                    out = io.StringIO()
                    while after < upto:
                        rows = conn.execute(
                            select(*wanted)
                            .where(C.id > after, C.id <= upto, C.status != "trashed")
                            .order_by(C.id)
                            .limit(20_000)
                        ).all()
                        if not rows:
                            break
                        if mode == "hybrid":
                            lines = []
                            for row in rows:
                                doc = row[2] or {}
                                lines.append(
                                    row[1]
                                    + ","
                                    + ",".join(
                                        csv_field(fmt(doc.get(f.key)))
                                        for f, fmt in zip(exported, formatters, strict=True)
                                    )
                                )
                            out.write("\r\n".join(lines))
                        else:
                            out.write("\r\n".join(r[1] for r in rows))
                        counts[slot] += len(rows)
                        after = rows[-1][0]
                        out.seek(0)
                        out.truncate()

            started = time.perf_counter()
            threads = [threading.Thread(target=work, args=(slot,)) for slot in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(counts), time.perf_counter() - started

        for case, name in (
            ("builtin", "(none: 10 built-in columns instead, lines built in SQL, 2 threads)"),
            ("custom", "lines built in SQL, 2 threads"),
            ("hybrid", "SQL line + cells from the document in Python, 2 threads"),
            ("python", "document parsed in Python"),
            ("sql", "values extracted in SQL"),
        ):
            if case in ("python", "sql"):
                count, seconds = export(case == "sql")
            else:
                count, seconds = export_sql_rows(mode=case)
            print(
                f"CSV, 10 custom columns, {name}: {count:,} rows in {seconds:.1f} s = {count / seconds:,.0f} rows/s"
                f"{'  ok' if count / seconds >= 150_000 else '  UNDER 150,000'}",
                flush=True,
            )

    def run_add() -> None:
        # 5. a new field with a default for every customer, its default changed, then its deletion
        jobs.start_in_background = lambda job_id: None
        existing = custom_field_catalog.catalog().get("bench_added")
        if existing is not None:
            view = jobs.run_job(custom_fields.delete_field(SYSTEM_ACTOR, existing.id, "bench_added").job_id)
        started = time.perf_counter()
        change = custom_fields.create_field(
            SYSTEM_ACTOR,
            {
                "key": "bench_added",
                "label_zh": "新增字段",
                "field_type": "single_select",
                "options": "是\n否",
                "default": "是",
            },
        )
        view = jobs.run_job(change.job_id)
        seconds = time.perf_counter() - started
        print(
            f"add a field with a default to every customer: {seconds:6.1f} s (the definition and its index "
            f"{view.result.get('index', '')}; nothing written to the customers){'  ok' if seconds <= 60 else '  OVER 60 s'}",
            flush=True,
        )

        def holding(option: str) -> int:
            condition = values.condition(access, "bench_added", "equals", option)
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(Customer.__table__).where(condition)).scalar_one()

        print(f"  customers with the default: {holding('是'):,}", flush=True)
        started = time.perf_counter()
        changed = custom_fields.update_field(SYSTEM_ACTOR, change.field_id, change.version, {"default": "否"})
        jobs.run_job(changed.job_id)
        print(
            f"change its default: {time.perf_counter() - started:6.1f} s (a new index), "
            f"customers with the new default: {holding('否'):,}",
            flush=True,
        )
        with engine.connect() as conn:
            sample = conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(1000)).scalars().all()
        started = time.perf_counter()
        from meiqia_app.services.customers import edit as customer_edit

        with engine.connect() as conn:
            versions = dict(conn.execute(select(C.id, C.version).where(C.id.in_(sample))).all())
        for customer_id in sample[:200]:
            customer_edit.update_customer(
                SYSTEM_ACTOR, customer_id, versions[customer_id], {"custom_fields": {"bench_added": "是"}}
            )
        print(
            f"200 single edits of the field (the edit path, audited): {(time.perf_counter() - started) / 200 * 1000:.1f} ms each",
            flush=True,
        )
        started = time.perf_counter()
        deleted = custom_fields.delete_field(SYSTEM_ACTOR, change.field_id, "bench_added")
        view = jobs.run_job(deleted.job_id)
        print(
            f"delete it (values removed from every customer): {time.perf_counter() - started:6.1f} s "
            f"({view.result.get('removed', 0):,} removed)",
            flush=True,
        )

    def run_bulk() -> None:
        # 6. bulk edit from the list (services/customers/bulk_edit.py): one field set on every
        # active customer ("all matching"), as the job runs it (batches of set-based UPDATEs,
        # each publishing customers_changed); target: 1M customers in <= 60 s.
        from sqlmodel import select as sm_select

        from meiqia_app.db import read_session
        from meiqia_app.models import Role, User
        from meiqia_app.services.customers import bulk_edit
        from meiqia_app.services.customers.query import ListQuery
        from meiqia_app.services.customers.selection import Selection, selection_count
        from meiqia_app.services.identity.sessions import actor_for

        # A job runs with its creator's current rights: a real manager account.
        with read_session() as session:
            user, role = session.exec(
                sm_select(User, Role).join(Role, Role.id == User.role_id).where(Role.name == "manager")
            ).first()
            editor = actor_for(user, role)
        selection = Selection.of_query(ListQuery())
        count = selection_count(editor, selection)
        chosen = set(args.bulk_fields.split(","))
        alt = args.bulk_alt  # other values, for a database a bulk run already set
        for label, field, value in (
            ("built-in column (city)", "city", "宁波" if alt else "杭州"),
            ("indexed single select held by ~90 % (bench_level)", "cf.bench_level", "o1" if alt else "o4"),
            ("text field (bench_nick: no index of its own)", "cf.bench_nick", "批量2" if alt else "批量"),
        ):
            if field not in chosen:
                continue
            started = time.perf_counter()
            result = bulk_edit.bulk_edit(editor, selection, field, value, confirm=str(count))
            seconds = time.perf_counter() - started
            print(
                f"bulk edit {label}: {result.changed:,} of {count:,} changed in {seconds:6.1f} s "
                f"= {result.changed / seconds:,.0f} rows/s; at 1M: ~{1_000_000 / max(result.changed / seconds, 1):,.0f} s "
                f"[load {os.getloadavg()[0]:.1f}]",
                flush=True,
            )

    cases = set(args.cases.split(","))
    if "bulk" in cases:
        run_bulk()
    if "filters" in cases:
        run_filters()
    if "page" in cases:
        run_first_page()
    if "export" in cases:
        run_export()
    if "export_job" in cases:
        run_export_job(manager, args.runs_export)
    if "add" in cases and not args.skip_add:
        run_add()
    print(f"\nload average after: {os.getloadavg()}")
    return 0


def run_export_job(actor, runs: int) -> None:
    """Every active customer with id, name and 10 custom columns, written to a file the way an
    export job writes it (services/exports: RowSource, then write_csv_lines / write_xlsx for
    rows the database built, or write_csv / write_xlsx for rows built in Python), best of
    ``runs``. Two column sets: EXPORTED (with a multi select: the database cannot build those
    rows, so the whole export takes the Python path) and EXPORTED with the multi select
    swapped for a percent field (every column database-built)."""
    import tempfile

    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.selection import Selection
    from meiqia_app.services.exports.rows import ExportSpec, RowSource
    from meiqia_app.services.exports.run import _meta as export_meta
    from meiqia_app.services.exports.writers import write_csv, write_csv_lines, write_xlsx

    sql_only = tuple("bench_rate" if key == "bench_interests" else key for key in EXPORTED)
    out = Path(tempfile.mkdtemp(prefix="bench-export-"))
    for label, keys in (("all database-built types", sql_only), ("with a multi select", EXPORTED)):
        spec = ExportSpec(
            selection=Selection.of_query(ListQuery()),
            fields=("id", "name", *(f"cf.{k}" for k in keys)),
        )
        for fmt in ("csv", "xlsx"):
            for path_name in ("sql", "python"):
                best = None
                for _ in range(runs if path_name == "sql" else 1):  # the Python path: once (slow)
                    source = RowSource(actor, spec, "zh", datetimes_as_text=fmt == "csv")
                    if path_name == "sql" and not source.sql_fields_supported(fmt):
                        break
                    meta = export_meta(actor, None, spec, "zh", "bench")
                    target = out / f"bench.{fmt}"
                    started = time.perf_counter()
                    if path_name == "sql":
                        rows = source.iter_sql_rows(fmt, meta.true_text, meta.false_text)
                        count = (write_csv_lines if fmt == "csv" else write_xlsx)(
                            target, meta, rows, **({} if fmt == "csv" else {"prebuilt": True})
                        )
                    else:
                        batches = source.iter_batches()
                        count = (write_csv if fmt == "csv" else write_xlsx)(target, meta, batches)
                    seconds = time.perf_counter() - started
                    rate = count / seconds
                    size = target.stat().st_size
                    target.unlink()
                    print(
                        f"  {fmt} {path_name:<6} {label}: {count:,} rows in {seconds:.1f} s = {rate:,.0f} rows/s "
                        f"({size / 1e6:,.0f} MB) [load {os.getloadavg()[0]:.1f}]",
                        flush=True,
                    )
                    best = rate if best is None else max(best, rate)
                if best is not None:
                    target_rate = 150_000 if fmt == "csv" else 40_000
                    print(
                        f"{fmt.upper()} export job, 10 custom columns, {label}, rows built in {path_name}: "
                        f"best of {runs if path_name == 'sql' else 1} {best:,.0f} rows/s{'  ok' if best >= target_rate else f'  UNDER {target_rate:,}'}",
                        flush=True,
                    )


def _fast_formatter(field):
    """One field's value as a CSV cell's text, by a function chosen once per field (what an
    export's Python path would do, rather than the generic display())."""
    labels = {o.id: o.zh for o in field.options}
    kind = field.field_type
    if kind == "single_select":
        return lambda v: "" if v is None else labels.get(v, v)
    if kind == "multi_select":
        return lambda v: "" if not v else "、".join(labels.get(i, i) for i in v)
    if kind == "money":
        return lambda v: "" if v is None else f"{'-' if v < 0 else ''}{abs(v) // 100}.{abs(v) % 100:02d}"
    if kind == "yes_no":
        return lambda v: "" if v is None else ("是" if v else "否")
    return lambda v: "" if v is None else str(v)


def _json_value(field, value):
    """A value extracted in SQL back in its stored form (PostgreSQL's ->> gives a multi select's array as text)."""
    if field.field_type == "multi_select" and isinstance(value, str):
        return json.loads(value)
    if field.field_type == "yes_no" and value is not None:
        return value in (1, True, "true")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
