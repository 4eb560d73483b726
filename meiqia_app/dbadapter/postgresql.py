"""PostgreSQL: pg_trgm GIN search, COPY loads, advisory locks, pg_dump backups, export rows built in SQL.

The twin of ``sqlite.py``. Substring search: a trigram GIN index over
``customer_search.text`` and one over ``customer_search.contact`` answer
``text LIKE '%term%'`` (``OR contact LIKE …`` where every column is searched)
for terms of three or more characters; shorter terms (one or two Chinese characters) fall back to a
scan of the narrow search table, which the list only uses when walking a sort
index and stopping after a page (``row_match_condition``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from datetime import tzinfo
from pathlib import Path

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Numeric,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    create_engine,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from meiqia_app.dbadapter.base import (
    DatabaseAdapter,
    ExportRowFormat,
    check_kind,
    custom_field_index_name,
    custom_field_key,
    custom_literal,
    like_conditions,
)
from meiqia_app.models import CustomerSearch

_INDEX = "ix_customer_search_text_trgm"
_CONTACT_INDEX = "ix_customer_search_contact_trgm"
# Any constant: the key of the transaction-level advisory lock that serialises
# appends to the audit hash chain (SQLite gets this from BEGIN IMMEDIATE).
AUDIT_CHAIN_LOCK = 727_001


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# The SQL type of a custom field's value of each kind (services/custom_field_types.py).
_CUSTOM_CASTS = {"number": ("numeric", Numeric), "bool": ("boolean", Boolean)}


def _libpq_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Command-line connection arguments for pg_dump / pg_restore, password in the environment."""
    parsed = make_url(url)
    args = []
    if parsed.host:
        args += ["--host", parsed.host]
    if parsed.port:
        args += ["--port", str(parsed.port)]
    if parsed.username:
        args += ["--username", parsed.username]
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return args + ["--dbname", parsed.database or "postgres"], env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the versioned binaries outside PATH.
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"{name} not found: install the PostgreSQL client tools")


