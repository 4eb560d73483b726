"""services/customers/duplicates/ (finding, merging): finding duplicate customers and merging them without losing anything."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import (
    AuditEntry,
    BehaviorEvent,
    Conversation,
    ErasureRequest,
    Message,
    Note,
    Order,
    TagAssignment,
)
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import changes as customer_changes
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.duplicates import finding as duplicates
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.masking import MASK, mask_email, mask_phone
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.search_text import build_search_text, search_row
from meiqia_app.services.customers.validation import EDITABLE_FIELDS, normalize_phone
from meiqia_app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from meiqia_app.services.identity import users
from meiqia_app.timeutil import UTC
from tests.conftest import load_actors
from tests.unit.change_support import published, told

T0 = dt.datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def create_customer(actor, raw: dict) -> int:
    """These tests make duplicates on purpose: past the new-customer duplicate check."""
    return customer_edit.create_customer(actor, raw, acknowledged=None)


def rows(sql: str, **params) -> list:
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).all()


def scalar(sql: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def execute(sql: str, **params) -> None:
    with write_session() as session:
        session.execute(text(sql), params)


def all_groups(actor, kind: str, limit: int = 50) -> list:
    groups, after = [], ""
    for _ in range(10_000):
        page = duplicates.find_duplicate_groups(actor, kind, after_key=after, limit=limit)
        groups += page.groups
        if not page.next_key:
            return groups
        after = page.next_key
    raise AssertionError("paging did not end")


def expected_groups(kind: str) -> dict[str, tuple[int, list[int]]]:
    """key -> (size, first member ids), grouped here in Python from a plain scan of the table."""
    key_sql = {"phone": "phone", "email": "lower(email)", "name_city": "name || ' · ' || city"}[kind]
    present = {"phone": "phone <> ''", "email": "email <> ''", "name_city": "city <> ''"}[kind]
    members: dict[str, list[int]] = {}
    for key, customer_id in rows(
        f"SELECT {key_sql} AS k, id FROM customer WHERE status <> 'trashed' AND {present} ORDER BY id"
    ):
        members.setdefault(key, []).append(customer_id)
    return {
        k: (len(ids), ids[: duplicates.MEMBERS_PER_GROUP])
        for k, ids in sorted(members.items())
        if len(ids) > 1 and (kind != "phone" or valid_phone(k))
    }


def valid_phone(value: str) -> bool:
    try:
        return normalize_phone(value) == value
    except ValueError:
        return False


def add_email_duplicates() -> None:
    """The 300-customer seed has no shared e-mail: copy some, one in capitals."""
    with_email = [r[0] for r in rows("SELECT id FROM customer WHERE email LIKE '%@%' ORDER BY id LIMIT 6")]
    execute(
        "UPDATE customer SET email = (SELECT email FROM customer WHERE id = :a) WHERE id = :b",
        a=with_email[0],
        b=with_email[1],
    )
    execute(
        "UPDATE customer SET email = (SELECT upper(email) FROM customer WHERE id = :a) WHERE id IN (:b, :c)",
        a=with_email[2],
        b=with_email[3],
        c=with_email[4],
    )


def as_found(groups) -> dict[str, tuple[int, list[int]]]:
    return {g.key: (g.size, [m.id for m in g.members]) for g in groups}


def audit_entries(action: str) -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all())


def restricted_actor(admin, permissions: list[str]):
    """A user whose custom role has exactly ``permissions``."""
    users.create_role(admin, "merger", "合并员", "Merger", permissions)
    users.create_user(admin, "merger1", "Merger-pass-1", "merger", "Merger One")
    return load_actors()["merger1"]


# --- finding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", duplicates.KINDS)
def test_groups_are_those_of_a_direct_sql_group_by(seeded_db, seeded_actors, kind):
    add_email_duplicates()
    expected = expected_groups(kind)
    assert expected, f"the seed makes {kind} duplicates"
    found = all_groups(seeded_actors["admin"], kind)
    assert as_found(found) == expected
    assert [g.key for g in found] == sorted(expected)  # in key order, each group once


@pytest.mark.parametrize("kind", duplicates.KINDS)
def test_small_pages_visit_every_group_exactly_once(seeded_db, seeded_actors, kind):
    add_email_duplicates()
    whole = [g.key for g in all_groups(seeded_actors["admin"], kind, limit=200)]
    paged = [g.key for g in all_groups(seeded_actors["admin"], kind, limit=2)]
    assert paged == whole


def test_an_invalid_phone_shared_by_many_is_not_a_duplicate_group(db, actors):
    admin = actors["admin"]
    junk = [create_customer(admin, {"name": f"客户{i}"}) for i in range(3)]
    execute("UPDATE customer SET phone = '0000000'")
    assert rows("SELECT count(*) FROM customer WHERE phone = '0000000'")[0][0] == 3 == len(junk)
    a = create_customer(admin, {"name": "甲", "phone": "+86 139 0000 1111"})
    b = create_customer(admin, {"name": "乙", "phone": "13900001111"})
    assert as_found(all_groups(admin, "phone")) == {"13900001111": (2, [a, b])}


def test_a_group_left_with_one_live_customer_is_not_shown(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    pair = next(g for g in all_groups(admin, "phone") if g.size == 2)
    execute(
        "UPDATE customer SET status = 'trashed', trashed_at = :now WHERE id = :id",
        now="2026-01-01 00:00:00.000000",
        id=pair.members[1].id,
    )
    assert pair.key not in {g.key for g in all_groups(admin, "phone")}
    assert pair.key not in expected_groups("phone")


def test_emails_are_grouped_ignoring_case(db, actors):
    admin = actors["admin"]
    first = create_customer(admin, {"name": "甲", "email": "zhang.wei@qq.com"})
    second = create_customer(admin, {"name": "乙", "email": "Zhang.Wei@qq.com"})
    third = create_customer(admin, {"name": "丙", "email": "ZHANG.WEI@qq.com"})
    create_customer(admin, {"name": "丁", "email": "Li.Na@qq.com"})
    create_customer(admin, {"name": "戊", "email": "LI.na@qq.com"})  # no lower-case twin at all
    create_customer(admin, {"name": "己", "email": "wang@qq.com"})
    found = as_found(all_groups(admin, "email", limit=1))
    assert found == {"li.na@qq.com": (2, [4, 5]), "zhang.wei@qq.com": (3, [first, second, third])}
    assert found == expected_groups("email")


@pytest.mark.parametrize("limit", [1, 2, 3, 50])
def test_capitalised_emails_are_found_on_every_page_size(db, actors, limit):
    """Keys sharing first letters with capitalised spellings on both sides of page boundaries."""
    import random

    rng = random.Random(7)
    locals_ = ["ma1", "ma2", "mb2", "mc3", "md", "me", "mf", "m_x", "na", "nb", "a1", "z9", "1234", "_u", "~v"]
    values = []
    for position, local in enumerate(locals_):
        if position % 2:  # an all-lower-case pair: found by walking the index
            values += [(f"{local}@qq.com", "active")] * 2
        for _ in range(rng.randrange(1, 4)):
            spelled = "".join(ch.upper() if rng.random() < 0.5 else ch for ch in local)
            values.append((f"{spelled}@qq.com", "active"))
    values += [("MA1@qq.com", "trashed"), ("Solo@qq.com", "active")]
    with write_session() as session:
        for index, (email, status) in enumerate(values):
            session.execute(
                text(
                    "INSERT INTO customer (name, name_pinyin, name_initials, gender, email, source, registered_at, "
                    "last_active_at, order_count, total_spent_cents, lifecycle_stage, membership_tier, "
                    "consent_marketing, consent_analytics, status, custom_attributes, version, created_at, updated_at) "
                    "VALUES (:name, '', '', 'U', :email, 'web', '2026-01-01 00:00:00.000000', "
                    "'2026-01-01 00:00:00.000000', 0, 0, 'prospect', 'regular', false, false, :status, '{}', 1, "
                    "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
                ),
                {"name": f"客户{index}", "email": email, "status": status},
            )
    expected = expected_groups("email")
    assert len(expected) >= 6 and any(email != email.lower() for email, _status in values)
    found = all_groups(actors["admin"], "email", limit=limit)
    assert as_found(found) == expected
    assert [g.key for g in found] == sorted(expected)


def test_members_carry_what_the_list_shows(seeded_db, seeded_actors):
    group = all_groups(seeded_actors["admin"], "phone")[0]
    member = group.members[0]
    row = rows("SELECT name, phone, city, order_count FROM customer WHERE id = :id", id=member.id)[0]
    assert (member.name, member.phone, member.city, member.order_count) == tuple(row)
    assert member.phone == group.key and member.last_active and member.status in ("active", "archived")


def test_phone_and_email_are_masked_for_an_actor_without_view_sensitive(seeded_db, seeded_actors):
    restricted = restricted_actor(seeded_actors["admin"], ["customer.view", "customer.merge"])
    clear = {g.members[0].id: g for g in all_groups(seeded_actors["admin"], "phone", limit=3)}
    masked = all_groups(restricted, "phone", limit=3)
    assert sorted(clear) == [g.members[0].id for g in masked]  # the same groups, by first customer
    for hidden in masked:
        plain = clear[hidden.members[0].id]
        assert hidden.size == plain.size
        assert hidden.key == mask_phone(plain.key) and hidden.key != plain.key
        assert [m.phone for m in hidden.members] == [mask_phone(m.phone) for m in plain.members]
        assert [m.email for m in hidden.members] == [mask_email(m.email) for m in plain.members]
    page = duplicates.find_duplicate_groups(restricted, "phone", limit=1)
    first = min(clear)
    assert page.next_key and clear[first].key not in page.next_key  # the cursor does not carry the phone


@pytest.mark.parametrize("kind", ["phone", "email"])
def test_groups_shown_masked_do_not_come_in_the_order_of_their_hidden_part(seeded_db, seeded_actors, kind):
    """In key order, 138****5678 listed before 138****1234 would say the first's hidden
    digits are smaller: for a role that sees them masked the order is the
    groups' first customer, and changing hidden digits changes nothing it sees."""
    if kind == "email":
        add_email_duplicates()
        refresh_search_rows([r[0] for r in rows("SELECT id FROM customer")])
    restricted = restricted_actor(seeded_actors["admin"], ["customer.view", "customer.merge"])

    def seen() -> list:
        return [(g.key, g.size, [(m.id, m.phone, m.email) for m in g.members]) for g in all_groups(restricted, kind, 2)]

    before = seen()
    assert len(before) >= 2
    assert [g[2][0][0] for g in before] == sorted(g[2][0][0] for g in before)
    # Every group's shared value gets other hidden characters (same mask): nothing seen changes.
    for _key, _size, members in before:
        value = rows(f"SELECT {kind} FROM customer WHERE id = :i", i=members[0][0])[0][0]
        sharing = rows(f"SELECT id, {kind} FROM customer WHERE lower({kind}) = lower(:v)", v=value)
        for customer_id, own in sharing:  # each keeps its own spelling (capitals)
            if kind == "phone":
                other = own[:3] + "".join(str((int(ch) + 5) % 10) for ch in own[3:7]) + own[7:]
            else:
                local, _, domain = own.partition("@")
                other = f"{local[:1]}zz{local[1:][::-1]}@{domain}"
            execute(f"UPDATE customer SET {kind} = :v WHERE id = :i", v=other, i=customer_id)
        refresh_search_rows([customer_id for customer_id, _own in sharing])
    assert seen() == before


