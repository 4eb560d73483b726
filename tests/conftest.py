"""Shared test setup: every unit test gets its own SQLite database in a temp dir.

Migrating and seeding happen once per session into template files; each test
gets a copy (a few milliseconds), so tests never see each other's rows.
"""

from __future__ import annotations

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


def _point_app_at(data_dir: Path) -> None:
    from meiqia_app.config import reload_settings
    from meiqia_app.db import reset_engine
    from meiqia_app.services import customer_list

    os.environ["MEIQIA_DATA_DIR"] = str(data_dir)
    reload_settings()
    reset_engine()
    customer_list.invalidate_counts()


def _copy_database(source_dir: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source_dir / "meiqia.db") as source, sqlite3.connect(target_dir / "meiqia.db") as target:
        source.backup(target)
    for name in ("secret.key", "demo_accounts.json"):
        if (source_dir / name).exists():
            shutil.copy2(source_dir / name, target_dir / name)


@pytest.fixture(scope="session")
def _template_dirs(tmp_path_factory):
    from meiqia_app.db import reset_engine
    from meiqia_app.seed.loader import ensure_reference_data, seed

    empty = tmp_path_factory.mktemp("template-empty")
    _point_app_at(empty)
    ensure_reference_data()
    reset_engine()

    seeded = tmp_path_factory.mktemp("template-seeded")
    _point_app_at(seeded)
    import datetime as dt

    seed(TEST_SEED_CUSTOMERS, seed_value=11, as_of=dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc),
         progress=lambda _message: None)
    reset_engine()
    return {"empty": empty, "seeded": seeded}


@pytest.fixture()
def db(_template_dirs, tmp_path):
    """A migrated database with roles, products, tags and the demo accounts; no customers."""
    _copy_database(_template_dirs["empty"], tmp_path / "data")
    _point_app_at(tmp_path / "data")
    yield tmp_path / "data"
    from meiqia_app.db import reset_engine

    reset_engine()


@pytest.fixture()
def seeded_db(_template_dirs, tmp_path):
    """Like ``db`` plus 300 seeded customers with their history."""
    _copy_database(_template_dirs["seeded"], tmp_path / "data")
    _point_app_at(tmp_path / "data")
    yield tmp_path / "data"
    from meiqia_app.db import reset_engine

    reset_engine()


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
    from meiqia_app.services.auth import actor_for

    with read_session() as session:
        rows = session.exec(select(User, Role).join(Role, Role.id == User.role_id)).all()
        return {user.username: actor_for(user, role) for user, role in rows}