class PostgresAdapter(DatabaseAdapter):
    name = "postgresql"
    builds_export_rows = True
    param_mark = "%s"

    # --- engine and transactions --------------------------------------------
    def create_engine(self, url: str) -> Engine:
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
            json_serializer=_json_text,
        )

    def read_engine(self, engine: Engine) -> Engine:
        # Reads run without a transaction (autocommit): no BEGIN before and no
        # ROLLBACK after each read, two of the four round trips of a one-query
        # read (~0.5 -> ~0.3 ms on loopback, more under load). Nothing is lost:
        # at READ COMMITTED each statement had its own snapshot inside a
        # transaction too. Not for SET LOCAL (exports, bulk jobs).
        return engine.execution_options(isolation_level="AUTOCOMMIT")

    def is_lock_timeout(self, error: OperationalError) -> bool:
        return False  # row locks wait; there is no database-wide write lock to time out on

    def lock_row_for_update(self, conn: Connection, table: str, key_column: str, key: str) -> None:
        conn.execute(text(f"SELECT {key_column} FROM {table} WHERE {key_column} = :k FOR UPDATE"), {"k": key})

    def begin_snapshot(self, dbapi_cursor) -> None:
        dbapi_cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def days_between(self, later: ColumnElement, earlier: ColumnElement) -> ColumnElement:
        return func.extract("epoch", later - earlier) / 86400.0

    def reset_id_sequences(self, conn: Connection, table_columns: Sequence[tuple[str, str]]) -> None:
        for table, column in table_columns:
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                    f"COALESCE((SELECT max({column}) FROM {table}), 1))"
                )
            )

    def database_bytes(self, conn: Connection) -> int:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()

    def search_ddl(self) -> list[str]:
        return [
            *self.search_ddl_v1(),
            f"CREATE INDEX IF NOT EXISTS {_CONTACT_INDEX} ON customer_search USING gin (contact gin_trgm_ops)",
        ]

    def search_ddl_v1(self) -> list[str]:
        return [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            f"CREATE INDEX IF NOT EXISTS {_INDEX} ON customer_search USING gin (text gin_trgm_ops)",
        ]

    def search_ddl_drop(self) -> list[str]:
        return [f"DROP INDEX IF EXISTS {_CONTACT_INDEX}", f"DROP INDEX IF EXISTS {_INDEX}"]

    def id_in(self, id_column: ColumnElement, ids: Sequence[int]) -> ColumnElement:
        # One array parameter, not thousands of literals: with a literal IN
        # list the planner walked the sort index filtering on it (29k rows,
        # 90 ms for 1,500 candidates at 1M); with the array it fetches the
        # candidates by primary key and sorts them (10 ms).
        return id_column == any_(bindparam("candidate_ids", list(ids), type_=ARRAY(Integer)))

    def matching_ids(self, conn: Connection, terms: Sequence[str], limit: int, *, columns: Sequence[str]) -> list[int]:
        table = CustomerSearch.__table__
        statement = select(table.c.customer_id).where(and_(*like_conditions(terms, columns))).limit(limit)
        return list(conn.execute(statement).scalars())

    def count_matches(self, conn: Connection, terms: Sequence[str], *, columns: Sequence[str]) -> int:
        table = CustomerSearch.__table__
        statement = select(func.count()).select_from(table).where(and_(*like_conditions(terms, columns)))
        return conn.execute(statement).scalar_one()

    def indexed_match_condition(
        self, customer_id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> ColumnElement:
        table = CustomerSearch.__table__
        return customer_id_column.in_(select(table.c.customer_id).where(and_(*like_conditions(terms, columns))))

    def suspend_search_index(self, conn: Connection) -> None:
        for statement in self.search_ddl_drop():
            conn.exec_driver_sql(statement)

    def rebuild_search_index(self, conn: Connection) -> None:
        for statement in self.search_ddl():
            conn.exec_driver_sql(statement)

    # --- custom fields ----------------------------------------------------------
    # The document is JSONB; a value is ``custom_fields ->> '<key>'`` (text), cast to
    # numeric or boolean for those kinds. PostgreSQL matches an expression index on
    # the same expression with the same literal key; full indexes (its planner needs
    # no partial-index literal), built CONCURRENTLY so writers never wait for them.
    def custom_value(
        self, column: ColumnElement, key: str, kind: str, use_index: bool = True, default: object = None
    ) -> ColumnElement:
        # The planner has the expression's statistics (ANALYZE after the index is made) and
        # chooses between the field's index and the sort index itself: use_index is moot here.
        check_kind(kind)
        name = literal_column(f"'{custom_field_key(key)}'")
        value = column.op("->>")(name)
        if kind in _CUSTOM_CASTS:
            value = cast(value, _CUSTOM_CASTS[kind][1])
        if default is not None:
            # Absent: the default; JSON null (explicitly empty): NULL.
            fallback = literal_column(custom_literal(kind, default, "true", "false"))
            value = case((column.op("?")(name), value), else_=fallback)
        return value

    def custom_has_any(self, column: ColumnElement, key: str, values: Sequence[str]) -> ColumnElement:
        items = column.op("->")(literal_column(f"'{custom_field_key(key)}'"))
        return items.op("?|")(cast(bindparam(None, list(values), type_=ARRAY(Text)), ARRAY(Text)))

    def custom_has_key(self, column: ColumnElement, key: str) -> ColumnElement:
        return column.op("?")(literal_column(f"'{custom_field_key(key)}'"))

    def custom_patch(self, column: ColumnElement, sets: dict[str, object], removes: Sequence[str]) -> ColumnElement:
        value = column
        if removes:
            for key in removes:
                value = value.op("-")(literal_column(f"'{custom_field_key(key)}'"))
        if sets:
            for key in sets:
                custom_field_key(key)
            value = value.op("||")(cast(literal(_json_text(sets)), JSONB))
        return value

    def custom_field_index_ddl(self, key: str, kind: str, by_last_active: bool, default: object = None) -> list[str]:
        check_kind(kind)
        name = custom_field_index_name(key, kind, by_last_active, default)
        value = f"(custom_fields ->> '{key}')"
        if kind in _CUSTOM_CASTS:
            value = f"({value}::{_CUSTOM_CASTS[kind][0]})"
        if default is not None:
            literal = custom_literal(kind, default, "true", "false")
            value = f"(CASE WHEN (custom_fields ? '{key}') THEN {value} ELSE {literal} END)"
        columns = f"status, {value}, last_active_at, id" if by_last_active else f"status, {value}, id"
        return [f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON customer ({columns})", "ANALYZE customer"]

    def create_custom_field_index(
        self, engine: Engine, key: str, kind: str, by_last_active: bool, default: object = None
    ) -> str:
        # CONCURRENTLY cannot run in a transaction; a build that failed half-way leaves an
        # INVALID index behind, which IF NOT EXISTS would keep: dropped and built again.
        name = custom_field_index_name(key, kind, by_last_active, default)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            invalid = conn.execute(
                text(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :name AND NOT i.indisvalid"
                ),
                {"name": name},
            ).first()
            if invalid is not None:
                conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for statement in self.custom_field_index_ddl(key, kind, by_last_active, default):
                conn.exec_driver_sql(statement)
        self.drop_custom_field_index(engine, key, keep=name)
        return name

    def _drop_index(self, engine: Engine, name: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")

    def custom_field_indexes(self, conn: Connection, valid_only: bool = True) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = 'customer' AND substr(c.relname, 1, 6) = 'ix_cf_'"
            + (" AND i.indisvalid" if valid_only else "")
        )
        return {row[0] for row in rows}

    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def packed_rows(self, conn: Connection, statement, columns: Sequence[str]) -> list[list]:
        inner = statement.subquery("packed")
        packed = select(func.json_agg(func.json_build_array(*(inner.c[name] for name in columns))))
        value = conn.execute(packed).scalar_one()
        if value is None:
            return []
        return json.loads(value) if isinstance(value, str) else value

    def analyze(self, conn: Connection) -> None:
        conn.exec_driver_sql("ANALYZE")

    def lock_audit_chain(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({AUDIT_CHAIN_LOCK})")

    def begin_bulk_writes(self, conn: Connection) -> None:
        # The batch's "customer_id IN (ids of the batch)" sub-selects hash in memory
        # rather than spilling; SET LOCAL ends with the transaction.
        conn.exec_driver_sql("SET LOCAL work_mem = '128MB'")

    backup_suffix = ".dump"

    def backup_to(self, url: str, target: Path) -> None:
        args, env = _libpq_args(url)
        subprocess.run(
            [_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=6 * 3600,
        )

    def verify_backup(self, target: Path) -> str:
        if not target.is_file():
            return "missing"
        done = subprocess.run(
            [_tool("pg_restore"), "--list", str(target)], capture_output=True, text=True, timeout=3600
        )
        if done.returncode != 0:
            return (done.stderr.strip() or "pg_restore --list failed")[:255]
        return "ok" if "TABLE DATA public customer " in done.stdout else "customer table data missing"

    def restore_from(self, url: str, source: Path) -> None:
        args, env = _libpq_args(url)
        subprocess.run(
            [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", *args, str(source)],
            env=env,
            check=True,
            capture_output=True,
            timeout=6 * 3600,
        )

    # --- exports --------------------------------------------------------------
    def export_rows_supported(self, engine, zone: tzinfo) -> bool:
        from meiqia_app.dbadapter.postgresql_export import zone_agrees

        return zone_agrees(engine, zone)

    def export_row_sql(self, conn: Connection, row_format: ExportRowFormat) -> str | None:
        from meiqia_app.dbadapter.postgresql_export import row_sql

        return row_sql(row_format)

    joins_text = True

    def joined_text(self, values: ColumnElement, separator: str, order_by: list) -> ColumnElement:
        return func.string_agg(values, aggregate_order_by(literal(separator), *order_by))

    @contextlib.contextmanager
    def export_read_settings(self, conn: Connection) -> Iterator[None]:
        """The rows' datetime serials are floats printed by PostgreSQL: the shortest
        text that reads back as the same double (Python's repr) needs
        extra_float_digits = 1, the default, pinned for the export's transaction.
        Memory needs no server-side cursor: every query is one keyset batch
        (LIMIT ``SQL_BATCH`` / ``DEFAULT_BATCH`` rows, a few MB)."""
        conn.exec_driver_sql("SET LOCAL extra_float_digits = 1")
        yield
