"""State of /admin/roles: the permission matrix, custom roles, export policies."""

from __future__ import annotations

import dataclasses

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.identity import users
from meiqia_app.services.identity.rbac import PERMISSIONS, ExportPolicy
from meiqia_app.state.base import AppState


@dataclasses.dataclass
class RoleView:
    id: int
    name: str
    label_zh: str
    label_en: str
    is_builtin: bool
    permissions: list[str]
    user_count: int
    max_rows: int
    window_days: int
    bulk_allowed: bool
    approval_required: bool
    approval_over_rows: int
    data_scope: str = "all"


def _view(role: users.RoleInfo) -> RoleView:
    policy = role.export_policy
    return RoleView(
        id=role.id,
        name=role.name,
        label_zh=role.label_zh,
        label_en=role.label_en,
        is_builtin=role.is_builtin,
        permissions=list(role.permissions),
        user_count=role.user_count,
        max_rows=int(policy.get("max_rows", 0)),
        window_days=int(policy.get("window_days", 0)),
        bulk_allowed=bool(policy.get("bulk_allowed", True)),
        approval_required=bool(policy.get("approval_required", False)),
        approval_over_rows=int(policy.get("approval_over_rows", 0)),
        data_scope=role.data_scope,
    )


def _non_negative_int(raw: object) -> int:
    try:
        value = int(str(raw or "0").strip())
    except ValueError:
        raise ValidationError.single("export_policy", "error.bad_number") from None
    if value < 0:
        raise ValidationError.single("export_policy", "error.bad_number")
    return value


class AdminRolesState(AppState):
    roles: list[RoleView] = []
    permissions: list[str] = list(PERMISSIONS)

    create_open: bool = False
    create_errors: dict[str, str] = {}

    policy_open: bool = False
    policy_role: RoleView | None = None
    policy_error: str = ""

    delete_open: bool = False
    delete_id: int = 0
    delete_name: str = ""

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        self.roles = [_view(role) for role in await self._call(users.list_roles, actor)]

    def _role(self, role_id: int) -> RoleView | None:
        return next((role for role in self.roles if role.id == role_id), None)

    @rx.event
    async def on_load(self):
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def set_scope(self, role_id: int, scope: str):
        """The role's data scope (which customers, by owner): saved at once."""
        try:
            actor = self._actor()
            role = self._role(self._as_id(role_id))
            if role is None:
                raise ValidationError.single("data_scope", "error.bad_choice")
            await self._call(users.set_role_scope, actor, role.id, str(scope)[:16])
        except AppError as error:
            await self._reload()
            return self._on_error(error)
        await self._reload()
        return rx.toast.success(self._tr("roles.scope_saved", name=role.label_en if self.is_en else role.label_zh))

    @rx.event
    async def toggle(self, role_id: int, permission: str, granted: bool):
        """One tick in the matrix: saved at once, effective at the role's next action."""
        try:
            actor = self._actor()
            role = self._role(self._as_id(role_id))
            if role is None or permission not in PERMISSIONS:
                raise ValidationError.single("permissions", "error.bad_choice")
            wanted = set(role.permissions)
            if granted:
                wanted.add(permission)
            else:
                wanted.discard(permission)
            await self._call(users.set_role_permissions, actor, role.id, sorted(wanted))
        except AppError as error:
            await self._reload()
            return self._on_error(error)
        await self._reload()
        # The admin may have changed their own role: refresh what the sidebar shows.
        self._set_user(self._actor())
        return rx.toast.success(self._tr("roles.saved", name=role.label_en if self.is_en else role.label_zh))

    # --- create / delete ---------------------------------------------------------------
    @rx.event
    def open_create(self):
        self.create_errors = {}
        self.create_open = True

    @rx.event
    def set_create_open(self, value: bool):
        self.create_open = bool(value)

    @rx.event
    async def create_role(self, form: dict):
        self.create_errors = {}
        name = str(form.get("name", ""))[:32]
        try:
            actor = self._actor()
            await self._call(
                users.create_role,
                actor,
                name,
                str(form.get("label_zh", ""))[:64],
                str(form.get("label_en", ""))[:64],
                [],
            )
            self.create_open = False
            await self._reload()
        except ValidationError as error:
            self.create_errors = self._field_errors(error)
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("roles.created", name=name))

    @rx.event
    def ask_delete(self, role_id: int):
        role = self._role(self._as_id(role_id))
        if role is None or role.is_builtin:
            return None
        self.delete_id, self.delete_name = role.id, role.name
        self.delete_open = True
        return None

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open = bool(value)

    @rx.event
    async def delete_role(self):
        self.delete_open = False
        try:
            actor = self._actor()
            await self._call(users.delete_role, actor, self.delete_id)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("roles.deleted", name=self.delete_name))

    # --- export policy -------------------------------------------------------------------
    @rx.event
    def open_policy(self, role_id: int):
        self.policy_role = self._role(self._as_id(role_id))
        self.policy_error = ""
        self.policy_open = self.policy_role is not None

    @rx.event
    def set_policy_open(self, value: bool):
        self.policy_open = bool(value)

    @rx.event
    async def save_policy(self, form: dict):
        if self.policy_role is None:
            return None
        self.policy_error = ""
        try:
            actor = self._actor()
            policy = ExportPolicy(
                max_rows=_non_negative_int(form.get("max_rows")),
                window_days=_non_negative_int(form.get("window_days")),
                bulk_allowed=form.get("bulk_allowed") in ("on", True, "true"),
                approval_required=form.get("approval_required") in ("on", True, "true"),
                approval_over_rows=_non_negative_int(form.get("approval_over_rows")),
            )
            role_id = self.policy_role.id
            stored = await self._call(users.get_export_policy, actor, role_id)
            policy = dataclasses.replace(
                policy, allowed_fields=stored.allowed_fields, allowed_tag_ids=stored.allowed_tag_ids
            )
            await self._call(users.set_export_policy, actor, role_id, policy)
            self.policy_open = False
            await self._reload()
        except ValidationError as error:
            self.policy_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("roles.policy_saved", name=self.policy_role.name))
