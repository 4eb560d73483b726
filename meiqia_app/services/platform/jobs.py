"""The job runner: the one way long work runs in the background.

Every long task is a job: bulk tagging, assigning and cleanup, rule runs,
retention runs, exports, imports, the report aggregates' builds and the
nightly scheduled tasks. A job is a row of the ``job`` table (status,
progress, a JSON checkpoint such as the last customer id of the last
committed batch, the result and the error) and a worker thread that this
module starts; nothing else in the services starts a thread for long work
(``tests/unit/test_architecture.py`` checks). Any worker process can show the
progress bar, cancel a job, and a restarted process resumes what a dead one
left (``resume_interrupted_jobs``, called at start by ``services/platform/startup.py``).

A kind of job is a worker ``work(ctx: JobContext) -> dict`` registered with
``register_worker(kind, work)`` at import of its module (``startup`` imports
every such module before it resumes jobs). The worker commits its own batches
and calls ``ctx.progress(processed, checkpoint)`` after each one;
``ctx.progress`` raises ``JobCancelled`` once someone asked to cancel. A
failure ends the job as failed with its error recorded: an ``AppError`` (e.g.
``JobFailed``) as its message key and params, anything else as its type and
text (and a traceback in the log).

Values that must never be stored (an export's password) go to
``start_in_background(job_id, memory={...})``: the worker sees them as
``ctx.memory``, they live in this process only, and a job resumed after a
restart gets an empty ``ctx.memory`` (its worker then ends it with a clear
message if it cannot go on without them). ``ctx.resumed`` tells a worker that
it takes over a job a dead process was running.

Short work whose result lives only in this process's memory (a refresh of the
report cache) has nothing to resume and no row to show: ``run_in_process``
runs it on a runner thread, at most one per key, and logs a failure with its
traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import func, update
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import Job, Role, User
from meiqia_app.services.errors import AppError, NotFound, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor
from meiqia_app.services.platform.process_owner import HEARTBEATS, current_owner, is_orphaned
from meiqia_app.timeutil import utcnow

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")

Worker = Callable[["JobContext"], dict]
_WORKERS: dict[str, Worker] = {}


class JobCancelled(Exception):
    """Raised inside a worker when a cancel was requested; the job ends as cancelled.

    ``result`` (optional): what the job had done by then, kept as its result.
    """

    def __init__(self, result: dict | None = None):
        super().__init__("cancelled")
        self.result = result or {}


class JobFailed(AppError):
    """Raised by a worker to end its job as failed with a message people can read."""

    message_key = "job.failed"


def register_worker(kind: str, work: Worker) -> None:
    """Modules register their workers at import, so a resumed job finds its code."""
    _WORKERS[kind] = work


def worker_kinds() -> list[str]:
    return sorted(_WORKERS)


@dataclasses.dataclass
class JobContext:
    job_id: int
    kind: str
    params: dict
    checkpoint: dict
    actor: Actor
    processed: int = 0
    # Given to this run only (start_in_background(memory=…)): never written anywhere.
    memory: dict = dataclasses.field(default_factory=dict, repr=False)
    # True when this run takes over a job a dead process was running.
    resumed: bool = False

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
                job.checkpoint = json.dumps(checkpoint, ensure_ascii=False, default=str)
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
    # The params of the error's message key (``error`` is a key when the worker raised an AppError).
    error_params: dict = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _view(job: Job) -> JobView:
    percent = 100 if job.status == "done" else (min(99, int(job.processed * 100 / job.total)) if job.total else 0)
    result = json.loads(job.result or "{}")
    error_params = result.pop("error_params", {}) if job.status == "failed" else {}
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        total=job.total,
        processed=job.processed,
        percent=percent,
        result=result,
        error=job.error or "",
        created_by_name=job.created_by_name,
        created_at=job.created_at.isoformat() if job.created_at else "",
        finished_at=job.finished_at.isoformat() if job.finished_at else "",
        error_params=error_params,
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
    from meiqia_app.services.identity.sessions import actor_for

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


def _error_of(exc: AppError) -> tuple[str, dict]:
    """The message key and params a page shows for a failed job."""
    if isinstance(exc, ValidationError) and exc.field_errors:
        key, params = next(iter(exc.field_errors.values()))
        return key, dict(params)
    return exc.message_key, dict(exc.params)


def run_job(job_id: int, memory: dict | None = None) -> JobView:
    """Run (or resume) a job in this thread until it ends; returns its final view.

    A queued job is started; a running one is taken over only when its
    process is gone (``process_owner.is_orphaned``); one a live process runs
    is left to it (the current view is returned). ``memory``: values for this
    run only (``JobContext.memory``), never stored.
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
            memory=dict(memory or {}),
            resumed=seen_status == "running",
        )
    status, result, error = "done", {}, None
    HEARTBEATS.track(Job, job_id)
    try:
        result = _WORKERS[context.kind](context) or {}
    except JobCancelled as stop:
        status, result = "cancelled", stop.result
    except AppError as exc:  # what the worker (or a service it called) refused, for people to read
        log.warning("job %s (%s) failed: %s", job_id, context.kind, exc.message_key)
        key, params = _error_of(exc)
        status, error, result = "failed", key[:500], {"error_params": {k: str(v) for k, v in params.items()}}
    except Exception as exc:  # a failed job must record why, whatever went wrong
        log.exception("job %s (%s) failed", job_id, context.kind)
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        HEARTBEATS.untrack(Job, job_id)
        context.memory.clear()
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


