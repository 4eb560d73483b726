"""Erasure finds the erased customer's name, phone and e-mail in other customers' notes and chat
messages, lets the admin choose which to redact, redacts them in the erasure and reports it (item 13)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AuditEntry, Job, Message
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup.criteria import Criteria
from meiqia_app.services.customers import notes
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.platform import backup, jobs
from meiqia_app.services.privacy import erasure, erasure_ledger, mentions
from tests.conftest import built_once


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _sql(query: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(text(query), params).all()


def _body(table: str, record_id: int) -> str | None:
    rows = _sql(f"SELECT body FROM {table} WHERE id=:i", i=record_id)
    return rows[0][0] if rows else None


@built_once("seeded_db")
def scene(actors):
    """A customer to erase, and another customer whose note and chat name them."""
    target, name, phone, email = _sql(
        "SELECT id, name, phone, email FROM customer WHERE status='active' AND phone IS NOT NULL "
        "AND email IS NOT NULL AND length(name) >= 2 ORDER BY id LIMIT 1"
    )[0]
    other, conversation = _sql(
        "SELECT c.id, v.id FROM customer c JOIN conversation v ON v.customer_id = c.id "
        "WHERE c.id <> :t AND c.status='active' ORDER BY c.id LIMIT 1",
        t=target,
    )[0]
    agent = actors["agent"]
    mentioning = notes.add_note(agent, other, f"转介绍人：{name}，电话 {phone}，请回访")
    unrelated = notes.add_note(agent, other, "周末联系，无其他信息")
    with write_session() as session:
        message = Message(
            conversation_id=conversation, sender="customer", body=f"my friend writes from {email.upper()}"
        )
        session.add(message)
        session.flush()
        message_id = message.id
    erasure.request_erasure(agent, target, "asked by phone")
    return {
        "target": target,
        "values": (name, phone, email),
        "other": other,
        "note": mentioning,
        "unrelated": unrelated,
        "message": message_id,
    }


ERASE_REQUESTED = Criteria(erasure_pending=True, scope="all")


def test_the_dry_run_lists_mentions_in_other_customers_records(seeded_actors, scene):
    dry = cleanup_preview.dry_run(seeded_actors["admin"], ERASE_REQUESTED, "erase")
    assert dry.count == 1
    found = {m["key"]: m for m in dry.mentions}
    assert set(found) == {f"note:{scene['note']}", f"message:{scene['message']}"}
    note = found[f"note:{scene['note']}"]
    assert note["customer_id"] == scene["other"] and note["erased_ids"] == [scene["target"]]
    assert note["fields"] == ["name", "phone"] and scene["values"][0] in note["snippet"]
    assert found[f"message:{scene['message']}"]["fields"] == ["email"]  # case does not matter
    # The lookup is for those who may erase.
    with pytest.raises(PermissionDenied):
        erasure.find_mentions(seeded_actors["manager"], [scene["target"]])


def test_the_erasure_redacts_the_ticked_records_and_reports_the_rest(seeded_actors, scene):
    admin = seeded_actors["admin"]
    name, phone, email = scene["values"]
    view = backup.create_backup(admin)
    job_id = cleanup.start_action(admin, ERASE_REQUESTED, "erase", confirm="1", redact=[f"note:{scene['note']}"])
    with read_session() as session:
        job = session.get(Job, job_id)
    assert job.status == "done", job.error
    note = _body("note", scene["note"])
    assert (
        name not in note
        and phone not in note
        and note == f"转介绍人：{mentions.REDACTED_MARK}，电话 {mentions.REDACTED_MARK}，请回访"
    )
    assert email.upper() in _body("message", scene["message"])  # not ticked: left, and reported
    assert _body("note", scene["unrelated"]) == "周末联系，无其他信息"
    result = json.loads(job.result)["mentions"]
    assert result == {
        "searched": True,
        "found": sorted([f"note:{scene['note']}", f"message:{scene['message']}"]),
        "redacted": [f"note:{scene['note']}"],
        "kept": [f"message:{scene['message']}"],
    }
    # The audit entry and the ledger hold references, never the values.
    with read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "erasure.execute")).one()
    details = json.loads(entry.details)
    assert details["mentions"]["redacted"] == [f"note:{scene['note']}"]
    assert name not in entry.details and phone not in entry.details and email not in entry.details.lower()
    ledger = erasure_ledger.read_ledger().entries
    assert [(e.customer_id, e.redacted) for e in ledger] == [(scene["target"], (f"note:{scene['note']}",))]
    # A restore of a backup from before brings neither the customer nor the redacted mention back.
    backup.restore_backup(admin, view.id, confirm=view.file_name)
    assert _sql("SELECT phone FROM customer WHERE id=:i", i=scene["target"])[0][0] is None
    assert name not in _body("note", scene["note"]) and phone not in _body("note", scene["note"])
    assert email.upper() in _body("message", scene["message"])


def test_the_report_lines_say_what_was_found_and_done(seeded_actors, scene):
    from meiqia_app.i18n import tr
    from meiqia_app.state.cleanup import mention_report_lines

    admin = seeded_actors["admin"]
    job_id = cleanup.start_action(admin, ERASE_REQUESTED, "erase", confirm="1", redact=[f"message:{scene['message']}"])
    found = cleanup.job_report(admin, job_id).mentions
    english = mention_report_lines(found, lambda key, **params: tr("en", key, **params))
    assert english == [
        "Mentions in other customers' records: 2 found, 1 redacted",
        f"Redacted: Chat message #{scene['message']}",
        f"Left as they were (review them): Note #{scene['note']}",
    ]
    chinese = mention_report_lines(found, lambda key, **params: tr("zh", key, **params))
    assert chinese[0] == "其他客户的记录中找到 2 处提及，已遮盖 1 处" and f"备注 #{scene['note']}" in chinese[2]


def test_references_sent_by_the_browser_can_change_nothing_else(seeded_actors, scene):
    admin = seeded_actors["admin"]
    counts = erasure.erase_customer(
        admin,
        scene["target"],
        confirm=str(scene["target"]),
        redact=[f"note:{scene['unrelated']}", "customer:1", "note:abc", f"note:{scene['note']}"],
    )
    assert _body("note", scene["unrelated"]) == "周末联系，无其他信息"
    assert mentions.REDACTED_MARK in _body("note", scene["note"])
    assert counts.mentions_found == 2 and counts.mentions_redacted == 1


def test_a_big_erasure_says_it_did_not_search(seeded_actors):
    admin = seeded_actors["admin"]
    ids = [r[0] for r in _sql("SELECT id FROM customer WHERE status='active' ORDER BY id LIMIT 25")]
    agent = seeded_actors["agent"]
    for customer_id in ids:
        erasure.request_erasure(agent, customer_id, "asked")
    dry = cleanup_preview.dry_run(admin, ERASE_REQUESTED, "erase")
    assert dry.count == 25 and dry.mentions is None
    job_id = cleanup.start_action(admin, ERASE_REQUESTED, "erase", confirm="25")
    with read_session() as session:
        job = session.get(Job, job_id)
    assert job.status == "done" and json.loads(job.result)["mentions"]["searched"] is False
    erased = _sql("SELECT count(*) FROM customer WHERE erased_at IS NOT NULL AND id <= :last", last=ids[-1])
    assert erased[0][0] == 25
