"""services/customers/timeline.py, services/customers/notes.py and services/tags/assignments.py: the
customer detail page's history, notes and tags."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import (
    AuditEntry,
    BehaviorEvent,
    Conversation,
    Customer,
    Message,
    Note,
    Order,
    Tag,
    TagAssignment,
)
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import changes as customer_changes
from meiqia_app.services.customers import notes, timeline
from meiqia_app.services.customers.dto import money
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.tags import assignments as customer_tags
from meiqia_app.services.tags.names import tag_key
from tests.unit.change_support import published, told

TABLES = {"order": Order, "conversation": Conversation, "event": BehaviorEvent, "note": Note}
TIME_COLUMN = {"order": "created_at", "conversation": "started_at", "event": "occurred_at", "note": "created_at"}
UTC = dt.UTC


# --- helpers -----------------------------------------------------------------------------


def audit_entries(action: str, result: str | None = None) -> list[AuditEntry]:
    with read_session() as session:
        query = select(AuditEntry).where(AuditEntry.action == action)
        if result:
            query = query.where(AuditEntry.result == result)
        return list(session.exec(query.order_by(AuditEntry.id)).all())


def all_audit_entries() -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)).all())


def details(entry: AuditEntry) -> dict:
    return json.loads(entry.details)


def busiest_customer() -> int:
    """The seeded customer with the most orders + conversations + events + notes."""
    sql = """
        SELECT c.id,
               (SELECT count(*) FROM customer_order o WHERE o.customer_id = c.id)
             + (SELECT count(*) FROM conversation v WHERE v.customer_id = c.id)
             + (SELECT count(*) FROM behavior_event e WHERE e.customer_id = c.id)
             + (SELECT count(*) FROM note n WHERE n.customer_id = c.id) AS total
        FROM customer c WHERE c.status = 'active' ORDER BY total DESC, c.id LIMIT 1
    """
    with get_engine().connect() as conn:
        return conn.execute(text(sql)).first()[0]


def add_same_instant_rows(customer_id: int, at: dt.datetime, per_kind: int = 3) -> None:
    """Rows of every kind at one instant: the (time, kind, id) tie-break must hold across pages."""
    with write_session() as session:
        for n in range(per_kind):
            session.add(
                Order(
                    order_no=f"TIE{customer_id}-{n}",
                    customer_id=customer_id,
                    product_name="平局商品",
                    amount_cents=100,
                    status="paid",
                    created_at=at,
                )
            )
            session.add(Conversation(customer_id=customer_id, started_at=at, category="other"))
            session.add(BehaviorEvent(customer_id=customer_id, kind="login", occurred_at=at))
            session.add(
                Note(customer_id=customer_id, body=f"同一时刻 {n}", author_name="x", created_at=at, updated_at=at)
            )


TABLE_KINDS = tuple(sorted(TABLES))


def expected_order(customer_id: int, kinds=TABLE_KINDS) -> list[str]:
    """Every row of the chosen tables, newest first by (time, kind, id), straight from SQL.

    (The fifth kind, consent changes, are audit entries: the seed has none.)"""
    rows = []
    with read_session() as session:
        for kind in kinds:
            model = TABLES[kind]
            column = getattr(model, TIME_COLUMN[kind])
            for row_id, at in session.exec(select(model.id, column).where(model.customer_id == customer_id)):
                rows.append((at, kind, row_id))
    rows.sort(reverse=True)
    return [f"{kind}:{row_id}" for _at, kind, row_id in rows]


def table_counts(customer_id: int) -> dict[str, int]:
    with read_session() as session:
        return {
            kind: session.exec(select(func.count()).select_from(model).where(model.customer_id == customer_id)).one()
            for kind, model in TABLES.items()
        }


def walk(actor: Actor, customer_id: int, kinds=None, limit: int = 20) -> list[timeline.TimelineItem]:
    items, cursor, pages = [], "", 0
    while True:
        page = timeline.customer_timeline(actor, customer_id, kinds, cursor=cursor, limit=limit)
        pages += 1
        assert len(page.items) <= limit
        items += page.items
        if not page.next_cursor:
            return items
        assert len(page.items) == limit  # only the last page may be short
        cursor = page.next_cursor
        assert pages < 1000


def nobody(actors: dict) -> Actor:
    """An actor without any permission (a custom role)."""
    agent = actors["agent"]
    return Actor(
        user_id=agent.user_id,
        username=agent.username,
        display_name=agent.display_name,
        role_name="nobody",
        permissions=frozenset(),
    )


def raw_cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# --- timeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 20])
def test_walking_all_pages_returns_every_row_of_the_four_tables_once_newest_first(seeded_db, seeded_actors, limit):
    customer_id = busiest_customer()
    add_same_instant_rows(customer_id, dt.datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    counts = table_counts(customer_id)
    assert all(counts.values()) and sum(counts.values()) >= 20

    items = walk(seeded_actors["agent"], customer_id, limit=limit)

    keys = [item.key for item in items]
    assert len(keys) == len(set(keys)) == sum(counts.values())
    assert keys == expected_order(customer_id)
    assert {kind: sum(1 for i in items if i.kind == kind) for kind in TABLES} == counts
    shown = [item.at for item in items]
    assert shown == sorted(shown, reverse=True)  # "YYYY-MM-DD HH:MM" local, newest first


def test_kind_filter_returns_only_those_kinds_and_all_of_them(seeded_db, seeded_actors):
    customer_id = busiest_customer()
    add_same_instant_rows(customer_id, dt.datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    for kinds in ({"order"}, {"note", "conversation"}, {"event", "order", "note"}):
        items = walk(seeded_actors["agent"], customer_id, kinds=kinds, limit=5)
        assert {item.kind for item in items} <= kinds
        assert [item.key for item in items] == expected_order(customer_id, sorted(kinds))
    assert [i.key for i in walk(seeded_actors["agent"], customer_id, kinds=set())] == expected_order(customer_id)


def test_unknown_kind_is_rejected(seeded_db, seeded_actors):
    with pytest.raises(ValidationError) as caught:
        timeline.customer_timeline(seeded_actors["agent"], busiest_customer(), {"order", "payment"})
    assert caught.value.field_errors["kinds"][0] == "error.bad_choice"


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "e30",  # {}
        raw_cursor(["2026-01-01T00:00:00+00:00", "order"]),
        raw_cursor(["2026-01-01T00:00:00+00:00", "payment", 5]),
        raw_cursor(["2026-01-01T00:00:00", "order", 5]),  # naive time
        raw_cursor(["yesterday", "order", 5]),
        raw_cursor(["2026-01-01T00:00:00+00:00", "order", "5"]),
        raw_cursor(["2026-01-01T00:00:00+00:00", "order", True]),
    ],
)
def test_a_bad_cursor_is_a_validation_error(seeded_db, seeded_actors, cursor):
    with pytest.raises(ValidationError) as caught:
        timeline.customer_timeline(seeded_actors["agent"], busiest_customer(), None, cursor=cursor)
    assert caught.value.field_errors == {"cursor": ("error.bad_cursor", {})}


def test_a_cursor_from_a_page_continues_after_its_last_item(seeded_db, seeded_actors):
    customer_id = busiest_customer()
    first = timeline.customer_timeline(seeded_actors["agent"], customer_id, None, limit=3)
    at, kind, row_id = timeline.decode_cursor(first.next_cursor)
    assert f"{kind}:{row_id}" == first.items[-1].key
    second = timeline.customer_timeline(seeded_actors["agent"], customer_id, None, cursor=first.next_cursor, limit=3)
    assert [i.key for i in first.items + second.items] == expected_order(customer_id)[:6]


def test_timeline_needs_customer_view_and_the_refusal_is_audited(seeded_db, seeded_actors):
    customer_id = busiest_customer()
    with pytest.raises(PermissionDenied):
        timeline.customer_timeline(nobody(seeded_actors), customer_id, None)
    refused = audit_entries("customer.timeline", "refused")
    assert len(refused) == 1 and refused[0].target_id == str(customer_id)
    with pytest.raises(PermissionDenied):
        timeline.conversation_messages(nobody(seeded_actors), 1)


def test_timeline_of_a_missing_or_trashed_customer_is_not_found(seeded_db, seeded_actors):
    with pytest.raises(NotFound):
        timeline.customer_timeline(seeded_actors["agent"], 10**9, None)
    with pytest.raises(NotFound):
        timeline.customer_timeline(seeded_actors["agent"], "abc", None)
    customer_id = busiest_customer()
    with write_session() as session:
        session.get(Customer, customer_id).status = "trashed"
    with pytest.raises(NotFound):
        timeline.customer_timeline(seeded_actors["agent"], customer_id, None)
    assert timeline.customer_timeline(seeded_actors["admin"], customer_id, None).items  # customer.delete sees the bin


def order_item_of(actor: Actor, order: Order) -> timeline.TimelineItem:
    items = walk(actor, order.customer_id, kinds={"order"}, limit=50)
    return next(i for i in items if i.id == order.id)


def a_seeded_order() -> Order:
    with read_session() as session:
        return session.exec(
            select(Order)
            .where(Order.recipient_phone.is_not(None), Order.shipping_address.is_not(None), Order.amount_cents > 0)
            .order_by(Order.id)
            .limit(1)
        ).one()


def test_order_amount_and_recipient_are_masked_for_agents(seeded_db, seeded_actors):
    order = a_seeded_order()
    item = order_item_of(seeded_actors["agent"], order)
    assert money(order.amount_cents) not in item.summary and "****" in item.summary
    assert order.product_name in item.summary
    assert {"paid": "已付款", "refunded": "已退款", "pending": "待付款"}[order.status] in item.summary
    assert order.recipient_phone not in item.detail
    assert order.recipient_phone[:3] + "****" + order.recipient_phone[-4:] in item.detail
    assert order.shipping_address not in item.detail and order.shipping_address[:4] + "****" in item.detail
    assert order.recipient_name not in item.detail


def test_order_amount_and_recipient_are_shown_to_senior_agents(seeded_db, seeded_actors):
    order = a_seeded_order()
    item = order_item_of(seeded_actors["senior"], order)
    assert money(order.amount_cents) in item.summary
    assert order.recipient_phone in item.detail and order.shipping_address in item.detail
    assert order.recipient_name in item.detail
    assert item.title == f"订单 {order.order_no}"
    assert item.at and not item.can_edit and not item.can_delete


def test_labels_follow_the_language(seeded_db, seeded_actors):
    order = a_seeded_order()
    page = timeline.customer_timeline(seeded_actors["senior"], order.customer_id, {"order"}, limit=100, lang="en")
    item = next(i for i in page.items if i.id == order.id)
    assert item.title == f"Order {order.order_no}"
    assert {"paid": "Paid", "refunded": "Refunded", "pending": "Pending"}[order.status] in item.summary


def test_items_hold_only_plain_values(seeded_db, seeded_actors):
    for item in walk(seeded_actors["admin"], busiest_customer()):
        for field in item.__dataclass_fields__:
            assert type(getattr(item, field)) in (str, int, bool), field


def test_conversation_item_shows_category_channel_rating_and_message_count(seeded_db, seeded_actors):
    with read_session() as session:
        conversation = session.exec(
            select(Conversation).where(Conversation.rating.is_not(None)).order_by(Conversation.id).limit(1)
        ).one()
        count = session.exec(
            select(func.count()).select_from(Message).where(Message.conversation_id == conversation.id)
        ).one()
    items = walk(seeded_actors["agent"], conversation.customer_id, kinds={"conversation"})
    item = next(i for i in items if i.id == conversation.id)
    category = {"inquiry": "咨询", "presale": "售前", "aftersale": "售后", "complaint": "投诉", "other": "其他"}
    assert category[conversation.category] in item.title
    assert f"{count} 条消息" in item.summary and f"{conversation.rating}/5" in item.summary
    assert item.expandable is (count > 0)


def test_conversation_messages_come_oldest_first(seeded_db, seeded_actors):
    with read_session() as session:
        conversation_id = session.exec(
            select(Message.conversation_id).group_by(Message.conversation_id).having(func.count() >= 3).limit(1)
        ).one()
        stored = session.exec(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.sent_at, Message.id)
        ).all()
    messages = timeline.conversation_messages(seeded_actors["agent"], conversation_id)
    assert [m.text for m in messages] == [m.body for m in stored]
    assert [m.sender_code for m in messages] == [m.sender for m in stored]
    assert {m.sender for m in messages} <= {"客户", "客服"}
    assert [m.at for m in messages] == sorted(m.at for m in messages)
    assert len(timeline.conversation_messages(seeded_actors["agent"], conversation_id, limit=2)) == 2
    with pytest.raises(NotFound):
        timeline.conversation_messages(seeded_actors["agent"], 10**9)


def test_event_items_name_the_product_or_the_page(seeded_db, seeded_actors):
    with read_session() as session:
        event = session.exec(select(BehaviorEvent).where(BehaviorEvent.kind == "product_view").limit(1)).one()
    item = next(i for i in walk(seeded_actors["agent"], event.customer_id, kinds={"event"}) if i.id == event.id)
    assert item.title == "浏览商品" and item.summary.startswith("商品：")


# --- notes ---------------------------------------------------------------------------------------


def note_item(actor: Actor, customer_id: int, note_id: int) -> timeline.TimelineItem:
    items = walk(actor, customer_id, kinds={"note"}, limit=50)
    return next(i for i in items if i.id == note_id)


def stored_note(note_id: int) -> Note | None:
    with read_session() as session:
        return session.get(Note, note_id)


def test_agent_adds_a_note_that_shows_first_and_is_audited(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    customer_id = busiest_customer()
    note_id = notes.add_note(agent, customer_id, "  客户希望周末电话联系  ")
    note = stored_note(note_id)
    assert note.body == "客户希望周末电话联系" and note.author_id == agent.user_id

    first = timeline.customer_timeline(agent, customer_id, None, limit=1).items[0]
    assert first.key == f"note:{note_id}"
    assert "客户希望周末电话联系" in first.summary and agent.display_name in first.title
    assert first.can_edit and first.can_delete and first.body == note.body

    entry = audit_entries("note.create")[-1]
    assert entry.target_id == str(note_id) and entry.actor_name == "agent"
    # The audit log can never be erased: it keeps a keyed hash and the length, not the text.
    assert details(entry) == {"customer_id": customer_id, "text": audit.text_ref("客户希望周末电话联系")}
    assert details(entry)["text"]["chars"] == 10 and "周末" not in entry.details


def test_roles_without_customer_edit_cannot_add_notes_and_it_is_audited(seeded_db, seeded_actors):
    with pytest.raises(PermissionDenied):
        notes.add_note(seeded_actors["senior"], busiest_customer(), "看一下")
    refused = audit_entries("note.create", "refused")
    assert len(refused) == 1 and details(refused[0]) == {"missing_permission": "customer.edit"}


@pytest.mark.parametrize(
    ("value", "key", "params"),
    [
        ("", "error.required", {}),
        ("   \n ", "error.required", {}),
        (None, "error.required", {}),
        ("字" * 2001, "error.too_long", {"max": 2000}),
    ],
)
def test_note_text_is_required_and_at_most_2000_characters(seeded_db, seeded_actors, value, key, params):
    with pytest.raises(ValidationError) as caught:
        notes.add_note(seeded_actors["agent"], busiest_customer(), value)
    assert caught.value.field_errors == {"text": (key, params)}


def test_a_note_of_exactly_2000_characters_is_accepted(seeded_db, seeded_actors):
    note_id = notes.add_note(seeded_actors["agent"], busiest_customer(), "字" * 2000)
    assert len(stored_note(note_id).body) == 2000


def test_notes_on_missing_customers_are_not_found(seeded_db, seeded_actors):
    with pytest.raises(NotFound):
        notes.add_note(seeded_actors["agent"], 10**9, "hello")
    with pytest.raises(NotFound):
        notes.edit_note(seeded_actors["agent"], 10**9, "hello")
    with pytest.raises(NotFound):
        notes.delete_note(seeded_actors["admin"], 10**9)


def test_agent_edits_own_note_and_the_diff_is_audited(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    customer_id = busiest_customer()
    note_id = notes.add_note(agent, customer_id, "旧内容")
    notes.edit_note(agent, note_id, "新内容")
    assert stored_note(note_id).body == "新内容"
    entry = audit_entries("note.update")[-1]
    assert entry.result == "ok" and entry.target_id == str(note_id)
    assert details(entry)["text_before"] == audit.text_ref("旧内容")
    assert details(entry)["text"] == audit.text_ref("新内容") != audit.text_ref("旧内容")
    assert "内容" not in entry.details
    item = note_item(agent, customer_id, note_id)
    assert item.summary == "新内容" and item.detail  # "edited at …"

    notes.edit_note(agent, note_id, "新内容")  # no change: no entry
    assert len(audit_entries("note.update")) == 1


def test_agent_deletes_own_note_and_only_a_hash_of_the_text_stays_in_the_audit_log(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    note_id = notes.add_note(agent, busiest_customer(), "要删掉的备注")
    notes.delete_note(agent, note_id)
    assert stored_note(note_id) is None
    entry = audit_entries("note.delete")[-1]
    assert entry.target_id == str(note_id)
    assert details(entry)["text"] == audit.text_ref("要删掉的备注") and details(entry)["author_id"] == agent.user_id
    assert not any("删掉" in e.details for e in all_audit_entries())


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_agent_cannot_change_someone_elses_note_and_the_refusal_is_audited(seeded_db, seeded_actors, change):
    customer_id = busiest_customer()
    note_id = notes.add_note(seeded_actors["manager"], customer_id, "经理的备注")
    agent = seeded_actors["agent"]
    assert not note_item(agent, customer_id, note_id).can_edit
    assert not note_item(agent, customer_id, note_id).can_delete
    with pytest.raises(PermissionDenied) as caught:
        if change == "edit":
            notes.edit_note(agent, note_id, "改掉")
        else:
            notes.delete_note(agent, note_id)
    assert caught.value.message_key == "note.not_own"
    assert stored_note(note_id).body == "经理的备注"
    refused = audit_entries(f"note.{'update' if change == 'edit' else 'delete'}", "refused")
    assert len(refused) == 1 and refused[0].actor_name == "agent" and refused[0].target_id == str(note_id)
    assert details(refused[0])["reason"] == "note.not_own"


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_senior_cannot_change_notes_at_all(seeded_db, seeded_actors, change):
    note_id = notes.add_note(seeded_actors["agent"], busiest_customer(), "客服的备注")
    with pytest.raises(PermissionDenied):
        if change == "edit":
            notes.edit_note(seeded_actors["senior"], note_id, "改掉")
        else:
            notes.delete_note(seeded_actors["senior"], note_id)
    assert stored_note(note_id).body == "客服的备注"


def test_admin_edits_and_deletes_anybodys_note(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    customer_id = busiest_customer()
    note_id = notes.add_note(seeded_actors["agent"], customer_id, "客服写的")
    item = note_item(admin, customer_id, note_id)
    assert item.can_edit and item.can_delete
    notes.edit_note(admin, note_id, "管理员改过")
    assert stored_note(note_id).body == "管理员改过"
    assert stored_note(note_id).author_id == seeded_actors["agent"].user_id  # still the agent's note
    notes.delete_note(admin, note_id)
    assert stored_note(note_id) is None
    entry = audit_entries("note.delete")[-1]
    assert entry.actor_name == "admin" and details(entry)["text"] == audit.text_ref("管理员改过")
    assert not any("管理员改过" in e.details or "客服写的" in e.details for e in all_audit_entries())


def test_a_note_does_not_bump_the_customer_version(seeded_db, seeded_actors):
    customer_id = busiest_customer()
    with read_session() as session:
        before = session.get(Customer, customer_id).version
    notes.add_note(seeded_actors["agent"], customer_id, "不影响资料版本")
    with read_session() as session:
        assert session.get(Customer, customer_id).version == before


# --- tags -------------------------------------------------------------------------------------------


def assignment(customer_id: int, tag_id: int) -> TagAssignment | None:
    with read_session() as session:
        return session.get(TagAssignment, (customer_id, tag_id))


def tag_named(name: str) -> Tag | None:
    with read_session() as session:
        return session.exec(select(Tag).where(Tag.name_key == tag_key(name))).first()


def untagged_customer(tag_id: int) -> int:
    with read_session() as session:
        return session.exec(
            select(Customer.id)
            .where(
                Customer.status == "active",
                Customer.id.not_in(select(TagAssignment.customer_id).where(TagAssignment.tag_id == tag_id)),
            )
            .order_by(Customer.id)
            .limit(1)
        ).one()


def test_suggestions_match_by_prefix_first_then_substring(seeded_db, seeded_actors):
    names = [o.name for o in customer_tags.suggest_tags(seeded_actors["agent"], "客户")]
    assert {"新客户", "高频客户", "投诉客户"} <= set(names)
    assert all("客户" in name for name in names)
    customer_tags.add_tag(seeded_actors["manager"], busiest_customer(), "客户经理跟进")
    names = [o.name for o in customer_tags.suggest_tags(seeded_actors["agent"], "客户")]
    assert names[0] == "客户经理跟进"  # the prefix match first
    assert [o.name for o in customer_tags.suggest_tags(seeded_actors["agent"], "客户", limit=2)] == names[:2]
    assert customer_tags.suggest_tags(seeded_actors["agent"], "没有这种标签") == []


def test_suggestions_ignore_width_and_case_and_treat_like_wildcards_literally(seeded_db, seeded_actors):
    customer_tags.add_tag(seeded_actors["manager"], busiest_customer(), "VIP客户")
    for typed in ("vip", "ＶＩＰ", "Vip客"):
        assert [o.name for o in customer_tags.suggest_tags(seeded_actors["agent"], typed)] == ["VIP客户"]
    assert customer_tags.suggest_tags(seeded_actors["agent"], "%") == []
    assert customer_tags.suggest_tags(seeded_actors["agent"], "_") == []


def test_suggestions_can_leave_out_the_customers_own_tags(seeded_db, seeded_actors):
    tag = tag_named("新客户")
    customer_id = untagged_customer(tag.id)
    customer_tags.add_tag(seeded_actors["agent"], customer_id, tag.id)
    found = customer_tags.suggest_tags(seeded_actors["agent"], "客户", exclude_customer_id=customer_id)
    assert tag.id not in [o.id for o in found] and found
    empty_prefix = customer_tags.suggest_tags(seeded_actors["agent"], "", limit=3)
    assert empty_prefix[0].id == tag.id  # the most recently assigned first


def test_suggestions_need_customer_view(seeded_db, seeded_actors):
    with pytest.raises(PermissionDenied):
        customer_tags.suggest_tags(nobody(seeded_actors), "客")


def test_agent_adds_an_existing_tag_by_id_or_name_and_it_is_audited(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    tag = tag_named("待回访")
    customer_id = untagged_customer(tag.id)
    with read_session() as session:
        version = session.get(Customer, customer_id).version

    with published() as invalidated:
        chip = customer_tags.add_tag(agent, customer_id, " 待回访 ")
    assert (chip.id, chip.name, chip.source) == (tag.id, "待回访", "manual")
    row = assignment(customer_id, tag.id)
    assert row.source == "manual" and row.assigned_by_id == agent.user_id
    entry = audit_entries("customer.tag_add")[-1]
    assert entry.target_id == str(customer_id)
    assert details(entry)["changes"] == {"tags": [None, "待回访"]} and details(entry)["tag_id"] == tag.id
    assert invalidated == [told({customer_id}, customer_changes.TAGS)]

    customer_tags.add_tag(agent, customer_id, tag.id)  # already there: nothing changes
    assert len(audit_entries("customer.tag_add")) == 1
    with read_session() as session:
        assert session.get(Customer, customer_id).version == version  # tags never bump the version
        assert session.get(Tag, tag.id).last_assigned_at is not None


def test_agent_cannot_create_a_tag_by_typing_an_unknown_name(seeded_db, seeded_actors):
    with pytest.raises(ValidationError) as caught:
        customer_tags.add_tag(seeded_actors["agent"], busiest_customer(), "全新标签")
    assert caught.value.field_errors == {"tag": ("tag.not_found", {"name": "全新标签"})}
    assert tag_named("全新标签") is None
    assert audit_entries("customer.tag_add") == []


def test_manager_creates_a_tag_by_typing_an_unknown_name(seeded_db, seeded_actors):
    customer_id = busiest_customer()
    chip = customer_tags.add_tag(seeded_actors["manager"], customer_id, "全新标签")
    tag = tag_named("全新标签")
    assert tag is not None and chip.id == tag.id and tag.group == "custom"
    assert tag.created_by_id == seeded_actors["manager"].user_id
    assert assignment(customer_id, tag.id).source == "manual"
    assert details(audit_entries("tag.create")[-1])["name"] == "全新标签"
    assert details(audit_entries("customer.tag_add")[-1])["tag_created"] is True
    # The same name typed differently is the same tag, not a second one.
    customer_tags.add_tag(seeded_actors["manager"], untagged_customer(tag.id), " 全新标签 ")
    with read_session() as session:
        assert session.exec(select(func.count()).select_from(Tag).where(Tag.name == "全新标签")).one() == 1


@pytest.mark.parametrize(
    ("value", "key", "params"),
    [
        ("   ", "error.required", {}),
        ("长" * 33, "error.too_long", {"max": 32}),
    ],
)
def test_tag_names_are_validated(seeded_db, seeded_actors, value, key, params):
    with pytest.raises(ValidationError) as caught:
        customer_tags.add_tag(seeded_actors["manager"], busiest_customer(), value)
    assert caught.value.field_errors == {"tag": (key, params)}


def test_adding_a_rule_assigned_tag_makes_it_manual(seeded_db, seeded_actors):
    tag = tag_named("高频客户")
    customer_id = untagged_customer(tag.id)
    with write_session() as session:
        session.add(TagAssignment(customer_id=customer_id, tag_id=tag.id, source="rule"))
    customer_tags.add_tag(seeded_actors["agent"], customer_id, tag.id)
    assert assignment(customer_id, tag.id).source == "manual"
    assert details(audit_entries("customer.tag_add")[-1])["changes"] == {"tag_source": ["rule", "manual"]}


def test_agent_removes_a_tag_and_it_is_audited(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    tag = tag_named("投诉客户")
    customer_id = untagged_customer(tag.id)
    customer_tags.add_tag(agent, customer_id, tag.id)

    with published() as invalidated:
        assert customer_tags.remove_tag(agent, customer_id, tag.id) is True
    assert assignment(customer_id, tag.id) is None
    entry = audit_entries("customer.tag_remove")[-1]
    assert entry.target_id == str(customer_id)
    assert details(entry)["changes"] == {"tags": ["投诉客户", None]} and details(entry)["source"] == "manual"
    assert invalidated == [told({customer_id}, customer_changes.TAGS)]

    assert customer_tags.remove_tag(agent, customer_id, tag.id) is False  # already gone: no entry
    assert len(audit_entries("customer.tag_remove")) == 1


@pytest.mark.parametrize("call", ["add", "remove"])
def test_roles_without_tag_assign_cannot_tag_and_it_is_audited(seeded_db, seeded_actors, call):
    tag = tag_named("新客户")
    customer_id = busiest_customer()
    with pytest.raises(PermissionDenied):
        if call == "add":
            customer_tags.add_tag(seeded_actors["senior"], customer_id, tag.id)
        else:
            customer_tags.remove_tag(seeded_actors["senior"], customer_id, tag.id)
    action = "customer.tag_add" if call == "add" else "customer.tag_remove"
    refused = audit_entries(action, "refused")
    assert len(refused) == 1 and details(refused[0]) == {"missing_permission": "tag.assign"}


def test_tagging_a_missing_customer_or_tag_is_not_found(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    with pytest.raises(NotFound):
        customer_tags.add_tag(agent, 10**9, tag_named("新客户").id)
    with pytest.raises(NotFound):
        customer_tags.add_tag(agent, busiest_customer(), 10**9)
    with pytest.raises(NotFound):
        customer_tags.remove_tag(agent, busiest_customer(), "x")


def test_the_audit_chain_still_verifies_after_notes_and_tags(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    customer_id = busiest_customer()
    note_id = notes.add_note(agent, customer_id, "一")
    notes.edit_note(agent, note_id, "二")
    with pytest.raises(PermissionDenied):
        notes.delete_note(seeded_actors["manager"], note_id)
    notes.delete_note(agent, note_id)
    customer_tags.add_tag(seeded_actors["manager"], customer_id, "链路测试")
    customer_tags.remove_tag(agent, customer_id, tag_named("链路测试").id)
    with read_session() as session:
        assert audit.verify_chain(session).ok


# The senior agent stands for "a role that sees contact data" here (its team scope: test_data_scope.py).
pytestmark = pytest.mark.usefixtures("senior_scope_all")
