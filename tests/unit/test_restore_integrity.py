"""A restore never rolls back erasures or the audit log (issue item 3).

The attack: back up, erase a customer, export and download, restore the backup.
Before, the customer came back, the audit rows after the backup (the erasure,
the export, the download) were gone, and verify-audit said the log was intact.
"""

from __future__ import annotations

import json

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.cli import main
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.migrate import alembic_config
from meiqia_app.models import AuditEntry, ExportJob
from meiqia_app.services.audit import anchor as audit_anchor
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import notes
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.platform import backup, jobs
from meiqia_app.services.privacy import erasure, erasure_ledger


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _sql(query: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(query), params).all()


def _entries() -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)).all())


def _verify() -> audit.ChainReport:
    with read_session() as session:
        return audit.verify_chain(session)


def _target() -> int:
    return _sql(
        "SELECT id FROM customer WHERE status='active' AND phone IS NOT NULL AND email IS NOT NULL "
        "AND external_id IS NOT NULL AND erased_at IS NULL ORDER BY id LIMIT 1"
    )[0][0]


def _personal(customer_id: int) -> dict:
    row = _sql("SELECT name, phone, email, erased_at FROM customer WHERE id=:i", i=customer_id)[0]
    return {"name": row[0], "phone": row[1], "email": row[2], "erased_at": row[3]}


def _add_export(data_dir, name: str, admin) -> int:
    exports = data_dir / "exports"
    exports.mkdir(exist_ok=True)
    (exports / name).write_text("id,name\n1,someone\n")
    with write_session() as session:
        job = ExportJob(requested_by_id=admin.user_id, requested_by_name=admin.username, status="done", file_name=name)
        session.add(job)
        session.flush()
        audit.record(session, admin, "export.download", target_type="export", target_id=job.id, details={"n": 1})
        return job.id


def test_backup_erase_restore_leaves_the_customer_erased_and_the_audit_log_whole(seeded_actors, seeded_db):
    admin = seeded_actors["admin"]
    target = _target()
    before = _personal(target)
    kept_export = _add_export(seeded_db, "before-backup.csv", admin)
    view = backup.create_backup(admin)

    erasure.erase_customer(admin, target, confirm=str(target))
    _add_export(seeded_db, "after-backup.csv", admin)  # an export the admin would like to hide
    recorded = [(e.id, e.entry_hash, e.action) for e in _entries()]
    assert "erasure.execute" in {a for _, _, a in recorded}

    backup.restore_backup(admin, view.id, confirm=view.file_name)

    # The customer stays erased (re-applied from the ledger, same code path) …
    after = _personal(target)
    assert after["phone"] is None and after["email"] is None and after["erased_at"] is not None
    assert after["name"] == erasure.anonymous_label(target) != before["name"]
    assert _sql("SELECT count(*) FROM note WHERE customer_id=:i", i=target)[0][0] == 0
    # … nothing recorded before the restore is lost, and the restore is recorded on top …
    now = _entries()
    assert [(e.id, e.entry_hash, e.action) for e in now[: len(recorded)]] == recorded
    restore_entry = next(e for e in now[len(recorded) :] if e.action == "backup.restore")
    details = json.loads(restore_entry.details)
    assert details["audit"]["mode"] == "appended" and details["audit"]["carried"] > 0
    assert details["erasures"]["erased_again"] == [target]
    reapplied = [e for e in now[len(recorded) :] if e.action == "erasure.execute"]
    assert reapplied and json.loads(reapplied[0].details)["reapplied"] is True
    # … the chain verifies, MACs, head and anchors included, and the restore is anchored …
    report = _verify()
    assert report.ok and report.checked == len(now) and report.anchors >= 2
    assert audit_anchor.read_anchors()[-1].reason == "restore"
    # … and export files that no restored row refers to are gone (the re-erasure removes the rest).
    exports = seeded_db / "exports"
    assert not (exports / "after-backup.csv").exists()
    assert "after-backup.csv" in details["export_files_without_row"]
    assert _sql("SELECT id FROM export_job WHERE file_name='before-backup.csv'") == [(kept_export,)]
    # The erased values are in no table, not in the ledger either (hashes only).
    ledger = erasure_ledger.ledger_path().read_text()
    for value in (before["phone"], before["email"], before["name"]):
        assert value not in ledger
        assert _sql("SELECT count(*) FROM customer WHERE name=:v OR phone=:v OR email=:v", v=value)[0][0] == 0


