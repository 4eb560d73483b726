"""Every nightly task, registered in one place when the app starts.

``register_all()`` is called by ``services/platform/startup.start_background_work``
(the app's lifespan, before the scheduler loop starts and before interrupted
jobs resume); no module registers a task as a side effect of being imported
(``tests/unit/test_architecture.py`` refuses ``register_task(`` anywhere
else). Each task runs at its default local time unless an admin moved it or
switched it off (the ``schedule.<name>`` setting); each run is a job of the
runner (kind ``scheduled.task``, services/platform/scheduler.py), claimed once across
workers.

| task | what | default |
|---|---|---|
| reports_warmup | apply pending report changes, drop zero rows | 00:05 |
| audit_anchor | anchor the audit chain's head | 00:15 |
| lifecycle | recompute every customer's stage and tier | 02:00 |
| tag_rules | run every enabled tag rule | 02:30 |
| backup | the nightly database backup | 03:00 |
| retention | every enabled retention policy | 03:30 |
| api.idempotency_prune | forget old API idempotency keys | 03:45 |
| ingest.prune | forget old ingested event ids | 03:50 |
"""

from __future__ import annotations

from collections.abc import Callable

from meiqia_app.services.platform import scheduler


def _tasks() -> list[tuple[str, Callable[[], object], str]]:
    # The services are imported here, when the app starts, not by the scheduler's import.
    from meiqia_app.services.audit import anchor as audit_anchor
    from meiqia_app.services.cleanup import retention
    from meiqia_app.services.customers import lifecycle_update
    from meiqia_app.services.integrations import idempotency, ingest
    from meiqia_app.services.platform import backup
    from meiqia_app.services.reports import dashboard as report_dashboard
    from meiqia_app.services.tags.rules import definitions as rule_definitions
    from meiqia_app.services.tags.rules import runs as rules

    return [
        ("reports_warmup", report_dashboard.warm_cache, "00:05"),
        ("audit_anchor", audit_anchor.nightly_anchor, "00:15"),
        ("lifecycle", lifecycle_update.nightly_recompute, "02:00"),
        (rule_definitions.SCHEDULE_TASK, rules.nightly_run, "02:30"),
        ("backup", backup.scheduled_backup, "03:00"),
        (retention.SCHEDULE_TASK, retention.run_nightly, retention.SCHEDULE_TIME),  # after the backup
        ("api.idempotency_prune", idempotency.prune, "03:45"),
        ("ingest.prune", ingest.prune, "03:50"),
    ]


def register_all() -> list[str]:
    """Register every nightly task with the scheduler (again: the same tasks); returns their names."""
    names = []
    for name, run, default_time in _tasks():
        scheduler.register_task(name, run, default_time)
        names.append(name)
    return names
