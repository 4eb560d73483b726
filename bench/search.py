"""Customer search and list latency at 1,000,000 customers (not a test: prints figures).

    .venv/bin/python bench/search.py [--customers 1000000] [--data-dir data/bench-1m] [--runs 30]

Seeds the database on first use (about 4 minutes for 1M on 2 cores) and
reuses it afterwards. Every case runs at least ``--runs`` times with
different real fragments taken from the data (so the figures are not one
cached query), through the same service the list page calls, as an agent
(masked fields, like the busiest users: they match contact data only by the
whole value or by what the mask shows) and, for searches, as a senior agent
(who sees and matches every digit). Filters and sorts by the amount spent
run as the senior agent (agents may not use them).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def report(name: str, timings: list[float], extra: str = "") -> None:
    ms = [t * 1000 for t in timings]
    print(
        f"{name:<44} n={len(ms):3}  p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  max={max(ms):7.1f} ms {extra}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-1m"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    os.environ["MEIQIA_DATA_DIR"] = args.data_dir
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")
    from sqlalchemy import text

    from meiqia_app.db import get_engine
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.services.customers import listing as customer_list
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.identity.rbac import BUILTIN_ROLES, Actor

    db_file = Path(args.data_dir) / "meiqia.db"
    if not db_file.exists():
        from meiqia_app.seed.loader import seed

        print(f"seeding {args.customers:,} customers into {args.data_dir} …")
        seed_report = seed(args.customers, seed_value=args.seed)
        print(f"seeded in {seed_report.seconds:,.0f} s, {seed_report.database_bytes / 1e6:,.0f} MB")
    upgrade_to_head()

    agent = Actor(
        user_id=0,
        username="bench-agent",
        display_name="bench",
        role_name="agent",
        permissions=frozenset(BUILTIN_ROLES["agent"]["permissions"]),
    )
    senior = Actor(
        user_id=-1,
        username="bench-senior",
        display_name="bench",
        role_name="senior_agent",
        permissions=frozenset(BUILTIN_ROLES["senior_agent"]["permissions"]),
    )
    # One bench "user" looks up hundreds of whole numbers: not the guessing run the limit is for.
    customer_list.EXACT_LOOKUPS_PER_HOUR = 10**9
    rng = random.Random(7)
    with get_engine().connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM customer")).scalar_one()
        sample = conn.execute(
            text(
                "SELECT name, name_pinyin, name_initials, phone, email, external_id FROM customer "
                "WHERE id IN (SELECT abs(random()) % :n + 1 FROM customer LIMIT 400)"
            ),
            {"n": total},
        ).all()
        tag_ids = [row[0] for row in conn.execute(text("SELECT id FROM tag ORDER BY id")).all()]
    print(f"database: {total:,} customers; {args.runs} runs per case, fragments drawn from the data\n")

    def fragments(kind: str) -> list[str]:
        values = []
        for name, pinyin, initials, phone, email, external_id in sample:
            if kind == "name2" and len(name) >= 2:
                values.append(name[:2])
            elif kind == "name1":
                values.append(name[1:2] or name[:1])
            elif kind == "name3" and len(name) >= 3:
                values.append(name[:3])
            elif kind == "pinyin" and pinyin:
                values.append(pinyin)
            elif kind == "initials" and initials:
                values.append(initials)
            elif kind == "phone" and phone and len(phone) == 11:
                start = rng.randrange(0, 7)
                values.append(phone[start : start + 4])
            elif kind == "phone_last4" and phone and len(phone) == 11:
                values.append(phone[-4:])
            elif kind == "phone_full" and phone and len(phone) == 11:
                values.append(phone)
            elif kind == "phone_pasted" and phone and len(phone) == 11:
                values.append(f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}")
            elif kind == "email_full" and email and "@" in email:
                values.append(email)
            elif kind == "email_domain" and email and "@" in email:
                values.append("@" + email.split("@")[1])
            elif kind == "email" and email and "@" in email:
                local = email.split("@")[0]
                values.append(local[: max(3, min(8, len(local)))])
            elif kind == "external" and external_id:
                values.append(external_id[-6:])
        rng.shuffle(values)
        return (values * 3)[: args.runs]

    def time_page(query: ListQuery, actor=agent, **kwargs) -> float:
        started = time.perf_counter()
        customer_list.list_customers(actor, query, **kwargs)
        return time.perf_counter() - started

    # Warm the page cache the way a running server is warm.
    for _ in range(3):
        time_page(ListQuery())

    print("(a) search, first page of 50 rows")
    for label, kind, actor in [
        ("Chinese name, 1 character (e.g. 伟)", "name1", agent),
        ("Chinese name, 2 characters (e.g. 张伟)", "name2", agent),
        ("Chinese name, 3 characters", "name3", agent),
        ("pinyin, full (zhangwei)", "pinyin", agent),
        ("pinyin, initials (zw)", "initials", agent),
        ("agent: phone, last 4 digits (as shown)", "phone_last4", agent),
        ("agent: phone, full number (exact)", "phone_full", agent),
        ("agent: phone pasted +86 138 1234 5678", "phone_pasted", agent),
        ("agent: e-mail, whole address (exact)", "email_full", agent),
        ("agent: e-mail domain (@qq.com)", "email_domain", agent),
        ("agent: external id fragment", "external", agent),
        ("senior: Chinese name, 2 characters", "name2", senior),
        ("senior: phone fragment, 4 digits", "phone", senior),
        ("senior: phone, last 4 digits", "phone_last4", senior),
        ("senior: phone, full number", "phone_full", senior),
        ("senior: e-mail fragment", "email", senior),
    ]:
        timings = [time_page(ListQuery(q=q), actor) for q in fragments(kind)]
        report(label, timings)
    report("empty query (newest active first)", [time_page(ListQuery()) for _ in range(args.runs)])

    print("\n(b) filter combinations with a sort, first page")
    combos = {
        "source=微信 + tier=金卡, by total spent": dict(sources=("wechat",), tiers=("gold",), sort="total_spent"),
        "lifecycle=活跃 + region=广东, by last active": dict(lifecycle=("active",), province="广东"),
        "tag any(VIP) + orders≥3 + consent, by registered": dict(
            tags_any=tuple(tag_ids[-4:-3]), orders_min=3, consent_marketing="yes", sort="registered_at"
        ),
    }
    for label, params in combos.items():
        report(label, [time_page(ListQuery(**params), senior) for _ in range(args.runs)])

    print("\n(c) deep pages of the unfiltered list (keyset)")
    query = ListQuery()
    page = customer_list.list_customers(agent, query)
    report("page 1", [time_page(query) for _ in range(args.runs)])
    # Walk to page 10,000 the way the pager does: following each page's cursor.
    started = time.perf_counter()
    cursor = page.next_cursor
    for _ in range(9_998):
        cursor = customer_list.list_customers(agent, query, cursor=cursor).next_cursor
    walk = time.perf_counter() - started
    report(
        "page 10,000 (given its cursor)",
        [time_page(query, cursor=cursor) for _ in range(args.runs)],
        f"(walking 10,000 pages took {walk:,.0f} s, {walk / 9_998 * 1000:.1f} ms/page)",
    )
    report("last page (reverse walk)", [time_page(query, direction="last") for _ in range(args.runs)])

    print("\n(d) the number of matches (cache cleared before each run)")
    for label, params in [("no filter", {}), *[(k, v) for k, v in combos.items()], ("search '张伟'", dict(q="张伟"))]:
        q = ListQuery(**params)
        estimate_times, exact_times = [], []
        for _ in range(max(5, args.runs // 3)):
            customer_list.invalidate_counts()
            started = time.perf_counter()
            first = customer_list.count_customers(senior, q, exact=False)
            estimate_times.append(time.perf_counter() - started)
            customer_list.invalidate_counts()
            started = time.perf_counter()
            exact = customer_list.count_customers(senior, q, exact=True)
            exact_times.append(time.perf_counter() - started)
        kind = "exact" if first.exact else f"estimate {first.value:,}"
        report(f"{label} — first answer ({kind})", estimate_times)
        report(f"{label} — exact ({exact.value:,})", exact_times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
