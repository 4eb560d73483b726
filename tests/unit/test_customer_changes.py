"""The "customers changed" signal (services/customers/changes.py): published once after a
commit, never for a rollback; and the list counts and report figures that follow it are
fresh after each kind of write, without any service invalidating a cache by hand."""

from __future__ import annotations

import csv
import threading

import pytest
from sqlalchemy import select, text

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_connection, write_session
from meiqia_app.models import Customer
from meiqia_app.services.customers import change_subscribers as customer_change_subscribers
from meiqia_app.services.customers import changes as customer_changes
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.changes import CONSENT, EDITED, MANY, RULE_TAGS, customers_changed
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.importing import job as customer_import
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.privacy import erasure
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends
from tests.unit.api_support import bearer, client, new_key
from tests.unit.change_support import published, told

C = Customer.__table__.c


def _name_of(customer_id: int) -> str:
    with get_engine().connect() as conn:  # a connection of its own: sees only what is committed
        return conn.execute(select(C.name).where(C.id == customer_id)).scalar_one()


def _some_customer() -> int:
    with read_connection() as conn:
        return conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(1)).scalar_one()


# --- the signal ------------------------------------------------------------------------------


def test_a_committed_change_is_published_once_after_the_commit_with_all_its_ids(seeded_db):
    first, second = 1, 2
    names_seen_by_subscriber: list[str] = []

    def subscriber(change):
        names_seen_by_subscriber.append(_name_of(first))

    with published() as seen:
        customer_changes.subscribe(subscriber)
        try:
            with write_session() as session:
                session.execute(text("UPDATE customer SET name = '改过的名字' WHERE id = :i"), {"i": first})
                customers_changed(session, [first], CONSENT)
                customers_changed(session, [second, first], CONSENT)
                assert seen == []  # nothing before the commit
            assert seen == [told({first, second}, CONSENT)]  # once, before write_session returned
        finally:
            customer_changes.unsubscribe(subscriber)
    assert names_seen_by_subscriber == ["改过的名字"]  # the subscriber read the committed row


def test_a_rolled_back_change_publishes_nothing(seeded_db):
    before = _name_of(1)
    with published() as seen:
        with pytest.raises(ZeroDivisionError):
            with write_session() as session:
                session.execute(text("UPDATE customer SET name = '不会保存' WHERE id = 1"))
                customers_changed(session, [1], CONSENT)
                raise ZeroDivisionError
        # Rolled back inside the session, then something else committed: only that is told.
        with write_session() as session:
            session.execute(text("UPDATE customer SET name = '也不会保存' WHERE id = 1"))
            customers_changed(session, [1], CONSENT)
            session.rollback()
            customers_changed(session, [2], CONSENT)
    assert _name_of(1) == before
    assert seen == [told({2}, CONSENT)]


def test_many_ids_are_told_as_many_and_unknown_kinds_are_refused(seeded_db):
    with published() as seen:
        with write_session() as session:
            customers_changed(session, range(1, customer_changes.MANY_IDS + 2), CONSENT)
        with write_session() as session:
            customers_changed(session, MANY, CONSENT)
            customers_changed(session, [5], CONSENT)
        with write_session() as session:
            customers_changed(session, [], CONSENT)  # nothing changed: nothing told
    assert seen == [told(None, CONSENT), told(None, CONSENT)]
    with pytest.raises(ValueError):
        with write_session() as session:
            customers_changed(session, [1], "renamed")


def test_changes_made_by_the_rules_join_the_edit_that_caused_them(seeded_db, seeded_actors, monkeypatch):
    """An edit that gives the customer a rule tag retires the cached counts once, not twice."""
    retired = []
    monkeypatch.setattr(customer_list, "invalidate_counts", lambda: retired.append(1))
    manager = seeded_actors["manager"]
    # A customer who matches no rule yet: the shipped "新客户" rule tags customers registered within 30 days.
    customer_id = customer_edit.create_customer(manager, {"name": "规则测试"}, acknowledged=None)
    with write_session() as session:
        session.execute(text("DELETE FROM tag_assignment WHERE customer_id = :i"), {"i": customer_id})
    retired.clear()
    with read_connection() as conn:
        version = conn.execute(select(C.version).where(C.id == customer_id)).scalar_one()
    with published() as seen:
        customer_edit.update_customer(manager, customer_id, version, {"city": "杭州"})
    assert len(seen) == 1 and seen[0].ids == {customer_id} and {EDITED, RULE_TAGS} <= seen[0].kinds
    assert retired == [1]
    with read_connection() as conn:
        tagged = text("SELECT count(*) FROM tag_assignment WHERE customer_id = :i AND source = 'rule'")
        assert conn.execute(tagged, {"i": customer_id}).scalar_one() >= 1


def test_a_failing_subscriber_neither_fails_the_committed_change_nor_stops_the_others(seeded_db):
    def broken(change):
        raise RuntimeError("boom")

    customer_changes.register_subscribers()
    customer_changes.subscribe(broken)
    try:
        with published() as seen:
            with write_session() as session:
                session.execute(text("UPDATE customer SET name = '照样保存' WHERE id = 1"))
                customers_changed(session, [1], CONSENT)
    finally:
        customer_changes.unsubscribe(broken)
    assert _name_of(1) == "照样保存"
    assert seen == [told({1}, CONSENT)]


