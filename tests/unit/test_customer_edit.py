"""services/customers/edit.py: validation, optimistic locking, search upkeep, audit diff."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import AuditEntry, Customer, CustomerSearch
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import Conflict, PermissionDenied, ValidationError


def _customer(customer_id: int) -> Customer:
    with read_session() as session:
        return session.get(Customer, customer_id)


def _first_active_id() -> int:
    with read_session() as session:
        return session.exec(select(Customer.id).where(Customer.status == "active").order_by(Customer.id)).first()


def test_valid_phone_is_normalised_saved_and_audited_masked(seeded_db, seeded_actors):
    cid = _first_active_id()
    before = _customer(cid)
    version = customer_edit.update_customer(seeded_actors["agent"], cid, before.version, {"phone": "+86 139-0000-1234"})
    after = _customer(cid)
    assert after.phone == "13900001234" and after.version == before.version + 1 == version
    assert after.updated_by_name == seeded_actors["agent"].display_name
    with read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "customer.update")).one()
    changes = json.loads(entry.details)["changes"]
    assert changes["phone"][1] == "139****1234"
    assert "13900001234" not in entry.details


def test_invalid_phone_and_email_are_refused_with_field_errors(seeded_db, seeded_actors):
    cid = _first_active_id()
    before = _customer(cid)
    with pytest.raises(ValidationError) as caught:
        customer_edit.update_customer(
            seeded_actors["agent"], cid, before.version, {"phone": "12345", "email": "not-an-email", "name": ""}
        )
    assert caught.value.field_errors["phone"][0] == "error.phone_invalid"
    assert caught.value.field_errors["email"][0] == "error.email_invalid"
    assert caught.value.field_errors["name"][0] == "error.required"
    assert _customer(cid).version == before.version


def test_second_save_on_a_stale_version_gets_a_conflict_and_overwrites_nothing(seeded_db, seeded_actors):
    cid = _first_active_id()
    version = _customer(cid).version
    customer_edit.update_customer(seeded_actors["admin"], cid, version, {"company": "First Co"})
    with pytest.raises(Conflict) as caught:
        customer_edit.update_customer(seeded_actors["agent"], cid, version, {"company": "Second Co"})
    assert caught.value.params["by"] == seeded_actors["admin"].display_name
    assert _customer(cid).company == "First Co"


def test_renaming_updates_search_text_and_pinyin(seeded_db, seeded_actors):
    cid = _first_active_id()
    customer_edit.update_customer(seeded_actors["agent"], cid, _customer(cid).version, {"name": "欧阳娜娜"})
    with read_session() as session:
        text = session.get(CustomerSearch, cid).text
    assert "欧阳娜娜" in text and "ouyangnana" in text
    assert _customer(cid).name_initials == "oynn"
    page = customer_list.list_customers(seeded_actors["agent"], ListQuery.from_dict({"q": "oynn"}))
    assert cid in [row.id for row in page.rows]


def test_agent_without_sensitive_view_keeps_masked_fields_when_left_empty(seeded_db, seeded_actors):
    with read_session() as session:
        customer = session.exec(
            select(Customer).where(
                Customer.phone.is_not(None), Customer.email.is_not(None), Customer.status == "active"
            )
        ).first()
    customer_edit.update_customer(
        seeded_actors["agent"], customer.id, customer.version, {"phone": "", "email": "", "company": "Kept Co"}
    )
    after = _customer(customer.id)
    assert (after.phone, after.email, after.company) == (customer.phone, customer.email, "Kept Co")


def test_analyst_cannot_edit_and_the_refusal_is_audited(seeded_db, seeded_actors):
    cid = _first_active_id()
    with pytest.raises(PermissionDenied):
        customer_edit.update_customer(seeded_actors["analyst"], cid, 1, {"company": "x"})
    with read_session() as session:
        refused = session.exec(
            select(AuditEntry).where(AuditEntry.action == "customer.update", AuditEntry.result == "refused")
        ).all()
    assert len(refused) == 1


def test_create_customer_is_searchable(db, actors):
    new_id = customer_edit.create_customer(
        actors["agent"], {"name": "测试客户", "phone": "13700001111", "source": "wechat"}
    )
    # An agent (phone shown as 137****1111) finds it by the visible last digits or the whole number.
    for typed in ("1111", "137 0000 1111", "测试"):
        page = customer_list.list_customers(actors["agent"], ListQuery.from_dict({"q": typed}))
        assert [row.id for row in page.rows] == [new_id], typed
    # The hidden middle digits find it only for a role that sees them.
    assert customer_list.list_customers(actors["agent"], ListQuery.from_dict({"q": "0000111"})).rows == []
    page = customer_list.list_customers(actors["senior"], ListQuery.from_dict({"q": "0000111"}))
    assert [row.id for row in page.rows] == [new_id]


def test_an_edit_while_another_writer_holds_the_lock_says_busy_and_changes_nothing(
    seeded_db, seeded_actors, monkeypatch
):
    """On SQLite a cleanup batch holds the single write lock for seconds; an edit
    that waits past the busy timeout gets a "busy, try again" error, not a crash."""
    import sqlite3

    from meiqia_app import db
    from meiqia_app.dbadapter import sqlite as sqlite_adapter
    from meiqia_app.services.errors import Busy

    engine = db.get_engine()
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL has no database-wide write lock")
    monkeypatch.setattr(sqlite_adapter, "SQLITE_BUSY_TIMEOUT_MS", 300)
    db.reset_engine()
    cid = _first_active_id()
    before = _customer(cid)
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(Busy) as raised:
            customer_edit.update_customer(seeded_actors["agent"], cid, before.version, {"company": "Held Co"})
        assert raised.value.message_key == "error.busy"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _customer(cid).company == before.company
    customer_edit.update_customer(seeded_actors["agent"], cid, before.version, {"company": "Held Co"})
    assert _customer(cid).company == "Held Co"
    db.reset_engine()


def test_a_new_name_and_company_reach_the_audit_log_as_references_not_text(seeded_db, seeded_actors):
    """The audit log is never erased: a changed name must not stay readable there after an erasure."""
    cid = _first_active_id()
    before = _customer(cid)
    city = "苏州" if before.city == "杭州" else "杭州"
    customer_edit.update_customer(
        seeded_actors["manager"], cid, before.version, {"name": "审计测试名", "company": "审计测试公司", "city": city}
    )
    with read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "customer.update")).one()
    assert "审计测试名" not in entry.details and "审计测试公司" not in entry.details
    assert before.name not in entry.details
    changes = json.loads(entry.details)["changes"]
    assert changes["name"][1] == audit.text_ref("审计测试名")  # checkable with the key, not readable
    assert changes["city"][1] == city  # the coarse region stays readable


# The senior agent stands for "a role that sees contact data" here (its team scope: test_data_scope.py).
pytestmark = pytest.mark.usefixtures("senior_scope_all")
