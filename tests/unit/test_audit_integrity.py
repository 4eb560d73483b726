"""The audit chain checks more than itself: MACs with a key outside the database,
a MACed head and upgrade point, anchors outside the database (issue items 4, 12).

Each attack below passed ``verify-audit`` before entries were MACed and anchored.
"""

from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.cli import main
from meiqia_app.db import get_engine, read_session, reset_engine
from meiqia_app.migrate import alembic_config
from meiqia_app.models import AppSetting, AuditEntry
from meiqia_app.services.audit import anchor as audit_anchor
from meiqia_app.services.audit import log as audit
from meiqia_app.services.audit import reading as audit_log
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.platform import scheduler
from meiqia_app.services.privacy import erasure
from meiqia_app.timeutil import SQLITE_FORMAT, as_utc, utcnow

SOMEONE = Actor(
    user_id=7,
    username="tester",
    display_name="Tester",
    role_name="admin",
    permissions=frozenset(),
    client_ip="127.0.0.1",
)


def write_entries(count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        audit.record_now(SOMEONE, "test.event", target_type="thing", target_id=index, details={"n": index})


def raw(sql: str, **params) -> None:
    with get_engine().begin() as conn:
        conn.execute(text(sql), params)


def entries() -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)).all())


def head_setting() -> str:
    with read_session() as session:
        return session.get(AppSetting, audit.HEAD_KEY).value


def verify(**kwargs) -> audit.ChainReport:
    with read_session() as session:
        return audit.verify_chain(session, **kwargs)


def plain_head(entry_id: int, entry_hash: str) -> str:
    """A head as the unMACed code wrote it (what an attacker can compute)."""
    return json.dumps({"id": entry_id, "hash": entry_hash})


# --- the attacks --------------------------------------------------------------------------------


def test_deleting_the_newest_rows_and_fixing_the_head_is_detected(db):
    write_entries(5)
    third = entries()[2]
    raw("DELETE FROM audit_entry WHERE id > 3")
    raw("UPDATE app_setting SET value = :v WHERE key = :k", v=plain_head(3, third.entry_hash), k=audit.HEAD_KEY)
    report = verify()
    assert (report.ok, report.problem) == (False, "head_forged")


def test_deleting_the_newest_rows_and_putting_back_an_old_genuine_head_is_caught_by_the_anchor(db):
    write_entries(3)
    old_head = head_setting()  # e.g. read from a backup file of that time
    write_entries(2, start=3)
    anchor = audit_anchor.write_anchor("manual")
    assert anchor is not None and anchor.id == 5
    raw("DELETE FROM audit_entry WHERE id > 3")
    raw("UPDATE app_setting SET value = :v WHERE key = :k", v=old_head, k=audit.HEAD_KEY)
    assert verify(anchors=[]).ok  # the database alone no longer shows it …
    report = verify()  # … the anchor outside it does
    assert (report.ok, report.first_bad_id, report.problem, report.anchors) == (False, 4, "truncated", 1)


def test_recomputing_every_hash_after_an_edit_is_detected(db):
    write_entries(5)
    with get_engine().begin() as conn:
        previous = conn.execute(text("SELECT entry_hash FROM audit_entry WHERE id = 1")).scalar()
    with read_session() as session:
        rows = list(session.exec(select(AuditEntry).where(AuditEntry.id >= 2).order_by(AuditEntry.id)).all())
    for entry in rows:  # what someone with write access to the table can do: the whole chain from the edit on
        if entry.id == 2:
            entry.details = json.dumps({"n": "forged"})
        entry.prev_hash = previous
        entry.entry_hash = audit.compute_hash(entry)
        previous = entry.entry_hash
        raw(
            "UPDATE audit_entry SET details = :d, prev_hash = :p, entry_hash = :h WHERE id = :i",
            d=entry.details,
            p=entry.prev_hash,
            h=entry.entry_hash,
            i=entry.id,
        )
    raw("UPDATE app_setting SET value = :v WHERE key = :k", v=plain_head(5, previous), k=audit.HEAD_KEY)
    report = verify()
    assert (report.ok, report.first_bad_id, report.problem) == (False, 2, "forged")


def test_a_recomputed_chain_also_breaks_an_anchor(db):
    """Even with a MAC copied along, an anchored entry whose hash changed is named."""
    write_entries(3)
    assert audit_anchor.write_anchor("manual") is not None
    anchors = audit_anchor.read_anchors()
    forged = [audit_anchor.Anchor(a.at, a.id, "f" * 64, a.mac_from, a.reason, True) for a in anchors]
    report = verify(anchors=forged)
    assert (report.ok, report.first_bad_id, report.problem) == (False, 3, "anchor_mismatch")


