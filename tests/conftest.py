"""Shared test setup: every unit test gets its own database.

Migrating and seeding happen once per session into templates; each test gets
a copy, so tests never see each other's rows. SQLite by default (a file copy,
a few milliseconds); with ``MEIQIA_TEST_PG_URL`` set (``make test-pg``) the
same tests run on PostgreSQL, each on a ``CREATE DATABASE … TEMPLATE`` copy.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

# Fast bcrypt for tests only; production default is 12 (checked in test_auth).
os.environ.setdefault("MEIQIA_BCRYPT_ROUNDS", "4")
os.environ["MEIQIA_SCHEDULER"] = "off"
os.environ.pop("DATABASE_URL", None)

TEST_SEED_CUSTOMERS = 300
# The PostgreSQL server (no database name) when the suite runs on PostgreSQL.
PG_SERVER_URL = os.environ.get("MEIQIA_TEST_PG_URL", "").rstrip("/")
_pg_counter = itertools.count(1)


def _pg_database_url(data_dir: Path) -> str:
    return f"{PG_SERVER_URL}/{data_dir.name.replace('-', '_').lower()}"


def _pg_admin(statement: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"{PG_SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _point_app_at(data_dir: Path) -> None:
    from meiqia_app.config import reload_settings
    from meiqia_app.db import reset_engine
    from meiqia_app.services.customers import change_subscribers
    from meiqia_app.services.customers import listing as customer_list

    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    if PG_SERVER_URL:
        os.environ["DATABASE_URL"] = _pg_database_url(data_dir)
    reload_settings()
    reset_engine()
    customer_list.forget_cached_counts()
    change_subscribers.forget_ingest_retirement()


def _new_template(tmp_path_factory, name: str) -> Path:
    data_dir = (
        tmp_path_factory.mktemp(name, numbered=False)
        if not PG_SERVER_URL
        else tmp_path_factory.mktemp(f"tpl-{name}-{os.getpid()}", numbered=False)
    )
    if PG_SERVER_URL:
        database = _pg_database_url(data_dir).rsplit("/", 1)[1]
        _pg_admin(f"DROP DATABASE IF EXISTS {database}")
        _pg_admin(f"CREATE DATABASE {database}")
    return data_dir


def _copy_database(source_dir: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    if PG_SERVER_URL:
        source = _pg_database_url(source_dir).rsplit("/", 1)[1]
        target = _pg_database_url(target_dir).rsplit("/", 1)[1]
        _pg_admin(f"DROP DATABASE IF EXISTS {target}")
        _pg_admin(f"CREATE DATABASE {target} TEMPLATE {source}")
    else:
        with sqlite3.connect(source_dir / "meiqia.db") as source, sqlite3.connect(target_dir / "meiqia.db") as target:
            source.backup(target)
    for name in ("secret.key", "demo_accounts.json"):
        if (source_dir / name).exists():
            shutil.copy2(source_dir / name, target_dir / name)


DATABASE_FIXTURES = {"db", "seeded_db", "_template_dirs"}


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL (``make test-pg``) only the unit tests that use a database run: the others
    (pure functions, source scans, formats) cannot tell the two databases apart and have
    run on SQLite in ``make test`` already."""
    if not PG_SERVER_URL:
        return
    unit = Path(__file__).parent / "unit"
    kept = [
        item
        for item in items
        if not item.path.is_relative_to(unit) or DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def _nightly_tasks_registered():
    """What the app does at start (services/platform/startup.py): the nightly tasks are registered
    in one place, and every module with job workers is loaded."""
    from meiqia_app.services.platform import scheduled_tasks, startup

    scheduled_tasks.register_all()
    startup.load_workers()


@pytest.fixture(scope="session")
def _template_dirs(tmp_path_factory):
    from meiqia_app.db import reset_engine
    from meiqia_app.seed.loader import ensure_reference_data, seed

    empty = _new_template(tmp_path_factory, "template-empty")
    _point_app_at(empty)
    ensure_reference_data()
    reset_engine()

    seeded = _new_template(tmp_path_factory, "template-seeded")
    _point_app_at(seeded)
    import datetime as dt

    seed(
        TEST_SEED_CUSTOMERS,
        seed_value=11,
        as_of=dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC),
        progress=lambda _message: None,
    )
    reset_engine()
    return {"empty": empty, "seeded": seeded}


