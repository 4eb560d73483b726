"""State of /admin/users: the user list and the admin's actions on one user."""

from __future__ import annotations

import dataclasses

import reflex as rx

from meiqia_app.services import users
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.state.base import AppState
from meiqia_app.timeutil import format_local


@dataclasses.dataclass
class UserRowView:
    id: int
    username: str
    display_name: str
    role: str
    role_label_zh: str
    role_label_en: str
    is_active: bool
    totp_enrolled: bool
    locked: bool
    last_login: str
    active_sessions: int


@dataclasses.dataclass
class RoleChoice:
    name: str
    label_zh: str
    label_en: str


CONFIRMABLE = ("reset_totp", "deactivate", "revoke")


class AdminUsersState(AppState):
    rows: list[UserRowView] = []
    role_choices: list[RoleChoice] = []

    create_open: bool = False
    create_errors: dict[str, str] = {}

    password_open: bool = False
    password_error: str = ""

    confirm_open: bool = False
    confirm_action: str = ""

    target_id: int = 0
    target_username: str = ""

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        found = await self._call(users.list_users, actor)
        roles = await self._call(users.list_roles, actor) if actor.can("role.manage") else []
        self.rows = [
            UserRowView(
                id=u["id"],
                username=u["username"],
                display_name=u["display_name"],
                role=u["role"],
                role_label_zh=u["role_label_zh"] or u["role"],
                role_label_en=u["role_label_en"] or u["role"],
                is_active=u["is_active"],
                totp_enrolled=u["totp_enrolled"],
                locked=u["locked"],
                last_login=format_local(u["last_login_at"]),
                active_sessions=u["active_sessions"],
            )
            for u in found
        ]
        if roles:
            self.role_choices = [RoleChoice(r["name"], r["label_zh"], r["label_en"]) for r in roles]
        else:
            seen: dict[str, RoleChoice] = {}
            for row in self.rows:
                seen.setdefault(row.role, RoleChoice(row.role, row.role_label_zh, row.role_label_en))
            self.role_choices = list(seen.values())

    def _username_of(self, user_id: int) -> str:
        return next((row.username for row in self.rows if row.id == user_id), "")

    @rx.event
    async def on_load(self):
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)

    # --- create ---------------------------------------------------------------------
    @rx.event
    def open_create(self):
        self.create_errors = {}
        self.create_open = True

    @rx.event
    def set_create_open(self, value: bool):
        self.create_open = bool(value)

    @rx.event
    async def create_user(self, form: dict):
        self.create_errors = {}
        username = str(form.get("username", ""))[:64]
        try:
            actor = self._actor()
            await self._call(
                users.create_user,
                actor,
                username,
                str(form.get("password", ""))[:256],
                str(form.get("role", ""))[:32],
                str(form.get("display_name", ""))[:64],
            )
            self.create_open = False
            await self._reload()
        except ValidationError as error:
            self.create_errors = self._field_errors(error)
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("users.created", username=username))

    # --- one user ---------------------------------------------------------------------
    @rx.event
    async def change_role(self, user_id: int, role_name: str):
        try:
            actor = self._actor()
            await self._call(users.update_user, actor, self._as_id(user_id), role_name=str(role_name)[:32])
        except AppError as error:
            await self._reload()  # put the select back to the stored role
            return self._on_error(error)
        await self._reload()
        return rx.toast.success(self._tr("users.updated", username=self._username_of(self._as_id(user_id))))

    @rx.event
    async def activate(self, user_id: int):
        return await self._set_active(user_id, True)

    async def _set_active(self, user_id: int, active: bool):
        try:
            actor = self._actor()
            await self._call(users.update_user, actor, self._as_id(user_id), is_active=active)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("users.updated", username=self._username_of(self._as_id(user_id))))

    @rx.event
    async def unlock(self, user_id: int):
        try:
            actor = self._actor()
            await self._call(users.unlock_user, actor, self._as_id(user_id))
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("users.unlocked"))

    @rx.event
    def ask(self, action: str, user_id: int):
        """Open the confirmation for a destructive action."""
        if action not in CONFIRMABLE:
            return None
        self.confirm_action = action
        self.target_id = self._as_id(user_id)
        self.target_username = self._username_of(self.target_id)
        self.confirm_open = True
        return None

    @rx.event
    def set_confirm_open(self, value: bool):
        self.confirm_open = bool(value)

    @rx.event
    async def confirm(self):
        action, user_id = self.confirm_action, self.target_id
        self.confirm_open = False
        try:
            actor = self._actor()
            if action == "reset_totp":
                await self._call(users.reset_totp, actor, user_id)
                message = self._tr("users.totp_was_reset", username=self.target_username)
            elif action == "deactivate":
                await self._call(users.update_user, actor, user_id, is_active=False)
                message = self._tr("users.updated", username=self.target_username)
            elif action == "revoke":
                count = await self._call(users.revoke_user_sessions, actor, user_id)
                message = self._tr("users.sessions_revoked", count=count)
            else:
                return None
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(message)

    @rx.event
    def open_password(self, user_id: int):
        self.target_id = self._as_id(user_id)
        self.target_username = self._username_of(self.target_id)
        self.password_error = ""
        self.password_open = True

    @rx.event
    def set_password_open(self, value: bool):
        self.password_open = bool(value)

    @rx.event
    async def reset_password(self, form: dict):
        self.password_error = ""
        try:
            actor = self._actor()
            await self._call(users.reset_password, actor, self.target_id, str(form.get("new_password", ""))[:256])
            self.password_open = False
            await self._reload()
        except ValidationError as error:
            self.password_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("users.password_was_reset", username=self.target_username))
