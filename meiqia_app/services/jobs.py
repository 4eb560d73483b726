"""Background jobs with their progress and checkpoint in the database.

Bulk tagging, rule runs, cleanup actions and big exports take seconds to
minutes at 1,000,000 customers. They run in a worker thread of the app
process; the ``job`` row holds status, progress, a JSON checkpoint (e.g. the
last customer id of the last committed batch) and the result, so any worker
can show the progress bar and a restarted process resumes where the last
committed batch ended (``resume_interrupted_jobs``).

A worker is a function ``work(ctx: JobContext) -> dict``; it commits its own
batches and calls ``ctx.progress(processed, checkpoint)`` after each one.
``ctx.progress`` raises ``JobCancelled`` once someone asked to cancel.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable

from sqlalchemy import func, update
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import Job, Role, User
from meiqia_app.services.errors import NotFound
from meiqia_app.services.process_owner import HEARTBEATS, current_owner, is_orphaned
from meiqia_app.services.rbac import SYSTEM_ACTOR, Actor
from meiqia_app.timeutil import utcnow

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")

Worker = Callable[["JobContext"], dict]
_WORKERS: dict[str, Worker] = {}


class JobCancelled(Exception):
    """Raised inside a worker when a cancel was requested; the job ends as cancelled."""


def register_worker(kind: str, work: Worker) -> None:
    """Modules register their workers at import, so a resumed job finds its code."""
    _WORKERS[kind] = work


@dataclasses.dataclass
class JobContext:
    job_id: int
    kind: str
    params: dict
    checkpoint: dict
    actor: Actor
    processed: int = 0

    def progress(self, processed: int, checkpoint: dict | None = None, total: int | None = None) -> None:
        """Record progress after a committed batch; raise JobCancelled if asked to stop."""
        self.processed = processed
        if checkpoint is not None:
            self.checkpoint = checkpoint
        with write_session() as session:
            job = session.get(Job, self.job_id)
            job.processed = processed
            if total is not None:
                job.total = total
            if checkpoint is not None:
                job.checkpoint = json.dumps(checkpoint)
            job.heartbeat_at = utcnow()
            cancel = job.cancel_requested
            session.add(job)
            session.commit()
        if cancel:
            raise JobCancelled()


@dataclasses.dataclass(frozen=True)
class JobView:
    """What a page shows of a job (a DTO: no table model reaches the browser)."""

    id: int
    kind: str
    status: str
    total: int
    processed: int
    percent: int
    result: dict
    error: str
    created_by_name: str
    created_at: str
    finished_at: str

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _view(job: Job) -> JobView:
    percent = 100 if job.status == "done" else (min(99, int(job.processed * 100 / job.total)) if job.total else 0)
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        total=job.total,
        processed=job.processed,
        percent=percent,
        result=json.loads(job.result or "{}"),
        error=job.error or "",
        created_by_name=job.created_by_name,
        created_at=job.created_at.isoformat() if job.created_at else "",
        finished_at=job.finished_at.isoformat() if job.finished_at else "",
    )


def create_job(actor: Actor, kind: str, params: dict, total: int = 0) -> int:
    """Queue a job. The caller has already checked the permission for what it does."""
    if kind not in _WORKERS:
        raise ValueError(f"no worker registered for job kind {kind!r}")
    with write_session() as session:
        job = Job(
            kind=kind,
            params=json.dumps(params, ensure_ascii=False, default=str),
            total=total,
            created_by_id=actor.user_id,
            created_by_name=actor.username,
        )
        session.add(job)
        session.commit()
        return job.id


def _actor_of(job: Job) -> Actor:
    """The job runs with its creator's current rights (revoked rights stop it)."""
    if job.created_by_id is None:
        return SYSTEM_ACTOR
    from meiqia_app.services.auth import actor_for

    with read_session() as session:
        row = session.exec(
            select(User, Role).join(Role, Role.id == User.role_id).where(User.id == job.created_by_id)
        ).first()
    if row is None or not row[0].is_active:
        return Actor(
            user_id=job.created_by_id,
            username=job.created_by_name,
            display_name="",
            role_name="",
            permissions=frozenset(),
        )
    return actor_for(row[0], row[1])


