"""Erasure of a customer's personal data (GDPR / PIPL right to erasure).

What is wiped, per customer, in the batch's transaction:
- the profile's personal fields (name → an anonymous label, phone, e-mail,
  address, city, company, birthday, external and visitor ids, custom
  attributes, consents) and the search text;
- notes (deleted), message texts (blanked), conversation summaries;
- the order's personal fields (recipient, phone, shipping address) — amounts,
  dates and products stay, so revenue and counts are unchanged;
- behaviour-event URLs (they can carry personal query strings);
- manual tag assignments (free-form labels a person typed may be personal);
  rule-made ones stay: they are derived from aggregates.
Kept: the customer row with its id (the anonymous id), aggregates (order
count, spend, dates), province, source, lifecycle and tier.

Export files. ``export_job`` does not record which customers a file holds,
so the best we can do is: delete every finished export file on disk created
before the erasure that could contain customer rows (kinds other than
"report"), and expire its job. People can export again; the erased customer
is no longer in new files.

Mentions elsewhere (services/privacy/mentions.py): other customers' notes and chat
messages that contain the erased customers' name, phone or e-mail are listed
for review before the erasure; the records the admin ticks are redacted in
the erasure's transaction, and the report and the audit entry say what was
found and done (record references, never the values).

A restore must not undo any of this: every erased customer gets a line in the
erasure ledger outside the database (services/privacy/erasure_ledger.py), which each
restore re-applies through :func:`erase_batch` before the app serves again.

On SQLite the transaction runs with ``PRAGMA secure_delete`` so freed cells
are zeroed, and :func:`after_erasure` merges the FTS index (the trigram index
keeps old segments until then) and checkpoints the WAL, so the erased values
are not left in the file's free space. The audit entry records who erased
which customer ids and row counts — never the erased values. Audit entries
written *before* the erasure are hash-chained and stay as they were (they
hold masked values only).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import delete, select, update
from sqlmodel import select as sm_select

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import (
    BehaviorEvent,
    Conversation,
    Customer,
    CustomerSearch,
    ErasureRequest,
    ExportJob,
    Job,
    Message,
    Note,
    Order,
    TagAssignment,
)
from meiqia_app.models.tag import SOURCE_MANUAL
from meiqia_app.services.audit import log as audit
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields.field_types import FREE_TEXT_TYPES
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import ERASED, customers_changed
from meiqia_app.services.errors import Conflict, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.privacy import erasure_ledger, mentions
from meiqia_app.timeutil import as_utc, utcnow

C = Customer.__table__.c
MAX_REASON = 255


def anonymous_label(customer_id: int) -> str:
    """What an erased customer is called: stable, not derived from personal data."""
    token = hashlib.sha256(f"{get_settings().secret_key}:{customer_id}".encode()).hexdigest()[:10]
    return f"已删除-{token}"


@dataclasses.dataclass
class RequestView:
    id: int
    customer_id: int
    reason: str
    status: str


def request_erasure(actor: Actor, customer_id, reason: str) -> RequestView:
    """File a request to erase a customer's personal data (executed later by someone with customer.erase)."""
    require(actor, "customer.edit", action="erasure.request", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError.single("reason", "error.required")
    if len(reason) > MAX_REASON:
        raise ValidationError.single("reason", "error.too_long", max=MAX_REASON)
    with write_session() as session:
        customer = CustomerAccess(actor).load(session, customer_id, action="erasure.request")
        if customer.erased_at is not None:
            raise Conflict("cleanup.erasure.already_erased")
        pending = session.exec(
            sm_select(ErasureRequest).where(
                ErasureRequest.customer_id == customer_id, ErasureRequest.status == "pending"
            )
        ).first()
        if pending is not None:
            raise Conflict("cleanup.erasure.already_requested")
        request = ErasureRequest(
            customer_id=customer_id, requested_by_id=actor.user_id, requested_by_name=actor.username, reason=reason
        )
        session.add(request)
        session.flush()
        audit.record(
            session,
            actor,
            "erasure.request",
            target_type="customer",
            target_id=customer_id,
            # The reason is free text about a person: the request row keeps it (and is
            # purged with the customer); the audit log, which is never erased, a hash.
            details={"request_id": request.id, "reason": audit.text_ref(reason)},
        )
        return RequestView(request.id, customer_id, reason, request.status)


def _secure_delete(session) -> None:
    conn = session.connection()
    get_adapter(conn).overwrite_deleted_content(conn)


def erase_batch(
    session,
    actor: Actor,
    ids: Sequence[int],
    *,
    redact: Iterable[str] | None = None,
    ledger: bool = True,
    context: dict | None = None,
    report: dict | None = None,
) -> dict[str, int]:
    """Wipe the personal data of ``ids`` inside the caller's transaction; returns rows changed per table.

    ``redact``: references of other customers' records ("note:12") whose
    mentions of these customers are to be replaced; not None also searches for
    mentions (up to mentions.MAX_CUSTOMERS customers) so the report can say
    what was found. ``ledger``: append to the erasure ledger (not when the
    ledger itself is being re-applied). ``context``: extra audit details.
    ``report``: filled with the mentions found / redacted / left (references).
    """
    ids = list(ids)
    if not ids:
        return {}
    _secure_delete(session)
    mention_info = None
    redacted: dict[str, list[int]] = {}
    if redact is not None:
        redact = mentions.parse_keys(redact, limit=None)
        searched = len(ids) <= mentions.MAX_CUSTOMERS
        terms = mentions.terms_of(session, ids) if searched or redact else {}
        found = [m.key for m in mentions.search(session, ids, terms)] if searched else []
        redacted = mentions.redact_records(session, terms, redact) if redact else {}
        mention_info = {
            "searched": searched,
            "found": found,
            "redacted": sorted(redacted),
            "kept": [key for key in found if key not in redacted],
        }
        if report is not None:
            merged = report.setdefault("mentions", {"searched": True, "found": [], "redacted": [], "kept": []})
            merged["searched"] = merged["searched"] and searched
            for name in ("found", "redacted", "kept"):
                merged[name] = sorted({*merged[name], *mention_info[name]})[: mentions.MAX_FOUND]
    # Read before the values are wiped; written (and flushed to the disk) before this transaction commits.
    ledger_entries = erasure_ledger.entries_for(session, ids, redacted) if ledger else []
    now = utcnow()
    counts: dict[str, int] = {}
    o, cv, m, e = Order.__table__.c, Conversation.__table__.c, Message.__table__.c, BehaviorEvent.__table__.c
    ta, n, cs, er = (
        TagAssignment.__table__.c,
        Note.__table__.c,
        CustomerSearch.__table__.c,
        ErasureRequest.__table__.c,
    )
    _scrub_export_scopes(session, _personal_values(session, ids))
    changed = 0
    for customer_id in ids:
        label = anonymous_label(customer_id)
        changed += session.execute(
            update(Customer.__table__)
            .where(C.id == customer_id)
            .values(
                name=label,
                name_pinyin="",
                name_initials="",
                gender="U",
                birthday=None,
                phone=None,
                email=None,
                address=None,
                city=None,
                company=None,
                external_id=None,
                visitor_id=None,
                custom_attributes="{}",
                # Every custom field's value, whatever its type or status (issue 23).
                custom_fields={},
                consent_marketing=False,
                consent_marketing_at=None,
                consent_analytics=False,
                consent_analytics_at=None,
                erased_at=now,
                updated_at=now,
                updated_by_id=actor.user_id,
                updated_by_name=actor.username,
                version=C.version + 1,
            )
        ).rowcount
        session.execute(
            update(CustomerSearch.__table__)
            .where(cs.customer_id == customer_id)
            .values(text=label.lower(), contact="", phone_mask="")
        )
    counts["customer"] = changed
    counts["customer_search"] = changed
    conv_ids = select(cv.id).where(cv.customer_id.in_(ids))
    counts["message"] = session.execute(
        update(Message.__table__).where(m.conversation_id.in_(conv_ids)).values(body="")
    ).rowcount
    counts["conversation"] = session.execute(
        update(Conversation.__table__).where(cv.customer_id.in_(ids)).values(summary=None)
    ).rowcount
    counts["customer_order"] = session.execute(
        update(Order.__table__)
        .where(o.customer_id.in_(ids))
        .values(recipient_name=None, recipient_phone=None, shipping_address=None)
    ).rowcount
    counts["behavior_event"] = session.execute(
        update(BehaviorEvent.__table__).where(e.customer_id.in_(ids), e.url.is_not(None)).values(url=None)
    ).rowcount
    counts["note"] = session.execute(delete(Note.__table__).where(n.customer_id.in_(ids))).rowcount
    counts["tag_assignment"] = session.execute(
        delete(TagAssignment.__table__).where(ta.customer_id.in_(ids), ta.source == SOURCE_MANUAL)
    ).rowcount
    counts["erasure_request"] = session.execute(
        update(ErasureRequest.__table__)
        .where(er.customer_id.in_(ids), er.status == "pending")
        .values(status="done", executed_at=now, executed_by_name=actor.username)
    ).rowcount
    details = {"customer_ids": ids[:200], "customers": len(ids), "rows": counts, **(context or {})}
    if mention_info is not None:
        counts["mentions_found"] = len(mention_info["found"])
        counts["mentions_redacted"] = len(mention_info["redacted"])
        details["mentions"] = {
            "searched": mention_info["searched"],
            "found": mention_info["found"][:200],
            "redacted": mention_info["redacted"][:200],
        }
    erasure_ledger.append(ledger_entries)
    audit.record(session, actor, "erasure.execute", target_type="customer", details=details)
    # Connected systems hear of it (the delivery carries the id only) and nothing queued keeps details.
    webhooks.scrub_customers(session, ids)
    webhooks.emit_many(session, "customer.erased", ids)
    customers_changed(session, ids, ERASED)  # counts and report caches, after the commit
    return counts


#: Shorter values (a one-character name) are not identifying on their own and
#: would blank unrelated searches.
MIN_SCRUBBED_LENGTH = 2
#: The search box takes 100 characters; values are looked for up to this length.
MAX_SCRUBBED_LENGTH = 100
ERASED_MARK = "[已删除]"


def _personal_values(session, ids: Sequence[int]) -> set[str]:
    """The identifying values of the customers about to be erased (read before they are wiped)."""
    rows = session.execute(
        select(C.name, C.phone, C.email, C.external_id, C.visitor_id, C.company, C.address, C.custom_fields).where(
            C.id.in_(list(ids))
        )
    ).all()
    values = {str(v).strip() for row in rows for v in row[:-1] if v}
    # Custom fields of free-text types (text, long text, link, phone, e-mail) may identify the person too.
    catalog = custom_field_catalog.catalog()
    for row in rows:
        for key, value in (row.custom_fields if isinstance(row.custom_fields, dict) else {}).items():
            field = catalog.get(key)
            if field is not None and field.field_type in FREE_TEXT_TYPES and isinstance(value, str) and value.strip():
                values.add(value.strip())
    return {v for v in values if len(v) >= MIN_SCRUBBED_LENGTH}


#: Free text someone typed, in a stored scope or job parameters: a search (``"q": "…"``) or a saved view.
_TYPED_TEXT = re.compile(r'"(?:q|view_id)": ?"?[^",}\]]')


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _erased_in(text: str, erased: set[str], longest: int) -> set[str]:
    """The erased values occurring in ``text``: its substrings looked up in the
    set, so a bulk batch's tens of thousands of values cost no more than one."""
    return {
        text[i:j] for i in range(len(text)) for j in range(i + MIN_SCRUBBED_LENGTH, min(len(text), i + longest) + 1)
    } & erased


def _scrub(value, found: set[str]):
    """``value`` (parsed JSON) with every occurrence of the found values in its strings replaced."""
    if isinstance(value, str):
        for personal in sorted(found, key=len, reverse=True):
            value = value.replace(personal, ERASED_MARK)
        return value
    if isinstance(value, list):
        return [_scrub(v, found) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, found) for k, v in value.items()}
    return value


