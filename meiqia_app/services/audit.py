"""The audit log (AUDIT-1..3): append-only, hash-chained, searchable.

Each entry stores the hash of the entry before it and its own SHA-256 over a
canonical JSON form of its fields (id included). Editing a row breaks its own
hash, deleting or reordering rows breaks the link of the next one, and the
newest hash is kept as the chain head so that removing the last rows shows
too. Entries are written in the same transaction as the change they record;
refusals get a transaction of their own because the caller's rolls back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterator

from sqlalchemy import func
from sqlmodel import Session, select

from meiqia_app.db import write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import AppSetting, AuditEntry
from meiqia_app.services.rbac import Actor
from meiqia_app.timeutil import SQLITE_FORMAT, as_utc, utcnow

HEAD_KEY = "audit.chain_head"
GENESIS = "0" * 64


def _canonical(entry: AuditEntry) -> bytes:
    fields = [
        entry.id,
        entry.prev_hash,
        as_utc(entry.occurred_at).strftime(SQLITE_FORMAT),
        entry.actor_id,
        entry.actor_name,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.result,
        entry.details,
        entry.client_ip,
        bool(entry.flagged),
    ]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def compute_hash(entry: AuditEntry) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def _details_json(details: dict | None) -> str:
    return json.dumps(details or {}, ensure_ascii=False, sort_keys=True, default=str)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str = "",
    target_id: object = "",
    result: str = "ok",
    details: dict | None = None,
    flagged: bool = False,
) -> AuditEntry:
    """Append an entry inside the caller's transaction.

    Callers pass details with sensitive values already masked (see
    services.masking.mask_diff); the log itself never holds them in clear.
    """
    get_adapter(session.get_bind()).lock_audit_chain(session.connection())
    last = session.exec(select(AuditEntry.id, AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    entry = AuditEntry(
        id=(last[0] + 1) if last else 1,
        occurred_at=utcnow(),
        actor_id=actor.user_id,
        actor_name=actor.username,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id not in (None, "") else "",
        result=result,
        details=_details_json(details),
        client_ip=actor.client_ip or "",
        flagged=flagged,
        prev_hash=last[1] if last else GENESIS,
    )
    entry.entry_hash = compute_hash(entry)
    session.add(entry)
    head = session.get(AppSetting, HEAD_KEY)
    head_value = json.dumps({"id": entry.id, "hash": entry.entry_hash})
    if head is None:
        session.add(AppSetting(key=HEAD_KEY, value=head_value))
    else:
        head.value = head_value
        head.updated_at = utcnow()
    session.flush()
    return entry


def record_now(actor: Actor, action: str, **kwargs) -> None:
    """Append an entry in a transaction of its own (logins, refusals, downloads)."""
    with write_session() as session:
        record(session, actor, action, **kwargs)


def record_refusal(
    actor: Actor, action: str, *, target_type: str = "", target_id: str = "", details: dict | None = None
) -> None:
    record_now(actor, action, target_type=target_type, target_id=target_id, result="refused", details=details)


@dataclasses.dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str = ""


def verify_chain(session: Session) -> ChainReport:
    """Walk the whole chain; name the first entry that does not fit."""
    previous_hash = GENESIS
    expected_id = None
    checked = 0
    for entry in _stream_entries(session):
        checked += 1
        if expected_id is not None and entry.id != expected_id:
            return ChainReport(False, checked, expected_id, "missing")
        if entry.prev_hash != previous_hash:
            return ChainReport(False, checked, entry.id, "broken_link")
        if compute_hash(entry) != entry.entry_hash:
            return ChainReport(False, checked, entry.id, "altered")
        previous_hash = entry.entry_hash
        expected_id = entry.id + 1
    head = session.get(AppSetting, HEAD_KEY)
    if head is not None:
        recorded = json.loads(head.value)
        if recorded.get("hash") != previous_hash:
            return ChainReport(False, checked, (expected_id or 1), "truncated")
    elif checked:
        return ChainReport(False, checked, None, "head_missing")
    return ChainReport(True, checked)


def _stream_entries(session: Session, batch: int = 5000) -> Iterator[AuditEntry]:
    last_id = 0
    while True:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def count_entries(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEntry)).one()


def entry_to_dict(entry: AuditEntry) -> dict:
    return {
        "id": entry.id,
        "occurred_at": entry.occurred_at,
        "actor": entry.actor_name,
        "action": entry.action,
        "target": f"{entry.target_type}:{entry.target_id}" if entry.target_type else "",
        "result": entry.result,
        "details": entry.details,
        "client_ip": entry.client_ip,
        "flagged": entry.flagged,
    }


def parse_details(entry: AuditEntry) -> dict:
    try:
        return json.loads(entry.details)
    except ValueError:
        return {}


def entries_since(session: Session, since: dt.datetime, action_prefix: str = "") -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.occurred_at >= since)
    if action_prefix:
        query = query.where(AuditEntry.action.startswith(action_prefix))
    return list(session.exec(query.order_by(AuditEntry.id)).all())
