"""Pages of the customer list and the number of matches (CUST-1, CUST-2).

Search strategy. The search index gives the ids of matching customers. When
the matches are few (at most the adapter's ``candidate_cap``), the page is read from exactly
those ids and sorted — a rare term costs a handful of lookups. When they are
many, the page walks the sort index and keeps matching rows — a common term
fills a page within a few hundred rows. Either way no query scans the table.

Counting. The number of matches is asked for separately, after the page is
shown. It is exact when cheap (few candidates, no filters, or cached);
otherwise a quick estimate comes first and the exact figure is computed once
per distinct query and kept for a minute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, and_, case, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.util import ClauseAdapter

from meiqia_app.db import get_engine, read_connection
from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import SEARCH_CONTACT, SEARCH_EVERYTHING, SEARCH_PUBLIC
from meiqia_app.models import AppSetting, Customer
from meiqia_app.services.custom_fields import values as custom_values
from meiqia_app.services.customers import list_fields
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.dto import CustomerRow, customer_rows
from meiqia_app.services.customers.query import (
    PAGE_SIZES,
    RANK_EXACT,
    SORTS,
    TA,
    C,
    ListQuery,
    SearchPlan,
    after_condition,
    base_select,
    decode_ranked_cursor,
    encode_cursor,
    exact_phone_condition,
    filter_conditions,
    never,
    order_by,
    rank_expression,
    search_plan,
)
from meiqia_app.services.customers.search_text import match_reasons
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.timeutil import utcnow

TAG_DRIVEN_MAX = 100_000
WALK_PAGE_ROWS = 51
ESTIMATE_SAMPLE = 8_000
ESTIMATE_WINDOWS = 8
COUNT_CACHE_SECONDS = 60
COUNT_CACHE_SIZE = 512

LIST_COLUMNS = (
    C.id,
    C.name,
    C.phone,
    C.email,
    C.province,
    C.city,
    C.source,
    C.lifecycle_stage,
    C.membership_tier,
    C.last_active_at,
    C.registered_at,
    C.last_purchase_at,
    C.total_spent_cents,
    C.order_count,
    C.status,
    C.name_pinyin,
    C.external_id,
    C.visitor_id,
    C.updated_at,  # the open API's walk by update time
    C.owner_id,
    C.custom_fields,  # custom columns (issue 23): the document comes with the row
)


@dataclasses.dataclass
class CustomerPage:
    rows: list[CustomerRow]
    next_cursor: str = ""
    prev_cursor: str = ""
    too_short: bool = False  # the query was one or two digits: ask for more
    # The customer data's generation when the page was read (see data_version).
    data_version: str = ""
    # Filters or a sort on custom fields retired or deleted since the query was made:
    # ignored, named here (labels; "a deleted field") so that the list can say so.
    ignored_fields: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class MatchCount:
    value: int
    exact: bool


def scoped_query(actor: Actor, query: ListQuery, action: str = "customer.list") -> ListQuery:
    """``query`` under the matching rules of the actor's role (see customer_query).

    A role that sees the amount spent masked may not filter or sort by it
    (each filter answer would narrow the hidden amount down): refused and audited.
    Its look-ups by a whole phone number or address are limited (_ExactLookups).
    """
    scoped, _gone = list_fields.without_gone_fields(query.for_actor(actor))
    if not scoped.full_contact_search:
        hidden = query.hidden_value_filters()
        if hidden:
            refuse(actor, action, "error.hidden_value_filter", target_type="customer", fields=hidden)
        plan = search_plan(scoped)
        limit_exact_lookups(actor, plan.phones + plan.emails, action)
    return scoped


def limit_exact_lookups(actor: Actor, values: tuple[str, ...], action: str) -> None:
    """Count look-ups by a whole phone number or address against the actor's hourly
    allowance (see _ExactLookups); beyond it, refused and audited. Roles that see
    contact data need no allowance: call this only for the others."""
    if values and not _exact_lookups.allow(actor, tuple(values)):
        refuse(actor, action, "error.exact_lookup_limit", target_type="customer", limit=EXACT_LOOKUPS_PER_HOUR)


# A role that sees phones masked may look a customer up by the whole number
# (a caller's number): an exact match says yes or no for one guess. 138****5678
# hides four digits, 10,000 guesses; scripted, the exact match would reveal
# them in a minute. So each user may look up at most this many different whole
# numbers / addresses an hour (per app process; a repeat is free), far above
# what a person types and far below a guessing run. Beyond it, refused and audited.
EXACT_LOOKUPS_PER_HOUR = 100
EXACT_LOOKUP_WINDOW_SECONDS = 3600


class _ExactLookups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def allow(self, actor: Actor, values: tuple[str, ...]) -> bool:
        user = str(actor.user_id if actor.user_id is not None else actor.username)
        now = time.monotonic()
        digests = [hashlib.sha256(value.encode()).hexdigest() for value in values]
        with self._lock:
            seen = self._seen.setdefault(user, OrderedDict())
            while seen and now - next(iter(seen.values())) > EXACT_LOOKUP_WINDOW_SECONDS:
                seen.popitem(last=False)
            new = [d for d in digests if d not in seen]
            if len(seen) + len(new) > EXACT_LOOKUPS_PER_HOUR:
                return False
            for digest in new:
                seen[digest] = now
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_exact_lookups = _ExactLookups()


def _exact_conditions(conn: Connection, plan: SearchPlan) -> list[ColumnElement]:
    """Exact phone / e-mail lookups (roles without customer.view_sensitive).

    A phone: the stored number (ix_customer_phone). An address: the customers
    whose contact text contains it (the search index), then the address
    itself compared, letter case aside.
    """
    conditions: list[ColumnElement] = []
    if plan.phones:
        conditions.append(exact_phone_condition(plan.phones))
    adapter = get_adapter(conn)
    for email in plan.emails:
        conditions.append(adapter.indexed_match_condition(C.id, [email], columns=SEARCH_CONTACT))
        conditions.append(func.lower(C.email) == email)
    return conditions


def _search_condition(conn: Connection, query: ListQuery, for_counting: bool = False):
    """(condition, candidate count or None when the matches are many).

    ``query`` has its matching rules set (scoped_query).
    """
    plan = search_plan(query)
    if plan.empty:
        return None, None
    adapter = get_adapter(conn)
    columns = SEARCH_EVERYTHING if plan.everything else SEARCH_PUBLIC
    exact = _exact_conditions(conn, plan)
    if exact:
        # An exact phone or address names a few customers: they drive the query.
        if plan.substring:
            exact.append(adapter.indexed_match_condition(C.id, plan.substring, columns=columns))
        return and_(*exact), 1
    candidates = adapter.candidate_condition(conn, C.id, plan.substring, columns=columns)
    if candidates is not None:
        return candidates
    if for_counting:
        return adapter.indexed_match_condition(C.id, plan.substring, columns=columns), None
    return adapter.row_match_condition(C.id, plan.substring, columns=columns), None


def _tag_sizes(conn: Connection, tag_ids: tuple[int, ...]) -> dict[int, int]:
    """How many customers carry each tag (any status); a planning hint, cached per generation."""
    key = f"{data_generation(conn)}|tag_sizes:{','.join(map(str, sorted(tag_ids)))}"
    cached = _plan_cache.get(key)
    if cached is not None:
        return cached
    rows = conn.execute(select(TA.tag_id, func.count()).where(TA.tag_id.in_(tag_ids)).group_by(TA.tag_id)).all()
    sizes = {tag_id: 0 for tag_id in tag_ids} | {tag_id: count for tag_id, count in rows}
    _plan_cache.put(key, sizes)
    return sizes


def driving_tags(
    conn: Connection, access: CustomerAccess, query: ListQuery, for_counting: bool = False
) -> tuple[int, ...]:
    """Tags whose customers should drive the query, or () to walk the sort index.

    Walking the sort index and probing each row for the tag stops after a
    page, which is fast when many rows qualify; a rare tag combined with
    other filters (VIP + 3 orders + consent: 0.3 % of 1M customers) made that
    walk read tens of thousands of rows (90-300 ms). Reading the tag's
    customers and sorting them costs one lookup each, about a third of a
    probe's cost. So the tag drives when its customers are fewer than the
    rows the walk would read: size / 3 < page / (tag share * filter share).
    An exact count reads every qualifying row either way: the tag drives
    when its customers are fewer than the rows the other filters keep.
    """
    if not (query.tags_any or query.tags_all) or not query.terms.empty:
        return ()
    sizes = _tag_sizes(conn, tuple(query.tags_any) + tuple(query.tags_all))
    if query.tags_any:
        candidate, size = tuple(query.tags_any), sum(sizes[t] for t in query.tags_any)
    else:
        rarest = min(query.tags_all, key=lambda tag_id: sizes[tag_id])
        candidate, size = (rarest,), sizes[rarest]
    if size > TAG_DRIVEN_MAX:
        return ()
    population = _status_population(conn, access, query.status)
    if not population or not size:
        return candidate
    others = dataclasses.replace(query, tags_any=(), tags_all=(), tags_none=())
    share = _filter_share(conn, access, others)
    if for_counting:
        return candidate if size <= population * share else ()
    walked = WALK_PAGE_ROWS / max((size / population) * share, 1e-9)
    return candidate if size / 3 <= walked else ()


def _filter_share(conn: Connection, access: CustomerAccess, query: ListQuery) -> float:
    """The share of the status's customers the query's filters keep, from the sample windows."""
    key = f"{data_generation(conn)}|share:{access.set_key(query.status)}:{query.signature()}"
    cached = _plan_cache.get(key)
    if cached is not None:
        return cached
    matched, in_status, _ = _sample_windows(
        conn, filter_conditions(access, query), and_(*access.status_conditions(query.status))
    )
    share = matched / in_status if in_status else 1.0
    _plan_cache.put(key, share)
    return share


def all_conditions(conn: Connection, access: CustomerAccess, query: ListQuery) -> list:
    """Filters plus search, as SQL conditions on the customer table, within ``access``'s reach.

    ``query`` comes from scoped_query (its matching rules are the actor's);
    one that did not gets the rules of a role without customer.view_sensitive.
    """
    return _conditions_and_candidates(conn, access, query)[0]


def _conditions_and_candidates(
    conn: Connection, access: CustomerAccess, query: ListQuery, ranges_for_page: bool = False
) -> tuple[list, bool]:
    """The conditions, and whether a short list of ids from the search index drives them.

    ``ranges_for_page``: a page in the list's order (a range on a custom field then
    chooses its index or the sort index; custom_field_values.range_condition)."""
    conditions = filter_conditions(
        access, query, driving_tags(conn, access, query), range_conn=conn if ranges_for_page else None
    )
    search, candidates = _search_condition(conn, query)
    if search is not None:
        conditions.append(search)
    elif query.terms.too_short_digits:
        conditions.append(never())
    return conditions, bool(candidates)


MAX_PAGE_SIZE = 200  # the open API's limit; the list page offers PAGE_SIZES


@dataclasses.dataclass
class _RawPage:
    records: list
    next_cursor: str = ""
    prev_cursor: str = ""
    too_short: bool = False
    data_version: str = ""


def _read_page(
    conn: Connection,
    access: CustomerAccess,
    query: ListQuery,
    cursor: str,
    direction: str,
    page_size: int,
    version: str,
) -> _RawPage:
    """The raw rows of one page and its cursors (``query`` is scoped)."""
    descending = query.direction == "desc"
    walk_descending = descending if direction == "next" else not descending
    if query.terms.too_short_digits and query.terms.empty:
        return _RawPage(records=[], too_short=True, data_version=version)
    custom_sort = list_fields.sort_field(access, query)
    conditions, few_candidates = _conditions_and_candidates(conn, access, query, ranges_for_page=True)
    # Few candidates are read and sorted anyway: exact matches first, then
    # phones ending in the typed digits, then the rest (see rank_expression).
    # (A sort by a custom field keeps its own order.)
    rank = rank_expression(query) if few_candidates and custom_sort is None else None
    forward = direction == "next"
    if cursor and direction != "last":
        if custom_sort is not None:
            value, last_active, row_id = list_fields.decode_sort_cursor(cursor, custom_sort)
            keyset = list_fields.after_custom(custom_sort, walk_descending, value, last_active, row_id, query.status)
        else:
            sort_value, row_id, cursor_rank = decode_ranked_cursor(cursor, query.sort)
            keyset = after_condition(query.sort, walk_descending, sort_value, row_id, query.status)
            if rank is not None:
                at = RANK_EXACT if cursor_rank is None else cursor_rank
                keyset = or_(rank > at if forward else rank < at, and_(rank == at, keyset))
        conditions.append(keyset)
    columns = LIST_COLUMNS
    if custom_sort is not None:
        ordering = custom_values.order_by(access, custom_sort.key, walk_descending)
        columns = columns + (list_fields.sort_value_expression(custom_sort).label("cf_sort"),)
    else:
        ordering = order_by(query.sort, walk_descending)
    if few_candidates:
        # The search index named at most candidate_cap customers: read them by
        # id and sort them. The fence (OFFSET 0) keeps PostgreSQL from walking
        # the sort index instead and filtering on the id list (29k rows read,
        # 70-90 ms for 1,500 candidates at 1M); SQLite reads them by id anyway.
        columns = columns + ((rank.label("match_rank"),) if rank is not None else ())
        fenced = base_select(columns, conditions).offset(0).subquery()
        to_fenced = ClauseAdapter(fenced)
        ordering = [to_fenced.traverse(item) for item in ordering]
        if rank is not None:
            ordering.insert(0, fenced.c.match_rank.asc() if forward else fenced.c.match_rank.desc())
        statement = select(*fenced.c).order_by(*ordering).limit(page_size + 1)
    else:
        statement = base_select(columns, conditions).order_by(*ordering).limit(page_size + 1)
    records = conn.execute(statement).all()
    has_more = len(records) > page_size
    records = records[:page_size]
    if direction != "next":
        records.reverse()

    def cursor_of(record) -> str:
        if custom_sort is not None:
            tail = record.last_active_at if list_fields.has_activity_tail(custom_sort) else None
            return list_fields.encode_sort_cursor(record.cf_sort, tail, record.id)
        sort_column = SORTS[query.sort][0]
        return encode_cursor(getattr(record, sort_column), record.id, record.match_rank if rank is not None else None)

    page = _RawPage(records=records, data_version=version)
    if not records:
        return page
    if direction == "next":
        page.next_cursor = cursor_of(records[-1]) if has_more else ""
        page.prev_cursor = cursor_of(records[0]) if cursor else ""
    elif direction == "prev":
        page.prev_cursor = cursor_of(records[0]) if has_more else ""
        page.next_cursor = cursor_of(records[-1])
    else:  # last
        page.prev_cursor = cursor_of(records[0]) if has_more else ""
    return page


def list_customers(
    actor: Actor,
    query: ListQuery,
    cursor: str = "",
    direction: str = "next",
    page_size: int = 50,
    lang: str = "zh",
    custom_columns: Sequence[str] = (),
) -> CustomerPage:
    """One page. ``direction`` is next (after ``cursor``), prev (before it) or last.

    ``custom_columns``: the "cf.<key>" columns shown (their cells in each row, masked);
    filters and a sort on fields retired or deleted since are ignored and named in
    ``ignored_fields``."""
    require(actor, "customer.view", action="customer.list")
    gone = list_fields.without_gone_fields(query)[1]
    query = scoped_query(actor, query)
    if page_size not in PAGE_SIZES:
        page_size = 50
    if direction not in ("next", "prev", "last"):
        direction = "next"
    with read_connection() as conn:
        # Read before the rows: a change committed in between makes the page look older, never newer.
        version = data_generation(conn)
        raw = _read_page(conn, CustomerAccess(actor), query, cursor, direction, page_size, version)
        rows = customer_rows(conn, actor, raw.records, lang, reasons=_reasons(query, raw.records))
    shown = list_fields.cells(CustomerAccess(actor), raw.records, list_fields.clean_column_names(custom_columns), lang)
    for row in rows:
        row.custom = shown.get(row.id, [])
    return CustomerPage(
        rows=rows,
        next_cursor=raw.next_cursor,
        prev_cursor=raw.prev_cursor,
        too_short=raw.too_short,
        data_version=raw.data_version,
        ignored_fields=gone.labels(lang),
    )


@dataclasses.dataclass
class RecordPage:
    """A page of the open API's customer list: full records (customers.CustomerRecord)."""

    records: list
    next_cursor: str = ""
    too_short: bool = False


