"""Cleanup: criteria → dry run → jobs (archive, trash, tag, erase, purge), restore, erasure requests."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AuditEntry, Backup, Customer, ErasureRequest, ExportJob, Job, Tag
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import criteria as cleanup_criteria
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup import retention
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.cleanup.criteria import Criteria
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.privacy import erasure
from meiqia_app.timeutil import utcnow


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _sql(query: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(query), params).all()


def _audit(action: str) -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def _job(job_id: int) -> Job:
    with read_session() as session:
        return session.get(Job, job_id)


NO_CONTACT = Criteria(no_contact=True)


def _make_no_contact(n: int = 7) -> list[int]:
    with write_session() as session:
        ids = [
            r[0]
            for r in session.connection().execute(
                text("SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT :n"), {"n": n}
            )
        ]
        session.connection().exec_driver_sql(
            f"UPDATE customer SET phone=NULL, email='' WHERE id IN ({','.join(map(str, ids))})"
        )
    return ids


def test_dry_run_count_equals_sql_and_explains_each_row(seeded_actors):
    _make_no_contact()
    expected = _sql(
        "SELECT count(*) FROM customer WHERE status='active' AND (phone IS NULL OR phone='') "
        "AND (email IS NULL OR email='')"
    )[0][0]
    result = cleanup_preview.dry_run(seeded_actors["admin"], NO_CONTACT, "archive")
    assert result.count == expected >= 7
    assert result.sample and all(row.reasons == ["no_contact"] for row in result.sample)
    assert result.tables == {"customer": expected} and result.approx_bytes > 0


def test_inactive_criterion_matches_direct_sql(seeded_actors):
    criteria = Criteria(inactive_months=12)
    now = utcnow()
    cutoff = cleanup_criteria._months_ago(now, 12)
    with get_engine().connect() as conn:
        where, _ = cleanup_criteria.criteria_conditions(conn, seeded_actors["admin"], criteria, now)
        from sqlalchemy import func
        from sqlalchemy import select as sselect

        got = conn.execute(sselect(func.count()).select_from(Customer.__table__).where(where)).scalar_one()
    rows = _sql(
        "SELECT count(*) FROM customer c WHERE c.status='active' AND c.last_active_at < :cut "
        "AND (c.last_login_at IS NULL OR c.last_login_at < :cut) AND (c.last_purchase_at IS NULL OR c.last_purchase_at < :cut) "
        "AND NOT EXISTS (SELECT 1 FROM conversation v WHERE v.customer_id=c.id AND v.started_at >= :cut)",
        cut=cutoff.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    assert got == rows[0][0] > 0


def test_invalid_contact_uses_the_validators(seeded_actors):
    with write_session() as session:
        session.connection().exec_driver_sql("UPDATE customer SET phone='12345' WHERE id=1")
        session.connection().exec_driver_sql("UPDATE customer SET email='not-an-email' WHERE id=2")
    result = cleanup_preview.dry_run(seeded_actors["admin"], Criteria(invalid_contact=True), "archive")
    ids = {row.id for row in result.sample}
    assert {1, 2} <= ids


def test_archive_job_archives_audits_and_reports_list_time(seeded_actors):
    admin = seeded_actors["admin"]
    ids = _make_no_contact()
    count = cleanup_preview.dry_run(admin, NO_CONTACT, "archive").count
    with pytest.raises(ValidationError):
        cleanup.start_action(admin, NO_CONTACT, "archive", confirm=str(count + 1))
    job_id = cleanup.start_action(admin, NO_CONTACT, "archive", confirm=str(count))
    job = _job(job_id)
    assert job.status == "done", job.error
    result = json.loads(job.result)
    assert result["processed"] == count and result["list_ms_before"] > 0 and result["list_ms_after"] > 0
    statuses = {r[0] for r in _sql(f"SELECT status FROM customer WHERE id IN ({','.join(map(str, ids))})")}
    assert statuses == {"archived"}
    entries = _audit("cleanup.archive")
    assert len(entries) == 1 and json.loads(entries[0].details)["processed"] == count
    # Restore one, then all.
    assert cleanup_trash.restore(admin, "archived", [ids[0]]) == 1
    assert _sql("SELECT status FROM customer WHERE id=:i", i=ids[0])[0][0] == "active"
    archived_now = _sql("SELECT count(*) FROM customer WHERE status='archived'")[0][0]
    assert cleanup_trash.restore(admin, "archived") == archived_now >= count - 1
    assert _sql("SELECT count(*) FROM customer WHERE status='archived'")[0][0] == 0


def test_refused_without_permission(seeded_actors):
    _make_no_contact()
    manager = seeded_actors["manager"]  # has customer.archive but not cleanup.run
    with pytest.raises(PermissionDenied):
        cleanup_preview.dry_run(manager, NO_CONTACT, "archive")
    with pytest.raises(PermissionDenied):
        cleanup.start_action(manager, NO_CONTACT, "trash", confirm="7")
    with pytest.raises(PermissionDenied):
        cleanup_trash.restore(seeded_actors["agent"], "trashed")
    assert any(e.result == "refused" for e in _audit("cleanup.dry_run"))


def test_trash_takes_a_backup_then_restore_and_purge(seeded_actors):
    admin = seeded_actors["admin"]
    ids = _make_no_contact(10)
    count = cleanup_preview.count_matching(admin, NO_CONTACT)
    job_id = cleanup.start_action(admin, NO_CONTACT, "trash", confirm=str(count))
    result = json.loads(_job(job_id).result)
    assert result["backup"] and result["processed"] == count
    with read_session() as session:
        assert session.exec(select(Backup).where(Backup.file_name == result["backup"])).first().kind == "pre_purge"
    assert json.loads(_audit("cleanup.trash")[0].details)["backup"] == result["backup"]
    assert cleanup_trash.restore(admin, "trashed", ids[:5]) == 5
    trashed = cleanup_trash.count_parked(admin, "trashed")
    assert trashed >= count - 5 and len(cleanup_trash.list_parked(admin, "trashed")) == trashed
    # The nightly purge (the trash retention policy) leaves what is inside the retention window alone.
    retention.run_scheduled("trash_purge")
    assert cleanup_trash.count_parked(admin, "trashed") == trashed
    purge_id = cleanup_trash.start_purge(admin, all_trash=True, confirm=str(trashed))
    purge = json.loads(_job(purge_id).result)
    assert purge["counts"]["customer"] == trashed and purge["backup"]
    gone = ids[5:]
    assert _sql(f"SELECT count(*) FROM customer WHERE id IN ({','.join(map(str, gone))})")[0][0] == 0
    assert _sql(f"SELECT count(*) FROM customer_order WHERE customer_id IN ({','.join(map(str, gone))})")[0][0] == 0
    # The backup taken before the purge holds them all (restored into a copy, not over the live data).
    if get_engine().dialect.name != "sqlite":
        return  # a pg_dump archive; its restore is covered by test_backup
    import sqlite3

    from meiqia_app.services.platform import backup

    copy = backup.path_of(purge["backup"]).with_name("copy.db")
    with sqlite3.connect(backup.path_of(purge["backup"])) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        back = conn.execute(
            f"SELECT count(*) FROM customer WHERE status='trashed' AND id IN ({','.join(map(str, gone))})"
        ).fetchone()[0]
    assert back == len(gone)


def _tables_referencing(conn, target: str) -> set[str]:
    """Tables with a foreign key to ``target``, read from the database's own schema."""
    if conn.dialect.name == "sqlite":
        tables = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t for t in tables for fk in conn.exec_driver_sql(f"PRAGMA foreign_key_list('{t}')") if fk[2] == target}
    return {
        r[0]
        for r in conn.execute(
            text(
                "SELECT DISTINCT cl.relname FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid "
                "WHERE c.contype = 'f' AND c.confrelid = CAST(:t AS regclass)"
            ),
            {"t": target},
        )
    }


