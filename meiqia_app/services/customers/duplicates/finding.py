"""Duplicate customers: finding them (CUST-dup); merging is merging.py.

Finding. Customers are duplicates when they share a phone, an e-mail
(compared case-insensitively) or a name in the same city. Each kind walks its
index in key order (``ix_customer_phone``, ``ix_customer_email``,
``ix_customer_name_city``): ``GROUP BY key HAVING count(*) > 1`` over the index
alone (no table rows are read), from the key after the previous page on. That
count includes trashed customers, so the candidates' members are then read by
key and only groups with at least two customers that are not trashed are kept
(a merged pair shows up as a candidate and is dropped here). A page of 50
groups costs a few milliseconds on 1,000,000 customers; see
``_candidate_keys`` for the e-mail case.

Merging. One transaction checks every customer's version, copies the chosen
field values onto the survivor, moves orders, conversations (their messages
follow), behaviour events and notes, unites the tags people gave, recomputes the
survivor's purchase figures and moves the others to the trash: their rows
stay (recoverable, nothing is deleted) and the audit entry records their
full field values (sensitive ones masked), what moved and which customer
every field came from. After the commit the survivor's rule tags and
lifecycle stage are recomputed from its merged data (services/tags/rules/runs.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Connection, and_, func, or_, select, tuple_

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.models.customer import STATUS_TRASHED
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.validation import normalize_phone
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import format_local

C = Customer.__table__.c

KINDS = ("phone", "email", "name_city")
KIND_LABEL_KEYS = {"phone": "dup.kind.phone", "email": "dup.kind.email", "name_city": "dup.kind.name_city"}
MAX_PAGE_SIZE = 200
MEMBERS_PER_GROUP = 10


# --- DTOs ------------------------------------------------------------------------------------


@dataclasses.dataclass
class DuplicateMember:
    id: int
    name: str
    phone: str
    email: str
    city: str
    order_count: int
    last_active: str
    status: str  # active | archived


@dataclasses.dataclass
class DuplicateGroup:
    kind: str
    key: str  # what the members share, as the actor may see it (phone and e-mail masked without view_sensitive)
    size: int  # customers in the group that are not trashed
    members: list[DuplicateMember]  # the first MEMBERS_PER_GROUP by id


@dataclasses.dataclass
class DuplicatePage:
    kind: str
    groups: list[DuplicateGroup]
    # Pass back as ``after_key`` for the next page; "" on the last page. Opaque
    # (encrypted): the key is a phone or e-mail the actor may not be allowed to see.
    next_key: str = ""


# --- finding ---------------------------------------------------------------------------------


def _cursor_fernet() -> Fernet:
    digest = hashlib.sha256(("duplicate-cursor:" + get_settings().secret_key).encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _encode_key(kind: str, key) -> str:
    raw = json.dumps({"k": kind, "v": key}, ensure_ascii=False, separators=(",", ":"))
    return _cursor_fernet().encrypt(raw.encode("utf-8")).decode("ascii")


def _decode_key(kind: str, token: str):
    """The raw key a ``next_key`` token stands for; anything else is refused."""
    if not token:
        return None
    try:
        data = json.loads(_cursor_fernet().decrypt(str(token).encode("ascii")))
        value = data["v"]
        if data["k"] != kind:
            raise ValueError
        if kind.endswith(FIRST_ID_SUFFIX):
            if type(value) is not int or value < 0:
                raise ValueError
            return value
        if kind == "name_city":
            name, city = value
            if not (isinstance(name, str) and isinstance(city, str)):
                raise ValueError
            return (name, city)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (InvalidToken, ValueError, TypeError, KeyError, UnicodeError):
        raise ValidationError.single("cursor", "error.bad_cursor") from None


def _ascii_lower(text: str) -> str:
    """SQL lower() as SQLite and PostgreSQL (C collation) apply it to e-mail addresses."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _email_ranges(after: str, upto: str | None) -> list[tuple[str | None, str | None, bool]]:
    """Stretches of ``ix_customer_email`` (low, high, high included) that hold every
    address whose lower() lies in (after, upto].

    Lower-casing only raises bytes (A-Z -> a-z), so an address sorts at or before
    its lower-case form: nothing after ``upto`` qualifies. When ``after`` and
    ``upto`` start with the same character c, so does every key between them,
    and an address is either c... up to ``upto`` or, for a letter, C....
    """
    first = after[:1]
    if upto is not None and first and upto[:1] == first:
        ranges = [(first, upto, True)]
        if "a" <= first <= "z":
            capital = first.upper()
            ranges.append((capital, chr(ord(capital) + 1), False))
        return ranges
    return [(None, upto, True)]


