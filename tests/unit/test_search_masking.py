"""Masking cannot be undone through search (and the search that goes with it).

A role without customer.view_sensitive sees 181****1780. Before, it could
search "<name> 1810" … "<name> 1819" and keep the digit that still found the
customer: the whole number in a few dozen searches, an e-mail address in a
few hundred. These tests replay that attack on every place a query matches
customers (the list and its counts, saved views, bulk selections, export
scopes, report segments) and check that the answers do not depend on a
hidden character. They also cover what such a role may still do: find a
customer by the whole number or address, or by what the mask shows.
"""

from __future__ import annotations

import datetime as dt
import string

import pytest
from sqlalchemy import text, update

from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import saved_views
from meiqia_app.services.customers.masking import MASK, mask_phone
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.search_text import parse_query
from meiqia_app.services.customers.selection import Selection, selection_count
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends

DIGITS = "0123456789"
EMAIL_CHARS = string.ascii_lowercase + DIGITS + "._-"


def rows(sql: str, **params) -> list:
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).all()


def q(**data) -> ListQuery:
    return ListQuery.from_dict(data)


def observed(actor, typed: str) -> tuple:
    """Everything the list shows for a search: rows in order with their labels, the count and the exact count."""
    query = q(q=typed)
    page = customer_list.list_customers(actor, query, page_size=100)
    customer_list.forget_cached_counts()
    estimate = customer_list.count_customers(actor, query).value
    exact = customer_list.count_customers(actor, query, exact=True).value
    return [(row.id, row.match, row.phone, row.email) for row in page.rows], estimate, exact


def victim(where: str = "") -> tuple[int, str, str, str]:
    found = rows(
        "SELECT id, name, phone, email FROM customer WHERE status = 'active' AND length(phone) = 11 "
        f"AND phone LIKE '1%' AND email LIKE '%@%' {where} ORDER BY id LIMIT 1"
    )
    assert found
    return found[0]


def phone_guesses(name: str, phone: str) -> list[str]:
    """For each hidden digit (positions 3-6 of 181****1780): ten searches that
    differ only in the guess for it, next to the digits around it (which the
    attacker knows or has guessed before: the true ones, the worst case)."""
    typed = []
    for position in range(3, 7):
        before = phone[position - 3 : position]
        after = phone[position + 1 : position + 4]
        typed += [f"{name} {before}{d}" for d in DIGITS]
        typed += [f"{before}{d}" for d in DIGITS]
        typed += [f"{name} {d}{after}" for d in DIGITS]
    return typed


def email_guesses(name: str, email: str) -> list[str]:
    local, _, domain = email.partition("@")
    typed = [f"{name} {c}@{domain}" for c in EMAIL_CHARS] + [f"{c}{local[-1]}@{domain}" for c in EMAIL_CHARS]
    for known in range(1, min(len(local), 4)):
        typed += [f"{name} {local[:known]}{c}" for c in EMAIL_CHARS]
        typed += [f"{local[:known]}{c}" for c in EMAIL_CHARS]
    return typed


def change_hidden_part(customer_id: int, phone: str | None = None, email: str | None = None) -> None:
    """Give the customer another phone / e-mail that looks the same masked."""
    from meiqia_app.services.customers.search_text import search_row

    with get_engine().begin() as conn:
        if phone is not None:
            conn.execute(text("UPDATE customer SET phone = :v WHERE id = :i"), {"v": phone, "i": customer_id})
        if email is not None:
            conn.execute(text("UPDATE customer SET email = :v WHERE id = :i"), {"v": email, "i": customer_id})
        c = conn.execute(
            text("SELECT name, phone, email, external_id, visitor_id FROM customer WHERE id = :i"), {"i": customer_id}
        ).one()
        row = search_row(*c)
        conn.execute(
            text(
                "UPDATE customer_search SET text = :text, contact = :contact, phone_mask = :phone_mask WHERE customer_id = :i"
            ),
            {**row, "i": customer_id},
        )
    customer_list.invalidate_counts()


