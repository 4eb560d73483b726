"""The customer list query (CUST-1..3): search, filters, sort, keyset pages.

A :class:`ListQuery` is what a person set up on the list page; it is also what
a saved view stores and what bulk actions and exports receive as "all N
matching". It is validated when built from untrusted input (``from_dict``),
and it is turned into SQL only here, from allowlisted columns.

Matching rules by role. What a role may match is what it may see: a result
set that depends on a hidden character would give that character away, one
search at a time (138****5678: "张三 1380", "张三 1381", … keep the digit that
still finds 张三). ``ListQuery.full_contact_search`` says which rules apply;
it is set from the acting user by ``for_actor`` (services call it through
customer_list.scoped_query) and is False (the masked rules) otherwise.

- With customer.view_sensitive: every term is a substring of the name,
  pinyin, initials, external id, visitor id, phone or e-mail; filters and
  sorts on every column.
- Without it (phone, e-mail and amounts shown masked):
  - a full phone number, typed in any format (+86 151 7396 9244), matches
    that stored number exactly; a whole e-mail address matches that address
    exactly (letter case aside);
  - any other term is a substring of the name, pinyin, initials, external
    id, visitor id, or of the phone and e-mail *as the role sees them*
    (138****5678, z***@qq.com: the visible first digits / area code, the last
    four digits, the first character, the domain). The searchable visible
    part is built by the masking functions themselves, so the two cannot
    drift apart (services/customers/search_text.build_search_text);
  - no filter or sort on a value shown masked (the amount spent).
  Ranking and the "why it matched" labels use only the same visible values.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, case, exists, false, func, or_, select, tuple_
from sqlalchemy.sql import Select

from meiqia_app.dbadapter.base import escape_like
from meiqia_app.models import Customer, CustomerSearch, Order, TagAssignment
from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import (
    IN_TRASH,
    IN_WORKING_SET_INDEXES,
    LIFECYCLE_STAGES,
    MEMBERSHIP_TIERS,
    SOURCES,
    STATUS_TRASHED,
    STATUSES,
)
from meiqia_app.services.customers.search_text import SearchTerms, parse_query
from meiqia_app.services.errors import ValidationError
from meiqia_app.timeutil import local_day_start_utc

if TYPE_CHECKING:  # customer_access builds on this module's status_condition
    from meiqia_app.services.customers.access import CustomerAccess

C = Customer.__table__.c
CS = CustomerSearch.__table__.c
TA = TagAssignment.__table__.c
OC = Order.__table__.c

# Sortable columns: the key the UI sends -> the column, and whether it can be NULL.
SORTS: dict[str, tuple[str, bool]] = {
    "last_active_at": ("last_active_at", False),
    "registered_at": ("registered_at", False),
    "last_purchase_at": ("last_purchase_at", True),
    "total_spent": ("total_spent_cents", False),
    "order_count": ("order_count", False),
    "name": ("name_pinyin", False),
    # The open API's sync walk (updated_since); not offered on the list page.
    "updated_at": ("updated_at", False),
}
PAGE_SIZES = (20, 50, 100)
STATUS_CHOICES = ("active", "archived", "trashed", "all")
CONSENT_CHOICES = ("", "yes", "no")
OWNER_CHOICES = ("", "mine", "pool")
MAX_TAG_FILTER = 20
MAX_IDS = 10_000
# Filters and sorts on values that roles without customer.view_sensitive see
# masked (the amount spent): such roles may not use them.
HIDDEN_VALUE_FILTERS = ("spent_min", "spent_max")
HIDDEN_VALUE_SORTS = ("total_spent",)
# Match ranks: an exact phone / e-mail match, then a phone ending in the typed
# digits, then the rest.
RANK_EXACT, RANK_SUFFIX, RANK_OTHER = 0, 1, 2


def _parse_date(value, field: str) -> str:
    if value in (None, ""):
        return ""
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValidationError.single(field, "error.bad_date") from None


def _parse_moment(value, field: str) -> str:
    """An ISO 8601 date-time (a naive one is UTC) as UTC ISO text; "" for none."""
    if value in (None, ""):
        return ""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError.single(field, "error.bad_date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def _parse_number(value, field: str, integer: bool = False):
    if value in (None, ""):
        return None
    try:
        number = int(value) if integer else round(float(value), 2)
    except (TypeError, ValueError):
        raise ValidationError.single(field, "error.bad_number") from None
    if number < 0 or number > 10**12:
        raise ValidationError.single(field, "error.bad_number")
    return number


def _choices(values, allowed: Sequence[str], field: str) -> tuple[str, ...]:
    if values in (None, ""):
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        # A crafted event may send a number or an object: iterating it would
        # raise TypeError (or accept a dict's keys) instead of refusing it.
        raise ValidationError.single(field, "error.bad_choice")
    result = []
    for value in values:
        if value not in allowed:
            raise ValidationError.single(field, "error.bad_choice")
        if value not in result:
            result.append(value)
    return tuple(result)


def _ids(values, field: str, limit: int) -> tuple[int, ...]:
    if values in (None, ""):
        return ()
    try:
        ids = tuple(dict.fromkeys(int(v) for v in values))
    except (TypeError, ValueError):
        raise ValidationError.single(field, "error.bad_choice") from None
    if len(ids) > limit or any(i <= 0 for i in ids):
        raise ValidationError.single(field, "error.bad_choice")
    return ids


def _text(value, limit: int) -> str:
    return str(value or "").strip()[:limit]


# --- custom fields (issue 23): named by key, never by label ---------------------------------------
CUSTOM_PREFIX = "cf."
CUSTOM_OPERATORS = ("equals", "any_of", "range", "empty", "not_empty")
MAX_CUSTOM_FILTERS = 10
MAX_CUSTOM_VALUE_CHARS = 200
MAX_CUSTOM_ANY_OF = 50
_CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{1,39}")


@dataclasses.dataclass(frozen=True)
class CustomFilter:
    """One filter on a custom field: its key, the operator, the value (a tuple for any of / range).
    Checked against the definitions when the SQL is built (services/customers/list_fields.py)."""

    key: str
    op: str
    value: object = None


def custom_sort_key(sort: object) -> str | None:
    """The field key of a sort by a custom field ("cf.<key>"), else None."""
    if isinstance(sort, str) and sort.startswith(CUSTOM_PREFIX):
        key = sort[len(CUSTOM_PREFIX) :]
        return key if _CUSTOM_KEY.fullmatch(key) else None
    return None


def _custom_scalar(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= MAX_CUSTOM_VALUE_CHARS and "\x00" not in value:
        return value.strip()
    raise ValidationError.single("custom_filters", "error.bad_choice")


def parse_custom_filters(raw: object) -> tuple[CustomFilter, ...]:
    """The custom filters of an untrusted query, by shape (key, operator, value), one per field."""
    if raw in (None, "", [], ()):
        return ()
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_CUSTOM_FILTERS:
        raise ValidationError.single("custom_filters", "error.bad_choice")
    found: dict[str, CustomFilter] = {}
    for item in raw:
        if isinstance(item, CustomFilter):
            item = dataclasses.asdict(item)
        if not isinstance(item, dict):
            raise ValidationError.single("custom_filters", "error.bad_choice")
        key, op, value = item.get("key"), item.get("op"), item.get("value")
        if not isinstance(key, str) or not _CUSTOM_KEY.fullmatch(key) or op not in CUSTOM_OPERATORS:
            raise ValidationError.single("custom_filters", "error.bad_choice")
        if op in ("empty", "not_empty"):
            value = None
        elif op == "range":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValidationError.single("custom_filters", "error.bad_choice")
            value = (_custom_scalar(value[0]), _custom_scalar(value[1]))
            if all(v in (None, "") for v in value):
                raise ValidationError.single("custom_filters", "error.bad_choice")
        elif op == "any_of":
            items = value if isinstance(value, (list, tuple)) else [value]
            items = [_custom_scalar(v) for v in items]
            items = [v for v in items if v not in (None, "")]
            if not items or len(items) > MAX_CUSTOM_ANY_OF:
                raise ValidationError.single("custom_filters", "error.bad_choice")
            value = tuple(dict.fromkeys(items))
        else:
            value = _custom_scalar(value)
            if value in (None, ""):
                raise ValidationError.single("custom_filters", "error.bad_choice")
        found[key] = CustomFilter(key, op, value)
    return tuple(found.values())


@dataclasses.dataclass(frozen=True)
class ListQuery:
    q: str = ""
    tags_any: tuple[int, ...] = ()
    tags_all: tuple[int, ...] = ()
    tags_none: tuple[int, ...] = ()
    lifecycle: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    # Customers with at least one order in any of these statuses (已付款 = paid).
    order_statuses: tuple[str, ...] = ()
    province: str = ""
    city: str = ""
    registered_from: str = ""
    registered_to: str = ""
    active_from: str = ""
    active_to: str = ""
    purchase_from: str = ""
    purchase_to: str = ""
    spent_min: float | None = None
    spent_max: float | None = None
    orders_min: int | None = None
    orders_max: int | None = None
    consent_marketing: str = ""
    # Owner (负责人) filters: "mine" (the acting user's), "pool" (公海: no owner) or "";
    # owner_ids: these users' customers; team_ids: customers owned by these teams' members.
    owner: str = ""
    owner_ids: tuple[int, ...] = ()
    team_ids: tuple[int, ...] = ()
    # Customers whose profile changed at or after this moment (ISO 8601, UTC): the open API.
    updated_since: str = ""
    status: str = "active"
    sort: str = "last_active_at"
    direction: str = "desc"
    # Filters on custom fields, by key (a sort by one: sort = "cf.<key>").
    custom_filters: tuple[CustomFilter, ...] = ()
    # Which matching rules apply (see the module doc); set by for_actor, never
    # from untrusted input, not stored in saved views or export scopes.
    full_contact_search: bool = False
    # Who "mine" is: set by for_actor, never from untrusted input, not stored.
    owner_me: int | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> ListQuery:
        """Build from untrusted input (browser events, saved views); raises ValidationError."""
        data = data or {}
        if not isinstance(data, dict):
            raise ValidationError.single("query", "error.bad_choice")
        status = data.get("status") or "active"
        sort = data.get("sort") or "last_active_at"
        direction = data.get("direction") or "desc"
        if status not in STATUS_CHOICES:
            raise ValidationError.single("status", "error.bad_choice")
        if sort not in SORTS and custom_sort_key(sort) is None:
            raise ValidationError.single("sort", "error.bad_choice")
        if direction not in ("asc", "desc"):
            raise ValidationError.single("direction", "error.bad_choice")
        consent = data.get("consent_marketing") or ""
        if consent not in CONSENT_CHOICES:
            raise ValidationError.single("consent_marketing", "error.bad_choice")
        owner = data.get("owner") or ""
        if owner not in OWNER_CHOICES:
            raise ValidationError.single("owner", "error.bad_choice")
        return cls(
            q=_text(data.get("q"), 100),
            tags_any=_ids(data.get("tags_any"), "tags_any", MAX_TAG_FILTER),
            tags_all=_ids(data.get("tags_all"), "tags_all", MAX_TAG_FILTER),
            tags_none=_ids(data.get("tags_none"), "tags_none", MAX_TAG_FILTER),
            lifecycle=_choices(data.get("lifecycle"), LIFECYCLE_STAGES, "lifecycle"),
            tiers=_choices(data.get("tiers"), MEMBERSHIP_TIERS, "tiers"),
            sources=_choices(data.get("sources"), SOURCES, "sources"),
            order_statuses=_choices(data.get("order_statuses"), ORDER_STATUSES, "order_statuses"),
            province=_text(data.get("province"), 32),
            city=_text(data.get("city"), 32),
            registered_from=_parse_date(data.get("registered_from"), "registered_from"),
            registered_to=_parse_date(data.get("registered_to"), "registered_to"),
            active_from=_parse_date(data.get("active_from"), "active_from"),
            active_to=_parse_date(data.get("active_to"), "active_to"),
            purchase_from=_parse_date(data.get("purchase_from"), "purchase_from"),
            purchase_to=_parse_date(data.get("purchase_to"), "purchase_to"),
            spent_min=_parse_number(data.get("spent_min"), "spent_min"),
            spent_max=_parse_number(data.get("spent_max"), "spent_max"),
            orders_min=_parse_number(data.get("orders_min"), "orders_min", integer=True),
            orders_max=_parse_number(data.get("orders_max"), "orders_max", integer=True),
            consent_marketing=consent,
            owner=owner,
            owner_ids=_ids(data.get("owner_ids"), "owner_ids", MAX_TAG_FILTER),
            team_ids=_ids(data.get("team_ids"), "team_ids", MAX_TAG_FILTER),
            updated_since=_parse_moment(data.get("updated_since"), "updated_since"),
            status=status,
            sort=sort,
            direction=direction,
            custom_filters=parse_custom_filters(data.get("custom_filters")),
        )

    def to_dict(self) -> dict:
        data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        data["custom_filters"] = [
            {"key": f.key, "op": f.op, "value": list(f.value) if isinstance(f.value, tuple) else f.value}
            for f in self.custom_filters
        ]
        data.pop("full_contact_search")
        data.pop("owner_me")
        return data

    def signature(self) -> str:
        """Stable identity of the matching set (sort excluded): the count cache key.

        Includes the matching rules: the same text finds different customers
        for a role that sees contact data and one that does not.
        """
        data = self.to_dict()
        data.pop("sort")
        data.pop("direction")
        data["full_contact_search"] = self.full_contact_search
        if self.owner == "mine":
            data["owner_me"] = self.owner_me
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def for_actor(self, actor) -> ListQuery:
        """This query under the matching rules of ``actor``'s role."""
        return dataclasses.replace(
            self, full_contact_search=actor.can("customer.view_sensitive"), owner_me=actor.user_id
        )

    def hidden_value_filters(self) -> list[str]:
        """The filters and sort of this query on values shown masked to roles without customer.view_sensitive."""
        used = [name for name in HIDDEN_VALUE_FILTERS if getattr(self, name) is not None]
        return used + (["sort"] if self.sort in HIDDEN_VALUE_SORTS else [])

    @property
    def terms(self) -> SearchTerms:
        return parse_query(self.q)

    def has_filters(self) -> bool:
        """Anything beyond the status narrows the set."""
        base = ListQuery(
            status=self.status,
            sort=self.sort,
            direction=self.direction,
            full_contact_search=self.full_contact_search,
            owner_me=self.owner_me,
        )
        return dataclasses.replace(self, sort=base.sort, direction=base.direction) != base


