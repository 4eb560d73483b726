"""N agents working at once against a running app (OPS-3, not a test: prints figures).

    # against an app you started (make run, or the production set-up):
    .venv/bin/python bench/load.py --url http://127.0.0.1:3000 --agents 20 --seconds 60
    # or let it start the app on a data dir (SQLite, one worker):
    .venv/bin/python bench/load.py --data-dir /work/bench-data/1m --agents 100 --seconds 60
    # PostgreSQL + Redis with two workers (the app it starts gets these three):
    DATABASE_URL=postgresql+psycopg://… REFLEX_REDIS_URL=redis://… GRANIAN_WORKERS=2 \
        .venv/bin/python bench/load.py --data-dir DIR --agents 100 --seconds 60
    # --think S: mean pause of the agent between actions (default 0.4 s, a
    # stress pace; people read a profile for seconds: try --think 3).

Each simulated agent is what a browser tab is to the server: a websocket
speaking Socket.IO to Reflex's ``/_event`` endpoint, with its own logged-in
session cookie (sessions are created directly in the database for the agent
account, so no TOTP round is needed per agent). After hydrating the
``/customers`` page, it loops for the given time: type a search (a name
fragment, pinyin initials or a phone fragment taken from the data), then open
one customer from the result (the detail page's load events), pausing
``--think`` seconds on average (uniformly half to one and a half times it)
after opening the customer and after going back. Every event's
round trip — from sending it to the last state update it causes — is
recorded. Prints throughput and p50 / p95 / p99 per kind of event.

Measured 2026-12-03, 1,000,000 customers, 60 s after 10 s of warm-up, one
2-core VM (app, database and this load generator together):
  SQLite, 1 worker        20 agents, think 0.4   63 ev/s  p50 32 ms  p95 133 ms  p99 199 ms
                          100 agents, think 3    44 ev/s  p50 30 ms  p95 151 ms  p99 253 ms
                          100 agents, think 0.4  88 ev/s  p50 825 ms p95 1.4 s   p99 1.7 s (CPU-bound)
  PostgreSQL + Redis,     20 agents, think 0.4   57 ev/s  p50 46 ms  p95 179 ms  p99 327 ms
  2 workers               100 agents, think 3    44 ev/s  p50 45 ms  p95 264 ms  p99 452 ms
                          (later runs of the same: p95 366-692 ms)
                          100 agents, think 0.4  50 ev/s  p50 1.2 s  p95 2.6 s   p99 11.6 s
Where the time goes: see docs/deploy.md (PostgreSQL round trips and the
Redis state per event on the shared cores; Reflex's event processing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simple_websocket  # noqa: E402  (installed with Reflex's Socket.IO server)

NAMESPACE = "/_event"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))]


def state_names() -> dict[str, str]:
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")
    import reflex as rx

    import meiqia_app.meiqia_app  # noqa: F401 - builds the state tree
    from meiqia_app.state.base import AppState
    from meiqia_app.state.customer_activity import CustomerActivityState
    from meiqia_app.state.customer_detail import CustomerDetailState
    from meiqia_app.state.customer_list import CustomerListState

    return {
        "root": rx.State.get_full_name(),
        # What the browser sends: hydrate_and_load when the socket connects,
        # on_load_internal when it moves to another page in the app.
        "hydrate": f"{rx.State.get_full_name()}.hydrate_and_load",
        "navigate": f"{rx.State.get_full_name()}.reflex___state____on_load_internal_state.on_load_internal",
        "check_login": f"{AppState.get_full_name()}.check_login",
        "list_load": f"{CustomerListState.get_full_name()}.on_load",
        "set_q": f"{CustomerListState.get_full_name()}.set_q",
        "detail_load": f"{CustomerDetailState.get_full_name()}.on_load",
        "activity_load": f"{CustomerActivityState.get_full_name()}.on_load_activity",
        "list_state": CustomerListState.get_full_name(),
    }


def make_sessions(count: int, username: str) -> list[str]:
    """Session tokens for ``username`` written straight into the app's database."""
    from sqlmodel import select

    from meiqia_app.db import write_session
    from meiqia_app.models import User, UserSession
    from meiqia_app.services.identity.tokens import new_token, token_hash
    from meiqia_app.timeutil import utcnow

    tokens = [new_token() for _ in range(count)]
    now = utcnow()
    with write_session() as session:
        user = session.exec(select(User).where(User.username == username)).one()
        for token in tokens:
            session.add(
                UserSession(
                    token_hash=token_hash(token),
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + dt.timedelta(hours=2),
                    client_ip="127.0.0.1",
                    user_agent="bench/load.py",
                )
            )
    return tokens


