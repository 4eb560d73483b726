"""SQLite: FTS5 trigram search, the online backup API, raw executemany loads."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    event,
    exists,
    false,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import OperationalError

from meiqia_app.dbadapter.base import (
    SEARCH_EVERYTHING,
    DatabaseAdapter,
    ExportRowFormat,
    check_columns,
    check_kind,
    custom_field_index_name,
    custom_field_key,
    custom_literal,
)

_FTS = "customer_fts"

SQLITE_BUSY_TIMEOUT_MS = 15_000
# Pages of 16 KiB rather than SQLite's 4 KiB: a bulk purge dirties pages all
# over the file (the deleted customers are scattered), and with bigger pages
# it writes ~3x fewer WAL frames for it (1M customers, 100,000 purged before
# migration 0006: 42 -> 35-39 s; 32 and 64 KiB were slower again, 45 and 52 s). Takes effect when the file is
# created; an existing database is rewritten by ``python -m meiqia_app compact``.
SQLITE_PAGE_SIZE = 16_384
NORMAL_CACHE_KIB = 64 * 1024  # page cache per connection
# WAL checkpoints off the request path. SQLite's default moves the WAL into the
# database file inside the COMMIT that takes the WAL past 1,000 pages: at 1M
# customers an ingested batch of 500 records dirties ~1,400 16-KiB pages, so
# every batch paid a checkpoint (copy + fsync, ~45 % of its time in process).
# A thread per engine checkpoints (PASSIVE: never waits for or blocks readers
# and writers) every CHECKPOINT_INTERVAL_S instead, where it overlaps the next
# requests and writes a page rewritten by several batches once. Durability is
# unchanged: a commit is in the WAL either way (synchronous=NORMAL, safe across
# an app crash); the checkpoint syncs the WAL before copying it. The commit-time
# checkpoint stays as a safety net at AUTOCHECKPOINT_PAGES (a process without
# the thread, or a thread that falls behind, still bounds the WAL).
CHECKPOINT_INTERVAL_S = 0.5
AUTOCHECKPOINT_PAGES = 16_384  # 256 MiB of 16-KiB pages
WAL_TRUNCATE_BYTES = 512 * 1024 * 1024

log = logging.getLogger(__name__)


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_checkpointers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def checkpointer_of(engine: Engine) -> WalCheckpointer | None:
    """The engine's WAL checkpointer (None for an in-memory database)."""
    return _checkpointers.get(getattr(engine, "engine", engine))


class WalCheckpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on one database file.

    It opens a connection for each checkpoint and closes it again, so between
    checkpoints it holds nothing open (a compaction or restore that needs the file
    to itself sees only the engine's own connections, which it disposes first);
    ``stop`` waits for a running checkpoint to finish.
    """

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="sqlite-wal-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One checkpoint: (busy, frames in the WAL, frames checkpointed).

        PASSIVE; once the WAL file is past WAL_TRUNCATE_BYTES, TRUNCATE: with writers
        and readers never pausing, SQLite may find no moment to start the WAL over and
        the file grows. TRUNCATE waits for nobody here (no busy timeout): when a reader
        or writer is in the way it does what PASSIVE does and tries again next time.
        """
        wal = Path(self.path + "-wal")
        if not Path(self.path).exists() or not wal.exists():
            return None
        mode = "TRUNCATE" if wal.stat().st_size > WAL_TRUNCATE_BYTES else "PASSIVE"
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            return tuple(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())
        finally:
            conn.close()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.checkpoint()
            except sqlite3.Error as error:  # busy, or the file went away: the next round tries again
                log.debug("WAL checkpoint of %s skipped: %s", self.path, error)


def _configure(engine: Engine) -> None:
    """WAL so readers never wait for the writer, foreign keys on, a busy
    timeout so concurrent writers queue instead of failing, the way each
    transaction begins decided per transaction (``write_engine``), and WAL
    checkpoints in a thread of the engine's (``WalCheckpointer``) rather than
    in the commits of requests."""
    path = engine.url.database
    checkpointer = WalCheckpointer(path) if path and path != ":memory:" and "mode=memory" not in path else None
    _checkpointers[engine] = checkpointer

    if checkpointer is not None:

        @event.listens_for(engine, "engine_disposed")
        def _on_dispose(_engine):  # pragma: no cover - trivial
            checkpointer.stop()

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
        cursor.execute(f"PRAGMA cache_size=-{NORMAL_CACHE_KIB}")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES if checkpointer else 1000}")
        cursor.close()
        if checkpointer is not None:
            checkpointer.start()  # (again, after a dispose stopped it)

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