def test_changes_in_two_threads_are_told_in_their_own_thread(seeded_db):
    threads_told: list[str] = []

    def subscriber(change):
        threads_told.append(threading.current_thread().name)

    customer_changes.subscribe(subscriber)
    try:

        def write(customer_id: int) -> None:
            with write_session() as session:
                customers_changed(session, [customer_id], CONSENT)

        workers = [threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in (1, 2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        customer_changes.unsubscribe(subscriber)
    assert sorted(threads_told) == ["writer-1", "writer-2"]


def test_the_subscribers_are_registered_once_and_in_one_place():
    customer_changes.register_subscribers()
    customer_changes.register_subscribers()
    assert customer_changes._writers == [customer_change_subscribers.apply_rules]
    assert customer_changes._readers[:2] == [
        customer_change_subscribers.retire_counts,
        customer_change_subscribers.retire_report_figures,
    ]


# --- what follows the signal is fresh, with no hand-called invalidation -----------------------


class Figures:
    """A count of the customer list and report figures for ``query``, each read so that a
    cache in this process would answer the second time if nothing retired it."""

    def __init__(self, actor, query: ListQuery) -> None:
        self.actor, self.query = actor, query
        self.day = report_periods.make_period("day")
        self.month = report_periods.make_period("month")

    def read(self) -> tuple[int, int, int]:
        count = customer_list.count_customers(self.actor, self.query, exact=True).value
        dashboard = report_dashboard.dashboard(self.actor, self.day).raw["total_customers"]
        segment = report_trends.compare_periods(self.actor, self.query, self.month, self.day).raw_b["total_customers"]
        return count, dashboard, segment


def _cached_twice(figures: Figures) -> tuple[int, int, int]:
    first = figures.read()
    assert figures.read() == first
    return first


def test_an_edit_shows_in_the_counts_and_the_reports_at_once(seeded_db, seeded_actors):
    manager = seeded_actors["manager"]
    figures = Figures(manager, ListQuery(city="变更市"))
    before = _cached_twice(figures)
    customer_id = _some_customer()
    with read_connection() as conn:
        version = conn.execute(select(C.version).where(C.id == customer_id)).scalar_one()
    customer_edit.update_customer(manager, customer_id, version, {"city": "变更市"})
    count, dashboard, segment = figures.read()
    assert (count, segment) == (before[0] + 1, before[2] + 1)
    assert dashboard == before[1]  # nobody came or went


def test_an_import_shows_in_the_counts_and_the_reports_at_once(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    figures = Figures(admin, ListQuery(city="导入市"))
    before = _cached_twice(figures)
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "changes.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["姓名", "城市"], ["导入甲", "导入市"], ["导入乙", "导入市"]])
    report = customer_import.run_import(admin, path, {0: "name", 1: "city"})
    assert report.inserted == 2
    assert figures.read() == (before[0] + 2, before[1] + 2, before[2] + 2)


def test_a_merge_shows_in_the_counts_and_the_reports_at_once(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    survivor = customer_edit.create_customer(admin, {"name": "合并甲", "city": "合并市"}, acknowledged=None)
    other = customer_edit.create_customer(admin, {"name": "合并乙", "city": "合并市"}, acknowledged=None)
    figures = Figures(admin, ListQuery(city="合并市"))
    before = _cached_twice(figures)
    with read_connection() as conn:
        versions = dict(conn.execute(select(C.id, C.version).where(C.id.in_([survivor, other]))).all())
    duplicate_merging.merge_customers(
        admin, survivor_id=survivor, other_ids=[other], field_choices={}, expected_versions=versions
    )
    assert figures.read() == (before[0] - 1, before[1] - 1, before[2] - 1)


def test_an_erasure_shows_in_the_counts_and_the_reports_at_once(seeded_db, seeded_actors):
    admin = seeded_actors["admin"]
    customer_id = customer_edit.create_customer(admin, {"name": "删除甲", "city": "删除市"}, acknowledged=None)
    figures = Figures(admin, ListQuery(city="删除市"))
    before = _cached_twice(figures)
    erasure.erase_customer(admin, customer_id, confirm=str(customer_id))
    count, dashboard, segment = figures.read()
    assert (count, segment) == (before[0] - 1, before[2] - 1)  # the city is wiped
    assert dashboard == before[1]  # an erased customer still counts, anonymously


def test_an_api_upsert_shows_in_the_counts_and_the_reports_at_once(seeded_db, seeded_actors):
    manager = seeded_actors["manager"]
    figures = Figures(manager, ListQuery(city="同步市"))
    before = _cached_twice(figures)
    api = client()
    raw = new_key("shop", ["customers:read", "customers:write"])
    made = api.put(
        "/api/v1/customers/by-external-id/SYNC-1", json={"name": "同步甲", "city": "同步市"}, headers=bearer(raw)
    )
    assert made.status_code == 201
    assert figures.read() == (before[0] + 1, before[1] + 1, before[2] + 1)
    moved = api.put("/api/v1/customers/by-external-id/SYNC-1", json={"city": "别的市"}, headers=bearer(raw))
    assert moved.status_code == 200
    assert figures.read() == (before[0], before[1] + 1, before[2])
