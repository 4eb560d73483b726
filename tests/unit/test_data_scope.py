"""Teams, owners (负责人), the pool (公海) and data scopes (issue 21, part 2).

Team A: agent_a, agent_a2, senior_a (lead: agent_a2). Team B: agent_b.
Customers: ``mine`` (owner agent_a), ``team`` (owner agent_a2), ``other``
(owner agent_b), ``pool`` (no owner); every other seeded customer is in the pool.

- agent (team + pool): sees mine, team and the pool, never ``other``, on every
  surface; a crafted call naming ``other`` is not found and writes nothing.
- senior agent (team): mine and team only; own + pool: mine and the pool.
- claim: exactly one of two simultaneous claims wins, the other is told who.
- assign / transfer / release: audited, in the customer's timeline.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import func, select, text

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer, Note, OwnerChange, Role, Tag, TagAssignment, User
from meiqia_app.services.customers import consent, notes, ownership, saved_views, timeline
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import Conflict, NotFound, PermissionDenied
from meiqia_app.services.exports import portability
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.identity import teams, users
from meiqia_app.services.identity.rbac import ExportPolicy
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends
from meiqia_app.services.tags import assignments as customer_tags
from meiqia_app.services.tags import catalog as tags
from tests.conftest import built_once, load_actors

C = Customer.__table__.c
PASSWORD = "Scope-test-pass-2026!"


def _user_id(username: str) -> int:
    with read_session() as session:
        return session.execute(select(User.id).where(User.username == username)).scalar_one()


def _role_id(name: str) -> int:
    with read_session() as session:
        return session.execute(select(Role.id).where(Role.name == name)).scalar_one()


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(
            conn.execute(
                select(C.id).where(C.status == "active", C.erased_at.is_(None), C.phone != "").order_by(C.id).limit(n)
            ).scalars()
        )


def _total_active() -> int:
    with get_engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM customer WHERE status = 'active'")).scalar_one()


@built_once("seeded_db")
def world(actors):
    admin = actors["admin"]
    # The seed gives the demo team one customer in ten each for its senior and agent
    # (seed/loader.py); this world starts from an all-pool book.
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE customer SET owner_id = NULL"))
    team_a = teams.create_team(admin, "一组").id
    team_b = teams.create_team(admin, "二组").id
    for username, role, team in (
        ("agent_a", "agent", team_a),
        ("agent_a2", "agent", team_a),
        ("senior_a", "senior_agent", team_a),
        ("agent_b", "agent", team_b),
    ):
        user = users.create_user(admin, username, PASSWORD, role, display_name=username)
        teams.set_user_team(admin, user.id, team)
    teams.set_lead(admin, team_a, _user_id("agent_a2"))
    mine, team, other, pool, spare = _active_ids(5)
    ownership.assign(admin, mine, _user_id("agent_a"))
    ownership.assign(admin, team, _user_id("agent_a2"))
    ownership.assign(admin, other, _user_id("agent_b"))
    return {
        "actors": load_actors(),
        "ids": {"mine": mine, "team": team, "other": other, "pool": pool, "spare": spare},
        "teams": {"a": team_a, "b": team_b},
    }


def _all_ids(actor, query: ListQuery | None = None) -> set[int]:
    found, after = set(), 0
    while True:
        batch = customer_list.matching_ids(actor, query or ListQuery(), after_id=after, batch=5000)
        if not batch:
            return found
        found.update(batch)
        after = batch[-1]


# --- sets ---------------------------------------------------------------------------------------


def test_each_scope_sees_its_customers_in_list_count_and_search(world):
    actors, ids = world["actors"], world["ids"]
    total = _total_active()
    agent = actors["agent_a"]
    seen = _all_ids(agent)
    assert {ids["mine"], ids["team"], ids["pool"]} <= seen and ids["other"] not in seen
    assert len(seen) == total - 1
    assert customer_list.count_customers(agent, ListQuery(), exact=True).value == total - 1
    # The admin's count right after: counts are not shared across scopes.
    assert customer_list.count_customers(actors["admin"], ListQuery(), exact=True).value == total
    page = customer_list.list_customers(agent, ListQuery(), page_size=100)
    assert ids["other"] not in {r.id for r in page.rows}

    other_name = customers.get_customer(actors["admin"], ids["other"]).name
    found = customer_list.list_customers(actors["admin"], ListQuery(q=other_name), page_size=100).rows
    assert ids["other"] in {r.id for r in found}
    found = customer_list.list_customers(agent, ListQuery(q=other_name), page_size=100).rows
    assert ids["other"] not in {r.id for r in found}
    assert customer_list.count_customers(agent, ListQuery(q=other_name), exact=True).value == len(found)

    senior = actors["senior_a"]
    assert _all_ids(senior) == {ids["mine"], ids["team"]}
    assert customer_list.count_customers(senior, ListQuery()).value == 2

    users.set_role_scope(actors["admin"], _role_id("agent"), "own_pool")
    agent = load_actors()["agent_a"]
    seen = _all_ids(agent)
    assert ids["mine"] in seen and ids["pool"] in seen
    assert ids["team"] not in seen and ids["other"] not in seen
    assert customer_list.count_customers(agent, ListQuery(), exact=True).value == total - 2


def test_quick_filters_mine_pool_owner_and_team(world):
    actors, ids = world["actors"], world["ids"]
    agent, admin = actors["agent_a"], actors["admin"]
    assert _all_ids(agent, ListQuery(owner="mine")) == {ids["mine"]}
    pool = _all_ids(agent, ListQuery(owner="pool"))
    assert ids["pool"] in pool and not pool & {ids["mine"], ids["team"], ids["other"]}
    assert _all_ids(admin, ListQuery(owner="mine")) == set()  # "mine" is the acting user's
    assert customer_list.count_customers(admin, ListQuery(owner="mine"), exact=True).value == 0
    assert customer_list.count_customers(agent, ListQuery(owner="mine"), exact=True).value == 1
    assert _all_ids(admin, ListQuery(team_ids=(world["teams"]["a"],))) == {ids["mine"], ids["team"]}
    assert _all_ids(admin, ListQuery(owner_ids=(_user_id("agent_b"),))) == {ids["other"]}
    # A filter cannot widen the scope.
    assert _all_ids(agent, ListQuery(team_ids=(world["teams"]["b"],))) == set()
    rows = {r.id: r for r in customer_list.list_customers(admin, ListQuery(owner_ids=(_user_id("agent_a"),))).rows}
    assert rows[ids["mine"]].owner == "agent_a" and rows[ids["mine"]].team == "一组"
    assert not rows[ids["mine"]].in_pool


def _counts(customer_id: int) -> tuple[int, int, int, int]:
    with read_session() as session:
        note_count = session.exec(select(func.count()).select_from(Note).where(Note.customer_id == customer_id)).one()
        tag_count = session.exec(
            select(func.count()).select_from(TagAssignment).where(TagAssignment.customer_id == customer_id)
        ).one()
        version, owner = session.exec(
            select(Customer.version, Customer.owner_id).where(Customer.id == customer_id)
        ).one()
    return note_count, tag_count, version, owner


def test_an_out_of_scope_customer_is_not_found_by_id_on_every_surface(world):
    actors, ids = world["actors"], world["ids"]
    agent, other = actors["agent_a"], ids["other"]
    with read_session() as session:
        tag_id = session.execute(select(Tag.id).order_by(Tag.id)).scalars().first()
        version = session.execute(select(Customer.version).where(Customer.id == other)).scalar_one()
    before = _counts(other)
    calls = {
        "detail": lambda: customers.get_customer(agent, other),
        "record": lambda: customers.get_customer_record(agent, other),
        "timeline": lambda: timeline.customer_timeline(agent, other),
        "note add": lambda: notes.add_note(agent, other, "crafted"),
        "tag add": lambda: customer_tags.add_tags(agent, other, [tag_id]),
        "edit": lambda: customer_edit.update_customer(agent, other, version, {"name": "crafted"}),
        "consent": lambda: consent.set_consent(agent, other, "marketing", True),
        "portability": lambda: portability.collect(agent, other),
        "merge": lambda: duplicate_merging.merge_preview(actors["agent_a"], [ids["pool"], other]),
        "owner card": lambda: ownership.owner_card(agent, other),
        "claim": lambda: ownership.claim(agent, other),
        "release": lambda: ownership.release(agent, other),
    }
    for name, call in calls.items():
        with pytest.raises((NotFound, PermissionDenied)) as caught:
            call()
            pytest.fail(f"{name}: reached a customer out of scope")
        if name != "merge":  # the agent may not merge at all: refused before any customer is read
            assert isinstance(caught.value, NotFound), name
    assert timeline.activity_marker(agent, other) is None
    assert [r.id for r in customers.customer_records(agent, [other, ids["team"]])] == [ids["team"]]
    assert _counts(other) == before  # nothing written


def _refusals_after(entry_id: int) -> list[tuple]:
    """(actor, action, target type, target id, details) of the refusals written after ``entry_id``."""
    with read_session() as session:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.id > entry_id, AuditEntry.result == "refused").order_by(AuditEntry.id)
        ).scalars()
        return [(e.actor_name, e.action, e.target_type, e.target_id, json.loads(e.details)) for e in rows]


def _last_entry_id() -> int:
    with read_session() as session:
        return session.execute(select(func.coalesce(func.max(AuditEntry.id), 0))).scalar_one()


def _missing_id() -> int:
    with read_session() as session:
        return session.execute(select(func.max(Customer.id))).scalar_one() + 1000


def test_crafted_calls_naming_an_out_of_scope_id_are_not_found_and_audited(world):
    """Each surface of the acceptance list, called with a customer id out of the caller's
    scope: refused as not found (the very message a missing id gets) and one refusal in
    the audit log naming the actor, the action and the id; a missing id gets the same."""
    from meiqia_app.i18n import error_text
    from meiqia_app.services.privacy import erasure

    actors, ids, admin = world["actors"], world["ids"], world["actors"]["admin"]
    agent, lead = actors["agent_a"], actors["agent_a2"]
    # Scoped roles with the rights agents lack: merging, exporting (team + pool).
    users.create_role(admin, "team_merger", "组内合并", "Team merger", ["customer.view", "customer.merge"])
    users.set_role_scope(admin, _role_id("team_merger"), "team_pool")
    users.create_role(admin, "team_exporter", "组内导出", "Team exporter", ["customer.view", "export.request"])
    users.set_role_scope(admin, _role_id("team_exporter"), "team_pool")
    users.set_export_policy(admin, _role_id("team_exporter"), ExportPolicy())
    for username, role in (("merger_a", "team_merger"), ("exporter_a", "team_exporter")):
        user = users.create_user(admin, username, PASSWORD, role, display_name=username)
        teams.set_user_team(admin, user.id, world["teams"]["a"])
    merger, exporter = load_actors()["merger_a"], load_actors()["exporter_a"]
    with read_session() as session:
        tag_id = session.execute(select(Tag.id).order_by(Tag.id)).scalars().first()
        version = session.execute(select(Customer.version).where(Customer.id == ids["other"])).scalar_one()
        mine_version = session.execute(select(Customer.version).where(Customer.id == ids["mine"])).scalar_one()

    def export(customer_id):
        data = {
            "scope": {"kind": "ids", "ids": [ids["mine"], customer_id], "query": {"status": "active"}},
            "fields": ["id", "name"],
            "format": "csv",
        }
        return export_request.request_export(exporter, data, start=False)

    surfaces = {
        # name: (actor, action, call naming the id)
        "detail": (agent, "customer.view", lambda i: customers.get_customer(agent, i)),
        "timeline": (agent, "customer.timeline", lambda i: timeline.customer_timeline(agent, i)),
        "note add": (agent, "note.create", lambda i: notes.add_note(agent, i, "crafted")),
        "tag add": (agent, "customer.tag_add", lambda i: customer_tags.add_tags(agent, i, [tag_id])),
        "edit": (agent, "customer.update", lambda i: customer_edit.update_customer(agent, i, version, {"name": "x"})),
        "merge preview": (
            merger,
            "customer.merge_preview",
            lambda i: duplicate_merging.merge_preview(merger, [ids["mine"], i]),
        ),
        "merge": (
            merger,
            "customer.merge",
            lambda i: duplicate_merging.merge_customers(
                merger, ids["mine"], [i], {}, {ids["mine"]: mine_version, i: version}
            ),
        ),
        "export of a selection": (exporter, "export.request", export),
        "portability": (agent, "export.portability", lambda i: portability.collect(agent, i)),
        "claim": (agent, "customer.claim", lambda i: ownership.claim(agent, i)),
        "assign": (lead, "customer.assign", lambda i: ownership.assign(lead, i, lead.user_id)),
        "release": (agent, "customer.release", lambda i: ownership.release(agent, i)),
        "bulk assign of ticked rows": (
            lead,
            "customer.bulk_assign",
            lambda i: ownership.bulk_assign(lead, Selection.of_ids([ids["team"], i], status="active"), lead.user_id),
        ),
        "bulk tag of ticked rows": (
            agent,
            "tag.bulk_add",
            lambda i: tags.start_bulk_tag_job(
                agent, Selection.of_ids([ids["mine"], i], status="active"), tag_id, "add"
            ),
        ),
        "erasure request": (agent, "erasure.request", lambda i: erasure.request_erasure(agent, i, "crafted")),
    }
    before = _counts(ids["other"])
    missing = _missing_id()
    for name, (actor, action, call) in surfaces.items():
        seen = {}
        for kind, customer_id in (("out of scope", ids["other"]), ("missing", missing)):
            last = _last_entry_id()
            with pytest.raises(NotFound) as caught:
                call(customer_id)
            seen[kind] = error_text("en", caught.value), error_text("zh", caught.value)
            refusals = _refusals_after(last)
            assert len(refusals) == 1, (name, kind, refusals)
            who, what, target_type, target_id, details = refusals[0]
            assert (who, what, target_type, details) == (
                actor.username,
                action,
                "customer",
                {"reason": "error.not_found"},
            ), name
            assert str(customer_id) in target_id.split(","), (name, kind, target_id)
        assert (
            seen["out of scope"] == seen["missing"] == (error_text("en", NotFound()), error_text("zh", NotFound()))
        ), name
    assert _counts(ids["other"]) == before  # nothing written

    # The manager's scope is all: a missing id is simply not found, as before.
    last = _last_entry_id()
    with pytest.raises(NotFound):
        customers.get_customer(actors["manager"], missing)
    assert _refusals_after(last) == []


def test_a_repeated_phone_of_a_customer_out_of_scope_names_nobody(world):
    """Creating a customer whose phone, e-mail or external id another customer has: in
    scope the warning names that customer (as before); out of scope it says only "a
    customer you cannot see already has this phone", and so does the open API's 409
    and the import's report: no id, no name."""
    from meiqia_app.services.customers.importing.columns import suggest_mapping
    from meiqia_app.services.customers.importing.job import dry_run
    from meiqia_app.services.errors import DuplicateCustomer
    from meiqia_app.web.api.problems import encode, from_app_error
    from tests.unit.test_customer_import import write_csv

    actors, ids = world["actors"], world["ids"]
    agent, admin = actors["agent_a"], actors["admin"]
    phones = {"other": "13800138123", "mine": "13800138124"}
    with get_engine().begin() as conn:
        for key, phone in phones.items():
            conn.execute(text("UPDATE customer SET phone = :p WHERE id = :i"), {"p": phone, "i": ids[key]})
        conn.execute(text("UPDATE customer SET external_id = 'EXT-OTHER-1' WHERE id = :i"), {"i": ids["other"]})
    other_name = customers.get_customer(admin, ids["other"]).name

    with pytest.raises(DuplicateCustomer) as caught:
        customer_edit.create_customer(agent, {"name": "新客户", "phone": phones["other"], "external_id": "EXT-OTHER-1"})
    matches = caught.value.matches
    assert [(m.field, m.customer_id, m.name) for m in matches] == [("phone", None, ""), ("external_id", None, "")]
    assert not any(m.visible for m in matches)
    status, body = from_app_error(caught.value, "en", "/api/v1/customers")
    assert status == 409 and "existing_id" not in body and body["field"] == "phone"
    assert str(ids["other"]) not in json.dumps(body) and other_name not in encode(body).decode()

    # In scope: named, as before.
    with pytest.raises(DuplicateCustomer) as caught:
        customer_edit.create_customer(agent, {"name": "新客户", "phone": phones["mine"]})
    mine = customers.get_customer(admin, ids["mine"])
    assert [(m.field, m.customer_id, m.name) for m in caught.value.matches] == [("phone", ids["mine"], mine.name)]
    assert from_app_error(caught.value, "en")[1]["existing_id"] == ids["mine"]

    # Save anyway: acknowledging the field of the customer not shown; the audit entry names it.
    new_id = customer_edit.create_customer(
        agent, {"name": "同号新客户", "phone": phones["other"]}, acknowledged=[], acknowledged_hidden=["phone"]
    )
    with read_session() as session:
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "customer.create", AuditEntry.target_id == str(new_id))
        ).scalar_one()
    assert json.loads(entry.details)["saved_despite_duplicates"] == [ids["other"]]

    # The import's report (a scoped role that may import): the row is a duplicate of nobody named.
    users.create_role(admin, "team_importer", "组内导入", "Team importer", ["customer.view", "customer.import"])
    users.set_role_scope(admin, _role_id("team_importer"), "team_pool")
    user = users.create_user(admin, "importer_a", PASSWORD, "team_importer")
    teams.set_user_team(admin, user.id, world["teams"]["a"])
    importer = load_actors()["importer_a"]
    path = write_csv("scoped.csv", [["姓名", "电话"], ["甲", phones["other"]], ["乙", phones["mine"]]])
    report = dry_run(importer, path, suggest_mapping(["姓名", "电话"]))
    assert [(p.row, p.message_key, p.params) for p in report.problems] == [
        (2, "import.duplicate_hidden", {}),
        (3, "import.duplicate_existing", {"id": str(ids["mine"])}),
    ]


