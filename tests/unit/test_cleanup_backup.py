"""Backups: verified copies, restore with a safety backup, corrupt files refused, retention."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from meiqia_app.cli import main
from meiqia_app.config import get_settings
from meiqia_app.db import read_session, reset_engine, write_session
from meiqia_app.dbadapter.sqlite import SQLITE_PAGE_SIZE
from meiqia_app.models import AuditEntry, Backup, Customer
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.platform import backup


def _customer_count() -> int:
    with read_session() as session:
        return session.exec(select(func.count()).select_from(Customer)).one()


def test_backup_is_checked_recorded_and_audited(seeded_actors):
    view = backup.create_backup(seeded_actors["admin"])
    assert view.integrity == "ok" and view.ok and view.size_bytes > 0 and len(view.sha256) == 64
    path = backup.path_of(view.file_name)
    assert path.is_file() and backup.sha256_of(path) == view.sha256
    with read_session() as session:
        assert session.exec(select(Backup).where(Backup.file_name == view.file_name)).first() is not None
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "backup.create")).first() is not None


def test_backup_then_restore_gives_back_the_data(seeded_actors):
    admin = seeded_actors["admin"]
    before = _customer_count()
    view = backup.create_backup(admin)
    with write_session() as session:
        session.exec(select(Customer)).first()
        session.connection().exec_driver_sql("DELETE FROM customer WHERE id IN (SELECT id FROM customer LIMIT 50)")
    assert _customer_count() == before - 50
    with pytest.raises(ValidationError):
        backup.restore_backup(admin, view.id, confirm="wrong")
    safety = backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _customer_count() == before
    names = {b.file_name for b in backup.list_backups(admin)}
    assert {view.file_name, safety.file_name} <= names
    with read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "backup.restore")).first()
        assert entry is not None and safety.file_name in entry.details
    # The safety backup holds the state before the restore.
    backup.restore_backup(admin, safety.id, confirm=safety.file_name)
    assert _customer_count() == before - 50


def test_corrupt_backup_is_refused(seeded_actors, tmp_path):
    admin = seeded_actors["admin"]
    before = _customer_count()
    view = backup.create_backup(admin)
    path = backup.path_of(view.file_name)
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # smash a page
    path.write_bytes(bytes(data))
    with pytest.raises(backup.BackupCorrupt):
        backup.restore_backup(admin, view.id, confirm=view.file_name)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(backup.BackupCorrupt):
        backup.restore_file(admin, junk)
    assert _customer_count() == before
    with read_session() as session:
        refused = session.exec(
            select(AuditEntry).where(AuditEntry.action == "backup.restore", AuditEntry.result == "refused")
        ).all()
        assert len(refused) == 2


def test_retention_keeps_the_newest(seeded_actors):
    admin = seeded_actors["admin"]
    made = [backup.create_backup(admin).file_name for _ in range(4)]
    removed = backup.apply_retention(admin, keep=2)
    assert set(removed) == set(made[:2])
    left = [b.file_name for b in backup.list_backups(admin)]
    assert left == list(reversed(made[2:]))
    assert not backup.path_of(made[0]).exists()


def test_backup_needs_the_permission(seeded_actors):
    with pytest.raises(PermissionDenied):
        backup.create_backup(seeded_actors["manager"])
    with pytest.raises(PermissionDenied):
        backup.list_backups(seeded_actors["analyst"])


def test_unsafe_file_names_are_refused(db):
    with pytest.raises(ValidationError):
        backup.path_of("../meiqia.db")


def _sqlite_file() -> Path:
    url = get_settings().database_url
    if not url.startswith("sqlite"):
        pytest.skip("page sizes are SQLite's")
    return Path(url.split("sqlite:///", 1)[1])


def _page_size(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0]


def test_a_new_sqlite_database_gets_16_kib_pages(seeded_actors):
    assert _page_size(_sqlite_file()) == SQLITE_PAGE_SIZE == 16_384


def test_compact_rewrites_the_page_size_and_a_backup_of_the_other_size_still_restores(seeded_actors):
    admin = seeded_actors["admin"]
    path = _sqlite_file()
    before = _customer_count()
    view = backup.create_backup(admin)  # 16 KiB pages, like the live file
    reset_engine()  # the rewrite needs the file to itself
    assert main(["compact", "--page-size", "4096"]) == 0  # e.g. a database created before 16 KiB
    assert _page_size(path) == 4096 and _customer_count() == before
    with write_session() as session:
        session.connection().exec_driver_sql("DELETE FROM customer WHERE id IN (SELECT id FROM customer LIMIT 50)")
    assert _customer_count() == before - 50
    # The backup API cannot copy 16 KiB pages into a 4 KiB WAL file: the restore converts a copy.
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _customer_count() == before and _page_size(path) == 4096
    assert not list(backup.path_of(view.file_name).parent.glob(".*.tmp*"))
    reset_engine()
    assert main(["compact"]) == 0 and _page_size(path) == SQLITE_PAGE_SIZE and _customer_count() == before
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_compact_refuses_while_the_database_is_in_use(seeded_actors, capsys):
    path = _sqlite_file()
    reset_engine()
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM customer").fetchone()
        assert main(["compact", "--page-size", "4096"]) == 1
    assert "nothing changed" in capsys.readouterr().err
    assert _page_size(path) == SQLITE_PAGE_SIZE