def test_the_purge_deletes_from_every_table_that_references_a_customer(db):
    # The purge runs with SQLite's foreign-key checks off and deletes the
    # children itself: a table added later with a key to customer (or to a
    # child) must be added to the purge, or its rows would be orphaned.
    with get_engine().connect() as conn:
        assert _tables_referencing(conn, "customer") == {t.name for t in cleanup.PURGED_CHILD_TABLES}
        assert _tables_referencing(conn, "conversation") == {"message"}
        for child in {t.name for t in cleanup.PURGED_CHILD_TABLES} - {"conversation"} | {"message"}:
            assert _tables_referencing(conn, child) == set(), child


def test_a_purge_leaves_no_orphans_and_the_checks_back_on_for_other_writers(seeded_actors):
    admin = seeded_actors["admin"]
    with write_session() as session:
        session.connection().execute(
            text(
                "UPDATE customer SET status='trashed', trashed_at=:t WHERE id IN (SELECT customer_id FROM conversation "
                "WHERE id IN (SELECT conversation_id FROM message) LIMIT 20)"
            ),
            {"t": utcnow().strftime("%Y-%m-%d %H:%M:%S")},
        )
    trashed = cleanup_trash.count_parked(admin, "trashed")
    assert trashed >= 5
    cleanup_trash.start_purge(admin, all_trash=True, confirm=str(trashed))
    assert cleanup_trash.count_parked(admin, "trashed") == 0
    for child, key in (
        ("conversation", "customer_id"),
        ("customer_order", "customer_id"),
        ("behavior_event", "customer_id"),
        ("note", "customer_id"),
        ("tag_assignment", "customer_id"),
        ("customer_search", "customer_id"),
        ("erasure_request", "customer_id"),
        ("message", "conversation_id"),
    ):
        parent = "conversation" if child == "message" else "customer"
        assert _sql(f"SELECT count(*) FROM {child} WHERE {key} NOT IN (SELECT id FROM {parent})")[0][0] == 0, child
    if get_engine().dialect.name == "sqlite":
        assert _sql("PRAGMA foreign_key_check") == []
    # Every pooled connection checks foreign keys again for everyone else.
    from sqlalchemy.exc import IntegrityError

    note = "INSERT INTO note (customer_id, author_name, body, created_at, updated_at) VALUES (:c, '', 'x', :t, :t)"
    now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
    conns = [get_engine().connect() for _ in range(get_engine().pool.size())]
    try:
        for conn in conns:
            existing = conn.execute(text("SELECT min(id) FROM customer")).scalar_one()
            conn.execute(text(note), {"c": existing, "t": now})  # a valid row goes in
            with pytest.raises(IntegrityError):
                conn.execute(text(note), {"c": 999_999_999, "t": now})
            conn.rollback()
    finally:
        for conn in conns:
            conn.close()