_TRIGGERS = {
    "customer_search_ai": (
        "CREATE TRIGGER customer_search_ai AFTER INSERT ON customer_search BEGIN "
        f"INSERT INTO {_FTS}(rowid, text, contact) VALUES (new.customer_id, new.text, new.contact); END"
    ),
    "customer_search_ad": (
        "CREATE TRIGGER customer_search_ad AFTER DELETE ON customer_search BEGIN "
        f"INSERT INTO {_FTS}({_FTS}, rowid, text, contact) VALUES ('delete', old.customer_id, old.text, old.contact); END"
    ),
    # Only a changed text touches the index (a profile edit that leaves name,
    # phone and e-mail alone costs nothing here).
    "customer_search_au": (
        "CREATE TRIGGER customer_search_au AFTER UPDATE OF text, contact ON customer_search "
        "WHEN old.text IS NOT new.text OR old.contact IS NOT new.contact BEGIN "
        f"INSERT INTO {_FTS}({_FTS}, rowid, text, contact) VALUES ('delete', old.customer_id, old.text, old.contact); "
        f"INSERT INTO {_FTS}(rowid, text, contact) VALUES (new.customer_id, new.text, new.contact); END"
    ),
}
# As migration 0001 created them: one indexed column, ``text``.
_TRIGGERS_V1 = {
    "customer_search_ai": (
        "CREATE TRIGGER customer_search_ai AFTER INSERT ON customer_search BEGIN "
        f"INSERT INTO {_FTS}(rowid, text) VALUES (new.customer_id, new.text); END"
    ),
    "customer_search_ad": (
        "CREATE TRIGGER customer_search_ad AFTER DELETE ON customer_search BEGIN "
        f"INSERT INTO {_FTS}({_FTS}, rowid, text) VALUES ('delete', old.customer_id, old.text); END"
    ),
    "customer_search_au": (
        "CREATE TRIGGER customer_search_au AFTER UPDATE OF text ON customer_search "
        "WHEN old.text IS NOT new.text BEGIN "
        f"INSERT INTO {_FTS}({_FTS}, rowid, text) VALUES ('delete', old.customer_id, old.text); "
        f"INSERT INTO {_FTS}(rowid, text) VALUES (new.customer_id, new.text); END"
    ),
}


def fts_phrase_query(terms: Sequence[str], columns: Sequence[str]) -> str:
    """Every term as an FTS5 phrase ("..." with quotes doubled), ANDed; limited
    to one column ({text} : "...") unless every column is searched."""
    columns = check_columns(columns)
    scope = "" if columns == SEARCH_EVERYTHING else "{" + " ".join(columns) + "} : "
    return " AND ".join(scope + '"' + term.replace('"', '""') + '"' for term in terms)


@contextlib.contextmanager
def _with_page_size(source: Path, page_size: int) -> Iterator[Path]:
    """``source``, or a temporary copy of it rewritten to ``page_size`` (the live file's).

    The backup API cannot copy into a WAL database of another page size, and
    a backup taken before the page size changed (see dbadapter.sqlite.SQLITE_PAGE_SIZE) must
    still restore.
    """
    probe = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        same = probe.execute("PRAGMA page_size").fetchone()[0] == page_size
    finally:
        probe.close()
    if same:
        yield source
        return
    copy = source.with_name(f".{source.name}.page-size-{page_size}.tmp")
    try:
        with (
            contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(copy, isolation_level=None)) as out,
        ):
            src.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
            out.execute(f"PRAGMA page_size={int(page_size)}")
            out.execute("VACUUM")
        yield copy
    finally:
        copy.unlink(missing_ok=True)
        for suffix in ("-journal", "-wal", "-shm"):
            copy.with_name(copy.name + suffix).unlink(missing_ok=True)


