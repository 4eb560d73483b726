"""State of /admin/backups: list, create now, download, restore with typed confirmation."""

from __future__ import annotations

import dataclasses

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.platform import backup
from meiqia_app.state.base import AppState, full_page_load


@dataclasses.dataclass
class BackupRow:
    id: int
    file_name: str
    kind: str
    size_text: str
    sha_short: str
    sha256: str
    integrity: str
    ok: bool
    created_at: str
    created_by_name: str
    on_disk: bool


class BackupsState(AppState):
    backups: list[BackupRow] = []
    creating: bool = False
    restore_open: bool = False
    restore_id: int = 0
    restore_name: str = ""
    restore_confirm: str = ""
    restore_error: str = ""
    restoring: bool = False

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        views = await self._call(backup.list_backups, actor)
        self.backups = [
            BackupRow(
                v.id,
                v.file_name,
                self._tr(f"backup.kind.{v.kind}"),
                v.size_text,
                v.sha256[:12],
                v.sha256,
                v.integrity,
                v.ok,
                v.created_at,
                v.created_by_name,
                v.on_disk,
            )
            for v in views
        ]

    @rx.event
    async def on_load(self):
        self.restore_open = False
        try:
            await self._reload()
        except AppError as error:
            self.backups = []
            return self._on_error(error)
        return None

    @rx.event
    async def create_now(self):
        self.creating = True
        yield
        try:
            actor = self._actor()
            view = await self._call(backup.create_backup, actor, "manual")
            await self._reload()
        except AppError as error:
            self.creating = False
            yield self._on_error(error)
            return
        self.creating = False
        yield rx.toast.success(self._tr("backup.created", name=view.file_name))

    @rx.event
    async def download(self, backup_id: int):
        try:
            actor = self._actor()
            token = await self._call(backup.mint_download_token, actor, self._as_id(backup_id))
        except AppError as error:
            return self._on_error(error)
        return full_page_load(f"/api/backups/download?token={token}")

    @rx.event
    def ask_restore(self, backup_id: int):
        try:
            backup_id = self._as_id(backup_id)
        except AppError as error:
            return self._on_error(error)
        row = next((b for b in self.backups if b.id == backup_id), None)
        if row is None:
            return None
        self.restore_id, self.restore_name = row.id, row.file_name
        self.restore_confirm = ""
        self.restore_error = ""
        self.restore_open = True
        return None

    @rx.event
    def set_restore_open(self, value: bool):
        self.restore_open = value is True

    @rx.event
    def set_restore_confirm(self, value: str):
        self.restore_confirm = str(value)[:255]

    @rx.event
    async def restore(self):
        self.restore_error = ""
        self.restoring = True
        yield
        try:
            actor = self._actor()
            safety = await self._call(backup.restore_backup, actor, self.restore_id, self.restore_confirm)
            await self._reload()
        except ValidationError as error:
            self.restoring = False
            self.restore_error = next(iter(self._field_errors(error).values()), "")
            return
        except AppError as error:
            self.restoring = False
            yield self._on_error(error)
            return
        self.restoring = False
        self.restore_open = False
        yield rx.toast.success(self._tr("backup.restored", name=safety.file_name))
