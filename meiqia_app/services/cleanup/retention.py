"""Retention policies (RET-1): how long the trash, exports, jobs, uploads and backups are kept.

A policy is one registration (:func:`register_policy`) of a :class:`Policy`:
its key, the message keys of its label, hint and preview sentence (Chinese
and English live in i18n/messages_retention.py, or the registering feature's
own messages file), the unit of its number with default and min/max, an
optional second number "keep at least the newest K", a preview function
(what the next run would touch: count, bytes, a small sample) and a run
function (does it, in batches, inside a job). The built-in policies are in
services/cleanup/retention_policies.py; a later feature (webhook deliveries) adds
its policy the same way, and the page, the nightly run and the audit pick it
up without other changes.

Settings. Each policy's setting is the ``retention.<key>`` row of
``app_setting``: ``{"enabled": bool, "value": int, "keep": int | null}``.
Without a row the policy's defaults apply; for the trash, export files and
backups those defaults are the environment variables that configured them
before (MEIQIA_TRASH_RETENTION_DAYS, MEIQIA_EXPORT_TTL_HOURS,
MEIQIA_BACKUP_KEEP), so a fresh install starts from them and a value saved on
/admin/retention takes precedence afterwards. A change is audited
(``retention.update``, before → after).

Runs. "Run now" and the nightly run are jobs (services/platform/jobs.py) of kind
``retention.<key>``: progress on the page, a checkpoint, resumed after a
restart, and one ``retention.run`` audit entry per run with its counts. The
setting and the moment are fixed when the job is created, so a resumed job
uses the same cutoff. The scheduler task ``retention`` runs every enabled
policy in turn, as the system, in the scheduler's thread.

Permissions: ``settings.manage`` for all of it, plus what a policy itself
touches (purging customers needs ``customer.delete``, archiving them
``cleanup.run`` and ``customer.archive``, deleting backups ``backup.manage``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Callable

from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import AppSetting, Job
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR, Actor, require
from meiqia_app.services.platform import jobs, scheduler
from meiqia_app.services.platform.process_owner import is_orphaned
from meiqia_app.timeutil import as_utc, format_local, utcnow

log = logging.getLogger(__name__)

PERMISSION = "settings.manage"
UNITS = ("hours", "days", "months")
SETTING_PREFIX = "retention."
JOB_PREFIX = "retention."
SCHEDULE_TASK = "retention"
SCHEDULE_TIME = "03:30"  # after the nightly backup (03:00)
SAMPLE_SIZE = 5
_KEY = re.compile(r"^[a-z][a-z_]{1,21}$")  # "retention.<key>" fits Job.kind (32)


@dataclasses.dataclass(frozen=True)
class Preview:
    """What the next run would touch."""

    count: int
    bytes: int = 0
    sample: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PolicySetting:
    enabled: bool
    value: int
    keep: int | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Keep:
    """A second number: keep at least the newest K, whatever their age."""

    label_key: str
    default: Callable[[], int]
    minimum: int
    maximum: int


@dataclasses.dataclass(frozen=True)
class Policy:
    key: str  # its messages are retention.policy.<key>, retention.hint.<key> and retention.preview.<key>
    unit: str  # one of UNITS
    default: Callable[[], int]
    minimum: int
    maximum: int
    preview: Callable[[PolicySetting, dt.datetime], Preview]
    # run(ctx, setting, now) -> counts; commits its own batches, calls ctx.progress after each.
    run: Callable[[jobs.JobContext, PolicySetting, dt.datetime], dict]
    default_enabled: Callable[[], bool] = lambda: True
    keep: Keep | None = None
    typed_confirm: bool = False  # irreversible: "run now" needs the count typed
    permissions: tuple[str, ...] = ()  # needed besides settings.manage to preview or run
    order: int = 100

    def defaults(self) -> PolicySetting:
        return PolicySetting(
            enabled=bool(self.default_enabled()),
            value=_clamp(int(self.default()), self.minimum, self.maximum),
            keep=_clamp(int(self.keep.default()), self.keep.minimum, self.keep.maximum) if self.keep else None,
        )

    @property
    def label_key(self) -> str:
        return "retention.policy." + self.key

    @property
    def hint_key(self) -> str:
        return "retention.hint." + self.key

    @property
    def preview_key(self) -> str:
        """A sentence with {count} and {size}."""
        return "retention.preview." + self.key

    @property
    def job_kind(self) -> str:
        return JOB_PREFIX + self.key

    @property
    def setting_key(self) -> str:
        return SETTING_PREFIX + self.key


_POLICIES: dict[str, Policy] = {}


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def register_policy(policy: Policy) -> None:
    """Add a policy: the page, the nightly run and the job worker take it from here."""
    if not _KEY.match(policy.key):
        raise ValueError(f"bad retention policy key {policy.key!r}")
    if policy.unit not in UNITS or not (0 <= policy.minimum <= policy.maximum):
        raise ValueError(f"bad unit or range for retention policy {policy.key!r}")
    _POLICIES[policy.key] = policy
    jobs.register_worker(policy.job_kind, _work)


def policies() -> list[Policy]:
    return sorted(_POLICIES.values(), key=lambda p: (p.order, p.key))


def get_policy(key: object) -> Policy:
    policy = _POLICIES.get(key) if isinstance(key, str) else None
    if policy is None:
        raise ValidationError.single("policy", "error.bad_choice")
    return policy


# --- settings -------------------------------------------------------------------------------


def current(key: str) -> PolicySetting:
    """The policy's setting in force: the saved one, else the defaults (no permission: internal)."""
    policy = get_policy(key)
    with read_session() as session:
        row = session.get(AppSetting, policy.setting_key)
        raw = row.value if row is not None else None
    if raw is None:
        return policy.defaults()
    try:
        return _validated(policy, json.loads(raw), field_prefix="")
    except (ValidationError, ValueError, TypeError, AttributeError):
        log.warning("retention setting %s is unreadable; using the defaults", policy.setting_key)
        return policy.defaults()