def search_terms(count: int, seed: int) -> list[str]:
    from sqlalchemy import text

    from meiqia_app.db import get_engine

    with get_engine().connect() as conn:
        top = conn.execute(text("SELECT max(id) FROM customer")).scalar_one()
        rng = random.Random(seed)
        ids = [rng.randrange(1, top + 1) for _ in range(count)]
        rows = conn.execute(
            text("SELECT name, name_initials, phone FROM customer WHERE id IN :ids").bindparams(
                __import__("sqlalchemy").bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        ).fetchall()
    terms = []
    for name, initials, phone in rows:
        terms.append(name[:2])
        if initials and len(initials) >= 2:
            terms.append(initials[:3])
        if phone and len(phone) >= 7:
            terms.append(phone[-6:])
    rng.shuffle(terms)
    return terms


class Agent(threading.Thread):
    """One tab: a Socket.IO client over a raw websocket (Engine.IO v4 framing)."""

    def __init__(
        self,
        base_url: str,
        session_token: str,
        names: dict[str, str],
        terms: list[str],
        until: float,
        results: dict[str, list[float]],
        lock: threading.Lock,
        errors: list[str],
        think: float = 0.4,
    ):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.cookie = f"mq_session={session_token}"
        self.names = names
        self.terms = terms
        self.until = until
        self.results = results
        self.lock = lock
        self.errors = errors
        self.client_token = str(uuid.uuid4())
        self.ws = None
        self.rng = random.Random(session_token)
        self.location: tuple[str, dict] = ("/customers", {})
        self.send_lock = threading.Lock()
        self.updated = threading.Condition()
        self.deltas: list[dict] = []
        self.stopped = False
        self.think = think

    # --- framing ------------------------------------------------------------------
    def _connect(self) -> None:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = f"{scheme}://{parts.netloc}/_event/?EIO=4&transport=websocket&token={self.client_token}"
        self.ws = simple_websocket.Client.connect(url, headers={"Cookie": self.cookie, "Origin": self.base_url})
        opened = self.ws.receive(timeout=30)
        if not opened or not opened.startswith("0"):
            raise RuntimeError(f"no engine.io open packet: {opened!r}")
        self.ws.send(f"40{NAMESPACE},")
        while True:
            packet = self._receive(30)
            if packet.startswith(f"40{NAMESPACE}"):
                return
            if packet.startswith(f"44{NAMESPACE}"):
                raise RuntimeError(f"namespace refused: {packet}")

    def _receive(self, timeout: float) -> str:
        while True:
            packet = self.ws.receive(timeout=timeout)
            if packet is None:
                raise TimeoutError("no answer from the server")
            if packet == "2":  # engine.io ping
                self.ws.send("3")
                continue
            return packet

    def _router(self, path: str, query: dict | None = None) -> dict:
        return {"pathname": path, "query": query or {}, "asPath": path}

    def _send(self, name: str, payload: dict) -> None:
        message = {"name": name, "payload": payload, "router_data": self._router(*self.location)}
        with self.send_lock:
            self.ws.send(f"42{NAMESPACE}," + json.dumps(["event", message], ensure_ascii=False))

    def _read_forever(self) -> None:
        """Reader: answers pings, runs the events the server hands back (on_load
        chains, the match count) like the browser does, and queues every delta."""
        prefix = f"42{NAMESPACE},"
        try:
            while not self.stopped:
                packet = self.ws.receive(timeout=1)
                if packet is None:
                    continue
                if packet == "2":
                    with self.send_lock:
                        self.ws.send("3")
                    continue
                if not packet.startswith(prefix):
                    continue
                event, *data = json.loads(packet[len(prefix) :])
                if event != "event" or not data:
                    continue
                update = data[0] if isinstance(data[0], dict) else json.loads(data[0])
                for follow_up in update.get("events", []) or []:
                    name = follow_up.get("name", "")
                    if name and not name.startswith("_"):
                        self._send(name, follow_up.get("payload", {}))
                with self.updated:
                    self.deltas.append(update.get("delta", {}))
                    self.updated.notify_all()
        except Exception:  # noqa: BLE001 - the socket closed: the main loop notices through its timeout
            pass

    def _call(self, name: str, payload: dict, done) -> dict:
        """Send one event and wait until a delta satisfies ``done``; return that delta."""
        with self.updated:
            self.deltas.clear()
        self._send(name, payload)
        deadline = time.monotonic() + 60
        with self.updated:
            while True:
                for delta in self.deltas:
                    if done(delta):
                        return delta
                self.deltas.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{name.rsplit('.', 1)[-1]} got no answer in 60 s")
                self.updated.wait(remaining)

    def _timed(self, kind: str, name: str, payload: dict, done) -> dict:
        started = time.perf_counter()
        delta = self._call(name, payload, done)
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            self.results.setdefault(kind, []).append((time.monotonic(), elapsed))
        return delta

    # --- the agent's loop ---------------------------------------------------------------
    @staticmethod
    def _state_part(delta: dict, suffix: str) -> dict | None:
        for state_name, values in delta.items():
            if state_name.endswith(suffix):
                return values
        return None

    def _rows(self, delta: dict) -> list[int] | None:
        values = self._state_part(delta, "customer_list_state")
        if not values:
            return None
        for key, rows in values.items():
            if key.startswith("rows"):
                return [row["id"] for row in rows]
        return None

    def _list_shown(self, delta: dict) -> bool:
        """Back on the list: its on_load answered. The tab keeps the rows it
        showed when nothing changed meanwhile (no rows in the delta then)."""
        values = self._state_part(delta, "customer_list_state")
        return bool(values) and any(key.startswith(("rows", "views")) for key in values)

    def _list_loaded(self, delta: dict) -> bool:
        # Reflex runs a page's on_load events inside hydrate and answers with
        # one delta, so the first delta with rows is the loaded page.
        return self._rows(delta) is not None

    def _detail_shown(self, customer_id: int):
        def done(delta: dict) -> bool:
            values = self._state_part(delta, "customer_detail_state")
            if not values:
                return False
            for key, value in values.items():
                if key.startswith("customer") and isinstance(value, dict) and value.get("id") == customer_id:
                    return True
            return False

        return done

    def run(self) -> None:
        reader = None
        try:
            self._connect()
            reader = threading.Thread(target=self._read_forever, daemon=True)
            reader.start()
            self._timed("open list", self.names["hydrate"], {}, lambda d: bool(self._rows(d)))
            while time.monotonic() < self.until:
                term = self.rng.choice(self.terms)
                delta = self._timed("search", self.names["set_q"], {"value": term}, self._list_loaded)
                ids = self._rows(delta) or []
                if ids:
                    customer_id = str(self.rng.choice(ids[:10]))
                    self.location = (f"/customers/{customer_id}", {"customer_id": customer_id})
                    self._timed("open customer", self.names["navigate"], {}, self._detail_shown(int(customer_id)))
                    self.location = ("/customers", {})
                    time.sleep(self.rng.uniform(0.5 * self.think, 1.5 * self.think))  # the agent reads
                    self._timed("back to list", self.names["navigate"], {}, self._list_shown)
                time.sleep(self.rng.uniform(0.5 * self.think, 1.5 * self.think))
        except Exception as error:  # noqa: BLE001 - one broken agent is reported, the others go on
            with self.lock:
                self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            self.stopped = True
            if self.ws is not None:
                self.ws.close()


def run_load(
    base_url: str, agents: int, seconds: int, username: str, seed: int, think: float = 0.4, warmup: float = 0.0
) -> None:
    """``warmup`` seconds run before the ``seconds`` that are measured: events
    finishing during the ramp-up (every agent logging in and opening the list
    at once) are left out of the figures, as load tests usually do."""
    names = state_names()
    tokens = make_sessions(agents, username)
    terms = search_terms(max(200, agents * 5), seed)
    results: dict[str, list[tuple[float, float]]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    measure_from = time.monotonic() + warmup
    until = measure_from + seconds
    crew = [Agent(base_url, token, names, terms, until, results, lock, errors, think) for token in tokens]
    for agent in crew:
        agent.start()
        time.sleep(0.02)  # people do not all press enter in the same millisecond
    for agent in crew:
        agent.join(seconds + warmup + 120)
    wall = max(time.monotonic() - measure_from, 1e-9)
    measured = {kind: [ms for at, ms in values if at >= measure_from] for kind, values in results.items()}
    total = sum(len(v) for v in measured.values())
    print(
        f"{agents} agents for {seconds}s after {warmup:g}s of warm-up (think {think:g} s) against {base_url}: "
        f"{total} events, {total / wall:.1f} events/s, {len(errors)} agent errors"
    )
    everything = [ms for values in measured.values() for ms in values]
    for kind, values in sorted(measured.items()) + [("all events", everything)]:
        if values:
            print(
                f"  {kind:<14} n={len(values):5}  p50={statistics.median(values):6.0f} ms  "
                f"p95={percentile(values, 95):6.0f} ms  p99={percentile(values, 99):6.0f} ms"
            )
    opened = [ms for _, ms in results.get("open list", [])]
    if opened:
        print(
            f"  ramp-up: {len(opened)} agents opened the list, p50={statistics.median(opened):.0f} ms "
            f"max={max(opened):.0f} ms"
        )
    for error in sorted(set(errors))[:5]:
        print("  error:", error)


def bring_reports_up_to_date() -> None:
    """Build (or bring up to date) the report aggregates before the app starts:
    the app does it in the background at start when they are missing or behind
    (a fresh seed, a purge: minutes of CPU at 1M customers), which would share
    the machine with the measured agents."""
    os.environ.setdefault("MEIQIA_SCHEDULER", "0")
    from meiqia_app.services.reports import aggregates as report_aggregates

    started = time.perf_counter()
    while True:
        ready, behind = report_aggregates.ensure_current()
        report_aggregates.wait_for_background(3600)
        if ready and not behind:
            break
        if not ready:
            time.sleep(5)  # another process's build, or its claim not yet stale
    seconds = time.perf_counter() - started
    if seconds > 1:
        print(f"report aggregates brought up to date first: {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app; without it the app is started on --data-dir")
    parser.add_argument("--data-dir", default="/work/bench-data/1m")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--username", default="agent")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--think", type=float, default=0.4, help="mean pause between an agent's actions (s)")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds of ramp-up before the measured period (not counted)"
    )
    args = parser.parse_args()
    os.environ["MEIQIA_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if args.url:
        run_load(args.url.rstrip("/"), args.agents, args.seconds, args.username, args.seed, args.think, args.warmup)
        return 0
    bring_reports_up_to_date()
    from tests.e2e.harness import running_app

    # The app gets the database, the state store and the worker count of this environment.
    passed = {
        name: os.environ[name]
        for name in ("DATABASE_URL", "REFLEX_REDIS_URL", "GRANIAN_WORKERS")
        if os.environ.get(name)
    }
    with running_app(Path(args.data_dir), seed_customers=None, extra_env={"MEIQIA_SCHEDULER": "0", **passed}) as app:
        print(
            f"app: {passed.get('DATABASE_URL', 'SQLite in ' + args.data_dir).split('@')[-1]}, "
            f"state in {'Redis' if 'REFLEX_REDIS_URL' in passed else 'the process (disk-backed)'}, "
            f"{passed.get('GRANIAN_WORKERS', '1')} worker(s)"
        )
        run_load(app.url, args.agents, args.seconds, args.username, args.seed, args.think, args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