def test_guessing_hidden_phone_digits_tells_an_agent_nothing(seeded_actors):
    """What an agent sees for every guess is the same whatever the hidden digits are."""
    agent, senior = seeded_actors["agent"], seeded_actors["senior"]
    customer_id, name, phone, _email = victim()
    guesses = phone_guesses(name, phone)
    before = [observed(agent, typed) for typed in guesses]
    senior_before = [observed(senior, typed) for typed in guesses]
    other = phone[:3] + "".join(str((int(ch) + 5) % 10) for ch in phone[3:7]) + phone[7:]
    assert mask_phone(other) == mask_phone(phone)
    change_hidden_part(customer_id, phone=other)
    after = [observed(agent, typed) for typed in guesses]
    assert after == before
    # The same searches do tell a role that sees phones: the attack is real.
    assert [observed(senior, typed) for typed in guesses] != senior_before
    hits = [typed for typed, seen in zip(guesses, senior_before) if customer_id in [r[0] for r in seen[0]]]
    assert f"{name} {phone[:4]}" in hits and f"{name} {phone[:3]}{(int(phone[3]) + 1) % 10}" not in hits


def test_guessing_hidden_email_characters_tells_an_agent_nothing(seeded_actors):
    agent = seeded_actors["agent"]
    customer_id, name, _phone, email = victim("AND length(email) - length(replace(email, '@', '')) = 1")
    guesses = email_guesses(name, email.lower())
    before = [observed(agent, typed) for typed in guesses]
    local, _, domain = email.partition("@")
    change_hidden_part(customer_id, email=f"{local[0]}x9q-{local[1:][::-1]}@{domain}")
    assert [observed(agent, typed) for typed in guesses] == before


def test_an_agent_finds_a_customer_by_the_whole_number_or_what_the_mask_shows(seeded_actors):
    agent = seeded_actors["agent"]
    customer_id, name, phone, email = victim()
    typed_forms = [
        phone,  # the whole number
        f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}",  # pasted with country code and spaces
        f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
        mask_phone(phone),  # pasted from the screen
        f"{name} {phone[-4:]}",  # name and the visible last four digits
        email,  # the whole address
        email.upper(),
        f"{name} @{email.partition('@')[2]}",  # the domain
    ]
    for typed in typed_forms:
        found = [row[0] for row in observed(agent, typed)[0]]
        assert customer_id in found, typed
    # A whole number that differs in one hidden digit finds nobody (exact, not "close").
    wrong = phone[:5] + str((int(phone[5]) + 1) % 10) + phone[6:]
    assert customer_id not in [row[0] for row in observed(agent, wrong)[0]]


def test_whole_number_finds_exactly_that_customer_first_with_its_label(seeded_actors):
    agent = seeded_actors["agent"]
    customer_id, _name, phone, _email = victim()
    page = customer_list.list_customers(agent, q(q=f"+86 {phone}"))
    owners = {r[0] for r in rows("SELECT id FROM customer WHERE phone = :p AND status = 'active'", p=phone)}
    assert {row.id for row in page.rows} == owners and customer_id in owners
    assert all(row.match == "手机号完全匹配" for row in page.rows)


# --- the other places a query matches customers ------------------------------------------------


def test_saved_views_apply_the_loading_role_rules(seeded_actors):
    """A view shared by a role that sees phones finds for an agent only what the agent may match."""
    agent, senior = seeded_actors["agent"], seeded_actors["senior"]
    customer_id, name, phone, _email = victim()
    found = []
    for d in DIGITS:
        view = saved_views.save_view(senior, f"guess {d}", q(q=f"{name} {phone[:3]}{d}"), shared=True)
        loaded = saved_views.load_view(agent, view.id)
        found.append([row.id for row in customer_list.list_customers(agent, loaded).rows])
        customer_list.forget_cached_counts()
        found[-1].append(customer_list.count_customers(agent, loaded, exact=True).value)
    assert all(answer == found[0] for answer in found)
    senior_hits = [
        d
        for d in DIGITS
        if customer_id in [r.id for r in customer_list.list_customers(senior, q(q=f"{name} {phone[:3]}{d}")).rows]
    ]
    assert senior_hits == [phone[3]]


