"""The nightly scheduler: slots in the local zone, once per slot across workers, off switch."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from meiqia_app.db import write_session
from meiqia_app.models import AppSetting
from meiqia_app.services.platform import scheduler

RUNS: list[str] = []


@pytest.fixture(autouse=True)
def _task(db, monkeypatch):
    monkeypatch.setattr(scheduler, "_TASKS", {})
    RUNS.clear()
    scheduler.register_task("nightly", lambda: RUNS.append("nightly"), "02:00")


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_slot_is_in_the_local_zone():
    # 02:00 in Shanghai is 18:00 UTC the day before.
    assert scheduler.due_at(_utc("2026-11-23 19:00"), "02:00") == _utc("2026-11-23 18:00")
    assert scheduler.due_at(_utc("2026-11-23 17:59"), "02:00") == _utc("2026-11-22 18:00")


def test_a_slot_runs_once_even_when_checked_twice():
    assert scheduler.run_due_tasks(_utc("2026-11-23 18:30")) == ["nightly"]
    assert scheduler.run_due_tasks(_utc("2026-11-23 18:31")) == []
    assert scheduler.run_due_tasks(_utc("2026-11-24 18:01")) == ["nightly"]
    assert RUNS == ["nightly", "nightly"]


def test_fresh_install_does_not_run_last_nights_work_at_start():
    scheduler.first_run_marks_now(_utc("2026-11-23 12:00"))
    assert scheduler.run_due_tasks(_utc("2026-11-23 12:01")) == []
    assert scheduler.run_due_tasks(_utc("2026-11-23 18:00")) == ["nightly"]


def test_admin_can_move_or_switch_off_a_task():
    with write_session() as session:
        session.add(AppSetting(key="schedule.nightly", value=json.dumps("off")))
        session.commit()
    assert scheduler.run_due_tasks(_utc("2026-11-23 18:30")) == []
    with write_session() as session:
        row = session.get(AppSetting, "schedule.nightly")
        row.value = json.dumps("23:30")
        session.add(row)
        session.commit()
    assert scheduler.task_time("nightly") == "23:30"
    assert scheduler.run_due_tasks(_utc("2026-11-23 15:31")) == ["nightly"]


def test_a_failing_task_does_not_stop_the_others():
    scheduler.register_task("broken", lambda: 1 / 0, "01:00")
    assert sorted(scheduler.run_due_tasks(_utc("2026-11-23 18:30"))) == ["broken", "nightly"]
    assert RUNS == ["nightly"]


def test_each_run_is_a_job_and_a_failing_tasks_error_is_recorded_on_it():
    from sqlmodel import select

    from meiqia_app.db import read_session
    from meiqia_app.models import Job

    scheduler.register_task("broken", lambda: 1 / 0, "01:00")
    scheduler.run_due_tasks(_utc("2026-11-23 18:30"))
    with read_session() as session:
        runs = session.exec(select(Job).where(Job.kind == scheduler.TASK_JOB_KIND)).all()
    outcome = {json.loads(job.params)["task"]: (job.status, job.error, job.created_by_name) for job in runs}
    assert outcome == {
        "nightly": ("done", None, "system"),
        "broken": ("failed", "ZeroDivisionError: division by zero", "system"),
    }


def test_no_module_registers_a_task_when_imported_and_register_all_registers_each_once():
    """Importing every service registers nothing; startup's register_all registers the nightly tasks."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import importlib, pkgutil, meiqia_app.services as s\n"
        "for m in pkgutil.walk_packages(s.__path__, 'meiqia_app.services.'): importlib.import_module(m.name)\n"
        "from meiqia_app.services.platform import scheduler, scheduled_tasks\n"
        "before = [t.name for t in scheduler.registered_tasks()]\n"
        "names = scheduled_tasks.register_all()\n"
        "print(before, sorted(names) == sorted(t.name for t in scheduler.registered_tasks()), len(names))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["[]", "True", "8"], out.stderr[-2000:]


def test_the_architecture_page_lists_every_scheduled_task_with_its_time(monkeypatch):
    import re
    from pathlib import Path

    from meiqia_app.services.platform import scheduled_tasks

    monkeypatch.setattr(scheduler, "_TASKS", {})
    scheduled_tasks.register_all()
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `([\w.]+)` \| (\d\d:\d\d) \|", page, re.M))
    assert documented == {task.name: task.default_time for task in scheduler.registered_tasks()}
