"""The audit log (AUDIT-1..3): append-only, hash-chained, MACed, anchored, searchable.

Each entry stores the hash of the entry before it and its own SHA-256 over a
canonical JSON form of its fields (id included). Editing a row breaks its own
hash, deleting or reordering rows breaks the link of the next one, and the
newest hash is kept as the chain head so that removing the last rows shows
too. Entries are written in the same transaction as the change they record;
refusals get a transaction of their own because the caller's rolls back.

A hash chain alone only checks itself: whoever can write the table can
recompute every hash after an edit, or delete the newest rows and fix the
head. Therefore (migration 0007):

- every entry also carries ``entry_mac``, an HMAC of the same canonical form
  with a key derived from the secret key (services/platform/keys.py), which is not in
  the database; the head (``audit.chain_head``) carries an HMAC of (id, hash)
  with a key of its own. Without the key, a recomputed entry or a moved head
  does not verify.
- entries written before the upgrade have no MAC. The first MACed id is kept
  in ``audit.mac_from`` with its own HMAC, written once by the migration, so
  nobody can move the upgrade point to pass later entries off as legacy ones.
- the head is anchored outside the database (services/audit/anchor.py: an
  append-only file beside the backups, shown on /audit) daily, after every
  backup and after every restore; :func:`verify_chain` checks that every
  anchored entry still has its hash and that the table reaches the newest
  anchor, which catches truncation and wiping even with an old head copied
  back from a backup.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator

from sqlalchemy import func
from sqlmodel import Session, select

from meiqia_app.db import write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import AppSetting, AuditEntry
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.platform import keys
from meiqia_app.timeutil import SQLITE_FORMAT, as_utc, utcnow

HEAD_KEY = "audit.chain_head"
MAC_FROM_KEY = "audit.mac_from"
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


def compute_mac(entry: AuditEntry) -> str:
    """The entry's HMAC (a key that is not in the database; see services/platform/keys.py)."""
    return keys.mac(keys.AUDIT_ENTRY, _canonical(entry))


def head_value(entry_id: int, entry_hash: str) -> str:
    """The stored chain head: the newest entry's id and hash, MACed together."""
    return json.dumps(
        {"id": entry_id, "hash": entry_hash, "mac": keys.mac(keys.AUDIT_HEAD, f"{entry_id}:{entry_hash}")}
    )


def mac_from_value(first_id: int) -> str:
    """The upgrade point: entries from ``first_id`` on must carry a MAC (written once, by migration 0007)."""
    return json.dumps({"id": first_id, "mac": keys.mac(keys.AUDIT_UPGRADE, str(first_id))})


def read_mac_from(session: Session) -> int | None:
    """The upgrade point, or None when it is missing or its MAC does not verify."""
    row = session.get(AppSetting, MAC_FROM_KEY)
    try:
        value = json.loads(row.value) if row is not None else None
        first_id = int(value["id"])
    except (ValueError, TypeError, KeyError):
        return None
    return first_id if keys.matches(keys.AUDIT_UPGRADE, str(first_id), value.get("mac")) else None


def text_ref(text: str | None) -> dict:
    """What the audit log keeps of a personal free text (a note, an erasure reason):
    a keyed hash and its length, never the text. The log can never be erased; with
    the secret key one can still check whether a given text is the one recorded."""
    text = text or ""
    return {"hmac": keys.mac(keys.AUDIT_TEXT, text)[:32], "chars": len(text)}


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
    services.customers.access.mask_diff); the log itself never holds them in clear.
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
    entry.entry_mac = compute_mac(entry)
    session.add(entry)
    set_head(session, entry.id, entry.entry_hash)
    session.flush()
    return entry