def _capitalised_emails(conn: Connection, after: str, upto: str | None) -> dict[str, list[str]]:
    """lower(email) -> its spellings with capitals, for keys in (after, upto].

    The lower-case twin of "Zhang@qq.com" sits elsewhere in the index, so such
    addresses cannot be found by walking the index in key order; they are read
    from the stretches ``_email_ranges`` names (index only). Normally one page
    of keys shares its first character and that is a few percent of the
    index; the last page (no ``upto``) reads the whole index (about 0.2 s on
    1,000,000 customers). Capitalised addresses are rare: the seed has none,
    but normalize_email keeps the local part's case.
    """
    lowered = func.lower(C.email)
    spellings: dict[str, set[str]] = defaultdict(set)
    for low, high, inclusive in _email_ranges(after, upto):
        conditions = [C.email != lowered]
        if low is not None:
            conditions.append(C.email >= low)
        if high is not None:
            conditions.append(C.email <= high if inclusive else C.email < high)
        for key, email in conn.execute(select(lowered, C.email).where(*conditions)):
            if key > after and (upto is None or key <= upto):
                spellings[key].add(email)
    return {key: sorted(values) for key, values in spellings.items()}


def _candidate_keys(conn: Connection, kind: str, after, batch: int) -> tuple[list, dict[str, list[str]]]:
    """Up to ``batch`` keys after ``after`` that occur more than once, in key order,
    and (e-mail only) the capitalised spellings of those keys.

    Index-only; counts trashed customers too, so a key may turn out to have
    fewer than two live members. Never misses a key that has two.
    E-mails: the key is lower(email); all-lower-case addresses are grouped on
    the index directly and keys with capitalised spellings are joined in.
    """
    if kind == "phone":
        return list(
            conn.execute(
                select(C.phone)
                .where(C.phone > (after or ""))
                .group_by(C.phone)
                .having(func.count() > 1)
                .order_by(C.phone)
                .limit(batch)
            ).scalars()
        ), {}
    if kind == "name_city":
        conditions = [C.city.is_not(None), C.city != ""]
        if after is not None:
            # A row value: SQLite seeks ix_customer_name_city to it (the
            # equivalent "name > ? OR (name = ? AND city > ?)" scans the index).
            conditions.append(tuple_(C.name, C.city) > tuple_(*after))
        return [
            tuple(r)
            for r in conn.execute(
                select(C.name, C.city)
                .where(*conditions)
                .group_by(C.name, C.city)
                .having(func.count() > 1)
                .order_by(C.name, C.city)
                .limit(batch)
            )
        ], {}
    after = after or ""
    exact = list(
        conn.execute(
            select(C.email)
            .where(C.email > after, C.email == func.lower(C.email))
            .group_by(C.email)
            .having(func.count() > 1)
            .order_by(C.email)
            .limit(batch)
        ).scalars()
    )
    capitalised = _capitalised_emails(conn, after, exact[-1] if len(exact) == batch else None)
    keys = sorted(set(exact) | set(capitalised))[:batch]
    return keys, {key: capitalised[key] for key in keys if key in capitalised}