def _scrub_export_scopes(session, erased: set[str]) -> int:
    """Remove the erased values from what export and background jobs recorded
    of their scope: a phone number typed as the search of an export or a bulk
    tagging, and the filter text shown in history and approvals. A job still
    waiting keeps its shape and now matches no one by that value, which is what
    the erasure asks for. Returns rows changed."""
    if not erased:
        return 0
    longest = min(max(len(v) for v in erased), MAX_SCRUBBED_LENGTH)
    changed = 0
    for table, column in ((ExportJob.__table__, "scope"), (Job.__table__, "params")):
        for row_id, stored in session.execute(select(table.c.id, table.c[column])).all():
            # Filters alone (labels, dates, tag ids) hold nobody's personal data.
            if not stored or not _TYPED_TEXT.search(stored):
                continue
            try:
                parsed = json.loads(stored)
            except ValueError:
                continue
            found = set().union(*(_erased_in(text, erased, longest) for text in _strings(parsed)))
            if found:
                cleaned = json.dumps(_scrub(parsed, found), ensure_ascii=False)
                session.execute(update(table).where(table.c.id == row_id).values({column: cleaned}))
                changed += 1
    return changed


def delete_export_files(before: dt.datetime) -> list[str]:
    """Delete finished export files created before ``before`` that may hold customer rows."""
    exports = get_settings().exports_dir
    removed = []
    with read_session() as session:
        rows = session.exec(
            sm_select(ExportJob).where(ExportJob.file_name.is_not(None), ExportJob.kind != "report")
        ).all()
        candidates = [(r.id, r.file_name) for r in rows if r.created_at and as_utc(r.created_at) <= before]
    for _job_id, name in candidates:
        path = exports / name
        if path.is_file() and path.resolve().parent == exports.resolve():
            path.unlink()
            removed.append(name)
    if candidates:
        with write_session() as session:
            session.execute(
                update(ExportJob.__table__)
                .where(ExportJob.__table__.c.id.in_([c[0] for c in candidates]))
                .values(expires_at=utcnow())
            )
    return removed


