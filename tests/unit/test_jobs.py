"""Background jobs: progress and checkpoint in the database, cancel, resume, failure."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from meiqia_app.db import read_session, write_session
from meiqia_app.models import Job
from meiqia_app.services.errors import NotFound
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import utcnow

SEEN: list[int] = []


def _counting_worker(ctx: jobs.JobContext) -> dict:
    start = ctx.checkpoint.get("next", 0)
    for batch in range(start, 5):
        SEEN.append(batch)
        if ctx.params.get("fail_at") == batch:
            raise RuntimeError("disk full")
        ctx.progress(batch + 1, {"next": batch + 1}, total=5)
    return {"batches": 5 - start}


jobs.register_worker("test.count", _counting_worker)


@pytest.fixture(autouse=True)
def _clear():
    SEEN.clear()


def test_job_runs_to_done_with_progress_and_result(actors):
    job_id = jobs.create_job(actors["admin"], "test.count", {})
    view = jobs.run_job(job_id)
    assert (view.status, view.processed, view.total, view.percent, view.result) == ("done", 5, 5, 100, {"batches": 5})
    assert SEEN == [0, 1, 2, 3, 4]


def test_interrupted_job_resumes_from_its_checkpoint(actors):
    job_id = jobs.create_job(actors["admin"], "test.count", {})
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.processed, job.checkpoint = "running", 3, json.dumps({"next": 3})
        job.heartbeat_at = utcnow() - dt.timedelta(minutes=10)
        session.add(job)
        session.commit()
    threads_started = jobs.resume_interrupted_jobs()
    assert threads_started == [job_id]
    import time

    deadline = time.monotonic() + 10
    while jobs.job_view(actors["admin"], job_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.job_view(actors["admin"], job_id).result == {"batches": 2}
    assert SEEN == [3, 4]


def test_failed_job_records_the_error(actors):
    job_id = jobs.create_job(actors["admin"], "test.count", {"fail_at": 2})
    view = jobs.run_job(job_id)
    assert view.status == "failed" and "disk full" in view.error and view.processed == 2


def test_cancel_stops_a_job_after_the_current_batch(actors):
    def cancelling_worker(ctx):
        jobs.request_cancel(actors["admin"], ctx.job_id)
        ctx.progress(1, {"next": 1})
        raise AssertionError("progress must raise once cancel was requested")

    jobs.register_worker("test.cancel", cancelling_worker)
    view = jobs.run_job(jobs.create_job(actors["admin"], "test.cancel", {}))
    assert view.status == "cancelled" and view.processed == 1


def test_a_job_is_visible_only_to_its_creator_and_admins(actors):
    job_id = jobs.create_job(actors["agent"], "test.count", {})
    assert jobs.job_view(actors["agent"], job_id).status == "queued"
    assert jobs.job_view(actors["admin"], job_id).id == job_id
    with pytest.raises(NotFound):
        jobs.job_view(actors["manager"], job_id)
    with pytest.raises(NotFound):
        jobs.request_cancel(actors["manager"], job_id)


# --- what the runner gives every kind of job ---------------------------------------------------

SECRET = "only-in-memory-7f3a"


def _memory_worker(ctx: jobs.JobContext) -> dict:
    SEEN.append(ctx.memory.get("secret", "none"))
    ctx.progress(1, {"step": 1})
    if "secret" not in ctx.memory:
        raise jobs.JobFailed("job.error.no_such_task", name="lost")
    return {"used": True}


jobs.register_worker("test.memory", _memory_worker)


def test_memory_reaches_the_worker_only_and_a_resumed_run_has_none(actors, caplog):
    caplog.set_level("DEBUG")
    job_id = jobs.create_job(actors["admin"], "test.memory", {"n": 1})
    jobs.start_in_background(job_id, memory={"secret": SECRET})
    assert jobs.wait([job_id], 30)
    with read_session() as session:
        row = session.get(Job, job_id)
    assert (row.status, SEEN) == ("done", [SECRET])
    assert SECRET not in repr(row.model_dump()) and SECRET not in caplog.text

    # The same job resumed after a restart: its memory is gone; the worker's typed failure is kept as a key.
    with write_session() as session:
        row = session.get(Job, job_id)
        row.status, row.owner, row.heartbeat_at = "running", "gone|b|n|1|2", utcnow() - dt.timedelta(hours=1)
        session.add(row)
    view = jobs.run_job(job_id)
    assert SEEN == [SECRET, "none"]
    assert (view.status, view.error, view.error_params) == ("failed", "job.error.no_such_task", {"name": "lost"})


def test_a_cancelled_job_keeps_what_it_reported_as_done(actors):
    def stops(ctx):
        jobs.request_cancel(actors["admin"], ctx.job_id)
        try:
            ctx.progress(3)
        except jobs.JobCancelled:
            raise jobs.JobCancelled({"inserted": 3}) from None

    jobs.register_worker("test.stops", stops)
    view = jobs.run_job(jobs.create_job(actors["admin"], "test.stops", {}))
    assert (view.status, view.result, view.processed) == ("cancelled", {"inserted": 3}, 3)


def test_work_one_run_does_for_everybody_is_started_once(actors):
    import threading

    gate = threading.Event()

    def waits(ctx):
        gate.wait(10)
        return {}

    jobs.register_worker("test.once", waits)
    first, started = jobs.start_unless_active(actors["admin"], "test.once", {})
    again, started_again = jobs.start_unless_active(actors["admin"], "test.once", {})
    gate.set()
    assert jobs.wait([first], 10)
    assert (started, started_again, again) == (True, False, first)
    later, started_later = jobs.start_unless_active(actors["admin"], "test.once", {})  # the first one ended
    assert started_later and later != first
    assert jobs.wait([later], 10)
