"""Pages a role may not open: declared with the page, nothing loaded, one audited
refusal; and a permission change reaching an open tab at its next event."""

from __future__ import annotations

import json

from sqlmodel import select

from meiqia_app.components.layout import NAV_ITEMS
from meiqia_app.db import read_session, write_session
from meiqia_app.models import AuditEntry, Role
from meiqia_app.state.admin_users import AdminUsersState
from meiqia_app.state.base import PAGE_NEEDS, AppState, missing_for_page, page_route
from meiqia_app.state.customer_list import CustomerListState
from meiqia_app.state.reports import ReportsState
from tests.unit.tabs import live_token, new_tab, run, serve


def _cookie(token: str) -> str:
    return f"mq_session={token}"


def _audit(action: str, actor: str) -> list[AuditEntry]:
    with read_session() as session:
        return list(
            session.exec(select(AuditEntry).where(AuditEntry.action == action, AuditEntry.actor_name == actor)).all()
        )


def _set_role_permissions(role_name: str, permissions: list[str]) -> None:
    with write_session() as session:
        role = session.exec(select(Role).where(Role.name == role_name)).one()
        role.permissions = json.dumps(sorted(permissions)) if isinstance(role.permissions, str) else sorted(permissions)
        session.add(role)


def _role_permissions(role_name: str) -> list[str]:
    with read_session() as session:
        raw = session.exec(select(Role).where(Role.name == role_name)).one().permissions
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def _chained(served) -> list[str]:
    return [event.name for event in served.events]


def test_every_navigation_entry_needs_what_its_page_needs():
    """One declaration per page: the menu shows an entry exactly to the roles its page lets in."""
    for item in NAV_ITEMS:
        assert item.href in PAGE_NEEDS, item.href
        assert PAGE_NEEDS[item.href] == ((item.permission,) if item.permission else ()), item.href


def test_the_every_page_sweeps_visit_every_page():
    """tests/e2e/site_pages.ROUTES drives the axe and small-screen sweeps: a new page must be in it."""
    from tests.e2e.site_pages import ROUTES

    swept = {page_route(route.format(id=1)) for route in ROUTES}
    assert sorted(set(PAGE_NEEDS) - swept) == []


def test_dynamic_routes_match_their_pattern():
    assert page_route("/customers/12") == "/customers/[customer_id]"
    assert page_route("/admin/users/") == "/admin/users"
    assert page_route("/nowhere") == ""
    assert page_route("/index") == page_route("/") == "/"
    assert missing_for_page("/customers/12", {"report.view"}) == ("customer.view",)


def test_a_page_the_role_may_not_open_loads_nothing_and_is_audited_once(db):
    token = live_token(db, "agent")
    tab = new_tab()
    served = run(serve(tab, AppState, "check_login", cookie=_cookie(token), path="/admin/users"))
    assert not served.refused
    # The page's own on_load is not chained: no user list is read, and so no refused user.list.
    assert not any(event.name.endswith(".on_load") for event in served.events), _chained(served)
    assert _audit("user.list", "agent") == []
    refusals = _audit("page.open", "agent")
    assert [(e.result, e.target_id) for e in refusals] == [("refused", "/admin/users")]
    assert "user.manage" in refusals[0].details
    assert served.value(AppState, "perms") and "user.manage" not in served.value(AppState, "perms")


def test_a_page_the_role_may_open_runs_its_own_on_load_after_the_session_check(db):
    token = live_token(db, "admin")
    tab = new_tab()
    served = run(serve(tab, AppState, "check_login", cookie=_cookie(token), path="/admin/users"))
    # The page's own on_load, then the mark that the page load finished (AppState.load_seq).
    assert [event.name for event in served.events] == [
        f"{AdminUsersState.get_full_name()}.on_load",
        f"{AppState.get_full_name()}.page_loaded",
    ]
    assert _audit("page.open", "admin") == []


def test_the_customer_list_without_customer_view_shows_no_rows(seeded_db):
    token = live_token(seeded_db, "agent")
    before = _role_permissions("agent")
    _set_role_permissions("agent", [p for p in before if p != "customer.view"])
    tab = new_tab()
    served = run(serve(tab, CustomerListState, "on_load", cookie=_cookie(token), path="/customers"))
    assert not served.value(CustomerListState, "rows")
    assert [e.target_id for e in _audit("page.open", "agent")] == ["/customers"]


def test_a_revoked_permission_reaches_an_open_page_at_its_next_event(seeded_db):
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    served = run(serve(tab, AppState, "check_login", cookie=_cookie(token), path="/reports"))
    assert "report.view" in served.value(AppState, "perms")
    assert [event.name for event in served.events] == [
        f"{ReportsState.get_full_name()}.on_load",
        f"{AppState.get_full_name()}.page_loaded",
    ]

    _set_role_permissions("manager", [p for p in _role_permissions("manager") if p != "report.view"])
    # Any next event of the open page (here: picking a segment date) carries the new permissions.
    served = run(
        serve(
            tab,
            ReportsState,
            "set_field",
            cookie=_cookie(token),
            path="/reports",
            payload={"name": "a_from", "value": "2026-01-01"},
        )
    )
    assert served.value(AppState, "perms") is not None
    assert "report.view" not in served.value(AppState, "perms")
    assert "customer.view" in served.value(AppState, "perms")
