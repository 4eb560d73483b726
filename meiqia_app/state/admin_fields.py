"""State of /admin/fields: custom field definitions (issue 23). No customer data here:
definitions, their options and the progress of their jobs."""

from __future__ import annotations

import asyncio

import reflex as rx

from meiqia_app.models.custom_field import FIELD_TYPES
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.custom_fields.definitions import FieldView, OptionView
from meiqia_app.services.custom_fields.field_types import SELECT_TYPES
from meiqia_app.services.errors import AppError, Conflict, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.state.base import AppState

CREATE_FIELDS = ("key", "label_zh", "label_en", "group_zh", "group_en", "options", "default", "sort_order")
EDIT_FIELDS = ("label_zh", "label_en", "group_zh", "group_en", "default", "sort_order")
SWITCHES = ("required", "sensitive", "shown_in_list")


def _text(form: dict, name: str, limit: int = 4000) -> str:
    value = form.get(name, "")
    return "" if value is None else str(value)[:limit]


def _switch(form: dict, name: str) -> bool:
    return form.get(name) in ("on", "true", True)


class AdminFieldsState(AppState):
    fields: list[FieldView] = []
    new_type: str = "text"
    create_errors: dict[str, str] = {}
    creating: bool = False

    edit_open: bool = False
    edit_id: int = 0
    edit_version: int = 0
    edit_key: str = ""
    edit_type: str = ""
    edit_label_zh: str = ""
    edit_label_en: str = ""
    edit_group_zh: str = ""
    edit_group_en: str = ""
    edit_default: str = ""
    edit_sort_order: str = ""
    edit_required: bool = False
    edit_sensitive: bool = False
    edit_shown: bool = False
    edit_errors: dict[str, str] = {}

    options_open: bool = False
    options_id: int = 0
    options_version: int = 0
    options_label: str = ""
    options: list[OptionView] = []
    option_error: str = ""

    delete_open: bool = False
    delete_id: int = 0
    delete_key: str = ""
    delete_label: str = ""
    delete_error: str = ""

    job_running: bool = False
    job_percent: int = 0
    _job_id: int = 0

    async def _reload(self) -> None:
        actor = self._actor()
        self._set_user(actor)
        self.fields = await self._call(custom_fields.list_fields, actor, self.lang)
        if self.options_id:
            chosen = next((f for f in self.fields if f.id == self.options_id), None)
            if chosen is not None:
                self.options, self.options_version = chosen.options, chosen.version

    def _find(self, field_id) -> FieldView | None:
        try:
            wanted = self._as_id(field_id)
        except ValidationError:
            return None
        return next((f for f in self.fields if f.id == wanted), None)

    @rx.event
    async def on_load(self):
        self.edit_open = self.options_open = self.delete_open = False
        self.create_errors = {}
        try:
            await self._reload()
        except AppError as error:
            self.fields = []
            return self._on_error(error)
        return None

    @rx.event
    def set_new_type(self, value: str):
        if value in FIELD_TYPES:
            self.new_type = value

    # --- create ---------------------------------------------------------------------------------
    @rx.event
    async def create(self, form: dict):
        if not isinstance(form, dict) or self.creating:
            return None
        data: dict = {name: _text(form, name) for name in CREATE_FIELDS}
        data.update({name: _switch(form, name) for name in SWITCHES})
        data["field_type"] = self.new_type
        if self.new_type not in SELECT_TYPES:
            data.pop("options")
        self.create_errors = {}
        self.creating = True
        try:
            change = await self._call(custom_fields.create_field, self._actor(), data)
            await self._reload()
        except ValidationError as error:
            self.creating = False
            self.create_errors = self._field_errors(error)
            return None
        except AppError as error:
            self.creating = False
            return self._on_error(error)
        self.creating = False
        self.new_type = "text"
        name = data["label_zh"] if self.lang != "en" or not data["label_en"] else data["label_en"]
        return [
            rx.toast.success(self._tr("field.created", name=name)),
            rx.call_script("document.getElementById('field-create-form')?.reset()"),
            *self._follow(change.job_id),
        ]

    # --- edit -----------------------------------------------------------------------------------
    @rx.event
    def start_edit(self, field_id: int):
        field = self._find(field_id)
        if field is None:
            return None
        self.edit_id, self.edit_version, self.edit_key, self.edit_type = (
            field.id,
            field.version,
            field.key,
            field.field_type,
        )
        self.edit_label_zh, self.edit_label_en = field.label_zh, field.label_en
        self.edit_group_zh, self.edit_group_en = field.group_zh, field.group_en
        self.edit_default, self.edit_sort_order = field.default_form, str(field.sort_order)
        self.edit_required, self.edit_sensitive, self.edit_shown = (
            field.required,
            field.sensitive,
            field.shown_in_list,
        )
        self.edit_errors = {}
        self.edit_open = True
        return None

    @rx.event
    def set_edit_open(self, value: bool):
        self.edit_open = value is True

    @rx.event
    async def save_edit(self, form: dict):
        if not isinstance(form, dict) or not self.edit_id:
            return None
        data: dict = {name: _text(form, name) for name in EDIT_FIELDS}
        data.update({name: _switch(form, name) for name in SWITCHES})
        self.edit_errors = {}
        try:
            change = await self._call(custom_fields.update_field, self._actor(), self.edit_id, self.edit_version, data)
            await self._reload()
        except ValidationError as error:
            self.edit_errors = self._field_errors(error)
            return None
        except Conflict as error:
            self.edit_errors = {"label_zh": self._tr(error.message_key, **error.params)}
            await self._reload()
            return None
        except AppError as error:
            return self._on_error(error)
        self.edit_open = False
        return [rx.toast.success(self._tr("field.saved", name=data["label_zh"])), *self._follow(change.job_id)]

    # --- options --------------------------------------------------------------------------------
    @rx.event
    def start_options(self, field_id: int):
        field = self._find(field_id)
        if field is None or field.field_type not in SELECT_TYPES:
            return None
        self.options_id, self.options_version = field.id, field.version
        self.options_label = field.label_en if self.lang == "en" and field.label_en else field.label_zh
        self.options = field.options
        self.option_error = ""
        self.options_open = True
        return None

    @rx.event
    def set_options_open(self, value: bool):
        self.options_open = value is True
        if not self.options_open:
            self.options_id = 0

    async def _option_change(self, function, *args, **kwargs):
        if not self.options_id:
            return None
        self.option_error = ""
        try:
            await self._call(function, self._actor(), self.options_id, self.options_version, *args, **kwargs)
        except ValidationError as error:
            self.option_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            await self._reload()
            return self._on_error(error)
        await self._reload()
        return None

    @rx.event
    async def add_option(self, form: dict):
        if not isinstance(form, dict):
            return None
        result = await self._option_change(
            custom_fields.add_option, _text(form, "option_zh", 100), _text(form, "option_en", 100)
        )
        if result is None and not self.option_error:
            return rx.call_script("document.getElementById('option-add-form')?.reset()")
        return result

    @rx.event
    async def rename_option(self, form: dict):
        if not isinstance(form, dict):
            return None
        return await self._option_change(
            custom_fields.update_option,
            _text(form, "option_id", 16),
            zh=_text(form, "zh", 100),
            en=_text(form, "en", 100),
        )

    @rx.event
    async def move_option(self, option_id: str, direction: str):
        if direction not in ("up", "down"):
            return None
        return await self._option_change(custom_fields.update_option, str(option_id)[:16], move=direction)

    @rx.event
    async def retire_option(self, option_id: str, retired: bool):
        if not isinstance(retired, bool):
            return None
        return await self._option_change(custom_fields.update_option, str(option_id)[:16], retired=retired)

    # --- retire, restore, delete ----------------------------------------------------------------
    @rx.event
    async def retire(self, field_id: int):
        field = self._find(field_id)
        if field is None:
            return None
        try:
            await self._call(custom_fields.retire_field, self._actor(), field.id, field.version)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("field.retired_toast", name=field.label_zh))

    @rx.event
    async def restore(self, field_id: int):
        field = self._find(field_id)
        if field is None:
            return None
        try:
            change = await self._call(custom_fields.restore_field, self._actor(), field.id, field.version)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return [rx.toast.success(self._tr("field.restored_toast", name=field.label_zh)), *self._follow(change.job_id)]

    @rx.event
    def ask_delete(self, field_id: int):
        field = self._find(field_id)
        if field is None:
            return None
        self.delete_id, self.delete_key, self.delete_label = field.id, field.key, field.label_zh
        self.delete_error = ""
        self.delete_open = True
        return None

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open = value is True

    @rx.event
    async def confirm_delete(self, form: dict):
        if not isinstance(form, dict) or not self.delete_id:
            return None
        self.delete_error = ""
        try:
            change = await self._call(
                custom_fields.delete_field, self._actor(), self.delete_id, _text(form, "confirm", 64)
            )
            await self._reload()
        except ValidationError as error:
            self.delete_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        self.delete_open = False
        return [
            rx.toast.success(self._tr("field.deleting_toast", name=self.delete_label)),
            *self._follow(change.job_id),
        ]

    # --- the jobs a change started --------------------------------------------------------------
    def _follow(self, job_id: int) -> list:
        if not job_id:
            return []
        self._job_id = job_id
        self.job_running = True
        self.job_percent = 0
        return [AdminFieldsState.follow_job]

    @rx.event(background=True)
    async def follow_job(self):
        async with self:
            job_id = self._job_id
            try:
                actor = self._actor()
            except AppError:
                self.job_running = False
                return
        while True:
            await asyncio.sleep(0.5)
            try:
                view = await asyncio.to_thread(jobs.job_view, actor, job_id)
            except AppError:
                async with self:
                    self.job_running = False
                return
            async with self:
                if job_id != self._job_id:
                    return  # a newer job is followed now
                self.job_percent = view.percent
                if view.finished:
                    self.job_running = False
                    if view.status == "done":
                        yield rx.toast.success(self._tr("field.job_done"))
                    else:
                        yield rx.toast.error(self._tr("bulk.job_failed", status=view.status))
                    try:
                        await self._reload()
                    except AppError as error:
                        yield self._on_error(error)
                    return
