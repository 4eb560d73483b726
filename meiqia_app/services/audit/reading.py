"""Reading the audit log (AUDIT-2/3): the /audit page and `verify-audit`.

Newest first with keyset paging on the id (ids grow with time), filters that
use the (actor, time) / (action, time) / (target) indexes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlalchemy import or_
from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import AuditEntry
from meiqia_app.services.audit import anchor as audit_anchor
from meiqia_app.services.audit import log as audit
from meiqia_app.services.audit import sentences as audit_sentences
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import as_utc, format_local, local_day_start_utc

PAGE_SIZE = 50

#: Presets of the page: a named set of actions. "exports": every step of an
#: export (request, approval, rejection, run, failure, cancel, download, expiry,
#: per-customer portability), report exports and changes of a role's export policy.
PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (action families matched with their sub-actions, exact actions)
    "exports": (("export",), ("report.export", "role.export_policy")),
}


@dataclasses.dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    result: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    preset: str = ""  # "" or a key of PRESETS
    flagged_only: bool = False  # anomalies only (large, off-hours, frequent exports...)

    @classmethod
    def from_dict(cls, raw: dict) -> AuditFilter:
        """Validate what the browser sent (any dict may arrive)."""

        def text(key: str, limit: int = 64) -> str:
            value = raw.get(key) or ""
            return str(value).strip()[:limit]

        def day(key: str) -> dt.date | None:
            value = text(key, 10)
            if not value:
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise ValidationError.single(key, "error.bad_date") from None

        result = text("result", 16)
        if result not in ("", "ok", "refused", "failed"):
            raise ValidationError.single("result", "error.bad_choice")
        preset = text("preset", 16)
        if preset and preset not in PRESETS:
            raise ValidationError.single("preset", "error.bad_choice")
        flagged = str(raw.get("flagged") or "").strip().lower() in ("1", "true", "on", "yes")
        found = cls(
            text("actor"),
            text("action"),
            text("target_type", 32),
            text("target_id"),
            result,
            day("date_from"),
            day("date_to"),
            preset,
            flagged,
        )
        if found.date_from and found.date_to and found.date_from > found.date_to:
            raise ValidationError.single("date_to", "error.date_range")
        return found


@dataclasses.dataclass
class AuditRow:
    id: int
    occurred_at: str
    actor: str
    action: str
    target: str
    result: str
    details: str
    client_ip: str
    flagged: bool
    # What happened, in words (services/audit/sentences.py), in both languages so that
    # switching the language does not need the page again.
    sentence_zh: str = ""
    sentence_en: str = ""


@dataclasses.dataclass
class AuditPage:
    rows: list[AuditRow]
    next_before_id: int  # 0: no older entries


def _pretty(details: str) -> str:
    """The details JSON indented for reading (as stored when it is not valid JSON)."""
    if not details or details == "{}":
        return ""
    try:
        return json.dumps(json.loads(details), ensure_ascii=False, indent=2)
    except ValueError:
        return details


def _row(entry: AuditEntry, sentence: dict[str, str]) -> AuditRow:
    return AuditRow(
        id=entry.id,
        occurred_at=format_local(entry.occurred_at, with_seconds=True),
        actor=entry.actor_name,
        action=entry.action,
        target=f"{entry.target_type}:{entry.target_id}" if entry.target_type else "",
        result=entry.result,
        # Details are masked when written (services never log raw sensitive values).
        details=_pretty(entry.details),
        client_ip=entry.client_ip,
        flagged=bool(entry.flagged),
        sentence_zh=sentence["zh"],
        sentence_en=sentence["en"],
    )


def list_entries(actor: Actor, filters: AuditFilter, before_id: int = 0, limit: int = PAGE_SIZE) -> AuditPage:
    require(actor, "audit.view", action="audit.list")
    limit = max(1, min(int(limit), 200))
    query = select(AuditEntry)
    if filters.actor:
        query = query.where(AuditEntry.actor_name == filters.actor)
    if filters.action:
        # "auth" matches auth.login, auth.logout...; "auth.login" matches exactly that family.
        query = query.where((AuditEntry.action == filters.action) | AuditEntry.action.startswith(filters.action + "."))
    if filters.target_type:
        query = query.where(AuditEntry.target_type == filters.target_type)
    if filters.target_id:
        query = query.where(AuditEntry.target_id == filters.target_id)
    if filters.result:
        query = query.where(AuditEntry.result == filters.result)
    if filters.preset:
        families, exact = PRESETS[filters.preset]
        matches = [AuditEntry.action.in_(families + exact)]
        matches += [AuditEntry.action.startswith(family + ".") for family in families]
        query = query.where(or_(*matches))
    if filters.flagged_only:
        query = query.where(AuditEntry.flagged.is_(True))
    if filters.date_from:
        query = query.where(AuditEntry.occurred_at >= local_day_start_utc(filters.date_from))
    if filters.date_to:
        query = query.where(AuditEntry.occurred_at < local_day_start_utc(filters.date_to + dt.timedelta(days=1)))
    if before_id:
        query = query.where(AuditEntry.id < int(before_id))
    with read_session() as session:
        entries = session.exec(query.order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
        more = len(entries) > limit
        entries = entries[:limit]
        said = audit_sentences.sentences(session, entries)
    return AuditPage(
        [_row(e, s) for e, s in zip(entries, said, strict=True)], entries[-1].id if more and entries else 0
    )


@dataclasses.dataclass
class AnchorRow:
    """An anchor as /audit shows it (to be written down or sent elsewhere)."""

    at: str
    id: int
    hash: str
    reason: str
    valid: bool


ANCHORS_SHOWN = 10


def list_anchors(actor: Actor, limit: int = ANCHORS_SHOWN) -> list[AnchorRow]:
    """The newest anchors of the chain (services/audit/anchor.py), newest first."""
    require(actor, "audit.view", action="audit.anchors")
    rows = []
    for anchor in reversed(audit_anchor.read_anchors()[-max(1, min(int(limit), 100)) :]):
        try:
            at = format_local(as_utc(dt.datetime.fromisoformat(anchor.at)), with_seconds=True)
        except ValueError:
            at = ""
        rows.append(AnchorRow(at, anchor.id, anchor.hash, anchor.reason, anchor.valid))
    return rows


def verify(actor: Actor) -> audit.ChainReport:
    """Check the whole chain (hashes, links, MACs, head, anchors) and record that it was checked."""
    require(actor, "audit.view", action="audit.verify")
    with read_session() as session:
        report = audit.verify_chain(session)
    audit.record_now(
        actor,
        "audit.verify",
        result="ok" if report.ok else "failed",
        details=dataclasses.asdict(report),
        flagged=not report.ok,
    )
    return report
