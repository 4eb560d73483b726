"""Records reached by their own id and ticked customer ids, against the data scope (issue 21).

The world of tests/unit/test_data_scope.py: agent_a is in team A (scope team +
pool); ``other`` is owned by agent_b of team B.

- A note or a conversation of a customer out of the actor's scope answers exactly
  like a missing one (not found) and is audited as the same refusal naming the
  record; nothing changes.
- The cleanup of ticked rows (the list's archive / trash, the trash's restore)
  leaves ticked ids that name no customer in reach alone, says how many it
  skipped and audits them as one refusal.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from meiqia_app.db import get_engine, read_session
from meiqia_app.i18n import error_text
from meiqia_app.models import Conversation, Customer, Note
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.cleanup.criteria import Criteria
from meiqia_app.services.customers import notes, timeline
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import NotFound
from meiqia_app.services.identity import teams, users
from meiqia_app.services.platform import jobs
from tests.conftest import load_actors
from tests.unit import test_data_scope
from tests.unit.test_data_scope import PASSWORD, _last_entry_id, _missing_id, _refusals_after, _role_id

world = test_data_scope.world  # the fixture: teams A and B, customers mine / team / other / pool


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id, memory=None: jobs.run_job(job_id, memory))


def _note(note_id: int) -> tuple[str, int] | None:
    with read_session() as session:
        note = session.get(Note, note_id)
        return None if note is None else (note.body, note.customer_id)


def _missing_record(model) -> int:
    with read_session() as session:
        return session.execute(select(func.coalesce(func.max(model.id), 0))).scalar_one() + 1000


def _refused_alike(call, ids: dict[str, int], actor, action: str, target_type: str) -> None:
    """``call(id)`` for the out-of-scope id and the missing one: the same NotFound, one
    refusal each, naming the actor, the action and the record."""
    seen = {}
    for kind, record_id in ids.items():
        last = _last_entry_id()
        with pytest.raises(NotFound) as caught:
            call(record_id)
        seen[kind] = error_text("en", caught.value), error_text("zh", caught.value)
        assert _refusals_after(last) == [
            (actor.username, action, target_type, str(record_id), {"reason": "error.not_found"})
        ], (action, kind)
    assert seen["out of scope"] == seen["missing"] == (error_text("en", NotFound()), error_text("zh", NotFound()))


def test_a_crafted_note_id_of_another_teams_customer_is_not_found_and_audited(world):
    actors, ids = world["actors"], world["ids"]
    agent, agent_b = actors["agent_a"], actors["agent_b"]
    theirs = notes.add_note(agent_b, ids["other"], "二组的备注")
    missing = _missing_record(Note)
    targets = {"out of scope": theirs, "missing": missing}

    _refused_alike(lambda i: notes.edit_note(agent, i, "crafted"), targets, agent, "note.update", "note")
    _refused_alike(lambda i: notes.delete_note(agent, i), targets, agent, "note.delete", "note")
    assert _note(theirs) == ("二组的备注", ids["other"])  # nothing changed

    # Within reach the rules are as before: the author edits their own note.
    mine = notes.add_note(agent, ids["mine"], "我的备注")
    notes.edit_note(agent, mine, "改过的备注")
    assert _note(mine) == ("改过的备注", ids["mine"])


def test_a_crafted_conversation_id_of_another_teams_customer_is_not_found_and_audited(world):
    actors, ids = world["actors"], world["ids"]
    agent = actors["agent_a"]
    with get_engine().begin() as conn:
        theirs = conn.execute(
            Conversation.__table__.insert().values(customer_id=ids["other"], channel="web", category="inquiry")
        ).inserted_primary_key[0]
    targets = {"out of scope": theirs, "missing": _missing_record(Conversation)}
    _refused_alike(
        lambda i: timeline.conversation_messages(agent, i), targets, agent, "conversation.view", "conversation"
    )


# --- cleanup of ticked rows -----------------------------------------------------------------------


@pytest.fixture()
def cleaner(world):
    """A team-A user who may archive, trash and run cleanups, with the team + pool scope."""
    admin = world["actors"]["admin"]
    users.create_role(
        admin,
        "team_cleaner",
        "组内清理",
        "Team cleaner",
        ["customer.view", "customer.archive", "customer.delete", "cleanup.run"],
    )
    users.set_role_scope(admin, _role_id("team_cleaner"), "team_pool")
    user = users.create_user(admin, "cleaner_a", PASSWORD, "team_cleaner", display_name="cleaner_a")
    teams.set_user_team(admin, user.id, world["teams"]["a"])
    return load_actors()["cleaner_a"]


def _status(customer_id: int) -> str | None:
    with get_engine().connect() as conn:
        return conn.execute(select(Customer.__table__.c.status).where(Customer.__table__.c.id == customer_id)).scalar()


def _ticked(ids) -> Criteria:
    """What the customer list sends for an archive / trash of ticked rows (state/customer_list.py)."""
    return Criteria.from_dict({"selection": Selection.of_ids(ids, status="active").to_dict(), "scope": "active"})


@pytest.mark.parametrize("action", ["archive", "trash"])
def test_ticked_ids_out_of_scope_are_skipped_counted_and_audited(world, cleaner, action):
    ids = world["ids"]
    missing = _missing_id()
    criteria = _ticked([ids["mine"], ids["other"], missing])

    last = _last_entry_id()
    dry = cleanup_preview.dry_run(cleaner, criteria, action)
    assert (dry.count, dry.skipped) == (1, 2)
    assert [s.id for s in dry.sample] == [ids["mine"]]
    refusals = _refusals_after(last)
    assert [(r[0], r[1], r[2], r[4]) for r in refusals] == [
        ("cleaner_a", "cleanup.dry_run", "customer", {"reason": "error.not_found"})
    ]
    assert set(refusals[0][3].split(",")) == {str(ids["other"]), str(missing)}

    last = _last_entry_id()
    job_id = cleanup.start_action(cleaner, criteria, action, confirm="1")
    report = cleanup.job_report(cleaner, job_id)
    assert (report.status, report.counts.get("customer"), report.skipped) == ("done", 1, 2)
    expected = "archived" if action == "archive" else "trashed"
    assert (_status(ids["mine"]), _status(ids["other"]), _status(missing)) == (expected, "active", None)
    refused = [r for r in _refusals_after(last) if r[1] == f"cleanup.{action}"]
    assert len(refused) == 1 and set(refused[0][3].split(",")) == {str(ids["other"]), str(missing)}


def test_restoring_a_crafted_id_out_of_scope_restores_nothing_and_is_audited(world, cleaner):
    ids = world["ids"]
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE customer SET status = 'archived', archived_at = CURRENT_TIMESTAMP WHERE id IN (:a, :b)"),
            {"a": ids["other"], "b": ids["mine"]},
        )
    missing = _missing_id()
    last = _last_entry_id()
    assert cleanup_trash.restore(cleaner, "archived", [ids["other"], missing, ids["mine"]]) == 1
    assert (_status(ids["mine"]), _status(ids["other"])) == ("active", "archived")
    refused = _refusals_after(last)
    assert [(r[0], r[1]) for r in refused] == [("cleaner_a", "cleanup.restore_archived")]
    assert set(refused[0][3].split(",")) == {str(ids["other"]), str(missing)}
