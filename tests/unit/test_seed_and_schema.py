"""Seed determinism, migrations matching the models, and the SQLite connection setup."""

from __future__ import annotations

import ast
import datetime as dt
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, text
from sqlmodel import SQLModel

import meiqia_app.models  # noqa: F401  (registers every table on SQLModel.metadata)
from meiqia_app.db import get_engine, reset_engine
from meiqia_app.migrate import alembic_config
from meiqia_app.seed.loader import seed
from tests.conftest import PG_SERVER_URL, TEST_SEED_CUSTOMERS, _point_app_at

# These read the SQLite files directly (seed determinism, pragmas, the FTS5 table).
sqlite_only = pytest.mark.skipif(bool(PG_SERVER_URL), reason="checks SQLite files and pragmas")

AS_OF = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
SEED_N = 200


def _env_py_table_prefixes() -> tuple[str, ...]:
    """ADAPTER_TABLE_PREFIXES from migrations/env.py (which cannot be imported outside alembic)."""
    from meiqia_app.config import PROJECT_ROOT

    tree = ast.parse((PROJECT_ROOT / "meiqia_app" / "migrations" / "env.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ADAPTER_TABLE_PREFIXES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("env.py no longer defines ADAPTER_TABLE_PREFIXES")


# What env.py's include_object skips: the FTS5 tables the adapter creates by hand.
ADAPTER_TABLE_PREFIXES = _env_py_table_prefixes()


ADAPTER_INDEX_NAMES = ("ix_customer_search_text_trgm", "ix_customer_search_contact_trgm")
ADAPTER_INDEX_PREFIXES = ("ix_cf_",)  # custom fields' indexes, made at run time


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "index" and name and (name in ADAPTER_INDEX_NAMES or name.startswith(ADAPTER_INDEX_PREFIXES)):
        return False
    return not (type_ == "table" and name and name.startswith(ADAPTER_TABLE_PREFIXES))


def test_only_the_fts_tables_are_skipped():
    assert ADAPTER_TABLE_PREFIXES == ("customer_fts",)


# --- seeding ----------------------------------------------------------------------------------


def dump(db_file, table: str, order: str) -> list[tuple]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def seed_into(directory, seed_value: int) -> None:
    _point_app_at(directory)
    try:
        report = seed(SEED_N, seed_value=seed_value, as_of=AS_OF, chunk_size=64, progress=lambda _m: None)
        assert report.customers == SEED_N
    finally:
        reset_engine()


@pytest.fixture(scope="module")
def seeded_twice(tmp_path_factory):
    first, second, other = (tmp_path_factory.mktemp(name) for name in ("seed-a", "seed-b", "seed-other"))
    seed_into(first, 7)
    seed_into(second, 7)
    seed_into(other, 8)
    return first / "meiqia.db", second / "meiqia.db", other / "meiqia.db"


@pytest.mark.parametrize(
    ("table", "order"),
    [
        ("customer", "id"),
        ("customer_search", "customer_id"),
        ("customer_order", "id"),
        ("conversation", "id"),
        ("message", "conversation_id, sent_at, id"),
        ("tag_assignment", "customer_id, tag_id"),
    ],
)
@sqlite_only
def test_same_seed_and_as_of_give_identical_rows(seeded_twice, table, order):
    first, second, _other = seeded_twice
    rows_a, rows_b = dump(first, table, order), dump(second, table, order)
    assert rows_a, f"the seed wrote no {table} rows"
    assert rows_a == rows_b


@sqlite_only
def test_a_different_seed_gives_different_customers(seeded_twice):
    first, _second, other = seeded_twice
    assert dump(first, "customer", "id") != dump(other, "customer", "id")


@sqlite_only
def test_seed_writes_the_requested_number_of_customers_with_search_rows(seeded_twice):
    first, _second, _other = seeded_twice
    with sqlite3.connect(first) as conn:
        assert conn.execute("SELECT count(*) FROM customer").fetchone()[0] == SEED_N
        assert conn.execute("SELECT count(*) FROM customer_search").fetchone()[0] == SEED_N
        # The FTS index was filled by the triggers: a name is findable through it.
        name = conn.execute("SELECT name FROM customer WHERE length(name) >= 3 LIMIT 1").fetchone()[0]
        assert (
            conn.execute("SELECT count(*) FROM customer_fts WHERE customer_fts MATCH ?", (f'"{name}"',)).fetchone()[0]
            >= 1
        )
        # Generated activity is never later than the as-of time.
        latest = conn.execute("SELECT max(last_active_at) FROM customer").fetchone()[0]
        assert latest <= AS_OF.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_seeding_a_database_that_has_customers_is_refused(seeded_db):
    with pytest.raises(RuntimeError):
        seed(10, seed_value=1, as_of=AS_OF, progress=lambda _m: None)
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customer")).scalar_one() == TEST_SEED_CUSTOMERS


# --- schema ----------------------------------------------------------------------------------


def schema_diff(metadata) -> list:
    with get_engine().connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        return compare_metadata(context, metadata)


def test_migrations_match_the_models(db):
    assert schema_diff(SQLModel.metadata) == []


def test_database_is_at_the_newest_migration(db):
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, "migrations have branched"
    with get_engine().connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)


def test_schema_comparison_notices_a_model_change(db):
    """The check above can fail: a column that exists only in the models is reported."""
    changed = MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["customer"].append_column(Column("loyalty_points", Integer, nullable=True))
    diff = schema_diff(changed)
    assert any(d[0] == "add_column" and d[3].name == "loyalty_points" for d in diff), diff


# --- SQLite connection --------------------------------------------------------------------------


@sqlite_only
def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(db):
    with get_engine().connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() > 0


def test_foreign_keys_are_enforced(db):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with get_engine().begin() as conn:
            conn.execute(text("INSERT INTO customer_search (customer_id, text) VALUES (999999, 'x')"))


def test_no_index_is_a_prefix_of_another_on_the_same_table():
    """A non-unique index whose columns begin another index's only costs writes
    (every range, order and equality on those columns is served by the longer
    one): at 1M customers three such indexes were 171 MB and 6 % of the pages a
    100,000-customer purge wrote (migration 0005 dropped them)."""
    redundant = []
    for table in SQLModel.metadata.sorted_tables:
        indexes = [
            (index.name, [column.name for column in index.columns]) for index in table.indexes if not index.unique
        ]
        for name, columns in indexes:
            for other, other_columns in indexes:
                if other != name and len(other_columns) > len(columns) and other_columns[: len(columns)] == columns:
                    redundant.append(f"{table.name}.{name} {columns} is a prefix of {other} {other_columns}")
    assert redundant == []