def record_many(session: Session, actor: Actor, action: str, entries: list[dict]) -> None:
    """Several entries by one actor for one action, in the caller's transaction: each
    dict gives ``target_type``, ``target_id`` and ``details``. The same rows, chain and
    head as one :func:`record` per entry (in this order), read and written in a few
    statements instead of four per entry (a batch's rule changes touch dozens)."""
    if not entries:
        return
    get_adapter(session.get_bind()).lock_audit_chain(session.connection())
    last = session.exec(select(AuditEntry.id, AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    next_id, prev_hash = ((last[0] + 1), last[1]) if last else (1, GENESIS)
    now = utcnow()
    for item in entries:
        target_id = item.get("target_id", "")
        entry = AuditEntry(
            id=next_id,
            occurred_at=now,
            actor_id=actor.user_id,
            actor_name=actor.username,
            action=action,
            target_type=item.get("target_type", ""),
            target_id=str(target_id) if target_id not in (None, "") else "",
            result="ok",
            details=_details_json(item.get("details")),
            client_ip=actor.client_ip or "",
            flagged=False,
            prev_hash=prev_hash,
        )
        entry.entry_hash = compute_hash(entry)
        entry.entry_mac = compute_mac(entry)
        session.add(entry)
        next_id, prev_hash = next_id + 1, entry.entry_hash
    set_head(session, next_id - 1, prev_hash)
    session.flush()


def set_head(session: Session, entry_id: int, entry_hash: str) -> None:
    head = session.get(AppSetting, HEAD_KEY)
    value = head_value(entry_id, entry_hash)
    if head is None:
        session.add(AppSetting(key=HEAD_KEY, value=value))
    else:
        head.value = value
        head.updated_at = utcnow()


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
    anchors: int = 0  # anchors checked (services/audit/anchor.py)


#: What :func:`verify_chain` may report (each has a message "audit.problem.<name>").
PROBLEMS = (
    "missing",  # an id is missing between two entries
    "broken_link",  # an entry does not point at the one before it
    "altered",  # an entry's hash does not match its fields
    "forged",  # an entry written after the upgrade point has no valid MAC
    "anchor_mismatch",  # an anchored entry has another hash than the anchor recorded
    "truncated",  # the table ends before the head or before the newest anchor
    "head_missing",
    "head_forged",  # the stored head's MAC does not verify
    "upgrade_point",  # audit.mac_from is missing or its MAC does not verify
    "anchor_forged",  # a line of the anchor file does not verify
)


@dataclasses.dataclass(frozen=True)
class Pin:
    """An (id, hash) the chain must contain: an anchor, or one an admin wrote down."""

    id: int
    hash: str


def _walk(
    session: Session,
    mac_from: int,
    pins: dict[int, str],
    after_id: int = 0,
    after_hash: str = GENESIS,
) -> tuple[ChainReport | None, int, int, str]:
    """Check entries after ``after_id`` (whose hash is ``after_hash``).

    Returns (the first problem or None, entries checked, last id, last hash).
    """
    previous_hash = after_hash
    expected_id = after_id + 1 if after_id else None
    last_id = after_id
    checked = 0
    for entry in _stream_entries(session, after_id):
        checked += 1
        if expected_id is not None and entry.id != expected_id:
            return ChainReport(False, checked, expected_id, "missing"), checked, last_id, previous_hash
        if entry.prev_hash != previous_hash:
            return ChainReport(False, checked, entry.id, "broken_link"), checked, last_id, previous_hash
        if compute_hash(entry) != entry.entry_hash:
            return ChainReport(False, checked, entry.id, "altered"), checked, last_id, previous_hash
        if entry.id >= mac_from and not keys.matches(keys.AUDIT_ENTRY, _canonical(entry), entry.entry_mac):
            return ChainReport(False, checked, entry.id, "forged"), checked, last_id, previous_hash
        if entry.id in pins and pins[entry.id] != entry.entry_hash:
            return ChainReport(False, checked, entry.id, "anchor_mismatch"), checked, last_id, previous_hash
        previous_hash = entry.entry_hash
        last_id = entry.id
        expected_id = entry.id + 1
    return None, checked, last_id, previous_hash


def _check_head(session: Session, checked: int, last_id: int, last_hash: str) -> ChainReport | None:
    head = session.get(AppSetting, HEAD_KEY)
    if head is None:
        return ChainReport(False, checked, None, "head_missing")
    try:
        recorded = json.loads(head.value)
        head_id, head_hash = int(recorded["id"]), str(recorded["hash"])
    except (ValueError, TypeError, KeyError):
        return ChainReport(False, checked, None, "head_forged")
    if not keys.matches(keys.AUDIT_HEAD, f"{head_id}:{head_hash}", recorded.get("mac")):
        return ChainReport(False, checked, None, "head_forged")
    if head_hash != last_hash or head_id != last_id:
        return ChainReport(False, checked, last_id + 1, "truncated")
    return None


def verify_chain(session: Session, anchors: Iterable | None = None, pins: Iterable[Pin] = ()) -> ChainReport:
    """Walk the whole chain; name the first entry (or the first thing) that does not fit.

    ``anchors``: the anchor file's lines (read from disk when None); ``pins``:
    (id, hash) pairs written down elsewhere (``verify-audit --pin ID:HASH``).
    """
    from meiqia_app.services.audit import anchor as audit_anchor

    anchors = list(audit_anchor.read_anchors() if anchors is None else anchors)
    forged = next((a for a in anchors if not a.valid), None)
    if forged is not None:
        return ChainReport(False, 0, forged.id or None, "anchor_forged", len(anchors))
    pinned: dict[int, str] = {}
    for pin in [*anchors, *pins]:
        if pinned.get(pin.id, pin.hash) != pin.hash:
            return ChainReport(False, 0, pin.id, "anchor_mismatch", len(anchors))
        pinned[pin.id] = pin.hash
    pinned.pop(0, None)  # an anchor of the empty log pins nothing
    mac_from = read_mac_from(session)
    if mac_from is None:
        return ChainReport(False, 0, None, "upgrade_point", len(anchors))
    problem, checked, last_id, last_hash = _walk(session, mac_from, pinned)
    if problem is None:
        problem = _check_head(session, checked, last_id, last_hash)
    if problem is None and pinned and max(pinned) > last_id:
        problem = ChainReport(False, checked, last_id + 1, "truncated")
    if problem is not None:
        return dataclasses.replace(problem, anchors=len(anchors))
    return ChainReport(True, checked, anchors=len(anchors))


def verify_since(session: Session, after_id: int, after_hash: str) -> tuple[ChainReport, int, str]:
    """Check only what came after a verified point (the previous anchor) and the head.

    The hash chain pins everything before ``after_id`` to ``after_hash``: an
    edit there changes that entry's hash. Returns (report, last id, last hash).
    """
    mac_from = read_mac_from(session)
    if mac_from is None:
        return ChainReport(False, 0, None, "upgrade_point"), 0, ""
    start_id, start_hash = 0, GENESIS
    if after_id:
        anchored = session.get(AuditEntry, after_id)
        if anchored is None:
            return ChainReport(False, 0, after_id, "truncated"), 0, ""
        if anchored.entry_hash != after_hash:
            return ChainReport(False, 0, after_id, "anchor_mismatch"), 0, ""
        # The walk starts at the anchored entry itself: its own hash and MAC are checked too.
        start_id, start_hash = after_id - 1, anchored.prev_hash
        session.expunge(anchored)
    problem, checked, last_id, last_hash = _walk(session, mac_from, {}, start_id, start_hash)
    problem = problem or _check_head(session, checked, last_id, last_hash)
    return problem or ChainReport(True, checked), last_id, last_hash


def _stream_entries(session: Session, after_id: int = 0, batch: int = 5000) -> Iterator[AuditEntry]:
    last_id = after_id
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


def entries_since(session: Session, since: dt.datetime, action_prefix: str = "") -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.occurred_at >= since)
    if action_prefix:
        query = query.where(AuditEntry.action.startswith(action_prefix))
    return list(session.exec(query.order_by(AuditEntry.id)).all())