def test_bulk_selections_count_under_the_actor_rules(seeded_actors):
    agent = seeded_actors["agent"]
    _customer_id, name, phone, _email = victim()
    counts = {selection_count(agent, Selection.of_query(q(q=f"{name} {phone[:3]}{d}"))) for d in DIGITS}
    assert counts == {0}


def test_export_scopes_count_under_the_requester_rules(seeded_actors):
    analyst = seeded_actors["analyst"]  # may export, sees contact data masked
    customer_id, name, phone, _email = victim()
    counts = []
    for d in DIGITS:
        data = {
            "scope": {"kind": "query", "query": {"q": f"{name} {phone[:3]}{d}", "status": "all"}},
            "fields": ["id", "name"],
            "format": "csv",
        }
        counts.append(export_request.review(analyst, data).row_count)
    assert len(set(counts)) == 1
    manager_counts = [
        export_request.review(
            seeded_actors["manager"],
            {
                "scope": {"kind": "query", "query": {"q": f"{name} {phone[:3]}{d}", "status": "all"}},
                "fields": ["id", "name"],
                "format": "csv",
            },
        ).row_count
        for d in DIGITS
    ]
    assert len(set(manager_counts)) > 1  # the manager sees phones: the scope really narrows for them


def test_report_segments_match_under_the_analyst_rules(seeded_actors):
    analyst = seeded_actors["analyst"]
    _customer_id, name, phone, _email = victim()
    today = dt.date.today()
    a = report_periods.Period("custom", today - dt.timedelta(days=400), today - dt.timedelta(days=200))
    b = report_periods.Period("custom", today - dt.timedelta(days=199), today)
    results = [report_trends.compare_periods(analyst, q(q=f"{name} {phone[:3]}{d}"), a, b) for d in DIGITS]
    assert all(result == results[0] for result in results)


@pytest.mark.parametrize(
    "data",
    [{"spent_min": 100}, {"spent_max": 5000}, {"sort": "total_spent"}],
)
def test_a_role_that_sees_amounts_masked_cannot_filter_or_sort_by_them(seeded_actors, data):
    """ "Spent at least ¥x?" answered per customer would narrow the hidden amount down."""
    agent, analyst = seeded_actors["agent"], seeded_actors["analyst"]
    query = q(q=victim()[1], **data)
    with pytest.raises(PermissionDenied):
        customer_list.list_customers(agent, query)
    with pytest.raises(PermissionDenied):
        customer_list.count_customers(agent, query)
    with pytest.raises(PermissionDenied):
        selection_count(agent, Selection.of_query(query))
    with pytest.raises(PermissionDenied):
        export_request.review(analyst, {"scope": {"kind": "query", "query": query.to_dict()}, "fields": ["id"]})
    with pytest.raises(PermissionDenied):  # nor an export in the order of the amounts it shows masked
        export_request.review(
            analyst, {"scope": {"kind": "query", "query": {}}, "fields": ["id"], "sort_field": "total_spent"}
        )
    view = saved_views.save_view(seeded_actors["senior"], "big spenders", query, shared=True)
    with pytest.raises(PermissionDenied):
        customer_list.list_customers(agent, saved_views.load_view(agent, view.id))
    refusals = rows("SELECT actor_name, action FROM audit_entry WHERE result = 'refused'")
    assert {("agent", "customer.list"), ("agent", "customer.count"), ("analyst", "customer.list")} <= set(refusals)
    # A role that sees amounts still can.
    customer_list.list_customers(seeded_actors["senior"], query)


# --- phone formats, ranking and labels ---------------------------------------------------------


def make(actor, name: str, phone: str | None = None, visitor_id: str | None = None, days_ago: int = 0, **more) -> int:
    fields = {"name": name, "source": "web", **more}
    if phone:
        fields["phone"] = phone
    if visitor_id:
        fields["visitor_id"] = visitor_id
    customer_id = customer_edit.create_customer(actor, fields)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) - dt.timedelta(days=days_ago)
    with get_engine().begin() as conn:  # through the column's type: stored as the app stores it
        conn.execute(update(Customer.__table__).where(Customer.__table__.c.id == customer_id).values(last_active_at=at))
    customer_list.invalidate_counts()
    return customer_id