def test_merge_needs_both_customers_in_scope(world):
    actors, ids = world["actors"], world["ids"]
    admin = actors["admin"]
    # A manager-like role with a team scope: customer.merge, but only team A's customers.
    users.create_role(admin, "team_merger", "组内合并", "Team merger", ["customer.view", "customer.merge"])
    users.set_role_scope(admin, _role_id("team_merger"), "team")
    user = users.create_user(admin, "merger_a", PASSWORD, "team_merger")
    teams.set_user_team(admin, user.id, world["teams"]["a"])
    merger = load_actors()["merger_a"]
    assert len(duplicate_merging.merge_preview(merger, [ids["mine"], ids["team"]]).customers) == 2
    with pytest.raises(NotFound):
        duplicate_merging.merge_preview(merger, [ids["mine"], ids["other"]])
    with pytest.raises(NotFound):
        duplicate_merging.merge_preview(merger, [ids["mine"], ids["pool"]])  # team scope: no pool


def test_bulk_all_matching_and_saved_views_stay_in_scope(world):
    actors, ids = world["actors"], world["ids"]
    agent = actors["agent_a"]
    with read_session() as session:
        tag_id = session.execute(select(Tag.id).order_by(Tag.id.desc())).scalars().first()
    result = tags.bulk_tag(agent, Selection.of_query(ListQuery()), tag_id, "add")
    assert result.status == "done"
    with read_session() as session:
        tagged = set(session.execute(select(TagAssignment.customer_id).where(TagAssignment.tag_id == tag_id)).scalars())
    assert {ids["mine"], ids["team"], ids["pool"]} <= tagged and ids["other"] not in tagged
    # Ticked rows naming an out-of-scope customer: left out.
    ticked = Selection.of_ids([ids["other"], ids["pool"]], status="active")
    assert sorted(i for batch in _iter(agent, ticked) for i in batch) == [ids["pool"]]

    # A view shared by the admin finds, for the agent, only what the agent may see.
    view = saved_views.save_view(
        actors["admin"], "B 组", ListQuery(owner_ids=(_user_id("agent_b"), _user_id("agent_a"))), shared=True
    )
    query = saved_views.load_view(agent, view.id)
    assert _all_ids(agent, query) == {ids["mine"]}
    assert _all_ids(actors["admin"], query) == {ids["mine"], ids["other"]}


