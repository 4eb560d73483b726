"""A customer's history on one line (CUST-5): conversations, orders, behaviour
events, notes and consent changes merged newest first, in pages, filterable by kind.

Consent changes are the customer's ``customer.consent`` audit entries
(services/customers/consent.py), read through the audit log's (target_type, target_id)
index: who changed which consent, when, from what to what.

Paging is keyset over (time, kind, id), newest first. Each table is read
through its (customer_id, time) index: at most ``limit + 1`` rows strictly
below the cursor, newest first. The page is the newest ``limit`` rows of that
union, merged in Python; a ``limit + 1``-th row means there is a next page.
No offsets, so a deep page costs the same as the first one, and rows written
while someone pages (a new note) never shift or repeat what follows.

Items are small dataclasses of str/int/bool, display-ready and masked, so a
Reflex state can hold them as they are.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Iterable

from sqlalchemy import Connection, and_, func, or_, select

from meiqia_app.db import read_connection
from meiqia_app.i18n import tr
from meiqia_app.models import (
    AuditEntry,
    BehaviorEvent,
    Conversation,
    Customer,
    FieldChange,
    Message,
    Note,
    Order,
    OwnerChange,
    Product,
)
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.dto import label, money
from meiqia_app.services.customers.profile import iso, parse_id
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations import api_keys
from meiqia_app.timeutil import as_utc, format_local

KIND_CONSENT = "consent"
KIND_CONVERSATION = "conversation"
KIND_EVENT = "event"
KIND_FIELD = "field"
KIND_NOTE = "note"
KIND_ORDER = "order"
KIND_OWNER = "owner"
# Alphabetical on purpose: the kind is the tie-breaker between rows of the
# same instant, and this is also its string order in the cursor.
KINDS = (KIND_CONSENT, KIND_CONVERSATION, KIND_EVENT, KIND_FIELD, KIND_NOTE, KIND_ORDER, KIND_OWNER)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_MESSAGES = 1000

_O = Order.__table__.c
_CV = Conversation.__table__.c
_E = BehaviorEvent.__table__.c
_N = Note.__table__.c
_M = Message.__table__.c
_P = Product.__table__.c
_C = Customer.__table__.c
_A = AuditEntry.__table__.c
_OW = OwnerChange.__table__.c
_FC = FieldChange.__table__.c
CONSENT_ACTION = "customer.consent"
FIELD_ACTIONS = ("customer.update", "customer.merge")


@dataclasses.dataclass
class TimelineItem:
    kind: str  # conversation | order | event | field | note | consent | owner
    id: int
    key: str  # "kind:id", unique on the page (for rx.foreach keys)
    at: str  # local time, formatted
    title: str
    summary: str
    detail: str = ""  # a second line: shipping details, agent, page URL…
    expandable: bool = False  # conversations: messages via conversation_messages()
    can_edit: bool = False  # notes only
    can_delete: bool = False  # notes only
    body: str = ""  # notes: the raw text, to prefill the edit form
    occurred_at: str = ""  # ISO 8601 UTC (the open API)
    via: str = ""  # "via API: NAME" when a connected system sent it


@dataclasses.dataclass
class TimelinePage:
    items: list[TimelineItem]
    next_cursor: str = ""


@dataclasses.dataclass
class MessageItem:
    id: int
    sender: str  # translated label
    sender_code: str  # customer | agent
    text: str
    at: str


# --- cursor ---------------------------------------------------------------------------


def encode_cursor(at: dt.datetime, kind: str, row_id: int) -> str:
    raw = json.dumps([as_utc(at).isoformat(), kind, int(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str, int]:
    """The (time, kind, id) a cursor points at; anything malformed is refused."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 200:
            raise ValueError
        padded = cursor + "=" * (-len(cursor) % 4)
        at_text, kind, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(at_text, str) or kind not in KINDS or isinstance(row_id, bool) or not isinstance(row_id, int):
            raise ValueError
        at = dt.datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError.single("cursor", "error.bad_cursor") from None
    return as_utc(at), kind, row_id