def list_customer_records(actor: Actor, query: ListQuery, cursor: str = "", limit: int = 50) -> RecordPage:
    """The open API's list: the list page's search, filters and keyset pages (forward
    only), ``limit`` 1..MAX_PAGE_SIZE, as records masked for the actor."""
    from meiqia_app.services.customers.profile import customer_records  # customers imports customer_dto: late

    require(actor, "customer.view", action="customer.list")
    query = scoped_query(actor, query)
    try:
        limit = max(1, min(MAX_PAGE_SIZE, int(limit)))
    except (TypeError, ValueError):
        limit = 50
    with read_connection() as conn:
        raw = _read_page(conn, CustomerAccess(actor), query, cursor, "next", limit, "")
    ids = [r.id for r in raw.records]
    records = customer_records(actor, ids) if ids else []
    return RecordPage(records=records, next_cursor=raw.next_cursor, too_short=raw.too_short)


def _reasons(query: ListQuery, records) -> dict[int, list[str]]:
    """Why each listed customer matched the search (message keys), by id."""
    terms = query.terms
    if terms.empty:
        return {}
    return {
        r.id: match_reasons(
            terms,
            query.full_contact_search,
            name=r.name,
            phone=r.phone,
            email=r.email,
            external_id=r.external_id,
            visitor_id=r.visitor_id,
        )
        for r in records
    }