def _iter(actor, selection):
    from meiqia_app.services.customers.selection import iter_selected_ids

    return iter_selected_ids(actor, selection)


def test_export_rows_are_the_requesters_scope(world):
    actors, ids = world["actors"], world["ids"]
    admin = actors["admin"]
    users.create_role(admin, "team_exporter", "组内导出", "Team exporter", ["customer.view", "export.request"])
    users.set_role_scope(admin, _role_id("team_exporter"), "team_pool")
    users.set_export_policy(admin, _role_id("team_exporter"), ExportPolicy())
    user = users.create_user(admin, "exporter_a", PASSWORD, "team_exporter")
    teams.set_user_team(admin, user.id, world["teams"]["a"])
    exporter = load_actors()["exporter_a"]
    from tests.unit.test_export_scope import _exported_ids

    data = {
        "scope": {"kind": "query", "query": {"status": "active"}},
        "fields": ["id", "name"],
        "format": "csv",
        "sort_field": "id",
        "sort_dir": "asc",
    }
    assert export_request.review(exporter, data).row_count == _total_active() - 1
    view = export_run.run_export(export_request.request_export(exporter, data, start=False).id)
    assert view.status == "done"
    exported = _exported_ids(view)
    assert {ids["mine"], ids["team"], ids["pool"]} <= set(exported) and ids["other"] not in exported
    # Ticked rows: those in scope are exported; naming one out of scope is a crafted
    # request, not found (test_crafted_calls_naming_an_out_of_scope_id_are_not_found_and_audited).
    data["scope"] = {"kind": "ids", "ids": [ids["mine"], ids["pool"]], "query": {"status": "active"}}
    view = export_run.run_export(export_request.request_export(exporter, data, start=False).id)
    assert _exported_ids(view) == sorted([ids["mine"], ids["pool"]])
    data["scope"]["ids"].append(ids["other"])
    with pytest.raises(NotFound):
        export_request.review(exporter, data)


