"""The adapter interface."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, and_, exists

from meiqia_app.models import CustomerSearch


def escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DatabaseAdapter(abc.ABC):
    name: str

    # --- search -------------------------------------------------------------
    @abc.abstractmethod
    def search_ddl(self) -> list[str]:
        """Statements that create the substring index over customer_search.text."""

    @abc.abstractmethod
    def search_ddl_drop(self) -> list[str]:
        """Statements that remove it (migration downgrade)."""

    @abc.abstractmethod
    def matching_ids(self, conn: Connection, terms: Sequence[str], limit: int) -> list[int]:
        """Ids of customers whose search text contains every term, at most ``limit``."""

    @abc.abstractmethod
    def count_matches(self, conn: Connection, terms: Sequence[str]) -> int:
        """How many customers' search text contains every term (any status)."""

    @abc.abstractmethod
    def indexed_match_condition(self, customer_id_column: ColumnElement, terms: Sequence[str]) -> ColumnElement:
        """A WHERE condition answered from the search index: ``id IN (matching ids)``.

        Best when the whole matching set is needed (exact counts).
        """

    def row_match_condition(self, customer_id_column: ColumnElement, terms: Sequence[str]) -> ColumnElement:
        """A WHERE condition checked row by row against the customer's search text.

        Best when walking another index and stopping early (a page of a
        common term): each probe is one primary-key lookup and a LIKE.
        """
        text_column = CustomerSearch.__table__.c.text
        likes = [text_column.like("%" + escape_like(term) + "%", escape="\\") for term in terms]
        return exists().where(CustomerSearch.__table__.c.customer_id == customer_id_column, and_(*likes))

    def suspend_search_index(self, conn: Connection) -> None:
        """Before a bulk load: stop per-row index maintenance (optional)."""

    def rebuild_search_index(self, conn: Connection) -> None:
        """After a bulk load: rebuild the index in one pass (optional)."""

    # --- bulk work ----------------------------------------------------------
    @abc.abstractmethod
    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """Insert many rows fast (used by the seeder and imports)."""

    def analyze(self, conn: Connection) -> None:
        """Refresh the planner's statistics."""

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

    @property
    def backup_suffix(self) -> str:
        return ".db"
