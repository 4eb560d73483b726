"""Every statement a cleanup job runs on the customer and child tables is an index search.

At 1,000,000 customers one full scan of a child table per batch (or, through a
foreign-key cascade, per deleted customer) is what turned a purge from seconds
into minutes. This runs archive, trash and purge on the seeded database,
records each UPDATE / DELETE they execute and checks SQLite's EXPLAIN QUERY
PLAN for it: no table is SCANned. The plans are taken with the planner
statistics of the 1,000,000-customer benchmark database (sqlite_stat1 copied
below), since on 300 customers scanning a small table is the right choice.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from meiqia_app.db import get_engine
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.cleanup.criteria import Criteria
from meiqia_app.services.customers.listing import list_customers
from meiqia_app.services.customers.query import SORTS, ListQuery
from meiqia_app.services.platform import jobs


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))
    monkeypatch.setattr(cleanup, "_take_backup", lambda ctx, note: "skipped-in-this-test")


def _record_writes():
    seen: list[tuple[str, object]] = []

    def before(conn, cursor, statement, params, context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper()
        if head in ("UPDATE", "DELETE", "INSERT") and not executemany:
            seen.append((statement, params))

    return seen, before


TABLES = {
    "customer",
    "customer_order",
    "conversation",
    "message",
    "behavior_event",
    "note",
    "tag_assignment",
    "erasure_request",
    "customer_search",
}


def _target(statement: str) -> str:
    """The table an UPDATE / DELETE writes (INSERTs are single rows: jobs, audit)."""
    words = statement.split()
    if words[0].upper() == "UPDATE":
        return words[1]
    if words[0].upper() == "DELETE":
        return words[2]
    return ""


# sqlite_stat1 of /work/bench-data/1m after migration 0003 (ANALYZE), less the indexes 0005 and 0006
# dropped; ix_customer_trashed_at (only the trash since 0006) as with 100,000 customers in the trash;
# ix_customer_status_updated as migration 0011's ANALYZE customer records it; ix_customer_status_owner
# as migration 0013's ANALYZE records it (every customer in the pool).
STATS_1M = """\
behavior_event|ix_event_customer_occurred|2525629 4 1
behavior_event|ix_event_product_kind|2525629 101026 93542 1 1
behavior_event|ix_event_report_occurred|2525629 1 1
conversation|ix_conversation_category_started|840356 168072 1 1
conversation|ix_conversation_customer_started|840356 2 1
conversation|ix_conversation_report_started|840356 1 1 1 1
customer|ix_customer_email|1000000 2
customer|ix_customer_external_id|1000000 3
customer|ix_customer_lifecycle|1000000 500000 100000 1
customer|ix_customer_name_city|1000000 5 2
customer|ix_customer_phone|1000000 2
customer|ix_customer_region|1000000 500000 20000 8197 1
customer|ix_customer_report_registered|1000000 500000 1 1 1 1
customer|ix_customer_source|1000000 500000 62500 1
customer|ix_customer_status_last_active|1000000 500000 1 1
customer|ix_customer_status_last_purchase|1000000 500000 2 1
customer|ix_customer_status_name|1000000 500000 7 1
customer|ix_customer_status_orders|1000000 500000 25642 1
customer|ix_customer_status_registered|1000000 500000 1 1
customer|ix_customer_status_spent|1000000 500000 46 1
customer|ix_customer_status_updated|1000000 500000 1 1
customer|ix_customer_status_owner|1000000 500000 500000 1 1
customer|ix_customer_tier|1000000 500000 166667 1
customer|ix_customer_trashed_at|100000 100000
customer|ix_customer_visitor_id|1000000 2
customer_order|ix_order_customer_created|1908397 3 1
customer_order|ix_order_product_customer|1908397 79517 1 1
customer_order|ix_order_report_created|1908397 1 1
customer_order|ix_order_report_customer_paid|1908397 3 3 1
customer_order|ix_order_report_paid|1908397 636133 1 1 1
customer_order|sqlite_autoindex_customer_order_1|1908397 1
customer_search||1000000
erasure_request|ix_erasure_customer|837 1
erasure_request|ix_erasure_status|837 837 1
message|ix_message_conversation_sent|3070363 4 1
note|ix_note_customer_created|179780 2 1
tag_assignment|ix_tag_assignment_rule|100068 100068 25017
tag_assignment|ix_tag_assignment_tag_customer|100068 25017 1
tag_assignment|tag_assignment|100068 1 1
"""


def _plans(statements, key_length: int | None = 160, stats: str = STATS_1M) -> dict[str, list[str]]:
    plans = {}
    with get_engine().begin() as conn:
        conn.exec_driver_sql("ANALYZE")  # creates sqlite_stat1
        conn.exec_driver_sql("DELETE FROM sqlite_stat1")
        for line in stats.splitlines():
            tbl, idx, stat = line.split("|")
            conn.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", (tbl, idx or None, stat))
        conn.exec_driver_sql("ANALYZE sqlite_schema")  # load the statistics just written
        for statement, params in statements:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            plans[" ".join(statement.split())[:key_length]] = [row[-1] for row in rows]
    return plans


def test_archive_trash_and_purge_statements_use_indexes(seeded_actors):
    engine = get_engine()
    if engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN text is SQLite's")
    admin = seeded_actors["admin"]
    seen, before = _record_writes()
    event.listen(engine, "before_cursor_execute", before)
    try:
        criteria = Criteria(inactive_months=12)
        count = cleanup_preview.count_matching(admin, criteria)
        assert count > 0
        cleanup.start_action(admin, criteria, "archive", confirm=str(count))
        trash = Criteria(inactive_months=12, scope="archived")
        cleanup.start_action(admin, trash, "trash", confirm=str(cleanup_preview.count_matching(admin, trash)))
        cleanup_trash.start_purge(admin, all_trash=True, confirm=str(cleanup_trash.count_parked(admin, "trashed")))
    finally:
        event.remove(engine, "before_cursor_execute", before)
    interesting = [(s, p) for s, p in seen if _target(s) in TABLES]
    kinds = {" ".join(s.split()[:3]) for s, _ in interesting}
    assert any(k.startswith("UPDATE customer SET") for k in kinds)
    assert {
        "DELETE FROM message",
        "DELETE FROM customer_order",
        "DELETE FROM erasure_request",
        "DELETE FROM customer",
    } <= kinds
    plans = _plans(interesting)
    scans = {statement: plan for statement, plan in plans.items() if any(step.startswith("SCAN ") for step in plan)}
    assert not scans, scans


def test_list_and_trash_queries_find_the_partial_customer_indexes(seeded_actors):
    """SQLite uses a partial index only when the query states its condition (models/customer.py).

    Every page of the list (each sort, both directions, a second page through
    the keyset cursor, each status) and the trash's count and page must be
    index searches at 1M statistics, never a scan of the customer table.
    """
    engine = get_engine()
    if engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN text is SQLite's")
    admin = seeded_actors["admin"]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE customer SET status = 'trashed', trashed_at = '2026-01-01 00:00:00' "
            "WHERE id IN (SELECT id FROM customer ORDER BY id LIMIT 5)"
        )
    seen: list[tuple[str, object]] = []

    def before(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and re.search(r"\bFROM customer\b", statement):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", before)
    try:
        for status in ("active", "archived", "all", "trashed"):
            for sort in SORTS:
                for direction in ("desc", "asc"):
                    query = ListQuery(status=status, sort=sort, direction=direction)
                    page = list_customers(admin, query)
                    if page.next_cursor:
                        list_customers(admin, query, cursor=page.next_cursor)
        assert cleanup_trash.count_parked(admin, "trashed") == 5
        assert len(cleanup_trash.list_parked(admin, "trashed")) == 5
    finally:
        event.remove(engine, "before_cursor_execute", before)
    plans = _plans(seen, key_length=None)
    assert len(plans) > 40
    scans = {
        statement: plan
        for statement, plan in plans.items()
        if any(re.fullmatch(r"SCAN customer", step) for step in plan)
    }
    assert not scans, scans


def test_a_search_with_few_matches_reads_them_by_id_not_through_a_status_index(seeded_actors):
    """A search naming a few thousand customers reads them by primary key. An index whose
    statistics are missing (ix_customer_status_updated before migration 0011 ran ANALYZE
    customer) looked selective to the planner, which then walked every active customer
    through it for each search (a 2-character name at 1M: 30 -> 300 ms)."""
    engine = get_engine()
    if engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN text is SQLite's")
    senior = seeded_actors["manager"]  # data scope all: the plan without a scope condition
    with get_engine().connect() as conn:
        name = conn.exec_driver_sql("SELECT name FROM customer ORDER BY id LIMIT 1").scalar_one()
    seen: list[tuple[str, object]] = []

    def before(conn, cursor, statement, params, context, executemany):
        if "customer_fts MATCH" in statement and "ORDER BY" in statement:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", before)
    try:
        list_customers(senior, ListQuery(q=name[:2]))
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert seen
    [plan] = _plans(seen).values()
    assert "SEARCH customer USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    without = "\n".join(line for line in STATS_1M.splitlines() if "ix_customer_status_updated" not in line)
    [regressed] = _plans(seen, stats=without).values()
    assert any("ix_customer_status_updated" in step for step in regressed), regressed
