"""The erasure ledger: erasures that a restore must not undo.

Restoring a backup taken before an erasure would bring the erased person
back. Every erasure therefore appends one line per customer to
``backups/erasure-ledger.jsonl`` — outside the database, beside the backups
(so it travels with them when the directory is copied off the machine) —
holding no personal data:

- the customer id (the anonymous id the erased row keeps) and when that
  row was created (tells the same customer from another one under a reused id),
- keyed hashes (HMAC, a key derived from the secret key) of the phone,
  e-mail and external id as they were, normalised,
- the other customers' notes and messages (references: "note:12") in which
  the admin had the person's name, phone or e-mail redacted
  (services/privacy/mentions.py), so that a restore redacts them again,
- the time, and an HMAC of the line (a forged line would otherwise make the
  next restore erase whoever it names).

Every restore re-applies the ledger to the restored data inside the restore
operation, before the app serves it again (services/platform/backup.py), through the
same code path as an erasure (:func:`meiqia_app.services.privacy.erasure.erase_batch`):

- the row with the recorded id is erased again when it is not erased and
  is the same customer (created at the recorded time; its phone or e-mail may
  have been edited since the backup: the id decides);
- a row missing from the backup (created after it, or purged) needs nothing;
- when the id holds another customer (a backup of another database, or an
  id SQLite reused after the newest customer was purged), rows created
  before the erasure whose phone, e-mail or external id hashes to a recorded
  one are erased instead. That reads and hashes every customer not yet
  erased once (the hashing alone ~10 s per million on the 2-core machine),
  only when such an entry exists; the restore's audit entry lists them.

The line is written inside the erasure's transaction, before it commits: an
erasure that then fails leaves its line, and the customer is erased at the
next restore at the latest — the ledger errs on the side of the request.
PostgreSQL: the data dir is local to the app host; with several hosts, the
ledger must be on storage they share (or restores run on the host that ran
the erasures).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from meiqia_app.config import get_settings
from meiqia_app.models import Customer
from meiqia_app.services.platform import keys
from meiqia_app.timeutil import as_utc, utcnow

FILE_NAME = "erasure-ledger.jsonl"
IDENTIFIERS = ("phone", "email", "external_id")
C = Customer.__table__.c
_write_lock = threading.Lock()
_ID_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    at: dt.datetime
    customer_id: int
    hashes: dict[str, str]  # identifier -> keyed hash (only those the customer had)
    redacted: tuple[str, ...] = ()  # other customers' records redacted for this erasure ("note:12")
    created: str = ""  # the customer row's created_at (ISO, UTC)


def ledger_path() -> Path:
    return get_settings().backups_dir / FILE_NAME


def _normalise(kind: str, value: str) -> str:
    value = str(value).strip()
    if kind == "phone":
        return re.sub(r"[^\d+]", "", value)
    if kind == "email":
        return value.lower()
    return value


def identifier_hash(kind: str, value: object) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    return keys.mac(keys.ERASURE_IDENTIFIER, f"{kind}:{_normalise(kind, str(value))}")


def _hashes_of(row) -> dict[str, str]:
    found = {kind: identifier_hash(kind, getattr(row, kind)) for kind in IDENTIFIERS}
    return {kind: value for kind, value in found.items() if value}


def _message(at: str, customer_id: int, hashes: dict[str, str], redacted: Sequence[str], created: str) -> str:
    return json.dumps([at, customer_id, sorted(hashes.items()), sorted(redacted), created], separators=(",", ":"))


def _created(value) -> str:
    return as_utc(value).isoformat() if value is not None else ""


def entries_for(session, ids: Sequence[int], redacted: dict[str, list[int]] | None = None) -> list[LedgerEntry]:
    """Ledger entries of customers about to be erased (read before their values are wiped).

    ``redacted``: other customers' records redacted in this erasure -> the customers they named.
    """
    now = utcnow()
    refs: dict[int, list[str]] = {}
    for ref, named in (redacted or {}).items():
        for customer_id in named:
            refs.setdefault(customer_id, []).append(ref)
    entries = []
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = list(ids[start : start + _ID_CHUNK])
        rows = session.execute(select(C.id, C.phone, C.email, C.external_id, C.created_at).where(C.id.in_(chunk)))
        for row in rows:
            redacted = tuple(sorted(refs.get(row.id, ())))
            entries.append(LedgerEntry(now, row.id, _hashes_of(row), redacted, _created(row.created_at)))
    return entries


def append(entries: Sequence[LedgerEntry]) -> None:
    """Append lines and flush them to the disk (raises OSError: the caller's erasure then rolls back)."""
    if not entries:
        return
    lines = []
    for entry in entries:
        at = as_utc(entry.at).isoformat()
        lines.append(
            json.dumps(
                {
                    "at": at,
                    "customer_id": entry.customer_id,
                    "hashes": entry.hashes,
                    "redacted": sorted(entry.redacted),
                    "created": entry.created,
                    "mac": keys.mac(
                        keys.ERASURE_LEDGER,
                        _message(at, entry.customer_id, entry.hashes, entry.redacted, entry.created),
                    ),
                },
                separators=(",", ":"),
            )
        )
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclasses.dataclass
class LedgerRead:
    entries: list[LedgerEntry]
    invalid_lines: int


def read_ledger() -> LedgerRead:
    """The lines whose MAC verifies (the newest per customer id); forged or broken lines are counted, not used."""
    path = ledger_path()
    latest: dict[int, LedgerEntry] = {}
    invalid = 0
    if path.is_file():
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    at, customer_id = str(data["at"]), int(data["customer_id"])
                    hashes = {str(k): str(v) for k, v in dict(data["hashes"]).items()}
                    redacted = tuple(str(r) for r in data.get("redacted") or ())
                    created = str(data.get("created") or "")
                    valid = keys.matches(
                        keys.ERASURE_LEDGER, _message(at, customer_id, hashes, redacted, created), data.get("mac")
                    )
                    when = dt.datetime.fromisoformat(at)
                except (ValueError, TypeError, KeyError):
                    valid = False
                if not valid:
                    invalid += 1
                    continue
                # Erased twice (the second time with nothing left to hash): keep what is known.
                previous = latest.get(customer_id)
                hashes = {
                    **(previous.hashes if previous else {}),
                    **{k: v for k, v in hashes.items() if k in IDENTIFIERS},
                }
                redacted = tuple(sorted({*redacted, *(previous.redacted if previous else ())}))
                created = created or (previous.created if previous else "")
                latest[customer_id] = LedgerEntry(as_utc(when), customer_id, hashes, redacted, created)
    return LedgerRead(list(latest.values()), invalid)


@dataclasses.dataclass
class ReapplyPlan:
    ids: list[int]  # customers to erase again
    by_identifier: list[int]  # of those, found by their identifiers (their id holds someone else)
    other_customer: list[int]  # recorded ids that hold another customer in the restored data
    redact: list[str]  # other customers' records to redact again
    entries: int
    invalid_lines: int


def plan_reapply(session) -> ReapplyPlan:
    """Which restored customers the ledger says must be erased again (see the module docstring)."""
    ledger = read_ledger()
    if not ledger.entries:
        return ReapplyPlan([], [], [], [], 0, ledger.invalid_lines)
    by_id = {entry.customer_id: entry for entry in ledger.entries}
    erase: set[int] = set()
    elsewhere: list[LedgerEntry] = []  # the id holds another customer: look for the person by identifiers
    ids = sorted(by_id)
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        rows = session.execute(
            select(C.id, C.phone, C.email, C.external_id, C.created_at, C.erased_at).where(C.id.in_(chunk))
        ).all()
        for row in rows:
            entry = by_id[row.id]
            if _same_customer(entry, row):
                if row.erased_at is None:
                    erase.add(row.id)
            else:
                elsewhere.append(entry)
    found = _match_by_identifiers(session, [e for e in elsewhere if e.hashes], exclude=erase)
    # Records redacted at the time are redacted again whenever the restored data holds the values.
    redact = sorted({ref for entry in ledger.entries for ref in entry.redacted})
    return ReapplyPlan(
        sorted(erase | set(found)),
        sorted(found),
        sorted(e.customer_id for e in elsewhere),
        redact,
        len(ledger.entries),
        ledger.invalid_lines,
    )


def _same_customer(entry: LedgerEntry, row) -> bool:
    if entry.created:
        return _created(row.created_at) == entry.created
    mine = _hashes_of(row)  # no creation time recorded: an identifier in common (or none to compare)
    return not mine or not entry.hashes or bool(set(mine.items()) & set(entry.hashes.items()))


def _match_by_identifiers(session, entries: Sequence[LedgerEntry], exclude: set[int]) -> list[int]:
    if not entries:
        return []
    wanted: dict[tuple[str, str], dt.datetime] = {}
    for entry in entries:
        for pair in entry.hashes.items():
            wanted[pair] = max(wanted.get(pair, entry.at), entry.at)
    found = []
    last_id = 0
    while True:
        rows = session.execute(
            select(C.id, C.phone, C.email, C.external_id, C.created_at)
            .where(C.erased_at.is_(None), C.id > last_id)
            .order_by(C.id)
            .limit(20_000)
        ).all()
        if not rows:
            return found
        for row in rows:
            if row.id in exclude:
                continue
            for pair in _hashes_of(row).items():
                erased_at = wanted.get(pair)
                if erased_at is not None and as_utc(row.created_at) <= erased_at:
                    found.append(row.id)
                    break
        last_id = rows[-1].id
