"""State of /admin/users: the user list and the admin's actions on one user."""

from __future__ import annotations

import dataclasses

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.identity import teams, users
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
    # The team select's value: the team id as text, "none" for no team.
    team: str = "none"


@dataclasses.dataclass
class TeamRowView:
    id: int
    name: str
    # The lead select's value: the user id as text, "none" for no lead.
    lead: str
    members: str
    member_count: int


@dataclasses.dataclass
class Choice:
    value: str
    label: str


@dataclasses.dataclass
class RoleChoice:
    name: str
    label_zh: str
    label_en: str


CONFIRMABLE = ("reset_totp", "deactivate", "revoke")


class AdminUsersState(AppState):
    rows: list[UserRowView] = []
    role_choices: list[RoleChoice] = []
    teams: list[TeamRowView] = []
    team_choices: list[Choice] = []
    user_choices: list[Choice] = []
    team_error: str = ""

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
                id=u.id,
                username=u.username,
                display_name=u.display_name,
                role=u.role,
                role_label_zh=u.role_label_zh or u.role,
                role_label_en=u.role_label_en or u.role,
                is_active=u.is_active,
                totp_enrolled=u.totp_enrolled,
                locked=u.locked,
                last_login=format_local(u.last_login_at),
                active_sessions=u.active_sessions,
                team=str(u.team_id) if u.team_id else "none",
            )
            for u in found
        ]
        found_teams = await self._call(teams.list_teams, actor)
        self.teams = [
            TeamRowView(
                id=t.id,
                name=t.name,
                lead=str(t.lead_id) if t.lead_id else "none",
                members="、".join(m.name for m in t.members),
                member_count=len(t.members),
            )
            for t in found_teams
        ]
        self.team_choices = [Choice(str(t.id), t.name) for t in found_teams]
        self.user_choices = [Choice(str(u.id), u.display_name or u.username) for u in self.rows if u.is_active]
        if roles:
            self.role_choices = [RoleChoice(r.name, r.label_zh, r.label_en) for r in roles]
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

    # --- teams ------------------------------------------------------------------------
    async def _team_call(self, build, done_key: str = "", **params):
        """Run ``build()`` -> (service, args) as the admin; field errors show under the teams."""
        self.team_error = ""
        try:
            function, args = build()
            await self._call(function, self._actor(), *args)
            await self._reload()
        except ValidationError as error:
            self.team_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            await self._reload()
            return None
        except AppError as error:
            await self._reload()
            return self._on_error(error)
        return rx.toast.success(self._tr(done_key, **params)) if done_key else None

    def _team_name(self, team_id: object) -> str:
        return next((t.name for t in self.teams if str(t.id) == str(team_id)), "")

    @staticmethod
    def _optional_id(value: object) -> int | None:
        return None if value in ("none", "", None) else AppState._as_id(value)

    @rx.event
    async def create_team(self, form: dict):
        name = str(form.get("team_name", "") if isinstance(form, dict) else "")[:64]
        return await self._team_call(lambda: (teams.create_team, (name,)), "team.created", name=name)

    @rx.event
    async def rename_team(self, team_id: int, name: str):
        name = str(name or "").strip()[:64]
        if not name or name == self._team_name(team_id):
            return None
        return await self._team_call(
            lambda: (teams.rename_team, (self._as_id(team_id), name)), "team.renamed", name=name
        )

    @rx.event
    async def delete_team(self, team_id: int):
        name = self._team_name(team_id)
        return await self._team_call(lambda: (teams.delete_team, (self._as_id(team_id),)), "team.deleted", name=name)

    @rx.event
    async def set_team_lead(self, team_id: int, user_value: str):
        return await self._team_call(
            lambda: (teams.set_lead, (self._as_id(team_id), self._optional_id(user_value))), "team.lead_set"
        )

    @rx.event
    async def change_team(self, user_id: int, team_value: str):
        username = self._username_of(user_id if isinstance(user_id, int) else -1)
        return await self._team_call(
            lambda: (teams.set_user_team, (self._as_id(user_id), self._optional_id(team_value))),
            "team.member_set",
            name=username,
        )

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
