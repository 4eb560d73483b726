"""services/custom_fields.py: the lifecycle of a definition, its jobs and its audit entries."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from meiqia_app.db import get_engine, read_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import index_key
from meiqia_app.models import AuditEntry, Customer, CustomField
from meiqia_app.services.audit import reading as audit_log
from meiqia_app.services.audit.reading import AuditFilter
from meiqia_app.services.custom_fields import catalog as custom_field_catalog
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.custom_fields import values
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs

C = Customer.__table__.c


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _select_field(admin, **extra) -> custom_fields.FieldChange:
    data = {
        "key": "member_source",
        "label_zh": "会员来源",
        "label_en": "Member source",
        "group_zh": "会员信息",
        "field_type": "single_select",
        "options": "官网 / Website\n门店 / Store\n老客户推荐 / Referral",
        **extra,
    }
    return custom_fields.create_field(admin, data)


def _row(field_id: int) -> CustomField | None:
    with read_session() as session:
        return session.get(CustomField, field_id)


def _documents() -> dict[int, dict]:
    with get_engine().connect() as conn:
        return dict(conn.execute(select(C.id, C.custom_fields)).all())


def _indexes() -> set[str]:
    """The fields whose index exists (by key)."""
    with get_engine().connect() as conn:
        return {index_key(name) for name in get_adapter().custom_field_indexes(conn)}


def _index_names() -> set[str]:
    with get_engine().connect() as conn:
        return get_adapter().custom_field_indexes(conn)


def _entries(action: str) -> list[AuditEntry]:
    with read_session() as session:
        return (
            session.execute(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
            .scalars()
            .all()
        )


def _sentence(admin, action: str, lang: str = "zh") -> str:
    rows = audit_log.list_entries(admin, AuditFilter.from_dict({"action": action})).rows
    assert rows, f"no {action} entry"
    return rows[0].sentence_zh if lang == "zh" else rows[0].sentence_en


def _set_value(admin, customer_id: int, values: dict) -> None:
    with read_session() as session:
        version = session.get(Customer, customer_id).version
    customer_edit.update_customer(admin, customer_id, version, {"custom_fields": values})


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


# --- creating ------------------------------------------------------------------------------------


def test_admin_creates_a_select_field_with_options_an_index_and_an_audit_sentence(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    change = _select_field(admin)
    row = _row(change.field_id)
    assert (row.key, row.label_zh, row.label_en, row.group_zh, row.field_type) == (
        "member_source",
        "会员来源",
        "Member source",
        "会员信息",
        "single_select",
    )
    assert [(o["id"], o["zh"], o["en"]) for o in json.loads(row.options)] == [
        ("o1", "官网", "Website"),
        ("o2", "门店", "Store"),
        ("o3", "老客户推荐", "Referral"),
    ]
    assert change.job_id and jobs.job_view(admin, change.job_id).status == "done"
    assert _indexes() == {"member_source"}
    assert custom_field_catalog.catalog().get("member_source").active
    assert _sentence(admin, "field.create").endswith("新建了自定义字段 会员来源 (member_source)")
    assert "Member source (member_source)" in _sentence(admin, "field.create", "en")


def test_only_field_manage_may_define_fields_and_a_refusal_is_audited(seeded_db, seeded_actors):
    with pytest.raises(PermissionDenied):
        _select_field(seeded_actors["manager"])
    with pytest.raises(PermissionDenied):
        custom_fields.list_fields(seeded_actors["agent"])
    refusals = [e for e in _entries("field.create") if e.result == "refused"]
    assert refusals and json.loads(refusals[0].details)["missing_permission"] == "field.manage"
    with read_session() as session:
        assert session.execute(select(func.count()).select_from(CustomField.__table__)).scalar_one() == 0


@pytest.mark.parametrize(
    ("data", "field", "key"),
    [
        ({"key": "Member Source"}, "key", "error.cf_key"),
        ({"key": "x"}, "key", "error.cf_key"),
        ({"key": "1abc"}, "key", "error.cf_key"),
        ({"key": "a'; drop table customer; --"}, "key", "error.cf_key"),
        ({"field_type": "formula"}, "field_type", "error.bad_choice"),
        ({"label_zh": "  "}, "label_zh", "error.required"),
        ({"options": ""}, "options", "error.cf_options_missing"),
        ({"options": "官网\n官网"}, "options", "error.cf_option_taken"),
        ({"default": "电视广告"}, "default", "error.cf_option"),
    ],
)
def test_bad_definitions_are_refused(seeded_db, seeded_actors, data, field, key):
    with pytest.raises(ValidationError) as caught:
        _select_field(seeded_actors["admin"], **data)
    assert caught.value.field_errors[field][0] == key


def test_key_and_label_are_unique(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _select_field(admin)
    with pytest.raises(ValidationError) as caught:
        _select_field(admin, label_zh="另一个")
    assert caught.value.field_errors["key"][0] == "error.cf_key_taken"
    with pytest.raises(ValidationError) as caught:
        _select_field(admin, key="other_key")
    assert caught.value.field_errors["label_zh"][0] == "error.cf_label_taken"


# --- changing ------------------------------------------------------------------------------------


def test_renaming_the_label_keeps_the_key_and_the_values(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    change = _select_field(admin)
    customer_id = _active_ids(1)[0]
    _set_value(admin, customer_id, {"member_source": "门店"})
    renamed = custom_fields.update_field(admin, change.field_id, change.version, {"label_zh": "客户来源渠道"})
    row = _row(change.field_id)
    assert (row.key, row.label_zh, row.version) == ("member_source", "客户来源渠道", renamed.version)
    assert renamed.version == change.version + 1
    assert _documents()[customer_id] == {"member_source": "o2"}
    details = json.loads(_entries("field.update")[-1].details)
    assert details["changes"] == {"label_zh": ["会员来源", "客户来源渠道"]}
    assert "中文名称" in _sentence(admin, "field.update")
    with pytest.raises(Conflict):  # a second admin's form on the old version
        custom_fields.update_field(admin, change.field_id, change.version, {"label_en": "Source"})


def test_options_are_added_renamed_moved_retired_and_restored_without_touching_values(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    change = _select_field(admin)
    customer_id = _active_ids(1)[0]
    _set_value(admin, customer_id, {"member_source": "老客户推荐"})
    version = custom_fields.add_option(admin, change.field_id, change.version, "展会", "Trade fair").version
    version = custom_fields.update_option(admin, change.field_id, version, "o3", zh="转介绍").version
    version = custom_fields.update_option(admin, change.field_id, version, "o4", move="up").version
    version = custom_fields.update_option(admin, change.field_id, version, "o3", retired=True).version
    field = custom_field_catalog.catalog().get("member_source")
    assert [(o.id, o.zh, o.retired) for o in field.ordered_options(include_retired=True)] == [
        ("o1", "官网", False),
        ("o2", "门店", False),
        ("o4", "展会", False),
        ("o3", "转介绍", True),
    ]
    assert [o.id for o in field.ordered_options()] == ["o1", "o2", "o4"]
    assert _documents()[customer_id] == {"member_source": "o3"}  # the stored value is kept
    # Saving the customer's form unchanged keeps the retired option; choosing it anew is refused.
    _set_value(admin, customer_id, {"member_source": "o3"})
    other = _active_ids(2)[1]
    with pytest.raises(ValidationError) as caught:
        _set_value(admin, other, {"member_source": "o3"})
    assert caught.value.field_errors["cf.member_source"][0] == "error.cf_option_retired"
    custom_fields.update_option(admin, change.field_id, version, "o3", retired=False)
    _set_value(admin, other, {"member_source": "o3"})
    changes = [json.loads(e.details)["change"] for e in _entries("field.option")]
    assert changes == ["add", "rename", "move", "retire", "restore"]
    assert "转介绍" in _sentence(admin, "field.option")


def test_a_default_is_every_valueless_customers_value_at_once_without_writing_to_them(seeded_db, seeded_actors):
    """At 1M customers writing a default into every row took minutes (bench/custom_fields.py):
    the default is part of the field's SQL value and index instead; nothing is written."""
    admin = seeded_actors["admin"]
    first, second, third = _active_ids(3)
    _set_value(seeded_actors["admin"], second, {})  # no-op
    change = custom_fields.create_field(
        admin, {"key": "vip_level", "label_zh": "会员等级", "field_type": "number", "default": "1"}
    )
    assert jobs.job_view(admin, change.job_id).status == "done"
    assert _documents()[first] == {}  # nothing written
    (first_index,) = _index_names()
    access = CustomerAccess(admin)
    every = _count(values.condition(access, "vip_level", "equals", 1))
    assert every == len(_documents())
    # Own values and explicit empties stay when the default changes; the index is made again.
    _set_value(admin, first, {"vip_level": "7"})
    _set_value(admin, second, {"vip_level": ""})
    assert _documents()[second] == {"vip_level": None}
    later = custom_fields.update_field(admin, change.field_id, change.version, {"default": "2"})
    assert later.job_id and jobs.job_view(admin, later.job_id).status == "done"
    assert _index_names() != {first_index} and _indexes() == {"vip_level"}
    assert _count(values.condition(access, "vip_level", "equals", 2)) == every - 2
    assert _count(values.condition(access, "vip_level", "equals", 7)) == 1
    assert _count(values.condition(access, "vip_level", "empty")) == 1
    shown = {v.key: v.display for v in customers.get_customer(admin, third).custom_fields}
    assert shown == {"vip_level": "2"}
    details = json.loads(_entries("field.update")[-1].details)
    assert details["changes"]["default"] == [True, True]