def refresh_search_rows(ids) -> None:
    """After a raw update of customers: their search rows as the services would write them."""
    for customer_id in ids:
        c = rows("SELECT name, phone, email, external_id, visitor_id FROM customer WHERE id = :i", i=customer_id)[0]
        execute(
            "UPDATE customer_search SET text = :text, contact = :contact, phone_mask = :phone_mask "
            "WHERE customer_id = :i",
            i=customer_id,
            **search_row(*c),
        )


def test_a_forged_or_foreign_cursor_is_refused(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    phone_cursor = duplicates.find_duplicate_groups(admin, "phone", limit=1).next_key
    for bad in ("13800000000", "garbage", phone_cursor[:-3] + "abc"):
        with pytest.raises(ValidationError):
            duplicates.find_duplicate_groups(admin, "phone", after_key=bad)
    with pytest.raises(ValidationError):
        duplicates.find_duplicate_groups(admin, "email", after_key=phone_cursor)
    with pytest.raises(ValidationError):
        duplicates.find_duplicate_groups(admin, "address")


def test_finding_needs_customer_merge_and_the_refusal_is_audited(seeded_db, seeded_actors):
    with pytest.raises(PermissionDenied):
        duplicates.find_duplicate_groups(seeded_actors["agent"], "phone")
    [entry] = audit_entries("customer.find_duplicates")
    assert entry.result == "refused" and entry.actor_name == "agent"


# --- a pair to merge ------------------------------------------------------------------------------


def tag_ids(*names: str) -> list[int]:
    with read_session() as session:
        return [session.execute(text("SELECT id FROM tag WHERE name = :n"), {"n": n}).scalar_one() for n in names]


def some_tag_names(count: int) -> list[str]:
    return [r[0] for r in rows("SELECT name FROM tag ORDER BY id LIMIT :n", n=count)]


def give_history(
    customer_id: int,
    *,
    orders: list[tuple[str, int, dt.datetime]],
    notes: int,
    conversations: int,
    events: int,
    tags: list[tuple[int, str]],
    tag: str = "",
) -> None:
    with write_session() as session:
        for index, (status, amount, created) in enumerate(orders):
            session.add(
                Order(
                    order_no=f"T{customer_id}-{index}{tag}",
                    customer_id=customer_id,
                    product_name="耳机",
                    amount_cents=amount,
                    status=status,
                    created_at=created,
                    paid_at=created if status != "pending" else None,
                )
            )
        for index in range(notes):
            session.add(Note(customer_id=customer_id, author_name="经理", body=f"note {customer_id}-{index}"))
        for index in range(conversations):
            conversation = Conversation(customer_id=customer_id, started_at=T0 + dt.timedelta(days=index))
            session.add(conversation)
            session.flush()
            for line in range(2):
                session.add(Message(conversation_id=conversation.id, body=f"msg {conversation.id}-{line}"))
        for index in range(events):
            session.add(
                BehaviorEvent(
                    customer_id=customer_id, kind="page_view", url="/", occurred_at=T0 + dt.timedelta(hours=index)
                )
            )
        for tag_id, source in tags:
            session.add(
                TagAssignment(
                    customer_id=customer_id, tag_id=tag_id, source=source, assigned_at=T0 + dt.timedelta(days=tag_id)
                )
            )


def version_of(customer_id: int) -> int:
    return scalar("SELECT version FROM customer WHERE id = :id", id=customer_id)


def versions(*ids: int) -> dict[int, int]:
    return {i: version_of(i) for i in ids}


@pytest.fixture()
def pair(db, actors):
    """Two hand-made customers with the same phone, each with orders, notes, conversations, events and tags."""
    admin = actors["admin"]
    survivor = create_customer(admin, {"name": "张伟", "phone": "13812345678", "city": "北京", "gender": "M"})
    other = create_customer(
        admin,
        {
            "name": "张玮",
            "phone": "138 1234 5678",
            "email": "zw@example.com",
            "city": "北京",
            "company": "美洽",
            "address": "北京市海淀区一号",
        },
    )
    a, b, c = tag_ids(*some_tag_names(3))
    give_history(
        survivor,
        orders=[("paid", 10_000, T0), ("refunded", 5_000, T0 + dt.timedelta(days=1))],
        notes=1,
        conversations=1,
        events=2,
        tags=[(a, "manual"), (b, "rule")],
    )
    give_history(
        other,
        orders=[
            ("paid", 20_000, T0 - dt.timedelta(days=30)),
            ("pending", 7_000, T0),
            ("paid", 30_000, T0 + dt.timedelta(days=40)),
        ],
        notes=2,
        conversations=2,
        events=3,
        tags=[(b, "manual"), (c, "manual")],
    )
    execute(
        "UPDATE customer SET registered_at = :r, last_active_at = :t, custom_attributes = :attrs WHERE id = :id",
        r="2025-06-01 00:00:00.000000",
        t="2026-03-01 00:00:00.000000",
        attrs=json.dumps({"会员卡号": "M1", "偏好渠道": "app"}),
        id=other,
    )
    execute(
        "UPDATE customer SET registered_at = :r, last_active_at = :t, custom_attributes = :attrs WHERE id = :id",
        r="2025-09-01 00:00:00.000000",
        t="2026-02-01 00:00:00.000000",
        attrs=json.dumps({"会员卡号": "M0"}),
        id=survivor,
    )
    return {"survivor": survivor, "other": other, "tags": (a, b, c), "admin": admin, "actors": actors}


def snapshot_children(customer_id: int) -> dict[str, list[int]]:
    return {
        "orders": [
            r[0] for r in rows("SELECT id FROM customer_order WHERE customer_id = :c ORDER BY id", c=customer_id)
        ],
        "conversations": [
            r[0] for r in rows("SELECT id FROM conversation WHERE customer_id = :c ORDER BY id", c=customer_id)
        ],
        "events": [
            r[0] for r in rows("SELECT id FROM behavior_event WHERE customer_id = :c ORDER BY id", c=customer_id)
        ],
        "notes": [r[0] for r in rows("SELECT id FROM note WHERE customer_id = :c ORDER BY id", c=customer_id)],
        "tags": [
            r[0]
            for r in rows("SELECT tag_id FROM tag_assignment WHERE customer_id = :c ORDER BY tag_id", c=customer_id)
        ],
    }


def test_the_hand_made_pair_is_found_as_a_phone_group(pair):
    [group] = all_groups(pair["admin"], "phone")
    assert group.key == "13812345678" and [m.id for m in group.members] == [pair["survivor"], pair["other"]]


# --- merge preview -----------------------------------------------------------------------------------


def test_preview_lists_every_editable_field_and_what_each_customer_has(pair):
    s, o = pair["survivor"], pair["other"]
    preview = duplicate_merging.merge_preview(pair["admin"], [s, o], lang="en")
    assert preview.suggested_survivor_id == o and preview.sensitive_visible  # registered first
    assert [f.field for f in preview.fields] == list(EDITABLE_FIELDS)
    fields = {f.field: f for f in preview.fields}
    assert [(v.customer_id, v.value) for v in fields["name"].values] == [(s, "张伟"), (o, "张玮")]
    assert fields["name"].differs and fields["name"].default_customer_id == o  # the suggested survivor's
    assert not fields["phone"].differs  # 138 1234 5678 was stored normalised
    assert [v.value for v in fields["email"].values] == ["", "zw@example.com"]
    assert fields["email"].values[0].empty and not fields["email"].values[1].empty
    assert fields["gender"].default_customer_id == o
    # With the other as survivor, a field it lacks comes from whoever has it.
    values = {s: {f: None for f in EDITABLE_FIELDS}, o: {f: "x" for f in EDITABLE_FIELDS}}
    values[s]["name"] = "张伟"
    choices = duplicate_merging.default_choices(values, s, [s, o])
    assert choices["name"] == s and choices["email"] == o
    assert [v.value for v in fields["gender"].values] == ["Male", "Unknown"]
    by_id = {c.id: c for c in preview.customers}
    assert (by_id[s].orders, by_id[s].conversations, by_id[s].events, by_id[s].notes, by_id[s].tags) == (2, 1, 2, 1, 2)
    assert (by_id[o].orders, by_id[o].conversations, by_id[o].events, by_id[o].notes, by_id[o].tags) == (3, 2, 3, 2, 2)
    assert by_id[s].version == version_of(s)


def test_preview_masks_sensitive_values_without_view_sensitive(pair):
    restricted = restricted_actor(pair["admin"], ["customer.view", "customer.merge"])
    preview = duplicate_merging.merge_preview(restricted, [pair["survivor"], pair["other"]])
    fields = {f.field: f for f in preview.fields}
    assert not preview.sensitive_visible
    assert [v.value for v in fields["phone"].values] == [mask_phone("13812345678")] * 2
    assert fields["email"].values[1].value == mask_email("zw@example.com")
    assert fields["address"].values[1].value.endswith(MASK) and "海淀" not in fields["address"].values[1].value
    assert fields["company"].values[1].value == "美洽"  # not sensitive
    assert all(c.total_spent == MASK for c in preview.customers)


@pytest.mark.parametrize("ids", [[1], [1, 1], [1, 2, 3, 4, 5, 6], ["x", 2]])
def test_preview_needs_two_to_five_distinct_customers(pair, ids):
    with pytest.raises(ValidationError) as caught:
        duplicate_merging.merge_preview(pair["admin"], ids)
    assert caught.value.field_errors["ids"][0] == "dup.count_range"


def test_preview_of_a_missing_or_trashed_customer_is_not_found(pair):
    with pytest.raises(NotFound):
        duplicate_merging.merge_preview(pair["admin"], [pair["survivor"], 999])
    execute("UPDATE customer SET status = 'trashed' WHERE id = :id", id=pair["other"])
    with pytest.raises(NotFound):
        duplicate_merging.merge_preview(pair["admin"], [pair["survivor"], pair["other"]])


# --- merging -----------------------------------------------------------------------------------------


def merge(pair, actor=None, **overrides):
    s, o = pair["survivor"], pair["other"]
    args = {
        "survivor_id": s,
        "other_ids": [o],
        "field_choices": {"name": s, "company": o},
        "expected_versions": versions(s, o),
    }
    args.update(overrides)
    return duplicate_merging.merge_customers(actor or pair["admin"], **args)


def test_merge_moves_every_order_conversation_event_note_and_message_to_the_survivor(pair):
    s, o = pair["survivor"], pair["other"]
    before_s, before_o = snapshot_children(s), snapshot_children(o)
    messages_before = rows("SELECT id, conversation_id FROM message ORDER BY id")
    result = merge(pair)
    after = snapshot_children(s)
    for name in ("orders", "conversations", "events", "notes"):
        assert after[name] == sorted(before_s[name] + before_o[name]), name
        assert result.moved[name] == len(before_o[name])
    assert snapshot_children(o) == {"orders": [], "conversations": [], "events": [], "notes": [], "tags": []}
    assert (
        rows("SELECT id, conversation_id FROM message ORDER BY id") == messages_before
    )  # stay with their conversations
    assert (
        scalar(
            "SELECT count(*) FROM message m JOIN conversation c ON c.id = m.conversation_id WHERE c.customer_id = :s",
            s=s,
        )
        == 6
    )
    assert result.survivor_id == s and result.merged_ids == [o] and result.survivor_version == 2


def test_merge_unites_the_tags_and_a_manual_assignment_wins(pair):
    s, o = pair["survivor"], pair["other"]
    a, b, c = pair["tags"]
    result = merge(pair)
    assert dict(
        (r[0], r[1]) for r in rows("SELECT tag_id, source FROM tag_assignment WHERE customer_id = :s", s=s)
    ) == {
        a: "manual",
        b: "manual",
        c: "manual",
    }  # b: the survivor's rule assignment gives way to the other's manual one
    assert result.moved["tags_added"] == 1 and result.moved["tag_assignments_removed"] == 2
    assert rows("SELECT * FROM tag_assignment WHERE customer_id = :o", o=o) == []


def test_merge_recomputes_the_purchase_figures_from_paid_orders(pair):
    s = pair["survivor"]
    merge(pair)
    row = rows(
        "SELECT order_count, total_spent_cents, first_purchase_at, last_purchase_at, last_active_at, "
        "registered_at FROM customer WHERE id = :s",
        s=s,
    )[0]
    assert row.order_count == 3  # paid orders only, as the seed counts them
    assert row.total_spent_cents == 10_000 + 20_000 + 30_000
    assert str(row.first_purchase_at).startswith("2025-12-11")  # the other's oldest paid order
    assert str(row.last_purchase_at).startswith("2026-02-19")
    assert str(row.last_active_at).startswith("2026-03-01")  # the later of the two
    assert str(row.registered_at).startswith("2025-06-01")  # the earlier of the two
    expected = scalar("SELECT order_count FROM customer WHERE id = :s", s=s)
    assert expected == scalar("SELECT count(*) FROM customer_order WHERE customer_id = :s AND status = 'paid'", s=s)


def test_merge_takes_the_chosen_field_values_and_refreshes_the_search_text(pair):
    s, o = pair["survivor"], pair["other"]
    merge(pair, field_choices={"name": o, "company": o})
    row = rows(
        "SELECT name, name_pinyin, email, company, address, gender, custom_attributes, version "
        "FROM customer WHERE id = :s",
        s=s,
    )[0]
    assert row.name == "张玮" and row.name_pinyin == "zhangwei"
    assert row.company == "美洽"
    assert row.email == "zw@example.com" and row.address == "北京市海淀区一号"  # the survivor had none: filled in
    assert row.gender == "M"  # not chosen: the survivor's
    assert json.loads(row.custom_attributes) == {"会员卡号": "M0", "偏好渠道": "app"}  # the survivor's value wins
    assert row.version == 2
    assert scalar("SELECT text FROM customer_search WHERE customer_id = :s", s=s) == build_search_text(
        "张玮", "13812345678", "zw@example.com"
    )
    found = customer_list.list_customers(pair["admin"], ListQuery.from_dict({"q": "zw@example"}))
    assert [r.id for r in found.rows] == [s]  # the search index follows (the other is trashed)


def test_merged_customers_go_to_the_trash_with_their_values_kept(pair):
    o = pair["other"]
    before = rows("SELECT name, phone, email, address, company, version FROM customer WHERE id = :o", o=o)[0]
    merge(pair)
    after = rows(
        "SELECT name, phone, email, address, company, status, trashed_at, version, order_count "
        "FROM customer WHERE id = :o",
        o=o,
    )[0]
    assert after.status == "trashed" and after.trashed_at is not None
    assert tuple(after[:5]) == tuple(before[:5])  # recoverable: nothing blanked
    assert after.version == before.version + 1 and after.order_count == 0
    assert scalar("SELECT count(*) FROM customer_search WHERE customer_id = :o", o=o) == 1
    assert all_groups(pair["admin"], "phone") == []  # the pair is no longer a duplicate


def test_merge_writes_one_audit_entry_with_everything_needed_to_undo_it(pair):
    s, o = pair["survivor"], pair["other"]
    moved_orders = snapshot_children(o)["orders"]
    result = merge(pair)
    [entry] = audit_entries("customer.merge")
    assert entry.id == result.audit_id and entry.result == "ok"
    assert (entry.target_type, entry.target_id, entry.actor_name) == ("customer", str(s), "admin")
    details = json.loads(entry.details)
    assert details["survivor_id"] == s and details["merged_ids"] == [o]
    assert details["moved"] == {
        "orders": 3,
        "conversations": 2,
        "events": 3,
        "notes": 2,
        "tags_added": 1,
        "tag_assignments_removed": 2,
    }
    assert details["field_choices"]["name"] == s and details["field_choices"]["company"] == o
    assert details["field_choices"]["email"] == o  # filled in from the other
    merged = details["merged"][str(o)]
    assert merged["fields"]["name"] == "张玮" and merged["fields"]["company"] == "美洽"
    assert merged["fields"]["phone"] == mask_phone("13812345678")  # sensitive values masked in the log
    assert merged["fields"]["email"] == mask_email("zw@example.com") and "海淀" not in merged["fields"]["address"]
    assert merged["moved_ids"]["orders"] == moved_orders
    assert merged["tag_ids"] == sorted(pair["tags"][1:])
    assert details["survivor_changes"]["email"] == [None, mask_email("zw@example.com")]
    recomputed = details["survivor_recomputed"]
    assert recomputed["order_count"] == [0, 3]  # hand-made: no figures until now
    assert recomputed["total_spent_cents"] == [MASK, MASK]  # amounts are sensitive
    assert recomputed["registered_at"][0].startswith("2025-09-01") and recomputed["registered_at"][1].startswith(
        "2025-06-01"
    )
    assert details["versions"] == {str(s): [1, 2], str(o): [1, 2]}
    assert "13812345678" not in entry.details and "zw@example.com" not in entry.details
    with read_session() as session:
        assert audit.verify_chain(session).ok


def test_merge_of_three_customers(pair):
    s, o = pair["survivor"], pair["other"]
    third = create_customer(pair["admin"], {"name": "张伟", "city": "北京", "email": "ZW@example.com"})
    give_history(
        third,
        orders=[("paid", 1_000, T0)],
        notes=0,
        conversations=0,
        events=0,
        tags=[(pair["tags"][2], "rule")],
        tag="c",
    )
    result = duplicate_merging.merge_customers(pair["admin"], s, [o, third], {}, versions(s, o, third))
    assert result.merged_ids == [o, third]
    assert scalar("SELECT order_count FROM customer WHERE id = :s", s=s) == 4
    assert scalar("SELECT count(*) FROM customer WHERE id IN (:o, :t) AND status = 'trashed'", o=o, t=third) == 2
    assert (
        scalar("SELECT source FROM tag_assignment WHERE customer_id = :s AND tag_id = :t", s=s, t=pair["tags"][2])
        == "manual"
    )


def test_a_stale_version_raises_conflict_and_changes_nothing(pair):
    s, o = pair["survivor"], pair["other"]
    stale = versions(s, o)
    execute(
        "UPDATE customer SET version = version + 1, updated_by_name = '李经理', "
        "updated_at = '2026-02-01 08:00:00.000000' WHERE id = :o",
        o=o,
    )
    children = {i: snapshot_children(i) for i in (s, o)}
    customers_before = rows("SELECT * FROM customer ORDER BY id")
    audit_count = scalar("SELECT count(*) FROM audit_entry")
    with pytest.raises(Conflict) as caught:
        merge(pair, expected_versions=stale)
    assert caught.value.params["by"] == "李经理" and caught.value.params["at"]
    assert caught.value.params["customer_id"] == o
    assert {i: snapshot_children(i) for i in (s, o)} == children
    assert rows("SELECT * FROM customer ORDER BY id") == customers_before
    assert scalar("SELECT count(*) FROM audit_entry") == audit_count


def test_merging_an_already_merged_customer_is_a_conflict(pair):
    s, o = pair["survivor"], pair["other"]
    stale = versions(s, o)
    merge(pair)
    with pytest.raises(Conflict):
        merge(pair, expected_versions=stale)


def test_agent_may_not_merge_and_the_refusal_is_audited(pair):
    s, o = pair["survivor"], pair["other"]
    agent = pair["actors"]["agent"]
    with pytest.raises(PermissionDenied):
        merge(pair, actor=agent)
    with pytest.raises(PermissionDenied):
        duplicate_merging.merge_preview(agent, [s, o])
    [refusal] = audit_entries("customer.merge")
    assert refusal.result == "refused" and refusal.actor_name == "agent" and refusal.target_id == str(s)
    assert json.loads(refusal.details) == {"missing_permission": "customer.merge"}
    assert snapshot_children(o)["orders"] and scalar("SELECT status FROM customer WHERE id = :o", o=o) == "active"


def test_an_actor_without_view_sensitive_can_merge_and_the_values_move_unmasked(pair):
    s, o = pair["survivor"], pair["other"]
    restricted = restricted_actor(pair["admin"], ["customer.view", "customer.merge"])
    duplicate_merging.merge_customers(restricted, s, [o], {"email": o}, versions(s, o))
    assert scalar("SELECT email FROM customer WHERE id = :s", s=s) == "zw@example.com"
    assert scalar("SELECT updated_by_name FROM customer WHERE id = :s", s=s) == "Merger One"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"other_ids": []}, "ids"),
        ({"other_ids": "7"}, "ids"),
        ({"field_choices": {"password": 1}}, "field_choices"),
        ({"field_choices": {"name": 999}}, "name"),
        ({"expected_versions": {}}, "expected_versions"),
    ],
)
def test_bad_merge_requests_are_refused_before_anything_changes(pair, change, field):
    children = snapshot_children(pair["other"])
    with pytest.raises(ValidationError) as caught:
        merge(pair, **change)
    assert field in caught.value.field_errors
    assert snapshot_children(pair["other"]) == children


def test_survivor_listed_among_the_others_is_refused(pair):
    s = pair["survivor"]
    with pytest.raises(ValidationError):
        merge(pair, other_ids=[s], expected_versions=versions(s))


def test_versions_sent_by_the_browser_as_strings_are_accepted(pair):
    s, o = pair["survivor"], pair["other"]
    result = merge(pair, expected_versions={str(s): "1", str(o): "1"}, field_choices={"company": str(o)})
    assert result.survivor_version == 2


def test_a_customer_waiting_for_erasure_cannot_be_merged(pair):
    o = pair["other"]
    with write_session() as session:
        session.add(ErasureRequest(customer_id=o, requested_by_name="admin"))
    with pytest.raises(ValidationError) as caught:
        merge(pair)
    assert caught.value.field_errors["ids"][0] == "dup.erasure_blocks"
    assert scalar("SELECT status FROM customer WHERE id = :o", o=o) == "active"


def test_merge_tells_both_customers_changed_once(pair):
    with published() as seen:
        merge(pair)
    merges = [change for change in seen if customer_changes.MERGED in change.kinds]
    assert merges == [told({pair["survivor"], pair["other"]}, customer_changes.MERGED)]