def _claim(job_id: int, status: str, owner: str | None) -> bool:
    """Make this process the job's owner, if nobody changed it since it was read.

    One UPDATE conditioned on the status and owner seen: of two workers
    taking over the same orphaned job at start, exactly one gets it.
    """
    columns = Job.__table__.c
    now = utcnow()
    same_owner = columns.owner.is_(None) if owner is None else columns.owner == owner
    with write_session() as session:
        result = session.execute(
            update(Job.__table__)
            .where(columns.id == job_id, columns.status == status, same_owner)
            .values(
                status="running",
                owner=current_owner(),
                heartbeat_at=now,
                started_at=func.coalesce(columns.started_at, now),
            )
        )
        return result.rowcount == 1


def run_job(job_id: int) -> JobView:
    """Run (or resume) a job in this thread until it ends; returns its final view.

    A queued job is started; a running one is taken over only when its
    process is gone (``process_owner.is_orphaned``); one a live process runs
    is left to it (the current view is returned).
    """
    with read_session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound()
        if job.status not in ACTIVE or (job.status == "running" and not is_orphaned(job.owner, job.heartbeat_at)):
            return _view(job)
        seen_status, seen_owner = job.status, job.owner
    if not _claim(job_id, seen_status, seen_owner):
        with read_session() as session:
            return _view(session.get(Job, job_id))
    with read_session() as session:
        job = session.get(Job, job_id)
        context = JobContext(
            job_id=job.id,
            kind=job.kind,
            params=json.loads(job.params or "{}"),
            checkpoint=json.loads(job.checkpoint or "{}"),
            actor=_actor_of(job),
            processed=job.processed,
        )
    status, result, error = "done", {}, None
    HEARTBEATS.track(Job, job_id)
    try:
        result = _WORKERS[context.kind](context) or {}
    except JobCancelled:
        status = "cancelled"
    except Exception as exc:  # a failed job must record why, whatever went wrong
        log.exception("job %s (%s) failed", job_id, context.kind)
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        HEARTBEATS.untrack(Job, job_id)
    with write_session() as session:
        job = session.get(Job, job_id)
        job.status = status
        job.result = json.dumps(result, ensure_ascii=False, default=str)
        job.error = error
        job.processed = context.processed
        job.finished_at = utcnow()
        session.add(job)
        session.commit()
        return _view(job)


def start_in_background(job_id: int) -> threading.Thread:
    """Run the job in a daemon thread; the page polls ``job_view`` for progress."""
    thread = threading.Thread(target=run_job, args=(job_id,), name=f"job-{job_id}", daemon=True)
    thread.start()
    return thread


def job_view(actor: Actor, job_id: int) -> JobView:
    """Progress of a job: visible to whoever started it and to those with job.view_all."""
    with read_session() as session:
        job = session.get(Job, job_id)
        if job is None or not (actor.can("job.view_all") or actor.is_system or job.created_by_id == actor.user_id):
            raise NotFound()
        return _view(job)


def request_cancel(actor: Actor, job_id: int) -> None:
    with write_session() as session:
        job = session.get(Job, job_id)
        if job is None or not (actor.can("job.view_all") or job.created_by_id == actor.user_id):
            raise NotFound()
        if job.status in ACTIVE:
            job.cancel_requested = True
            if job.status == "queued":
                job.status = "cancelled"
                job.finished_at = utcnow()
            session.add(job)
            session.commit()


def resume_interrupted_jobs() -> list[int]:
    """At start: restart queued jobs and take over running jobs whose process is gone.

    A job of a dead process on this machine (its pid is gone or reused, or
    the machine rebooted) is resumed at once; one owned elsewhere when its
    heartbeat is older than ``MEIQIA_JOB_STALE_SECONDS``. A job another live
    worker runs is left alone. An orphaned job whose kind this version has no
    worker for cannot resume: it ends as failed. Returns the resumed ids.
    """
    with read_session() as session:
        active = session.exec(select(Job).where(Job.status.in_(ACTIVE))).all()
        orphaned = [job for job in active if job.status == "queued" or is_orphaned(job.owner, job.heartbeat_at)]
        resumable = [job.id for job in orphaned if job.kind in _WORKERS]
        unknown = [(job.id, job.status, job.owner) for job in orphaned if job.kind not in _WORKERS]
    for job_id, status, owner in unknown:
        _fail_unresumable(job_id, status, owner)
    for job_id in resumable:
        start_in_background(job_id)
    return resumable


def _fail_unresumable(job_id: int, status: str, owner: str | None) -> None:
    columns = Job.__table__.c
    same_owner = columns.owner.is_(None) if owner is None else columns.owner == owner
    with write_session() as session:
        session.execute(
            update(Job.__table__)
            .where(columns.id == job_id, columns.status == status, same_owner)
            .values(status="failed", error="interrupted: no worker for this kind of job", finished_at=utcnow())
        )