def _newest_first(statement, time_column, id_column, kind: str, cursor, n: int):
    """One reader's page: newest first, after the cursor's row, ``n`` rows."""
    statement = statement.order_by(time_column.desc(), id_column.desc()).limit(n)
    condition = _below(time_column, id_column, kind, cursor)
    return statement if condition is None else statement.where(condition)


def _below(time_column, id_column, kind: str, cursor: tuple[dt.datetime, str, int] | None):
    """Rows of one table (all of one ``kind``) strictly below the cursor in (time, kind, id) order."""
    if cursor is None:
        return None
    at, cursor_kind, cursor_id = cursor
    if kind < cursor_kind:
        return time_column <= at
    if kind > cursor_kind:
        return time_column < at
    # The leading ``time <= at`` is implied by the OR; it is there so the planner
    # reads a range of the (customer_id, time) index instead of filtering all of
    # the customer's rows (SQLite does not turn an OR into a range).
    return and_(time_column <= at, or_(time_column < at, id_column < cursor_id))


# --- helpers --------------------------------------------------------------------------


def _clean_kinds(kinds: Iterable[str] | None) -> tuple[str, ...]:
    """None or empty: every kind."""
    if not kinds:
        return KINDS
    if isinstance(kinds, str):
        kinds = [kinds]
    chosen = set(kinds)
    if not chosen <= set(KINDS):
        raise ValidationError.single("kinds", "error.bad_choice")
    return tuple(k for k in KINDS if k in chosen)


def check_customer_visible(conn: Connection, actor: Actor, customer_id: int, action: str) -> str:
    """The customer's status; NotFound unless the customer exists and the actor may
    reach it (services/customers/access; audited under ``action``)."""
    return CustomerAccess(actor).load_row(conn, customer_id, action=action).status


def may_change_note(actor: Actor, author_id: int | None) -> bool:
    """Own notes with customer.edit; anybody's with note.manage_any."""
    if actor.can("note.manage_any"):
        return True
    return actor.can("customer.edit") and actor.user_id is not None and author_id == actor.user_id


# --- per-kind reads: (sort time, kind, id, item) -------------------------------------


def _orders(conn, actor, customer_id, cursor, n, lang):
    statement = select(
        _O.id,
        _O.created_at,
        _O.order_no,
        _O.product_name,
        _O.quantity,
        _O.amount_cents,
        _O.status,
        _O.recipient_name,
        _O.recipient_phone,
        _O.shipping_address,
        _O.api_key_id,
    ).where(_O.customer_id == customer_id)
    statement = _newest_first(statement, _O.created_at, _O.id, KIND_ORDER, cursor, n)
    access = CustomerAccess(actor)
    result = []
    for r in conn.execute(statement):
        amount = access.mask("order_amount", money(r.amount_cents))
        recipient = [
            access.mask("recipient_name", r.recipient_name),
            access.mask("recipient_phone", r.recipient_phone),
            access.mask("shipping_address", r.shipping_address),
        ]
        name, phone, address = (str(v or "") for v in recipient)
        detail = tr(lang, "timeline.order_shipping", name=name, phone=phone, address=address) if any(recipient) else ""
        result.append(
            (
                r.created_at,
                KIND_ORDER,
                r.id,
                TimelineItem(
                    kind=KIND_ORDER,
                    id=r.id,
                    key=f"{KIND_ORDER}:{r.id}",
                    at=format_local(r.created_at),
                    title=tr(lang, "timeline.order_title", order_no=r.order_no),
                    summary=tr(
                        lang,
                        "timeline.order_summary",
                        product=r.product_name,
                        quantity=r.quantity,
                        amount=amount,
                        status=label(lang, "order_status", r.status),
                    ),
                    detail=detail,
                ),
                r.api_key_id,
            )
        )
    return result