def export_ttl_hours() -> int:
    """How long an export file may be downloaded (the export-files policy's number)."""
    return current("export_files").value


def _number(value: object, field: str, low: int, high: int) -> int:
    text = str(value).strip() if value is not None and not isinstance(value, bool) else ""
    if not re.fullmatch(r"\d{1,9}", text):
        raise ValidationError.single(field, "retention.bad_number", min=low, max=high)
    number = int(text)
    if not low <= number <= high:
        raise ValidationError.single(field, "retention.bad_number", min=low, max=high)
    return number


def _validated(policy: Policy, data: dict, field_prefix: str = "") -> PolicySetting:
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise ValidationError.single(field_prefix + "enabled", "error.bad_choice")
    value = _number(data.get("value"), field_prefix + "value", policy.minimum, policy.maximum)
    keep = None
    if policy.keep is not None:
        keep = _number(data.get("keep"), field_prefix + "keep", policy.keep.minimum, policy.keep.maximum)
    return PolicySetting(enabled=enabled, value=value, keep=keep)


def update(actor: Actor, key: object, enabled: object, value: object, keep: object = None) -> PolicySetting:
    """Save a policy's setting (validated), audited with the old and new values.

    Needs the policy's own permissions too: whoever may not purge customers may
    not make the nightly run purge them either.
    """
    require(actor, PERMISSION, action="retention.update", target_type="setting", target_id=str(key)[:64])
    policy = get_policy(key)
    _require_policy(actor, policy, "retention.update")
    new = _validated(policy, {"enabled": enabled, "value": value, "keep": keep})
    old = current(policy.key)
    if new == old:
        return new
    with write_session() as session:
        row = session.get(AppSetting, policy.setting_key) or AppSetting(key=policy.setting_key)
        row.value = json.dumps(new.as_dict())
        row.updated_at = utcnow()
        row.updated_by_name = actor.username
        session.add(row)
        audit.record(
            session,
            actor,
            "retention.update",
            target_type="setting",
            target_id=policy.setting_key,
            details={"policy": policy.key, "unit": policy.unit, "before": old.as_dict(), "after": new.as_dict()},
        )
    return new


