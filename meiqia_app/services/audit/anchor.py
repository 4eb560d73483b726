"""Anchors of the audit chain outside the database (AUDIT-3).

An anchor is one line appended to ``backups/audit-anchors.log``: when, the
newest entry's id and hash, the upgrade point, why (``nightly``, ``backup``,
``restore``, ``manual``) and an HMAC over all of it with a key derived from
the secret key. The file lives beside the backups, not in the database, so
whoever can change the database (or restore an old copy of it) cannot move
it; :func:`meiqia_app.services.audit.log.verify_chain` then requires every
anchored entry to exist with the anchored hash, which catches deleted newest
rows, a wiped table and recomputed hashes even with an old head copied back.

Anchors are written by the nightly scheduler (task ``audit_anchor``), after
every backup and after every restore, and only after the entries written
since the previous anchor verify (a broken chain is not anchored: the failure
is audited, flagged). /audit shows the newest ones so an admin can write the
hash down or send it elsewhere; ``verify-audit --pin ID:HASH`` checks such a
copy.

The first anchor of a log that has never been anchored checks it whole
(about a minute per million entries); later ones only what came since.

Trade-off: the file is local to the machine that runs the app. With
PostgreSQL and several app hosts each host keeps its own file (each is
valid: it pins entries of the one shared chain); someone who controls the
host's file system and the secret key can rewrite both, which is why the
page shows the hash for a copy kept elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

from meiqia_app.config import get_settings
from meiqia_app.db import read_session
from meiqia_app.services.audit import log as audit
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor
from meiqia_app.services.platform import keys
from meiqia_app.timeutil import utcnow

log = logging.getLogger(__name__)

FILE_NAME = "audit-anchors.log"
REASONS = ("nightly", "backup", "restore", "manual")
_write_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Anchor:
    at: str  # ISO time, UTC
    id: int  # the newest entry's id (0: the log was empty)
    hash: str
    mac_from: int
    reason: str
    valid: bool  # its MAC verifies


def anchor_path() -> Path:
    return get_settings().backups_dir / FILE_NAME


def _message(at: str, entry_id: int, entry_hash: str, mac_from: int, reason: str) -> str:
    return json.dumps([at, entry_id, entry_hash, mac_from, reason], separators=(",", ":"))


def _parse(line: str) -> Anchor:
    try:
        data = json.loads(line)
        at, entry_id, entry_hash = str(data["at"]), int(data["id"]), str(data["hash"])
        mac_from, reason = int(data["mac_from"]), str(data["reason"])
    except (ValueError, TypeError, KeyError):
        return Anchor("", 0, "", 0, "", False)
    valid = keys.matches(keys.AUDIT_ANCHOR, _message(at, entry_id, entry_hash, mac_from, reason), data.get("mac"))
    return Anchor(at, entry_id, entry_hash, mac_from, reason, valid)


def read_anchors() -> list[Anchor]:
    """Every line of the anchor file, oldest first (an unreadable line is an invalid anchor)."""
    path = anchor_path()
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [_parse(line) for line in handle if line.strip()]


def latest_valid() -> Anchor | None:
    return next((a for a in reversed(read_anchors()) if a.valid), None)


def _append(anchor: Anchor) -> None:
    path = anchor_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    message = _message(anchor.at, anchor.id, anchor.hash, anchor.mac_from, anchor.reason)
    line = json.dumps(
        {
            "at": anchor.at,
            "id": anchor.id,
            "hash": anchor.hash,
            "mac_from": anchor.mac_from,
            "reason": anchor.reason,
            "mac": keys.mac(keys.AUDIT_ANCHOR, message),
        },
        separators=(",", ":"),
    )
    # O_APPEND: one write per line, never a rewrite of what is there.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_anchor(reason: str, actor: Actor = SYSTEM_ACTOR) -> Anchor | None:
    """Anchor the current head after checking what came since the previous anchor.

    Returns the new anchor, or None when the chain does not verify (the
    failure is audited and flagged; nothing is anchored).
    """
    if reason not in REASONS:
        raise ValueError(reason)
    with _write_lock:
        previous = latest_valid()
        with read_session() as session:
            report, last_id, last_hash = audit.verify_since(
                session, previous.id if previous else 0, previous.hash if previous else audit.GENESIS
            )
            mac_from = audit.read_mac_from(session) or 0
        if not report.ok:
            log.error("audit chain does not verify (%s at %s): not anchored", report.problem, report.first_bad_id)
            audit.record_now(
                actor,
                "audit.anchor",
                result="failed",
                details={"reason": reason, "problem": report.problem, "first_bad_id": report.first_bad_id},
                flagged=True,
            )
            return None
        if previous is not None and previous.id == last_id and last_id != 0:
            return previous  # nothing new since: the previous anchor still is the head
        anchor = Anchor(utcnow().isoformat(timespec="seconds"), last_id, last_hash, mac_from, reason, True)
        try:
            _append(anchor)
        except OSError as error:  # a full disk must not fail the backup or restore that asked
            log.error("could not write the audit anchor: %s", error)
            audit.record_now(
                actor,
                "audit.anchor",
                result="failed",
                details={"reason": reason, "error": str(error)[:200]},
                flagged=True,
            )
            return None
        return anchor


def nightly_anchor() -> None:
    write_anchor("nightly")
