"""Defects of the customer pages a user found: duplicate warning on create (5),
the merge dialog (11), read-only archived / trashed customers (11), the
"last changed by" line (14), the list count after a bulk archive (15),
recording consent (19), the tag input and the first sort click (24)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from meiqia_app.db import get_engine
from meiqia_app.services.customers import consent, notes, timeline
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.importing.columns import suggest_mapping
from meiqia_app.services.customers.importing.job import dry_run
from meiqia_app.services.customers.validation import normalize_phone
from meiqia_app.services.errors import DuplicateCustomer, NotFound, PermissionDenied, ReadOnly, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags import assignments as customer_tags
from meiqia_app.state.customer_activity import CustomerActivityState
from meiqia_app.state.customer_create import CustomerCreateState
from meiqia_app.state.customer_list import CustomerListState
from tests.unit.tabs import live_token, new_tab, pickled, run, serve, substate
from tests.unit.test_customer_import import write_csv


def rows(sql: str, **params) -> list:
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).all()


def scalar(sql: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def execute(sql: str, **params) -> None:
    with get_engine().begin() as conn:
        conn.execute(text(sql), params)


def audits(action: str, result: str = "ok") -> list:
    return rows(
        "SELECT actor_name, target_id, details, occurred_at FROM audit_entry WHERE action = :a AND result = :r "
        "ORDER BY id",
        a=action,
        r=result,
    )


def _cookie(token: str) -> str:
    return f"mq_session={token}"


def live_customer_with_valid_phone() -> tuple[int, str, str]:
    """(id, phone, name) of an active customer whose stored phone is a valid number."""
    for customer_id, phone, name in rows(
        "SELECT id, phone, name FROM customer WHERE phone IS NOT NULL AND status = 'active' ORDER BY id"
    ):
        try:
            if normalize_phone(phone) == phone:
                return customer_id, phone, name
        except ValueError:
            continue
    raise AssertionError("the seed has no valid phone")


def active_customer(where: str = "1 = 1") -> int:
    return scalar(
        f"SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL AND {where} ORDER BY id LIMIT 1"
    )


# --- 5. duplicates when creating a customer ------------------------------------------------------


@pytest.mark.parametrize("field", ["phone", "email", "external_id"])
def test_a_new_customer_repeating_an_existing_one_is_not_saved_and_the_existing_one_is_named(
    seeded_db, seeded_actors, field
):
    if field == "phone":
        existing_id, value, name = live_customer_with_valid_phone()
    else:
        existing_id, value, name = rows(
            f"SELECT id, {field}, name FROM customer WHERE {field} IS NOT NULL AND status = 'active' ORDER BY id"
        )[0]
    before = scalar("SELECT count(*) FROM customer")
    with pytest.raises(DuplicateCustomer) as caught:
        customer_edit.create_customer(seeded_actors["manager"], {"name": "新来的", field: value})
    assert [(m.field, m.customer_id, m.name) for m in caught.value.matches] == [(field, existing_id, name)]
    assert scalar("SELECT count(*) FROM customer") == before  # nothing saved


def test_an_e_mail_in_other_letter_case_is_the_same_address(seeded_db, seeded_actors):
    existing_id, email = rows("SELECT id, email FROM customer WHERE email IS NOT NULL AND status = 'active'")[0]
    local, domain = email.split("@")
    with pytest.raises(DuplicateCustomer) as caught:
        customer_edit.create_customer(
            seeded_actors["manager"], {"name": "新来的", "email": f"{local.upper()}@{domain}"}
        )
    assert [m.customer_id for m in caught.value.matches] == [existing_id]


def test_save_anyway_creates_the_customer_and_the_audit_entry_names_the_repeated_one(seeded_db, seeded_actors):
    existing_id, phone, _name = live_customer_with_valid_phone()
    new_id = customer_edit.create_customer(
        seeded_actors["agent"], {"name": "同号新客户", "phone": phone}, acknowledged=[existing_id]
    )
    assert rows("SELECT name, phone FROM customer WHERE id = :i", i=new_id) == [("同号新客户", phone)]
    [entry] = [a for a in audits("customer.create") if a.target_id == str(new_id)]
    assert json.loads(entry.details)["saved_despite_duplicates"] == [existing_id]


def test_acknowledging_one_customer_does_not_cover_another(seeded_db, seeded_actors):
    first_id, phone, _name = live_customer_with_valid_phone()
    second_id, email = rows(
        "SELECT id, email FROM customer WHERE email IS NOT NULL AND status = 'active' AND id != :i ORDER BY id",
        i=first_id,
    )[0]
    with pytest.raises(DuplicateCustomer) as caught:
        customer_edit.create_customer(
            seeded_actors["manager"], {"name": "两人之合", "phone": phone, "email": email}, acknowledged=[first_id]
        )
    assert {m.customer_id for m in caught.value.matches} == {first_id, second_id}


def test_a_customer_in_the_trash_does_not_count_as_a_duplicate(seeded_db, seeded_actors):
    existing_id, phone, _name = live_customer_with_valid_phone()
    execute("UPDATE customer SET status = 'trashed' WHERE id = :i", i=existing_id)
    new_id = customer_edit.create_customer(seeded_actors["manager"], {"name": "接手号码", "phone": phone})
    assert scalar("SELECT phone FROM customer WHERE id = :i", i=new_id) == phone


def test_the_import_follows_the_same_rule_external_ids_included(seeded_db, seeded_actors):
    existing_id, external_id = rows(
        "SELECT id, external_id FROM customer WHERE external_id IS NOT NULL AND status = 'active' ORDER BY id"
    )[0]
    path = write_csv(
        "external.csv",
        [["姓名", "外部ID"], ["外部甲", external_id], ["外部乙", "NEW-EXT-1"], ["外部丙", "NEW-EXT-1"]],
    )
    report = dry_run(seeded_actors["manager"], path, suggest_mapping(["姓名", "外部ID"]))
    assert (report.valid, report.duplicates_existing, report.duplicates_in_file) == (1, 1, 1)
    assert [(p.row, p.field, p.message_key, p.params) for p in report.problems] == [
        (2, "external_id", "import.duplicate_existing", {"id": str(existing_id)}),
        (4, "external_id", "import.duplicate_in_file", {"row": "3"}),
    ]


def test_duplicate_checks_of_a_role_that_sees_phones_masked_count_as_exact_look_ups(
    seeded_db, seeded_actors, monkeypatch
):
    """ "This number is 张伟's" answers a guess at a masked number: limited like the search's look-ups."""
    monkeypatch.setattr(customer_list, "EXACT_LOOKUPS_PER_HOUR", 2)
    agent = seeded_actors["agent"]
    for n in (1, 2):
        customer_edit.create_customer(agent, {"name": f"试{n}", "phone": f"1991234000{n}"})
    with pytest.raises(PermissionDenied):
        customer_edit.create_customer(agent, {"name": "试3", "phone": "19912340003"})
    assert [json.loads(a.details) for a in audits("customer.create_duplicate_check", "refused")] == [
        {"reason": "error.exact_lookup_limit", "limit": 2}
    ]