def test_foreign_key_checks_are_off_only_for_the_session_that_asks(db):
    if get_engine().dialect.name != "sqlite":
        pytest.skip("PostgreSQL always checks foreign keys")
    with write_session(check_foreign_keys=False) as session:
        assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 0
    for _ in range(3):
        with write_session() as session:
            assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        with read_session() as session:
            assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_nightly_purge_removes_old_trash(seeded_actors):
    old = utcnow() - dt.timedelta(days=40)
    with write_session() as session:
        session.connection().execute(
            text("UPDATE customer SET status='trashed', trashed_at=:t WHERE id IN (3, 4)"),
            {"t": old.strftime("%Y-%m-%d %H:%M:%S.%f")},
        )
    retention.run_scheduled("trash_purge")
    assert _sql("SELECT count(*) FROM customer WHERE id IN (3, 4)")[0][0] == 0


def test_tag_action_assigns_the_tag(seeded_actors):
    admin = seeded_actors["admin"]
    ids = _make_no_contact(4)
    with read_session() as session:
        tag_id = session.exec(select(Tag.id)).first()
    count = cleanup_preview.count_matching(admin, NO_CONTACT)
    cleanup.start_action(admin, NO_CONTACT, "tag", confirm=str(count), tag_id=tag_id)
    have = _sql(
        f"SELECT count(*) FROM tag_assignment WHERE tag_id=:t AND customer_id IN ({','.join(map(str, ids))})", t=tag_id
    )[0][0]
    assert have == 4