def after_erasure(started: dt.datetime) -> list[str]:
    """After erasing: remove export files that could contain the customers, and scrub SQLite's leftovers."""
    # Every file made up to now could hold the erased customers (``started``: when the erasure began).
    removed = delete_export_files(max(started, utcnow()))
    get_adapter().scrub_after_erasure(get_engine())
    return removed


@dataclasses.dataclass(frozen=True)
class ErasureResult:
    """One customer erased now: rows changed per table, and the mentions found / redacted elsewhere."""

    rows: dict[str, int]  # table name -> rows wiped or deleted
    mentions_found: int = 0
    mentions_redacted: int = 0


def erase_customer(actor: Actor, customer_id, confirm: str = "", redact: Iterable[str] = ()) -> ErasureResult:
    """Erase one customer now (a single request); ``confirm`` is the customer id.

    ``redact``: other customers' records (from :func:`find_mentions`) whose
    mentions of this customer are replaced in the same transaction.
    """
    require(actor, "customer.erase", action="erasure.execute", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    if str(confirm).strip() != str(customer_id):
        raise ValidationError.single("confirm", "cleanup.confirm_mismatch", count=customer_id)
    with write_session() as session:
        CustomerAccess(actor).load(session, customer_id, action="erasure.execute")
        counts = erase_batch(session, actor, [customer_id], redact=mentions.parse_keys(redact))
    after_erasure(utcnow())
    found, redacted = counts.pop("mentions_found", 0), counts.pop("mentions_redacted", 0)
    return ErasureResult(rows=counts, mentions_found=found, mentions_redacted=redacted)


def find_mentions(actor: Actor, ids: Sequence[int]) -> list[mentions.Mention] | None:
    """Other customers' notes and messages naming ``ids`` (with snippets, for the review before an
    erasure); None when there are more than mentions.MAX_CUSTOMERS customers (not searched)."""
    require(actor, "customer.erase", action="erasure.mentions", target_type="customer")
    ids = [int(i) for i in ids]
    if len(ids) > mentions.MAX_CUSTOMERS:
        return None
    with read_session() as session:
        return mentions.search(session, ids, snippets=True)


def pending_requests(actor: Actor, limit: int = 100) -> list[RequestView]:
    require(actor, "customer.erase", action="erasure.list", target_type="customer")
    with read_session() as session:
        rows = session.exec(
            sm_select(ErasureRequest).where(ErasureRequest.status == "pending").order_by(ErasureRequest.id).limit(limit)
        ).all()
        return [RequestView(r.id, r.customer_id, r.reason, r.status) for r in rows]


def reapply_ledger(session, actor: Actor, context: dict) -> dict:
    """Erase again, in ``session`` (a restored database), whoever the erasure ledger says was erased.

    Called by the restore before the restored data is served (services/platform/backup.py).
    """
    plan = erasure_ledger.plan_reapply(session)
    rows = {}
    if plan.ids:
        rows = erase_batch(
            session,
            actor,
            plan.ids,
            redact=plan.redact,
            ledger=False,
            context={"reapplied": True, "by_identifier": plan.by_identifier[:200], **context},
        )
    return {
        "ledger_entries": plan.entries,
        "invalid_lines": plan.invalid_lines,
        "erased_again": plan.ids[:200],
        "count": len(plan.ids),
        "by_identifier": plan.by_identifier[:200],
        "other_customer": plan.other_customer[:200],
        "rows": rows,
    }
