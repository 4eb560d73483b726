"""Customers' custom field values (services/custom_field_values.py and the edit path): storage round
trips per type, masking of sensitive fields, required fields and defaults, the audit diff, filter
conditions and sorts in SQL, erasure. Dialect-neutral (``make test-pg`` runs it on PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import and_, select, update

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.custom_fields import values
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.access import CustomerAccess, mask_value
from meiqia_app.services.customers.masking import MASK
from meiqia_app.services.customers.query import status_condition
from meiqia_app.services.errors import Conflict, PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.privacy import erasure
from tests.conftest import built_once

C = Customer.__table__.c

# (key, type, options, value typed into the form, stored, shown in Chinese)
TYPES = [
    ("f_text", "text", "", " 黄金  会员 ", "黄金 会员", "黄金 会员"),
    ("f_long", "long_text", "", "第一行\n第二行", "第一行\n第二行", "第一行\n第二行"),
    ("f_number", "number", "", "1,234.5", 1234.5, "1,234.5"),
    ("f_money", "money", "", "99.9", 9990, "¥99.90"),
    ("f_percent", "percent", "", "12.5%", 12.5, "12.5%"),
    ("f_date", "date", "", "2026-3-5", "2026-03-05", "2026-03-05"),
    ("f_datetime", "datetime", "", "2026-03-05T16:30", "2026-03-05T08:30:00Z", "2026-03-05 16:30"),
    ("f_single", "single_select", "官网\n门店\n推荐", "门店", "o2", "门店"),
    ("f_multi", "multi_select", "微信\n电话\n邮件", ["o3", "o1"], ["o1", "o3"], "微信、邮件"),
    ("f_yes", "yes_no", "", "true", True, "是"),
    ("f_link", "link", "", "meiqia.com/x", "https://meiqia.com/x", "https://meiqia.com/x"),
    ("f_phone", "phone", "", "138 1234 5678", "13812345678", "13812345678"),
    ("f_email", "email", "", "A@Example.com", "A@example.com", "A@example.com"),
]


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _define(admin, key: str, field_type: str, options: str = "", **extra) -> int:
    data = {"key": key, "label_zh": f"字段{key}", "label_en": f"Field {key}", "field_type": field_type, **extra}
    if options:
        data["options"] = options
    return custom_fields.create_field(admin, data).field_id


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _version(customer_id: int) -> int:
    with read_session() as session:
        return session.get(Customer, customer_id).version


def _save(actor, customer_id: int, custom: dict, **builtin) -> int:
    return customer_edit.update_customer(
        actor, customer_id, _version(customer_id), {**builtin, "custom_fields": custom}
    )


def _document(customer_id: int) -> dict:
    with get_engine().connect() as conn:
        return conn.execute(select(C.custom_fields).where(C.id == customer_id)).scalar_one()


def _ids(actor, *conditions) -> set[int]:
    access = CustomerAccess(actor)
    with get_engine().connect() as conn:
        return set(conn.execute(select(C.id).where(*access.status_conditions("active"), *conditions)).scalars())


def _view(detail, key: str):
    return next(v for v in detail.custom_fields if v.key == key)


# --- round trip per type ---------------------------------------------------------------------------


def test_every_type_round_trips_through_the_edit_form_the_database_and_the_detail_page(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    for key, field_type, options, *_rest in TYPES:
        _define(admin, key, field_type, options, group_zh="会员信息" if field_type != "long_text" else "")
    customer_id = _active_ids(1)[0]
    _save(admin, customer_id, {key: typed for key, _t, _o, typed, _s, _shown in TYPES})
    assert _document(customer_id) == {key: stored for key, _t, _o, _typed, stored, _shown in TYPES}
    detail = customers.get_customer(admin, customer_id, "zh")
    for key, _t, _o, _typed, _stored, shown in TYPES:
        assert _view(detail, key).display == shown, key
    # The form holds what saves back unchanged: saving it again changes nothing.
    form = {v.key: (v.chosen if v.field_type == "multi_select" else v.value) for v in detail.custom_fields}
    version = _version(customer_id)
    assert _save(admin, customer_id, form) == version
    assert [g.name for g in detail.custom_groups] == ["会员信息", "其他信息"]
    english = customers.get_customer(admin, customer_id, "en")
    assert _view(english, "f_single").display == "门店" and _view(english, "f_yes").display == "Yes"
    assert _view(english, "f_single").label == "Field f_single"


def test_an_empty_value_removes_the_key_and_other_keys_stay(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "f_text", "text")
    _define(admin, "f_number", "number")
    customer_id = _active_ids(1)[0]
    _save(admin, customer_id, {"f_text": "a", "f_number": "3"})
    _save(admin, customer_id, {"f_text": ""})
    assert _document(customer_id) == {"f_number": 3}


def test_bad_values_are_refused_per_field_and_nothing_is_saved(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "f_number", "number")
    _define(admin, "f_email", "email")
    customer_id = _active_ids(1)[0]
    version = _version(customer_id)
    with pytest.raises(ValidationError) as caught:
        _save(admin, customer_id, {"f_number": "abc", "f_email": "nope", "no_such": "x"}, company="改了")
    assert {f: k for f, (k, _p) in caught.value.field_errors.items()} == {
        "cf.f_number": "error.cf_number",
        "cf.f_email": "error.cf_email",
        "cf.no_such": "error.cf_unknown_field",
    }
    assert _version(customer_id) == version and _document(customer_id) == {}


def test_a_stale_form_gets_a_conflict_and_writes_no_custom_value(seeded_db, seeded_actors):
    admin, agent = seeded_actors["admin"], seeded_actors["agent"]
    _define(admin, "f_text", "text")
    customer_id = _active_ids(1)[0]
    version = _version(customer_id)
    customer_edit.update_customer(admin, customer_id, version, {"custom_fields": {"f_text": "first"}})
    with pytest.raises(Conflict):
        customer_edit.update_customer(agent, customer_id, version, {"custom_fields": {"f_text": "second"}})
    assert _document(customer_id) == {"f_text": "first"}


def test_an_edit_leaves_keys_it_does_not_name_alone(seeded_db, seeded_actors):
    """The document is patched, not replaced: a value written meanwhile (a default-fill job's, a
    retired field's) survives an edit of another field made on the same version."""
    admin = seeded_actors["admin"]
    _define(admin, "f_text", "text")
    customer_id = _active_ids(1)[0]
    version = _version(customer_id)
    with get_engine().begin() as conn:  # what a fill job does between the form's read and its save
        conn.execute(update(Customer.__table__).where(C.id == customer_id).values(custom_fields={"old_key": 1}))
    customer_edit.update_customer(admin, customer_id, version, {"custom_fields": {"f_text": "x"}})
    assert _document(customer_id) == {"old_key": 1, "f_text": "x"}


# --- required and defaults -------------------------------------------------------------------------


def test_required_fields_are_checked_on_the_forms_and_not_for_callers_that_know_no_fields(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "f_required", "text", required=True)
    _define(admin, "f_default", "single_select", "甲\n乙", default="乙")
    customer_id = _active_ids(1)[0]
    with pytest.raises(ValidationError) as caught:
        _save(admin, customer_id, {"f_required": "  "})
    assert caught.value.field_errors["cf.f_required"][0] == "error.cf_required"
    with pytest.raises(ValidationError) as caught:  # the new-customer dialog sends the custom fields
        customer_edit.create_customer(admin, {"name": "王五", "custom_fields": {}})
    assert list(caught.value.field_errors) == ["cf.f_required"]
    made = customer_edit.create_customer(admin, {"name": "王五", "custom_fields": {"f_required": "有"}})
    assert _document(made) == {"f_required": "有"}  # the default is not written: it is had
    assert _view(customers.get_customer(admin, made), "f_default").display == "乙"
    # A caller that knows no custom fields (the open API today) gets the defaults.
    plain = customer_edit.create_customer(admin, {"name": "赵六"})
    assert _document(plain) == {}
    assert _view(customers.get_customer(admin, plain), "f_default").display == "乙"
    # Clearing a field with a default keeps "empty" explicitly.
    _save(admin, plain, {"f_default": ""})
    assert _document(plain) == {"f_default": None}
    assert _view(customers.get_customer(admin, plain), "f_default").display == ""
    # An edit that does not send the field leaves it alone.
    _save(admin, plain, {}, company="新公司")


# --- sensitive fields ------------------------------------------------------------------------------


def test_sensitive_fields_are_masked_and_guarded_like_the_phone(seeded_db, seeded_actors):
    admin, agent, manager = seeded_actors["admin"], seeded_actors["agent"], seeded_actors["manager"]
    _define(admin, "id_number", "text", sensitive=True)
    _define(admin, "backup_phone", "phone", sensitive=True)
    _define(admin, "member_source", "single_select", "官网\n门店")
    customer_id = _active_ids(1)[0]
    # The agent may write a sensitive value (customer.edit) ...
    _save(
        agent, customer_id, {"id_number": "110101199001011234", "backup_phone": "13912345678", "member_source": "门店"}
    )
    assert _document(customer_id)["id_number"] == "110101199001011234"
    # ... but sees it masked afterwards; the form offers it empty.
    seen = customers.get_customer(agent, customer_id)
    assert (_view(seen, "id_number").display, _view(seen, "id_number").value) == (MASK, "")
    assert _view(seen, "id_number").masked and _view(seen, "backup_phone").display == "139****5678"
    assert _view(seen, "member_source").display == "门店" and not _view(seen, "member_source").masked
    assert _view(customers.get_customer(manager, customer_id), "id_number").display == "110101199001011234"
    # Empty means "keep" for what the agent sees masked.
    _save(agent, customer_id, {"id_number": "", "backup_phone": "", "member_source": "官网"})
    assert _document(customer_id) == {
        "id_number": "110101199001011234",
        "backup_phone": "13912345678",
        "member_source": "o1",
    }
    # The one table of sensitive fields knows them (exports, the audit diff, records use it).
    assert mask_value("cf.id_number", "110101199001011234") == MASK
    assert mask_value("cf.member_source", "o1") == "o1"
    # Filtering by a value the agent sees masked would narrow it down: refused and audited.
    with pytest.raises(PermissionDenied):
        values.condition(CustomerAccess(agent), "id_number", "equals", "110101199001011234")
    with read_session() as session:
        refusal = session.execute(
            select(AuditEntry).where(AuditEntry.action == "customer.list", AuditEntry.result == "refused")
        ).scalar_one()
    assert json.loads(refusal.details)["fields"] == ["cf.id_number"]
    found = _ids(manager, values.condition(CustomerAccess(manager), "id_number", "equals", "110101199001011234"))
    assert found == {customer_id}


def test_the_audit_diff_masks_sensitive_values_and_keeps_free_text_as_references(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "id_number", "text", sensitive=True)
    _define(admin, "nickname", "text")
    _define(admin, "member_source", "single_select", "官网\n门店")
    customer_id = _active_ids(1)[0]
    _save(admin, customer_id, {"id_number": "110101199001011234", "nickname": "小王", "member_source": "门店"})
    with read_session() as session:
        entry = session.execute(select(AuditEntry).where(AuditEntry.action == "customer.update")).scalar_one()
    changes = json.loads(entry.details)["changes"]
    assert changes["cf.id_number"] == [None, MASK]
    assert set(changes["cf.nickname"][1]) == {"hmac", "chars"}
    assert changes["cf.member_source"] == [None, "o2"]
    assert "110101199001011234" not in entry.details and "小王" not in entry.details
    from meiqia_app.services.audit import reading as audit_log
    from meiqia_app.services.audit.reading import AuditFilter

    row = audit_log.list_entries(admin, AuditFilter.from_dict({"action": "customer.update"})).rows[0]
    assert "字段member_source" in row.sentence_zh and "Field nickname" in row.sentence_en


# --- filters and sorts -----------------------------------------------------------------------------


@built_once("seeded_db")
def filled(actors):
    """Six customers with values; the rest of the 300 have none."""
    admin = actors["admin"]
    _define(admin, "source2", "single_select", "官网\n门店\n推荐")
    _define(admin, "channels", "multi_select", "微信\n电话\n邮件")
    _define(admin, "points", "number")
    _define(admin, "spent2", "money")
    _define(admin, "joined", "date")
    _define(admin, "seen_at", "datetime")
    _define(admin, "vip", "yes_no")
    _define(admin, "nick", "text")
    ids = _active_ids(6)
    rows = [
        {"source2": "官网", "channels": ["微信"], "points": 10, "spent2": "5", "joined": "2026-01-01", "vip": "是"},
        {"source2": "门店", "channels": ["电话", "邮件"], "points": 250, "spent2": "100.5", "joined": "2026-02-01"},
        {"source2": "门店", "points": -3, "spent2": "0", "vip": "否", "nick": "阿明"},
        {"source2": "推荐", "channels": ["邮件"], "points": 7.5, "seen_at": "2026-03-05T23:30"},
        {"seen_at": "2026-03-06T00:30", "nick": "小红"},
        {},
    ]
    for customer_id, row in zip(ids, rows, strict=True):
        if row:
            _save(admin, customer_id, row)
    return admin, ids


def test_filter_conditions_find_the_right_customers(filled):
    admin, (a, b, c, d, e, f) = filled
    access = CustomerAccess(admin)

    def found(key, op, value=None):
        return _ids(admin, values.condition(access, key, op, value)) & {a, b, c, d, e, f}

    assert found("source2", "equals", "门店") == {b, c}
    assert found("source2", "equals", "o1") == {a}
    assert found("source2", "any_of", ["官网", "推荐"]) == {a, d}
    assert found("source2", "empty") == {e, f}
    assert found("source2", "not_empty") == {a, b, c, d}
    assert found("channels", "any_of", ["邮件"]) == {b, d}
    assert found("channels", "any_of", ["微信", "电话"]) == {a, b}
    assert found("channels", "empty") == {c, e, f}
    assert found("points", "range", [0, 100]) == {a, d}
    assert found("points", "range", ["8", None]) == {a, b}
    assert found("points", "range", [None, 7.5]) == {c, d}
    assert found("points", "equals", "250") == {b}
    assert found("spent2", "range", ["1", "100.5"]) == {a, b}  # yuan, stored in cents
    assert found("joined", "range", ["2026-01-15", "2026-12-31"]) == {b}
    assert found("seen_at", "range", ["2026-03-05", "2026-03-05"]) == {d}  # whole local days
    assert found("seen_at", "range", ["2026-03-06", None]) == {e}
    assert found("vip", "equals", "是") == {a}
    assert found("vip", "equals", False) == {c}
    assert found("vip", "empty") == {b, d, e, f}
    assert found("nick", "equals", "阿明") == {c}
    assert found("nick", "any_of", ["阿明", "小红"]) == {c, e}


@pytest.mark.parametrize(
    ("key", "op", "value", "error"),
    [
        ("no_such", "equals", "x", "error.cf_unknown_field"),
        ("points", "any_of", [1], "error.cf_operator"),
        ("points", "range", [None, ""], "error.cf_range"),
        ("points", "range", "1-2", "error.cf_range"),
        ("points", "equals", "many", "error.cf_number"),
        ("source2", "equals", "电视", "error.cf_option"),
        ("source2", "any_of", [], "error.cf_range"),
        ("channels", "equals", "微信", "error.cf_operator"),
        ("nick", "range", ["a", "b"], "error.cf_operator"),
    ],
)
def test_bad_filters_are_refused(filled, key, op, value, error):
    admin, _ids_ = filled
    with pytest.raises(ValidationError) as caught:
        values.condition(CustomerAccess(admin), key, op, value)
    assert next(iter(caught.value.field_errors.values()))[0] == error


def test_a_retired_field_cannot_be_filtered(filled):
    admin, _ids_ = filled
    field_id = next(f.id for f in custom_fields.list_fields(admin) if f.key == "points")
    custom_fields.retire_field(admin, field_id, 1)
    with pytest.raises(ValidationError):
        values.condition(CustomerAccess(admin), "points", "range", [0, 1])


def test_sorts_follow_the_value_with_empty_values_last_when_descending(filled):
    admin, (a, b, c, d, e, f) = filled
    access = CustomerAccess(admin)
    with get_engine().connect() as conn:
        order = (
            conn.execute(
                select(C.id)
                .where(status_condition("active"), C.id.in_((a, b, c, d, e, f)))
                .order_by(*values.order_by(access, "points", descending=True))
            )
            .scalars()
            .all()
        )
        ascending = (
            conn.execute(
                select(C.id)
                .where(status_condition("active"), C.id.in_((a, b, c, d)))
                .order_by(*values.order_by(access, "points", descending=False))
            )
            .scalars()
            .all()
        )
    assert order[:4] == [b, a, d, c] and set(order[4:]) == {e, f}
    assert ascending == [c, d, a, b]
    with pytest.raises(ValidationError):
        values.order_by(access, "nick", descending=True)  # text has no index to sort by


def test_a_range_for_a_page_uses_the_index_for_few_matches_and_the_walk_for_many(filled, monkeypatch):
    admin, (a, b, c, d, _e, _f) = filled
    access = CustomerAccess(admin)
    base = access.status_conditions("active")
    with get_engine().connect() as conn:
        narrow = values.range_condition(conn, access, base, "points", [0, 100])
        monkeypatch.setattr(values, "RANGE_CANDIDATE_CAP", 1)
        wide = values.range_condition(conn, access, base, "points", [0, 100])
        found = [set(conn.execute(select(C.id).where(and_(*base, cond))).scalars()) for cond in (narrow, wide)]
    assert found == [{a, d}, {a, d}]
    assert str(narrow.compile()) != str(wide.compile()) or get_engine().dialect.name != "sqlite"


def test_list_columns_show_values_masked_for_the_actor(seeded_db, seeded_actors):
    admin, agent = seeded_actors["admin"], seeded_actors["agent"]
    _define(admin, "id_number", "text", sensitive=True)
    _define(admin, "member_source", "single_select", "官网\n门店")
    customer_id = _active_ids(1)[0]
    _save(admin, customer_id, {"id_number": "X123", "member_source": "门店"})
    documents = {customer_id: _document(customer_id)}
    shown = values.column_values(CustomerAccess(agent), documents, ["member_source", "id_number", "gone"])
    assert shown == {customer_id: {"member_source": "门店", "id_number": MASK}}
    assert values.column_values(CustomerAccess(admin), documents, ["id_number"], "en") == {
        customer_id: {"id_number": "X123"}
    }


# --- erasure -------------------------------------------------------------------------------------------


def test_erasure_clears_every_custom_value(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "id_number", "text", sensitive=True)
    field_id = _define(admin, "member_source", "single_select", "官网\n门店")
    customer_id = _active_ids(1)[0]
    _save(admin, customer_id, {"id_number": "110101199001011234", "member_source": "门店"})
    custom_fields.retire_field(admin, field_id, 1)  # a retired field's value goes too
    erasure.erase_customer(admin, customer_id, confirm=str(customer_id))
    assert _document(customer_id) == {}
    with get_engine().connect() as conn:
        texts = [str(v) for v in conn.execute(select(Customer.__table__)).all()]
    assert not any("110101199001011234" in t for t in texts)


def test_filters_see_the_default_of_customers_without_a_value(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "channels", "multi_select", "微信\n电话\n邮件", default="微信")
    _define(admin, "level", "single_select", "普通\n金卡", default="普通")
    a, b, c = _active_ids(3)
    _save(admin, a, {"channels": ["电话"], "level": "金卡"})
    _save(admin, b, {"channels": [], "level": ""})  # explicitly empty
    access = CustomerAccess(admin)

    def found(key, op, value=None):
        return _ids(admin, values.condition(access, key, op, value)) & {a, b, c}

    assert found("channels", "any_of", ["微信"]) == {c}
    assert found("channels", "any_of", ["电话"]) == {a}
    assert found("channels", "empty") == {b}
    assert found("channels", "not_empty") == {a, c}
    assert found("level", "equals", "普通") == {c}
    assert found("level", "equals", "金卡") == {a}
    assert found("level", "empty") == {b}