def listed(actor, typed: str, **extra) -> list[tuple[int, str]]:
    page = customer_list.list_customers(actor, q(q=typed, **extra), page_size=100)
    return [(row.id, row.match) for row in page.rows]


def test_a_pasted_number_with_country_code_finds_the_customer(actors):
    admin = actors["admin"]
    cn = make(admin, "王小明", "151 7396 9244")
    uk = make(admin, "Smith", "+44 20 7946 0958")
    for actor in (actors["agent"], actors["senior"]):
        assert [i for i, _ in listed(actor, "+86 151 7396 9244")] == [cn]
        assert [i for i, _ in listed(actor, "+86-151-7396-9244")] == [cn]
        assert [i for i, _ in listed(actor, "0086 15173969244")] == [cn]
        assert [i for i, _ in listed(actor, "+44 20 7946 0958")] == [uk]
    assert parse_query("+86 151 7396 9244").terms == ("15173969244",)


def test_suffix_matches_rank_first_and_each_row_says_why(actors):
    admin, agent, senior = actors["admin"], actors["agent"], actors["senior"]
    ends = make(admin, "甲一", "15173969244", days_ago=30)  # least recently active
    middle = make(admin, "乙二", "13892441234", days_ago=1)  # 9244 among the hidden digits
    visitor = make(admin, "丙三", "13800005678", visitor_id="v-9244-x", days_ago=10)
    exact = make(admin, "丁四", "13711119244", days_ago=20)

    # An agent: the hidden middle digits match nothing; the visible last four rank first.
    assert listed(agent, "9244") == [
        (exact, "手机尾号匹配"),
        (ends, "手机尾号匹配"),
        (visitor, "访客 ID 匹配"),
    ]
    # A role that sees phones: the middle match too, after the suffix matches.
    assert listed(senior, "9244") == [
        (exact, "手机尾号匹配"),
        (ends, "手机尾号匹配"),
        (middle, "手机号匹配"),
        (visitor, "访客 ID 匹配"),
    ]
    # The whole number: that customer, labelled as an exact match.
    assert listed(agent, "137 1111 9244") == [(exact, "手机号完全匹配")]
    assert listed(senior, "13711119244") == [(exact, "手机号完全匹配")]
    page = customer_list.list_customers(agent, q(q="9244"), lang="en")
    assert page.rows[0].match == "Phone number ends with it"


def test_ranked_pages_walk_every_match_once_both_ways(actors):
    admin, agent = actors["admin"], actors["agent"]
    suffix = [make(admin, f"尾{i}", f"13{i}1234{i}778", days_ago=40 + i) for i in range(5)]
    others = [make(admin, f"访客{i}", visitor_id=f"v{i:02d}778", days_ago=i) for i in range(20)]
    expected = suffix + others  # suffix matches first, each group by last activity (newest first)
    seen, cursor, pages = [], "", []
    while True:
        page = customer_list.list_customers(agent, q(q="778"), cursor=cursor, page_size=20)
        pages.append(page)
        seen += [row.id for row in page.rows]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == expected
    back = customer_list.list_customers(agent, q(q="778"), cursor=pages[1].prev_cursor, direction="prev", page_size=20)
    assert [row.id for row in back.rows] == expected[:20]
    last = customer_list.list_customers(agent, q(q="778"), direction="last", page_size=20)
    assert [row.id for row in last.rows] == expected[-20:]


def test_masks_keep_enough_to_recognise_any_phone_format():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("1065521234") == "010-****1234"  # Beijing landline, stored nationally
    assert mask_phone("75512345678") == "0755-****5678"
    assert mask_phone("+442079460958") == "+44 20 ****0958"
    assert mask_phone("+12025550123") == "+1 ****0123"  # an area code would leave three digits hidden
    assert mask_phone("+447911123456") == "+44 ****3456"
    for phone in ("1065521234", "75512345678", "+442079460958", "+447911123456", "12012345678", "1381234"):
        masked = mask_phone(phone)
        shown = sum(ch.isdigit() for ch in masked) - masked.startswith("0")  # 010-: the trunk 0 is not stored
        assert MASK in masked and shown <= sum(ch.isdigit() for ch in phone) - 4, (phone, masked)


