"""Managing users and roles (AUTH-6, RBAC-1, RBAC-4, RBAC-5)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

from sqlalchemy import func
from sqlmodel import Session, select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import LoginThrottle, Role, Team, User, UserSession
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity import passwords, second_factor, sessions
from meiqia_app.services.identity import throttling as login_throttling
from meiqia_app.services.identity.rbac import (
    ADMIN_ROLE,
    BUILTIN_ROLES,
    DEFAULT_EXPORT_POLICIES,
    PERMISSIONS,
    Actor,
    ExportPolicy,
    require,
    validate_permissions,
)
from meiqia_app.timeutil import utcnow

USERNAME_PATTERN = re.compile(r"^[a-zA-Z0-9_.-]{3,32}$")
ROLE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{2,31}$")
# An admin role must keep these, or nobody could manage users and roles again.
ADMIN_ESSENTIAL = frozenset({"user.manage", "role.manage"})


def _default_policy(role_name: str) -> ExportPolicy:
    policy = DEFAULT_EXPORT_POLICIES.get(
        role_name, ExportPolicy(max_rows=1000, bulk_allowed=False, approval_required=True)
    )
    if role_name == "data_analyst":
        from meiqia_app.services.exports.fields import EXPORT_FIELDS, sensitive_export_fields

        policy = dataclasses.replace(
            policy, allowed_fields=tuple(f for f in EXPORT_FIELDS if f not in sensitive_export_fields())
        )
    return policy


def ensure_builtin_roles(session: Session) -> dict[str, Role]:
    """Create the built-in roles that are missing (existing ones keep their edits)."""
    roles = {role.name: role for role in session.exec(select(Role)).all()}
    for name, spec in BUILTIN_ROLES.items():
        if name in roles:
            continue
        role = Role(
            name=name,
            label_zh=spec["label_zh"],
            label_en=spec["label_en"],
            is_builtin=True,
            permissions=json.dumps(list(spec["permissions"])),
            export_policy=_default_policy(name).to_json(),
            data_scope=spec.get("data_scope", "all"),
        )
        session.add(role)
        roles[name] = role
    session.flush()
    return roles


# --- DTOs -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoleInfo:
    """A role as the roles page and the CLI show it."""

    id: int
    name: str
    label_zh: str
    label_en: str
    is_builtin: bool
    permissions: list[str]
    export_policy: dict[str, object]  # ExportPolicy's fields (services/exports/policy.py)
    data_scope: str
    user_count: int = 0


@dataclasses.dataclass(frozen=True)
class UserInfo:
    """A user account as the users page shows it (never the password hash or TOTP secret)."""

    id: int
    username: str
    display_name: str
    role: str
    role_label_zh: str
    role_label_en: str
    is_active: bool
    totp_enrolled: bool
    last_login_at: dt.datetime | None
    active_sessions: int = 0
    locked: bool = False
    team_id: int | None = None
    team_name: str = ""


def role_dto(role: Role, user_count: int = 0) -> RoleInfo:
    return RoleInfo(
        id=role.id,
        name=role.name,
        label_zh=role.label_zh or role.name,
        label_en=role.label_en or role.name,
        is_builtin=role.is_builtin,
        permissions=json.loads(role.permissions),
        export_policy=json.loads(role.export_policy or "{}"),
        data_scope=role.data_scope or "all",
        user_count=user_count,
    )


def user_dto(user: User, role: Role, active_sessions: int = 0, locked: bool = False, team_name: str = "") -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=role.name,
        role_label_zh=role.label_zh,
        role_label_en=role.label_en,
        is_active=user.is_active,
        totp_enrolled=user.totp_secret_enc is not None,
        last_login_at=user.last_login_at,
        active_sessions=active_sessions,
        locked=locked,
        team_id=user.team_id,
        team_name=team_name,
    )


# --- users ------------------------------------------------------------------------


def _role_by_name(session: Session, name: str) -> Role:
    role = session.exec(select(Role).where(Role.name == name)).first()
    if role is None:
        raise ValidationError.single("role", "error.unknown_role", name=name)
    return role


def _active_admin_count(session: Session, excluding_user_id: int | None = None) -> int:
    query = (
        select(func.count())
        .select_from(User)
        .join(Role, Role.id == User.role_id)
        .where(Role.name == ADMIN_ROLE, User.is_active.is_(True))
    )
    if excluding_user_id is not None:
        query = query.where(User.id != excluding_user_id)
    return session.exec(query).one()


def create_user_record(
    session: Session,
    username: str,
    password: str,
    role_name: str,
    display_name: str = "",
    totp_secret: str | None = None,
) -> User:
    """Create a user (no permission check: CLI, seeding, and create_user below)."""
    username = (username or "").strip()
    if not USERNAME_PATTERN.match(username):
        raise ValidationError.single("username", "error.username_invalid")
    if session.exec(select(User).where(func.lower(User.username) == username.lower())).first():
        raise ValidationError.single("username", "error.username_taken")
    passwords.validate_password(password, username, display_name)
    role = _role_by_name(session, role_name)
    user = User(
        username=username,
        display_name=(display_name or username).strip()[:64],
        password_hash=passwords.hash_password(password),
        role_id=role.id,
    )
    if totp_secret:
        secret = totp_secret.strip().replace(" ", "").upper()
        if not re.fullmatch(r"[A-Z2-7]{16,64}=*", secret):
            raise ValidationError.single("totp_secret", "auth.totp_secret_invalid")
        user.totp_secret_enc = second_factor.encrypt_secret(secret)
        user.totp_enrolled_at = utcnow()
    session.add(user)
    session.flush()
    return user


def list_users(actor: Actor) -> list[UserInfo]:
    require(actor, "user.manage", action="user.list")
    with read_session() as session:
        counts = dict(
            session.exec(
                select(UserSession.user_id, func.count())
                .where(UserSession.revoked_at.is_(None), UserSession.expires_at > utcnow())
                .group_by(UserSession.user_id)
            ).all()
        )
        locked = set(
            session.exec(select(LoginThrottle.username_key).where(LoginThrottle.locked_until > utcnow())).all()
        )
        rows = session.exec(select(User, Role).join(Role, Role.id == User.role_id).order_by(User.id)).all()
        teams = dict(session.exec(select(Team.id, Team.name)).all())
        return [
            user_dto(
                user,
                role,
                counts.get(user.id, 0),
                login_throttling.throttle_key(user.username) in locked,
                teams.get(user.team_id, "") if user.team_id else "",
            )
            for user, role in rows
        ]


def create_user(actor: Actor, username: str, password: str, role_name: str, display_name: str = "") -> UserInfo:
    require(actor, "user.manage", action="user.create")
    with write_session() as session:
        user = create_user_record(session, username, password, role_name, display_name)
        role = session.get(Role, user.role_id)
        audit.record(
            session,
            actor,
            "user.create",
            target_type="user",
            target_id=user.id,
            details={"username": user.username, "role": role.name},
        )
        return user_dto(user, role)


def update_user(
    actor: Actor,
    user_id: int,
    *,
    display_name: str | None = None,
    role_name: str | None = None,
    is_active: bool | None = None,
) -> UserInfo:
    require(actor, "user.manage", action="user.update", target_type="user", target_id=user_id)
    with write_session() as session:
        user = session.get(User, int(user_id))
        if user is None:
            raise NotFound()
        role = session.get(Role, user.role_id)
        changes: dict[str, list] = {}
        removing_admin = role.name == ADMIN_ROLE and (
            (role_name is not None and role_name != ADMIN_ROLE) or is_active is False
        )
        if removing_admin and user.is_active and _active_admin_count(session, excluding_user_id=user.id) == 0:
            audit.record(
                session,
                actor,
                "user.update",
                result="refused",
                target_type="user",
                target_id=user.id,
                details={"reason": "last_admin"},
            )
            session.commit()
            raise ValidationError.single("role", "error.last_admin")
        if display_name is not None and display_name.strip() != user.display_name:
            changes["display_name"] = [user.display_name, display_name.strip()[:64]]
            user.display_name = display_name.strip()[:64]
        if role_name is not None and role_name != role.name:
            new_role = _role_by_name(session, role_name)
            changes["role"] = [role.name, new_role.name]
            user.role_id = new_role.id
            role = new_role
        if is_active is not None and bool(is_active) != user.is_active:
            changes["is_active"] = [user.is_active, bool(is_active)]
            user.is_active = bool(is_active)
            if not user.is_active:
                sessions.revoke_sessions(session, user.id, "deactivated")
        user.updated_at = utcnow()
        session.add(user)
        if changes:
            audit.record(
                session, actor, "user.update", target_type="user", target_id=user.id, details={"changes": changes}
            )
        return user_dto(user, role)


def reset_password(actor: Actor, user_id: int, new_password: str) -> None:
    require(actor, "user.manage", action="user.reset_password", target_type="user", target_id=user_id)
    with write_session() as session:
        user = session.get(User, int(user_id))
        if user is None:
            raise NotFound()
        passwords.validate_password(new_password, user.username, user.display_name)
        user.password_hash = passwords.hash_password(new_password)
        user.password_changed_at = utcnow()
        revoked = sessions.revoke_sessions(session, user.id, "password_reset")
        login_throttling.unlock(session, user.username)
        audit.record(
            session,
            actor,
            "user.reset_password",
            target_type="user",
            target_id=user.id,
            details={"sessions_revoked": revoked},
        )


def reset_totp(actor: Actor, user_id: int) -> None:
    """Forget a user's TOTP secret and recovery codes: they enrol again at next login."""
    require(actor, "user.manage", action="user.reset_totp", target_type="user", target_id=user_id)
    with write_session() as session:
        user = session.get(User, int(user_id))
        if user is None:
            raise NotFound()
        user.totp_secret_enc = None
        user.totp_enrolled_at = None
        user.totp_last_step = 0
        second_factor.store_recovery_codes(session, user.id, [])
        revoked = sessions.revoke_sessions(session, user.id, "totp_reset")
        audit.record(
            session,
            actor,
            "user.reset_totp",
            target_type="user",
            target_id=user.id,
            details={"sessions_revoked": revoked},
        )