def _personal(customer_id: int) -> dict:
    row = _sql("SELECT name, phone, email FROM customer WHERE id=:i", i=customer_id)[0]
    return {"name": row[0], "phone": row[1], "email": row[2]}


def test_erasure_request_and_bulk_erasure_leave_no_trace(seeded_actors, seeded_db):
    admin, agent = seeded_actors["admin"], seeded_actors["agent"]
    target = _sql(
        "SELECT c.id FROM customer c WHERE phone IS NOT NULL AND email IS NOT NULL AND "
        "EXISTS (SELECT 1 FROM note n WHERE n.customer_id=c.id) AND "
        "EXISTS (SELECT 1 FROM customer_order o WHERE o.customer_id=c.id) ORDER BY id LIMIT 1"
    )[0][0]
    values = _personal(target)
    spent_before = _sql("SELECT order_count, total_spent_cents FROM customer WHERE id=:i", i=target)[0]
    orders_before = _sql("SELECT count(*), sum(amount_cents) FROM customer_order WHERE customer_id=:i", i=target)[0]
    with pytest.raises(ValidationError):
        erasure.request_erasure(agent, target, "  ")
    erasure.request_erasure(agent, target, "customer asked by e-mail")
    # An export file made before the erasure is deleted.
    exports = seeded_db / "exports"
    exports.mkdir(exist_ok=True)
    (exports / "old.csv").write_text(f"{values['name']},{values['phone']}\n")
    with write_session() as session:
        user_id = _sql("SELECT id FROM app_user WHERE username='admin'")[0][0]
        session.add(
            ExportJob(
                requested_by_id=user_id, status="done", file_name="old.csv", created_at=utcnow() - dt.timedelta(hours=1)
            )
        )
    criteria = Criteria(erasure_pending=True, scope="all")
    dry = cleanup_preview.dry_run(admin, criteria, "erase")
    assert dry.count == 1 and dry.tables["note"] >= 1 and dry.sample[0].reasons == ["erasure_pending"]
    with pytest.raises(PermissionDenied):
        cleanup.start_action(seeded_actors["manager"], criteria, "erase", confirm="1")
    job_id = cleanup.start_action(admin, criteria, "erase", confirm="1")
    job = _job(job_id)
    assert job.status == "done", job.error
    assert json.loads(job.result)["export_files_deleted"] == ["old.csv"] and not (exports / "old.csv").exists()
    after = _personal(target)
    assert after["phone"] is None and after["email"] is None and after["name"].startswith("已删除-")
    assert _sql("SELECT order_count, total_spent_cents FROM customer WHERE id=:i", i=target)[0] == spent_before
    assert (
        _sql("SELECT count(*), sum(amount_cents) FROM customer_order WHERE customer_id=:i", i=target)[0]
        == orders_before
    )
    assert _sql("SELECT count(*) FROM note WHERE customer_id=:i", i=target)[0][0] == 0
    assert _sql("SELECT status FROM erasure_request WHERE customer_id=:i", i=target)[0][0] == "done"
    # The erased values are nowhere in the database's tables (search text and FTS included) …
    for value in values.values():
        for table, column in (
            ("customer", "name"),
            ("customer", "phone"),
            ("customer", "email"),
            ("customer_search", "text"),
            ("customer_order", "recipient_name"),
            ("customer_order", "recipient_phone"),
            ("audit_entry", "details"),
        ):
            hits = _sql(f"SELECT count(*) FROM {table} WHERE {column} LIKE :v", v=f"%{value.lower()}%")
            if table == "audit_entry":
                # entries written since the erasure request never hold the values
                hits = _sql(
                    "SELECT count(*) FROM audit_entry WHERE action LIKE 'erasure.%' AND details LIKE :v", v=f"%{value}%"
                )
            assert hits[0][0] == 0, (table, column)
        if get_engine().dialect.name == "sqlite" and len(value) >= 3:
            assert (
                _sql("SELECT count(*) FROM customer_fts WHERE customer_fts MATCH :q", q='"' + value.lower()[:20] + '"')[
                    0
                ][0]
                == 0
            )
    entries = _audit("erasure.execute")
    assert entries and str(target) in entries[0].details
    # … and not in the database file either (secure_delete + FTS merge + WAL checkpoint).
    if get_engine().dialect.name != "sqlite":
        return  # PostgreSQL reclaims dead tuples with VACUUM; the rows above are what the app reads
    get_engine().dispose()
    raw = (seeded_db / "meiqia.db").read_bytes()
    assert values["phone"].encode() not in raw and values["email"].encode() not in raw


