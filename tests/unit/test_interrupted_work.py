"""Work a killed process left behind: at start its jobs resume at once, its exports fail
cleanly and their partial files go; what a live worker runs is left alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import AuditEntry, ExportJob, Job
from meiqia_app.services.platform import jobs, process_owner, startup
from meiqia_app.timeutil import utcnow

ROOT = Path(__file__).resolve().parents[2]
RUNS: list[int] = []


def _slow_counter(ctx: jobs.JobContext) -> dict:
    RUNS.append(ctx.job_id)
    for batch in range(ctx.checkpoint.get("next", 0), 3):
        time.sleep(0.05)
        ctx.progress(batch + 1, {"next": batch + 1}, total=3)
    return {"ok": True}


jobs.register_worker("test.slow", _slow_counter)


@pytest.fixture(autouse=True)
def _clear():
    RUNS.clear()


def _owner_of_a_process(keep_running: bool = False):
    """The owner string of another process: one that has exited (dead), or one still running."""
    code = (
        "import sys; from meiqia_app.services.platform.process_owner import current_owner; "
        "print(current_owner(), flush=True); sys.stdin.read() if len(sys.argv) > 1 else None"
    )
    args = [sys.executable, "-c", code] + (["wait"] if keep_running else [])
    child = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    owner = child.stdout.readline().strip()
    if not keep_running:
        child.wait(timeout=30)
    return owner, child


def _running_job(actor, owner: str | None, heartbeat_age: float, kind: str = "test.slow") -> int:
    job_id = jobs.create_job(actor, kind, {})
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.owner, job.processed = "running", owner, 1
        job.checkpoint = json.dumps({"next": 1})
        job.heartbeat_at = utcnow() - dt.timedelta(seconds=heartbeat_age)
        session.add(job)
    return job_id


def _wait_finished(job_id: int) -> Job:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with read_session() as session:
            job = session.get(Job, job_id)
            if job.status not in jobs.ACTIVE:
                return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_job_of_a_killed_process_resumes_at_start_at_once(actors):
    dead, _child = _owner_of_a_process()
    job_id = _running_job(actors["admin"], dead, heartbeat_age=1)  # killed a second ago: heartbeat still fresh
    recovered = startup.recover_interrupted_work()
    assert recovered.resumed_jobs == [job_id]
    job = _wait_finished(job_id)
    assert (job.status, job.processed, json.loads(job.result)) == ("done", 3, {"ok": True})
    assert job.owner == process_owner.current_owner()
    assert RUNS == [job_id]


def test_a_job_another_live_worker_runs_is_left_alone(actors):
    alive, child = _owner_of_a_process(keep_running=True)
    try:
        job_id = _running_job(actors["admin"], alive, heartbeat_age=600)  # even a silent one: its process lives
        assert startup.recover_interrupted_work().resumed_jobs == []
        assert jobs.run_job(job_id).status == "running"  # nor does a direct call take it
        assert RUNS == []
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    # Once that process is gone, the next start takes the job over.
    assert startup.recover_interrupted_work().resumed_jobs == [job_id]
    assert _wait_finished(job_id).status == "done"


def test_a_job_of_another_machine_waits_for_a_stale_heartbeat(actors):
    elsewhere = "other-host|boot|pid:[1]|4242|99"
    stale = get_settings().job_stale_seconds
    busy = _running_job(actors["admin"], elsewhere, heartbeat_age=stale / 2)
    silent = _running_job(actors["admin"], elsewhere, heartbeat_age=stale * 1.5)
    assert startup.recover_interrupted_work().resumed_jobs == [silent]
    assert _wait_finished(silent).status == "done"
    with read_session() as session:
        assert session.get(Job, busy).status == "running"


def test_an_orphaned_job_without_a_worker_fails_cleanly(actors):
    dead, _child = _owner_of_a_process()
    job_id = _running_job(actors["admin"], dead, heartbeat_age=1)
    with write_session() as session:
        job = session.get(Job, job_id)
        job.kind = "test.retired"
        session.add(job)
    assert startup.recover_interrupted_work().resumed_jobs == []
    with read_session() as session:
        job = session.get(Job, job_id)
    assert job.status == "failed" and "interrupted" in job.error and job.finished_at is not None


def test_two_workers_taking_over_the_same_orphan_run_it_once(actors):
    dead, _child = _owner_of_a_process()
    job_id = _running_job(actors["admin"], dead, heartbeat_age=1)
    barrier = threading.Barrier(2)
    views = []

    def worker():
        barrier.wait()
        views.append(jobs.run_job(job_id))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert RUNS == [job_id]
    assert _wait_finished(job_id).status == "done"


def test_the_heartbeat_thread_keeps_a_busy_job_fresh(actors):
    job_id = _running_job(actors["admin"], process_owner.current_owner(), heartbeat_age=3600)
    other = _running_job(actors["admin"], "other-host|b|n|1|2", heartbeat_age=3600)
    process_owner.HEARTBEATS.track(Job, job_id)
    process_owner.HEARTBEATS.track(Job, other)  # not ours: never touched
    try:
        process_owner.HEARTBEATS.beat()
    finally:
        process_owner.HEARTBEATS.untrack(Job, job_id)
        process_owner.HEARTBEATS.untrack(Job, other)
    with read_session() as session:
        fresh, stale = session.get(Job, job_id), session.get(Job, other)
    assert utcnow() - fresh.heartbeat_at.replace(tzinfo=dt.UTC) < dt.timedelta(seconds=30)
    assert utcnow() - stale.heartbeat_at.replace(tzinfo=dt.UTC) > dt.timedelta(minutes=59)


# --- exports --------------------------------------------------------------------------------------


def _export(actor, status: str, owner: str | None, heartbeat_age: float, file_name: str | None = None) -> int:
    with write_session() as session:
        job = ExportJob(
            requested_by_id=actor.user_id,
            requested_by_name=actor.username,
            status=status,
            owner=owner,
            heartbeat_at=utcnow() - dt.timedelta(seconds=heartbeat_age),
            file_name=file_name,
        )
        session.add(job)
        session.flush()
        return job.id


def test_an_export_of_a_killed_process_fails_at_once_and_its_files_go(actors):
    manager = actors["manager"]
    dead, _child = _owner_of_a_process()
    alive = process_owner.current_owner()
    killed = _export(manager, "running", dead, heartbeat_age=1)
    live = _export(manager, "running", alive, heartbeat_age=1)
    done = _export(manager, "done", None, heartbeat_age=1)
    done_name = f"export-{done}-{'c' * 16}.csv"
    with write_session() as session:
        row = session.get(ExportJob, done)
        row.file_name = done_name
        session.add(row)
    folder = get_settings().exports_dir
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "killed_part": folder / f".export-{killed}-{'a' * 16}.part.csv",
        "killed_final": folder / f"export-{killed}-{'a' * 16}.zip",  # killed between writing and recording
        "live_part": folder / f".export-{live}-{'b' * 16}.part.xlsx",
        "done_file": folder / done_name,
        "old_report": folder / f".report-{'d' * 16}.part.pdf",
        "new_report": folder / f".report-{'e' * 16}.part.pdf",
        "other": folder / "notes.txt",
    }
    for path in files.values():
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(files["old_report"], (hour_ago, hour_ago))

    recovered = startup.recover_interrupted_work()

    assert recovered.failed_exports == 1
    with read_session() as session:
        assert session.get(ExportJob, killed).status == "failed"
        assert session.get(ExportJob, killed).error == "export.error.interrupted"
        assert session.get(ExportJob, live).status == "running"
        audits = session.exec(select(AuditEntry).where(AuditEntry.action == "export.failed")).all()
    assert [a.target_id for a in audits] == [str(killed)]
    gone = {name for name, path in files.items() if not path.exists()}
    assert gone == {"killed_part", "killed_final", "old_report"}
    assert sorted(recovered.removed_files) == sorted(files[name].name for name in gone)


# --- exports run by the job runner: the password stays in memory ------------------------------

PASSWORD = "Pa55-not-kept-anywhere!"


def _export_request(fields=("id", "name", "phone")) -> dict:
    return {"scope": {"kind": "query", "query": {"sources": ["wechat"]}}, "fields": list(fields), "format": "csv"}


def _every_row_as_text() -> str:
    """Every row of every table, as text: where a stored password would show."""
    from sqlmodel import SQLModel

    from meiqia_app.db import get_engine

    chunks = []
    with get_engine().connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def test_a_protected_exports_password_is_in_no_table_and_no_log(seeded_actors, caplog):
    from meiqia_app.services.exports import info as export_info
    from meiqia_app.services.exports import request as export_request
    from meiqia_app.services.exports import run as export_run

    caplog.set_level("DEBUG")
    manager = seeded_actors["manager"]
    view = export_request.request_export(manager, _export_request(), password=PASSWORD)  # started by the runner
    assert export_run.wait_for_export(view.id, 60)
    with read_session() as session:
        row = session.get(ExportJob, view.id)
        job = session.exec(select(Job).where(Job.kind == export_info.JOB_KIND)).one()
    assert (row.status, row.protected, job.status) == ("done", True, "done"), (row.error, job.error)
    assert json.loads(job.params) == {"export_id": view.id}  # the export's id, nothing else
    assert row.file_name.endswith(".zip")
    stored = _every_row_as_text()
    assert "export.file" in stored and str(row.file_sha256) in stored  # the scan sees the job and export rows
    assert PASSWORD not in stored
    assert PASSWORD not in caplog.text and PASSWORD not in " ".join(t.name for t in threading.enumerate())


def _interrupted_export(actor, protected: bool, job_status: str) -> tuple[int, int, Path]:
    """An export a killed process was writing (or had queued): its row, its runner job, its partial file."""
    from meiqia_app.services.exports import info as export_info
    from meiqia_app.services.exports import request as export_request

    dead, _child = _owner_of_a_process()
    view = export_request.request_export(
        actor, _export_request(("id", "name")), password=PASSWORD if protected else "", start=False
    )
    requester = actor
    job_id = jobs.create_job(requester, export_info.JOB_KIND, {"export_id": view.id})
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.owner, job.heartbeat_at = job_status, dead if job_status == "running" else None, utcnow()
        session.add(job)
        row = session.get(ExportJob, view.id)
        if job_status == "running":
            row.status, row.owner, row.heartbeat_at = "running", dead, utcnow()
        session.add(row)
    folder = get_settings().exports_dir
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".export-{view.id}-{'f' * 16}.part.csv"
    partial.write_text("id,name\n1,plain text the password never protected\n")
    return view.id, job_id, partial


@pytest.mark.parametrize("job_status", ["running", "queued"])
def test_a_protected_export_interrupted_by_a_restart_fails_saying_the_password_is_not_kept(actors, job_status):
    """Killed mid-file (or before its thread started): the restart has no password, so the
    export fails with that message, is audited, and leaves no file (never an unprotected one)."""
    export_id, job_id, partial = _interrupted_export(actors["manager"], protected=True, job_status=job_status)

    recovered = startup.recover_interrupted_work()
    assert job_id in recovered.resumed_jobs
    job = _wait_finished(job_id)

    with read_session() as session:
        row = session.get(ExportJob, export_id)
        audits = session.exec(
            select(AuditEntry).where(AuditEntry.action == "export.failed", AuditEntry.target_id == str(export_id))
        ).all()
    assert (row.status, row.error, row.file_name) == ("failed", "export.error.password_not_kept", None)
    assert (job.status, job.error) == ("failed", "export.error.password_not_kept")
    assert len(audits) == 1
    assert not partial.exists()
    assert list(get_settings().exports_dir.glob(f"*export-{export_id}-*")) == []


def test_an_unprotected_export_interrupted_by_a_restart_fails_as_interrupted(actors):
    export_id, job_id, partial = _interrupted_export(actors["manager"], protected=False, job_status="running")
    startup.recover_interrupted_work()
    job = _wait_finished(job_id)
    with read_session() as session:
        row = session.get(ExportJob, export_id)
    assert (row.status, row.error, job.status, job.error) == (
        "failed",
        "export.error.interrupted",
        "failed",
        "export.error.interrupted",
    )
    assert not partial.exists()