def test_reports_of_a_scoped_role_count_only_its_customers(world):
    actors = world["actors"]
    admin = actors["admin"]
    users.create_role(admin, "team_reports", "组内报告", "Team reports", ["customer.view", "report.view"])
    users.set_role_scope(admin, _role_id("team_reports"), "team")
    user = users.create_user(admin, "reporter_a", PASSWORD, "team_reports")
    teams.set_user_team(admin, user.id, world["teams"]["a"])
    reporter = load_actors()["reporter_a"]
    members = tuple(sorted(_user_id(u) for u in ("agent_a", "agent_a2", "senior_a", "reporter_a")))
    as_team = ListQuery(owner_ids=members)

    def figures(points):
        return [(p.start, p.new_customers, p.orders, p.amount_cents) for p in points]

    last = "2026-11-01"
    scoped = figures(report_trends.trend(reporter, "month", last_day=last, count=36))
    assert scoped == figures(report_trends.trend(admin, "month", last_day=last, count=36, segment=as_team))
    assert sum(p[1] for p in scoped) == 2  # the team's two customers
    assert scoped != figures(report_trends.trend(admin, "month", last_day=last, count=36))
    # A segment is also cut to the scope.
    everyone = ListQuery(status="active")
    assert figures(report_trends.trend(reporter, "month", last_day=last, count=36, segment=everyone)) == scoped
    period = report_periods.make_period("custom", "2026-01-01", "2026-11-01")
    comparison = report_trends.compare_periods(reporter, None, period, period)
    expected = report_trends.compare_periods(admin, as_team, period, period)
    assert comparison.raw_b == expected.raw_b
    # The dashboard is read from whole-population aggregates: refused for a narrower scope.
    with pytest.raises(PermissionDenied):
        report_dashboard.dashboard(reporter, period)
    snapshot = report_dashboard.agent_snapshot(actors["senior_a"])
    assert snapshot.total_customers == 2
    assert report_dashboard.agent_snapshot(admin).total_customers == _total_active()