_MEMBER_COLUMNS = (C.id, C.name, C.phone, C.email, C.city, C.order_count, C.last_active_at, C.status)

# Cursor kinds of the walk by first customer id (roles that see phone and e-mail masked).
FIRST_ID_SUFFIX = ":first"


def _keys_by_first_id(conn: Connection, kind: str, after_id: int, batch: int) -> list[tuple[str, int]]:
    """(key, lowest customer id) of up to ``batch`` phones / lower-cased addresses
    shared by several customers, whose lowest id is above ``after_id``, by that id.

    For a role that sees phones and e-mails masked: walked in key order, the
    groups would come sorted by their hidden digits (138****5678 before
    138****1234 says the hidden 4 digits of the first are smaller), so they
    come in the order of their first customer instead, which says nothing
    about a hidden character. Each page groups the whole column (the phone
    index alone; lower(email) is sorted): at 1M customers 0.5-0.7 s a page
    of phones and 1.7-2.1 s of e-mails on SQLite, against 7-36 ms for the
    key walk. No built-in role takes this path (the roles that can merge
    see contact data); a custom one does.
    """
    column = C.phone if kind == "phone" else func.lower(C.email)
    first = func.min(C.id)
    statement = (
        select(column, first)
        .where(column.is_not(None), column != "")
        .group_by(column)
        .having(and_(func.count() > 1, first > after_id))
        .order_by(first)
        .limit(batch)
    )
    return [(key, first_id) for key, first_id in conn.execute(statement)]


def _members_by_lower_email(conn: Connection, access: CustomerAccess, keys: Sequence[str]) -> dict:
    """Live members of each lower-cased address, found through the contact search
    text (every spelling of the address is there in lower case)."""
    from meiqia_app.dbadapter import get_adapter
    from meiqia_app.dbadapter.base import SEARCH_CONTACT

    adapter = get_adapter(conn)
    members: dict = defaultdict(list)
    for key in keys:
        found = conn.execute(
            select(*_MEMBER_COLUMNS).where(
                adapter.indexed_match_condition(C.id, [key], columns=SEARCH_CONTACT),
                func.lower(C.email) == key,
                C.status != STATUS_TRASHED,
                *access.scope_conditions(),
            )
        )
        members[key] = sorted(found, key=lambda r: r.id)
    return members


def _members_by_key(
    conn: Connection, access: CustomerAccess, kind: str, keys: Sequence, capitalised: dict[str, list[str]]
) -> dict:
    """Live (not trashed) members of each key within reach, ordered by id."""
    if not keys:
        return {}
    if kind == "phone":
        where, key_of = C.phone.in_(list(keys)), (lambda r: r.phone)
    elif kind == "email":
        values = set(keys)
        for key in keys:
            values.update(capitalised.get(key, ()))
        where, key_of = C.email.in_(sorted(values)), (lambda r: _ascii_lower(r.email))
    else:
        # OR of (name = ? AND city = ?): SQLite turns it into one index lookup
        # per pair; a row-value IN becomes IN (VALUES ...), which it scans.
        where = or_(*[and_(C.name == name, C.city == city) for name, city in keys])
        key_of = lambda r: (r.name, r.city)  # noqa: E731
    # No ORDER BY: it could tempt the planner into walking the table by id.
    rows = sorted(
        conn.execute(select(*_MEMBER_COLUMNS).where(where, C.status != STATUS_TRASHED, *access.scope_conditions())),
        key=lambda r: r.id,
    )
    members: dict = defaultdict(list)
    for row in rows:
        members[key_of(row)].append(row)
    return members


def _identifies_someone(kind: str, key) -> bool:
    """Whether sharing this key says anything: a phone that is not a valid number
    in its stored form (0000000, 11111111111, 1381234 …) is junk that thousands
    of unrelated customers may share; merging them would be a disaster, and the
    cleanup page is where such values are fixed. Skipping them here also skips
    reading their members (about 3,000 each in the 1,000,000-customer seed)."""
    if kind != "phone":
        return True
    try:
        return normalize_phone(key) == key
    except ValueError:
        return False