def _day_range(column: ColumnElement, start: str, end: str) -> list[ColumnElement]:
    conditions = []
    if start:
        conditions.append(column >= local_day_start_utc(dt.date.fromisoformat(start)))
    if end:
        conditions.append(column < local_day_start_utc(dt.date.fromisoformat(end) + dt.timedelta(days=1)))
    return conditions


def status_condition(status: str) -> ColumnElement:
    """Customers of one status ("all": the working set, active and archived).

    Carries the literal condition of the (SQLite partial) index it should use;
    see models/customer.py.
    """
    if status == "all":
        return and_(C.status.in_(("active", "archived")), IN_WORKING_SET_INDEXES)
    if status not in STATUSES:
        raise ValidationError.single("status", "error.bad_choice")
    if status == STATUS_TRASHED:
        return IN_TRASH  # the trash index's condition is the status itself
    return and_(C.status == status, status_index_condition(status))


def status_index_condition(status: str) -> ColumnElement:
    """The literal condition of the (SQLite partial) index holding ``status``'s customers.

    SQLite checks a partial index against each branch of an OR on its own, so a
    keyset condition that is an OR repeats it in every branch (without it the
    walk by a nullable column reads all of the status's rows for every page).
    """
    return IN_TRASH if status == STATUS_TRASHED else IN_WORKING_SET_INDEXES


