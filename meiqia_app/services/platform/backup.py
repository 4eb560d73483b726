"""Verified backups and restore (CLEAN backups, OPS-3).

A backup is a consistent copy of the live database in ``settings.backups_dir``
with its size, SHA-256 and an integrity check, recorded as a ``backup`` row:

- SQLite: the online backup API (``sqlite3.Connection.backup``), which copies
  pages in steps so writers are only paused briefly; checked with
  ``PRAGMA integrity_check`` on the copy.
- PostgreSQL (``DATABASE_URL`` points there): ``pg_dump --format=custom``;
  checked by ``pg_restore --list`` reading the whole archive's table of contents.

How each database is copied, checked and restored lives in its adapter (dbadapter/).

Restore refuses a file whose check fails (or whose SHA-256 differs from the
one recorded when it was made), takes a safety backup of the current state
first, disposes the connection pool, copies the backup over the live
database and opens the pool again.

The database returns to the backup's state — logins (sessions), jobs,
customers — with three exceptions that a restore must never roll back, all
done inside the restore operation, before the app serves the restored data:

- the audit log continues: every entry recorded before the restore is carried
  over (services/audit/carry.py) and the restore is recorded on top of it;
  the chain head is then anchored outside the database (services/audit/anchor.py);
- erasures stay done: the erasure ledger (services/privacy/erasure_ledger.py, outside
  the database) is re-applied through the erasure code path, and export files
  that could hold a re-erased customer are deleted;
- export files that no export row of the restored database refers to are
  deleted (the restored history does not know them, nothing would expire them);
- and the ``backup`` rows of files still on disk are carried over.

SQLite: all of that happens in the staged private copy (migrated to the
current schema first) before it is copied over the live database, so the
live database never holds the restored data without it, and a failure leaves
the live database as it was. PostgreSQL: pg_restore replaces the live
database, then the same steps run at once in one transaction (if they fail,
the safety backup is restored); other app workers could read the restored
data for those seconds, which is one more reason to restore there with the
app stopped (CLI).

Single-process caveat: the pool is disposed in *this* process only. With
several app workers (Redis state manager, several Granian processes) the
other workers keep their connections; SQLite notices the changed file and
re-reads it, but a transaction in flight in another process during the
restore may fail or be overwritten. Restore with one worker running, or from
the CLI with the app stopped (``python -m meiqia_app restore FILE``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, reset_engine, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Backup, ExportJob
from meiqia_app.services.audit import anchor as audit_anchor
from meiqia_app.services.audit import carry as audit_carry
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import AppError, NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import downloads
from meiqia_app.services.platform.text_formats import file_size_text
from meiqia_app.timeutil import as_utc, format_local, utcnow

KINDS = ("manual", "scheduled", "pre_purge", "pre_restore")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_CHUNK = 1024 * 1024


class BackupFailed(AppError):
    message_key = "backup.failed"


class BackupCorrupt(AppError):
    message_key = "backup.corrupt"


@dataclasses.dataclass(frozen=True)
class BackupView:
    """What the backups page shows (a DTO)."""

    id: int
    file_name: str
    kind: str
    size_bytes: int
    size_text: str
    sha256: str
    integrity: str
    ok: bool
    created_at: str
    created_by_name: str
    note: str
    on_disk: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- the database's own tools (dbadapter/) ------------------------------------------


def _suffix() -> str:
    return get_adapter().backup_suffix


def _dump(target: Path) -> None:
    get_adapter().backup_to(get_settings().database_url, target)


def verify_file(path: Path) -> str:
    """ "ok" or what is wrong with a backup file (never raises for a bad file)."""
    if not path.is_file():
        return "missing"
    return get_adapter().verify_backup(path)


def _restore_file(path: Path) -> None:
    # SQLite's adapter also converts a backup of another page size.
    get_adapter().restore_from(get_settings().database_url, path)


# --- helpers ----------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def backups_dir() -> Path:
    path = get_settings().backups_dir
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:
        pass
    return path


def path_of(file_name: str) -> Path:
    """The file of a recorded backup; names are checked so no path leaves the directory."""
    if not _SAFE_NAME.match(file_name or "") or file_name.startswith("."):
        raise ValidationError.single("file_name", "error.bad_choice")
    return backups_dir() / file_name


def _view(row: Backup) -> BackupView:
    on_disk = (get_settings().backups_dir / row.file_name).is_file()
    return BackupView(
        id=row.id,
        file_name=row.file_name,
        kind=row.kind,
        size_bytes=row.size_bytes,
        size_text=file_size_text(row.size_bytes),
        sha256=row.sha256,
        integrity=row.integrity,
        ok=row.integrity == "ok",
        created_at=format_local(row.created_at),
        created_by_name=row.created_by_name,
        note=row.note,
        on_disk=on_disk,
    )


# --- services -----------------------------------------------------------------------------


def create_backup(actor: Actor, kind: str = "manual", note: str = "") -> BackupView:
    """Copy the live database, check the copy, record it, apply the retention."""
    require(actor, "backup.manage", action="backup.create", target_type="backup")
    if kind not in KINDS:
        raise ValidationError.single("kind", "error.bad_choice")
    note = (note or "").strip()[:255]
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    name = f"meiqia-{stamp}-{kind}-{secrets.token_hex(3)}{_suffix()}"
    target = backups_dir() / name
    partial = target.with_name("." + name + ".part")
    started = utcnow()
    try:
        _dump(partial)
        # On disk before anything relies on it (a purge deletes right after):
        # the copy's data, then its name in the directory.
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    except (sqlite3.Error, subprocess.SubprocessError, OSError) as exc:
        partial.unlink(missing_ok=True)
        audit.record_now(
            actor,
            "backup.create",
            result="failed",
            target_type="backup",
            details={"kind": kind, "error": str(exc)[:200]},
            flagged=True,
        )
        raise BackupFailed(reason=str(exc)[:200]) from exc
    target.chmod(0o600)
    integrity = verify_file(target)
    size = target.stat().st_size
    digest = sha256_of(target)
    seconds = max((utcnow() - started).total_seconds(), 1e-6)
    with write_session() as session:
        row = Backup(
            file_name=name,
            kind=kind,
            size_bytes=size,
            sha256=digest,
            integrity=integrity,
            created_by_name=actor.username,
            note=note,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor,
            "backup.create",
            target_type="backup",
            target_id=row.id,
            details={
                "file": name,
                "kind": kind,
                "size": size,
                "sha256": digest,
                "integrity": integrity,
                "seconds": round(seconds, 2),
                "note": note,
            },
            flagged=integrity != "ok",
        )
        view = _view(row)
    apply_retention(actor)
    audit_anchor.write_anchor("backup", actor)
    return view


def retention_candidates(keep: int, older_than: dt.datetime | None = None) -> list[tuple[int, str, int]]:
    """(id, file name, bytes) of the backups retention would delete: beyond the newest ``keep``
    and, with ``older_than``, made before it (newest first)."""
    with read_session() as session:
        rows = session.exec(select(Backup).order_by(Backup.created_at.desc(), Backup.id.desc())).all()
        return [
            (row.id, row.file_name, row.size_bytes)
            for row in rows[max(0, keep) :]
            if older_than is None or as_utc(row.created_at) < older_than
        ]


def delete_backups(
    candidates: list[tuple[int, str, int]], actor: Actor | None = None, details: dict | None = None
) -> list[str]:
    """Delete these backups' files and rows; returns the file names.

    With ``actor`` a ``backup.retention`` entry (``details`` + the names) is written in the same
    transaction; without, the caller audits (the retention policy's run entry).
    """
    removed = []
    with write_session() as session:
        for backup_id, name, _size in candidates:
            row = session.get(Backup, backup_id)
            if row is not None:
                session.delete(row)
            try:
                (get_settings().backups_dir / name).unlink(missing_ok=True)
            except OSError:
                pass
            removed.append(name)
        if actor is not None:
            audit.record(
                session,
                actor,
                "backup.retention",
                target_type="backup",
                details={**(details or {}), "removed": removed},
            )
    return removed


def apply_retention(actor: Actor = SYSTEM_ACTOR, keep: int | None = None, older_than_days: int = 0) -> list[str]:
    """Delete old backups: beyond the newest ``keep`` and older than ``older_than_days``.

    Without ``keep`` the backup retention policy decides (/admin/retention:
    older than N days, keeping at least the newest K; nothing when it is off).
    Runs after every backup, so pre-purge backups do not pile up between nights.
    """
    if keep is None:
        from meiqia_app.services.cleanup import retention

        policy = retention.current("backups")
        if not policy.enabled:
            return []
        keep, older_than_days = policy.keep or 1, policy.value
    if keep <= 0:
        return []
    cutoff = utcnow() - dt.timedelta(days=older_than_days) if older_than_days else None
    old = retention_candidates(keep, cutoff)
    if not old:
        return []
    return delete_backups(old, actor, {"keep": keep, "older_than_days": older_than_days})


def list_backups(actor: Actor) -> list[BackupView]:
    require(actor, "backup.manage", action="backup.list", target_type="backup")
    with read_session() as session:
        rows = session.exec(select(Backup).order_by(Backup.created_at.desc(), Backup.id.desc())).all()
        return [_view(row) for row in rows]


def get_backup(actor: Actor, backup_id: int) -> BackupView:
    require(actor, "backup.manage", action="backup.view", target_type="backup", target_id=backup_id)
    with read_session() as session:
        row = session.get(Backup, int(backup_id))
        if row is None:
            raise NotFound()
        return _view(row)


def restore_backup(actor: Actor, backup_id: int, confirm: str) -> BackupView:
    """Restore a recorded backup; ``confirm`` must be its file name (typed by the person)."""
    require(actor, "backup.manage", action="backup.restore", target_type="backup", target_id=backup_id)
    with read_session() as session:
        row = session.get(Backup, int(backup_id))
        if row is None:
            raise NotFound()
        name, recorded_sha = row.file_name, row.sha256
    if (confirm or "").strip() != name:
        raise ValidationError.single("confirm", "backup.confirm_mismatch")
    return restore_file(actor, path_of(name), expected_sha256=recorded_sha)


def restore_file(actor: Actor, path: Path, expected_sha256: str = "") -> BackupView:
    """Check ``path``, take a safety backup, replace the live database with it.

    Returns the safety backup (so the person can go back). See the module
    docstring for what a restore keeps and for the single-process caveat.
    """
    require(actor, "backup.manage", action="backup.restore", target_type="backup")
    path = Path(path)
    # Work on a private copy: retention (run by the safety backup below) may
    # delete an old file under the backups dir, and the check must see the
    # very bytes that get restored.
    token = secrets.token_hex(4)
    staged = backups_dir() / f".restore-{token}{_suffix()}"
    problem = "missing"
    if path.is_file():
        shutil.copyfile(path, staged)
        problem = verify_file(staged)
    digest = sha256_of(staged) if staged.is_file() else ""
    if problem == "ok" and expected_sha256 and digest != expected_sha256:
        problem = "sha256 differs from the recorded one"
    if problem != "ok":
        _remove_staged(staged)
        audit.record_now(
            actor,
            "backup.restore",
            result="refused",
            target_type="backup",
            details={"file": path.name, "problem": problem},
            flagged=True,
        )
        raise BackupCorrupt(problem=problem)
    try:
        safety = create_backup(actor, kind="pre_restore", note=f"before restoring {path.name}")
    except BaseException:
        _remove_staged(staged)
        raise
    # The backup table is part of the database being replaced: remember the
    # rows of files still on disk so the list survives the restore.
    with read_session() as session:
        known = [dataclasses.asdict(_row_data(r)) for r in session.exec(select(Backup)).all()]
    carried = backups_dir() / f".audit-carry-{token}.jsonl"
    restore = _Restore(actor, path.name, digest, safety.file_name, known, carried)
    try:
        audit_carry.stash(carried)
        if get_adapter().stages_restores:
            _prepare_staged(staged, restore)
            reset_engine()  # no pooled connection keeps pages of the old database
            _restore_file(staged)
        else:
            reset_engine()
            _restore_file(staged)
            _reconcile_live_or_go_back(restore, safety)
    except (sqlite3.Error, subprocess.SubprocessError, OSError, SQLAlchemyError, ValueError, CommandError) as exc:
        reset_engine()
        audit.record_now(
            actor,
            "backup.restore",
            result="failed",
            target_type="backup",
            details={"file": path.name, "error": str(exc)[:200], "safety_backup": safety.file_name},
            flagged=True,
        )
        raise BackupFailed(reason=str(exc)[:200]) from exc
    finally:
        _remove_staged(staged)
        carried.unlink(missing_ok=True)
        reset_engine()
    _after_restore(restore)
    return safety


@dataclasses.dataclass
class _Restore:
    """One restore's inputs and, once reconciled, what it did (audited, reported)."""

    actor: Actor
    file_name: str
    sha256: str
    safety_name: str
    known_backups: list[dict]
    carried_path: Path
    summary: dict = dataclasses.field(default_factory=dict)
    orphan_exports: list[str] = dataclasses.field(default_factory=list)


def _remove_staged(staged: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{staged}{suffix}").unlink(missing_ok=True)


def _prepare_staged(staged: Path, restore: _Restore) -> None:
    """Migrate the staged copy and reconcile it, before it replaces the live database."""
    from meiqia_app.migrate import upgrade_to_head

    with get_adapter().staged_copy(staged) as engine:
        upgrade_to_head(engine)
        with Session(engine, expire_on_commit=False) as session:
            _reconcile(session, restore)
            session.commit()


def _reconcile_live_or_go_back(restore: _Restore, safety: BackupView) -> None:
    """PostgreSQL: reconcile the restored live database; on failure put the safety backup back."""
    from meiqia_app.migrate import upgrade_to_head

    try:
        upgrade_to_head()
        with write_session() as session:
            _reconcile(session, restore)
    except (SQLAlchemyError, OSError, ValueError, CommandError):
        # Back to the state before; the safety backup lacks the entries written
        # after its copy was taken (its own "backup.create"): carry those over too.
        reset_engine()
        _restore_file(path_of(safety.file_name))
        reset_engine()
        with write_session() as session:
            audit_carry.carry(session, restore.carried_path)
        raise


def _reconcile(session: Session, restore: _Restore) -> None:
    """In the restored database, before anyone reads it: backup rows, the audit log, erasures, the record."""
    from meiqia_app.services.privacy import erasure

    present = set(session.exec(select(Backup.file_name)).all())
    for data in restore.known_backups:
        if data["file_name"] not in present and (get_settings().backups_dir / data["file_name"]).is_file():
            session.add(Backup(**{k: v for k, v in data.items() if k != "id"}))
    carried = audit_carry.carry(session, restore.carried_path)
    reapplied = erasure.reapply_ledger(session, restore.actor, {"after_restore": restore.file_name})
    referenced = set(session.exec(select(ExportJob.file_name).where(ExportJob.file_name.is_not(None))).all())
    exports = get_settings().exports_dir
    restore.orphan_exports = sorted(
        p.name for p in (exports.iterdir() if exports.is_dir() else ()) if p.is_file() and p.name not in referenced
    )
    restore.orphan_exports = [name for name in restore.orphan_exports if not name.startswith(".")]
    restore.summary = {
        "file": restore.file_name,
        "sha256": restore.sha256,
        "safety_backup": restore.safety_name,
        "audit": carried.as_dict(),
        "erasures": reapplied,
        "export_files_without_row": restore.orphan_exports[:200],
    }
    audit.record(
        session,
        restore.actor,
        "backup.restore",
        target_type="backup",
        details=restore.summary,
        # A forged ledger line, or a restored log of another chain, wants a look.
        flagged=bool(reapplied["invalid_lines"]) or carried.mode == "replaced",
    )


def _after_restore(restore: _Restore) -> None:
    """On the live, restored database: files, caches, SQLite leftovers, an anchor."""
    from meiqia_app.services.customers import changes as customer_changes
    from meiqia_app.services.privacy import erasure

    exports = get_settings().exports_dir
    for name in restore.orphan_exports:
        try:
            (exports / name).unlink(missing_ok=True)
        except OSError:
            pass
    if restore.summary.get("erasures", {}).get("erased_again"):
        # Export files made before now could hold the re-erased customers; FTS merge and WAL checkpoint.
        erasure.after_erasure(utcnow())
    customer_changes.publish_committed(customer_changes.MANY, customer_changes.RESTORED)
    audit_anchor.write_anchor("restore", restore.actor)


@dataclasses.dataclass
class _RowData:
    file_name: str
    kind: str
    size_bytes: int
    sha256: str
    integrity: str
    created_at: dt.datetime
    created_by_name: str
    note: str


def _row_data(row: Backup) -> _RowData:
    return _RowData(
        row.file_name,
        row.kind,
        row.size_bytes,
        row.sha256,
        row.integrity,
        row.created_at,
        row.created_by_name,
        row.note,
    )


# --- downloads through a single-use token ------------------------------------------------


def mint_download_token(actor: Actor, backup_id: int) -> str:
    """A short-lived, single-use token for one backup, bound to the actor's session."""
    require(actor, "backup.manage", action="backup.download", target_type="backup", target_id=backup_id)
    with read_session() as session:
        row = session.get(Backup, int(backup_id))
        if row is None or not (get_settings().backups_dir / row.file_name).is_file():
            raise NotFound()
    return downloads.mint(actor, "backup", row.id)


def claim_download(actor: Actor | None, token: str) -> Path:
    """The file behind a token, once: the token must be unused, unexpired and the caller's own session's."""
    with write_session() as session:
        row, refusal = downloads.spend(session, actor, "backup", token)
        backup = session.get(Backup, row.object_id) if row is not None and not refusal else None
        if backup is None:
            raise NotFound()
        name, backup_id = backup.file_name, backup.id
    require(actor, "backup.manage", action="backup.download", target_type="backup", target_id=backup_id)
    path = path_of(name)
    if not path.is_file():
        raise NotFound()
    audit.record_now(actor, "backup.download", target_type="backup", target_id=backup_id, details={"file": name})
    return path


def scheduled_backup() -> None:
    """The nightly task."""
    create_backup(SYSTEM_ACTOR, kind="scheduled")