# --- what the page shows ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyView:
    key: str
    setting: PolicySetting
    allowed: bool  # the actor has the policy's own permissions
    preview: Preview | None
    last_run: LastRun | None


@dataclasses.dataclass(frozen=True)
class LastRun:
    job_id: int
    status: str
    finished_at: str
    by: str
    result: dict


def _allowed(actor: Actor, policy: Policy) -> bool:
    return all(actor.can(p) for p in policy.permissions)


def _require_policy(actor: Actor, policy: Policy, action: str) -> None:
    require(actor, PERMISSION, action=action, target_type="retention", target_id=policy.key)
    for permission in policy.permissions:
        require(actor, permission, action=action, target_type="retention", target_id=policy.key)


def overview(actor: Actor) -> list[PolicyView]:
    """Every policy with its setting, its preview (if the actor may see it) and its last run."""
    require(actor, PERMISSION, action="retention.view", target_type="retention")
    now = utcnow()
    views = []
    for policy in policies():
        setting = current(policy.key)
        allowed = _allowed(actor, policy)
        views.append(
            PolicyView(
                key=policy.key,
                setting=setting,
                allowed=allowed,
                preview=policy.preview(setting, now) if allowed else None,
                last_run=_last_run(policy),
            )
        )
    return views


def preview(actor: Actor, key: object, value: object = None, keep: object = None) -> Preview:
    """What the next run would touch with the saved setting, or, given ``value`` (and
    ``keep``), with those numbers before they are saved (validated like :func:`update`)."""
    policy = get_policy(key)
    _require_policy(actor, policy, "retention.preview")
    setting = current(policy.key)
    if value is not None:
        setting = _validated(policy, {"enabled": setting.enabled, "value": value, "keep": keep})
    return policy.preview(setting, utcnow())


def _last_run(policy: Policy) -> LastRun | None:
    with read_session() as session:
        job = session.exec(
            select(Job)
            .where(Job.kind == policy.job_kind, Job.status.not_in(jobs.ACTIVE))
            .order_by(Job.id.desc())
            .limit(1)
        ).first()
        if job is None:
            return None
        return LastRun(
            job_id=job.id,
            status=job.status,
            finished_at=format_local(as_utc(job.finished_at)) if job.finished_at else "",
            by=job.created_by_name or "system",
            result=json.loads(job.result or "{}"),
        )


def nightly_time() -> str | None:
    """The local "HH:MM" of the nightly run, or None when an admin switched it off."""
    return scheduler.task_time(SCHEDULE_TASK)


# --- runs -----------------------------------------------------------------------------------------


def _new_job(actor: Actor, policy: Policy, setting: PolicySetting, trigger: str, total: int) -> int:
    params = {
        "policy": policy.key,
        "trigger": trigger,
        "setting": setting.as_dict(),
        "started_at": utcnow().isoformat(),
    }
    return jobs.create_job(actor, policy.job_kind, params, total=total)


def start_run(actor: Actor, key: object, confirm: object = "") -> int:
    """ "Run now": checks, the typed confirmation for irreversible policies, then a background job."""
    policy = get_policy(key)
    _require_policy(actor, policy, "retention.run")
    setting = current(policy.key)
    if not setting.enabled:
        raise ValidationError.single("policy", "retention.disabled")
    if _busy(policy):
        raise ValidationError.single("policy", "retention.already_running")
    count = policy.preview(setting, utcnow()).count
    if count == 0:
        raise ValidationError.single("policy", "retention.nothing_to_do")
    if policy.typed_confirm and str(confirm or "").strip() != str(count):
        raise ValidationError.single("confirm", "retention.confirm_mismatch", count=count)
    job_id = _new_job(actor, policy, setting, "manual", count)
    jobs.start_in_background(job_id)
    return job_id


