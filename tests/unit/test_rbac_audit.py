"""services/identity/rbac.py, services/identity/users.py and services/audit/log.py: permissions,
the last-admin and admin-role guards, and the tamper-evident audit chain."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlmodel import select

from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AppSetting, AuditEntry, Role, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.identity import rbac, users
from meiqia_app.services.identity.rbac import Actor
from tests.conftest import load_actors


def audit_entries(action: str | None = None) -> list[AuditEntry]:
    with read_session() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(session.exec(query).all())


def role_permissions(name: str) -> list[str]:
    with read_session() as session:
        return json.loads(session.exec(select(Role).where(Role.name == name)).one().permissions)


def role_id(name: str) -> int:
    with read_session() as session:
        return session.exec(select(Role.id).where(Role.name == name)).one()


def user_by_name(username: str) -> User:
    with read_session() as session:
        return session.exec(select(User).where(User.username == username)).one()


def verify() -> audit.ChainReport:
    with read_session() as session:
        return audit.verify_chain(session)


# --- rbac.require ---------------------------------------------------------------------


def test_require_passes_silently_with_the_permission(db, actors):
    rbac.require(actors["agent"], "customer.view", action="customer.list")
    assert audit_entries() == []


def test_require_refuses_and_audits_without_the_permission(db, actors):
    agent = actors["agent"]
    with pytest.raises(PermissionDenied) as caught:
        rbac.require(agent, "customer.delete", action="customer.delete", target_type="customer", target_id=42)
    assert caught.value.message_key == "error.permission_denied"
    assert caught.value.params == {"permission": "customer.delete"}

    [entry] = audit_entries()
    assert entry.result == "refused"
    assert entry.action == "customer.delete"
    assert entry.actor_id == agent.user_id and entry.actor_name == "agent"
    assert (entry.target_type, entry.target_id) == ("customer", "42")
    assert json.loads(entry.details) == {"missing_permission": "customer.delete"}


def test_refusal_is_audited_even_though_the_service_call_fails(db, actors):
    with pytest.raises(PermissionDenied):
        users.create_user(actors["manager"], "intruder", "Intruder-pass-1", "admin")
    assert [(e.action, e.result) for e in audit_entries()] == [("user.create", "refused")]
    with read_session() as session:
        assert session.exec(select(User).where(User.username == "intruder")).first() is None


@pytest.mark.parametrize(
    ("username", "call"),
    [
        ("agent", lambda a: users.list_users(a)),
        ("manager", lambda a: users.list_roles(a)),
        ("analyst", lambda a: users.set_role_permissions(a, 1, list(rbac.PERMISSIONS))),
        ("senior", lambda a: users.reset_password(a, 1, "Taken-over-pass-1")),
    ],
)
def test_non_admin_roles_cannot_manage_users_or_roles(db, actors, username, call):
    with pytest.raises(PermissionDenied):
        call(actors[username])
    assert [e.result for e in audit_entries()] == ["refused"]


def test_built_in_roles_have_the_intended_sensitive_access(db, actors):
    assert actors["admin"].permissions == frozenset(rbac.PERMISSIONS)
    assert actors["senior"].can("customer.view_sensitive")
    assert actors["manager"].can("customer.view_sensitive")
    assert not actors["agent"].can("customer.view_sensitive")
    assert not actors["analyst"].can("customer.view_sensitive")
    assert not any(actors[name].can("user.manage") for name in ("manager", "analyst", "senior", "agent"))


def test_refuse_audits_the_policy_reason(db, actors):
    with pytest.raises(PermissionDenied) as caught:
        rbac.refuse(actors["analyst"], "export.request", "export.too_many_rows", rows=99)
    assert caught.value.message_key == "export.too_many_rows"
    [entry] = audit_entries()
    assert entry.result == "refused" and json.loads(entry.details) == {"reason": "export.too_many_rows", "rows": 99}


# --- users: the last admin ------------------------------------------------------------------


@pytest.mark.parametrize("change", [{"role_name": "manager"}, {"is_active": False}])
def test_last_active_admin_cannot_be_demoted_or_deactivated(db, actors, change):
    admin = actors["admin"]
    with pytest.raises(ValidationError) as caught:
        users.update_user(admin, admin.user_id, **change)
    assert caught.value.field_errors["role"][0] == "error.last_admin"

    row = user_by_name("admin")
    assert row.is_active is True and row.role_id == role_id("admin")
    [entry] = audit_entries("user.update")
    assert entry.result == "refused" and json.loads(entry.details) == {"reason": "last_admin"}


def test_an_admin_can_be_demoted_when_another_active_admin_remains(db, actors):
    admin = actors["admin"]
    second = users.create_user(admin, "second_admin", "Second-admin-1", "admin")
    users.update_user(admin, admin.user_id, role_name="manager")
    assert user_by_name("admin").role_id == role_id("manager")
    # Now second_admin is the last one.
    second_actor = load_actors()["second_admin"]
    with pytest.raises(ValidationError):
        users.update_user(second_actor, second.id, is_active=False)
    entries = audit_entries("user.update")
    assert [e.result for e in entries] == ["ok", "refused"]
    assert json.loads(entries[0].details) == {"changes": {"role": ["admin", "manager"]}}


def test_an_inactive_admin_does_not_count_as_a_remaining_admin(db, actors):
    admin = actors["admin"]
    second = users.create_user(admin, "second_admin", "Second-admin-1", "admin")
    users.update_user(admin, second.id, is_active=False)
    with pytest.raises(ValidationError):
        users.update_user(admin, admin.user_id, role_name="agent")
    assert user_by_name("admin").role_id == role_id("admin")


def test_other_users_can_still_be_deactivated(db, actors):
    result = users.update_user(actors["admin"], actors["agent"].user_id, is_active=False)
    assert result.is_active is False
    assert user_by_name("agent").is_active is False


def test_unknown_role_name_is_rejected(db, actors):
    with pytest.raises(ValidationError) as caught:
        users.update_user(actors["admin"], actors["agent"].user_id, role_name="superuser")
    assert caught.value.field_errors["role"][0] == "error.unknown_role"
    assert user_by_name("agent").role_id == role_id("agent")


# --- users: role permissions ------------------------------------------------------------------


def test_admin_role_must_keep_user_and_role_management(db, actors):
    before = role_permissions("admin")
    for permissions in (["customer.view"], ["user.manage"], ["role.manage", "customer.view"]):
        with pytest.raises(ValidationError) as caught:
            users.set_role_permissions(actors["admin"], role_id("admin"), permissions)
        assert caught.value.field_errors["permissions"][0] == "error.admin_role_essential"
    assert role_permissions("admin") == before
    assert all(e.result == "refused" for e in audit_entries("role.update"))


def test_admin_role_may_drop_other_permissions(db, actors):
    users.set_role_permissions(actors["admin"], role_id("admin"), ["role.manage", "user.manage", "audit.view"])
    assert set(role_permissions("admin")) == {"role.manage", "user.manage", "audit.view"}


def test_unknown_permission_is_rejected_and_nothing_changes(db, actors):
    before = role_permissions("agent")
    with pytest.raises(ValidationError) as caught:
        users.set_role_permissions(actors["admin"], role_id("agent"), ["customer.view", "customer.steal"])
    key, params = caught.value.field_errors["permissions"]
    assert key == "error.unknown_permission" and "customer.steal" in params["names"]
    assert role_permissions("agent") == before
    assert audit_entries("role.update") == []


def test_role_permission_change_takes_effect_and_is_audited(db, actors):
    users.set_role_permissions(actors["admin"], role_id("agent"), ["customer.view", "customer.view_sensitive"])
    agent = load_actors()["agent"]
    assert agent.permissions == frozenset({"customer.view", "customer.view_sensitive"})
    [entry] = audit_entries("role.update")
    assert json.loads(entry.details) == {
        "granted": ["customer.view_sensitive"],
        "revoked": ["customer.claim", "customer.create", "customer.edit", "tag.assign"],
    }


# --- audit chain -----------------------------------------------------------------------------

SOMEONE = Actor(
    user_id=7,
    username="tester",
    display_name="Tester",
    role_name="admin",
    permissions=frozenset(),
    client_ip="127.0.0.1",
)


def write_entries(count: int) -> None:
    for index in range(count):
        audit.record_now(SOMEONE, "test.event", target_type="thing", target_id=index, details={"n": index, "名": "值"})


def raw(sql: str, **params) -> None:
    with get_engine().begin() as conn:
        conn.execute(text(sql), params)


def test_empty_chain_verifies(db):
    assert verify() == audit.ChainReport(ok=True, checked=0)


def test_fresh_chain_verifies_and_links_entries(db):
    write_entries(5)
    report = verify()
    assert report.ok and report.checked == 5 and report.first_bad_id is None and report.problem == ""
    entries = audit_entries()
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:]))
    with read_session() as session:
        head = json.loads(session.get(AppSetting, audit.HEAD_KEY).value)
    assert head == {"id": 5, "hash": entries[-1].entry_hash, "mac": head["mac"]} and len(head["mac"]) == 64
    assert all(len(e.entry_mac) == 64 and e.entry_mac == audit.compute_mac(e) for e in entries)


def test_chain_of_a_real_workflow_verifies(seeded_db, seeded_actors):
    users.create_user(seeded_actors["admin"], "someone_new", "Someone-new-1", "agent")
    with pytest.raises(PermissionDenied):
        users.list_users(seeded_actors["agent"])
    report = verify()
    assert report.ok and report.checked == len(audit_entries()) >= 3


def test_edited_details_are_detected(db):
    write_entries(5)
    raw("UPDATE audit_entry SET details = :d WHERE id = 3", d=json.dumps({"n": 999}))
    report = verify()
    assert (report.ok, report.first_bad_id, report.problem) == (False, 3, "altered")


@pytest.mark.parametrize("column, value", [("result", "ok2"), ("actor_name", "someone_else"), ("flagged", True)])
def test_any_edited_field_is_detected(db, column, value):
    write_entries(3)
    raw(f"UPDATE audit_entry SET {column} = :v WHERE id = 2", v=value)
    report = verify()
    assert (report.ok, report.first_bad_id, report.problem) == (False, 2, "altered")


def test_edit_with_recomputed_hash_fails_its_mac(db):
    write_entries(5)
    with write_session() as session:
        entry = session.get(AuditEntry, 2)
        entry.details = json.dumps({"n": "forged"})
        entry.entry_hash = audit.compute_hash(entry)
        session.add(entry)
    report = verify()
    assert (report.ok, report.first_bad_id, report.problem) == (False, 2, "forged")


def test_deleted_row_in_the_middle_is_detected(db):
    write_entries(5)
    raw("DELETE FROM audit_entry WHERE id = 3")
    report = verify()
    assert (report.ok, report.first_bad_id, report.problem) == (False, 3, "missing")


def test_deleted_first_row_is_detected(db):
    write_entries(3)
    raw("DELETE FROM audit_entry WHERE id = 1")
    report = verify()
    assert report.ok is False and report.first_bad_id == 2 and report.problem == "broken_link"


def test_deleted_newest_rows_are_detected_through_the_head(db):
    write_entries(5)
    raw("DELETE FROM audit_entry WHERE id >= 4")
    report = verify()
    assert (report.ok, report.problem) == (False, "truncated")


def test_deleting_everything_is_detected(db):
    write_entries(2)
    raw("DELETE FROM audit_entry")
    assert verify().ok is False


def test_removed_head_is_detected(db):
    write_entries(2)
    raw("DELETE FROM app_setting WHERE key = :k", k=audit.HEAD_KEY)
    report = verify()
    assert (report.ok, report.problem) == (False, "head_missing")


def test_chain_continues_correctly_after_verification(db):
    write_entries(2)
    assert verify().ok
    write_entries(2)
    report = verify()
    assert report.ok and report.checked == 4


def test_reordered_rows_are_detected(db):
    """Swapping two entries' positions (ids) breaks the chain at the first of them."""
    write_entries(5)
    raw("UPDATE audit_entry SET id = -2 WHERE id = 2")
    raw("UPDATE audit_entry SET id = 2 WHERE id = 4")
    raw("UPDATE audit_entry SET id = 4 WHERE id = -2")
    report = verify()
    assert report.ok is False and report.first_bad_id == 2


def test_agent_calling_admin_services_directly_is_refused_and_nothing_changes(db, actors):
    """What a crafted websocket event would reach: the service refuses on its own."""
    agent = actors["agent"]
    manager_id = user_by_name("manager").id
    before_role = role_permissions("agent")
    attempts = [
        ("user.update", lambda: users.update_user(agent, manager_id, role_name="agent")),
        ("user.reset_password", lambda: users.reset_password(agent, manager_id, "New-passw0rd-x")),
        ("role.update", lambda: users.set_role_permissions(agent, role_id("agent"), list(rbac.PERMISSIONS))),
        ("user.create", lambda: users.create_user(agent, "sneaky", "Sneaky-pass-2026", "admin")),
    ]
    for action, attempt in attempts:
        with pytest.raises(PermissionDenied):
            attempt()
        refusals = [e for e in audit_entries(action) if e.result == "refused" and e.actor_name == "agent"]
        assert refusals, action
    with read_session() as session:
        manager = session.exec(select(User).where(User.username == "manager")).one()
        assert session.get(Role, manager.role_id).name == "manager"
        assert session.exec(select(User).where(User.username == "sneaky")).first() is None
    assert role_permissions("agent") == before_role
    assert verify().ok