# --- counting ---------------------------------------------------------------------


class _CountCache:
    """Exact counts per query signature, for a minute; cleared on any customer write here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def get(self, key: str) -> int | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] > COUNT_CACHE_SECONDS:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: int) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > COUNT_CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_count_cache = _CountCache()
_plan_cache = _CountCache()


# Cached counts are keyed by a generation stored in the database, so a change
# made by another worker (or process) retires this worker's counts too.
GENERATION_KEY = "customer_list.generation"
_SETTINGS = AppSetting.__table__
log = logging.getLogger(__name__)


def data_generation(conn: Connection) -> str:
    return conn.execute(select(_SETTINGS.c.value).where(_SETTINGS.c.key == GENERATION_KEY)).scalar() or ""


def data_version(actor: Actor) -> str:
    """The customer data's generation (changed by every write services record,
    see invalidate_counts): a page whose ``data_version`` equals it is current."""
    require(actor, "customer.view", action="customer.list")
    with read_connection() as conn:
        return data_generation(conn)


def forget_cached_counts() -> None:
    """This process's cache only (tests switching databases)."""
    _count_cache.clear()
    _plan_cache.clear()
    _exact_lookups.clear()


def invalidate_counts() -> None:
    """Called by every service that adds, changes the status of, or edits customers
    (after its transaction: this writes the new generation in one of its own)."""
    _count_cache.clear()
    token = json.dumps(secrets.token_hex(8))
    try:
        with get_engine().begin() as conn:
            changed = conn.execute(
                update(_SETTINGS).where(_SETTINGS.c.key == GENERATION_KEY).values(value=token, updated_at=utcnow())
            ).rowcount
            if not changed:
                conn.execute(
                    insert(_SETTINGS).values(
                        key=GENERATION_KEY, value=token, updated_at=utcnow(), updated_by_name="system"
                    )
                )
    except SQLAlchemyError:  # the change itself is committed; other workers' counts expire within a minute
        log.warning("could not record a new customer-list generation", exc_info=True)