def order_status_condition(statuses: Sequence[str]) -> ColumnElement:
    """The customer has an order in one of ``statuses``.

    A correlated EXISTS, answered per customer row by one seek into the
    covering index ix_order_report_customer_paid (customer_id, status, paid_at):
    a page walks the sort index and stops after 51 matches (1-16 ms at 1M
    customers / 1.9M orders on SQLite). An exact count probes every customer
    of the status (0.6-0.8 s on SQLite at 1M; PostgreSQL hashes the orders
    instead, 60-290 ms at 200k). ``id IN (customers with such orders)`` would
    count a rare status faster on SQLite (0.2 s) but paid, the usual choice,
    much slower (4 s: 1.6M order rows to materialise).
    """
    if not statuses or any(status not in ORDER_STATUSES for status in statuses):
        raise ValidationError.single("order_statuses", "error.bad_choice")
    return exists().where(OC.customer_id == C.id, OC.status.in_(tuple(statuses)))


def filter_conditions(
    access: CustomerAccess, query: ListQuery, driving_tags: tuple[int, ...] = (), range_conn=None
) -> list[ColumnElement]:
    """Every condition of the query except the text search, within ``access``'s reach.

    The status comes first, as access.status_conditions gives it (the literal
    condition of its partial index, then the actor's scope).

    ``driving_tags`` (the query's tags_any, or one tag of tags_all) are written
    as ``id IN (customers with the tag)`` instead of a correlated EXISTS, so
    the database reads the tag's few customers and sorts them rather than
    walking the sort index and probing every row (see customer_list).

    ``range_conn``: a page in the list's order is being read: a range on a custom
    field chooses between its index and the sort index (custom_field_values.range_condition).
    """
    conditions: list[ColumnElement] = access.status_conditions(query.status)
    if query.lifecycle:
        conditions.append(C.lifecycle_stage.in_(query.lifecycle))
    if query.tiers:
        conditions.append(C.membership_tier.in_(query.tiers))
    if query.sources:
        conditions.append(C.source.in_(query.sources))
    if query.order_statuses:
        conditions.append(order_status_condition(query.order_statuses))
    if query.province:
        conditions.append(C.province == query.province)
    if query.city:
        conditions.append(C.city == query.city)
    conditions += _day_range(C.registered_at, query.registered_from, query.registered_to)
    conditions += _day_range(C.last_active_at, query.active_from, query.active_to)
    conditions += _day_range(C.last_purchase_at, query.purchase_from, query.purchase_to)
    if query.spent_min is not None:
        conditions.append(C.total_spent_cents >= int(round(query.spent_min * 100)))
    if query.spent_max is not None:
        conditions.append(C.total_spent_cents <= int(round(query.spent_max * 100)))
    if query.orders_min is not None:
        conditions.append(C.order_count >= query.orders_min)
    if query.orders_max is not None:
        conditions.append(C.order_count <= query.orders_max)
    if query.consent_marketing:
        conditions.append(C.consent_marketing.is_(query.consent_marketing == "yes"))
    if query.updated_since:
        conditions.append(C.updated_at >= dt.datetime.fromisoformat(query.updated_since))
    conditions += owner_conditions(access, query)
    if query.tags_any:
        if driving_tags == query.tags_any:
            conditions.append(C.id.in_(select(TA.customer_id).where(TA.tag_id.in_(query.tags_any))))
        else:
            conditions.append(exists().where(TA.customer_id == C.id, TA.tag_id.in_(query.tags_any)))
    for tag_id in query.tags_all:
        if driving_tags == (tag_id,):
            conditions.append(C.id.in_(select(TA.customer_id).where(TA.tag_id == tag_id)))
        else:
            conditions.append(exists().where(TA.customer_id == C.id, TA.tag_id == tag_id))
    if query.tags_none:
        conditions.append(~exists().where(TA.customer_id == C.id, TA.tag_id.in_(query.tags_none)))
    if query.custom_filters:
        # Late: list_fields builds on this module (and on customer_access, which imports it).
        from meiqia_app.services.customers import list_fields

        conditions += list_fields.conditions(access, query.custom_filters, range_conn, conditions)
    return conditions


