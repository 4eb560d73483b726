"""The one place where SQLite and PostgreSQL differ.

Everything dialect-specific (full-text search, bulk loading, backups, locking
the audit chain) is a method of an adapter; callers ask ``get_adapter()`` and
never branch on the dialect themselves.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from meiqia_app.dbadapter.base import DatabaseAdapter


def adapter_for(dialect_name: str) -> DatabaseAdapter:
    if dialect_name == "sqlite":
        from meiqia_app.dbadapter.sqlite import SqliteAdapter

        return SqliteAdapter()
    if dialect_name == "postgresql":
        from meiqia_app.dbadapter.postgresql import PostgresAdapter

        return PostgresAdapter()
    raise ValueError(f"unsupported database dialect: {dialect_name}")


def adapter_for_url(url: str) -> DatabaseAdapter:
    """The adapter of a database URL (before any engine exists)."""
    return adapter_for(make_url(url).get_backend_name())


def get_adapter(bind: Engine | Connection | None = None) -> DatabaseAdapter:
    if bind is None:
        from meiqia_app.db import get_engine

        bind = get_engine()
    return adapter_for(bind.dialect.name)


__all__ = ["DatabaseAdapter", "adapter_for", "adapter_for_url", "get_adapter"]