@pytest.mark.parametrize("also_delete", ["", "head", "head_and_upgrade_point"])
def test_wiping_the_table_is_detected(db, also_delete):
    write_entries(4)
    assert audit_anchor.write_anchor("nightly") is not None
    raw("DELETE FROM audit_entry")
    if also_delete:
        raw("DELETE FROM app_setting WHERE key = :k", k=audit.HEAD_KEY)
    if also_delete == "head_and_upgrade_point":
        raw("DELETE FROM app_setting WHERE key = :k", k=audit.MAC_FROM_KEY)
    report = verify()
    assert report.ok is False and report.problem in ("truncated", "head_missing", "upgrade_point")
    # Without any anchor the MACed head still tells (it must exist and verify).
    assert verify(anchors=[]).ok is False


def test_wiping_the_table_and_the_head_before_any_anchor_is_detected(db):
    write_entries(2)
    raw("DELETE FROM audit_entry")
    raw("DELETE FROM app_setting WHERE key = :k", k=audit.HEAD_KEY)
    report = verify()
    assert (report.ok, report.problem) == (False, "head_missing")


def test_stripping_macs_or_moving_the_upgrade_point_is_detected(db):
    write_entries(3)
    raw("UPDATE audit_entry SET entry_mac = '' WHERE id = 2")
    assert (verify().problem, verify().first_bad_id) == ("forged", 2)
    raw("UPDATE app_setting SET value = :v WHERE key = :k", v=json.dumps({"id": 99}), k=audit.MAC_FROM_KEY)
    assert verify().problem == "upgrade_point"


def test_a_forged_anchor_line_is_reported(db):
    write_entries(2)
    assert audit_anchor.write_anchor("manual") is not None
    with audit_anchor.anchor_path().open("a") as handle:
        handle.write(json.dumps({"at": "2030-01-01T00:00:00+00:00", "id": 2, "hash": "a" * 64, "mac_from": 1}) + "\n")
    report = verify()
    assert (report.ok, report.problem) == (False, "anchor_forged")


def test_a_pin_written_down_elsewhere_is_checked(db, capsys):
    write_entries(3)
    third = entries()[2]
    assert main(["verify-audit", "--pin", f"3:{third.entry_hash}"]) == 0
    assert "1 pins hold" in capsys.readouterr().out
    assert main(["verify-audit", "--pin", f"3:{'0' * 64}"]) == 1
    assert "anchor_mismatch" in capsys.readouterr().err
    assert main(["verify-audit", "--pin", "nonsense"]) == 2


def test_cli_verify_fails_after_truncation_with_a_fixed_head(db, capsys):
    write_entries(4)
    assert main(["anchor-audit"]) == 0
    assert "verify-audit --pin 4:" in capsys.readouterr().out
    raw("DELETE FROM audit_entry WHERE id >= 3")
    raw("UPDATE app_setting SET value = :v WHERE key = :k", v=plain_head(2, entries()[1].entry_hash), k=audit.HEAD_KEY)
    assert main(["verify-audit"]) == 1
    assert "BROKEN" in capsys.readouterr().err


# --- anchors: when they are written, what /audit shows -----------------------------------------------


def test_anchors_are_written_nightly_after_backups_and_not_over_a_broken_chain(seeded_actors):
    from meiqia_app.services.platform import backup

    admin = seeded_actors["admin"]
    assert "audit_anchor" in {task.name for task in scheduler.registered_tasks()}
    audit_anchor.nightly_anchor()
    backup.create_backup(admin)
    anchors = audit_anchor.read_anchors()
    assert [a.reason for a in anchors] == ["nightly", "backup"] and all(a.valid for a in anchors)
    assert anchors[-1].id == entries()[-1].id and anchors[-1].hash == entries()[-1].entry_hash
    # A chain that no longer verifies is not anchored; the refusal is audited and flagged.
    raw("UPDATE audit_entry SET details = '{}' WHERE id = :i", i=entries()[-1].id)
    assert audit_anchor.write_anchor("nightly") is None
    assert len(audit_anchor.read_anchors()) == 2
    failed = [e for e in entries() if e.action == "audit.anchor"]
    assert failed and failed[-1].result == "failed" and failed[-1].flagged
    # /audit lists them, newest first, with the full hash to write down.
    shown = audit_log.list_anchors(admin)
    assert [r.reason for r in shown] == ["backup", "nightly"] and shown[0].hash == anchors[-1].hash
    report = audit_log.verify(admin)
    assert report.ok is False and report.anchors == 2