def owner_conditions(access: CustomerAccess, query: ListQuery) -> list[ColumnElement]:
    """The owner filters: "mine" (owner = the acting user), "pool" (no owner), owners, teams.

    Each is an equality or IN on owner_id: ix_customer_status_owner (status,
    owner_id, last_active_at, id) walks it in the list's default order.
    """
    conditions: list[ColumnElement] = []
    if query.owner == "mine":
        me = access.actor.user_id
        conditions.append(C.owner_id == me if me is not None else false())
    elif query.owner == "pool":
        conditions.append(C.owner_id.is_(None))
    if query.owner_ids:
        conditions.append(C.owner_id.in_(query.owner_ids))
    if query.team_ids:
        from meiqia_app.models import User

        members = select(User.__table__.c.id).where(User.__table__.c.team_id.in_(query.team_ids))
        conditions.append(C.owner_id.in_(members))
    return conditions


# --- search --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """How the query's text search is answered under its matching rules.

    ``substring``: terms matched as substrings of both search texts
    (``everything``) or of the public text alone. ``phones``: stored numbers
    matched exactly; ``emails``: addresses matched exactly (letter case aside).
    """

    substring: tuple[str, ...]
    everything: bool
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.substring or self.phones or self.emails)


def search_plan(query: ListQuery) -> SearchPlan:
    terms = query.terms
    if query.full_contact_search:
        return SearchPlan(terms.terms, everything=True)
    phones = dict(terms.phones)
    substring = tuple(t for t in terms.terms if t not in phones and t not in terms.emails)
    return SearchPlan(
        substring,
        everything=False,
        phones=tuple(dict.fromkeys(phones[t] for t in terms.terms if t in phones)),
        emails=terms.emails,
    )


def exact_phone_condition(phones: Sequence[str]) -> ColumnElement:
    """The stored phone is one of ``phones`` (ix_customer_phone)."""
    return C.phone.in_(tuple(phones))


def rank_expression(query: ListQuery) -> ColumnElement | None:
    """RANK_EXACT / RANK_SUFFIX / RANK_OTHER for each matching customer, or None
    when the query has nothing to rank by (no phone digits, no whole address).

    A suffix is judged on what the role sees: the full phone with
    customer.view_sensitive, the masked phone (its visible last digits) without.
    """
    terms = query.terms
    whens = []
    if terms.phones:
        whens.append((exact_phone_condition([stored for _term, stored in terms.phones]), RANK_EXACT))
    if terms.emails:
        whens.append((func.lower(C.email).in_(terms.emails), RANK_EXACT))
    if len(terms.digits) >= 3:
        pattern = "%" + escape_like(terms.digits)
        if query.full_contact_search:
            suffix = C.phone.like(pattern, escape="\\")
        else:
            suffix = exists().where(CS.customer_id == C.id, CS.phone_mask.like(pattern, escape="\\"))
        whens.append((suffix, RANK_SUFFIX))
    if not whens:
        return None
    return case(*whens, else_=RANK_OTHER)


# --- cursors ------------------------------------------------------------------------


def encode_cursor(sort_value, row_id: int, rank: int | None = None) -> str:
    if isinstance(sort_value, dt.datetime):
        value = {"t": sort_value.isoformat()}
    else:
        value = {"v": sort_value}
    position = [value, row_id] if rank is None else [value, row_id, rank]
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[object, int]:
    """The (sort value, id) a cursor points at; anything malformed is refused."""
    sort_value, row_id, _rank = decode_ranked_cursor(cursor, sort)
    return sort_value, row_id


def decode_ranked_cursor(cursor: str, sort: str) -> tuple[object, int, int | None]:
    """The (sort value, id, match rank or None) a cursor points at."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(position, list) or len(position) not in (2, 3):
            raise ValueError
        value, row_id = position[0], int(position[1])
        rank = position[2] if len(position) == 3 else None
        if rank is not None and (type(rank) is not int or rank not in (RANK_EXACT, RANK_SUFFIX, RANK_OTHER)):
            raise ValueError
        if "t" in value:
            sort_value = dt.datetime.fromisoformat(value["t"])
        else:
            sort_value = value["v"]
            if sort_value is not None and not isinstance(sort_value, (int, float, str)):
                raise ValueError
    except (ValueError, TypeError, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError.single("cursor", "error.bad_cursor") from None
    column_name, nullable = SORTS[sort]
    if sort_value is None and not nullable:
        raise ValidationError.single("cursor", "error.bad_cursor")
    return sort_value, row_id, rank


def after_condition(sort: str, descending: bool, sort_value, row_id: int, status: str = "active") -> ColumnElement:
    """Rows strictly after (value, id) in the order (col, id) [desc|asc], for a list of ``status``.

    SQLite sorts NULL first, so a descending walk meets NULLs last and an
    ascending walk meets them first; the PostgreSQL query states NULLS
    FIRST/LAST explicitly to walk the same way.
    """
    column_name, nullable = SORTS[sort]
    return keyset_after(C[column_name], nullable, descending, sort_value, row_id, status_index_condition(status))


def keyset_after(
    column, nullable: bool, descending: bool, sort_value, row_id: int, index_condition: ColumnElement
) -> ColumnElement:
    """Rows strictly after (value, id) in the walk order.

    ``index_condition`` goes into both branches of the descending walk's OR
    (rows below the cursor, or NULL): each branch is then a range of the
    partial index. (The ascending walk from NULL plans as before without it.)
    """
    pair = tuple_(column, C.id)
    if sort_value is None:
        if descending:
            return and_(column.is_(None), C.id < row_id)
        return or_(and_(column.is_(None), C.id > row_id), column.is_not(None))
    if descending:
        condition = pair < tuple_(sort_value, row_id)
        if not nullable:
            return condition
        return or_(and_(condition, index_condition), and_(column.is_(None), index_condition))
    return pair > tuple_(sort_value, row_id)


def order_by(sort: str, descending: bool) -> list:
    column_name, nullable = SORTS[sort]
    column = C[column_name]
    if descending:
        ordered = [column.desc().nulls_last() if nullable else column.desc(), C.id.desc()]
    else:
        ordered = [column.asc().nulls_first() if nullable else column.asc(), C.id.asc()]
    return ordered


def base_select(columns: Sequence, conditions: Sequence[ColumnElement]) -> Select:
    query = select(*columns).select_from(Customer.__table__)
    if conditions:
        query = query.where(and_(*conditions))
    return query


def never() -> ColumnElement:
    return false()
