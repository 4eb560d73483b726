"""Starting the real app in prod mode on a free port, and logging in like a person.

Used by the end-to-end tests (tests/e2e/conftest.py) and by browser
benchmarks (bench/keystroke_latency.py), so both run exactly the same app.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MEIQIA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
E2E_CUSTOMERS = int(os.environ.get("MEIQIA_E2E_CUSTOMERS", "400"))
START_TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "meiqia_app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"meiqia_app {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Account:
    username: str
    password: str
    role: str
    totp_secret: str
    last_step: int = -1

    def fresh_code(self) -> str:
        """A code for a time step not used yet: the server refuses replays."""
        while True:
            step = int(time.time()) // 30
            if step > self.last_step:
                self.last_step = step
                return pyotp.TOTP(self.totp_secret).at(step * 30)
            time.sleep(max(0.2, (step + 1) * 30 - time.time() + 0.2))


@dataclass
class RunningApp:
    url: str
    data_dir: Path
    env: dict[str, str]
    accounts: dict[str, Account] = field(default_factory=dict)
    log_path: Path | None = None
    # username -> the session cookie its one real login set (see login()).
    session_cookies: dict[str, list[dict]] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        return _run_cli(self.env, *args)

    def db_path(self) -> Path:
        return self.data_dir / "meiqia.db"

    def sql(self):
        """A DB-API connection to the app's database for checking outcomes.

        SQLite or PostgreSQL alike: ``with app.sql() as db: db.execute("… ?", (x,))``
        (``?`` placeholders; the PostgreSQL wrapper turns them into ``%s``).
        """
        database_url = self.env.get("DATABASE_URL", "")
        if database_url.startswith("postgresql"):
            return _PostgresChecks(database_url)
        return sqlite3.connect(self.db_path(), timeout=30)


class _PostgresChecks:
    """The bit of sqlite3's connection API the tests use, over psycopg."""

    def __init__(self, database_url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    @staticmethod
    def _placeholders(statement: str) -> str:
        return statement.replace("%", "%%").replace("?", "%s")

    def execute(self, statement: str, params=()):
        return self._conn.execute(self._placeholders(statement), tuple(params))

    def executemany(self, statement: str, rows) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(self._placeholders(statement), [tuple(row) for row in rows])

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._conn.close()


def _pg_create_database(server_url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(
        server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")


@contextlib.contextmanager
def running_app(
    data_dir: Path, seed_customers: int | None = E2E_CUSTOMERS, extra_env: dict[str, str] | None = None
) -> Iterator[RunningApp]:
    """Migrate (and seed, unless ``seed_customers`` is None) ``data_dir``, start the app, stop it after."""
    port = _free_port()
    bun_bin = ROOT / ".tools" / "bun" / "node_modules" / ".bin"
    env = {
        **os.environ,
        "MEIQIA_DATA_DIR": str(data_dir),
        "REFLEX_CHECK_LATEST_VERSION": "false",
        # Every test logs in from 127.0.0.1 and several fail on purpose: the per-address
        # throttle (tested in tests/unit/test_login_hardening.py) must not lock the suite out.
        "MEIQIA_IP_LOCKOUT_THRESHOLD": "1000",
        # Webhook tests deliver to a receiver on 127.0.0.1 (refused otherwise: server-side request forgery).
        "MEIQIA_WEBHOOKS_ALLOW_PRIVATE": "true",
        # Its own build folder: a test build must not overwrite the one a
        # running `make run` serves (the backend port is baked into it).
        "REFLEX_WEB_WORKDIR": str(ROOT / ".web-test"),
        "REFLEX_STATES_WORKDIR": str(data_dir / "states"),
        "PATH": f"{bun_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("DATABASE_URL", None)
    # The websocket's allowed origins are the app's defaults: its own address on the port it serves on.
    env.pop("MEIQIA_ALLOWED_ORIGINS", None)
    # `make test-pg`: PostgreSQL for the data, Redis for Reflex's state, two backend workers.
    pg_server = os.environ.get("MEIQIA_TEST_PG_URL", "").rstrip("/")
    if pg_server and seed_customers is not None:
        database = f"e2e_{os.getpid()}_{port}"
        _pg_create_database(pg_server, database)
        env["DATABASE_URL"] = f"{pg_server}/{database}"
    redis_url = os.environ.get("MEIQIA_TEST_REDIS_URL", "")
    if redis_url:
        env["REFLEX_REDIS_URL"] = redis_url
        env["GRANIAN_WORKERS"] = os.environ.get("MEIQIA_TEST_WORKERS", "2")
    env.update(extra_env or {})
    _run_cli(env, "migrate")
    if seed_customers is not None:
        _run_cli(env, "seed", "--customers", str(seed_customers), "--seed", "7")
    accounts = {
        row["username"]: Account(row["username"], row["password"], row["role"], row["totp_secret"])
        for row in json.loads((data_dir / "demo_accounts.json").read_text())
    }
    log_path = data_dir / "app.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reflex",
            "run",
            "--env",
            "prod",
            "--single-port",
            "--frontend-port",
            str(port),
            "--backend-port",
            str(port),
            "--loglevel",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app exited early:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"app did not start in {START_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        # The frontend is served from the same port once the build is done.
        urllib.request.urlopen(url + "/login", timeout=30).read()
        yield RunningApp(url=url, data_dir=data_dir, env=env, accounts=accounts, log_path=log_path)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


SESSION_COOKIE = "mq_session"


def login(page, app: RunningApp, username: str, next_path: str = "/customers", *, fresh: bool = False) -> None:
    """A page logged in as ``username``, showing ``next_path``.

    Each account logs in through the real login page (password, then the
    authenticator code) once per run; later calls give the page's browser
    context the session cookie that login set, so a test does not wait for
    the next 30-second TOTP step (the server refuses a reused one). If that
    session has ended meanwhile (a logout, a revocation), the account logs in
    through the form again. ``fresh=True`` always uses the form: the tests of
    the login itself, and tests that end their session.
    """
    if fresh:
        login_through_form(page, app, username, next_path)
        return  # a session of its own: the test may end it
    if _resume_session(page, app, username, next_path):
        return
    login_through_form(page, app, username, next_path)
    app.session_cookies[username] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]


def login_through_form(page, app: RunningApp, username: str, next_path: str = "/customers") -> None:
    """Log in like a person: password, then the authenticator code."""
    account = app.accounts[username]
    page.goto(f"/login?next={next_path}")
    page.get_by_label("用户名").fill(account.username)
    page.get_by_label("密码").fill(account.password)
    page.locator("#login-submit").click()
    page.locator("#code").fill(account.fresh_code())
    page.locator("#code-submit").click()
    wait_for_path(page, next_path)
    wait_ready(page)


def _resume_session(page, app: RunningApp, username: str, next_path: str) -> bool:
    cookies = app.session_cookies.get(username)
    if not cookies:
        return False
    page.context.clear_cookies()
    page.context.add_cookies(cookies)
    page.goto(next_path)
    # Either the page hydrates as this user, or the session is gone and the
    # app sends the browser to the login page.
    page.wait_for_function(
        "() => location.pathname.startsWith('/login') || document.querySelector('#main[data-ready=true]')"
    )
    if page.evaluate("location.pathname").startswith("/login"):
        app.session_cookies.pop(username, None)
        return False
    wait_for_path(page, next_path)
    return True


def wait_ready(page) -> None:
    """Wait until the page is hydrated and knows its user (before that, clicks are lost)."""
    page.locator("#main[data-ready=true]").wait_for()


def wait_for_path(page, path: str) -> None:
    """Wait until the browser shows ``path`` (query string ignored, trailing slash too)."""
    page.wait_for_function("p => location.pathname.replace(/\\/$/, '') === p.replace(/\\/$/, '')", arg=path)