def _test_data_dir(tmp_path: Path) -> Path:
    # On PostgreSQL the folder name is the database name: unique per test.
    return tmp_path / (f"data_{os.getpid()}_{next(_pg_counter)}" if PG_SERVER_URL else "data")


def _database_for_test(template: Path, tmp_path: Path):
    from meiqia_app.db import reset_engine

    data_dir = _test_data_dir(tmp_path)
    _copy_database(template, data_dir)
    _point_app_at(data_dir)
    yield data_dir
    reset_engine()
    if PG_SERVER_URL:
        _pg_admin(f"DROP DATABASE IF EXISTS {_pg_database_url(data_dir).rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture()
def db(_template_dirs, tmp_path):
    """A migrated database with roles, products, tags and the demo accounts; no customers."""
    yield from _database_for_test(_template_dirs["empty"], tmp_path)


@pytest.fixture()
def seeded_db(_template_dirs, tmp_path):
    """Like ``db`` plus 300 seeded customers with their history."""
    yield from _database_for_test(_template_dirs["seeded"], tmp_path)


@pytest.fixture()
def actors(db):
    """Actors for the demo accounts, resolved the way a session would resolve them."""
    return load_actors()


@pytest.fixture()
def seeded_actors(seeded_db):
    return load_actors()


def load_actors() -> dict:
    from sqlmodel import select

    from meiqia_app.db import read_session
    from meiqia_app.models import Role, User
    from meiqia_app.services.identity.sessions import actor_for

    with read_session() as session:
        rows = session.exec(select(User, Role).join(Role, Role.id == User.role_id)).all()
        return {user.username: actor_for(user, role) for user, role in rows}


@pytest.fixture()
def senior_scope_all(request):
    """The senior agent with data scope "all" (its built-in default is "team", issue 21).

    For tests that use the senior agent as "a role that sees contact data" on
    the seeded customers (all in the pool): scopes are tested in
    tests/unit/test_data_scope.py. Used with ``pytest.mark.usefixtures``, so it
    runs after the database fixture and before the actors are resolved.
    """
    from sqlalchemy import text

    from meiqia_app.db import get_engine

    for name in ("seeded_db", "db"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
            with get_engine().begin() as conn:
                conn.execute(text("UPDATE role SET data_scope = 'all' WHERE name = 'senior_agent'"))
            return


# Databases that fixtures built once, by builder name: (snapshot folder, what the builder returned).
_built_databases: dict[str, tuple[Path, object]] = {}


def built_once(base: str = "seeded_db"):
    """Turn ``build(actors) -> value`` into a fixture whose database is built once per run.

    The first test that uses the fixture runs ``build`` on its own copy of
    ``base`` (``db`` or ``seeded_db``) and the result is kept as a template;
    every later test gets a fresh copy of that template instead of running the
    builder again (defining fields and saving values through the services
    costs about a second per test). ``build`` must return plain data (ids,
    keys, actors): copies keep every id. The fixture gives what ``build``
    returned.
    """

    if base not in ("db", "seeded_db"):
        raise ValueError(f"built_once builds on db or seeded_db, not {base!r}")

    def decorate(build):
        name = f"{build.__module__}.{build.__name__}"

        def make(data_dir: Path, tmp_path_factory):
            from meiqia_app.db import reset_engine

            if name in _built_databases:
                snapshot, value = _built_databases[name]
                reset_engine()
                _copy_database(snapshot, data_dir)
                _point_app_at(data_dir)
                return value
            value = build(load_actors())
            reset_engine()
            snapshot = _new_template(tmp_path_factory, f"built{len(_built_databases)}-{build.__name__}")
            _copy_database(data_dir, snapshot)
            _point_app_at(data_dir)
            _built_databases[name] = (snapshot, value)
            return value

        # The base is a named parameter (not looked up at run time) so that pytest, and the
        # PostgreSQL run's choice of tests below, see that the fixture uses a database.
        if base == "db":

            def fixture(db, tmp_path_factory):
                return make(db, tmp_path_factory)

        else:

            def fixture(seeded_db, tmp_path_factory):
                return make(seeded_db, tmp_path_factory)

        fixture.__name__ = build.__name__
        fixture.__doc__ = build.__doc__
        return pytest.fixture()(fixture)

    return decorate
