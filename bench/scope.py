"""Data scopes at 1,000,000 customers (issue 21 part 2; not a test: prints figures).

    .venv/bin/python bench/scope.py [--data-dir data/bench-scope-1m] [--copy-from /work/bench-data/1m] [--runs 30]

The database: a copy of an existing 1M bench database (``--copy-from``, the
fastest) or seeded like bench/search.py on first use; then migrated, and on
first use given 20 teams of 10 agents and owners spread unevenly (30 % of the
customers in the pool, the rest over the 200 agents with Zipf-like weights:
the busiest agent owns ~50 times what the quietest does), then ANALYZE.

Figures, as an agent (team + pool scope) of a mid-sized team, through the
services the list page calls:

- first page (empty search), "my customers", "pool", a 2-character name
  search and a phone-last-4 search: p50 / p95 (target p95 ≤ 100 ms);
- the count estimate of the list and of "my customers" (target ≤ 300 ms);
- a manager's bulk assignment of ~100,000 pool customers (all matching a
  filter) to one agent (target ≤ 30 s).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEAMS, AGENTS_PER_TEAM, POOL_PER_MILLE = 20, 10, 300


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def report(name: str, timings: list[float], target_ms: float | None = None) -> None:
    ms = [t * 1000 for t in timings]
    verdict = "" if target_ms is None else ("  ok" if percentile(ms, 95) <= target_ms else f"  OVER {target_ms:.0f} ms")
    print(
        f"{name:<40} n={len(ms):3}  p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
        f"max={max(ms):7.1f} ms{verdict}"
    )


def setup_owners(conn) -> None:
    """20 teams of 10 agents; owners spread unevenly (set-based, one UPDATE)."""
    from sqlalchemy import text

    if conn.execute(text("SELECT count(*) FROM team WHERE name LIKE 'bench-%'")).scalar_one():
        return
    started = time.perf_counter()
    role_id = conn.execute(text("SELECT id FROM role WHERE name = 'agent'")).scalar_one()
    agents = []
    for t in range(TEAMS):
        team_id = conn.execute(
            text("INSERT INTO team (name, created_at) VALUES (:n, CURRENT_TIMESTAMP) RETURNING id"),
            {"n": f"bench-{t + 1:02}"},
        ).scalar_one()
        for a in range(AGENTS_PER_TEAM):
            user_id = conn.execute(
                text(
                    "INSERT INTO app_user (username, display_name, password_hash, role_id, team_id, is_active, "
                    "totp_last_step, password_changed_at, created_at, updated_at) VALUES "
                    "(:u, :u, '!', :r, :t, 1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"
                ),
                {"u": f"bench-t{t + 1:02}-a{a + 1:02}", "r": role_id, "t": team_id},
            ).scalar_one()
            agents.append(user_id)
    # Zipf-like weights over the agents, shuffled so teams differ in size too.
    rng = random.Random(21)
    weights = [1 / (rank + 1) ** 0.75 for rank in range(len(agents))]
    rng.shuffle(weights)
    total = sum(weights)
    slots = 1000 - POOL_PER_MILLE
    buckets, acc = [], 0.0
    for agent, weight in zip(agents, weights):
        acc += weight / total * slots
        buckets.append((agent, round(acc)))
    conn.execute(text("CREATE TEMP TABLE bench_owner (u INTEGER PRIMARY KEY, owner INTEGER)"))
    rows, start = [], 0
    for agent, end in buckets:
        rows += [{"u": POOL_PER_MILLE + i, "o": agent} for i in range(start, end)]
        start = end
    conn.execute(text("INSERT INTO bench_owner (u, owner) VALUES (:u, :o)"), rows)
    conn.execute(
        text(
            "UPDATE customer SET owner_id = (SELECT owner FROM bench_owner WHERE u = (customer.id * 2654435761) % 1000)"
        )
    )
    conn.execute(text("DROP TABLE bench_owner"))
    print(f"teams and owners set up in {time.perf_counter() - started:,.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-scope-1m"))
    parser.add_argument("--copy-from", default="", help="a data dir holding a 1M meiqia.db to copy")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--skip-bulk", action="store_true")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / "meiqia.db"
    if not db_file.exists() and args.copy_from:
        print(f"copying {args.copy_from}/meiqia.db …")
        shutil.copyfile(Path(args.copy_from) / "meiqia.db", db_file)
        for name in ("secret.key",):
            if (Path(args.copy_from) / name).exists():
                shutil.copyfile(Path(args.copy_from) / name, data_dir / name)
    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")
    from sqlalchemy import select, text

    from meiqia_app.db import get_engine, read_session
    from meiqia_app.migrate import upgrade_to_head
    from meiqia_app.models import Role, User
    from meiqia_app.services.customers import listing as customer_list
    from meiqia_app.services.customers import ownership
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.selection import Selection
    from meiqia_app.services.identity.sessions import actor_for

    if not db_file.exists():
        from meiqia_app.seed.loader import seed

        print(f"seeding {args.customers:,} customers into {data_dir} …")
        seed(args.customers, seed_value=42)
    started = time.perf_counter()
    upgrade_to_head()
    print(f"migrated in {time.perf_counter() - started:,.0f} s")
    with get_engine().begin() as conn:
        fresh = not conn.execute(text("SELECT count(*) FROM team WHERE name LIKE 'bench-%'")).scalar_one()
        setup_owners(conn)
    if fresh:
        started = time.perf_counter()
        with get_engine().begin() as conn:
            conn.exec_driver_sql("ANALYZE customer")
        print(f"ANALYZE customer in {time.perf_counter() - started:,.0f} s")

    with get_engine().connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM customer")).scalar_one()
        pool = conn.execute(text("SELECT count(*) FROM customer WHERE owner_id IS NULL")).scalar_one()
        # An agent of the median team, and that agent's own share.
        team_sizes = conn.execute(
            text(
                "SELECT u.team_id, count(*) FROM customer c JOIN app_user u ON u.id = c.owner_id "
                "GROUP BY u.team_id ORDER BY 2"
            )
        ).all()
        team_id = team_sizes[len(team_sizes) // 2][0]
        agent_id, owned = conn.execute(
            text(
                "SELECT u.id, count(c.id) FROM app_user u LEFT JOIN customer c ON c.owner_id = u.id "
                "WHERE u.team_id = :t GROUP BY u.id ORDER BY 2 LIMIT 1 OFFSET 5"
            ),
            {"t": team_id},
        ).one()
        names = [r[0] for r in conn.execute(text("SELECT name FROM customer ORDER BY random() LIMIT 200")).all()]
        phones = [
            r[0]
            for r in conn.execute(
                text("SELECT phone FROM customer WHERE length(phone) = 11 ORDER BY random() LIMIT 200")
            ).all()
        ]
    with read_session() as session:
        agent_user, agent_role = session.execute(
            select(User, Role).join(Role, Role.id == User.role_id).where(User.id == agent_id)
        ).one()
        manager_user, manager_role = session.execute(
            select(User, Role).join(Role, Role.id == User.role_id).where(Role.name == "manager")
        ).first()
        agent = actor_for(agent_user, agent_role)
        manager = actor_for(manager_user, manager_role)
    print(
        f"database: {total:,} customers, pool {pool:,}; sizes of teams' books "
        f"{team_sizes[0][1]:,}..{team_sizes[-1][1]:,}; the agent's team {dict(team_sizes)[team_id]:,}, own {owned:,}"
    )
    customer_list.EXACT_LOOKUPS_PER_HOUR = 10**9
    print(f"load average before: {os.getloadavg()}")

    def timed(query: ListQuery, actor=agent) -> float:
        started = time.perf_counter()
        customer_list.list_customers(actor, query)
        return time.perf_counter() - started

    for _ in range(3):
        timed(ListQuery())
    print("\nfirst page of 50, agent (team + pool)")
    report("empty search (newest active first)", [timed(ListQuery()) for _ in range(args.runs)], 100)
    report("my customers", [timed(ListQuery(owner="mine")) for _ in range(args.runs)], 100)
    report("pool", [timed(ListQuery(owner="pool")) for _ in range(args.runs)], 100)
    report("name, 2 characters", [timed(ListQuery(q=n[:2])) for n in names[: args.runs]], 100)
    report("phone, last 4 digits", [timed(ListQuery(q=p[-4:])) for p in phones[: args.runs]], 100)
    report("manager (scope all): empty search", [timed(ListQuery(), manager) for _ in range(args.runs)], 100)

    print("\nthe number of matches (estimate; cache cleared before each run)")
    for label, query in [("list", ListQuery()), ("my customers", ListQuery(owner="mine"))]:
        timings = []
        for _ in range(max(5, args.runs // 3)):
            customer_list.invalidate_counts()
            started = time.perf_counter()
            value = customer_list.count_customers(agent, query).value
            timings.append(time.perf_counter() - started)
        report(f"{label} (≈{value:,})", timings, 300)

    if not args.skip_bulk:
        # ~100,000 pool customers: the sources whose pool counts add up closest to it.
        with get_engine().connect() as conn:
            by_source = conn.execute(
                text(
                    "SELECT source, count(*) FROM customer WHERE owner_id IS NULL AND status = 'active' "
                    "GROUP BY source ORDER BY 2 DESC"
                )
            ).all()
        chosen, size = [], 0
        for source, count in by_source:
            if size + count <= 115_000:
                chosen.append(source)
                size += count
        target = agent_id
        print(f"\nbulk assign: all matching pool + source in {chosen} ({size:,} customers) to one agent")
        print(f"load average before: {os.getloadavg()}")
        started = time.perf_counter()
        result = ownership.bulk_assign(
            manager, Selection.of_query(ListQuery(owner="pool", sources=tuple(chosen))), target
        )
        seconds = time.perf_counter() - started
        verdict = "ok" if seconds <= 30 else "OVER 30 s"
        print(f"bulk assign: {result.changed:,} changed in {seconds:,.1f} s ({verdict}); status {result.status}")
        # Put exactly those back in the pool for the next run.
        with get_engine().begin() as conn:
            conn.execute(
                text(
                    "UPDATE customer SET owner_id = NULL WHERE id IN "
                    "(SELECT customer_id FROM owner_change WHERE job_id = :job)"
                ),
                {"job": result.job_id},
            )
            conn.execute(text("DELETE FROM owner_change WHERE job_id = :job"), {"job": result.job_id})
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