def test_the_audit_page_needs_the_permission_for_anchors(seeded_actors):
    from meiqia_app.services.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        audit_log.list_anchors(seeded_actors["agent"])


# --- upgrade from a database without MACs -----------------------------------------------------------------


def test_a_log_from_before_the_upgrade_verifies_and_is_maced_from_the_upgrade_point(db):
    write_entries(2)
    reset_engine()
    cfg = alembic_config()
    with get_engine().begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008_ip_throttle_job_owner")  # the revision before the MACs
    # Entries written by the old code: no MAC column, an unMACed head.
    with get_engine().begin() as conn:
        last = conn.execute(text("SELECT id, entry_hash FROM audit_entry ORDER BY id DESC LIMIT 1")).one()
        entry = AuditEntry(
            id=last[0] + 1,
            occurred_at=utcnow(),
            actor_id=7,
            actor_name="tester",
            action="legacy.event",
            target_type="",
            target_id="",
            result="ok",
            details="{}",
            client_ip="",
            flagged=False,
            prev_hash=last[1],
        )
        entry.entry_hash = audit.compute_hash(entry)
        conn.execute(
            text(
                "INSERT INTO audit_entry (id, occurred_at, actor_id, actor_name, action, target_type, target_id,"
                " result, details, client_ip, flagged, prev_hash, entry_hash) VALUES (:id, :at, 7, 'tester',"
                " 'legacy.event', '', '', 'ok', '{}', '', FALSE, :prev, :hash)"
            ),
            {
                "id": entry.id,
                "at": as_utc(entry.occurred_at).strftime(SQLITE_FORMAT),
                "prev": entry.prev_hash,
                "hash": entry.entry_hash,
            },
        )
        conn.execute(
            text("UPDATE app_setting SET value = :v WHERE key = :k"),
            {"v": plain_head(entry.id, entry.entry_hash), "k": audit.HEAD_KEY},
        )
    reset_engine()
    cfg = alembic_config()
    with get_engine().begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    reset_engine()
    assert verify().ok and verify().checked == 3
    with read_session() as session:
        assert audit.read_mac_from(session) == 4
    write_entries(1, start=10)
    assert [bool(e.entry_mac) for e in entries()] == [False, False, False, True]
    assert verify().ok
    # Legacy entries are still covered by their hashes and links …
    raw("UPDATE audit_entry SET actor_name = 'someone' WHERE id = 2")
    assert (verify().problem, verify().first_bad_id) == ("altered", 2)


# --- item 12: free text about a person stays out of the log --------------------------------------------


def test_the_erasure_reason_is_not_in_the_audit_log(seeded_actors):
    reason = "张三来电要求删除，手机 13812345678"
    request = erasure.request_erasure(seeded_actors["agent"], 5, reason)
    entry = next(e for e in entries() if e.action == "erasure.request")
    assert json.loads(entry.details) == {"request_id": request.id, "reason": audit.text_ref(reason)}
    assert all("张三" not in e.details and "13812345678" not in e.details for e in entries())


def test_every_problem_has_a_message_in_both_languages():
    from meiqia_app.i18n import EN, ZH

    assert all(f"audit.problem.{name}" in ZH and f"audit.problem.{name}" in EN for name in audit.PROBLEMS)


def test_entries_recorded_together_chain_like_entries_recorded_one_by_one(db):
    from meiqia_app.db import write_session

    write_entries(2)
    with write_session() as session:
        audit.record_many(
            session,
            SOMEONE,
            "test.many",
            [{"target_type": "thing", "target_id": n, "details": {"n": n}} for n in (10, 11, 12)],
        )
    write_entries(1, start=20)
    rows = entries()
    assert [(e.action, e.target_id) for e in rows[-4:]] == [
        ("test.many", "10"),
        ("test.many", "11"),
        ("test.many", "12"),
        ("test.event", "20"),
    ]
    assert [e.id for e in rows] == list(range(rows[0].id, rows[0].id + len(rows)))
    assert all(later.prev_hash == earlier.entry_hash for earlier, later in zip(rows, rows[1:]))
    report = verify()
    assert report.ok and report.checked == len(rows), report
    assert json.loads(head_setting())["id"] == rows[-1].id
