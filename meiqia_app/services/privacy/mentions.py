"""Mentions of customers being erased in other customers' records.

An erasure wipes a customer's own notes and messages, but an agent may have
written "张三 (13812345678) referred her sister" in the sister's note, or the
sister may have typed her e-mail address into her own chat. Before an
erasure the admin gets the list of other customers' notes and chat messages
that contain the erased customers' name, phone or e-mail (:func:`search`,
shown in the cleanup wizard's dry run with a snippet to judge by) and ticks
the ones to redact; the erasure then replaces those values in the ticked
records, in its own transaction (:func:`redact_records`), and its report and
audit entry say what was found and what was done (record references only).

The search reads the note and message tables once per value (a substring
search, no index can serve it), so it runs for up to
:data:`MAX_CUSTOMERS` customers at a time; a bigger erasure reports that it
did not search. Matching ignores case; values shorter than two characters
are not searched (they would match everywhere).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from sqlalchemy import or_, select, update

from meiqia_app.models import Conversation, Customer, Message, Note
from meiqia_app.timeutil import utcnow

MAX_CUSTOMERS = 20
MAX_FOUND = 200
SNIPPET_CHARS = 30
MIN_LENGTH = 2
REDACTED_MARK = "[已删除]"
KINDS = ("note", "message")
FIELDS = ("name", "phone", "email")

C = Customer.__table__.c
_N, _M, _CV = Note.__table__.c, Message.__table__.c, Conversation.__table__.c
_KEY = re.compile(r"^(note|message):([1-9]\d{0,17})$")


@dataclasses.dataclass
class Mention:
    kind: str  # note | message
    record_id: int
    customer_id: int  # whose note / conversation it is
    erased_ids: list[int]  # the customers being erased it mentions
    fields: list[str]  # which of their values: name | phone | email
    snippet: str = ""  # around the first mention, for the review (never stored)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.record_id}"


def parse_keys(raw: Iterable[object], limit: int | None = MAX_FOUND) -> set[str]:
    """Record references ("note:12", "message:7") as sent by the browser, checked; others dropped.

    ``limit``: at most that many (what one review can show); None for the ledger's own lists.
    """
    keys = set()
    for value in raw or ():
        if limit is not None and len(keys) >= limit:
            break
        if isinstance(value, str) and _KEY.match(value):
            keys.add(value)
    return keys


Terms = dict[int, list[tuple[str, str]]]  # customer id -> [(field, value)]


def terms_of(session, ids: Sequence[int]) -> Terms:
    """The values to look for, read before the customers are wiped (erased customers have none left)."""
    found: Terms = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(C.id, C.name, C.phone, C.email).where(
                C.id.in_(list(ids[start : start + 500])), C.erased_at.is_(None)
            )
        ).all()
        for row in rows:
            values = [(field, str(getattr(row, field)).strip()) for field in FIELDS if getattr(row, field)]
            values = [(field, value) for field, value in values if len(value) >= MIN_LENGTH]
            if values:
                found[row.id] = values
    return found


def _matches(text: str, terms: Terms) -> tuple[list[int], list[str], int]:
    """(customers mentioned, fields, position of the first mention) in ``text``."""
    folded = text.casefold()
    customers, fields, first = [], [], -1
    for customer_id, values in terms.items():
        for field, value in values:
            at = folded.find(value.casefold())
            if at < 0:
                continue
            if customer_id not in customers:
                customers.append(customer_id)
            if field not in fields:
                fields.append(field)
            first = at if first < 0 else min(first, at)
    return customers, fields, first


def _snippet(text: str, at: int) -> str:
    start = max(0, at - SNIPPET_CHARS)
    end = min(len(text), at + SNIPPET_CHARS * 2)
    return ("…" if start else "") + text[start:end].replace("\n", " ") + ("…" if end < len(text) else "")


def search(session, ids: Sequence[int], terms: Terms | None = None, snippets: bool = False) -> list[Mention]:
    """Other customers' notes and messages that contain a value of ``ids`` (at most MAX_FOUND)."""
    terms = terms_of(session, ids) if terms is None else terms
    values = {value for found in terms.values() for _field, value in found}
    if not values:
        return []
    excluded = list(ids)
    sources = (
        (
            "note",
            select(_N.id, _N.customer_id, _N.body).where(
                _N.customer_id.not_in(excluded), or_(*[_N.body.icontains(v, autoescape=True) for v in values])
            ),
            _N.id,
        ),
        (
            "message",
            select(_M.id, _CV.customer_id, _M.body)
            .join(Conversation.__table__, _CV.id == _M.conversation_id)
            .where(_CV.customer_id.not_in(excluded), or_(*[_M.body.icontains(v, autoescape=True) for v in values])),
            _M.id,
        ),
    )
    found: list[Mention] = []
    for kind, statement, order in sources:
        for record_id, owner, body in session.execute(statement.order_by(order).limit(MAX_FOUND - len(found))):
            customers, fields, first = _matches(body or "", terms)
            if customers:
                found.append(
                    Mention(kind, record_id, owner, customers, fields, _snippet(body, first) if snippets else "")
                )
        if len(found) >= MAX_FOUND:
            break
    return found


def redact_records(session, terms: Terms, keys: Iterable[str]) -> dict[str, list[int]]:
    """Replace the values of ``terms`` in the chosen records; returns changed record -> customers it named.

    Only the erased customers' values are replaced, so a record reference sent
    by the browser can change nothing else.
    """
    pairs = sorted(
        {(customer_id, value) for customer_id, values in terms.items() for _field, value in values},
        key=lambda pair: len(pair[1]),
        reverse=True,
    )
    if not pairs:
        return {}
    changed: dict[str, list[int]] = {}
    for key in sorted(parse_keys(keys, limit=None)):
        kind, record_id = key.split(":")
        table = Note.__table__ if kind == "note" else Message.__table__
        body = session.execute(select(table.c.body).where(table.c.id == int(record_id))).scalar()
        if not body:
            continue
        new, named = body, []
        for customer_id, value in pairs:
            new, count = re.subn(re.escape(value), REDACTED_MARK, new, flags=re.IGNORECASE)
            if count and customer_id not in named:
                named.append(customer_id)
        if new != body:
            stamp = {"updated_at": utcnow()} if kind == "note" else {}
            session.execute(update(table).where(table.c.id == int(record_id)).values(body=new, **stamp))
            changed[key] = sorted(named)
    return changed