def _count(condition) -> int:
    with get_engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(Customer.__table__).where(condition)).scalar_one()


def test_new_customers_have_the_defaults(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    custom_fields.create_field(
        admin, {"key": "vip_level", "label_zh": "会员等级", "field_type": "number", "default": 3}
    )
    new_id = customer_edit.create_customer(admin, {"name": "新客户"})
    assert _documents()[new_id] == {}
    shown = [(v.key, v.display) for v in customers.get_customer(admin, new_id).custom_fields]
    assert shown == [("vip_level", "3")]


# --- retire, restore, delete ---------------------------------------------------------------------


def test_retiring_hides_the_field_keeps_the_values_and_restoring_brings_them_back(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    change = _select_field(admin)
    customer_id = _active_ids(1)[0]
    _set_value(admin, customer_id, {"member_source": "官网"})
    retired = custom_fields.retire_field(admin, change.field_id, change.version)
    assert not custom_field_catalog.catalog().get("member_source").active
    assert _indexes() == set()
    assert _documents()[customer_id] == {"member_source": "o1"}
    with pytest.raises(ValidationError):  # a retired field takes no values
        _set_value(admin, customer_id, {"member_source": "门店"})
    restored = custom_fields.restore_field(admin, change.field_id, retired.version)
    assert custom_field_catalog.catalog().get("member_source").active
    assert _indexes() == {"member_source"} and jobs.job_view(admin, restored.job_id).status == "done"
    assert _documents()[customer_id] == {"member_source": "o1"}
    assert [e.action for e in _entries("field.retire") + _entries("field.restore")] == ["field.retire", "field.restore"]


def test_deleting_needs_the_key_typed_then_removes_every_value_and_the_definition(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    change = _select_field(admin)
    other = custom_fields.create_field(admin, {"key": "notes_extra", "label_zh": "备注二", "field_type": "text"})
    ids = _active_ids(40)
    customer_id = ids[0]
    _set_value(admin, customer_id, {"notes_extra": "保留"})
    for position, cid in enumerate(ids):
        _set_value(admin, cid, {"member_source": f"o{position % 3 + 1}"})
    with pytest.raises(ValidationError) as caught:
        custom_fields.delete_field(admin, change.field_id, "会员来源")
    assert caught.value.field_errors["confirm"][0] == "error.cf_confirm_key"
    assert all("member_source" in doc for doc in _documents().values() if doc)
    deleted = custom_fields.delete_field(admin, change.field_id, "member_source")
    view = jobs.job_view(admin, deleted.job_id)
    documents = _documents()
    assert view.status == "done" and view.result["removed"] == 40
    assert all("member_source" not in doc for doc in documents.values())
    assert documents[customer_id] == {"notes_extra": "保留"}  # other fields untouched
    assert _row(change.field_id) is None and _row(other.field_id) is not None
    assert _indexes() == set()
    assert [e.action for e in _entries("field.delete") + _entries("field.purge")] == ["field.delete", "field.purge"]
    assert json.loads(_entries("field.purge")[0].details)["removed"] == 40
    with pytest.raises(NotFound):
        custom_fields.update_field(admin, change.field_id, deleted.version, {"label_zh": "x"})
    # The key is free again once the values are gone.
    assert _select_field(admin).field_id != change.field_id


def test_the_admin_page_lists_every_definition(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    _select_field(admin)
    custom_fields.create_field(admin, {"key": "spent_offline", "label_zh": "线下消费", "field_type": "money"})
    views = custom_fields.list_fields(admin, "en")
    assert [(v.key, v.type_label, v.indexed) for v in views] == [
        ("member_source", "Single select", True),
        ("spent_offline", "Money", True),
    ]
    assert [o.en for o in views[0].options] == ["Website", "Store", "Referral"]