_threads_lock = threading.Lock()
_threads: dict[int, threading.Thread] = {}


def start_in_background(job_id: int, memory: dict | None = None) -> threading.Thread:
    """Run the job in a daemon thread; the page polls ``job_view`` for progress.

    ``memory`` reaches the worker as ``ctx.memory`` and nothing else: not the
    job row, not the log, not the thread's name.
    """

    def run() -> None:
        try:
            run_job(job_id, memory)
        except Exception:  # run_job records a worker's failure; this is the runner's own (e.g. the database gone)
            log.exception("job %s could not run", job_id)
        finally:
            with _threads_lock:
                _threads.pop(job_id, None)

    thread = threading.Thread(target=run, name=f"job-{job_id}", daemon=True)
    with _threads_lock:
        _threads[job_id] = thread
    thread.start()
    return thread


def running_here(job_id: int) -> bool:
    """Whether this process has a thread for the job (started and not yet ended)."""
    with _threads_lock:
        return job_id in _threads


def wait(job_ids: Iterable[int], timeout: float = 60) -> bool:
    """Wait until this process's threads for these jobs end (tests, benchmarks); True if they all did."""
    deadline = time.monotonic() + timeout
    for job_id in list(job_ids):
        with _threads_lock:
            thread = _threads.get(job_id)
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True


_once_lock = threading.Lock()


def start_unless_active(actor: Actor, kind: str, params: dict, total: int = 0) -> tuple[int, bool]:
    """Start a job of this kind unless one is queued or running (in any live process).

    Returns (job id, started): the new job's id, or the active one's. For work
    that one run does for everybody (building the report aggregates).
    """
    with _once_lock:
        with read_session() as session:
            active = session.exec(
                select(Job).where(Job.kind == kind, Job.status.in_(ACTIVE)).order_by(Job.id.desc())
            ).all()
        for job in active:
            if not is_orphaned(job.owner, job.heartbeat_at, job.created_at) or running_here(job.id):
                return job.id, False
        job_id = create_job(actor, kind, params, total)
        start_in_background(job_id)
        return job_id, True


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
        orphaned = [
            job
            for job in active
            if not running_here(job.id) and (job.status == "queued" or is_orphaned(job.owner, job.heartbeat_at))
        ]
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


# --- work whose result lives in this process only ------------------------------------------------

_in_process_lock = threading.Lock()
_in_process: dict[str, threading.Thread] = {}


def run_in_process(key: str, work: Callable[[], object], name: str = "") -> bool:
    """Run ``work()`` on a runner thread unless one runs for ``key``; False when one does.

    For short work whose result lives only in this process (the report
    cache's refreshes): no job row (a restart loses the result with the
    cache, so there is nothing to resume or to fail). A failure is logged
    with its traceback, never swallowed.
    """
    with _in_process_lock:
        running = _in_process.get(key)
        if running is not None and running.is_alive():
            return False

        def run() -> None:
            try:
                work()
            except Exception:  # logged with its traceback; the next request computes in the foreground
                log.exception("background work %s failed", name or key)
            finally:
                with _in_process_lock:
                    if _in_process.get(key) is threading.current_thread():
                        del _in_process[key]

        thread = threading.Thread(target=run, name=f"work-{name or 'in-process'}", daemon=True)
        _in_process[key] = thread
        thread.start()
        return True


def wait_in_process(timeout: float = 60) -> None:
    """Tests: wait until this process's in-process work ends."""
    deadline = time.monotonic() + timeout
    with _in_process_lock:
        threads = list(_in_process.values())
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