def test_a_search_typed_into_an_export_or_bulk_job_keeps_no_trace_after_erasure(seeded_actors):
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.selection import Selection
    from meiqia_app.services.exports import request as export_request
    from meiqia_app.services.tags import catalog as tags

    admin = seeded_actors["admin"]
    target = _sql(
        "SELECT id FROM customer WHERE status='active' AND phone IS NOT NULL AND email IS NOT NULL ORDER BY id LIMIT 1"
    )[0][0]
    values = _personal(target)
    other = _sql(
        "SELECT phone FROM customer WHERE status='active' AND phone IS NOT NULL AND id <> :i ORDER BY id DESC LIMIT 1",
        i=target,
    )[0][0]
    request = {
        "scope": {"kind": "query", "query": {"q": values["phone"]}},
        "fields": ["id", "name"],
        "format": "csv",
        "sort_field": "id",
        "sort_dir": "asc",
    }
    mine = export_request.request_export(admin, request, start=False).id
    unrelated = export_request.request_export(
        admin, {**request, "scope": {"kind": "query", "query": {"q": other}}}, start=False
    ).id
    tag_id = _sql("SELECT id FROM tag ORDER BY id LIMIT 1")[0][0]
    tags.start_bulk_tag_job(admin, Selection.of_query(ListQuery.from_dict({"q": values["email"]})), tag_id, "add")
    # What the audit chain received is masked from the start: it can never be erased later.
    entries = _audit("export.request") + _audit("tag.bulk_add")
    assert len(entries) == 3
    details = " ".join(e.details for e in entries)
    assert values["phone"][:3] + "******" + values["phone"][-2:] in details
    for entry in entries:
        assert values["phone"] not in entry.details and values["email"] not in entry.details, (
            entry.action,
            entry.details,
        )

    erasure.erase_customer(admin, target, confirm=str(target))

    scopes = dict(_sql("SELECT id, scope FROM export_job"))
    assert values["phone"] not in scopes[mine] and "[已删除]" in scopes[mine]
    assert json.loads(scopes[mine])["selection"]["query"]["q"] == "[已删除]"
    assert other in scopes[unrelated]  # someone else's search is left alone
    for value in values.values():
        for table, column in (("export_job", "scope"), ("audit_entry", "details"), ("job", "params")):
            assert _sql(f"SELECT count(*) FROM {table} WHERE {column} LIKE :v", v=f"%{value}%")[0][0] == 0, (
                table,
                value,
            )


def test_duplicate_request_is_refused(seeded_actors):
    erasure.request_erasure(seeded_actors["agent"], 5, "asked")
    from meiqia_app.services.errors import Conflict

    with pytest.raises(Conflict):
        erasure.request_erasure(seeded_actors["agent"], 5, "again")
    with pytest.raises(PermissionDenied):
        erasure.request_erasure(seeded_actors["analyst"], 6, "asked")
    with read_session() as session:
        assert len(session.exec(select(ErasureRequest)).all()) == 1


def test_criteria_from_untrusted_input():
    with pytest.raises(ValidationError):
        Criteria.from_dict({})
    with pytest.raises(ValidationError):
        Criteria.from_dict({"inactive_months": 7})
    with pytest.raises(ValidationError):
        Criteria.from_dict({"no_contact": True, "scope": "trashed"})
    assert Criteria.from_dict({"no_contact": True, "duplicates": True}).chosen() == ["no_contact", "duplicate"]


