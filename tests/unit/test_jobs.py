"""Background jobs: progress and checkpoint in the database, cancel, resume, failure."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from meiqia_app.db import write_session
from meiqia_app.models import Job
from meiqia_app.services import jobs
from meiqia_app.services.errors import NotFound
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