def _conversations(conn, actor, customer_id, cursor, n, lang):
    statement = select(
        _CV.id, _CV.started_at, _CV.channel, _CV.agent_name, _CV.category, _CV.rating, _CV.summary, _CV.api_key_id
    ).where(_CV.customer_id == customer_id)
    statement = _newest_first(statement, _CV.started_at, _CV.id, KIND_CONVERSATION, cursor, n)
    rows = conn.execute(statement).all()
    counts = {}
    if rows:
        counts = dict(
            conn.execute(
                select(_M.conversation_id, func.count())
                .where(_M.conversation_id.in_([r.id for r in rows]))
                .group_by(_M.conversation_id)
            ).all()
        )
    result = []
    for r in rows:
        rating = (
            tr(lang, "timeline.rating", rating=r.rating) if r.rating is not None else tr(lang, "timeline.not_rated")
        )
        count = counts.get(r.id, 0)
        parts = [r.summary or ""]
        if r.agent_name:
            parts.append(tr(lang, "timeline.agent", agent=r.agent_name))
        result.append(
            (
                r.started_at,
                KIND_CONVERSATION,
                r.id,
                TimelineItem(
                    kind=KIND_CONVERSATION,
                    id=r.id,
                    key=f"{KIND_CONVERSATION}:{r.id}",
                    at=format_local(r.started_at),
                    title=tr(lang, "timeline.conversation_title", category=label(lang, "category", r.category)),
                    summary=tr(
                        lang,
                        "timeline.conversation_summary",
                        channel=label(lang, "channel", r.channel),
                        rating=rating,
                        count=count,
                    ),
                    detail=" · ".join(p for p in parts if p),
                    expandable=count > 0,
                ),
                r.api_key_id,
            )
        )
    return result


def _events(conn, actor, customer_id, cursor, n, lang):
    statement = (
        select(_E.id, _E.occurred_at, _E.kind, _E.url, _E.api_key_id, _P.name.label("product_name"))
        .select_from(BehaviorEvent.__table__.outerjoin(Product.__table__, _P.id == _E.product_id))
        .where(_E.customer_id == customer_id)
    )
    statement = _newest_first(statement, _E.occurred_at, _E.id, KIND_EVENT, cursor, n)
    result = []
    for r in conn.execute(statement):
        if r.product_name:
            summary = tr(lang, "timeline.event_product", product=r.product_name)
        elif r.url:
            summary = tr(lang, "timeline.event_page", url=r.url)
        else:
            summary = ""
        result.append(
            (
                r.occurred_at,
                KIND_EVENT,
                r.id,
                TimelineItem(
                    kind=KIND_EVENT,
                    id=r.id,
                    key=f"{KIND_EVENT}:{r.id}",
                    at=format_local(r.occurred_at),
                    title=label(lang, "event", r.kind),
                    summary=summary,
                ),
                r.api_key_id,
            )
        )
    return result


def _notes(conn, actor, customer_id, cursor, n, lang):
    statement = select(_N.id, _N.created_at, _N.updated_at, _N.author_id, _N.author_name, _N.body).where(
        _N.customer_id == customer_id
    )
    statement = _newest_first(statement, _N.created_at, _N.id, KIND_NOTE, cursor, n)
    result = []
    for r in conn.execute(statement):
        allowed = may_change_note(actor, r.author_id)
        author = r.author_name or tr(lang, "note.author_unknown")
        edited = r.updated_at is not None and r.updated_at > r.created_at
        detail = tr(lang, "timeline.note_edited", at=format_local(r.updated_at)) if edited else ""
        result.append(
            (
                r.created_at,
                KIND_NOTE,
                r.id,
                TimelineItem(
                    kind=KIND_NOTE,
                    id=r.id,
                    key=f"{KIND_NOTE}:{r.id}",
                    at=format_local(r.created_at),
                    title=tr(lang, "timeline.note_title", author=author),
                    summary=r.body,
                    detail=detail,
                    can_edit=allowed,
                    can_delete=allowed,
                    body=r.body,
                ),
                None,
            )
        )
    return result


