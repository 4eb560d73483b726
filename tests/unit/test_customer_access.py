"""services/customers/access.py: the one way services reach customer rows (issue 21, part 1).

- A customer out of reach is not found through every loader (a trashed one
  without customer.delete; an erased one, for any change), never "forbidden".
- Services named with such an id (crafted calls) refuse it as not found and
  change nothing.
- The one table of sensitive fields drives the masking of the detail card, the
  edit form and the export field list.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from meiqia_app.db import get_engine, read_connection, read_session, write_session
from meiqia_app.models import Customer, Note, Product, Tag, TagAssignment
from meiqia_app.services.customers import access as customer_access
from meiqia_app.services.customers import consent, notes, timeline
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import orders as customer_orders
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.access import SENSITIVE, CustomerAccess, mask_value
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.masking import MASK
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import NotFound, ReadOnly
from meiqia_app.services.exports import portability
from meiqia_app.services.exports.fields import EXPORT_FIELDS, FIELD_SPECS, sensitive_export_fields
from meiqia_app.services.exports.policy import masked_fields
from meiqia_app.services.privacy import erasure
from meiqia_app.services.tags import assignments as customer_tags

C = Customer.__table__.c


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(
            conn.execute(
                select(C.id)
                .where(C.status == "active", C.erased_at.is_(None), C.company != "", C.phone != "")
                .order_by(C.id)
                .limit(n)
            ).scalars()
        )


def _set_status(customer_id: int, status: str) -> None:
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET status = :s WHERE id = :id"), {"s": status, "id": customer_id})


@pytest.fixture()
def trashed(seeded_db) -> int:
    customer_id = _active_ids(1)[0]
    _set_status(customer_id, "trashed")
    return customer_id


@pytest.fixture()
def erased(seeded_db, seeded_actors) -> int:
    customer_id = _active_ids(2)[1]
    erasure.erase_customer(seeded_actors["admin"], customer_id, confirm=str(customer_id))
    return customer_id


def _every_loader(access: CustomerAccess, customer_id: int) -> dict[str, object]:
    """What each loader gives for ``customer_id``: the row's id, or the error's class name."""
    outcomes: dict[str, object] = {}

    def attempt(name, call):
        try:
            outcomes[name] = call()
        except (NotFound, ReadOnly) as error:
            outcomes[name] = type(error).__name__

    with write_session() as session:
        attempt("load", lambda: access.load(session, customer_id).id)
        attempt("load_for_write", lambda: access.load(session, customer_id, for_write=True).id)
        attempt("load_for_system", lambda: access.load(session, customer_id, for_write=True, writer="system").id)
        attempt("load_models", lambda: list(access.load_models(session, [customer_id])))
    with read_connection() as conn:
        attempt("load_row", lambda: access.load_row(conn, customer_id, C.name).status)
        row = access.find_row(conn, customer_id, C.name)
        outcomes["find_row"] = None if row is None else row.status
        attempt("load_many", lambda: list(access.load_many(conn, [customer_id])))
    return outcomes


# --- the loaders ---------------------------------------------------------------------------------


def test_a_trashed_customer_is_not_found_by_any_loader_without_customer_delete(trashed, seeded_actors):
    agent = CustomerAccess(seeded_actors["agent"])
    assert _every_loader(agent, trashed) == {
        "load": "NotFound",
        "load_for_write": "NotFound",
        "load_for_system": "NotFound",
        "load_models": [],
        "load_row": "NotFound",
        "find_row": None,
        "load_many": [],
    }
    # Who may see the trash reads it; a person's change is refused as read-only, a system's as not found.
    admin = CustomerAccess(seeded_actors["admin"])
    assert _every_loader(admin, trashed) == {
        "load": trashed,
        "load_for_write": "ReadOnly",
        "load_for_system": "NotFound",
        "load_models": [trashed],
        "load_row": "trashed",
        "find_row": "trashed",
        "load_many": [trashed],
    }


def test_an_erased_customer_is_not_found_for_any_change_by_anyone(erased, seeded_actors):
    for name in ("agent", "manager", "admin"):
        outcomes = _every_loader(CustomerAccess(seeded_actors[name]), erased)
        assert outcomes["load_for_write"] == outcomes["load_for_system"] == "NotFound", name
        # Its anonymised row keeps its place in lists and history (as before this module).
        assert outcomes["load"] == erased and outcomes["find_row"] == "active", name


def test_missing_and_malformed_ids_are_not_found(seeded_db, seeded_actors):
    access = CustomerAccess(seeded_actors["admin"])
    for bad in (10**9, "abc", None, True, "1; DROP TABLE customer"):
        with read_session() as session, pytest.raises(NotFound):
            access.load(session, bad)
        with read_connection() as conn, pytest.raises(NotFound):
            access.load_row(conn, bad)


def test_the_trash_is_an_empty_set_without_customer_delete(trashed, seeded_actors):
    trash = ListQuery(status="trashed")
    assert customer_list.count_customers(seeded_actors["admin"], trash, exact=True).value == 1
    assert [r.id for r in customer_list.list_customers(seeded_actors["admin"], trash).rows] == [trashed]
    # Counted for the agent right after the admin: the cached count is not shared across reach.
    assert customer_list.count_customers(seeded_actors["agent"], trash, exact=True).value == 0
    assert customer_list.count_customers(seeded_actors["agent"], trash).value == 0
    assert customer_list.list_customers(seeded_actors["agent"], trash).rows == []
    assert customer_list.matching_ids(seeded_actors["agent"], trash) == []


def test_the_working_set_conditions_are_the_list_status_conditions(seeded_actors):
    """The hot paths keep their SQL: for data scope "all" the reach adds nothing for a status
    the actor may see (the agent's team + pool scope adds its one condition: test_data_scope.py)."""
    from meiqia_app.services.customers.query import status_condition

    for name in ("manager", "analyst", "admin"):
        access = CustomerAccess(seeded_actors[name])
        for status in ("active", "archived", "all"):
            (only,) = access.status_conditions(status)
            assert str(only.compile()) == str(status_condition(status).compile())
    assert str(CustomerAccess(seeded_actors["agent"]).status_conditions("trashed")[0].compile()) == "false"


# --- crafted calls naming a customer out of reach --------------------------------------------------


def _counts(customer_id: int) -> tuple[int, int, int]:
    with read_session() as session:
        note_count = session.exec(select(func.count()).select_from(Note).where(Note.customer_id == customer_id)).one()
        tag_count = session.exec(
            select(func.count()).select_from(TagAssignment).where(TagAssignment.customer_id == customer_id)
        ).one()
        version = session.exec(select(Customer.version).where(Customer.id == customer_id)).one()
    return note_count[0], tag_count[0], version[0]


def test_services_refuse_a_trashed_customer_as_not_found_for_an_agent(trashed, seeded_actors):
    agent = seeded_actors["agent"]
    with read_session() as session:
        tag_id = session.exec(select(Tag.id).order_by(Tag.id)).first()
        product_id = session.exec(select(Product.id).order_by(Product.id)).first()
        version = session.get(Customer, trashed).version
    before = _counts(trashed)
    calls = {
        "detail": lambda: customers.get_customer(agent, trashed),
        "record": lambda: customers.get_customer_record(agent, trashed),
        "timeline": lambda: timeline.customer_timeline(agent, trashed),
        "note add": lambda: notes.add_note(agent, trashed, "crafted"),
        "tag add": lambda: customer_tags.add_tags(agent, trashed, [tag_id]),
        "tag remove": lambda: customer_tags.remove_tag(agent, trashed, tag_id),
        "edit": lambda: customer_edit.update_customer(agent, trashed, version, {"name": "crafted"}),
        "consent": lambda: consent.set_consent(agent, trashed, "marketing", True),
        "order": lambda: customer_orders.add_order(agent, trashed, product_id),
        "portability": lambda: portability.collect(agent, trashed),
        "erasure request": lambda: erasure.request_erasure(agent, trashed, "crafted"),
    }
    for name, call in calls.items():
        with pytest.raises(NotFound):
            call()
            pytest.fail(f"{name}: reached a trashed customer")
    assert timeline.activity_marker(agent, trashed) is None
    other = _active_ids(3)[2]
    assert [r.id for r in customers.customer_records(agent, [trashed, other])] == [other]  # left out of a list
    assert _counts(trashed) == before  # nothing written


def test_merge_needs_every_customer_within_reach(trashed, seeded_actors):
    other = _active_ids(3)[2]
    with pytest.raises(NotFound):
        duplicate_merging.merge_preview(seeded_actors["manager"], [other, trashed])


def test_services_refuse_an_erased_customer_as_not_found_for_everyone(erased, seeded_actors):
    admin = seeded_actors["admin"]
    with read_session() as session:
        version = session.get(Customer, erased).version
    before = _counts(erased)
    for call in (
        lambda: notes.add_note(admin, erased, "crafted"),
        lambda: customer_edit.update_customer(admin, erased, version, {"name": "crafted"}),
        lambda: consent.set_consent(admin, erased, "marketing", True),
        lambda: portability.collect(admin, erased),
    ):
        with pytest.raises(NotFound):
            call()
    assert _counts(erased) == before


# --- one table of sensitive fields ---------------------------------------------------------------------


def test_every_list_of_sensitive_fields_derives_from_the_table(db):  # the export fields include custom ones
    assert {f for f, spec in FIELD_SPECS.items() if spec.sensitive} == set(SENSITIVE) & set(EXPORT_FIELDS)
    assert sensitive_export_fields() == tuple(f for f in EXPORT_FIELDS if f in SENSITIVE)
    assert customers.masked_in_records() == ("phone", "email", "address", "birthday", "total_spent_cents")
    # The maskers behind the table: recognisable, never the value.
    assert mask_value("phone", "13812345678") == "138****5678"
    assert mask_value("recipient_phone", "13812345678") == "138****5678"
    assert mask_value("last_order", "A1 ¥99.00") == MASK
    assert mask_value("birthday", "1990-01-01", hidden=None) is None
    assert mask_value("name", "张三") == "张三"
    assert mask_value("phone", "") == "" and mask_value("phone", None) is None


def test_the_table_drives_detail_edit_and_export_fields(seeded_db, seeded_actors, monkeypatch):
    """Declaring one more field sensitive (company) masks it on the card, makes an empty
    value in the edit form mean "keep", and marks it in the export picker."""
    agent, senior, admin = seeded_actors["agent"], seeded_actors["senior"], seeded_actors["admin"]
    customer_id = _active_ids(1)[0]
    company = customers.get_customer(admin, customer_id).company
    assert company and customers.get_customer(agent, customer_id).company == company
    assert "company" not in masked_fields(agent)

    monkeypatch.setitem(SENSITIVE, "company", customer_access._hidden)

    assert customers.get_customer(agent, customer_id).company == MASK
    assert customers.get_customer(senior, customer_id).company == company  # customer.view_sensitive
    assert "company" in customers.get_customer(agent, customer_id).masked_fields
    assert FIELD_SPECS["company"].sensitive and "company" in masked_fields(agent)
    assert "company" not in masked_fields(admin)
    # The agent's form sends the masked field empty: the stored value stays.
    version = customers.get_customer(agent, customer_id).version
    customer_edit.update_customer(agent, customer_id, version, {"company": "", "city": "杭州"})
    after = customers.get_customer(admin, customer_id)
    assert after.company == company and after.city == "杭州"


def test_without_the_extra_entry_an_empty_company_clears_it(seeded_db, seeded_actors):
    """The counterpart of the test above: the table, not the form, made the difference."""
    agent, admin = seeded_actors["agent"], seeded_actors["admin"]
    customer_id = _active_ids(1)[0]
    version = customers.get_customer(agent, customer_id).version
    customer_edit.update_customer(agent, customer_id, version, {"company": ""})
    assert customers.get_customer(admin, customer_id).company == ""


# The senior agent stands for "a role that sees contact data" here (its team scope: test_data_scope.py).
pytestmark = pytest.mark.usefixtures("senior_scope_all")