def _member_dto(row, access: CustomerAccess) -> DuplicateMember:
    return DuplicateMember(
        id=row.id,
        name=row.name,
        phone=access.mask("phone", row.phone or ""),
        email=access.mask("email", row.email or ""),
        city=row.city or "",
        order_count=row.order_count,
        last_active=format_local(row.last_active_at),
        status=row.status,
    )


def _display_key(kind: str, key, access: CustomerAccess) -> str:
    if kind == "name_city":
        return f"{key[0]} · {key[1]}"
    return access.mask(kind, key)


def find_duplicate_groups(actor: Actor, kind: str, after_key: str = "", limit: int = 50) -> DuplicatePage:
    """One page of duplicate groups of one kind, in key order.

    ``after_key`` is the ``next_key`` of the previous page ("" for the first).
    """
    require(actor, "customer.merge", action="customer.find_duplicates", target_type="customer")
    if kind not in KINDS:
        raise ValidationError.single("kind", "error.bad_choice")
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise ValidationError.single("limit", "error.bad_choice") from None
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    access = CustomerAccess(actor)
    if not access.sees_sensitive and kind in ("phone", "email"):
        return _groups_by_first_id(access, kind, after_key, limit)
    after = _decode_key(kind, after_key)
    found: list[tuple[object, list]] = []
    with get_engine().connect() as conn:
        while len(found) <= limit:
            keys, capitalised = _candidate_keys(conn, kind, after, limit + 1)
            if not keys:
                break
            plausible = [key for key in keys if _identifies_someone(kind, key)]
            members = _members_by_key(conn, access, kind, plausible, capitalised)
            found += [(key, members[key]) for key in plausible if len(members.get(key, ())) > 1]
            after = keys[-1]
            if len(keys) < limit + 1:
                break
    groups = [
        DuplicateGroup(
            kind=kind,
            key=_display_key(kind, key, access),
            size=len(rows),
            members=[_member_dto(r, access) for r in rows[:MEMBERS_PER_GROUP]],
        )
        for key, rows in found[:limit]
    ]
    next_key = ""
    if len(found) > limit:
        last = found[limit - 1][0]
        next_key = _encode_key(kind, list(last) if kind == "name_city" else last)
    return DuplicatePage(kind=kind, groups=groups, next_key=next_key)


def _groups_by_first_id(access: CustomerAccess, kind: str, after_key: str, limit: int) -> DuplicatePage:
    """find_duplicate_groups for a role that sees phones and e-mails masked (see _keys_by_first_id)."""
    cursor_kind = kind + FIRST_ID_SUFFIX
    after = _decode_key(cursor_kind, after_key) or 0
    found: list[tuple[object, list, int]] = []
    with get_engine().connect() as conn:
        while len(found) <= limit:
            pairs = _keys_by_first_id(conn, kind, after, limit + 1)
            if not pairs:
                break
            plausible = [(key, first) for key, first in pairs if _identifies_someone(kind, key)]
            keys = [key for key, _first in plausible]
            if kind == "phone":
                members = _members_by_key(conn, access, kind, keys, {})
            else:
                members = _members_by_lower_email(conn, access, keys)
            found += [(key, members[key], first) for key, first in plausible if len(members.get(key, ())) > 1]
            after = pairs[-1][1]
            if len(pairs) < limit + 1:
                break
    groups = [
        DuplicateGroup(
            kind=kind,
            key=_display_key(kind, key, access),
            size=len(rows),
            members=[_member_dto(r, access) for r in rows[:MEMBERS_PER_GROUP]],
        )
        for key, rows, _first in found[:limit]
    ]
    next_key = _encode_key(cursor_kind, found[limit - 1][2]) if len(found) > limit else ""
    return DuplicatePage(kind=kind, groups=groups, next_key=next_key)