def _consents(conn, actor, customer_id, cursor, n, lang):
    statement = select(_A.id, _A.occurred_at, _A.actor_name, _A.details).where(
        _A.target_type == "customer",
        _A.target_id == str(customer_id),
        _A.action == CONSENT_ACTION,
        _A.result == "ok",
    )
    statement = _newest_first(statement, _A.occurred_at, _A.id, KIND_CONSENT, cursor, n)
    result = []
    for r in conn.execute(statement):
        try:
            details = json.loads(r.details or "{}")
        except ValueError:
            details = {}
        consent = str(details.get("consent", ""))
        granted = bool(details.get("granted"))
        by = str(details.get("by") or r.actor_name or "")
        result.append(
            (
                r.occurred_at,
                KIND_CONSENT,
                r.id,
                TimelineItem(
                    kind=KIND_CONSENT,
                    id=r.id,
                    key=f"{KIND_CONSENT}:{r.id}",
                    at=format_local(r.occurred_at),
                    title=tr(
                        lang,
                        "timeline.consent_granted" if granted else "timeline.consent_withdrawn",
                        consent=label(lang, "consent", consent),
                    ),
                    summary=tr(lang, "timeline.consent_by", by=by),
                ),
                None,
            )
        )
    return result


def _field_changes(conn, actor, customer_id, cursor, n, lang):
    """Edits of the customer's custom fields ("字段变更"), from the ``customer.update`` and
    ``customer.merge`` audit entries (their "cf.<key>" changes): the label stored at the time
    (the key with a note for a field deleted before labels were stored), old → new as shown
    (option labels, money, dates), masked as the actor sees the field now. The audit log
    keeps free text as a reference (never the text), so such a change reads "changed";
    sensitive values are kept masked there, so they are shown masked to everyone."""
    from meiqia_app.services.custom_fields import catalog as custom_field_catalog
    from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX, display, key_of

    statement = select(_A.id, _A.occurred_at, _A.actor_name, _A.details).where(
        _A.target_type == "customer",
        _A.target_id == str(customer_id),
        _A.action.in_(FIELD_ACTIONS),
        _A.result == "ok",
        _A.details.contains(f'"{FIELD_PREFIX}'),
    )
    statement = _newest_first(statement, _A.occurred_at, _A.id, KIND_FIELD, cursor, n)
    access = CustomerAccess(actor)
    catalog = custom_field_catalog.catalog()
    result = []
    for r in conn.execute(statement):
        try:
            details = json.loads(r.details or "{}")
        except ValueError:
            continue
        changes = (details.get("changes") or details.get("survivor_changes")) if isinstance(details, dict) else None
        if not isinstance(changes, dict):
            continue
        labels = details.get("field_labels") if isinstance(details.get("field_labels"), dict) else {}
        lines = []
        for name, pair in sorted(changes.items()):
            if not name.startswith(FIELD_PREFIX) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
                continue
            field = catalog.get(key_of(name))
            stored = labels.get(name)
            if isinstance(stored, dict) and stored.get("zh"):
                title = (stored.get("en") or stored["zh"]) if lang == "en" else stored["zh"]
            else:
                title = field.label(lang) if field is not None else key_of(name) or name
            if field is None:
                title += tr(lang, "timeline.field_deleted_note")

            def shown(value, field=field, name=name):
                if value is None or value == "":
                    return tr(lang, "timeline.empty_value")
                if isinstance(value, dict) and "hmac" in value:  # free text: a reference only
                    return tr(lang, "timeline.text_changed")
                text = display(field, value, lang) if field is not None else str(value)
                return str(access.mask(name, text))

            lines.append(tr(lang, "timeline.field_changed_line", field=title, old=shown(pair[0]), new=shown(pair[1])))
        if not lines:
            continue
        result.append(
            (
                r.occurred_at,
                KIND_FIELD,
                r.id,
                TimelineItem(
                    kind=KIND_FIELD,
                    id=r.id,
                    key=f"{KIND_FIELD}:{r.id}",
                    at=format_local(r.occurred_at),
                    title=tr(lang, "timeline.field_changed"),
                    summary="；".join(lines) if lang != "en" else "; ".join(lines),
                    detail=tr(lang, "timeline.owner_by", by=r.actor_name or "?"),
                ),
                None,
            )
        )
    return result + _bulk_field_changes(conn, access, customer_id, cursor, n, lang)