def revoke_user_sessions(actor: Actor, user_id: int) -> int:
    require(actor, "user.manage", action="user.revoke_sessions", target_type="user", target_id=user_id)
    with write_session() as session:
        count = sessions.revoke_sessions(session, int(user_id), "admin_revoked")
        audit.record(
            session, actor, "user.revoke_sessions", target_type="user", target_id=user_id, details={"sessions": count}
        )
    return count


def unlock_user(actor: Actor, user_id: int) -> None:
    require(actor, "user.manage", action="user.unlock", target_type="user", target_id=user_id)
    with write_session() as session:
        user = session.get(User, int(user_id))
        if user is None:
            raise NotFound()
        login_throttling.unlock(session, user.username)
        audit.record(session, actor, "user.unlock", target_type="user", target_id=user.id)


# --- roles ------------------------------------------------------------------------


def list_roles(actor: Actor) -> list[RoleInfo]:
    require(actor, "role.manage", action="role.list")
    with read_session() as session:
        counts = dict(session.exec(select(User.role_id, func.count()).group_by(User.role_id)).all())
        return [role_dto(role, counts.get(role.id, 0)) for role in session.exec(select(Role).order_by(Role.id)).all()]


def role_names(session: Session) -> list[str]:
    return list(session.exec(select(Role.name).order_by(Role.id)).all())