def test_duplicates_and_saved_view_criteria(seeded_actors):
    admin = seeded_actors["admin"]
    with write_session() as session:
        session.connection().exec_driver_sql(
            "UPDATE customer SET email=(SELECT email FROM customer WHERE id=10) WHERE id=11"
        )
    dry = cleanup_preview.dry_run(admin, Criteria(duplicates=True), "archive")
    assert 11 in {r.id for r in dry.sample} or dry.count >= 1
    from meiqia_app.services.customers.query import ListQuery
    from meiqia_app.services.customers.saved_views import save_view

    view = save_view(admin, "gold", ListQuery(tiers=("gold",)))
    expected = _sql("SELECT count(*) FROM customer WHERE status='active' AND membership_tier='gold'")[0][0]
    assert cleanup_preview.dry_run(admin, Criteria(view_id=view.id), "archive").count == expected


def test_list_selection_archive_needs_only_the_archive_permission(seeded_actors):
    """The customer list's bulk archive: a manager (no cleanup.run) archives ticked rows;
    an agent (no customer.archive) is refused and nothing changes."""
    from meiqia_app.services.customers.selection import Selection
    from meiqia_app.services.errors import PermissionDenied
    from meiqia_app.services.platform import jobs

    ids = [r[0] for r in _sql("SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 3")]
    criteria = Criteria.from_dict({"selection": Selection.of_ids(ids, status="active").to_dict()})
    assert criteria.list_selection_only and cleanup_preview.count_matching(seeded_actors["manager"], criteria) == 3
    with pytest.raises(PermissionDenied):
        cleanup.start_action(seeded_actors["agent"], criteria, "archive", "3")
    job_id = cleanup.start_action(seeded_actors["manager"], criteria, "archive", "3")
    import time

    deadline = time.monotonic() + 20
    while jobs.job_view(seeded_actors["manager"], job_id).status in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert jobs.job_view(seeded_actors["manager"], job_id).status == "done"
    statuses = {r[0] for r in _sql(f"SELECT status FROM customer WHERE id IN ({','.join(map(str, ids))})")}
    assert statuses == {"archived"}
    # The wizard's own criteria still need cleanup.run.
    with pytest.raises(PermissionDenied):
        cleanup_preview.dry_run(seeded_actors["manager"], NO_CONTACT, "archive")


@pytest.mark.parametrize(
    "criteria",
    [
        Criteria(duplicates=True),
        Criteria(erasure_pending=True),
        Criteria(invalid_contact=True),
        Criteria(inactive_months=6, no_contact=True, match="any"),
        Criteria(inactive_months=12, duplicates=True, match="all"),
    ],
    ids=["duplicates", "erasure_pending", "invalid_contact", "inactive_or_no_contact", "inactive_and_duplicate"],
)
def test_set_based_batches_change_exactly_the_matching_customers(seeded_actors, monkeypatch, criteria):
    """The jobs' UPDATE runs the criteria (correlated sub-selects on the customer table included)
    over id windows; it must change exactly the customers the dry run's SELECT matched."""
    admin = seeded_actors["admin"]
    with write_session() as session:
        conn = session.connection()
        conn.exec_driver_sql("UPDATE customer SET email=(SELECT email FROM customer WHERE id=10) WHERE id IN (11, 40)")
        conn.exec_driver_sql("UPDATE customer SET phone=(SELECT phone FROM customer WHERE id=20) WHERE id=90")
        conn.exec_driver_sql("UPDATE customer SET phone='12', email='not-an-email' WHERE id IN (30, 31)")
        conn.exec_driver_sql("UPDATE customer SET phone=NULL, email=NULL WHERE id IN (50, 51)")
    erasure.request_erasure(admin, 60, "asked")
    erasure.request_erasure(admin, 11, "asked")
    from meiqia_app.services.cleanup.criteria import criteria_conditions

    with get_engine().connect() as conn:
        where, _ = criteria_conditions(conn, admin, criteria)
        expected = set(conn.execute(select(Customer.id).where(where)).scalars())
    assert expected
    monkeypatch.setattr(cleanup, "BULK_BATCH", 7)  # several windows
    job_id = cleanup.start_action(admin, criteria, "archive", confirm=str(len(expected)))
    assert _job(job_id).status == "done"
    archived = {
        r[0]
        for r in _sql(
            "SELECT id FROM customer WHERE status='archived' AND archived_at IS NOT NULL AND updated_by_name='admin'"
        )
    }
    assert archived == expected