def test_restoring_a_backup_that_predates_several_erasures_erases_them_all(seeded_actors):
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    ids = [
        r[0] for r in _sql("SELECT id FROM customer WHERE phone IS NOT NULL AND erased_at IS NULL ORDER BY id LIMIT 3")
    ]
    for customer_id in ids:
        erasure.erase_customer(admin, customer_id, confirm=str(customer_id))
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert all(_personal(i)["erased_at"] is not None and _personal(i)["phone"] is None for i in ids)
    # A second restore of the same backup: the same again, and the log keeps growing.
    count = len(_entries())
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert all(_personal(i)["phone"] is None for i in ids)
    assert len(_entries()) > count and _verify().ok


def test_a_forged_ledger_line_erases_nobody(seeded_actors):
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    victim = _target()
    path = erasure_ledger.ledger_path()
    line = {"at": "2030-01-01T00:00:00+00:00", "customer_id": victim, "hashes": {}, "redacted": [], "mac": "0" * 64}
    with path.open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _personal(victim)["erased_at"] is None
    entry = [e for e in _entries() if e.action == "backup.restore"][-1]
    assert json.loads(entry.details)["erasures"]["invalid_lines"] == 1 and entry.flagged


def test_cli_restore_also_keeps_erasures_and_the_log(seeded_actors, capsys):
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    target = _target()
    erasure.erase_customer(admin, target, confirm=str(target))
    notes_before = len(_entries())
    assert main(["restore", str(backup.path_of(view.file_name)), "--yes"]) == 0
    assert _personal(target)["phone"] is None
    assert len(_entries()) > notes_before
    assert main(["verify-audit"]) == 0
    assert "audit log intact" in capsys.readouterr().out


def test_a_restore_still_needs_the_permission(seeded_actors):
    view = backup.create_backup(seeded_actors["admin"])
    with pytest.raises(PermissionDenied):
        backup.restore_backup(seeded_actors["manager"], view.id, confirm=view.file_name)


def test_a_backup_of_another_chain_gets_the_live_log(seeded_actors, seeded_db):
    """A restored log that is not a prefix of the live one is replaced by the live one (nothing lost)."""
    import sqlite3

    if get_engine().dialect.name != "sqlite":
        pytest.skip("edits the SQLite backup file")
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    path = backup.path_of(view.file_name)
    conn = sqlite3.connect(path)  # another history: its first entry differs
    try:
        conn.execute("UPDATE audit_entry SET entry_hash = 'x' || substr(entry_hash, 2) WHERE id = 1")
        conn.commit()
    finally:
        conn.close()
    notes.add_note(admin, _target(), "after the backup")
    recorded = [(e.id, e.entry_hash) for e in _entries()]
    backup.restore_file(admin, path)  # the CLI way: no recorded checksum to compare
    assert [(e.id, e.entry_hash) for e in _entries()][: len(recorded)] == recorded
    entry = [e for e in _entries() if e.action == "backup.restore"][-1]
    assert json.loads(entry.details)["audit"]["mode"] == "replaced" and entry.flagged
    assert _verify().ok


