"""What the app does when a process starts: take over the work a dead process left."""

from __future__ import annotations

import dataclasses

from meiqia_app.services import custom_fields, jobs  # noqa: F401 (custom_fields: its job workers, for resumed jobs)
from meiqia_app.services.exports import service as export_service


@dataclasses.dataclass(frozen=True)
class Recovered:
    resumed_jobs: list[int]
    failed_exports: int
    removed_files: list[str]


def recover_interrupted_work() -> Recovered:
    """Jobs of a process that is gone resume at once (another live worker's are left
    alone); exports it left end as failed, and their partial files are deleted."""
    resumed = jobs.resume_interrupted_jobs()
    failed = export_service.reap_interrupted()
    removed = export_service.remove_partial_files()
    return Recovered(resumed, failed, removed)