def test_the_dialog_warns_then_saves_anyway_and_keeps_no_name(seeded_db, monkeypatch):
    existing_id, phone, name = live_customer_with_valid_phone()
    token = live_token(seeded_db, "agent")
    tab = new_tab()
    form = {"name": "对话框客户", "phone": phone, "source": "web"}
    warned = run(serve(tab, CustomerCreateState, "create", _cookie(token), payload={"form": form}))
    [hint] = warned.value(CustomerCreateState, "duplicates")
    assert hint["customer_id"] == existing_id and name in hint["text"] and hint["href"] == f"/customers/{existing_id}"
    assert warned.value(CustomerCreateState, "duplicate_warning") is True
    assert name.encode() not in pickled(tab)  # shown, not kept
    assert scalar("SELECT count(*) FROM customer WHERE name = '对话框客户'") == 0
    saved = run(
        serve(tab, CustomerCreateState, "create", _cookie(token), payload={"form": {**form, "save_anyway": "1"}})
    )
    new_id = scalar("SELECT id FROM customer WHERE name = '对话框客户'")
    assert any(f"/customers/{new_id}" in json.dumps(e.payload) for e in saved.events)


def test_the_dialog_names_nobody_for_a_customer_out_of_the_agents_scope(seeded_db):
    """The repeated phone belongs to a customer of the manager's (outside the demo agent's
    team + pool): the warning says only that a customer the agent cannot see has it, with
    no name, id or link; "save anyway" still saves."""
    existing_id, phone, name = live_customer_with_valid_phone()
    execute(
        "UPDATE customer SET owner_id = (SELECT id FROM app_user WHERE username = 'manager') WHERE id = :i",
        i=existing_id,
    )
    token = live_token(seeded_db, "agent")
    tab = new_tab()
    form = {"name": "看不见的重复", "phone": phone, "source": "web"}
    warned = run(serve(tab, CustomerCreateState, "create", _cookie(token), payload={"form": form}))
    [hint] = warned.value(CustomerCreateState, "duplicates")
    assert hint == {"customer_id": 0, "name": "", "text": "一位你无权查看的客户已使用此电话", "href": ""}
    sent = json.dumps([e.payload for e in warned.events], ensure_ascii=False)
    assert name not in sent and f"/customers/{existing_id}" not in sent
    assert warned.value(CustomerCreateState, "duplicate_warning") is True
    run(serve(tab, CustomerCreateState, "create", _cookie(token), payload={"form": {**form, "save_anyway": "1"}}))
    assert scalar("SELECT count(*) FROM customer WHERE name = '看不见的重复' AND phone = :p", p=phone) == 1