def _bulk_field_changes(conn, access: CustomerAccess, customer_id, cursor, n, lang):
    """Fields set by a bulk edit (table field_change, services/customers/bulk_edit.py): the
    value as stored for choices, numbers and dates (shown as the actor sees the field now),
    masked for a sensitive field, "changed" for free text. Their ids are this table's own;
    they share the kind "field" with the edits read from the audit log (two rows of the
    two tables at the very same microsecond would be ordered by unrelated ids)."""
    from meiqia_app.services.custom_fields import catalog as custom_field_catalog
    from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX, display, key_of
    from meiqia_app.services.customers.bulk_edit import BUILTIN_LABEL_KEYS, CHOICE_PREFIX

    statement = select(_FC.id, _FC.changed_at, _FC.field, _FC.value, _FC.note, _FC.actor_name).where(
        _FC.customer_id == customer_id
    )
    statement = _newest_first(statement, _FC.changed_at, _FC.id, KIND_FIELD, cursor, n)
    catalog = custom_field_catalog.catalog()
    result = []
    for r in conn.execute(statement):
        custom = r.field.startswith(FIELD_PREFIX)
        field = catalog.get(key_of(r.field)) if custom else None
        if custom:
            title = field.label(lang) if field is not None else key_of(r.field) or r.field
            if field is None:
                title += tr(lang, "timeline.field_deleted_note")
        else:
            title = tr(lang, BUILTIN_LABEL_KEYS.get(r.field, r.field))
        try:
            value = json.loads(r.value) if r.value is not None else None
        except ValueError:
            value = None
        if r.note == "text":
            shown = tr(lang, "timeline.text_changed")
        elif value is None or value == "":
            shown = tr(lang, "timeline.empty_value")
        elif r.note == "masked":
            shown = str(value)
        elif custom:
            shown = str(access.mask(r.field, display(field, value, lang) if field is not None else str(value)))
        elif r.field in CHOICE_PREFIX:
            shown = tr(lang, f"{CHOICE_PREFIX[r.field]}.{value}")
        else:
            shown = str(access.mask(r.field, str(value)))
        result.append(
            (
                r.changed_at,
                KIND_FIELD,
                r.id,
                TimelineItem(
                    kind=KIND_FIELD,
                    id=r.id,
                    key=f"{KIND_FIELD}:bulk:{r.id}",
                    at=format_local(r.changed_at),
                    title=tr(lang, "timeline.field_changed"),
                    summary=tr(lang, "timeline.field_bulk_line", field=title, new=shown),
                    detail=tr(lang, "timeline.owner_by", by=r.actor_name or "?"),
                ),
                None,
            )
        )
    return result


def _owner_changes(conn, actor, customer_id, cursor, n, lang):
    """Claims, assignments, transfers, releases and returns to the pool (services/customers/ownership.py,
    table owner_change)."""
    from meiqia_app.services.customers.ownership import owner_infos

    statement = select(_OW.id, _OW.changed_at, _OW.action, _OW.old_owner_id, _OW.new_owner_id, _OW.actor_name).where(
        _OW.customer_id == customer_id
    )
    statement = _newest_first(statement, _OW.changed_at, _OW.id, KIND_OWNER, cursor, n)
    rows = conn.execute(statement).all()
    names = owner_infos(conn, [r.old_owner_id for r in rows] + [r.new_owner_id for r in rows])

    def name(user_id):
        if user_id is None:
            return tr(lang, "owner.pool")
        info = names.get(user_id)
        return info.owner_name if info else tr(lang, "owner.unknown")

    result = []
    for r in rows:
        if r.action == "claim":
            title = tr(lang, "timeline.owner_claim", owner=name(r.new_owner_id))
        elif r.action == "return":  # no contact for the period of the pool-return policy
            title = tr(lang, "timeline.owner_return", old=name(r.old_owner_id))
        elif r.new_owner_id is None:
            title = tr(lang, "timeline.owner_release", old=name(r.old_owner_id))
        elif r.old_owner_id is None:
            title = tr(lang, "timeline.owner_assign", owner=name(r.new_owner_id))
        else:
            title = tr(lang, "timeline.owner_transfer", old=name(r.old_owner_id), owner=name(r.new_owner_id))
        result.append(
            (
                r.changed_at,
                KIND_OWNER,
                r.id,
                TimelineItem(
                    kind=KIND_OWNER,
                    id=r.id,
                    key=f"{KIND_OWNER}:{r.id}",
                    at=format_local(r.changed_at),
                    title=title,
                    summary=tr(lang, "timeline.owner_by", by=r.actor_name or "?"),
                ),
                None,
            )
        )
    return result


