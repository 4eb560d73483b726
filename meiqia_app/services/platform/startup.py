"""What the app does when a process starts: its background work, in one place.

``start_background_work`` is the app's lifespan hook (meiqia_app.py):

1. every nightly task is registered (``scheduled_tasks.register_all``);
2. every module with job workers is imported, so a job left by a dead
   process finds its code whichever pages this process has loaded;
3. work a dead process left is taken over: its jobs resume (or end as failed
   with a clear message when they cannot go on), its exports end as failed
   and their partial files are deleted;
4. the infrastructure loops start: the scheduler and the webhook deliveries;
5. the report aggregates are built if missing (a job; never delays the start).

Long work runs only as jobs of the runner (``services/platform/jobs.py``).
"""

from __future__ import annotations

import dataclasses
import importlib

from meiqia_app.services.platform import jobs, scheduled_tasks

# Every module that registers a job worker (register_worker) at import;
# tests/unit/test_architecture.py checks that the list is complete.
WORKER_MODULES = (
    "meiqia_app.services.cleanup.actions",
    "meiqia_app.services.customers.importing.job",
    "meiqia_app.services.exports.run",
    "meiqia_app.services.customers.lifecycle_update",
    "meiqia_app.services.customers.ownership",
    "meiqia_app.services.reports.aggregates",
    "meiqia_app.services.cleanup.retention",
    "meiqia_app.services.cleanup.retention_policies",
    "meiqia_app.services.tags.rules.runs",
    "meiqia_app.services.platform.scheduler",
    "meiqia_app.services.tags.catalog",
    "meiqia_app.services.custom_fields.definitions",
    "meiqia_app.services.customers.bulk_edit",
)


@dataclasses.dataclass(frozen=True)
class Recovered:
    resumed_jobs: list[int]
    failed_exports: int
    removed_files: list[str]


def load_workers() -> list[str]:
    """Import every module with job workers; returns the job kinds this process can run."""
    for name in WORKER_MODULES:
        importlib.import_module(name)
    return jobs.worker_kinds()


def recover_interrupted_work() -> Recovered:
    """Jobs of a process that is gone resume at once (another live worker's are left
    alone); exports it left end as failed, and their partial files are deleted."""
    from meiqia_app.services.exports import files as export_files

    load_workers()
    resumed = jobs.resume_interrupted_jobs()
    failed = export_files.reap_interrupted()
    removed = export_files.remove_partial_files()
    return Recovered(resumed, failed, removed)


def start_background_work() -> Recovered:
    """At start: register the nightly tasks, take over what a dead process left, start the loops."""
    from meiqia_app.services.integrations import webhook_delivery
    from meiqia_app.services.platform import scheduler
    from meiqia_app.services.reports import aggregates as report_aggregates

    scheduled_tasks.register_all()  # before jobs resume: a nightly run a dead process left needs its task
    recovered = recover_interrupted_work()
    scheduler.start_scheduler_thread()
    webhook_delivery.start_delivery_thread()  # the persisted outbox: each delivery claimed once across workers
    report_aggregates.start_build_in_background()  # dashboard figures ready before the first visit
    return recovered
