"""Engine and sessions.

SQLite is the default store: WAL so readers never wait for the writer,
foreign keys on, a busy timeout so concurrent writers queue instead of
failing, and ``BEGIN IMMEDIATE`` for write transactions so two writers never
deadlock upgrading a read lock. PostgreSQL is reached through DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from meiqia_app.config import get_settings
from meiqia_app.services.errors import Busy

_engine: Engine | None = None
_engine_lock = threading.Lock()

SQLITE_BUSY_TIMEOUT_MS = 15_000
# Pages of 16 KiB rather than SQLite's 4 KiB: a bulk purge dirties pages all
# over the file (the deleted customers are scattered), and with bigger pages
# it writes ~3x fewer WAL frames for it (1M customers, 100,000 purged before
# migration 0006: 42 -> 35-39 s; 32 and 64 KiB were slower again, 45 and 52 s). Takes effect when the file is
# created; an existing database is rewritten by ``python -m meiqia_app compact``.
SQLITE_PAGE_SIZE = 16_384


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        # Let SQLAlchemy's "begin" event below decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # only an empty new file takes it (before WAL)
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - trivial
        options = conn.get_execution_options()
        # SQLite ignores PRAGMA foreign_keys inside a transaction, so a write
        # that deletes every child row itself (the trash purge) asks for the
        # checks to be off here, before BEGIN; every other transaction sets
        # them back on the pooled connection (its info dict remembers the state).
        enforce = options.get("sqlite_foreign_keys", True)
        if conn.info.get("foreign_keys", True) != enforce:
            conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if enforce else 'OFF'}")
            conn.info["foreign_keys"] = enforce
        conn.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=8,
            max_overflow=16,
        )
        _configure_sqlite(engine)
        return engine
    # preserve_rowcount: SQLAlchemy only reports rowcount for UPDATE/DELETE on
    # psycopg by default; bulk INSERT … SELECT (tagging, rules, merges) counts its rows.
    # jit and parallel workers off for the app's sessions: its queries are
    # short, and at 1M customers the planner's cost estimates passed the JIT
    # threshold (tens to hundreds of ms of compiling per list page) and
    # started parallel workers whose start-up cost more than the query
    # (a search page 260 ms with them, 90 ms without, under load).
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=16,
        connect_args={"options": "-c jit=off -c max_parallel_workers_per_gather=0"},
        execution_options={"preserve_rowcount": True},
    )


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = make_engine(get_settings().database_url)
    return _engine


def reset_engine() -> None:
    """Drop the cached engine (tests switch databases; restore swaps the file)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None


def is_sqlite() -> bool:
    return get_engine().dialect.name == "sqlite"


def _read_engine() -> Engine:
    """The engine for reads. On PostgreSQL its statements run without a
    transaction (autocommit): no BEGIN before and no ROLLBACK after each read,
    two of the four round trips of a one-query read (~0.5 -> ~0.3 ms on loopback,
    more under load). Nothing is lost: at READ COMMITTED each statement had its
    own snapshot inside a transaction too. Not for SET LOCAL (exports, bulk jobs)."""
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def read_connection():
    """A Core connection for reads (see ``_read_engine``); never commits."""
    return _read_engine().connect()


@contextlib.contextmanager
def read_session() -> Iterator[Session]:
    """A session for reads; never commits."""
    with Session(_read_engine(), expire_on_commit=False) as session:
        yield session


@contextlib.contextmanager
def write_session(check_foreign_keys: bool = True) -> Iterator[Session]:
    """One write transaction: commits on success, rolls back on any error.

    ``check_foreign_keys=False`` (SQLite only; PostgreSQL always checks) is for
    a writer that deletes every referencing row itself, children first, and
    has a test holding its table list to the schema: SQLite's per-row check of
    every referencing table is then pure cost (a fifth of a 100k purge).
    """
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(sqlite_begin="IMMEDIATE", sqlite_foreign_keys=check_foreign_keys)
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except OperationalError as error:
            session.rollback()
            if _is_lock_timeout(error):
                # Another writer (a cleanup batch) held SQLite's write lock past the
                # busy timeout; nothing was written. Say so instead of failing.
                raise Busy() from error
            raise
        except BaseException:
            session.rollback()
            raise


def _is_lock_timeout(error: OperationalError) -> bool:
    return "database is locked" in str(error.orig)