# --- 11. the merge dialog ---------------------------------------------------------------------------


def _merge_pair() -> list[int]:
    """Two active customers of a phone group, one of them with an unpaid order."""
    for (phone,) in rows(
        "SELECT phone FROM customer WHERE status = 'active' AND phone IS NOT NULL GROUP BY phone HAVING count(*) > 1"
    ):
        ids = [
            r[0] for r in rows("SELECT id FROM customer WHERE phone = :p AND status = 'active' ORDER BY id", p=phone)
        ]
        return ids[:2]
    raise AssertionError("the seed has no duplicate phones")


@pytest.mark.parametrize(("lang", "gender", "phone"), [("zh", "性别", "电话"), ("en", "Gender", "Phone")])
def test_merge_fields_carry_their_translated_names(seeded_db, seeded_actors, lang, gender, phone):
    preview = duplicate_merging.merge_preview(seeded_actors["manager"], _merge_pair(), lang=lang)
    labels = {f.field: f.label for f in preview.fields}
    assert (labels["gender"], labels["phone"]) == (gender, phone)
    assert not any(label.startswith("customer.") for label in labels.values())


def test_the_merge_dialog_shows_the_profiles_order_count_and_every_order_apart(seeded_db, seeded_actors):
    ids = _merge_pair()
    customer_id = ids[0]
    execute(
        "INSERT INTO customer_order (order_no, customer_id, product_name, quantity, amount_cents, status, created_at) "
        "VALUES ('UNPAID-1', :c, '耳机', 1, 100, 'pending', '2026-01-01 00:00:00.000000')",
        c=customer_id,
    )
    preview = duplicate_merging.merge_preview(seeded_actors["manager"], ids)
    for candidate in preview.customers:
        profile = customers.get_customer(seeded_actors["manager"], candidate.id)
        assert candidate.paid_orders == profile.order_count
        assert candidate.orders == scalar("SELECT count(*) FROM customer_order WHERE customer_id = :c", c=candidate.id)
    shown = next(c for c in preview.customers if c.id == customer_id)
    assert shown.orders == shown.paid_orders + scalar(
        "SELECT count(*) FROM customer_order WHERE customer_id = :c AND status != 'paid'", c=customer_id
    )


def _rule_tag(name: str) -> int:
    return scalar("SELECT id FROM tag WHERE name = :n", n=name)


def _customer_with_rule_tag(name: str, exclude: int = 0) -> int:
    return scalar(
        "SELECT a.customer_id FROM tag_assignment a JOIN customer c ON c.id = a.customer_id "
        "WHERE a.tag_id = :t AND a.source = 'rule' AND c.status = 'active' AND c.id != :x "
        "AND NOT EXISTS (SELECT 1 FROM erasure_request e WHERE e.customer_id = c.id AND e.status = 'pending') "
        "ORDER BY c.id LIMIT 1",
        t=_rule_tag(name),
        x=exclude,
    )