_READERS = {
    KIND_CONSENT: _consents,
    KIND_CONVERSATION: _conversations,
    KIND_EVENT: _events,
    KIND_FIELD: _field_changes,
    KIND_NOTE: _notes,
    KIND_ORDER: _orders,
    KIND_OWNER: _owner_changes,
}


# --- public -------------------------------------------------------------------------


def customer_timeline(
    actor: Actor,
    customer_id: int,
    kinds: set[str] | None = None,
    cursor: str = "",
    limit: int = DEFAULT_LIMIT,
    lang: str = "zh",
) -> TimelinePage:
    """One page of the customer's history, newest first; ``next_cursor`` is empty on the last page."""
    require(actor, "customer.view", action="customer.timeline", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    chosen = _clean_kinds(kinds)
    position = decode_cursor(cursor) if cursor else None
    try:
        limit = max(1, min(MAX_LIMIT, int(limit)))
    except (TypeError, ValueError):
        limit = DEFAULT_LIMIT
    with read_connection() as conn:
        status = check_customer_visible(conn, actor, customer_id, "customer.timeline")
        rows = []
        for kind in chosen:
            rows += _READERS[kind](conn, actor, customer_id, position, limit + 1, lang)
    rows.sort(key=lambda row: (as_utc(row[0]), row[1], row[2]), reverse=True)
    page = rows[:limit]
    if status != "active":
        # Archived or trashed: read-only until restored (CustomerAccess.load(..., for_write=True)).
        for _at, _kind, _id, item, _key in page:
            item.can_edit = item.can_delete = False
    next_cursor = ""
    if len(rows) > limit and page:
        at, kind, row_id, _item, _key = page[-1]
        next_cursor = encode_cursor(at, kind, row_id)
    names = api_keys.key_names(row[4] for row in page if row[4])
    for at, _kind, _id, item, key_id in page:
        item.occurred_at = iso(at) or ""
        if key_id:
            item.via = tr(lang, "timeline.via_api", name=names.get(key_id, f"#{key_id}"))
            item.detail = " · ".join(part for part in (item.detail, item.via) if part)
    return TimelinePage(items=[row[3] for row in page], next_cursor=next_cursor)


@dataclasses.dataclass(frozen=True)
class ActivityMarker:
    """What an open customer page compares every second to notice new activity."""

    seq: int
    version: int


def activity_marker(actor: Actor, customer_id: int) -> ActivityMarker | None:
    """The customer's activity counter and edit version (one primary-key read), None when not visible."""
    require(actor, "customer.view", action="customer.view", target_type="customer", target_id=customer_id)
    with read_connection() as conn:
        row = CustomerAccess(actor).find_row(conn, customer_id, _C.activity_seq, _C.version)
    if row is None:
        return None
    return ActivityMarker(seq=row.activity_seq, version=row.version)


def conversation_messages(actor: Actor, conversation_id: int, limit: int = 200, lang: str = "zh") -> list[MessageItem]:
    """The messages of one conversation, oldest first (the expand action of a timeline item)."""
    require(actor, "customer.view", action="conversation.view", target_type="conversation", target_id=conversation_id)
    conversation_id = parse_id(conversation_id)
    try:
        limit = max(1, min(MAX_MESSAGES, int(limit)))
    except (TypeError, ValueError):
        limit = 200
    with read_connection() as conn:
        customer_id = conn.execute(select(_CV.customer_id).where(_CV.id == conversation_id)).scalar_one_or_none()
        # Missing, or of a customer out of reach: the same NotFound, audited alike.
        CustomerAccess(actor).record_customer(conn, "conversation", conversation_id, customer_id, "conversation.view")
        rows = conn.execute(
            select(_M.id, _M.sender, _M.body, _M.sent_at)
            .where(_M.conversation_id == conversation_id)
            .order_by(_M.sent_at, _M.id)
            .limit(limit)
        ).all()
    return [
        MessageItem(
            id=r.id,
            sender=label(lang, "timeline.sender", r.sender),
            sender_code=r.sender,
            text=r.body,
            at=format_local(r.sent_at, with_seconds=True),
        )
        for r in rows
    ]