def test_a_backup_from_before_the_mac_upgrade_is_migrated_and_continued(seeded_actors):
    """A backup of the schema before the MACs (no MAC column, no upgrade point) is migrated in the staged copy."""
    import sqlite3

    if get_engine().dialect.name != "sqlite":
        pytest.skip("edits the SQLite backup file")
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    path = backup.path_of(view.file_name)
    # The backup as the schema before the MACs had it: the migrations since stepped back.
    from alembic import command

    from meiqia_app.db import make_engine

    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008_ip_throttle_job_owner")
    finally:
        engine.dispose()
    with sqlite3.connect(path) as conn:
        assert "entry_mac" not in {row[1] for row in conn.execute("PRAGMA table_info(audit_entry)")}
        conn.execute("PRAGMA journal_mode=DELETE")  # one file again, as a backup is
    target = _target()
    erasure.erase_customer(admin, target, confirm=str(target))
    recorded = [(e.id, e.entry_hash, e.entry_mac) for e in _entries()]
    backup.restore_file(admin, path)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _sql("SELECT version_num FROM alembic_version")[0][0] == head
    assert [(e.id, e.entry_hash, e.entry_mac) for e in _entries()][: len(recorded)] == recorded
    assert _personal(target)["phone"] is None
    assert _verify().ok


def test_a_restore_that_cannot_re_apply_erasures_changes_nothing(seeded_actors, monkeypatch):
    """SQLite: the live file is never touched; PostgreSQL: the safety backup goes back, log carried."""
    admin = seeded_actors["admin"]
    view = backup.create_backup(admin)
    target = _target()
    erasure.erase_customer(admin, target, confirm=str(target))
    recorded = [(e.id, e.entry_hash) for e in _entries()]

    def broken(*_args, **_kwargs):
        raise OSError("ledger unreadable")

    monkeypatch.setattr(erasure, "reapply_ledger", broken)
    with pytest.raises(backup.BackupFailed):
        backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _personal(target)["phone"] is None
    now = _entries()
    assert [(e.id, e.entry_hash) for e in now][: len(recorded)] == recorded
    assert now[-1].action == "backup.restore" and now[-1].result == "failed" and now[-1].flagged
    assert _verify().ok


def test_an_edited_phone_does_not_hide_the_customer_from_the_ledger(seeded_actors):
    """The id and creation time decide: the backup has the old phone, the ledger the new one's hash."""
    admin = seeded_actors["admin"]
    target = _target()
    view = backup.create_backup(admin)
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE customer SET phone='13700000001', email=NULL, external_id=NULL WHERE id=:i"), {"i": target}
        )
    erasure.erase_customer(admin, target, confirm=str(target))
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _personal(target)["phone"] is None and _personal(target)["erased_at"] is not None


def test_an_id_holding_another_customer_is_not_erased_but_the_person_is_found(seeded_actors):
    """A backup where the erased id belongs to someone else (another database, a reused id)."""
    import sqlite3

    if get_engine().dialect.name != "sqlite":
        pytest.skip("edits the SQLite backup file")
    admin = seeded_actors["admin"]
    target = _target()
    phone = _personal(target)["phone"]
    view = backup.create_backup(admin)
    path = backup.path_of(view.file_name)
    moved = _sql("SELECT max(id) + 1000 FROM customer")[0][0]
    conn = sqlite3.connect(path)
    try:  # in the backup: the person has another id, and their id holds someone created later
        conn.execute("PRAGMA foreign_keys=OFF")
        columns = [r[1] for r in conn.execute("PRAGMA table_info(customer)")]
        listed = ", ".join(columns)
        picked = ", ".join(":moved" if c == "id" else c for c in columns)
        conn.execute(
            f"INSERT INTO customer ({listed}) SELECT {picked} FROM customer WHERE id = :t",
            {"moved": moved, "t": target},
        )
        conn.execute(
            "UPDATE customer SET name='另一位客户', phone='13600000002', email=NULL, external_id=NULL, "
            "created_at='2031-01-01 00:00:00.000000' WHERE id = :t",
            {"t": target},
        )
        conn.commit()
    finally:
        conn.close()
    erasure.erase_customer(admin, target, confirm=str(target))
    backup.restore_file(admin, path)
    other = _personal(target)
    assert other["erased_at"] is None and other["name"] == "另一位客户"
    assert _personal(moved)["phone"] is None and _personal(moved)["erased_at"] is not None
    entry = [e for e in _entries() if e.action == "backup.restore"][-1]
    erasures = json.loads(entry.details)["erasures"]
    assert erasures["other_customer"] == [target] and erasures["by_identifier"] == [moved]
    assert phone not in entry.details