def test_an_agent_sees_the_landline_they_just_typed_recognisably(actors):
    agent = actors["agent"]
    customer_id = make(agent, "李固话", "010-6552-1234")
    assert listed(agent, "010-****1234") == [(customer_id, "手机号匹配")]  # pasted from the screen
    page = customer_list.list_customers(agent, q(q="1234"))
    assert [(row.id, row.phone, row.match) for row in page.rows] == [(customer_id, "010-****1234", "手机尾号匹配")]
    # The hidden local digits find nothing for the agent.
    assert listed(agent, "6552") == [] and listed(agent, "5521") == []


# --- migration 0010 ----------------------------------------------------------------------------


def _migrate(target: str, down: bool = False) -> None:
    from alembic import command

    from meiqia_app.migrate import alembic_config

    with get_engine().begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, target)


def test_migration_0010_moves_the_full_contact_data_out_of_the_public_text(seeded_actors):
    from meiqia_app.services.customers.search_text import search_row

    agent, senior = seeded_actors["agent"], seeded_actors["senior"]
    customer_id, _name, phone, _email = victim()
    _migrate("0009_audit_integrity", down=True)
    # Before: one text with the full phone in it.
    assert phone in rows("SELECT text FROM customer_search WHERE customer_id = :i", i=customer_id)[0][0]
    _migrate("head")
    customer_list.forget_cached_counts()
    stored = rows(
        "SELECT c.name, c.phone, c.email, c.external_id, c.visitor_id, s.text, s.contact, s.phone_mask "
        "FROM customer c JOIN customer_search s ON s.customer_id = c.id WHERE c.erased_at IS NULL"
    )
    assert len(stored) == 300
    for row in stored:
        assert search_row(*row[:5]) == {"text": row[5], "contact": row[6], "phone_mask": row[7]}
    # The rebuilt index answers both roles' searches.
    middle = phone[3:8]
    assert customer_id in [r.id for r in customer_list.list_customers(senior, q(q=middle)).rows]
    assert customer_id not in [r.id for r in customer_list.list_customers(agent, q(q=middle)).rows]
    assert customer_id in [r.id for r in customer_list.list_customers(agent, q(q=phone)).rows]


def test_guessing_whole_numbers_is_limited_for_a_role_that_sees_them_masked(seeded_actors, monkeypatch):
    """The exact match answers one guess: 138****5678 hides 10,000 of them. A
    scripted run of whole-number guesses stops at the hourly limit (audited)."""
    monkeypatch.setattr(customer_list, "EXACT_LOOKUPS_PER_HOUR", 5)
    agent, senior = seeded_actors["agent"], seeded_actors["senior"]
    customer_id, _name, phone, _email = victim()
    guesses = [phone[:3] + f"{n:04d}" + phone[7:] for n in range(10_000)]
    answered = 0
    with pytest.raises(PermissionDenied) as refused:
        for guess in guesses:
            customer_list.list_customers(agent, q(q=guess))
            answered += 1
    assert answered == 5 and refused.value.message_key == "error.exact_lookup_limit"
    # A number already looked up stays answerable; counting it is no new guess.
    customer_list.list_customers(agent, q(q=guesses[0]))
    customer_list.count_customers(agent, q(q=f"+86 {guesses[1]}"))
    entry = rows("SELECT action, details FROM audit_entry WHERE result = 'refused' AND actor_name = 'agent'")
    assert entry and "error.exact_lookup_limit" in entry[-1][1] and phone not in entry[-1][1]
    # A role that sees phones is not limited (it sees the number anyway).
    for guess in guesses[:20]:
        customer_list.list_customers(senior, q(q=guess))
    assert customer_id in [r.id for r in customer_list.list_customers(senior, q(q=phone)).rows]


# The senior agent stands for "a role that sees contact data" here (its team scope: test_data_scope.py).
pytestmark = pytest.mark.usefixtures("senior_scope_all")
