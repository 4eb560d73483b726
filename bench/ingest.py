"""Open API figures at 1,000,000 customers (OPS, not a test: prints figures).

    .venv/bin/python bench/ingest.py --data-dir /work/bench-data/1m
    # PostgreSQL + Redis, two workers (the app it starts gets these three):
    DATABASE_URL=postgresql+psycopg://… REFLEX_REDIS_URL=redis://… GRANIAN_WORKERS=2 \\
        .venv/bin/python bench/ingest.py --data-dir DIR

The data dir is seeded by ``bench/search.py --data-dir DIR`` (1M customers,
about 5 minutes) and migrated here. The app is started on it (prod mode, as
bench/load.py does) with a rate limit high enough not to be what is measured.

1. Reads, on a quiet app: ``GET /api/v1/customers/{id}`` for random ids and
   ``GET /api/v1/customers?q=`` with two-character Chinese names and phone
   fragments taken from the data (a key with customers:read_sensitive, which
   matches every digit), n requests each, one after the other.
2. Ingest under load: ``--senders`` threads POST batches of ``--batch``
   behaviour records (page and product views, searches, logins, chat
   messages, orders and their payments, 1% unknown visitors) to
   ``/api/v1/events`` for ``--seconds``, while ``--agents`` simulated agents
   (bench/load.py: search, open a customer, go back) work the console. Prints
   records accepted per second, the batch round trip, and the agents' event
   latencies, with the machine's load average before and after (the box is
   shared: figures move with it).

``--in-process N`` instead sends N batches straight to services/integrations/ingest.py in
this process, one at a time (no app, no HTTP): the service's own cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import bring_reports_up_to_date, percentile, run_load  # noqa: E402

CHAT_LINES = ("你好，请问有货吗？", "什么时候发货？", "可以开发票吗？", "我想退货", "谢谢")
PAGES = ("/", "/products", "/cart", "/checkout", "/promo/double11", "/help")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


class Client:
    """A keep-alive HTTP/1.1 connection per thread."""

    def __init__(self, base_url: str, key: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.key = key
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, float]:
        payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.key}"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data, time.perf_counter() - started
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def sample_data(count: int, seed: int) -> dict:
    from sqlalchemy import text

    from meiqia_app.db import get_engine

    rng = random.Random(seed)
    with get_engine().connect() as conn:
        top = conn.execute(text("SELECT max(id) FROM customer")).scalar_one()
        ids = [rng.randrange(1, top + 1) for _ in range(count)]
        rows = conn.execute(
            text("SELECT id, name, phone FROM customer WHERE status = 'active' AND id IN :ids").bindparams(
                __import__("sqlalchemy").bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        ).fetchall()
        skus = [r[0] for r in conn.execute(text("SELECT sku FROM product ORDER BY id"))]
    names = [r.name[:2] for r in rows if r.name and len(r.name) >= 2]
    phones = [r.phone[-6:] for r in rows if r.phone and len(r.phone) == 11]
    return {"ids": [r.id for r in rows], "names": names, "phones": phones, "skus": skus, "top": top}


def make_key(scopes: list[str]) -> str:
    from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
    from meiqia_app.services.integrations import api_keys

    _view, raw = api_keys.create_key(SYSTEM_ACTOR, f"bench-{secrets.token_hex(4)}", scopes)
    return raw


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"  {name:<44} n={len(ms):5}  p50={statistics.median(ms):7.1f} ms  "
        f"p95={percentile(ms, 95):7.1f} ms  max={max(ms):7.1f} ms"
    )


def bench_reads(base_url: str, key: str, data: dict, runs: int, seed: int) -> None:
    rng = random.Random(seed)
    client = Client(base_url, key)
    client.request("GET", "/api/v1/customers?limit=1")  # warm the connection and the caches of the first page
    timings = []
    for customer_id in rng.sample(data["ids"], min(runs, len(data["ids"]))):
        status, _body, seconds = client.request("GET", f"/api/v1/customers/{customer_id}")
        assert status == 200, status
        timings.append(seconds)
    report("GET /customers/{id}", timings)
    for label, terms in (
        ("GET /customers?q= (2-char name)", data["names"]),
        ("GET /customers?q= (phone digits)", data["phones"]),
    ):
        timings = []
        for term in rng.sample(terms, min(runs, len(terms))):
            status, _body, seconds = client.request("GET", "/api/v1/customers?" + urlencode({"q": term, "limit": 50}))
            assert status == 200, status
            timings.append(seconds)
        report(label, timings)


class Sender(threading.Thread):
    def __init__(self, base_url, key, data, batch, until, results, lock, seed):
        super().__init__(daemon=True)
        self.client = Client(base_url, key)
        self.data, self.batch, self.until = data, batch, until
        self.results, self.lock = results, lock
        self.rng = random.Random(seed)
        self.prefix = secrets.token_hex(4)
        self.counter = 0
        self.open_orders: list[tuple[str, int]] = []

    def _record(self) -> dict:
        rng = self.rng
        self.counter += 1
        event_id = f"{self.prefix}-{self.counter}"
        customer_id = rng.choice(self.data["ids"])
        customer = {"id": customer_id}
        roll = rng.random()
        if roll < 0.01:
            customer = {"visitor_id": f"bench-{self.prefix}-{self.counter}"}
        base = {"event_id": event_id, "customer": customer}
        if roll < 0.45:
            return {**base, "type": "page_view", "url": rng.choice(PAGES)}
        if roll < 0.65:
            return {**base, "type": "product_view", "product": {"sku": rng.choice(self.data["skus"])}}
        if roll < 0.75:
            return {**base, "type": "search", "query": rng.choice(("面霜", "耳机", "外套", "礼盒"))}
        if roll < 0.80:
            return {**base, "type": "login"}
        if roll < 0.92:
            return {
                **base,
                "type": "chat_message",
                "conversation_id": f"{self.prefix}-c{customer_id}",
                "direction": rng.choice(("in", "out")),
                "text": rng.choice(CHAT_LINES),
            }
        if self.open_orders and roll < 0.96:
            order_id, owner = self.open_orders.pop()
            return {
                "event_id": event_id,
                "customer": {"id": owner},
                "type": "order",
                "order_id": order_id,
                "status": "paid",
            }
        order_id = f"{self.prefix}-o{self.counter}"
        if "id" in customer:
            self.open_orders.append((order_id, customer_id))
        return {
            **base,
            "type": "order",
            "order_id": order_id,
            "status": "pending",
            "items": [{"sku": rng.choice(self.data["skus"]), "name": "商品", "quantity": 1, "price_cents": 9900}],
        }

    def run(self) -> None:
        while time.monotonic() < self.until:
            events = [self._record() for _ in range(self.batch)]
            try:
                status, body, seconds = self.client.request("POST", "/api/v1/events", {"events": events})
            except OSError as error:
                with self.lock:
                    self.results["errors"].append(str(error))
                continue
            with self.lock:
                if status != 200:
                    self.results["errors"].append(f"HTTP {status}: {body[:200]!r}")
                    continue
                answer = json.loads(body)
                self.results["accepted"] += answer["accepted"]
                self.results["rejected"] += answer["rejected"]
                self.results["batches"].append((time.monotonic(), seconds))


def bench_ingest(base_url, key, data, args) -> None:
    results = {"accepted": 0, "rejected": 0, "batches": [], "errors": []}
    lock = threading.Lock()
    started = time.monotonic()
    until = started + args.warmup + args.seconds
    senders = [
        Sender(base_url, key, data, args.batch, until, results, lock, args.seed + i) for i in range(args.senders)
    ]
    for sender in senders:
        sender.start()
    if args.agents:
        run_load(base_url, args.agents, args.seconds, "agent", args.seed, args.think, args.warmup)
    for sender in senders:
        sender.join(args.seconds + args.warmup + 180)
    measured = [(at, s) for at, s in results["batches"] if at >= started + args.warmup]
    wall = max(1e-9, max((at for at, _ in measured), default=started) - (started + args.warmup))
    accepted_measured = len(measured) * args.batch
    print(
        f"ingest: {len(measured)} batches of {args.batch} in {wall:.0f} s after {args.warmup:g} s warm-up = "
        f"{accepted_measured / wall:,.0f} records/s sent and answered "
        f"({results['accepted']:,} accepted, {results['rejected']:,} rejected in all); errors: {len(results['errors'])}"
    )
    if measured:
        report("POST /events (batch round trip)", [s for _, s in measured])
    for error in sorted(set(results["errors"]))[:5]:
        print("  error:", error)


def bench_in_process(key: str, data: dict, args) -> None:
    """Batches straight into services/integrations/ingest.py, one at a time (no HTTP, no app)."""
    from meiqia_app.services.integrations import api_keys, ingest

    actor = api_keys.authenticate(f"Bearer {key}")
    sender = Sender("http://unused:1", key, data, args.batch, 0, None, None, args.seed + 100)
    walls, cpus = [], []
    for n in range(args.in_process + 2):
        records = json.loads(json.dumps([sender._record() for _ in range(args.batch)]))  # as a request gives them
        started, cpu = time.perf_counter(), time.thread_time()
        results = ingest.ingest(actor, records)
        if n >= 2:  # two to warm the caches
            walls.append(time.perf_counter() - started)
            cpus.append(time.thread_time() - cpu)
        assert sum(r.status == "accepted" for r in results) >= args.batch * 0.95, "records refused"
    report(f"in process, batches of {args.batch}", walls)
    report("  of which CPU of the thread", cpus)
    print(f"  = {args.batch * len(walls) / sum(walls):,.0f} records/s, one batch at a time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/work/bench-data/1m")
    parser.add_argument("--url", help="a running app (its database must be the data dir's)")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--think", type=float, default=0.4)
    parser.add_argument("--runs", type=int, default=200, help="requests per read case")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--in-process", type=int, default=0, metavar="N", help="only N batches through the service, no app or HTTP"
    )
    args = parser.parse_args()
    os.environ["MEIQIA_DATA_DIR"] = str(Path(args.data_dir).resolve())
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")
    from meiqia_app.migrate import upgrade_to_head

    started = time.perf_counter()
    upgrade_to_head()
    if time.perf_counter() - started > 2:
        print(f"migrated in {time.perf_counter() - started:.0f} s")
    bring_reports_up_to_date()
    data = sample_data(5000, args.seed)
    reader = make_key(["customers:read", "customers:read_sensitive"])
    writer = make_key(["events:write"])
    if args.in_process:
        print(_load())
        bench_in_process(writer, data, args)
        print(_load())
        return 0

    def run(base_url: str) -> None:
        print(_load())
        if not args.skip_reads:
            print(f"reads ({args.runs} each, one at a time, quiet app):")
            bench_reads(base_url, reader, data, args.runs, args.seed)
        print(_load())
        if not args.skip_ingest:
            print(
                f"ingest: {args.senders} senders x batches of {args.batch} for {args.seconds} s, "
                f"{args.agents} agents (think {args.think:g} s) at the same time:"
            )
            bench_ingest(base_url, writer, data, args)
        print(_load())

    if args.url:
        run(args.url.rstrip("/"))
        return 0
    from tests.e2e.harness import running_app

    passed = {
        name: os.environ[name]
        for name in ("DATABASE_URL", "REFLEX_REDIS_URL", "GRANIAN_WORKERS")
        if os.environ.get(name)
    }
    extra = {"MEIQIA_SCHEDULER": "0", "MEIQIA_API_RATE_PER_SECOND": "1000", "MEIQIA_API_RATE_BURST": "1000", **passed}
    with running_app(Path(args.data_dir), seed_customers=None, extra_env=extra) as app:
        print(
            f"app: {passed.get('DATABASE_URL', 'SQLite in ' + args.data_dir).split('@')[-1]}, "
            f"state in {'Redis' if 'REFLEX_REDIS_URL' in passed else 'the process (disk-backed)'}, "
            f"{passed.get('GRANIAN_WORKERS', '1')} worker(s)"
        )
        run(app.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