def _busy(policy: Policy) -> bool:
    """A run of this policy is queued or alive (a dead one's is resumed at start)."""
    with read_session() as session:
        active = session.exec(select(Job).where(Job.kind == policy.job_kind, Job.status.in_(jobs.ACTIVE))).all()
    return any(job.status == "queued" or not is_orphaned(job.owner, job.heartbeat_at, job.created_at) for job in active)


def run_view(actor: Actor, job_id: object) -> jobs.JobView:
    """Progress of a retention run (only retention jobs; the starter or an admin)."""
    require(actor, PERMISSION, action="retention.view", target_type="retention")
    try:
        job_id = int(str(job_id))
    except (TypeError, ValueError):
        raise NotFound() from None
    view = jobs.job_view(actor, job_id)
    if not view.kind.startswith(JOB_PREFIX):
        raise NotFound()
    return view


def run_scheduled(key: str) -> jobs.JobView | None:
    """Run one enabled policy now, in this thread, as the system (the nightly run)."""
    policy = get_policy(key)
    setting = current(policy.key)
    if not setting.enabled or _busy(policy):  # off, or "run now" is at it
        return None
    total = policy.preview(setting, utcnow()).count
    return jobs.run_job(_new_job(SYSTEM_ACTOR, policy, setting, "nightly", total))


def run_nightly() -> dict[str, str]:
    """The scheduler task: every enabled policy in turn; one failing does not stop the others."""
    outcome = {}
    for policy in policies():
        try:
            view = run_scheduled(policy.key)
            outcome[policy.key] = view.status if view is not None else "skipped"
        except Exception:  # one broken policy must not stop the others
            log.exception("retention policy %s failed", policy.key)
            outcome[policy.key] = "failed"
    return outcome


def _work(ctx: jobs.JobContext) -> dict:
    """The worker of every ``retention.<key>`` job: the policy's run and one audit entry."""
    policy = get_policy(ctx.params.get("policy"))
    _require_policy(ctx.actor, policy, "retention.run")  # the creator's current rights
    stored = ctx.params.get("setting") or {}
    setting = PolicySetting(bool(stored.get("enabled")), int(stored["value"]), stored.get("keep"))
    now = dt.datetime.fromisoformat(ctx.params["started_at"])
    details = {
        "policy": policy.key,
        "trigger": ctx.params.get("trigger", "manual"),
        "job_id": ctx.job_id,
        "unit": policy.unit,
        **setting.as_dict(),
    }
    try:
        counts = policy.run(ctx, setting, now) or {}
    except jobs.JobCancelled:
        _audit_once(ctx, details, "cancelled")
        raise
    except PermissionDenied:
        raise  # the refusal is audited already
    except Exception as exc:  # any failure ends the run visibly in the audit log
        _audit_once(ctx, {**details, "error": type(exc).__name__}, "failed")
        raise
    _audit_once(ctx, {**details, "counts": counts}, "ok")
    return {"policy": policy.key, "counts": counts}


def _audit_once(ctx: jobs.JobContext, details: dict, result: str) -> None:
    if ctx.checkpoint.get("audited"):  # a resumed job whose entry was written
        return
    with write_session() as session:
        audit.record(
            session,
            ctx.actor,
            "retention.run",
            target_type="retention",
            target_id=details["policy"],
            result="failed" if result == "failed" else "ok",
            details={**details, "outcome": result},
        )
        ctx.checkpoint = {**ctx.checkpoint, "audited": True}
        job = session.get(Job, ctx.job_id)
        job.checkpoint = json.dumps(ctx.checkpoint, ensure_ascii=False, default=str)
        session.add(job)


def counts_so_far(ctx: jobs.JobContext) -> dict:
    """The counts a resumed job had reached (policies keep them in the checkpoint)."""
    return dict(ctx.checkpoint.get("counts") or {})


def progress(ctx: jobs.JobContext, done: int, counts: dict) -> None:
    """Record a committed batch: processed items and the counts so far (raises JobCancelled)."""
    ctx.progress(done, {**ctx.checkpoint, "counts": counts})


# The built-in policies register themselves (they import cleanup, backup, exports…).
from meiqia_app.services.cleanup import retention_policies  # noqa: E402,F401