def test_merge_recomputes_rule_tags_on_the_survivor_instead_of_copying_them(seeded_db, seeded_actors):
    regular, silver, gold = _rule_tag("普通会员"), _rule_tag("银卡会员"), _rule_tag("金卡会员")
    survivor = _customer_with_rule_tag("普通会员")
    other = _customer_with_rule_tag("银卡会员", exclude=survivor)
    manual = scalar("SELECT id FROM tag WHERE name = 'VIP客户'")
    execute("DELETE FROM tag_assignment WHERE customer_id = :o AND tag_id = :t", o=other, t=manual)
    execute(
        "INSERT INTO tag_assignment (customer_id, tag_id, source, assigned_at) "
        "VALUES (:o, :t, 'manual', '2026-01-01 00:00:00.000000')",
        o=other,
        t=manual,
    )
    versions = {i: scalar("SELECT version FROM customer WHERE id = :i", i=i) for i in (survivor, other)}
    duplicate_merging.merge_customers(seeded_actors["manager"], survivor, [other], {}, versions)

    tags = dict(rows("SELECT tag_id, source FROM tag_assignment WHERE customer_id = :s", s=survivor))
    spent = scalar("SELECT total_spent_cents FROM customer WHERE id = :s", s=survivor) / 100
    expected = regular if spent < 3000 else silver if spent < 10000 else gold
    assert {t for t in (regular, silver, gold) if t in tags} == {expected}  # one tier tag, from the merged data
    assert tags[expected] == "rule"
    assert tags[manual] == "manual"  # what a person gave the other customer is kept


# --- 11. archived and trashed customers are read-only ----------------------------------------------


@pytest.mark.parametrize("status", ["archived", "trashed"])
def test_services_refuse_changes_to_an_archived_or_trashed_customer(seeded_db, seeded_actors, status):
    admin, agent = seeded_actors["admin"], seeded_actors["agent"]
    customer_id = active_customer()
    note_id = notes.add_note(agent, customer_id, "归档前写的备注")
    tag_id = scalar("SELECT id FROM tag WHERE name = 'VIP客户'")
    version = scalar("SELECT version FROM customer WHERE id = :i", i=customer_id)
    execute("UPDATE customer SET status = :s WHERE id = :i", s=status, i=customer_id)
    before = rows("SELECT * FROM customer WHERE id = :i", i=customer_id)
    # admin may see the trash (customer.delete): told it is read-only; the agent may not: not found.
    refusal = {"archived": (ReadOnly, ReadOnly), "trashed": (ReadOnly, NotFound)}[status]
    for actor, error in zip((admin, agent), refusal, strict=True):
        with pytest.raises(error):
            customer_edit.update_customer(actor, customer_id, version, {"company": "不该保存"})
        with pytest.raises(error):
            customer_tags.add_tag(actor, customer_id, tag_id)
        with pytest.raises(error):
            notes.add_note(actor, customer_id, "不该保存")
        with pytest.raises(error):
            notes.edit_note(actor, note_id, "不该保存")
        with pytest.raises(error):
            consent.set_consent(actor, customer_id, "marketing", True)
    assert rows("SELECT * FROM customer WHERE id = :i", i=customer_id) == before
    assert scalar("SELECT body FROM note WHERE id = :n", n=note_id) == "归档前写的备注"
    page = timeline.customer_timeline(admin, customer_id, {"note"})
    assert page.items and not any(item.can_edit or item.can_delete for item in page.items)
    assert customers.get_customer(admin, customer_id).read_only


# --- 14. who changed the customer last ---------------------------------------------------------------


def test_a_customer_nobody_changed_says_it_came_from_an_import_or_the_seed(seeded_db, seeded_actors):
    customer_id = active_customer("updated_by_name IS NULL")
    shown = customers.get_customer(seeded_actors["agent"], customer_id)
    assert "系统导入" in shown.updated_line and "最后由  于" not in shown.updated_line
    english = customers.get_customer(seeded_actors["agent"], customer_id, lang="en")
    assert english.updated_line.startswith("Created by import / seed")
    version = scalar("SELECT version FROM customer WHERE id = :i", i=customer_id)
    customer_edit.update_customer(seeded_actors["agent"], customer_id, version, {"company": "改过的公司"})
    assert customers.get_customer(seeded_actors["agent"], customer_id).updated_line.startswith("最后由 客服小美 于")


