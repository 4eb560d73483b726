"""Carrying the audit log across a restore: a restore never rolls it back.

Before the database is replaced, every audit entry is copied aside
(:func:`stash`, a JSON-lines file under the backups dir, deleted afterwards);
into the restored database (:func:`carry`):

- normally the restored log is a prefix of the live one (same hash at the
  restored log's newest id): the live entries after it are appended as they
  were — ids, hashes and MACs unchanged, so the chain and every anchor still
  verify;
- if the restored log already holds every live entry (the live log had been
  cut short), it is kept;
- otherwise (a backup of another chain) the restored log is replaced by the
  live one: what was recorded before the restore is never lost.

The upgrade point (``audit.mac_from``) is carried too, and the head is set to
the last entry. The restore itself is then recorded on top (services/platform/backup.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import delete, insert, select

from meiqia_app.db import read_session
from meiqia_app.models import AppSetting, AuditEntry
from meiqia_app.services.audit import log as audit
from meiqia_app.timeutil import as_utc, utcnow

_T = AuditEntry.__table__
COLUMNS = [column.name for column in _T.columns]
BATCH = 5000


def stash(target: Path) -> int:
    """Copy every live audit entry (and the upgrade point) to ``target``; returns entries copied."""
    count = 0
    with read_session() as session, target.open("w", encoding="utf-8") as handle:
        target.chmod(0o600)
        mac_from = session.get(AppSetting, audit.MAC_FROM_KEY)
        handle.write(json.dumps({"mac_from": mac_from.value if mac_from is not None else None}) + "\n")
        last_id = 0
        while True:
            rows = session.execute(select(_T).where(_T.c.id > last_id).order_by(_T.c.id).limit(BATCH)).mappings().all()
            if not rows:
                break
            for row in rows:
                data = dict(row)
                data["occurred_at"] = as_utc(data["occurred_at"]).isoformat()
                handle.write(json.dumps(data, ensure_ascii=False) + "\n")
            count += len(rows)
            last_id = rows[-1]["id"]
    return count


def _meta(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return json.loads(handle.readline())


def _rows(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            data = json.loads(line)
            data["occurred_at"] = dt.datetime.fromisoformat(data["occurred_at"])
            yield data


@dataclasses.dataclass
class CarryResult:
    mode: str  # appended | kept | replaced
    carried: int  # live entries written into the restored log
    restored_last_id: int  # the restored log's newest id before carrying

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _insert(session, rows: Iterator[dict]) -> int:
    count, batch = 0, []
    for row in rows:
        batch.append({name: row.get(name) for name in COLUMNS})
        if len(batch) >= BATCH:
            session.execute(insert(_T), batch)
            count += len(batch)
            batch = []
    if batch:
        session.execute(insert(_T), batch)
        count += len(batch)
    return count


def _restored_rows(session) -> Iterator[dict]:
    last_id = 0
    while True:
        rows = session.execute(select(_T).where(_T.c.id > last_id).order_by(_T.c.id).limit(BATCH)).mappings().all()
        if not rows:
            return
        yield from (dict(row) for row in rows)
        last_id = rows[-1]["id"]


def _same(a: dict, b: dict) -> bool:
    return all(
        (as_utc(a[name]) == as_utc(b[name])) if name == "occurred_at" else a.get(name) == b.get(name)
        for name in COLUMNS
    )


def _common_prefix(session, path: Path) -> tuple[int, int, int]:
    """(entries both logs hold identically from the start, restored entries, live entries)."""
    same, restored_count, live_count, diverged = 0, 0, 0, False
    restored = _restored_rows(session)
    for live in _rows(path):
        live_count += 1
        other = next(restored, None)
        if other is None:
            continue
        restored_count += 1
        if not diverged and _same(live, other):
            same += 1
        else:
            diverged = True
    restored_count += sum(1 for _ in restored)
    return same, restored_count, live_count


def carry(session, path: Path) -> CarryResult:
    """Bring the stashed live entries into the restored database of ``session`` (see the module docstring).

    Every restored entry is compared with the live one of the same position
    (all fields): a backup whose log was altered does not pass for a prefix.
    """
    last = session.execute(select(_T.c.id).order_by(_T.c.id.desc()).limit(1)).first()
    restored_id = last[0] if last else 0
    same, restored_count, live_count = _common_prefix(session, path)
    if same == restored_count:
        mode = "appended"
        carried = _insert(session, (r for r in _rows(path) if r["id"] > restored_id))
    elif same == live_count:
        mode, carried = "kept", 0
    else:
        mode = "replaced"
        session.execute(delete(_T))
        carried = _insert(session, _rows(path))
    final = session.execute(select(_T.c.id, _T.c.entry_hash).order_by(_T.c.id.desc()).limit(1)).first()
    audit.set_head(session, *(final if final else (0, audit.GENESIS)))
    mac_from = _meta(path).get("mac_from")
    if mac_from is not None:
        setting = session.get(AppSetting, audit.MAC_FROM_KEY)
        if setting is None:
            session.add(AppSetting(key=audit.MAC_FROM_KEY, value=mac_from, updated_by_name="restore"))
        else:
            setting.value, setting.updated_at = mac_from, utcnow()
    session.flush()
    return CarryResult(mode, carried, restored_id)
