"""Search text, the customer list query, keyset pages, counts and masking."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from meiqia_app.db import get_engine
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.masking import MASK, mask_email, mask_phone
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.search_text import FIELD_SEP, PAD, build_contact_text, build_search_text, parse_query
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.identity.rbac import Actor


def rows(sql: str, **params) -> list:
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).all()


def scalar(sql: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def q(**data) -> ListQuery:
    return ListQuery.from_dict(data)


def ids_of(page) -> list[int]:
    return [row.id for row in page.rows]


def search_hits(term: str, status: str = "active", everything: bool = True) -> set[int]:
    """Customers whose search texts contain ``term``, straight from the table (no index).

    ``everything``: the public text and the full contact data (roles with
    customer.view_sensitive); else the public text alone (contact data masked).
    """
    return {
        r[0]
        for r in rows(
            "SELECT s.customer_id, s.text, s.contact FROM customer_search s JOIN customer c ON c.id = s.customer_id "
            "WHERE c.status = :status",
            status=status,
        )
        if term in r[1] or (everything and term in r[2])
    }


# --- search_text ---------------------------------------------------------------------------


def test_parse_query_empty():
    assert parse_query("").empty and parse_query(None).empty and parse_query("   ").empty


def test_parse_query_phone_with_separators_becomes_digits():
    assert parse_query("138-1234 5678").terms == ("13812345678",)
    assert parse_query("+86 (138) 1234").terms == ("861381234",)


def test_parse_query_full_width_is_normalised():
    assert parse_query("１３８１２").terms == ("13812",)
    assert parse_query("ＺＨＡＮＧ").terms == ("zhang",)


def test_parse_query_pinyin_with_space_is_one_term():
    assert parse_query("Zhang Wei").terms == ("zhangwei",)


def test_parse_query_short_terms_are_padded_and_words_are_separate_terms():
    assert parse_query("张").terms == ("张" + PAD * 2,)
    assert parse_query("张伟 北京市").terms == ("张伟" + PAD, "北京市")
    assert parse_query("北京 北京").terms == ("北京" + PAD,)
    # Latin words with spaces are one pinyin term (documented: "zhang wei" -> "zhangwei").
    assert parse_query("abc def").terms == ("abcdef",)


def test_parse_query_one_or_two_digits_are_too_short():
    parsed = parse_query("12")
    assert parsed.empty and parsed.too_short_digits
    assert parse_query("12 张伟").terms == ("张伟" + PAD,)
    assert not parse_query("12 张伟").too_short_digits


def test_parse_query_keeps_at_most_five_terms_and_strips_separators():
    assert parse_query("张 王 李 赵 钱 孙 周").terms == tuple(c + PAD * 2 for c in "张王李赵钱")
    # A typed separator or pad cannot make a term span two fields or fake a short piece.
    assert all(FIELD_SEP not in term for term in parse_query("ab" + FIELD_SEP + "cde").terms)
    assert parse_query("ab" + PAD + "c").terms == ("abc",)


def test_search_text_contains_every_searchable_value():
    search = build_search_text("张伟", "13800001111", "Zhang.Wei@Example.COM", "EXT-9", "v_abc")
    fields = search.split(FIELD_SEP)
    # The contact data only as masked; the full values in the contact text.
    for value in ("张伟", "zhangwei", "zw", "138****1111", "z***@example.com", "ext-9", "v_abc"):
        assert value in fields
    assert len(fields) == len(set(fields))
    assert "0000" not in search and ".wei@" not in search
    assert build_contact_text("13800001111", "Zhang.Wei@Example.COM").split(FIELD_SEP) == [
        "13800001111",
        "zhang.wei@example.com",
    ]


@pytest.mark.parametrize(
    "typed",
    [
        "张",
        "伟",
        "张伟",
        "z",
        "zh",
        "zw",
        "zhang",
        "wei",
        "zhangwei",
        "ZHANG WEI",
        "138",
        "0000111",
        "138-0000-1111",
        "example",
        "zhang.wei@",
    ],
)
def test_every_reasonable_query_for_a_customer_matches_its_search_text(typed):
    """For a role that sees contact data (both texts)."""
    search = build_search_text("张伟", "13800001111", "zhang.wei@example.com") + FIELD_SEP
    search += build_contact_text("13800001111", "zhang.wei@example.com")
    terms = parse_query(typed).terms
    assert terms and all(term in search for term in terms)


@pytest.mark.parametrize("typed", ["伟张", "李", "zx", "139", "gmail", "张伟伟"])
def test_queries_for_someone_else_do_not_match(typed):
    search = build_search_text("张伟", "13800001111", "zhang.wei@example.com") + FIELD_SEP
    search += build_contact_text("13800001111", "zhang.wei@example.com")
    assert not all(term in search for term in parse_query(typed).terms)


# --- ListQuery validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"sort": "password_hash"}, "sort"),
        ({"sort": "name; DROP TABLE customer"}, "sort"),
        ({"direction": "sideways"}, "direction"),
        ({"status": "deleted"}, "status"),
        ({"tiers": ["platinum"]}, "tiers"),
        ({"registered_from": "2026-13-01"}, "registered_from"),
        ({"spent_min": "-5"}, "spent_min"),
        ({"orders_max": "many"}, "orders_max"),
        ({"tags_any": ["x"]}, "tags_any"),
        ({"tags_any": list(range(1, 30))}, "tags_any"),
        ({"consent_marketing": "maybe"}, "consent_marketing"),
        ({"tiers": 5}, "tiers"),
        ({"order_statuses": ["shipped"]}, "order_statuses"),
        ({"order_statuses": ["paid", "paid' OR 1=1 --"]}, "order_statuses"),
        ({"order_statuses": 1}, "order_statuses"),
        ({"lifecycle": {"active": 1}}, "lifecycle"),
    ],
)
def test_invalid_list_query_is_refused(data, field):
    with pytest.raises(ValidationError) as caught:
        ListQuery.from_dict(data)
    assert field in caught.value.field_errors


def test_list_query_defaults_and_round_trip():
    query = ListQuery.from_dict({})
    assert (query.status, query.sort, query.direction) == ("active", "last_active_at", "desc")
    full = ListQuery.from_dict(
        {"q": " 张伟 ", "tiers": ["gold", "gold"], "spent_min": "10.5", "sort": "name", "direction": "asc"}
    )
    assert full.q == "张伟" and full.tiers == ("gold",) and full.spent_min == 10.5
    assert ListQuery.from_dict(full.to_dict()) == full
    assert full.signature() == ListQuery.from_dict({**full.to_dict(), "sort": "total_spent"}).signature()
    paid = ListQuery.from_dict({"order_statuses": ["refunded", "paid", "paid"]})
    assert paid.order_statuses == ("refunded", "paid") and ListQuery.from_dict(paid.to_dict()) == paid
    assert paid.has_filters() and paid.signature() != ListQuery().signature()


def test_bad_cursor_is_refused(seeded_actors):
    with pytest.raises(ValidationError) as caught:
        customer_list.list_customers(seeded_actors["agent"], q(), cursor="not-a-cursor")
    assert caught.value.field_errors["cursor"][0] == "error.bad_cursor"


def test_list_requires_customer_view(seeded_db):
    nobody = Actor(user_id=99, username="nobody", display_name="", role_name="x", permissions=frozenset())
    with pytest.raises(PermissionDenied):
        customer_list.list_customers(nobody, q())
    with pytest.raises(PermissionDenied):
        customer_list.count_customers(nobody, q())
    assert scalar("SELECT count(*) FROM audit_entry WHERE result = 'refused' AND actor_name = 'nobody'") == 2


# --- first page and search --------------------------------------------------------------------


def test_first_page_is_fifty_active_customers_by_last_activity(seeded_actors):
    page = customer_list.list_customers(seeded_actors["senior"], q())
    expected = [
        r[0]
        for r in rows("SELECT id FROM customer WHERE status = 'active' ORDER BY last_active_at DESC, id DESC LIMIT 50")
    ]
    assert ids_of(page) == expected
    assert page.next_cursor and not page.prev_cursor
    assert {row.status for row in page.rows} == {"正常"}


def test_page_labels_follow_the_language(seeded_actors):
    page = customer_list.list_customers(seeded_actors["senior"], q(), lang="en")
    assert {row.status for row in page.rows} == {"Active"}


def test_archived_customers_are_listed_only_when_asked_for(seeded_actors):
    archived = {r[0] for r in rows("SELECT id FROM customer WHERE status = 'archived'")}
    assert archived, "the seed should contain archived customers"
    page = customer_list.list_customers(seeded_actors["senior"], q(status="archived"), page_size=100)
    assert set(ids_of(page)) == archived
    everyone = walk(seeded_actors["senior"], q(status="all"))
    assert archived <= set(everyone)


def pick_customer(where: str) -> tuple:
    found = rows(f"SELECT id, name, phone, email FROM customer WHERE status = 'active' AND {where} ORDER BY id LIMIT 1")
    assert found, f"no seeded customer with {where}"
    return found[0]


@pytest.mark.parametrize("piece", [slice(0, 1), slice(0, 2), slice(1, 3), slice(0, 3)])
def test_name_fragment_finds_the_customer(seeded_actors, piece):
    customer_id, name, _phone, _email = pick_customer("length(name) = 3")
    fragment = name[piece]
    page = customer_list.list_customers(seeded_actors["agent"], q(q=fragment), page_size=100)
    found = ids_of(page)
    if len(found) < 100:
        assert customer_id in found
    assert found and all(fragment in row.name for row in page.rows)


def test_phone_fragment_finds_exactly_the_customers_containing_it(seeded_actors):
    customer_id, _name, phone, _email = pick_customer("length(phone) = 11")
    fragment = phone[3:8]
    page = customer_list.list_customers(seeded_actors["senior"], q(q=fragment), page_size=100)
    assert customer_id in ids_of(page)
    assert set(ids_of(page)) == search_hits(fragment)


def test_phone_typed_with_separators_finds_the_customer(seeded_actors):
    customer_id, _name, phone, _email = pick_customer("length(phone) = 11")
    typed = f"{phone[:3]}-{phone[3:7]} {phone[7:]}"
    page = customer_list.list_customers(seeded_actors["senior"], q(q=typed))
    assert customer_id in ids_of(page)
    assert all(row.phone == phone or phone in search_text_of(row.id) for row in page.rows)


def search_text_of(customer_id: int) -> str:
    return scalar("SELECT text || contact FROM customer_search WHERE customer_id = :i", i=customer_id)


def test_email_fragment_finds_the_customer(seeded_actors):
    customer_id, _name, _phone, email = pick_customer("email LIKE '%@%.%' AND substr(email, 1, 1) BETWEEN 'a' AND 'z'")
    local = email.split("@")[0]
    fragment = local[: max(4, len(local) - 2)]
    page = customer_list.list_customers(seeded_actors["senior"], q(q=fragment), page_size=100)
    assert customer_id in ids_of(page)
    assert set(ids_of(page)) == search_hits(fragment.lower())


def test_two_digit_query_asks_for_more_instead_of_scanning(seeded_actors):
    page = customer_list.list_customers(seeded_actors["agent"], q(q="13"))
    assert page.too_short and page.rows == []
    assert customer_list.count_customers(seeded_actors["agent"], q(q="13")).value == 0


def test_query_with_no_match_gives_an_empty_page(seeded_actors):
    page = customer_list.list_customers(seeded_actors["agent"], q(q="zzzqqqxxx"))
    assert page.rows == [] and not page.next_cursor and not page.prev_cursor


# --- keyset paging ------------------------------------------------------------------------------


def walk(actor, query: ListQuery, page_size: int = 50) -> list[int]:
    seen: list[int] = []
    cursor = ""
    for _ in range(100):
        page = customer_list.list_customers(actor, query, cursor=cursor, page_size=page_size)
        assert len(page.rows) <= page_size
        seen += ids_of(page)
        if not page.next_cursor:
            return seen
        assert len(page.rows) == page_size
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


def expected_order(sort_column: str, descending: bool, status: str = "active") -> list[int]:
    direction = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
    id_direction = "DESC" if descending else "ASC"
    # NULLs first ascending and last descending: the walk the UI promises on both databases.
    return [
        r[0]
        for r in rows(
            f"SELECT id FROM customer WHERE status = :s ORDER BY {sort_column} {direction}, id {id_direction}", s=status
        )
    ]


def actor_for_sort(seeded_actors, sort: str):
    """An agent, or a role that sees amounts when sorting by the amount spent (agents may not)."""
    return seeded_actors["senior" if sort == "total_spent" else "agent"]


SORT_COLUMNS = {
    "last_active_at": "last_active_at",
    "registered_at": "registered_at",
    "last_purchase_at": "last_purchase_at",
    "total_spent": "total_spent_cents",
    "order_count": "order_count",
    "name": "name_pinyin",
}


@pytest.mark.parametrize("direction", ["desc", "asc"])
@pytest.mark.parametrize("sort", list(SORT_COLUMNS))
def test_walking_next_cursors_visits_every_active_customer_once_in_order(seeded_actors, sort, direction):
    seen = walk(actor_for_sort(seeded_actors, sort), q(sort=sort, direction=direction))
    assert len(seen) == len(set(seen))
    assert seen == expected_order(SORT_COLUMNS[sort], direction == "desc")


def test_walk_with_a_search_term_visits_every_match_once(seeded_actors):
    seen = walk(seeded_actors["agent"], q(q="com"), page_size=20)
    assert len(seen) > 20 and len(seen) == len(set(seen))
    assert set(seen) == search_hits("com", everything=False)
    surname = pick_customer("length(name) >= 2")[1][0]
    seen = walk(seeded_actors["agent"], q(q=surname), page_size=20)
    assert len(seen) == len(set(seen)) and set(seen) == search_hits(surname + PAD * 2)


def test_prev_cursor_returns_the_previous_page(seeded_actors):
    actor = seeded_actors["agent"]
    query = q()
    pages = [customer_list.list_customers(actor, query)]
    for _ in range(3):
        pages.append(customer_list.list_customers(actor, query, cursor=pages[-1].next_cursor))
    assert pages[1].prev_cursor and pages[2].prev_cursor

    back = customer_list.list_customers(actor, query, cursor=pages[3].prev_cursor, direction="prev")
    assert ids_of(back) == ids_of(pages[2])
    back = customer_list.list_customers(actor, query, cursor=back.prev_cursor, direction="prev")
    assert ids_of(back) == ids_of(pages[1])
    back = customer_list.list_customers(actor, query, cursor=back.prev_cursor, direction="prev")
    assert ids_of(back) == ids_of(pages[0])
    assert back.prev_cursor == ""  # nothing before the first page
    # ... and forward again from there.
    forward = customer_list.list_customers(actor, query, cursor=back.next_cursor)
    assert ids_of(forward) == ids_of(pages[1])


@pytest.mark.parametrize("sort", ["last_purchase_at", "total_spent"])
def test_last_page_then_prev_walks_everything_backwards(seeded_actors, sort):
    actor = actor_for_sort(seeded_actors, sort)
    query = q(sort=sort, direction="desc")
    page = customer_list.list_customers(actor, query, direction="last")
    collected = list(reversed(ids_of(page)))
    while page.prev_cursor:
        page = customer_list.list_customers(actor, query, cursor=page.prev_cursor, direction="prev")
        collected += list(reversed(ids_of(page)))
    assert list(reversed(collected)) == expected_order(SORT_COLUMNS[sort], True)


# --- counts -------------------------------------------------------------------------------------


def test_count_without_filters_equals_the_table(seeded_actors):
    result = customer_list.count_customers(seeded_actors["agent"], q())
    assert result.exact and result.value == scalar("SELECT count(*) FROM customer WHERE status = 'active'")
    everyone = customer_list.count_customers(seeded_actors["agent"], q(status="all"))
    assert everyone.value == scalar("SELECT count(*) FROM customer WHERE status IN ('active', 'archived')")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"tiers": ["gold"]}, "membership_tier = 'gold'"),
        ({"sources": ["wechat", "app"]}, "source IN ('wechat', 'app')"),
        ({"orders_min": 2, "orders_max": 5}, "order_count BETWEEN 2 AND 5"),
        ({"spent_min": 1000}, "total_spent_cents >= 100000"),
        ({"consent_marketing": "yes"}, "consent_marketing = true"),
    ],
)
def test_exact_count_with_filters_equals_raw_sql(seeded_actors, data, where):
    expected = scalar(f"SELECT count(*) FROM customer WHERE status = 'active' AND {where}")
    actor = seeded_actors["senior" if "spent_min" in data else "agent"]
    result = customer_list.count_customers(actor, q(**data), exact=True)
    assert result.exact and result.value == expected
    assert len(walk(actor, q(**data), page_size=100)) == expected


def customers_with_orders(statuses: tuple[str, ...], status: str = "active") -> set[int]:
    """Straight from the tables: customers in ``status`` with an order in one of ``statuses``."""
    listed = ", ".join(f"'{s}'" for s in statuses)
    return {
        r[0]
        for r in rows(
            f"SELECT DISTINCT c.id FROM customer c JOIN customer_order o ON o.customer_id = c.id "
            f"WHERE c.status = :status AND o.status IN ({listed})",
            status=status,
        )
    }


@pytest.mark.parametrize("statuses", [("paid",), ("pending",), ("refunded",), ("pending", "refunded")])
@pytest.mark.parametrize("sort", ["last_active_at", "registered_at", "total_spent"])
def test_order_status_filter_lists_exactly_the_customers_with_such_an_order(seeded_actors, statuses, sort):
    expected = customers_with_orders(statuses)
    active = scalar("SELECT count(*) FROM customer WHERE status = 'active'")
    assert 0 < len(expected) < active  # the filter really narrows the seeded customers
    query = q(order_statuses=list(statuses), sort=sort)
    actor = actor_for_sort(seeded_actors, sort)
    seen = walk(actor, query, page_size=20)
    assert len(seen) == len(set(seen)) and set(seen) == expected
    in_order = expected_order(SORT_COLUMNS[sort], True)
    assert seen == [i for i in in_order if i in expected]
    customer_list.forget_cached_counts()
    assert customer_list.count_customers(actor, query, exact=True).value == len(expected)
    # The sample windows hold all 300 seeded customers: the estimate is the count.
    customer_list.forget_cached_counts()
    assert customer_list.count_customers(actor, query).value == len(expected)


def test_order_status_filter_combines_with_other_filters_search_and_status(seeded_actors):
    agent = seeded_actors["agent"]
    wechat = {r[0] for r in rows("SELECT id FROM customer WHERE source = 'wechat'")}
    expected = customers_with_orders(("paid",)) & wechat
    assert expected
    assert set(walk(agent, q(order_statuses=["paid"], sources=["wechat"]))) == expected
    everyone = customers_with_orders(("refunded",)) | customers_with_orders(("refunded",), "archived")
    assert set(walk(agent, q(order_statuses=["refunded"], status="all"))) == everyone
    hits = search_hits("com") & customers_with_orders(("pending",))
    assert set(walk(agent, q(q="com", order_statuses=["pending"]))) == hits
    assert hits and expected != wechat & {r[0] for r in rows("SELECT id FROM customer WHERE status = 'active'")}
    # Bulk actions and exports walk "all matching" in id order.
    assert customer_list.matching_ids(agent, q(order_statuses=["paid"]), batch=10_000) == sorted(
        customers_with_orders(("paid",))
    )


def test_the_filter_dialog_sends_only_known_order_statuses():
    from meiqia_app.state.customer_list import filters_from_form

    form = {
        "order_statuses:paid": "on",
        "order_statuses:refunded": "on",
        "order_statuses:shipped": "on",
        "order_statuses:pending": "",
    }
    assert filters_from_form(form) == {"order_statuses": ["paid", "refunded"]}


def test_order_status_filter_survives_a_saved_view(seeded_actors):
    from meiqia_app.services.customers import saved_views

    agent = seeded_actors["agent"]
    view = saved_views.save_view(agent, "付过款", q(order_statuses=["paid"], tiers=["gold"]))
    loaded = saved_views.load_view(agent, view.id)
    assert loaded.order_statuses == ("paid",) and loaded.tiers == ("gold",)
    gold = {r[0] for r in rows("SELECT id FROM customer WHERE membership_tier = 'gold'")}
    assert set(walk(agent, loaded)) == customers_with_orders(("paid",)) & gold


def test_exact_count_of_a_search_equals_raw_sql(seeded_actors):
    result = customer_list.count_customers(seeded_actors["agent"], q(q="com"), exact=True)
    assert result.exact and result.value == len(search_hits("com", everything=False))
    result = customer_list.count_customers(seeded_actors["senior"], q(q="com"), exact=True)
    assert result.exact and result.value == len(search_hits("com"))


def test_estimate_of_a_broad_search_is_close_and_then_exact(seeded_actors, monkeypatch):
    """A search matching more than the candidate cap is estimated from the
    index's own count and the filters' share, then counted exactly."""
    monkeypatch.setattr(type(get_adapter_for_tests()), "candidate_cap", 5)
    customer_list.forget_cached_counts()
    query = q(q="com")
    expected = len(search_hits("com", everything=False))
    assert expected > 5 * 4
    estimate = customer_list.count_customers(seeded_actors["agent"], query)
    assert not estimate.exact
    assert abs(estimate.value - expected) <= 0.25 * expected
    exact = customer_list.count_customers(seeded_actors["agent"], query, exact=True)
    assert exact.exact and exact.value == expected


def test_estimate_with_filters_and_a_broad_search_stays_near_the_truth(seeded_actors, monkeypatch):
    monkeypatch.setattr(type(get_adapter_for_tests()), "candidate_cap", 5)
    customer_list.forget_cached_counts()
    query = q(q="com", sources=["wechat", "app"])
    expected = len(
        search_hits("com", everything=False)
        & {row[0] for row in rows("SELECT id FROM customer WHERE status = 'active' AND source IN ('wechat', 'app')")}
    )
    estimate = customer_list.count_customers(seeded_actors["agent"], query)
    assert not estimate.exact
    assert abs(estimate.value - expected) <= 0.5 * expected + 5
    assert customer_list.count_customers(seeded_actors["agent"], query, exact=True).value == expected


def test_estimate_without_a_search_scales_the_sample_to_the_population(seeded_actors):
    customer_list.forget_cached_counts()
    query = q(tiers=["gold"])
    expected = scalar("SELECT count(*) FROM customer WHERE status = 'active' AND membership_tier = 'gold'")
    estimate = customer_list.count_customers(seeded_actors["agent"], query)
    # 300 seeded customers fit in the sample windows: the estimate is the count.
    assert estimate.value == expected


def get_adapter_for_tests():
    from meiqia_app.dbadapter import get_adapter

    with get_engine().connect() as conn:
        return get_adapter(conn)


def _tag_with_customers() -> int:
    return scalar("SELECT tag_id FROM tag_assignment GROUP BY tag_id ORDER BY count(*) DESC LIMIT 1")


@pytest.mark.parametrize("tag_drives", [True, False])
@pytest.mark.parametrize("extra", [{}, {"consent_marketing": "yes"}, {"orders_min": 1, "sort": "registered_at"}])
def test_tag_filter_gives_the_same_rows_whichever_side_drives(seeded_actors, monkeypatch, tag_drives, extra):
    """The planner hint (read the tag's customers, or walk the sort index) never changes the answer."""
    monkeypatch.setattr(customer_list, "TAG_DRIVEN_MAX", 10**9 if tag_drives else 0)
    monkeypatch.setattr(customer_list, "WALK_PAGE_ROWS", 10**9 if tag_drives else 51)
    customer_list.forget_cached_counts()
    tag_id = _tag_with_customers()
    query = q(tags_any=[tag_id], **extra)
    with get_engine().connect() as conn:
        assert bool(customer_list.driving_tags(conn, CustomerAccess(seeded_actors["agent"]), query)) is tag_drives
        if not tag_drives:
            assert (
                customer_list.driving_tags(conn, CustomerAccess(seeded_actors["agent"]), query, for_counting=True) == ()
            )
    where = " AND ".join(
        ["status = 'active'", f"id IN (SELECT customer_id FROM tag_assignment WHERE tag_id = {tag_id})"]
        + (["consent_marketing = true"] if extra.get("consent_marketing") else [])
        + (["order_count >= 1"] if extra.get("orders_min") else [])
    )
    expected = scalar(f"SELECT count(*) FROM customer WHERE {where}")
    assert expected > 0
    assert customer_list.count_customers(seeded_actors["agent"], query, exact=True).value == expected
    walked = walk(seeded_actors["agent"], query, page_size=20)
    assert len(walked) == len(set(walked)) == expected
    sort_column = SORT_COLUMNS[query.sort]
    assert walked == [
        row[0] for row in rows(f"SELECT id FROM customer WHERE {where} ORDER BY {sort_column} DESC NULLS LAST, id DESC")
    ]


def test_tags_all_is_driven_by_its_rarest_tag(seeded_actors, monkeypatch):
    monkeypatch.setattr(customer_list, "WALK_PAGE_ROWS", 10**9)
    customer_list.forget_cached_counts()
    sizes = rows("SELECT tag_id, count(*) FROM tag_assignment GROUP BY tag_id ORDER BY count(*) DESC")
    (common, _), (rare, _) = sizes[0], sizes[-1]
    query = q(tags_all=[common, rare], consent_marketing="yes")
    with get_engine().connect() as conn:
        assert customer_list.driving_tags(conn, CustomerAccess(seeded_actors["agent"]), query) == (rare,)
    expected = scalar(
        "SELECT count(*) FROM customer WHERE status = 'active' AND consent_marketing = true "
        f"AND id IN (SELECT customer_id FROM tag_assignment WHERE tag_id = {common}) "
        f"AND id IN (SELECT customer_id FROM tag_assignment WHERE tag_id = {rare})"
    )
    assert customer_list.count_customers(seeded_actors["agent"], query, exact=True).value == expected


# --- masking ----------------------------------------------------------------------------------


def test_agent_sees_masked_contact_data_in_the_list(seeded_actors):
    agent_page = customer_list.list_customers(seeded_actors["agent"], q(), page_size=100)
    senior_page = customer_list.list_customers(seeded_actors["senior"], q(), page_size=100)
    raw = {r[0]: r[1:] for r in rows("SELECT id, phone, email FROM customer")}
    checked = 0
    for agent_row, senior_row in zip(agent_page.rows, senior_page.rows):
        phone, email = raw[agent_row.id]
        assert senior_row.phone == (phone or "") and senior_row.email == (email or "")
        assert agent_row.phone == mask_phone(phone) and agent_row.email == mask_email(email)
        assert agent_row.total_spent == MASK and senior_row.total_spent.startswith("¥")
        if phone and len(phone) == 11:
            assert agent_row.phone == phone[:3] + "****" + phone[-4:]
            checked += 1
    assert checked > 50


def test_masked_phone_never_reveals_a_whole_short_number():
    for phone in ("1381234", "0000000", "12345678", "123456789", "0105551234"):
        masked = mask_phone(phone)
        assert sum(ch.isdigit() for ch in masked) < len(phone) - 3, (phone, masked)


def test_masked_email_keeps_only_first_letter_and_domain():
    assert mask_email("zhangwei88@qq.com") == "z***@qq.com"
    assert mask_email("broken.qq.com") == MASK
    assert mask_email(None) == ""


def test_customer_detail_is_masked_for_agents_only(seeded_actors):
    customer_id, _name, phone, email = pick_customer(
        "length(phone) = 11 AND email IS NOT NULL AND address IS NOT NULL AND birthday IS NOT NULL"
    )
    address = scalar("SELECT address FROM customer WHERE id = :i", i=customer_id)
    agent_view = customers.get_customer(seeded_actors["agent"], customer_id)
    senior_view = customers.get_customer(seeded_actors["senior"], customer_id)

    assert senior_view.sensitive_visible and not agent_view.sensitive_visible
    assert senior_view.phone == phone and senior_view.email == email and senior_view.address == address
    assert agent_view.phone == phone[:3] + "****" + phone[-4:]
    assert agent_view.email == mask_email(email) and agent_view.email != email
    assert address not in agent_view.address and agent_view.address.endswith(MASK)
    assert agent_view.birthday == MASK and senior_view.birthday not in ("", MASK)
    assert agent_view.total_spent == MASK
    # Non-sensitive fields are the same for both.
    assert agent_view.name == senior_view.name and agent_view.region == senior_view.region


def test_customer_detail_of_unknown_or_bogus_id_is_not_found(seeded_actors):
    for bogus in (10**9, "abc"):
        with pytest.raises(NotFound):
            customers.get_customer(seeded_actors["agent"], bogus)


def test_a_change_made_by_another_worker_retires_this_workers_cached_counts(seeded_actors):
    """Counts are cached per process; the generation in the database tells every worker."""
    actor = seeded_actors["agent"]
    query = q(sources=["wechat"])
    before = customer_list.count_customers(actor, query, exact=True).value
    victim = scalar("SELECT id FROM customer WHERE status = 'active' AND source = 'wechat' ORDER BY id LIMIT 1")
    # Another worker archives a customer: its own cache is cleared, ours is not ...
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET status = 'archived' WHERE id = :i"), {"i": victim})
    assert customer_list.count_customers(actor, query, exact=True).value == before  # still cached here
    # ... but it records a new generation, which this worker sees on the next count.
    cached_here = dict(customer_list._count_cache._entries)
    customer_list.invalidate_counts()
    customer_list._count_cache._entries.update(cached_here)  # as if the call had run in the other process
    assert customer_list.count_customers(actor, query, exact=True).value == before - 1


@pytest.mark.parametrize(
    "typed, shown",
    [
        ("13812345678", "138******78"),
        ("zhang.wei@example.com", "z***@example.com"),
        ("张伟", "张*"),
        ("王小明", "王**"),
        ("5678", "5***"),
        ("  ", ""),
        ("020-8765", "020***65"),
    ],
)
def test_a_typed_search_is_masked_for_audit_entries(typed, shown):
    from meiqia_app.services.customers.masking import mask_search_term

    assert mask_search_term(typed) == shown


# The senior agent stands for "a role that sees contact data" here (its team scope: test_data_scope.py).
pytestmark = pytest.mark.usefixtures("senior_scope_all")
