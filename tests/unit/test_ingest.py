"""Behaviour ingestion (services/integrations/ingest.py, POST /api/v1/events): per-record results, re-sends
that change nothing, prospects for unknown visitors, and the derived figures kept as the seed
keeps them (last active, paid orders, lifecycle, rule tags, report marks, the live counter)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import BehaviorEvent, Conversation, Customer, Message, Order, Tag, TagAssignment
from meiqia_app.services.customers import timeline
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.timeutil import as_utc, utcnow
from tests.unit.api_support import assert_conforms, audit_rows, bearer, client, new_key


def _post(api, raw, events, **headers):
    return api.post("/api/v1/events", json={"events": events}, headers={**bearer(raw), **headers})


def _customer(customer_id: int) -> Customer:
    with read_session() as session:
        return session.get(Customer, customer_id)


def _count(model, *where) -> int:
    with read_session() as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def _active_customer_without_orders() -> Customer:
    with read_session() as session:
        return session.exec(
            select(Customer)
            .where(Customer.status == "active", Customer.order_count == 0, Customer.erased_at.is_(None))
            .where(func.length(Customer.phone) == 11, Customer.phone.like("13%"))
            .order_by(Customer.id)
        ).first()


def test_a_bad_record_in_a_good_batch_is_rejected_alone(seeded_db):
    api = client()
    raw = new_key("web", ["events:write"])
    before = _count(BehaviorEvent)
    now = utcnow().isoformat()
    response = _post(
        api,
        raw,
        [
            {"event_id": "pv-1", "type": "page_view", "customer": {"id": 4}, "url": "/pricing", "occurred_at": now},
            {"event_id": "pv-2", "type": "page_view", "customer": {"id": 4}},  # no url
            {"event_id": "pv-3", "type": "teleport", "customer": {"id": 4}},
            {"event_id": "pv-4", "type": "page_view", "customer": {"id": 999999}, "url": "/"},
            {"event_id": "pv-5", "type": "search", "customer": {"id": 4}, "query": "面霜"},
            {"type": "page_view", "customer": {"id": 4}, "url": "/"},
            "not a record",
        ],
    )
    assert response.status_code == 200
    assert_conforms(api, response)
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 5), body
    results = body["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
    ]
    assert (results[1]["reason"], results[1]["field"]) == ("required", "url")
    assert (results[2]["reason"], results[2]["field"]) == ("invalid", "type")
    assert (results[3]["reason"], results[3]["field"]) == ("customer_not_found", "customer.id")
    assert results[5]["field"] == "event_id"
    assert _count(BehaviorEvent) == before + 2
    with read_session() as session:
        search = session.exec(
            select(BehaviorEvent).where(BehaviorEvent.kind == "search").order_by(BehaviorEvent.id.desc())
        ).first()
    assert search.url == "/search?q=面霜" and search.customer_id == 4
    entry = audit_rows("event.ingest")[-1]
    assert entry.actor_name == "api:web"
    assert json.loads(entry.details)["accepted"] == 2 and json.loads(entry.details)["rejected"] == 5


def test_a_batch_sent_again_changes_nothing(seeded_db):
    api = client()
    raw = new_key("shop", ["events:write"])
    customer = _active_customer_without_orders()
    at = utcnow().replace(microsecond=0).isoformat()
    batch = [
        {
            "event_id": "ord-77-created",
            "type": "order",
            "customer": {"phone": customer.phone},
            "order_id": "SHOP-77",
            "status": "paid",
            "occurred_at": at,
            "items": [{"sku": "NEW-SKU-1", "name": "保温杯", "quantity": 2, "price_cents": 4900}],
        },
        {"event_id": "pv-77", "type": "product_view", "customer": {"id": customer.id}, "product": {"sku": "NEW-SKU-1"}},
    ]
    first = _post(api, raw, batch).json()
    assert first["accepted"] == 2, first
    after_first = _customer(customer.id)
    assert (after_first.order_count, after_first.total_spent_cents) == (1, 9800)
    orders, events = _count(Order), _count(BehaviorEvent)
    again = _post(api, raw, batch).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    after_again = _customer(customer.id)
    assert (after_again.order_count, after_again.total_spent_cents) == (1, 9800)
    assert (_count(Order), _count(BehaviorEvent)) == (orders, events)
    # The same id twice in one batch: the second is a duplicate.
    twice = _post(api, raw, [{**batch[1], "event_id": "pv-78"}, {**batch[1], "event_id": "pv-78"}]).json()
    assert [r["status"] for r in twice["results"]] == ["accepted", "duplicate"]


def test_an_order_moves_the_figures_lifecycle_and_rule_tags_like_seeded_data(seeded_db):
    api = client()
    raw = new_key("shop", ["events:write"])
    customer = _active_customer_without_orders()
    assert customer.lifecycle_stage == "prospect"
    with get_engine().begin() as conn:
        conn.execute(text("DELETE FROM report_dirty"))
    at = utcnow() - dt.timedelta(minutes=5)
    paid = {
        "event_id": "o1",
        "type": "order",
        "customer": {"id": customer.id},
        "order_id": "SHOP-1",
        "status": "pending",
        "occurred_at": at.isoformat(),
        "amount_cents": 1_200_000,
        "items": [{"name": "大礼包", "quantity": 1, "price_cents": 1_200_000}],
    }
    assert _post(api, raw, [paid]).json()["accepted"] == 1
    assert _customer(customer.id).order_count == 0  # pending: not a purchase yet
    assert _post(api, raw, [{**paid, "event_id": "o1-paid", "status": "paid"}]).json()["accepted"] == 1
    after = _customer(customer.id)
    assert (after.order_count, after.total_spent_cents) == (1, 1_200_000)
    assert as_utc(after.first_purchase_at) == as_utc(after.last_purchase_at)
    assert (after.lifecycle_stage, after.membership_tier) == ("new", "gold")
    assert as_utc(after.last_active_at) >= at.replace(microsecond=0)
    with read_session() as session:
        gold = session.exec(select(Tag).where(Tag.name == "金卡会员")).one()
        assert session.get(TagAssignment, (customer.id, gold.id)) is not None
        order = session.exec(select(Order).where(Order.customer_id == customer.id)).one()
    assert (order.status, order.api_key_id is not None, order.paid_at is not None) == ("paid", True, True)
    with get_engine().connect() as conn:
        marked = conn.execute(text("SELECT count(*) FROM report_dirty WHERE customer_id = :c"), {"c": customer.id})
        assert marked.scalar_one() == 1
    refunded = _post(api, raw, [{**paid, "event_id": "o1-refund", "status": "refunded"}]).json()
    assert refunded["accepted"] == 1
    assert (_customer(customer.id).order_count, _customer(customer.id).total_spent_cents) == (0, 0)


def test_an_unknown_visitor_becomes_a_prospect_and_chats_show_in_the_timeline(seeded_db):
    api = client()
    raw = new_key("chat-widget", ["events:write"])
    before = _count(Customer)
    response = _post(
        api,
        raw,
        [
            {
                "event_id": "m1",
                "type": "chat_message",
                "customer": {"visitor_id": "web-visitor-9f3a", "source": "wechat"},
                "conversation_id": "conv-1",
                "direction": "in",
                "text": "你好，请问保湿面霜有货吗？",
            },
            {
                "event_id": "m2",
                "type": "chat_message",
                "customer": {"visitor_id": "web-visitor-9f3a"},
                "conversation_id": "conv-1",
                "direction": "out",
                "text": "有的，今天下单明天发货。",
                "agent_name": "晓明",
            },
            {
                "event_id": "c1",
                "type": "conversation",
                "customer": {"visitor_id": "web-visitor-9f3a"},
                "conversation_id": "conv-1",
                "status": "ended",
                "rating": 5,
                "category": "presale",
            },
        ],
    ).json()
    assert response["accepted"] == 3
    assert [r["created_customer"] for r in response["results"]] == [True, False, False]
    new_id = response["results"][0]["customer_id"]
    assert _count(Customer) == before + 1
    prospect = _customer(new_id)
    assert (prospect.visitor_id, prospect.lifecycle_stage, prospect.source) == (
        "web-visitor-9f3a",
        "prospect",
        "wechat",
    )
    with read_session() as session:
        conversation = session.exec(select(Conversation).where(Conversation.customer_id == new_id)).one()
        messages = session.exec(select(Message).where(Message.conversation_id == conversation.id)).all()
    assert (conversation.rating, conversation.category, conversation.ended_at is not None) == (5, "presale", True)
    assert [m.sender for m in messages] == ["customer", "agent"]
    page = timeline.customer_timeline(SYSTEM_ACTOR, new_id, lang="en")
    assert page.items[0].kind == "conversation" and "via API: chat-widget" in page.items[0].detail
    zh = timeline.customer_timeline(SYSTEM_ACTOR, new_id, lang="zh")
    assert "通过 API：chat-widget" in zh.items[0].detail


def test_customers_that_may_not_change_are_refused_per_record(seeded_db):
    api = client()
    raw = new_key("web", ["events:write"])
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET status = 'archived' WHERE id = 20"))
        conn.execute(text("UPDATE customer SET status = 'trashed' WHERE id = 21"))
        conn.execute(
            text(
                "INSERT INTO erasure_request (customer_id, requested_by_name, requested_at, reason, status) "
                "VALUES (22, 'x', '2026-11-01 00:00:00.000000', 'asked', 'pending')"
            )
        )
    events = [
        {"event_id": f"e{i}", "type": "login", "customer": {"id": customer_id}}
        for i, customer_id in enumerate((20, 21, 22, 23))
    ]
    results = _post(api, raw, events).json()["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("rejected", "customer_archived"),
        ("rejected", "customer_not_found"),
        ("rejected", "erasure_pending"),
        ("accepted", None),
    ]
    assert _customer(23).last_login_at is not None


def test_ingestion_bumps_the_activity_marker_an_open_page_watches(seeded_db):
    api = client()
    raw = new_key("web", ["events:write"])
    before = timeline.activity_marker(SYSTEM_ACTOR, 30)
    _post(api, raw, [{"event_id": "pv-30", "type": "page_view", "customer": {"id": 30}, "url": "/cart"}])
    after = timeline.activity_marker(SYSTEM_ACTOR, 30)
    assert after.seq == before.seq + 1 and after.version == before.version  # no edit conflict
    latest = timeline.customer_timeline(SYSTEM_ACTOR, 30, lang="en").items[0]
    assert latest.kind == "event" and "/cart" in latest.summary and latest.via == "via API: web"


def test_an_idempotency_key_on_events_replays_the_first_answer(seeded_db):
    api = client()
    raw = new_key("web", ["events:write"])
    events = [{"event_id": "k1", "type": "page_view", "customer": {"id": 5}, "url": "/a"}]
    first = _post(api, raw, events, **{"Idempotency-Key": "batch-1"})
    second = _post(api, raw, events, **{"Idempotency-Key": "batch-1"})
    assert first.json() == second.json() and first.json()["accepted"] == 1
    assert second.headers["idempotent-replayed"] == "true"


def test_a_batch_of_more_than_1000_is_refused_whole(seeded_db):
    api = client()
    raw = new_key("web", ["events:write"])
    events = [{"event_id": f"x{i}", "type": "login", "customer": {"id": 5}} for i in range(1001)]
    response = _post(api, raw, events)
    assert response.status_code == 422
    assert_conforms(api, response)


def test_last_active_and_last_login_move_forward_only_and_only_for_a_login(seeded_db):
    """One statement moves several customers: a login sets last login, a page view leaves it,
    an old record never moves a time back, and every customer's live counter goes up once."""
    api = client()
    raw = new_key("web", ["events:write"])
    recent = utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    older = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with get_engine().begin() as conn:
        for customer_id in (31, 32, 33):
            conn.execute(
                text("UPDATE customer SET last_active_at = :at, last_login_at = NULL WHERE id = :id"),
                {"at": older.strftime("%Y-%m-%d %H:%M:%S.%f"), "id": customer_id},
            )
        conn.execute(
            text("UPDATE customer SET last_active_at = :at WHERE id = 33"),
            {"at": (recent + dt.timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S.%f")},
        )
    seq = {i: _customer(i).activity_seq for i in (31, 32, 33)}
    at = recent.isoformat()
    events = [
        {"event_id": "m1", "type": "login", "customer": {"id": 31}, "occurred_at": at},
        {"event_id": "m2", "type": "page_view", "customer": {"id": 32}, "url": "/", "occurred_at": at},
        {"event_id": "m3", "type": "login", "customer": {"id": 33}, "occurred_at": at},
    ]
    assert _post(api, raw, events).json()["accepted"] == 3
    one, two, three = _customer(31), _customer(32), _customer(33)
    assert as_utc(one.last_active_at) == recent and as_utc(one.last_login_at) == recent
    assert as_utc(two.last_active_at) == recent and two.last_login_at is None
    assert as_utc(three.last_active_at) == recent + dt.timedelta(minutes=3)  # not moved back
    assert as_utc(three.last_login_at) == recent
    assert {i: _customer(i).activity_seq - seq[i] for i in (31, 32, 33)} == {31: 1, 32: 1, 33: 1}


def test_several_orders_and_conversations_change_in_one_batch(seeded_db):
    """Changes to existing rows with the same columns go in one statement per column set."""
    api = client()
    raw = new_key("shop", ["events:write"])
    at = (utcnow() - dt.timedelta(minutes=5)).replace(microsecond=0)
    ids = (51, 52, 53)
    first = [
        {
            "event_id": f"new-{i}",
            "type": "order",
            "customer": {"id": i},
            "order_id": f"MANY-{i}",
            "status": "pending",
            "occurred_at": at.isoformat(),
            "amount_cents": 1000 * i,
        }
        for i in ids
    ] + [
        {
            "event_id": f"chat-{i}",
            "type": "chat_message",
            "customer": {"id": i},
            "conversation_id": f"C-{i}",
            "text": "在吗",
        }
        for i in ids
    ]
    assert _post(api, raw, first).json()["accepted"] == 6
    figures = {i: (_customer(i).order_count, _customer(i).total_spent_cents) for i in ids}
    later = at + dt.timedelta(minutes=1)
    second = [
        {
            "event_id": f"pay-{i}",
            "type": "order",
            "customer": {"id": i},
            "order_id": f"MANY-{i}",
            "status": "paid",
            "occurred_at": later.isoformat(),
        }
        for i in ids
    ] + [
        {
            "event_id": f"end-{i}",
            "type": "conversation",
            "customer": {"id": i},
            "conversation_id": f"C-{i}",
            "status": "ended",
            "rating": 4,
            "category": "complaint",
            "occurred_at": later.isoformat(),
        }
        for i in ids[:2]
    ]
    assert _post(api, raw, second).json()["accepted"] == 5
    with read_session() as session:
        orders = {o.customer_id: o for o in session.exec(select(Order).where(Order.order_no.like("MANY-%")))}
        talks = {
            c.customer_id: c
            for c in session.exec(
                select(Conversation).where(Conversation.customer_id.in_(ids), Conversation.api_key_id.is_not(None))
            )
        }
    for i in ids:
        assert (orders[i].status, as_utc(orders[i].paid_at), orders[i].amount_cents) == ("paid", later, 1000 * i)
        count, spent = figures[i]
        assert (_customer(i).order_count, _customer(i).total_spent_cents) == (count + 1, spent + 1000 * i)
    for i in ids[:2]:
        assert (talks[i].rating, talks[i].category, as_utc(talks[i].ended_at)) == (4, "complaint", later)
    assert (talks[53].rating, talks[53].ended_at) == (None, None)


def test_a_ref_whose_row_was_purged_starts_afresh(seeded_db):
    api = client()
    raw = new_key("chat", ["events:write"])
    chat = {"type": "chat_message", "conversation_id": "GONE-1", "text": "你好"}
    order = {"type": "order", "order_id": "GONE-O", "amount_cents": 500}
    assert _post(api, raw, [{**chat, "event_id": "g1", "customer": {"id": 61}}]).json()["accepted"] == 1
    assert _post(api, raw, [{**order, "event_id": "g2", "customer": {"id": 61}}]).json()["accepted"] == 1
    with get_engine().begin() as conn:  # the customer's rows purged, the mappings left behind
        conn.execute(
            text("DELETE FROM message WHERE conversation_id IN (SELECT id FROM conversation WHERE customer_id = 61)")
        )
        conn.execute(text("DELETE FROM conversation WHERE customer_id = 61"))
        conn.execute(text("DELETE FROM customer_order WHERE customer_id = 61"))
        assert conn.execute(text("SELECT count(*) FROM external_ref WHERE ref LIKE 'GONE-%'")).scalar_one() == 2
    body = _post(
        api,
        raw,
        [{**chat, "event_id": "g3", "customer": {"id": 62}}, {**order, "event_id": "g4", "customer": {"id": 62}}],
    ).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted"], body
    with get_engine().connect() as conn:
        owners = conn.execute(
            text(
                "SELECT x.kind, coalesce(c.customer_id, o.customer_id) FROM external_ref x "
                "LEFT JOIN conversation c ON x.kind = 'conversation' AND c.id = x.row_id "
                "LEFT JOIN customer_order o ON x.kind = 'order' AND o.id = x.row_id WHERE x.ref LIKE 'GONE-%'"
            )
        ).all()
    assert sorted(owners) == [("conversation", 62), ("order", 62)]


def test_concurrent_batches_all_land_and_queue_for_sqlites_one_writer(seeded_db, monkeypatch):
    """Concurrent batches naming the same customers all land (one after the other on SQLite;
    side by side on PostgreSQL, where they deadlocked before the customers were locked in id
    order); on SQLite a batch that cannot get its turn within the wait is refused as busy,
    having written nothing."""
    import threading

    from meiqia_app.dbadapter import get_adapter
    from meiqia_app.services.errors import Busy
    from meiqia_app.services.integrations import api_keys, ingest

    raw = new_key("web", ["events:write"])
    actor = api_keys.authenticate(f"Bearer {raw}")
    before = _count(BehaviorEvent)
    outcomes = []

    def send(n):
        records = [
            {"event_id": f"q{n}-{i}", "type": "page_view", "customer": {"id": 70 + (i * (n + 1)) % 20}, "url": "/"}
            for i in range(20)
        ]
        outcomes.append(sum(r.status == "accepted" for r in ingest.ingest(actor, records)))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == [20, 20, 20, 20]
    assert _count(BehaviorEvent) == before + 80
    if not get_adapter().one_writer:
        return  # PostgreSQL: batches run side by side (their customers locked in id order)
    monkeypatch.setattr(ingest, "WRITERS_WAIT_S", 0.05)
    with ingest._WRITERS, pytest.raises(Busy):  # another batch of this process holds the turn
        send(9)
    assert _count(BehaviorEvent) == before + 80


def test_a_steady_feed_retires_the_list_counts_at_most_once_in_a_while(seeded_db, monkeypatch):
    """Each batch that made a prospect wrote a new list generation, so under a steady feed every
    agent's list recounted 1M customers every second or two. Batches now retire the counts (the
    generation) at most once every INGEST_RETIRES_COUNTS_EVERY_S; an edit by hand still at once."""
    from meiqia_app.services.customers import change_subscribers
    from meiqia_app.services.customers import edit as customer_edit
    from meiqia_app.services.customers import listing as customer_list

    clock = [1_000.0]
    monkeypatch.setattr(change_subscribers, "_clock", lambda: clock[0])

    def generation() -> str:
        with get_engine().connect() as conn:
            return customer_list.data_generation(conn)

    api = client()
    raw = new_key("widget", ["events:write"])

    def visit(n: int) -> None:
        event = {"event_id": f"v{n}", "type": "page_view", "customer": {"visitor_id": f"steady-{n}"}, "url": "/"}
        assert _post(api, raw, [event]).json()["accepted"] == 1

    first = generation()
    visit(1)  # the first batch of a while retires them
    second = generation()
    assert second != first
    clock[0] += 5
    visit(2)  # a prospect made 5 s later: counts held back
    assert generation() == second
    customer_edit.create_customer(SYSTEM_ACTOR, {"name": "手工新建"}, acknowledged=None)
    by_hand = generation()
    assert by_hand != second  # a change by hand retires them at once, as before
    clock[0] += change_subscribers.INGEST_RETIRES_COUNTS_EVERY_S
    visit(3)
    assert generation() != by_hand
