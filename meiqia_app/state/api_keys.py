"""State of /admin/api-keys: create (the key shown once), list, revoke."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.integrations import api_keys
from meiqia_app.state.base import AppState


@dataclasses.dataclass
class ApiKeyRow:
    id: int
    name: str
    prefix: str
    scopes: str
    created_at: str
    created_by: str
    last_used_at: str
    revoked: bool


class ApiKeysState(AppState):
    # The new key is shown once and forgotten (privacy rule 3): never stored with the tab.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"new_key"})

    keys: list[ApiKeyRow] = []
    chosen_scopes: list[str] = []
    name_error: str = ""
    scopes_error: str = ""
    creating: bool = False
    new_key: str = ""
    new_key_name: str = ""
    new_key_open: bool = False
    revoke_open: bool = False
    revoke_id: int = 0
    revoke_name: str = ""

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        views = await self._call(api_keys.list_keys, actor)
        self.keys = [
            ApiKeyRow(
                id=v.id,
                name=v.name,
                prefix=v.prefix,
                scopes=", ".join(v.scopes),
                created_at=v.created_at,
                created_by=v.created_by,
                last_used_at=v.last_used_at,
                revoked=v.revoked,
            )
            for v in views
        ]

    @rx.event
    async def on_load(self):
        self.new_key = ""
        self.new_key_open = False
        self.revoke_open = False
        self.name_error = self.scopes_error = ""
        try:
            await self._reload()
        except AppError as error:
            self.keys = []
            return self._on_error(error)
        return None

    @rx.event
    def toggle_scope(self, scope: str, checked: bool):
        if scope not in api_keys.SCOPES:
            return
        chosen = [s for s in self.chosen_scopes if s != scope]
        if checked is True:
            chosen.append(scope)
        self.chosen_scopes = [s for s in api_keys.SCOPES if s in chosen]

    @rx.event
    async def create(self, form: dict):
        if not isinstance(form, dict):
            return None
        name = str(form.get("name", "") or "")[:100]
        self.name_error = self.scopes_error = ""
        self.creating = True
        try:
            view, raw = await self._call(api_keys.create_key, self._actor(), name, list(self.chosen_scopes))
            await self._reload()
        except ValidationError as error:
            self.creating = False
            errors = self._field_errors(error)
            self.name_error = errors.get("name", "")
            self.scopes_error = errors.get("scopes", "")
            return None
        except AppError as error:
            self.creating = False
            return self._on_error(error)
        self.creating = False
        self.chosen_scopes = []
        self.new_key = raw
        self.new_key_name = view.name
        self.new_key_open = True
        return rx.set_value("api-key-name", "")

    @rx.event
    def close_new_key(self, value: bool = False):
        if value is not True:
            self.new_key_open = False
            self.new_key = ""

    @rx.event
    def ask_revoke(self, key_id: int):
        try:
            key_id = self._as_id(key_id)
        except AppError as error:
            return self._on_error(error)
        row = next((k for k in self.keys if k.id == key_id), None)
        if row is None:
            return None
        self.revoke_id, self.revoke_name = row.id, row.name
        self.revoke_open = True
        return None

    @rx.event
    def set_revoke_open(self, value: bool):
        self.revoke_open = value is True

    @rx.event
    async def revoke(self):
        self.revoke_open = False
        try:
            await self._call(api_keys.revoke_key, self._actor(), self.revoke_id)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("apikey.revoked_toast"))