def create_role(actor: Actor, name: str, label_zh: str, label_en: str, permissions: list[str]) -> RoleInfo:
    require(actor, "role.manage", action="role.create")
    name = (name or "").strip().lower()
    if not ROLE_NAME_PATTERN.match(name):
        raise ValidationError.single("name", "error.role_name_invalid")
    permissions = validate_permissions(permissions)
    with write_session() as session:
        if session.exec(select(Role).where(Role.name == name)).first():
            raise ValidationError.single("name", "error.role_name_taken")
        role = Role(
            name=name,
            label_zh=(label_zh or name).strip()[:64],
            label_en=(label_en or name).strip()[:64],
            permissions=json.dumps(permissions),
            export_policy=ExportPolicy(max_rows=1000, bulk_allowed=False, approval_required=True).to_json(),
        )
        session.add(role)
        session.flush()
        audit.record(
            session,
            actor,
            "role.create",
            target_type="role",
            target_id=role.id,
            details={"name": name, "permissions": permissions},
        )
        return role_dto(role)


def set_role_permissions(actor: Actor, role_id: int, permissions: list[str]) -> RoleInfo:
    require(actor, "role.manage", action="role.update", target_type="role", target_id=role_id)
    permissions = validate_permissions(permissions)
    with write_session() as session:
        role = session.get(Role, int(role_id))
        if role is None:
            raise NotFound()
        if role.name == ADMIN_ROLE and not ADMIN_ESSENTIAL.issubset(permissions):
            audit.record(
                session,
                actor,
                "role.update",
                result="refused",
                target_type="role",
                target_id=role.id,
                details={"reason": "admin_essential"},
            )
            session.commit()
            raise ValidationError.single("permissions", "error.admin_role_essential")
        before = set(json.loads(role.permissions))
        role.permissions = json.dumps(permissions)
        role.updated_at = utcnow()
        session.add(role)
        audit.record(
            session,
            actor,
            "role.update",
            target_type="role",
            target_id=role.id,
            details={
                "granted": sorted(set(permissions) - before),
                "revoked": sorted(before - set(permissions)),
            },
        )
        return role_dto(role)