# --- claim, assign, transfer, release -----------------------------------------------------------------


def test_two_simultaneous_claims_exactly_one_wins_and_the_other_is_told_who(world):
    actors, pool = world["actors"], world["ids"]["pool"]
    contenders = [actors["agent_a"], actors["agent_b"]]
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def claim(actor):
        barrier.wait()
        try:
            outcome[actor.username] = ownership.claim(actor, pool)
        except Conflict as error:
            outcome[actor.username] = error

    threads = [threading.Thread(target=claim, args=(a,)) for a in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in outcome.items() if isinstance(r, ownership.OwnerChangeResult)]
    losers = [r for r in outcome.values() if isinstance(r, Conflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].message_key == "owner.taken" and losers[0].params["name"] == winners[0]
    assert _counts(pool)[3] == _user_id(winners[0])
    with read_session() as session:
        claims = session.execute(select(AuditEntry).where(AuditEntry.action == "customer.claim")).scalars().all()
        changes = session.execute(select(OwnerChange).where(OwnerChange.customer_id == pool)).scalars().all()
    assert [e.target_id for e in claims] == [str(pool)] and len(changes) == 1


def test_assign_transfer_release_are_audited_and_in_the_timeline(world):
    actors, spare = world["actors"], world["ids"]["spare"]
    manager = actors["manager"]
    assert ownership.assign(manager, spare, _user_id("agent_a")).action == "assign"
    assert ownership.assign(manager, spare, _user_id("agent_b")).action == "transfer"
    assert ownership.release(manager, spare).action == "release"
    assert _counts(spare)[3] is None
    with read_session() as session:
        entries = (
            session.execute(
                select(AuditEntry.action)
                .where(AuditEntry.target_type == "customer", AuditEntry.target_id == str(spare))
                .order_by(AuditEntry.id)
            )
            .scalars()
            .all()
        )
    assert entries == ["customer.assign", "customer.transfer", "customer.release"]
    items = timeline.customer_timeline(manager, spare, kinds={"owner"}, lang="en").items
    assert [i.title for i in items] == [
        "Released from agent_b to the pool",
        "Transferred from agent_a to agent_b",
        "Assigned to agent_a",
    ]
    assert all(i.summary == f"By {manager.display_name}" for i in items)
    from meiqia_app.services.audit import reading as audit_log
    from meiqia_app.services.audit.reading import AuditFilter

    rows = audit_log.list_entries(actors["admin"], AuditFilter.from_dict({"action": "customer.transfer"})).rows
    assert "transferred customer" in rows[0].sentence_en and "agent_a" in rows[0].sentence_en


def test_who_may_assign_and_release(world):
    actors, ids = world["actors"], world["ids"]
    agent, lead = actors["agent_a"], actors["agent_a2"]
    with pytest.raises(PermissionDenied):
        ownership.assign(agent, ids["pool"], _user_id("agent_a"))  # an agent claims, not assigns
    # The lead of team A assigns within the team, not outside it.
    assert ownership.assign(lead, ids["mine"], _user_id("senior_a")).action == "transfer"
    with pytest.raises(PermissionDenied):
        ownership.assign(lead, ids["team"], _user_id("agent_b"))
    # An owner releases their own customer.
    assert ownership.claim(agent, ids["pool"]).action == "claim"
    assert ownership.release(agent, ids["pool"]).action == "release"
    card = ownership.owner_card(agent, ids["pool"])
    assert card.in_pool and card.can_claim and not card.can_assign


def test_bulk_assign_all_matching_the_pool(world):
    actors = world["actors"]
    manager, agent_b = actors["manager"], _user_id("agent_b")
    pool_size = customer_list.count_customers(manager, ListQuery(owner="pool"), exact=True).value
    result = ownership.bulk_assign(manager, Selection.of_query(ListQuery(owner="pool")), agent_b)
    assert result.status == "done" and result.changed == pool_size
    assert customer_list.count_customers(manager, ListQuery(owner="pool"), exact=True).value == 0
    with read_session() as session:
        rows = session.execute(
            select(func.count()).select_from(OwnerChange).where(OwnerChange.new_owner_id == agent_b)
        ).scalar_one()
        entry = session.execute(select(AuditEntry).where(AuditEntry.action == "customer.bulk_assign")).scalar_one()
    assert rows == pool_size + 1  # the fixture's own assignment of "other"
    assert json.loads(entry.details)["count"] == pool_size
    # The agent of team A now sees only the team's customers.
    assert _all_ids(load_actors()["agent_a"]) == {world["ids"]["mine"], world["ids"]["team"]}


def test_pool_return_sends_silent_customers_back_previewed_audited_once_and_on_their_timeline(world, monkeypatch):
    """The optional pool return (a retention policy, off by default): owned active customers
    with no contact for N days go back to the pool, in batches (2 here, so the walk crosses
    batches and passes an erased customer, who keeps the owner); one retention.run audit
    entry with the count; each customer's timeline says so; a second run finds nothing."""
    from sqlalchemy import update

    from meiqia_app.services.cleanup import retention
    from meiqia_app.services.errors import ValidationError
    from meiqia_app.timeutil import utcnow

    actors, ids, admin = world["actors"], world["ids"], world["actors"]["admin"]
    monkeypatch.setattr(ownership, "POOL_RETURN_BATCH", 2)
    extra = _active_ids(9)[5:]
    for customer_id in extra:
        ownership.assign(admin, customer_id, _user_id("agent_a"))
    erased, archived, *silent_extra = extra
    now = utcnow()
    with get_engine().begin() as conn:
        conn.execute(update(Customer.__table__).values(last_active_at=now))
        old = [ids["mine"], ids["other"], erased, archived, *silent_extra]
        conn.execute(
            update(Customer.__table__).where(C.id.in_(old)).values(last_active_at=now - dt.timedelta(days=100))
        )
        conn.execute(
            update(Customer.__table__).where(C.id == ids["team"]).values(last_active_at=now - dt.timedelta(days=20))
        )
        conn.execute(update(Customer.__table__).where(C.id == erased).values(erased_at=now))
        conn.execute(update(Customer.__table__).where(C.id == archived).values(status="archived"))
    returned = {ids["mine"], ids["other"], *silent_extra}

    assert retention.current("pool_return") == retention.PolicySetting(enabled=False, value=30)
    assert retention.run_scheduled("pool_return") is None  # off: the nightly run skips it
    for bad in ("0", "3651", "abc", "", "-5"):
        with pytest.raises(ValidationError):
            retention.update(admin, "pool_return", False, bad)
    with pytest.raises(PermissionDenied):
        retention.preview(actors["agent_a"], "pool_return")

    # Previewed before saving: the numbers typed, validated, nothing saved.
    assert retention.preview(admin, "pool_return", value="30").count == len(returned)
    assert retention.preview(admin, "pool_return", value="10").count == len(returned) + 1
    with pytest.raises(ValidationError):
        retention.preview(admin, "pool_return", value="0")
    assert retention.current("pool_return") == retention.PolicySetting(enabled=False, value=30)

    retention.update(admin, "pool_return", False, "30")
    preview = retention.preview(admin, "pool_return")
    assert preview.count == len(returned)
    assert len(preview.sample) == min(len(returned), retention.SAMPLE_SIZE)
    assert all(item.startswith("#") and " · agent_" in item for item in preview.sample)
    assert retention.preview(admin, "pool_return").count == len(returned)
    retention.update(admin, "pool_return", True, "10")  # the team's customer (20 days) too
    assert retention.preview(admin, "pool_return").count == len(returned) + 1
    retention.update(admin, "pool_return", True, "30")

    last = _last_entry_id()
    view = retention.run_scheduled("pool_return")  # what the nightly task does, as the system
    assert view.status == "done" and view.result["counts"] == {"customers": len(returned)}
    with read_session() as session:
        owners = dict(session.execute(select(C.id, C.owner_id).where(C.id.in_([*returned, *extra, ids["team"]]))).all())
        entries = session.execute(select(AuditEntry).where(AuditEntry.id > last)).scalars().all()
        changes = session.execute(select(OwnerChange).where(OwnerChange.action == "return")).scalars().all()
    assert {i for i in returned if owners[i] is None} == returned
    assert owners[erased] == owners[archived] == _user_id("agent_a") and owners[ids["team"]] == _user_id("agent_a2")
    assert [(e.action, e.target_id) for e in entries] == [("retention.run", "pool_return")]
    details = json.loads(entries[0].details)
    assert details["counts"] == {"customers": len(returned)} and details["trigger"] == "nightly"
    assert sorted(c.customer_id for c in changes) == sorted(returned)
    assert all(c.job_id == view.id and c.new_owner_id is None for c in changes)

    [item] = timeline.customer_timeline(admin, ids["mine"], kinds={"owner"}, lang="en").items[:1]
    assert item.title == "Returned from agent_a to the pool: no contact for too long"
    assert item.summary == "By 系统"
    zh = timeline.customer_timeline(admin, ids["other"], kinds={"owner"}, lang="zh").items[0].title
    assert zh == "长期未联系，agent_b 的客户退回公海"
    # The agents see them in the pool now; a second run has nothing to do.
    assert ids["other"] in _all_ids(load_actors()["agent_a"], ListQuery(owner="pool"))
    assert retention.preview(admin, "pool_return").count == 0


def test_pool_return_walks_each_owner_along_the_owner_index(seeded_db):
    from sqlalchemy.dialects import sqlite

    from meiqia_app.timeutil import utcnow

    if get_engine().dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN text is SQLite's")

    def plan(statement) -> str:
        sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        with get_engine().connect() as conn:
            return " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))

    walk = plan(select(C.id).where(*ownership._stale(7, utcnow())).order_by(C.last_active_at, C.id))
    assert "ix_customer_status_owner" in walk and "TEMP B-TREE" not in walk, walk
    erased = plan(ownership._silent_erased(utcnow()))
    assert "USING INDEX ix_customer_erased_owner" in erased, erased


def test_moving_a_user_to_another_team_moves_their_customers(world):
    actors, ids = world["actors"], world["ids"]
    teams.set_user_team(actors["admin"], _user_id("agent_a2"), world["teams"]["b"])
    fresh = load_actors()
    assert ids["team"] not in _all_ids(fresh["agent_a"])
    assert ids["team"] in _all_ids(fresh["agent_b"])
    with pytest.raises(NotFound):
        customers.get_customer(fresh["agent_a"], ids["team"])
    assert [t.lead_name for t in teams.list_teams(actors["admin"]) if t.id == world["teams"]["a"]] == [""]


def test_the_scope_condition_per_scope(world):
    actors = world["actors"]
    me = actors["agent_a"].user_id
    members = sorted(actors["agent_a"].team_member_ids)
    sql = str(CustomerAccess(actors["agent_a"]).scope_condition().compile(compile_kwargs={"literal_binds": True}))
    assert sql == f"customer.owner_id IN ({', '.join(map(str, members))}) OR customer.owner_id IS NULL"
    sql = str(CustomerAccess(actors["senior_a"]).scope_condition().compile(compile_kwargs={"literal_binds": True}))
    assert sql == f"customer.owner_id IN ({', '.join(map(str, members))})"
    assert CustomerAccess(actors["manager"]).scope_condition() is None
    assert CustomerAccess(actors["manager"]).set_key("active") == "active"
    # No team: only one's own (and the pool for a pool scope).
    teams.set_user_team(actors["admin"], me, None)
    alone = load_actors()["agent_a"]
    sql = str(CustomerAccess(alone).scope_condition().compile(compile_kwargs={"literal_binds": True}))
    assert sql == f"customer.owner_id = {me} OR customer.owner_id IS NULL"


def test_cli_creates_a_team_and_a_user_in_it(seeded_db, capsys):
    from meiqia_app.cli import main

    assert main(["create-team", "三组"]) == 0
    assert (
        main(["create-user", "--username", "agent_c", "--password", PASSWORD, "--role", "agent", "--team", "三组"]) == 0
    )
    assert (
        main(["create-user", "--username", "agent_d", "--password", PASSWORD, "--role", "agent", "--team", "无此组"])
        == 2
    )
    admin = load_actors()["admin"]
    [team] = [t for t in teams.list_teams(admin) if t.name == "三组"]
    assert [m.name for m in team.members] == ["agent_c"]


def test_the_owner_filter_offers_the_owners_in_scope_and_filters_within_it(world):
    actors, ids = world["actors"], world["ids"]
    names = lambda actor: {o.name for o in ownership.owner_filter_options(actor)}  # noqa: E731
    # A whole-book scope: every active user; a team scope: the team's members only.
    assert {"agent_a", "agent_a2", "senior_a", "agent_b"} <= names(actors["admin"])
    assert names(actors["agent_a"]) == {"agent_a", "agent_a2", "senior_a"}
    assert names(actors["senior_a"]) == {"agent_a", "agent_a2", "senior_a"}
    # Filtering by an owner stays within the scope: team A's agent asking for team B's owner finds nobody.
    admin_sees = _all_ids(actors["admin"], ListQuery.from_dict({"owner_ids": [_user_id("agent_b")]}))
    assert admin_sees == {ids["other"]}
    assert _all_ids(actors["agent_a"], ListQuery.from_dict({"owner_ids": [_user_id("agent_b")]})) == set()
    assert _all_ids(actors["agent_a"], ListQuery.from_dict({"owner_ids": [_user_id("agent_a2")]})) == {ids["team"]}
    # "Own + pool": no owner filter (the quick filter 我的客户 says it).
    users.set_role_scope(actors["admin"], _role_id("agent"), "own_pool")
    assert ownership.owner_filter_options(load_actors()["agent_a"]) == []
