"""Retention policies (RET-1): settings with env defaults, validation, permissions, each policy's
preview and run (counts, files, rows, audit), backups keep the newest K, and the nightly run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time

import pytest
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.config import get_settings, reload_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.models import AppSetting, AuditEntry, Backup, Customer, ExportJob, Job, WebhookDelivery, WebhookEndpoint
from meiqia_app.services.cleanup import retention
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.cleanup.criteria import _months_ago
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.exports import files as export_files
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.platform import backup, jobs, scheduler
from meiqia_app.timeutil import utcnow

BUILT_IN = (
    "trash_purge",
    "customer_archive",
    "pool_return",
    "export_files",
    "finished_jobs",
    "webhook_deliveries",
    "import_files",
    "backups",
)


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _audit(action: str, result: str | None = None) -> list[AuditEntry]:
    with read_session() as session:
        statement = select(AuditEntry).where(AuditEntry.action == action)
        if result:
            statement = statement.where(AuditEntry.result == result)
        return list(session.exec(statement.order_by(AuditEntry.id)).all())


def _runs(policy: str) -> list[dict]:
    return [json.loads(e.details) for e in _audit("retention.run") if e.target_id == policy]


def _job(job_id: int) -> Job:
    with read_session() as session:
        return session.get(Job, job_id)


def _count(query: str) -> int:
    with get_engine().connect() as conn:
        return conn.execute(text(query)).scalar_one()


# --- registry and settings ------------------------------------------------------------------------


def test_the_built_in_policies_are_registered_with_their_messages():
    keys = [p.key for p in retention.policies()]
    assert keys == list(BUILT_IN)
    for policy in retention.policies():
        for key in (policy.label_key, policy.hint_key, policy.preview_key):
            assert key in ENTRIES, key
        assert policy.job_kind in jobs._WORKERS
        assert {"count", "size"} >= set(_placeholders(ENTRIES[policy.preview_key][0]))
    assert retention.get_policy("backups").keep.label_key in ENTRIES
    assert "retention" in {task.name for task in scheduler.registered_tasks()}


def _placeholders(template: str) -> set[str]:
    import string

    return {name for _lit, name, _spec, _conv in string.Formatter().parse(template) if name}


def test_a_later_feature_adds_a_policy_with_one_registration(actors, monkeypatch):
    monkeypatch.setattr(retention, "_POLICIES", dict(retention._POLICIES))
    retention.register_policy(
        retention.Policy(
            key="webhook_test",
            unit="days",
            default=lambda: 30,
            minimum=1,
            maximum=365,
            preview=lambda setting, now: retention.Preview(count=3),
            run=lambda ctx, setting, now: {"deliveries": 3},
        )
    )
    views = {v.key: v for v in retention.overview(actors["admin"])}
    assert views["webhook_test"].setting == retention.PolicySetting(True, 30, None)
    assert views["webhook_test"].preview.count == 3
    job_id = retention.start_run(actors["admin"], "webhook_test")
    assert _job(job_id).status == "done"
    assert _runs("webhook_test")[0]["counts"] == {"deliveries": 3}


def test_defaults_come_from_the_environment_and_a_saved_setting_wins(actors):
    names = {"MEIQIA_TRASH_RETENTION_DAYS": "5", "MEIQIA_EXPORT_TTL_HOURS": "6", "MEIQIA_BACKUP_KEEP": "3"}
    try:
        os.environ.update(names)
        reload_settings()
        assert retention.current("trash_purge") == retention.PolicySetting(True, 5, None)
        assert retention.export_ttl_hours() == 6
        assert retention.current("backups") == retention.PolicySetting(True, 7, 3)
        assert retention.current("customer_archive").enabled is False
        retention.update(actors["admin"], "export_files", True, "48")
        os.environ["MEIQIA_EXPORT_TTL_HOURS"] = "2"
        reload_settings()
        assert retention.export_ttl_hours() == 48  # the database wins over the environment
        os.environ["MEIQIA_BACKUP_KEEP"] = "0"  # used to mean: keep every backup
        reload_settings()
        assert retention.current("backups") == retention.PolicySetting(False, 7, 10)
    finally:
        for name in names:
            os.environ.pop(name, None)
        reload_settings()


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5", "", None, True, "99999", "1e3", " 12 x"])
def test_bad_numbers_are_refused_with_the_range(actors, bad):
    with pytest.raises(ValidationError) as raised:
        retention.update(actors["admin"], "trash_purge", True, bad)
    key, params = raised.value.field_errors["value"]
    assert key == "retention.bad_number" and params == {"min": 1, "max": 3650}
    assert retention.current("trash_purge").value == 30
    assert _audit("retention.update") == []


def test_other_bad_input_is_refused(actors):
    admin = actors["admin"]
    with pytest.raises(ValidationError) as raised:
        retention.update(admin, "backups", True, "7", "0")
    assert raised.value.field_errors["keep"][0] == "retention.bad_number"
    with pytest.raises(ValidationError) as raised:
        retention.update(admin, "trash_purge", "yes", "7")
    assert "enabled" in raised.value.field_errors
    for key in ("no_such_policy", None, ["trash_purge"], "../x"):
        with pytest.raises(ValidationError):
            retention.update(admin, key, True, "7")
        with pytest.raises(ValidationError):
            retention.start_run(admin, key)


def test_a_change_is_audited_old_to_new(actors):
    admin = actors["admin"]
    retention.update(admin, "backups", True, "14", "4")
    retention.update(admin, "backups", True, "14", "4")  # unchanged: no entry
    entries = _audit("retention.update")
    assert len(entries) == 1 and entries[0].actor_name == "admin" and entries[0].target_id == "retention.backups"
    details = json.loads(entries[0].details)
    assert details["before"] == {"enabled": True, "value": 7, "keep": 10}
    assert details["after"] == {"enabled": True, "value": 14, "keep": 4}
    with read_session() as session:
        stored = json.loads(session.get(AppSetting, "retention.backups").value)
    assert stored == {"enabled": True, "value": 14, "keep": 4}


def test_a_role_without_settings_manage_is_refused_and_audited(seeded_actors):
    manager = seeded_actors["manager"]
    assert not manager.can("settings.manage")
    for call in (
        lambda: retention.overview(manager),
        lambda: retention.update(manager, "export_files", True, "1"),
        lambda: retention.preview(manager, "export_files"),
        lambda: retention.start_run(manager, "trash_purge", "0"),
    ):
        with pytest.raises(PermissionDenied):
            call()
    refused = {(e.action, e.actor_name) for e in _audit_all_refused()}
    assert {
        ("retention.view", "manager"),
        ("retention.update", "manager"),
        ("retention.preview", "manager"),
        ("retention.run", "manager"),
    } <= refused
    assert retention.export_ttl_hours() == 24 and _audit("retention.update", "ok") == []


def _audit_all_refused() -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.result == "refused")).all())


def test_settings_manage_alone_may_not_purge_customers(seeded_actors):
    admin = seeded_actors["admin"]
    keeper = dataclasses.replace(admin, username="keeper", permissions=frozenset({"settings.manage"}))
    views = {v.key: v for v in retention.overview(keeper)}
    assert views["trash_purge"].allowed is False and views["trash_purge"].preview is None
    assert views["export_files"].allowed is True
    with pytest.raises(PermissionDenied):
        retention.start_run(keeper, "trash_purge", "0")
    # Nor make the nightly run purge for them.
    with pytest.raises(PermissionDenied):
        retention.update(keeper, "trash_purge", True, "1")
    assert retention.current("trash_purge").value == 30
    assert retention.update(keeper, "export_files", True, "12").value == 12
    refused = {(e.action, json.loads(e.details)["missing_permission"]) for e in _audit_all_refused()}
    assert {("retention.run", "customer.delete"), ("retention.update", "customer.delete")} <= refused


# --- trash ------------------------------------------------------------------------------------------


def _trash(ids: list[int], days_ago: float) -> None:
    with write_session() as session:
        for customer_id in ids:
            row = session.get(Customer, customer_id)
            row.status = "trashed"
            row.trashed_at = utcnow() - dt.timedelta(days=days_ago)
            session.add(row)


def test_trash_policy_previews_then_purges_with_a_typed_count(seeded_actors):
    admin = seeded_actors["admin"]
    _trash([3, 4], 40)
    _trash([5], 2)
    preview = retention.preview(admin, "trash_purge")
    assert preview.count == 2 and preview.sample[0].startswith("#3 · ")
    with read_session() as session:
        name = session.get(Customer, 3).name
    assert name not in " ".join(preview.sample)  # ids and dates only: the page keeps samples in its state
    with pytest.raises(ValidationError) as raised:
        retention.start_run(admin, "trash_purge", "3")
    assert raised.value.field_errors["confirm"] == ("retention.confirm_mismatch", {"count": 2})
    assert _count("SELECT count(*) FROM customer WHERE id IN (3, 4)") == 2
    job_id = retention.start_run(admin, "trash_purge", "2")
    assert _job(job_id).status == "done" and _job(job_id).kind == "retention.trash_purge"
    assert _count("SELECT count(*) FROM customer WHERE id IN (3, 4)") == 0
    assert _count("SELECT count(*) FROM customer_order WHERE customer_id IN (3, 4)") == 0
    assert _count("SELECT count(*) FROM customer WHERE id = 5") == 1  # inside the window
    (run,) = _runs("trash_purge")
    assert run["counts"]["customers"] == 2 and run["counts"]["rows"] > 0 and run["trigger"] == "manual"
    assert run["value"] == 30 and run["outcome"] == "ok"
    with read_session() as session:
        taken = session.exec(select(Backup).where(Backup.file_name == run["counts"]["backup"])).first()
    assert taken is not None and taken.kind == "pre_purge"
    assert _audit("cleanup.purge") == []  # one entry per run: the retention entry
    with pytest.raises(ValidationError) as raised:
        retention.start_run(admin, "trash_purge", "0")
    assert raised.value.field_errors["policy"][0] == "retention.nothing_to_do"


def test_trash_shown_with_its_purge_date_only_while_the_policy_is_on(seeded_actors):
    admin = seeded_actors["admin"]
    _trash([7], 1)
    assert cleanup_trash.list_parked(admin, "trashed")[0].purge_on != ""
    retention.update(admin, "trash_purge", False, "30")
    assert cleanup_trash.list_parked(admin, "trashed")[0].purge_on == ""
    with pytest.raises(ValidationError) as raised:
        retention.start_run(admin, "trash_purge", "1")
    assert raised.value.field_errors["policy"][0] == "retention.disabled"


# --- archive ----------------------------------------------------------------------------------------


def test_archive_policy_archives_inactive_customers_through_the_cleanup_batches(seeded_actors):
    admin = seeded_actors["admin"]
    retention.update(admin, "customer_archive", True, "12")
    cutoff = _months_ago(utcnow(), 12)
    with get_engine().connect() as conn:
        expected = set(
            conn.execute(
                select(Customer.id).where(Customer.status == "active", Customer.last_active_at < cutoff)
            ).scalars()
        )
    assert expected  # the seed has customers idle for a year
    preview = retention.preview(admin, "customer_archive")
    assert preview.count == len(expected)
    job_id = retention.start_run(admin, "customer_archive")
    assert _job(job_id).status == "done"
    with get_engine().connect() as conn:
        statuses = dict(conn.execute(select(Customer.id, Customer.status).where(Customer.id.in_(expected))).all())
    assert set(statuses.values()) == {"archived"}
    assert _runs("customer_archive")[0]["counts"] == {"customers": len(expected)}
    assert retention.preview(admin, "customer_archive").count == 0


# --- export files -------------------------------------------------------------------------------------


def _export(admin: Actor, name: str, size: int, finished_hours_ago: float, expires_in_hours: float, status="done"):
    folder = get_settings().exports_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"x" * size)
    now = utcnow()
    with write_session() as session:
        job = ExportJob(
            requested_by_id=admin.user_id,
            requested_by_name=admin.username,
            status=status,
            file_name=name,
            file_size=size,
            finished_at=now - dt.timedelta(hours=finished_hours_ago),
            expires_at=now + dt.timedelta(hours=expires_in_hours),
        )
        session.add(job)
        session.flush()
        return job.id


def _export_status(export_id: int) -> str:
    with read_session() as session:
        return session.get(ExportJob, export_id).status


def test_export_files_policy_deletes_files_older_than_n_hours(actors):
    admin = actors["admin"]
    old = _export(admin, "old.csv", 3000, finished_hours_ago=3, expires_in_hours=21)
    expired = _export(admin, "expired.csv", 500, finished_hours_ago=30, expires_in_hours=-6)
    fresh = _export(admin, "fresh.csv", 100, finished_hours_ago=0.5, expires_in_hours=23.5)
    running = _export(admin, "running.csv", 100, finished_hours_ago=5, expires_in_hours=19, status="running")
    assert retention.preview(admin, "export_files").count == 1  # 24 h: only the expired one
    retention.update(admin, "export_files", True, "2")
    preview = retention.preview(admin, "export_files")
    assert (preview.count, preview.bytes) == (2, 3500)
    retention.start_run(admin, "export_files")
    folder = get_settings().exports_dir
    assert not (folder / "old.csv").exists() and not (folder / "expired.csv").exists()
    assert (folder / "fresh.csv").exists() and (folder / "running.csv").exists()
    assert [_export_status(i) for i in (old, expired, fresh, running)] == ["expired", "expired", "done", "running"]
    assert _runs("export_files")[0]["counts"] == {"files": 2, "bytes": 3500}


def test_new_exports_expire_after_the_policys_hours(seeded_actors):
    admin = seeded_actors["admin"]
    retention.update(admin, "export_files", True, "5")
    view = export_request.request_export(
        admin,
        {
            "scope": {"kind": "query", "query": {"sources": ["wechat"]}},
            "fields": ["id", "name"],
            "format": "csv",
            "sort_field": "registered_at",
            "sort_dir": "asc",
        },
        start=False,
    )
    export_run.run_export(view.id)
    with read_session() as session:
        job = session.get(ExportJob, view.id)
        lifetime = job.expires_at - job.finished_at
    assert dt.timedelta(hours=4, minutes=59) < lifetime <= dt.timedelta(hours=5, seconds=5)


def test_export_files_kept_while_the_policy_is_off(actors):
    admin = actors["admin"]
    expired = _export(admin, "hold.csv", 10, finished_hours_ago=30, expires_in_hours=-6)
    retention.update(admin, "export_files", False, "24")
    assert export_files.purge_expired() == 0
    assert retention.run_nightly()["export_files"] == "skipped"
    assert (get_settings().exports_dir / "hold.csv").exists() and _export_status(expired) == "done"


# --- finished jobs ---------------------------------------------------------------------------------------


def _old_job(status: str, days_ago: float) -> int:
    with write_session() as session:
        job = Job(kind="cleanup.tag", status=status, finished_at=utcnow() - dt.timedelta(days=days_ago))
        session.add(job)
        session.flush()
        return job.id


def test_finished_jobs_policy_deletes_old_finished_job_rows(actors):
    admin = actors["admin"]
    old_done, old_failed = _old_job("done", 100), _old_job("failed", 95)
    recent, active = _old_job("cancelled", 10), _old_job("running", 200)
    preview = retention.preview(admin, "finished_jobs")
    assert preview.count == 2 and preview.sample[0] == f"#{old_done} cleanup.tag (done)"
    job_id = retention.start_run(admin, "finished_jobs")
    with read_session() as session:
        left = set(session.exec(select(Job.id)).all())
    assert {old_done, old_failed} & left == set() and {recent, active, job_id} <= left
    assert _runs("finished_jobs")[0]["counts"] == {"jobs": 2}


# --- webhook deliveries -----------------------------------------------------------------------------------


def test_webhook_deliveries_policy_deletes_old_finished_deliveries_and_keeps_pending_ones(actors):
    admin = actors["admin"]
    now = utcnow()
    with write_session() as session:
        endpoint = WebhookEndpoint(url="https://example.com/hook", secret_enc="x")
        session.add(endpoint)
        session.flush()

        def delivery(status: str, days_ago: int) -> WebhookDelivery:
            row = WebhookDelivery(
                endpoint_id=endpoint.id,
                event_id=f"e-{status}-{days_ago}",
                event_type="customer.updated",
                status=status,
                created_at=now - dt.timedelta(days=days_ago),
            )
            session.add(row)
            return row

        old = [delivery("succeeded", 40), delivery("failed", 31)]
        kept = [delivery("succeeded", 5), delivery("pending", 60)]  # recent; still to be sent
        session.flush()
        old_ids, kept_ids = {r.id for r in old}, {r.id for r in kept}
    preview = retention.preview(admin, "webhook_deliveries")
    assert preview.count == 2 and preview.sample[0] == f"#{min(old_ids)} customer.updated (succeeded)"
    retention.start_run(admin, "webhook_deliveries")
    with read_session() as session:
        left = set(session.exec(select(WebhookDelivery.id)).all())
    assert old_ids & left == set() and kept_ids <= left
    assert _runs("webhook_deliveries")[0]["counts"] == {"deliveries": 2}


# --- import uploads -----------------------------------------------------------------------------------------


def test_import_files_policy_deletes_old_uploads_only(actors):
    admin = actors["admin"]
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    week_ago = time.time() - 8 * 86400
    for name, size, stamp in (
        ("old-upload.csv", 400, week_ago),
        ("old-errors.csv", 100, week_ago),
        ("new-upload.csv", 50, time.time()),
    ):
        (folder / name).write_bytes(b"y" * size)
        os.utime(folder / name, (stamp, stamp))
    (folder / "sub").mkdir()
    os.utime(folder / "sub", (week_ago, week_ago))
    outside = folder.parent / "keep-me.txt"
    outside.write_text("not an import")
    (folder / "link.csv").symlink_to(outside)
    os.utime(folder / "link.csv", (week_ago, week_ago), follow_symlinks=False)
    preview = retention.preview(admin, "import_files")
    assert (preview.count, preview.bytes) == (2, 500)
    retention.start_run(admin, "import_files")
    assert sorted(p.name for p in folder.iterdir()) == ["link.csv", "new-upload.csv", "sub"]
    assert outside.read_text() == "not an import"
    assert _runs("import_files")[0]["counts"] == {"files": 2, "bytes": 500}


# --- backups --------------------------------------------------------------------------------------------------


def _age_backup(name: str, days: float) -> None:
    with write_session() as session:
        row = session.exec(select(Backup).where(Backup.file_name == name)).one()
        row.created_at = utcnow() - dt.timedelta(days=days)
        session.add(row)


def test_backups_policy_deletes_old_backups_but_keeps_the_newest_k(actors):
    admin = actors["admin"]
    made = [backup.create_backup(admin).file_name for _ in range(5)]
    for age, name in zip((40, 30, 20, 10), made[:4], strict=True):
        _age_backup(name, age)
    retention.update(admin, "backups", True, "7", "2")
    preview = retention.preview(admin, "backups")
    # Newest two kept: made[4] (today) and made[3] (10 days, older than 7 but among the newest K).
    assert preview.count == 3 and set(preview.sample) == set(made[:3]) and preview.bytes > 0
    with pytest.raises(ValidationError):
        retention.start_run(admin, "backups", "2")  # typed confirmation: the count
    retention.start_run(admin, "backups", "3")
    left = [b.file_name for b in backup.list_backups(admin)]
    assert left == [made[4], made[3]]
    assert not any(backup.path_of(name).exists() for name in made[:3])
    assert backup.path_of(made[3]).exists()
    assert _runs("backups")[0]["counts"]["backups"] == 3
    # Keep 5: nothing more goes, whatever the age.
    retention.update(admin, "backups", True, "1", "5")
    assert retention.preview(admin, "backups").count == 0


def test_each_new_backup_applies_the_policy(actors):
    admin = actors["admin"]
    retention.update(admin, "backups", True, "3", "2")
    first = backup.create_backup(admin).file_name
    _age_backup(first, 5)
    second = backup.create_backup(admin).file_name
    _age_backup(second, 4)
    third = backup.create_backup(admin).file_name  # three now: the oldest beyond the newest 2 goes
    assert [b.file_name for b in backup.list_backups(admin)] == [third, second]
    retention.update(admin, "backups", False, "3", "2")
    backup.create_backup(admin)
    assert len(backup.list_backups(admin)) == 3  # off: nothing deleted


# --- nightly ------------------------------------------------------------------------------------------------------


def test_the_scheduler_runs_the_enabled_policies_nightly(actors, monkeypatch):
    admin = actors["admin"]
    task = next(t for t in scheduler.registered_tasks() if t.name == "retention")
    monkeypatch.setattr(scheduler, "_TASKS", {"retention": task})
    _export(admin, "nightly.csv", 10, finished_hours_ago=48, expires_in_hours=-24)
    old_job = _old_job("done", 120)
    slot = dt.datetime(2026, 11, 23, 19, 31, tzinfo=dt.UTC)  # 03:31 in Shanghai
    assert scheduler.task_time("retention") == "03:30"
    assert scheduler.run_due_tasks(slot) == ["retention"]
    assert not (get_settings().exports_dir / "nightly.csv").exists()
    assert _job(old_job) is None
    entries = _audit("retention.run")
    ran = {e.target_id: json.loads(e.details) for e in entries}
    assert set(ran) == set(BUILT_IN) - {"customer_archive", "pool_return"}  # these two are off by default
    assert all(e.actor_name == "system" and json.loads(e.details)["trigger"] == "nightly" for e in entries)
    assert ran["export_files"]["counts"] == {"files": 1, "bytes": 10}
    assert ran["finished_jobs"]["counts"]["jobs"] == 1
    assert scheduler.run_due_tasks(slot + dt.timedelta(minutes=5)) == []  # once per night


def test_a_failing_policy_does_not_stop_the_others(actors, monkeypatch):
    broken = dataclasses.replace(retention.get_policy("finished_jobs"), preview=lambda s, n: 1 / 0)
    monkeypatch.setitem(retention._POLICIES, "finished_jobs", broken)
    _export(actors["admin"], "after.csv", 10, finished_hours_ago=48, expires_in_hours=-24)
    outcome = retention.run_nightly()
    assert outcome["finished_jobs"] == "failed" and outcome["export_files"] == "done"


def test_a_run_that_fails_is_audited_as_failed(actors, monkeypatch):
    def explode(ctx, setting, now):
        raise OSError("disk gone")

    broken = dataclasses.replace(retention.get_policy("finished_jobs"), run=explode)
    monkeypatch.setitem(retention._POLICIES, "finished_jobs", broken)
    _old_job("done", 100)
    job_id = retention.start_run(actors["admin"], "finished_jobs")
    assert _job(job_id).status == "failed"
    (entry,) = _audit("retention.run")
    assert entry.result == "failed" and json.loads(entry.details)["error"] == "OSError"


def test_run_view_shows_only_retention_jobs(actors):
    admin = actors["admin"]
    _old_job("done", 100)
    job_id = retention.start_run(admin, "finished_jobs")
    assert retention.run_view(admin, job_id).status == "done"
    other = _old_job("done", 1)
    for job in (other, "x", -1):
        with pytest.raises(NotFound):
            retention.run_view(admin, job)


def test_a_live_run_blocks_another_but_a_dead_one_does_not(actors):
    admin = actors["admin"]
    _old_job("done", 100)
    with write_session() as session:
        live = Job(kind="retention.finished_jobs", status="running", heartbeat_at=utcnow())
        session.add(live)
        session.flush()
        live_id = live.id
    with pytest.raises(ValidationError) as raised:
        retention.start_run(admin, "finished_jobs")
    assert raised.value.field_errors["policy"][0] == "retention.already_running"
    assert retention.run_scheduled("finished_jobs") is None
    with write_session() as session:
        job = session.get(Job, live_id)
        job.heartbeat_at = utcnow() - dt.timedelta(minutes=10)
        session.add(job)
    assert retention.run_scheduled("finished_jobs").status == "done"
