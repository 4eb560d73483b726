"""The in-process scheduler for nightly work (rule runs, lifecycle, trash purge, backups).

Every task is registered in one place at start (``services/platform/scheduled_tasks.py``)
with a default local time (the configured zone); an admin may move a task or
switch it off through the ``schedule.<name>`` setting ("HH:MM" or "off").
Several app workers may run this loop: each due run is claimed with a
compare-and-set on the ``schedule.<name>.last_run`` setting, so it happens
once. A task missed while the app was down runs at the next check.

Each run is a job of the runner (kind ``scheduled.task``, run in the
scheduler's thread): it is recorded with its outcome or its error, and a run
a dead process left is run again when the app starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AppSetting
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import local_zone, utcnow

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 60
TASK_JOB_KIND = "scheduled.task"
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclasses.dataclass(frozen=True)
class ScheduledTask:
    name: str
    run: Callable[[], object]
    default_time: str


_TASKS: dict[str, ScheduledTask] = {}


def register_task(name: str, run: Callable[[], object], default_time: str = "02:00") -> None:
    """Only ``services/platform/scheduled_tasks.register_all`` calls this (an architecture test checks)."""
    if not _TIME.match(default_time):
        raise ValueError(f"bad time {default_time!r}")
    _TASKS[name] = ScheduledTask(name, run, default_time)


def registered_tasks() -> list[ScheduledTask]:
    return list(_TASKS.values())


def _setting(key: str) -> str | None:
    with read_session() as session:
        row = session.get(AppSetting, key)
        return json.loads(row.value) if row is not None else None


def task_time(name: str) -> str | None:
    """The local "HH:MM" a task runs at, or None when switched off."""
    value = _setting(f"schedule.{name}")
    if value == "off":
        return None
    if isinstance(value, str) and _TIME.match(value):
        return value
    return _TASKS[name].default_time


def due_at(now: dt.datetime, hhmm: str) -> dt.datetime:
    """The latest scheduled moment at or before ``now`` (aware UTC)."""
    local_now = now.astimezone(local_zone())
    hour, minute = (int(part) for part in hhmm.split(":"))
    slot = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot > local_now:
        slot -= dt.timedelta(days=1)
    return slot.astimezone(dt.UTC)


def _claim(name: str, slot: dt.datetime) -> bool:
    """Compare-and-set the last run marker; True for the one worker that wins."""
    key = f"schedule.{name}.last_run"
    stamp = json.dumps(slot.isoformat())
    table = AppSetting.__table__
    with get_engine().begin() as conn:
        current = conn.execute(table.select().where(table.c.key == key)).first()
        if current is None:
            try:
                conn.execute(
                    insert(table).values(key=key, value=stamp, updated_at=utcnow(), updated_by_name="scheduler")
                )
                return True
            except IntegrityError:
                return False
        if json.loads(current.value) >= slot.isoformat():
            return False
        changed = conn.execute(
            update(table)
            .where(table.c.key == key, table.c.value == current.value)
            .values(value=stamp, updated_at=utcnow())
        )
        return changed.rowcount == 1


def run_due_tasks(now: dt.datetime | None = None) -> list[str]:
    """Run every task whose slot has passed since its last run; returns their names."""
    now = now or utcnow()
    ran = []
    for task in registered_tasks():
        hhmm = task_time(task.name)
        if hhmm is None:
            continue
        slot = due_at(now, hhmm)
        if not _claim(task.name, slot):
            continue
        try:
            # The worker's failure is recorded on the job (and logged); one broken task stops nothing else.
            jobs.run_job(jobs.create_job(SYSTEM_ACTOR, TASK_JOB_KIND, {"task": task.name, "slot": slot.isoformat()}))
        except Exception:  # the runner's own failure (the database gone): the loop goes on
            log.exception("scheduled task %s could not run", task.name)
        ran.append(task.name)
    return ran


def _task_worker(ctx: jobs.JobContext) -> dict:
    name = str(ctx.params.get("task", ""))
    task = _TASKS.get(name)
    if task is None:
        raise jobs.JobFailed("job.error.no_such_task", name=name)
    return {"task": name, "outcome": task.run()}


jobs.register_worker(TASK_JOB_KIND, _task_worker)


def first_run_marks_now(now: dt.datetime | None = None) -> None:
    """On a fresh install, count today's slots as done: do not run all nightly work at first start."""
    now = now or utcnow()
    for task in registered_tasks():
        hhmm = task_time(task.name)
        if hhmm and _setting(f"schedule.{task.name}.last_run") is None:
            _claim(task.name, due_at(now, hhmm))


_started = threading.Event()


def start_scheduler_thread() -> bool:
    """Start the loop once per process (no-op when disabled by MEIQIA_SCHEDULER=0)."""
    if not get_settings().scheduler_enabled or _started.is_set():
        return False
    _started.set()
    first_run_marks_now()

    def loop() -> None:
        while True:
            try:
                run_due_tasks()
            except Exception:
                log.exception("scheduler check failed")
            threading.Event().wait(CHECK_INTERVAL_SECONDS)

    threading.Thread(target=loop, name="scheduler", daemon=True).start()
    return True
