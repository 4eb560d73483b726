"""Bring the database schema to the newest migration."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from meiqia_app.config import PROJECT_ROOT, get_settings


def alembic_config() -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "meiqia_app" / "migrations"))
    return cfg


def upgrade_to_head(engine=None) -> None:
    """Migrate the app's database, or ``engine``'s (a restored copy before it goes live)."""
    upgrade_to("head", engine)


def upgrade_to(revision: str, engine=None) -> None:
    """Upgrade to ``revision`` (tests of one data migration stop right after it)."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from meiqia_app.db import get_engine

    with (engine or get_engine()).begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
