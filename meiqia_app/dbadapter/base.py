"""The adapter interface."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, Engine, String, exists, false, func, or_, select

from meiqia_app.models import CustomerSearch


def escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Which texts of ``customer_search`` a search matches (services/customers/query.py
# decides by the acting role): every term must occur in one of them.
SEARCH_EVERYTHING = ("text", "contact")
SEARCH_PUBLIC = ("text",)  # what a role without customer.view_sensitive may match
SEARCH_CONTACT = ("contact",)  # exact e-mail lookups check their candidates themselves
SEARCH_COLUMN_SETS = (SEARCH_EVERYTHING, SEARCH_PUBLIC, SEARCH_CONTACT)


def check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    columns = tuple(columns)
    if columns not in SEARCH_COLUMN_SETS:
        raise ValueError(f"unknown search columns: {columns}")
    return columns


def like_conditions(terms: Sequence[str], columns: Sequence[str]) -> list[ColumnElement]:
    """Each term as a LIKE on the chosen texts of customer_search (any of them)."""
    table = CustomerSearch.__table__
    return [
        or_(*(table.c[name].like("%" + escape_like(term) + "%", escape="\\") for name in check_columns(columns)))
        for term in terms
    ]


class DatabaseAdapter(abc.ABC):
    name: str
    #: Whether ``export_row_sql`` builds export rows in the database.
    builds_export_rows: bool = False
    #: Whether ``joined_text`` exists here.
    joins_text: bool = False

    # --- engine and transactions --------------------------------------------
    #: The driver's placeholder in ``exec_driver_sql`` statements.
    param_mark: str = "?"
    #: Whether ``rewrite_with_page_size`` (``python -m meiqia_app compact``) means anything here.
    can_compact: bool = False
    #: One write transaction at a time for the whole database (SQLite): a writer that finds the
    #: lock taken polls for it with growing sleeps (up to 100 ms each), so a process's own
    #: writers of a hot path are better queued on a lock of the process's (services/integrations/ingest.py).
    one_writer: bool = False

    def lock_rows_in_id_order(self, conn: Connection, table, ids: Iterable[int], chunk: int = 30_000) -> None:
        """Lock these rows of ``table`` for an update, lowest id first, where writers run side by
        side: an UPDATE takes its rows in whatever order its plan visits them, so two
        transactions writing overlapping customers (two ingest batches, a batch and the
        lifecycle update after another batch) deadlocked, and one was refused. FOR NO KEY
        UPDATE is the lock those UPDATEs take anyway: it neither waits for nor blocks
        another transaction's foreign-key checks on the rows. One writer at a time (SQLite):
        nothing to do."""
        if self.one_writer:
            return
        ordered = sorted(set(ids))
        id_column = table.c.id
        for start in range(0, len(ordered), chunk):
            locking = (
                select(id_column).where(id_column.in_(ordered[start : start + chunk])).order_by(id_column)
            ).with_for_update(key_share=True)
            conn.execute(select(func.count()).select_from(locking.subquery()))

    @abc.abstractmethod
    def create_engine(self, url: str) -> Engine:
        """The app's engine for ``url``, tuned for this database."""

    def read_engine(self, engine: Engine) -> Engine:
        """The engine reads use (``db.read_session``): the same engine unless reads can skip transactions."""
        return engine

    def write_engine(self, engine: Engine, check_foreign_keys: bool = True) -> Engine:
        """The engine one write transaction uses (``db.write_session``)."""
        return engine

    def is_lock_timeout(self, error) -> bool:
        """Whether an OperationalError means "another writer held the lock too long" (nothing written)."""
        return False

    def lock_row_for_update(self, conn: Connection, table: str, key_column: str, key: str) -> None:
        """Hold a row's lock until the transaction ends (no-op where a write transaction locks everything)."""

    def begin_snapshot(self, dbapi_cursor) -> None:
        """On a raw DB-API connection: the following reads see one snapshot."""
        dbapi_cursor.execute("BEGIN")

    def days_between(self, later: ColumnElement, earlier: ColumnElement) -> ColumnElement:
        """Days from ``earlier`` to ``later`` (fractional), as SQL."""
        raise NotImplementedError

    def bulk_value_formatters(self) -> tuple[Callable, Callable]:
        """How the bulk loader writes datetimes and dates (driver-native unless the database stores text)."""
        return (lambda value: value), (lambda value: value)

    def reset_id_sequences(self, conn: Connection, table_columns: Sequence[tuple[str, str]]) -> None:
        """After inserting explicit ids: let the next generated id follow the largest one."""

    def database_bytes(self, conn: Connection) -> int:
        """The database's size on disk."""
        raise NotImplementedError

    # --- erasure --------------------------------------------------------------
    def overwrite_deleted_content(self, conn: Connection) -> None:
        """In this write transaction: deleted content is overwritten, not left in free pages (where possible)."""

    def scrub_after_erasure(self, engine: Engine) -> None:
        """After an erasure committed: leave no copies of erased text in index segments or logs (where the database keeps them)."""

    # --- search -------------------------------------------------------------
    # ``columns`` is one of SEARCH_COLUMN_SETS: which texts of customer_search
    # the terms are matched against. It has no default: the caller decides
    # from the acting role what it may match.
    @abc.abstractmethod
    def search_ddl(self) -> list[str]:
        """Statements that create the substring index over customer_search's texts."""

    @abc.abstractmethod
    def search_ddl_drop(self) -> list[str]:
        """Statements that remove it (migration downgrade)."""

    @abc.abstractmethod
    def search_ddl_v1(self) -> list[str]:
        """The index as migration 0001 created it (over ``text`` alone)."""

    @abc.abstractmethod
    def matching_ids(self, conn: Connection, terms: Sequence[str], limit: int, *, columns: Sequence[str]) -> list[int]:
        """Ids of customers whose ``columns`` contain every term, at most ``limit``."""

    # How many ids from the search index the list reads and sorts itself
    # rather than walking the sort index and probing each row.
    candidate_cap = 3000

    def candidate_ids(self, conn: Connection, terms: Sequence[str], *, columns: Sequence[str]) -> list[int] | None:
        """The matching ids when they are at most ``candidate_cap``, else None."""
        ids = self.matching_ids(conn, terms, self.candidate_cap + 1, columns=columns)
        return ids if len(ids) <= self.candidate_cap else None

    def candidate_condition(
        self, conn: Connection, id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> tuple[ColumnElement, int] | None:
        """The search as a condition that drives the query from its few matches,
        with how many there are; None when they are more than ``candidate_cap``."""
        ids = self.candidate_ids(conn, terms, columns=columns)
        if ids is None:
            return None
        return (self.id_in(id_column, ids) if ids else false()), len(ids)

    @abc.abstractmethod
    def count_matches(self, conn: Connection, terms: Sequence[str], *, columns: Sequence[str]) -> int:
        """How many customers' ``columns`` contain every term (any status)."""

    @abc.abstractmethod
    def indexed_match_condition(
        self, customer_id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> ColumnElement:
        """A WHERE condition answered from the search index: ``id IN (matching ids)``.

        Best when the whole matching set is needed (exact counts).
        """

    def id_in(self, id_column: ColumnElement, ids: Sequence[int]) -> ColumnElement:
        """``id IN (the search's candidate ids)``: a few thousand ids at most."""
        return id_column.in_(ids)

    def row_match_condition(
        self, customer_id_column: ColumnElement, terms: Sequence[str], *, columns: Sequence[str]
    ) -> ColumnElement:
        """A WHERE condition checked row by row against the customer's search texts.

        Best when walking another index and stopping early (a page of a
        common term): each probe is one primary-key lookup and a LIKE per term.
        """
        return exists().where(
            CustomerSearch.__table__.c.customer_id == customer_id_column, *like_conditions(terms, columns)
        )

    def suspend_search_index(self, conn: Connection) -> None:
        """Before a bulk load: stop per-row index maintenance (optional)."""

    def rebuild_search_index(self, conn: Connection) -> None:
        """After a bulk load: rebuild the index in one pass (optional)."""

    # --- bulk work ----------------------------------------------------------
    @abc.abstractmethod
    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """Insert many rows fast (used by the seeder and imports)."""

    def insert_rows(self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Insert a few hundred rows in the caller's transaction in as few driver round trips
        as the database allows (values as the bulk loader writes them: bulk_value_formatters)."""
        self.bulk_insert(conn, table, columns, rows)

    # Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's 65,535.
    MAX_PARAMETERS = 30_000

    def update_from_values(
        self,
        conn: Connection,
        table: str,
        names: Sequence[str],
        types: Sequence,
        rows: Sequence[Sequence],
        assignments: str,
        match: str,
    ) -> None:
        """Many rows changed by key in one statement per chunk, in the caller's transaction:
        ``WITH v(<names>) AS (VALUES <rows>) UPDATE <table> SET <assignments> FROM v WHERE
        <match>`` (UPDATE … FROM: SQLite 3.33+ and PostgreSQL). ``types``: each value's
        SQLAlchemy type (None: from the value), for databases bound through SQLAlchemy;
        ``table``, ``names``, ``assignments`` and ``match`` are the caller's trusted SQL."""
        from sqlalchemy import bindparam, text

        width = len(names)
        chunk = max(1, self.MAX_PARAMETERS // max(1, width))
        for start in range(0, len(rows), chunk):
            params, tuples = [], []
            for n, row in enumerate(rows[start : start + chunk]):
                keys = [f"p{n}_{k}" for k in range(width)]
                params += [
                    bindparam(key, value) if kind is None else bindparam(key, value, type_=kind)
                    for key, value, kind in zip(keys, row, types, strict=True)
                ]
                tuples.append("(" + ", ".join(f":{key}" for key in keys) + ")")
            conn.execute(
                text(
                    f"WITH v({', '.join(names)}) AS (VALUES {', '.join(tuples)}) "
                    f"UPDATE {table} SET {assignments} FROM v WHERE {match}"
                ).bindparams(*params)
            )

    def insert_rows_returning_ids(self, conn: Connection, table, rows: Sequence[dict]) -> list[int]:
        """Insert rows (dicts with the same keys) and return their new ids in the rows' order."""
        from sqlalchemy import insert

        if not rows:
            return []
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(conn.execute(statement, list(rows)).scalars())

    def analyze(self, conn: Connection) -> None:
        """Refresh the planner's statistics."""

    def packed_rows(self, conn: Connection, statement, columns: Sequence[str]) -> list[list]:
        """The rows of ``statement`` (its ``columns``, by label) fetched as one JSON value.

        For a hot path that reads hundreds of small rows while other threads are busy:
        each row fetched is a round trip through the driver that lets go of Python's
        GIL, and getting it back waits for whoever holds it (up to 5 ms a row under
        load). Values come back as JSON gives them: times as text.
        """
        return [list(row) for row in conn.execute(statement).all()]

    def lock_audit_chain(self, conn: Connection) -> None:
        """Serialise appends to the audit hash chain within this transaction."""

    def begin_bulk_writes(self, conn: Connection) -> None:
        """Before a big batch of set-based writes in this transaction (cleanup jobs): optional tuning."""

    def end_bulk_writes(self, conn: Connection) -> None:
        """Undo :meth:`begin_bulk_writes` before the connection goes back to the pool."""

    # --- backups ------------------------------------------------------------
    @abc.abstractmethod
    def backup_to(self, url: str, target: Path) -> None:
        """Write a consistent copy of the live database to ``target``."""

    @abc.abstractmethod
    def verify_backup(self, target: Path) -> str:
        """Check a backup file; returns "ok" or the problem found."""

    @abc.abstractmethod
    def restore_from(self, url: str, source: Path) -> None:
        """Replace the live database's contents with the backup's."""

    def rewrite_with_page_size(self, url: str, page_size: int) -> tuple[int, int]:
        """SQLite only: rewrite the file with another page size."""
        raise RuntimeError(f"{self.name} has no page size to change")

    #: The file name ending of this database's backups.
    backup_suffix: str = ".db"
    #: Whether a restore can be migrated and reconciled in a copy before it
    #: replaces the live database (``staged_copy``); else it is done in place.
    stages_restores: bool = False

    def staged_copy(self, staged: Path):
        """A context manager giving a write engine on a restored copy (where ``stages_restores``)."""
        raise NotImplementedError

    # --- custom fields ----------------------------------------------------------
    # ``customer.custom_fields`` holds {key: canonical value} (services/custom_field_types.py).
    # Keys are checked identifiers ([a-z][a-z0-9_]*, custom_field_key below) and are
    # written into the SQL as literals, never bound: an expression index is used only
    # when the query's expression is the index's expression, literal for literal.
    # ``kind`` is how a value compares in SQL: "text" (strings: text, select option
    # ids, ISO dates and UTC times), "number" (JSON numbers: number, money in cents,
    # percent) or "bool" (yes/no). ``default``: the field's default (canonical), which a
    # customer without the key has (a key holding JSON null is "explicitly empty");
    # it is part of the expression, and so of the field's index.

    @abc.abstractmethod
    def custom_value(
        self, column: ColumnElement, key: str, kind: str, use_index: bool = True, default: object = None
    ) -> ColumnElement:
        """The value of custom field ``key`` in ``column`` (NULL when empty; ``default`` when
        the key is absent), as SQL that compares and sorts as ``kind``. ``use_index=False``:
        the same value in a form no index matches (a page that should walk the sort index
        instead; see services/custom_field_values.range_condition)."""

    @abc.abstractmethod
    def custom_has_any(self, column: ColumnElement, key: str, values: Sequence[str]) -> ColumnElement:
        """A multi-select value (a JSON array of option ids) holds any of ``values``."""

    @abc.abstractmethod
    def custom_has_key(self, column: ColumnElement, key: str) -> ColumnElement:
        """The document has ``key`` (a value, or JSON null: explicitly empty)."""

    @abc.abstractmethod
    def custom_patch(self, column: ColumnElement, sets: dict[str, object], removes: Sequence[str]) -> ColumnElement:
        """``column`` with ``sets`` written (JSON values; None writes JSON null) and ``removes``
        taken out, as one SQL expression: writers patch the stored document rather than
        replace it, so two writers of different keys never undo each other."""

    @abc.abstractmethod
    def custom_field_index_ddl(self, key: str, kind: str, by_last_active: bool, default: object = None) -> list[str]:
        """Statements that make the field's index (custom_field_index_name) on customer:
        (status, value, last_active_at, id) for equality filters walked in the list's
        default order, or (status, value, id) for ranges and sorts by the value."""

    def create_custom_field_index(
        self, engine: Engine, key: str, kind: str, by_last_active: bool, default: object = None
    ) -> str:
        """Make the field's index for its current definition (idempotent), give the planner
        its statistics, then drop the field's other indexes (made for an earlier default:
        until the new one exists, queries still find the one they match). Returns its name."""
        with engine.begin() as conn:
            for statement in self.custom_field_index_ddl(key, kind, by_last_active, default):
                conn.exec_driver_sql(statement)
        name = custom_field_index_name(key, kind, by_last_active, default)
        self.drop_custom_field_index(engine, key, keep=name)
        return name

    def drop_custom_field_index(self, engine: Engine, key: str, keep: str = "") -> None:
        """Drop the field's indexes (all of them, or all but ``keep``)."""
        with engine.connect() as conn:
            names = [n for n in self.custom_field_indexes(conn, valid_only=False) if index_key(n) == key and n != keep]
        for name in names:
            self._drop_index(engine, name)

    def _drop_index(self, engine: Engine, name: str) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")

    @abc.abstractmethod
    def custom_field_indexes(self, conn: Connection, valid_only: bool = True) -> set[str]:
        """The names of the custom fields' indexes that exist (valid ones, unless ``valid_only`` is False)."""

    def padded_number(self, expression: ColumnElement, width: int) -> ColumnElement:
        """A non-negative integer as text, zero-padded to ``width`` digits (ids inside
        generated keys: a webhook event id per customer of a set-based INSERT … SELECT)."""
        return func.lpad(expression.cast(String), width, "0")

    # --- exports --------------------------------------------------------------
    def export_row_sql(self, conn: Connection, row_format: ExportRowFormat) -> str | None:
        """One SQL expression over the customer table that builds a whole export
        row (a CSV line or an XLSX row's cells), so that Python only writes the
        results; None when this database cannot (the caller takes the Python path).
        May register helper functions on ``conn``."""
        return None

    def inline_sql(self, expression: ColumnElement) -> str:
        """``expression`` as SQL text of this database, its parameters written in as literals
        (a column of ``export_row_sql``, which takes SQL text)."""
        from meiqia_app.db import get_engine

        return str(expression.compile(dialect=get_engine().dialect, compile_kwargs={"literal_binds": True}))

    #: Whether ``export_row_sql`` knows the custom fields' column kinds (see ExportColumn).
    export_custom_kinds = False

    def export_rows_supported(self, engine, zone: tzinfo) -> bool:
        """Whether ``export_row_sql`` can build rows here for timestamps shown in ``zone``."""
        return self.builds_export_rows

    def joined_text(self, values: ColumnElement, separator: str, order_by: list) -> ColumnElement:
        """An aggregate joining ``values`` (a column of an ordered subquery) with
        ``separator`` in the order ``order_by`` (expressions over that subquery).
        Only where ``joins_text``; elsewhere the caller fetches the values one by one."""
        raise NotImplementedError

    def export_read_settings(self, conn: Connection) -> contextlib.AbstractContextManager[None]:
        """Connection settings for a long streaming read (bounded memory)."""
        return contextlib.nullcontext()


# --- custom fields --------------------------------------------------------------------------------

CUSTOM_FIELD_KEY = re.compile(r"[a-z][a-z0-9_]{1,39}")
CUSTOM_VALUE_KINDS = ("text", "number", "bool")


def custom_field_key(key: str) -> str:
    """``key`` when it is a valid custom field key (it goes into SQL as a literal), else ValueError."""
    if not isinstance(key, str) or not CUSTOM_FIELD_KEY.fullmatch(key):
        raise ValueError(f"not a custom field key: {key!r}")
    return key


INDEX_PREFIX = "ix_cf_"
_INDEX_NAME = re.compile(r"ix_cf_([a-z][a-z0-9_]{1,39})_([0-9a-f]{8})")


def custom_field_index_name(key: str, kind: str, by_last_active: bool, default: object = None) -> str:
    """``ix_cf_<key>_<8 hex>``: named from the stable key and a digest of what the index
    holds (kind, shape, default), so a changed default gets a new index beside the old one."""
    shape = json.dumps([check_kind(kind), bool(by_last_active), default], sort_keys=True, ensure_ascii=False)
    return f"{INDEX_PREFIX}{custom_field_key(key)}_{hashlib.sha1(shape.encode()).hexdigest()[:8]}"


def index_key(name: str) -> str | None:
    """The key of a custom field index's name, None for any other name."""
    found = _INDEX_NAME.fullmatch(name or "")
    return found.group(1) if found else None


def custom_literal(kind: str, value: object, true: str = "1", false: str = "0") -> str:
    """A canonical default as an SQL literal of ``kind`` (part of an indexed expression, so
    never a bound parameter). Only canonical values reach here (custom_field_types.coerce):
    text without NUL, finite numbers, booleans."""
    check_kind(kind)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"not a yes/no default: {value!r}")
        return true if value else false
    if kind == "number":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != value
            or abs(value) == float("inf")
        ):
            raise ValueError(f"not a number default: {value!r}")
        return repr(value)
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"not a text default: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def check_kind(kind: str) -> str:
    if kind not in CUSTOM_VALUE_KINDS:
        raise ValueError(f"unknown value kind: {kind!r}")
    return kind


# --- exports ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportColumn:
    """One column of a database-formatted export (see ``export_row_sql``).

    ``column`` is the SQL reference of a customer column ("customer.name"), or
    an expression over the customer row (a custom field's value);
    ``kind`` is how it is written: text (neutralised), coded (a code shown as
    its label), int, money (integer cents shown as units with two decimals),
    date, datetime (stored UTC, shown in the local zone) or bool; and, only
    where ``export_custom_kinds``, for custom fields: number (a number as
    stored; XLSX style 5), percent (CSV "12.5%", XLSX the fraction in style 6),
    money_or_empty and bool_or_empty (money and bool, NULL written empty).
    """

    kind: str
    column: str
    labels: tuple[tuple[str, str], ...] = ()  # coded: (code, label)


@dataclasses.dataclass(frozen=True)
class ExportRowFormat:
    """What a database-built export row looks like.

    ``fmt`` "csv": one RFC 4180 line without its terminator, byte for byte
    what ``csv.writer`` writes for the Python-typed row. ``fmt`` "xlsx": the
    cells of one ``<row>`` of SpreadsheetML (inline strings, styles 2/3/4 for
    money/datetime/date). The Python callables give the exact answer for the
    rare values the SQL leaves to Python (timestamps outside the zone's
    fixed-offset years, text needing XML escaping).
    """

    fmt: str
    columns: tuple[ExportColumn, ...]
    zone: tzinfo
    true_text: str
    false_text: str
    local_text: Callable[[str], str]  # stored timestamp -> local "YYYY-MM-DD HH:MM:SS"
    local_cell: Callable[[str], str]  # stored timestamp -> XLSX datetime cell ("" for none)
    xml_text: Callable[[str], str]  # text -> neutralised, XML-escaped cell text
    csv_quote: Callable[[str], str]  # constant text -> its CSV field
    xml_cell: Callable[[str], str]  # constant text -> its XLSX inline-string cell ("" for empty)


def coded_cell_sql(
    column: ExportColumn, lit: Callable[[str], str], label_cell: Callable[[str], str], other: str
) -> str:
    """A coded column's cell: each known code as its label (``label_cell`` formats it
    for the file, ``lit`` quotes it for this database), any other value as ``other``."""
    whens = " ".join(f"WHEN {lit(code)} THEN {lit(label_cell(label))}" for code, label in column.labels)
    return f"CASE {column.column} {whens} ELSE {other} END" if whens else other


def bool_cell_sql(
    column: ExportColumn, lit: Callable[[str], str], cell: Callable[[str], str], row_format: ExportRowFormat
) -> str:
    """A yes/no column's cell: the export's words for true and false, formatted by ``cell``."""
    return (
        f"CASE WHEN {column.column} THEN {lit(cell(row_format.true_text))} ELSE {lit(cell(row_format.false_text))} END"
    )
