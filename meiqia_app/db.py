"""Engine and sessions: one engine per process, a read session and a write
transaction. How each database is tuned (SQLite's WAL, pragmas and BEGIN
IMMEDIATE; PostgreSQL's autocommit reads) lives in its adapter (dbadapter/).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from meiqia_app.config import get_settings
from meiqia_app.dbadapter import adapter_for_url, get_adapter
from meiqia_app.services.errors import Busy

_engine: Engine | None = None
_engine_lock = threading.Lock()
# Work to do once this thread's write transaction has ended (see after_write_transaction);
# None: no write transaction is open.
_after_write: contextvars.ContextVar[list[Callable[[], object]] | None] = contextvars.ContextVar(
    "after_write", default=None
)


def make_engine(url: str) -> Engine:
    """The engine for ``url``: each database's tuning lives in its adapter (dbadapter/)."""
    return adapter_for_url(url).create_engine(url)


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


def _read_engine() -> Engine:
    """The engine for reads (the adapter may skip transactions for them)."""
    engine = get_engine()
    return get_adapter(engine).read_engine(engine)


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
    engine = get_adapter(engine).write_engine(engine, check_foreign_keys)
    outermost = _after_write.get() is None
    token = _after_write.set([]) if outermost else None
    session = Session(engine, expire_on_commit=False)
    session.info[_AFTER_CLOSE] = after_close = []
    try:
        with session:
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
    finally:
        pending = []
        if outermost:
            pending = _after_write.get() or []
            _after_write.reset(token)
        # The session is closed and its connection back in the pool (committed or not):
        # first what waited for no write transaction to be open (audited refusals),
        # then what follows the commit (services/customers/changes.py publishes).
        try:
            for work in pending:
                work()
        finally:
            for callback in after_close:
                callback()


_AFTER_CLOSE = "db.after_close"


def call_after_close(session: Session, callback: Callable[[], None]) -> bool:
    """Have ``callback()`` run once this ``write_session`` has ended (committed or
    rolled back) and given its connection back to the pool; False (and nothing
    registered) for a session that ``write_session`` did not open.

    For work that follows a transaction and opens its own (services/customers/changes.py):
    run there, it holds no second pooled connection and no write lock."""
    callbacks = session.info.get(_AFTER_CLOSE)
    if callbacks is None:
        return False
    if callback not in callbacks:
        callbacks.append(callback)
    return True


def after_write_transaction(work: Callable[[], object]) -> None:
    """Run ``work`` once no write transaction of this thread is open: at once, or when the
    open one has ended (committed or rolled back) and let go of the database.

    For writes that need a transaction of their own while the caller may be inside a
    write transaction: on SQLite a second writer would wait for the caller's lock
    (an audited refusal raised in the middle of a change, services/customers/access.py).
    """
    pending = _after_write.get()
    if pending is None:
        work()
    else:
        pending.append(work)


def _is_lock_timeout(error: OperationalError) -> bool:
    return get_adapter().is_lock_timeout(error)
