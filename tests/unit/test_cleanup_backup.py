"""Backups: verified copies, restore with a safety backup, corrupt files refused, retention."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import AuditEntry, Backup, Customer
from meiqia_app.services import backup
from meiqia_app.services.errors import PermissionDenied, ValidationError


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
        refused = session.exec(select(AuditEntry).where(AuditEntry.action == "backup.restore",
                                                        AuditEntry.result == "refused")).all()
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