# --- 15. the list's count after a bulk archive -------------------------------------------------------


def test_the_list_count_follows_a_bulk_archive(seeded_db, monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    loaded = run(serve(tab, CustomerListState, "on_load", _cookie(token)))
    shown = [row["id"] for row in loaded.value(CustomerListState, "rows")]
    run(serve(tab, CustomerListState, "refresh_count", _cookie(token)))
    active = scalar("SELECT count(*) FROM customer WHERE status = 'active'")
    assert substate(tab, CustomerListState).count_value == active
    for customer_id in shown[:2]:
        payload = {"customer_id": customer_id, "checked": True}
        run(serve(tab, CustomerListState, "set_row_selected", _cookie(token), payload=payload))
    run(serve(tab, CustomerListState, "open_status_action", _cookie(token), payload={"action": "archive"}))
    run(serve(tab, CustomerListState, "confirm_status_action", _cookie(token), payload={"form": {"confirm": "2"}}))
    followed = run(serve(tab, CustomerListState, "follow_bulk_job", _cookie(token)))
    assert scalar("SELECT count(*) FROM customer WHERE status = 'active'") == active - 2
    chained = [event.name.rsplit(".", 1)[-1] for event in followed.events]
    assert "refresh_count" in chained  # the count is asked for again…
    run(serve(tab, CustomerListState, "refresh_count", _cookie(token)))
    assert substate(tab, CustomerListState).count_value == active - 2  # …and is the new one


# --- 19. consent ------------------------------------------------------------------------------------------


def test_an_agent_records_an_unsubscribe_audited_with_who_and_when_and_on_the_timeline(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    customer_id = active_customer("consent_marketing")  # a bare column: PostgreSQL has no boolean = integer
    version = scalar("SELECT version FROM customer WHERE id = :i", i=customer_id)
    assert consent.set_consent(agent, customer_id, "marketing", False) is True
    flag, at, new_version, by = rows(
        "SELECT consent_marketing, consent_marketing_at, version, updated_by_name FROM customer WHERE id = :i",
        i=customer_id,
    )[0]
    assert (bool(flag), new_version, by) == (False, version + 1, "客服小美") and at is not None
    [entry] = audits("customer.consent")
    details = json.loads(entry.details)
    assert (entry.actor_name, entry.target_id) == ("agent", str(customer_id))
    assert details["changes"] == {"consent_marketing": [True, False]} and details["by"] == "客服小美"
    assert str(entry.occurred_at)[:16] == str(at)[:16]
    # Setting the same answer again changes nothing and writes nothing.
    assert consent.set_consent(agent, customer_id, "marketing", False) is False
    assert len(audits("customer.consent")) == 1
    consent.set_consent(agent, customer_id, "marketing", True)
    items = timeline.customer_timeline(agent, customer_id, {"consent"}).items
    assert [(i.kind, i.title, i.summary) for i in items] == [
        ("consent", "客户同意营销推送", "由 客服小美 记录"),
        ("consent", "客户退订营销推送", "由 客服小美 记录"),
    ]
    everything = timeline.customer_timeline(agent, customer_id, None, limit=100).items
    assert [i.key for i in everything if i.kind == "consent"] == [i.key for i in items]


def test_consent_needs_customer_edit_and_a_known_kind(seeded_db, seeded_actors):
    customer_id = active_customer()
    with pytest.raises(PermissionDenied):
        consent.set_consent(seeded_actors["analyst"], customer_id, "marketing", False)
    assert len(audits("customer.consent", "refused")) == 1
    with pytest.raises(ValidationError):
        consent.set_consent(seeded_actors["agent"], customer_id, "newsletter", False)
    with pytest.raises(ValidationError):
        consent.set_consent(seeded_actors["agent"], customer_id, "marketing", "perhaps")


# --- 24. the tag input and sorting ------------------------------------------------------------------------


def _untagged_customer(tag_name: str) -> int:
    return active_customer(
        "NOT EXISTS (SELECT 1 FROM tag_assignment a JOIN tag t ON t.id = a.tag_id "
        f"WHERE a.customer_id = customer.id AND t.name = '{tag_name}')"
    )


def test_typing_part_of_the_only_matching_tag_takes_that_tag(seeded_db, seeded_actors):
    customer_id = _untagged_customer("VIP客户")
    vip = scalar("SELECT id FROM tag WHERE name = 'VIP客户'")
    token = live_token(seeded_db, "agent")
    tab = new_tab()
    path, query = f"/customers/{customer_id}", {"customer_id": str(customer_id)}
    run(serve(tab, CustomerActivityState, "add_tag_by_name", _cookie(token), path, {"form": {"tag": "VIP"}}, query))
    assert rows("SELECT source FROM tag_assignment WHERE customer_id = :c AND tag_id = :t", c=customer_id, t=vip) == [
        ("manual",)
    ]
    assert scalar("SELECT count(*) FROM tag WHERE name = 'VIP'") == 0


def test_enter_takes_the_highlighted_suggestion_but_only_one_for_the_typed_text(seeded_db, seeded_actors):
    agent = seeded_actors["agent"]
    customer_id = _untagged_customer("VIP客户")
    vip = scalar("SELECT id FROM tag WHERE name = 'VIP客户'")
    other = scalar("SELECT id FROM tag WHERE name = '新客户'")
    assert len(customer_tags.suggest_tags(agent, "客户", 8, customer_id)) > 1
    assert customer_tags.pick_typed_tag(agent, customer_id, "客户", str(vip)) == vip
    assert customer_tags.pick_typed_tag(agent, customer_id, "vip客户", "") == vip  # the name itself
    # A highlight that is not a suggestion for the text is ignored; several suggestions: the text stays.
    assert customer_tags.pick_typed_tag(agent, customer_id, "VIP", str(other)) == vip
    assert customer_tags.pick_typed_tag(agent, customer_id, "客户", "") == "客户"
    with pytest.raises(ValidationError):
        customer_tags.add_tag(agent, customer_id, "客户")  # the agent may not create tags


def test_the_first_click_on_a_column_sorts_ascending_and_the_second_descending(seeded_db):
    token = live_token(seeded_db, "agent")
    tab = new_tab()
    run(serve(tab, CustomerListState, "on_load", _cookie(token)))
    first = run(serve(tab, CustomerListState, "sort_by", _cookie(token), payload={"column": "name"}))
    assert substate(tab, CustomerListState).direction == "asc"
    ids = [row["id"] for row in first.value(CustomerListState, "rows")]
    assert ids == [
        r[0]
        for r in rows("SELECT id FROM customer WHERE status = 'active' ORDER BY name_pinyin, id LIMIT :n", n=len(ids))
    ]
    run(serve(tab, CustomerListState, "sort_by", _cookie(token), payload={"column": "name"}))
    assert substate(tab, CustomerListState).direction == "desc"


def test_a_role_whose_policy_wants_approval_cannot_export_one_customer_around_the_wizard(seeded_db, seeded_actors):
    """The detail page's portability export is an export of one row: a policy that wants
    approval for that sends the person to the wizard (refused and audited here)."""
    import dataclasses

    from sqlmodel import select

    from meiqia_app.db import read_session
    from meiqia_app.models import AuditEntry
    from meiqia_app.services.errors import PermissionDenied
    from meiqia_app.services.exports import portability
    from meiqia_app.services.identity.rbac import ExportPolicy

    analyst = seeded_actors["analyst"]
    strict = dataclasses.replace(analyst, export_policy=ExportPolicy(approval_required=True, approval_over_rows=0))
    customer_id = active_customer()
    with pytest.raises(PermissionDenied) as refused:
        portability.export_customer(strict, customer_id)
    assert refused.value.message_key == "export.error.portability_needs_approval"
    with read_session() as session:
        entry = session.exec(
            select(AuditEntry).where(AuditEntry.action == "export.portability").order_by(AuditEntry.id.desc())
        ).first()
    assert entry.result == "refused" and "approval_required" in entry.details
    # Below the policy's approval threshold (the analyst's default: above 10,000 rows) one customer is fine.
    assert portability.export_customer(analyst, customer_id).row_count >= 1
