"""The audit log in words (services/audit/sentences.py): every action the code writes
reads as a sentence in both languages, names come from today's rows in one query per
kind, and the raw entry stays one click away."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event
from sqlmodel import select

from meiqia_app.db import get_engine, read_session
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.models import Role
from meiqia_app.services.audit import log as audit
from meiqia_app.services.audit import reading as audit_log
from meiqia_app.services.audit import sentences as audit_sentences
from meiqia_app.services.audit.reading import AuditFilter
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.identity import users
from tests.unit.audit_actions import actions_in_code


def _role_id(name: str) -> int:
    with read_session() as session:
        return session.exec(select(Role.id).where(Role.name == name)).one()


def _newest(actor, action: str, **filters):
    rows = audit_log.list_entries(actor, AuditFilter.from_dict({"action": action, **filters})).rows
    assert rows, f"no {action} entry"
    return rows[0]


# --- every action has its words -------------------------------------------------------------


def test_the_scan_finds_actions_however_they_are_written():
    found, unresolved = actions_in_code()
    assert unresolved == []
    assert found["export.reject"] == {"record"}  # "export.approve" if approve else "export.reject"
    assert "refusal" in found["note.update"]  # a helper's parameter (_require_note_access)
    assert "refusal" in found["upload"]  # asyncio.to_thread(audit.record_refusal, actor, "upload")
    assert "record" in found["cleanup.purge"]  # f"cleanup.{action}"
    assert found["auth.session_revoke"] == {"record"}
    assert len(found) > 120


def test_every_action_the_code_writes_has_a_label_and_a_sentence():
    found, _unresolved = actions_in_code()
    unknown = sorted(set(found) - audit_sentences.KNOWN_ACTIONS)
    assert unknown == [], "add these to PHRASES (or REFUSAL_ONLY) in services/audit/sentences.py"
    done_without_sentence = sorted(
        a for a, kinds in found.items() if "record" in kinds and a not in audit_sentences.PHRASES
    )
    assert done_without_sentence == []
    missing = sorted(
        key
        for action in found
        for key in (audit_sentences.label_key(action), *audit_sentences.sentence_keys(action))
        if key not in ENTRIES
    )
    assert missing == [], "add these to i18n/messages_audit.py"


def test_the_registry_lists_no_action_the_code_does_not_write():
    found, _unresolved = actions_in_code()
    assert sorted(audit_sentences.KNOWN_ACTIONS - set(found)) == []
    assert audit_sentences.REFUSAL_ONLY.isdisjoint(audit_sentences.PHRASES)


def test_every_sentence_gets_each_of_its_placeholders():
    """A placeholder the phrase does not fill would show as "{name}" on the page."""
    import string

    def placeholders(text: str) -> set[str]:
        return {field for _, field, _, _ in string.Formatter().parse(text) if field}

    unfilled = {}
    for action, phrase in audit_sentences.PHRASES.items():
        ctx = audit_sentences.Ctx({}, "7", audit_sentences.Names(), "zh")
        made = phrase.params(ctx)
        params = set(made[1] if isinstance(made, tuple) else made) | {"actor"}
        for key in audit_sentences.sentence_keys(action):
            for text in ENTRIES[key]:
                if placeholders(text) - params:
                    unfilled[key] = sorted(placeholders(text) - params)
    assert unfilled == {}


# --- sentences ---------------------------------------------------------------------------------


def test_a_role_change_names_the_permission_and_the_role_in_both_languages(actors):
    analyst = _role_id("data_analyst")
    with read_session() as session:
        granted = json.loads(session.get(Role, analyst).permissions)
    users.set_role_permissions(actors["admin"], analyst, [p for p in granted if p != "report.view"])
    users.set_role_permissions(actors["admin"], analyst, granted)

    grant, revoke = audit_log.list_entries(actors["admin"], AuditFilter.from_dict({"action": "role.update"})).rows[:2]

    assert grant.sentence_zh == "系统管理员 把「查看报告」授予角色「数据分析师」"
    assert grant.sentence_en == "系统管理员 granted “View reports” to the role “Data analyst”"
    assert revoke.sentence_zh == "系统管理员 收回了角色「数据分析师」的「查看报告」"
    # the raw entry is kept as it was written, one click away
    assert grant.action == "role.update" and grant.target == f"role:{analyst}"
    assert json.loads(grant.details) == {"granted": ["report.view"], "revoked": []}


def test_a_refusal_says_what_was_refused_and_which_permission_was_missing(actors):
    with pytest.raises(PermissionDenied):
        audit_log.list_entries(actors["agent"], AuditFilter())
    row = _newest(actors["admin"], "audit.list", result="refused")
    assert row.sentence_zh == "客服小美 的操作被拒绝：查看审计日志（缺少权限「查看审计日志」）"
    assert row.sentence_en == "客服小美 was refused: viewing the audit log (missing permission “View the audit log”)"


def test_sentences_name_fields_never_values_and_translate_reasons(actors):
    manager, admin = actors["manager"], actors["admin"]
    audit.record_now(
        manager,
        "customer.update",
        target_type="customer",
        target_id=42,
        details={"changes": {"phone": ["138****5678", "139****1234"], "city": ["杭州", "上海"]}, "version": 3},
    )
    audit.record_now(
        audit_sentences_anonymous("ghost"),
        "auth.login",
        result="refused",
        details={"reason": "unknown_user", "locked": False},
    )
    changed = _newest(admin, "customer.update")
    assert changed.sentence_zh == "王经理 修改了客户 #42 的城市、电话"
    assert changed.sentence_en == "王经理 changed customer #42: City, Phone"
    assert "138" not in changed.sentence_zh + changed.sentence_en and "杭州" not in changed.sentence_zh
    assert "138****5678" in changed.details  # the masked values stay in the raw entry
    login = _newest(admin, "auth.login", result="refused")
    assert login.sentence_zh == "登录名“ghost” 的操作被拒绝：登录（用户名不存在）"
    assert login.sentence_en == "Login name “ghost” was refused: logging in (no such username)"


def audit_sentences_anonymous(name: str):
    from meiqia_app.services.identity.rbac import Actor

    return Actor(user_id=None, username=name, display_name="", role_name="", permissions=frozenset())


def test_an_unknown_action_still_reads(actors):
    audit.record_now(actors["admin"], "legacy.thing", details={"x": 1})
    row = _newest(actors["admin"], "legacy.thing")
    assert row.sentence_zh == "系统管理员：legacy.thing" and row.sentence_en == "系统管理员: legacy.thing"


def test_names_are_looked_up_once_per_kind_for_the_whole_page(actors):
    admin = actors["admin"]
    for name in ("agent", "senior_agent", "data_analyst", "manager"):
        role_id = _role_id(name)
        with read_session() as session:
            permissions = json.loads(session.get(Role, role_id).permissions)
        users.set_role_permissions(admin, role_id, [*permissions, "audit.view"])
        users.set_role_permissions(admin, role_id, permissions)
    for username in ("agent", "senior", "analyst"):
        audit.record_now(admin, "user.unlock", target_type="user", target_id=actors[username].user_id)

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        rows = audit_log.list_entries(admin, AuditFilter(), limit=50).rows
    finally:
        event.remove(engine, "before_cursor_execute", count)

    unlocked = [r.sentence_zh for r in rows if r.action == "user.unlock"]
    assert unlocked == [
        "系统管理员 解锁了用户 数据分析师小陈",
        "系统管理员 解锁了用户 高级客服小林",
        "系统管理员 解锁了用户 客服小美",
    ]
    assert sum(r.action == "role.update" for r in rows) == 8
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 3, selects  # the entries, the roles, the users: not one per row


def test_a_lockout_names_the_locked_account(actors):
    from meiqia_app.config import get_settings
    from meiqia_app.services.identity import login as auth
    from meiqia_app.services.identity.tokens import AuthError

    for _ in range(get_settings().lockout_threshold):
        with pytest.raises(AuthError):
            auth.begin_login("agent", "Wrong-password-1", "10.0.0.9")
    row = _newest(actors["admin"], "auth.lockout")
    assert row.sentence_zh == "用户 客服小美 的账户因多次登录失败被锁定"
    assert row.sentence_en == "客服小美's account was locked after repeated failed logins"