def set_role_scope(actor: Actor, role_id: int, scope: str) -> RoleInfo:
    """The role's data scope (own_pool | team_pool | team | all): which customers its users reach."""
    from meiqia_app.models.auth import DATA_SCOPES

    require(actor, "role.manage", action="role.data_scope", target_type="role", target_id=role_id)
    if scope not in DATA_SCOPES:
        raise ValidationError.single("data_scope", "error.bad_choice")
    with write_session() as session:
        role = session.get(Role, int(role_id))
        if role is None:
            raise NotFound()
        before = role.data_scope or "all"
        if before == scope:
            return role_dto(role)
        role.data_scope = scope
        role.updated_at = utcnow()
        session.add(role)
        audit.record(
            session,
            actor,
            "role.data_scope",
            target_type="role",
            target_id=role.id,
            details={"before": before, "after": scope},
        )
        return role_dto(role)


def get_export_policy(actor: Actor, role_id: int) -> ExportPolicy:
    require(actor, "role.manage", action="role.export_policy", target_type="role", target_id=role_id)
    with read_session() as session:
        role = session.get(Role, int(role_id))
        if role is None:
            raise NotFound()
        return ExportPolicy.from_json(role.export_policy)


def set_export_policy(actor: Actor, role_id: int, policy: ExportPolicy) -> RoleInfo:
    require(actor, "role.manage", action="role.export_policy", target_type="role", target_id=role_id)
    if policy.max_rows < 0 or policy.window_days < 0 or policy.approval_over_rows < 0:
        raise ValidationError.single("export_policy", "error.policy_negative")
    with write_session() as session:
        role = session.get(Role, int(role_id))
        if role is None:
            raise NotFound()
        before = json.loads(role.export_policy or "{}")
        role.export_policy = policy.to_json()
        role.updated_at = utcnow()
        session.add(role)
        audit.record(
            session,
            actor,
            "role.export_policy",
            target_type="role",
            target_id=role.id,
            details={"before": before, "after": json.loads(role.export_policy)},
        )
        return role_dto(role)


def delete_role(actor: Actor, role_id: int) -> None:
    require(actor, "role.manage", action="role.delete", target_type="role", target_id=role_id)
    with write_session() as session:
        role = session.get(Role, int(role_id))
        if role is None:
            raise NotFound()
        if role.is_builtin:
            raise ValidationError.single("role", "error.builtin_role")
        in_use = session.exec(select(func.count()).select_from(User).where(User.role_id == role.id)).one()
        if in_use:
            raise ValidationError.single("role", "error.role_in_use", count=in_use)
        session.delete(role)
        audit.record(session, actor, "role.delete", target_type="role", target_id=role_id, details={"name": role.name})


def all_permissions() -> tuple[str, ...]:
    return PERMISSIONS