def _exact_count(conn: Connection, conditions: list) -> int:
    return conn.execute(base_select([func.count()], conditions)).scalar_one()


def _sample_windows(conn: Connection, filters: list, status: ColumnElement) -> tuple[int, int, int]:
    """(rows matching ``filters``, rows in ``status``, rows read) over a few evenly spread id windows.

    Each window is read through the primary key (a materialised id range),
    so the planner cannot wander off to a filter index and the cost is fixed
    at about ESTIMATE_SAMPLE row lookups whatever the filters are.
    """
    # Two scalar subqueries: SQLite answers a lone min() or max() from the
    # primary key's ends, but scans all rows (95 ms at 1M) for both in one SELECT.
    low, high = conn.execute(
        select(select(func.min(C.id)).scalar_subquery(), select(func.max(C.id)).scalar_subquery())
    ).one()
    if low is None:
        return 0, 0, 0
    per_window = max(1, ESTIMATE_SAMPLE // ESTIMATE_WINDOWS)
    step = max(per_window, (high - low + 1) // ESTIMATE_WINDOWS)
    matched = in_status = sampled = 0
    for start in range(low, high + 1, step):
        window = select(C.id.label("wid")).where(C.id >= start).order_by(C.id).limit(per_window).subquery()
        statement = select(
            func.coalesce(func.sum(case((and_(*filters), 1), else_=0)), 0),
            func.coalesce(func.sum(case((status, 1), else_=0)), 0),
            func.count(),
        ).select_from(window.join(Customer.__table__, C.id == window.c.wid))
        window_matched, window_status, window_rows = conn.execute(statement).one()
        matched += window_matched
        in_status += window_status
        sampled += window_rows
    return matched, in_status, sampled


def _estimate(
    conn: Connection, access: CustomerAccess, filters: list, query: ListQuery, search_total: int | None = None
) -> int:
    """Count the sample windows and scale up.

    A broad text search is not checked row by row in the windows (a probe
    into the search text per sampled row cost 120-190 ms at 1M customers):
    the search index counts its own matches in a few milliseconds (any
    status), and the windows give the share of customers the other filters
    keep, assumed independent of the search.
    """
    population = _status_population(conn, access, query.status)
    if not population:
        return 0
    matched, in_status, sampled = _sample_windows(conn, filters, and_(*access.status_conditions(query.status)))
    if search_total is not None:
        return int(round(search_total * matched / sampled)) if sampled else 0
    if not in_status:
        return 0
    return int(round(matched * population / in_status))


def _status_population(conn: Connection, access: CustomerAccess, status: str) -> int:
    key = f"{data_generation(conn)}|status:{access.set_key(status)}"
    cached = _count_cache.get(key)
    if cached is not None:
        return cached
    value = _exact_count(conn, access.status_conditions(status))
    _count_cache.put(key, value)
    return value


def count_customers(actor: Actor, query: ListQuery, exact: bool = False) -> MatchCount:
    """How many customers match. ``exact=False`` may answer with an estimate."""
    require(actor, "customer.view", action="customer.count")
    query = scoped_query(actor, query, action="customer.count")
    access = CustomerAccess(actor)
    with read_connection() as conn:
        key = f"{data_generation(conn)}|{access.set_key(query.status)}|{query.signature()}"
        cached = _count_cache.get(key)
        if cached is not None:
            return MatchCount(cached, True)
        if query.terms.too_short_digits and query.terms.empty:
            return MatchCount(0, True)
        if not query.has_filters():
            return MatchCount(_status_population(conn, access, query.status), True)
        filters = filter_conditions(access, query, driving_tags(conn, access, query, for_counting=True))
        search, candidates = _search_condition(conn, query, for_counting=exact)
        if search is not None and candidates is not None:
            value = _exact_count(conn, [*filters, search]) if candidates else 0
            _count_cache.put(key, value)
            return MatchCount(value, True)
        conditions = filters + ([search] if search is not None else [])
        if not exact:
            if search is None:
                return MatchCount(_estimate(conn, access, filters, query), False)
            plan = search_plan(query)
            search_total = get_adapter(conn).count_matches(
                conn, plan.substring, columns=SEARCH_EVERYTHING if plan.everything else SEARCH_PUBLIC
            )
            return MatchCount(_estimate(conn, access, filters, query, search_total), False)
        value = _exact_count(conn, conditions)
        _count_cache.put(key, value)
        return MatchCount(value, True)


def matching_ids(actor: Actor, query: ListQuery, after_id: int = 0, batch: int = 5000) -> list[int]:
    """Ids of matching customers in id order, one batch after ``after_id``.

    Bulk jobs (tagging, archiving, exporting "all N matching") walk the set
    with this, never holding more than a batch in memory.
    """
    require(actor, "customer.view", action="customer.list")
    query = scoped_query(actor, query)
    with read_connection() as conn:
        conditions = all_conditions(conn, CustomerAccess(actor), query)
        statement = (
            select(C.id)
            .select_from(Customer.__table__)
            .where(and_(*conditions, C.id > after_id))
            .order_by(C.id)
            .limit(batch)
        )
        return list(conn.execute(statement).scalars())