class SqliteAdapter(DatabaseAdapter):
    name = "sqlite"
    can_compact = True
    one_writer = True

    # --- engine and transactions --------------------------------------------
    def create_engine(self, url: str) -> Engine:
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # JSON columns (customer.custom_fields) as compact UTF-8 text.
            json_serializer=_json_text,
            pool_size=8,
            max_overflow=16,
        )
        _configure(engine)
        return engine

    def write_engine(self, engine: Engine, check_foreign_keys: bool = True) -> Engine:
        # BEGIN IMMEDIATE: two writers never deadlock upgrading a read lock.
        # Foreign-key checks off only for a writer that deletes every child row itself.
        return engine.execution_options(sqlite_begin="IMMEDIATE", sqlite_foreign_keys=check_foreign_keys)

    def is_lock_timeout(self, error: OperationalError) -> bool:
        return "database is locked" in str(error.orig)

    def days_between(self, later: ColumnElement, earlier: ColumnElement) -> ColumnElement:
        # Datetimes are stored as text here: julianday() reads them.
        return func.julianday(later) - func.julianday(earlier)

    def bulk_value_formatters(self):
        from meiqia_app.timeutil import sqlite_text

        return sqlite_text, lambda value: value.isoformat() if value is not None else None

    def database_bytes(self, conn: Connection) -> int:
        path = Path(conn.engine.url.database)
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())

    # --- custom fields ----------------------------------------------------------
    # The document is JSON text; json_extract gives SQL values (text, integer, real;
    # true/false as 1/0; NULL for an absent key). SQLite matches an expression index
    # when the query repeats the indexed expression: json_extract(custom_fields,
    # '$.<key>') with the path as a literal. The indexes are partial on the working
    # set like the built-in status-led ones (models/customer.py), so the queries
    # carry that literal condition too (customer_query.status_condition adds it).
    def custom_value(
        self, column: ColumnElement, key: str, kind: str, use_index: bool = True, default: object = None
    ) -> ColumnElement:
        check_kind(kind)
        path = literal_column(f"'$.{custom_field_key(key)}'")
        value = func.json_extract(column, path)
        if default is not None:
            # Absent: the default; JSON null (explicitly empty): NULL.
            value = case(
                (func.json_type(column, path).is_(None), literal_column(custom_literal(kind, default))), else_=value
            )
        if use_index:
            return value
        # Any arithmetic or concatenation hides the expression from the index and keeps the value.
        return value.op("||")(literal_column("''")) if kind == "text" else value.op("+")(literal_column("0"))

    def custom_has_any(self, column: ColumnElement, key: str, values: Sequence[str]) -> ColumnElement:
        items = func.json_each(column, literal_column(f"'$.{custom_field_key(key)}'")).table_valued("value")
        return exists(select(literal_column("1")).select_from(items).where(items.c.value.in_(list(values))))

    def custom_has_key(self, column: ColumnElement, key: str) -> ColumnElement:
        return func.json_type(column, literal_column(f"'$.{custom_field_key(key)}'")).is_not(None)

    def custom_patch(self, column: ColumnElement, sets: dict[str, object], removes: Sequence[str]) -> ColumnElement:
        value = column
        if sets:
            pairs = []
            for key, item in sets.items():
                pairs += [literal_column(f"'$.{custom_field_key(key)}'"), func.json(literal(_json_text(item)))]
            value = func.json_set(value, *pairs)
        if removes:
            value = func.json_remove(value, *(literal_column(f"'$.{custom_field_key(key)}'") for key in removes))
        return value

    def custom_field_index_ddl(self, key: str, kind: str, by_last_active: bool, default: object = None) -> list[str]:
        check_kind(kind)
        name = custom_field_index_name(key, kind, by_last_active, default)
        value = f"json_extract(custom_fields, '$.{key}')"
        if default is not None:
            literal = custom_literal(kind, default)
            value = f"CASE WHEN json_type(custom_fields, '$.{key}') IS NULL THEN {literal} ELSE {value} END"
        columns = f"status, {value}, last_active_at, id" if by_last_active else f"status, {value}, id"
        return [
            f"CREATE INDEX IF NOT EXISTS {name} ON customer ({columns}) WHERE status != 'trashed'",
            # Without statistics the planner misjudges a new index (see migration 0011).
            f"ANALYZE {name}",
        ]

    def custom_field_indexes(self, conn: Connection, valid_only: bool = True) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'customer' "
            "AND substr(name, 1, 6) = 'ix_cf_'"
        )
        return {row[0] for row in rows}

    def padded_number(self, expression: ColumnElement, width: int) -> ColumnElement:
        return func.printf(literal_column(f"'%0{int(width)}d'"), expression)

    builds_export_rows = True
    export_custom_kinds = True

    def search_ddl(self) -> list[str]:
        return [
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {_FTS} USING fts5("
            "text, contact, content='customer_search', content_rowid='customer_id', "
            "tokenize='trigram')",
            *_TRIGGERS.values(),
        ]

    def search_ddl_v1(self) -> list[str]:
        return [
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {_FTS} USING fts5("
            "text, content='customer_search', content_rowid='customer_id', "
            "tokenize='trigram')",
            *_TRIGGERS_V1.values(),
        ]

    def search_ddl_drop(self) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {name}" for name in _TRIGGERS] + [f"DROP TABLE IF EXISTS {_FTS}"]

    def matching_ids(self, conn: Connection, terms: Sequence[str], limit: int, *, columns: Sequence[str]) -> list[int]:
        rows = conn.execute(
            text(f"SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH :q LIMIT :limit"),
            {"q": fts_phrase_query(terms, columns), "limit": limit},
        )
        return [row[0] for row in rows]

    # FTS5 counts its matches from the index in 1-4 ms, so a broad term (伟:
    # 86k matches) costs a count, not 10,000 ids, before the list walks; up
    # to 10,000 ids are read by id and sorted in 10-40 ms, faster than the
    # walk for terms matching 0.3-1 % of customers (pinyin initials, phone
    # fragments: p95 104 -> 66 ms at 1M).
    candidate_cap = 6_000

    def candidate_ids(self, conn: Connection, terms: Sequence[str], *, columns: Sequence[str]) -> list[int] | None:
        if self.count_matches(conn, terms, columns=columns) > self.candidate_cap:
            return None
        return self.matching_ids(conn, terms, self.candidate_cap + 1, columns=columns)

    def candidate_condition(
        self, conn: Connection, id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> tuple[ColumnElement, int] | None:
        # The index is asked again inside the list query (``id IN (SELECT rowid …
        # MATCH …)``) instead of carrying up to 6,000 ids through Python as bound
        # parameters: the same rows, p50 5.2 -> 3.7 ms and p95 18 -> 9 ms at 1M,
        # and no per-id work under the GIL while other users' events wait.
        found = self.count_matches(conn, terms, columns=columns)
        if found > self.candidate_cap:
            return None
        return (self.indexed_match_condition(id_column, terms, columns=columns) if found else false()), found

    def count_matches(self, conn: Connection, terms: Sequence[str], *, columns: Sequence[str]) -> int:
        return conn.execute(
            text(f"SELECT count(*) FROM {_FTS} WHERE {_FTS} MATCH :q"), {"q": fts_phrase_query(terms, columns)}
        ).scalar_one()

    def indexed_match_condition(
        self, customer_id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> ColumnElement:
        # A distinct parameter name per query: an exact e-mail lookup adds a
        # second one to the same statement.
        phrase = fts_phrase_query(terms, columns)
        sub = text(f"SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH :fts_q").bindparams(
            bindparam("fts_q", phrase, unique=True)
        )
        return customer_id_column.in_(sub.columns(literal_column("rowid")).subquery().select())

    def suspend_search_index(self, conn: Connection) -> None:
        for name in _TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")

    def rebuild_search_index(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"INSERT INTO {_FTS}({_FTS}) VALUES ('rebuild')")
        for statement in _TRIGGERS.values():
            conn.exec_driver_sql(statement.replace("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS", 1))

    # --- erasure --------------------------------------------------------------
    def overwrite_deleted_content(self, conn: Connection) -> None:
        # Freed pages are zeroed (PostgreSQL reuses dead space through VACUUM).
        conn.exec_driver_sql("PRAGMA secure_delete=ON")

    def scrub_after_erasure(self, engine: Engine) -> None:
        with engine.begin() as conn:  # merge FTS segments so deleted trigrams are gone
            conn.execute(text(f"INSERT INTO {_FTS}({_FTS}) VALUES ('optimize')"))
        with engine.connect() as conn:  # and the WAL no longer holds the old pages
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
        conn.connection.driver_connection.cursor().executemany(sql, rows)

    # Bound parameters per statement (SQLite allows 32,766).
    MAX_PARAMETERS = 30_000

    def insert_rows(self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        # One multi-row INSERT per chunk: executemany steps the statement once per row, and
        # each step lets go of the GIL and waits to get it back while other threads work.
        if not rows:
            return
        chunk = max(1, self.MAX_PARAMETERS // max(1, len(columns)))
        one = "(" + ", ".join("?" for _ in columns) + ")"
        cursor = conn.connection.driver_connection.cursor()
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join(one for _ in part)
            cursor.execute(sql, [value for row in part for value in row])

    def update_from_values(self, conn, table, names, types, rows, assignments, match) -> None:
        # Through the driver, like insert_rows: a statement of a few thousand SQLAlchemy
        # bind parameters cost more Python (parameter objects, cache key, compiling the text,
        # binding) than SQLite takes to run it. Times and days as SQLAlchemy stores them.
        if not rows:
            return
        import datetime as dt

        moment, day = self.bulk_value_formatters()

        def stored(value):
            if isinstance(value, dt.datetime):
                return moment(value)
            if isinstance(value, dt.date):
                return day(value)
            return value

        width = len(names)
        chunk = max(1, self.MAX_PARAMETERS // max(1, width))
        one = "(" + ", ".join("?" for _ in range(width)) + ")"
        cursor = conn.connection.driver_connection.cursor()
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            cursor.execute(
                f"WITH v({', '.join(names)}) AS (VALUES {', '.join(one for _ in part)}) "
                f"UPDATE {table} SET {assignments} FROM v WHERE {match}",
                [stored(value) for row in part for value in row],
            )

    def insert_rows_returning_ids(self, conn: Connection, table, rows: Sequence[dict]) -> list[int]:
        # SQLAlchemy sends one INSERT per row when the RETURNING order matters on SQLite.
        # A rowid table without AUTOINCREMENT gives each new row max(rowid) + 1, and the
        # caller's write transaction (BEGIN IMMEDIATE) has no other writer: the rows of one
        # multi-row INSERT get consecutive ids, in order, ending at last_insert_rowid().
        if not rows:
            return []
        from meiqia_app.timeutil import sqlite_text

        columns = [name for name in rows[0] if name != "id"]
        values = [
            tuple(
                sqlite_text(v) if hasattr(v, "tzinfo") and hasattr(v, "hour") else v for v in (row[c] for c in columns)
            )
            for row in rows
        ]
        ids: list[int] = []
        cursor = conn.connection.driver_connection.cursor()
        chunk = max(1, self.MAX_PARAMETERS // max(1, len(columns)))
        one = "(" + ", ".join("?" for _ in columns) + ")"
        for start in range(0, len(values), chunk):
            part = values[start : start + chunk]
            cursor.execute(
                f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES " + ", ".join(one for _ in part),
                [value for row in part for value in row],
            )
            last = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
            ids.extend(range(last - len(part) + 1, last + 1))
        return ids

    def packed_rows(self, conn: Connection, statement, columns: Sequence[str]) -> list[list]:
        inner = statement.subquery("packed")
        packed = select(func.json_group_array(func.json_array(*(inner.c[name] for name in columns))))
        return json.loads(conn.execute(packed).scalar_one() or "[]")

    def analyze(self, conn: Connection) -> None:
        # A full ANALYZE (seconds at 1M rows): with sampled statistics the
        # planner took the status index over a 3,000-id IN list, 30x slower.
        conn.exec_driver_sql("ANALYZE")

    # A cleanup batch (archive / trash / purge of 50,000 of 1,000,000 customers)
    # dirties nearly every leaf page of the customer table and its 17 indexes
    # (~1 GB at 1M). With the default 64 MiB cache those pages spill to the WAL
    # in the middle of the statement and are written again and again; a cache
    # that holds the batch's dirty pages, for the batch only, writes each page
    # once per batch. Measured at 1M (load 4): archive 100k in 2 batches 28 s
    # with 1 GiB, 31–63 s with 256–512 MiB; one 100k batch with 1 GiB 17.5 s.
    # Costs up to ~1 GiB more RSS while a batch runs (peak ~2 GB in a purge).
    BULK_CACHE_KIB = 1024 * 1024
    NORMAL_CACHE_KIB = NORMAL_CACHE_KIB

    def begin_bulk_writes(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{self.BULK_CACHE_KIB}")

    def end_bulk_writes(self, conn: Connection) -> None:
        # Shrinking the limit frees the extra pages (bounded memory between batches).
        conn.exec_driver_sql(f"PRAGMA cache_size=-{self.NORMAL_CACHE_KIB}")

    stages_restores = True

    def backup_to(self, url: str, target: Path) -> None:
        source_path = url.split("sqlite:///", 1)[1]
        source = sqlite3.connect(source_path, timeout=30)
        dest = sqlite3.connect(target)
        try:
            # Copies pages in steps so writers are only paused briefly.
            source.backup(dest, pages=4096)
        finally:
            dest.close()
            source.close()

    def verify_backup(self, target: Path) -> str:
        try:
            conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
            try:
                messages = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
                if messages != ["ok"]:
                    return "; ".join(messages)[:255]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return str(exc)[:255] or "not a database"
        return "ok" if {"customer", "backup", "audit_entry"} <= tables else "not a database of this application"

    @contextlib.contextmanager
    def staged_copy(self, staged: Path) -> Iterator[Engine]:
        """An engine on a restored copy before it replaces the live file (migrated
        and reconciled there, so nothing reads it half-done); afterwards the copy
        is one file again (the engine switched it to WAL), ready for ``restore_from``."""
        engine = self.create_engine(f"sqlite:///{staged}")
        try:
            yield self.write_engine(engine)
        finally:
            engine.dispose()
        conn = sqlite3.connect(staged, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()

    def restore_from(self, url: str, source: Path) -> None:
        live_path = url.split("sqlite:///", 1)[1]
        dest = sqlite3.connect(live_path, timeout=60)
        try:
            live_page_size = dest.execute("PRAGMA page_size").fetchone()[0]
            with _with_page_size(source, live_page_size) as usable:
                src = sqlite3.connect(f"file:{usable}?mode=ro", uri=True)
                try:
                    src.backup(dest)
                finally:
                    src.close()
        finally:
            dest.close()

    def rewrite_with_page_size(self, url: str, page_size: int) -> tuple[int, int]:
        """VACUUM the database into pages of ``page_size`` bytes; (old, new) page size.

        Needs the database to itself (no app running) and free disk space of
        about its size. 2 min 21 s for 1M customers (3.5 GB) on the 2-core bench VM.
        """
        path = url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            before = conn.execute("PRAGMA page_size").fetchone()[0]
            # WAL files keep their page size; leaving WAL needs every other connection gone.
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode.lower() != "delete":
                raise RuntimeError("the database is in use (stop the app first)")
            try:
                conn.execute(f"PRAGMA page_size={int(page_size)}")
                conn.execute("VACUUM")
            finally:
                conn.execute("PRAGMA journal_mode=WAL")
            return before, conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()

    # --- exports --------------------------------------------------------------
    def export_row_sql(self, conn: Connection, row_format: ExportRowFormat) -> str | None:
        from meiqia_app.dbadapter.sqlite_export import row_sql

        return row_sql(conn.connection.driver_connection, row_format)

    joins_text = True

    def joined_text(self, values: ColumnElement, separator: str, order_by: list) -> ColumnElement:
        # SQLite before 3.44 has no ORDER BY inside an aggregate: group_concat
        # takes the rows in the order the subquery (ORDER BY … LIMIT, which is
        # never flattened into an aggregate) delivers them. The export tests
        # compare every order, direction and batch size byte for byte.
        return func.group_concat(values, literal(separator))

    @contextlib.contextmanager
    def export_read_settings(self, conn: Connection) -> Iterator[None]:
        """A streaming export reads the whole table once: no memory map (its
        pages count in the process's RSS, up to mmap_size) and a small page
        cache; the pooled connection gets its usual settings back afterwards."""
        raw = conn.connection.driver_connection
        mmap_size = raw.execute("PRAGMA mmap_size").fetchone()[0]
        cache_size = raw.execute("PRAGMA cache_size").fetchone()[0]
        raw.execute("PRAGMA mmap_size=0")
        raw.execute("PRAGMA cache_size=-8192")
        try:
            yield
        finally:
            raw.execute(f"PRAGMA mmap_size={int(mmap_size)}")
            raw.execute(f"PRAGMA cache_size={int(cache_size)}")
            from meiqia_app.dbadapter.sqlite_export import HELPER_FUNCTIONS

            for name in HELPER_FUNCTIONS:  # release the export's Python helpers (and their caches)
                raw.create_function(name, 1, None)
