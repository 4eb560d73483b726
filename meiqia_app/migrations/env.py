"""Alembic environment: the schema is SQLModel.metadata, the URL comes from config."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import meiqia_app.models  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata

# Tables the adapter creates by hand (FTS5 and its shadow tables) are not in
# the metadata; autogenerate must not propose dropping them.
ADAPTER_TABLE_PREFIXES = ("customer_fts",)
# The search index the PostgreSQL adapter creates by hand (pg_trgm GIN).
ADAPTER_INDEX_NAMES = ("ix_customer_search_text_trgm", "ix_customer_search_contact_trgm")
# The expression indexes the app makes for custom fields at run time (ix_cf_<key>).
ADAPTER_INDEX_PREFIXES = ("ix_cf_",)


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table" and name and name.startswith(ADAPTER_TABLE_PREFIXES):
        return False
    if type_ == "index" and name and (name in ADAPTER_INDEX_NAMES or name.startswith(ADAPTER_INDEX_PREFIXES)):
        return False
    return True


def run_migrations_offline() -> None:
    from meiqia_app.config import get_settings

    context.configure(
        url=get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from meiqia_app.db import get_engine

        with get_engine().connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
