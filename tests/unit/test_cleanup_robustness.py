"""A bulk archive killed with SIGKILL mid-job: nobody is half-moved and the job resumes to completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, reset_engine
from meiqia_app.models import AuditEntry, Job
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup.criteria import Criteria
from meiqia_app.services.platform import jobs

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, time
    from meiqia_app.services.cleanup import actions as cleanup
    from meiqia_app.services.platform import jobs
    cleanup.BATCH = cleanup.BULK_BATCH = 10
    original = jobs.JobContext.progress
    def slow(self, *args, **kwargs):
        original(self, *args, **kwargs)
        time.sleep(0.3)
    jobs.JobContext.progress = slow
    jobs.run_job(int(sys.argv[1]))
""")


def _rows(sql: str):
    with get_engine().connect() as conn:
        return conn.execute(text(sql)).all()


def test_killed_archive_job_resumes_without_half_moved_customers(seeded_actors, seeded_db):
    admin = seeded_actors["admin"]
    with get_engine().begin() as conn:
        conn.exec_driver_sql(
            "UPDATE customer SET phone=NULL, email=NULL WHERE id IN "
            "(SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 120)"
        )
    criteria = Criteria(no_contact=True)
    total = cleanup_preview.count_matching(admin, criteria)
    ids = [
        r[0]
        for r in _rows(
            "SELECT id FROM customer WHERE status='active' AND (phone IS NULL OR phone='') "
            "AND (email IS NULL OR email='')"
        )
    ]
    job_id = jobs.create_job(
        admin,
        "cleanup.archive",
        {
            "criteria": criteria.to_dict(),
            "action": "archive",
            "tag_id": 0,
            "expected": total,
            "started_at": "2026-11-23T00:00:00+00:00",
        },
        total=total,
    )
    reset_engine()
    env = {**os.environ, "MEIQIA_DATA_DIR": str(seeded_db), "MEIQIA_SCHEDULER": "off"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(job_id)], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with read_session() as session:
                job = session.get(Job, job_id)
                if job.processed >= 30:
                    break
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    reset_engine()
    with read_session() as session:
        job = session.get(Job, job_id)
        assert job.status == "running" and 0 < job.processed < total
        checkpoint = json.loads(job.checkpoint)
    id_list = ",".join(map(str, ids))
    # No customer is half-moved: status and archived_at agree, and exactly the
    # customers up to the committed checkpoint are archived.
    assert (
        _rows(
            f"SELECT count(*) FROM customer WHERE id IN ({id_list}) AND "
            "((status='archived') != (archived_at IS NOT NULL))"
        )[0][0]
        == 0
    )
    archived = {r[0] for r in _rows(f"SELECT id FROM customer WHERE id IN ({id_list}) AND status='archived'")}
    assert archived == {i for i in ids if i <= checkpoint["after_id"]}
    assert len(archived) == job.processed
    # Resume (what the app does at start for a job whose heartbeat stopped).
    view = jobs.run_job(job_id)
    assert view.status == "done" and view.result["processed"] == total
    assert _rows(f"SELECT count(*) FROM customer WHERE id IN ({id_list}) AND status='archived'")[0][0] == total
    with read_session() as session:
        assert len(session.exec(select(AuditEntry).where(AuditEntry.action == "cleanup.archive")).all()) == 1


def test_killed_purge_job_leaves_no_half_deleted_customer_and_resumes(seeded_actors, seeded_db):
    """Purge (children first, then the customer, one transaction per batch) killed mid-job:
    every customer is either gone with all its rows or still in the trash with all of them."""
    admin = seeded_actors["admin"]
    with get_engine().begin() as conn:
        conn.exec_driver_sql(
            "UPDATE customer SET status='trashed', trashed_at='2026-11-01 00:00:00.000000' "
            "WHERE id IN (SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 120)"
        )
    ids = [r[0] for r in _rows("SELECT id FROM customer WHERE status='trashed' ORDER BY id")]
    children = "SELECT customer_id, count(*) FROM {} WHERE customer_id IN ({}) GROUP BY customer_id"
    id_list = ",".join(map(str, ids))
    before = {
        table: dict(_rows(children.format(table, id_list)))
        for table in ("customer_order", "conversation", "behavior_event", "note")
    }
    job_id = jobs.create_job(
        admin,
        "cleanup.purge",
        {"all": True, "cutoff": "2026-11-23T00:00:00+00:00", "started_at": "2026-11-23T00:00:00+00:00"},
        total=len(ids),
    )
    reset_engine()
    env = {**os.environ, "MEIQIA_DATA_DIR": str(seeded_db), "MEIQIA_SCHEDULER": "off"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(job_id)], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with read_session() as session:
                if session.get(Job, job_id).processed >= 30:
                    break
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    reset_engine()
    with read_session() as session:
        job = session.get(Job, job_id)
        assert job.status == "running" and 0 < job.processed < len(ids)
        checkpoint = json.loads(job.checkpoint)
    assert checkpoint["backup"]  # taken before anything was deleted
    left = {r[0] for r in _rows(f"SELECT id FROM customer WHERE id IN ({id_list})")}
    assert left == {i for i in ids if i > checkpoint["after_id"]}
    for table, counts in before.items():
        now = dict(_rows(children.format(table, id_list)))
        assert now == {i: n for i, n in counts.items() if i in left}, table
    view = jobs.run_job(job_id)
    assert view.status == "done" and view.result["processed"] == len(ids)
    assert _rows(f"SELECT count(*) FROM customer WHERE id IN ({id_list})")[0][0] == 0
    assert _rows(f"SELECT count(*) FROM customer_order WHERE customer_id IN ({id_list})")[0][0] == 0
