"""State of /admin/retention: each policy's switch and numbers, its preview, "run now" and its progress.

Per-policy values live in dicts keyed by the policy key (the page is built
from the registered policies, one card each). Every handler checks the key
against the registry and trims what the browser sent; the service validates
the numbers and the permissions.
"""

from __future__ import annotations

import asyncio

import reflex as rx

from meiqia_app.i18n import tr
from meiqia_app.services.cleanup import retention
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.platform.text_formats import file_size_text
from meiqia_app.state.base import AppState

MAX_INPUT = 12


class RetentionState(AppState):
    loaded: bool = False
    nightly_time: str = ""
    enabled: dict[str, bool] = {}
    saved_enabled: dict[str, bool] = {}
    values: dict[str, str] = {}
    keeps: dict[str, str] = {}
    value_errors: dict[str, str] = {}
    keep_errors: dict[str, str] = {}
    allowed: dict[str, bool] = {}
    counts: dict[str, int] = {}
    sizes: dict[str, str] = {}
    samples: dict[str, list[str]] = {}
    # The preview shows the numbers typed, not yet saved ("preview" before "save").
    unsaved_preview: dict[str, bool] = {}
    # Texts made here, in both languages so the language switch needs no round trip.
    last_runs_zh: dict[str, str] = {}
    last_runs_en: dict[str, str] = {}
    results_zh: dict[str, str] = {}
    results_en: dict[str, str] = {}
    saving: str = ""

    # the run in progress (one at a time from this page)
    running_key: str = ""
    job_id: int = 0
    percent: int = 0
    done: int = 0
    total: int = 0

    # the "run now" dialog
    confirm_open: bool = False
    confirm_key: str = ""
    confirm_title: str = ""
    confirm_message: str = ""
    confirm_typed: bool = False
    confirm_count: int = 0
    confirm_text: str = ""
    confirm_error: str = ""

    @staticmethod
    def _known(key: object) -> str:
        policy = retention.get_policy(key)  # ValidationError for anything else
        return policy.key

    @staticmethod
    def _last_run_text(lang: str, last: retention.LastRun | None) -> str:
        if last is None:
            return tr(lang, "retention.never_run")
        status = tr(lang, f"cleanup.job.{last.status}")
        text = tr(lang, "retention.last_run", time=last.finished_at, by=last.by, status=status)
        summary = RetentionState._summary(lang, (last.result or {}).get("counts") or {})
        return f"{text}. {summary}" if summary else text

    @staticmethod
    def _summary(lang: str, counts: dict) -> str:
        parts = []
        for name in ("customers", "rows", "files", "jobs", "deliveries", "backups", "bytes", "backup"):
            if name not in counts or (name == "backup" and not counts[name]):
                continue
            value = counts[name]
            if name == "bytes":
                value = file_size_text(int(value or 0))
            parts.append(tr(lang, f"retention.count.{name}", count=value))
        return tr(lang, "retention.separator").join(parts)

    def _apply(self, view: retention.PolicyView) -> None:
        key, setting = view.key, view.setting
        self.enabled[key] = setting.enabled
        self.saved_enabled[key] = setting.enabled
        self.values[key] = str(setting.value)
        self.keeps[key] = "" if setting.keep is None else str(setting.keep)
        self.value_errors[key] = ""
        self.keep_errors[key] = ""
        self.allowed[key] = view.allowed
        self.counts[key] = view.preview.count if view.preview else 0
        self.sizes[key] = file_size_text(view.preview.bytes) if view.preview else ""
        self.samples[key] = list(view.preview.sample) if view.preview else []
        self.unsaved_preview[key] = False
        self.last_runs_zh[key] = self._last_run_text("zh", view.last_run)
        self.last_runs_en[key] = self._last_run_text("en", view.last_run)

    async def _reload(self) -> None:
        actor = self._actor()
        self._set_user(actor)
        views = await self._call(retention.overview, actor)
        for view in views:
            self._apply(view)
        nightly = await self._call(retention.nightly_time)
        self.nightly_time = nightly or ""
        self.loaded = True

    @rx.event
    async def on_load(self):
        self.loaded = False
        self.confirm_open = False
        self.results_zh, self.results_en = {}, {}
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def set_enabled(self, key: str, value: bool):
        try:
            key = self._known(key)
        except AppError:
            return
        self.enabled[key] = value is True

    @rx.event
    def set_value(self, key: str, value: str):
        try:
            key = self._known(key)
        except AppError:
            return
        self.values[key] = str(value)[:MAX_INPUT]
        self.value_errors[key] = ""

    @rx.event
    def set_keep(self, key: str, value: str):
        try:
            key = self._known(key)
        except AppError:
            return
        self.keeps[key] = str(value)[:MAX_INPUT]
        self.keep_errors[key] = ""

    @rx.event
    async def save(self, key: str):
        try:
            key = self._known(key)
        except AppError as error:
            return self._on_error(error)
        self.value_errors[key] = ""
        self.keep_errors[key] = ""
        self.saving = key
        try:
            actor = self._actor()
            keep = self.keeps.get(key) or None
            await self._call(retention.update, actor, key, self.enabled.get(key) is True, self.values.get(key), keep)
            await self._reload()
        except ValidationError as error:
            self.saving = ""
            errors = self._field_errors(error)
            self.value_errors[key] = errors.get("value", "")
            self.keep_errors[key] = errors.get("keep", "")
            if not (self.value_errors[key] or self.keep_errors[key]):
                return self._on_error(error)
            return None
        except AppError as error:
            self.saving = ""
            return self._on_error(error)
        self.saving = ""
        return rx.toast.success(self._tr("retention.saved"))

    @rx.event
    async def preview_typed(self, key: str):
        """The preview for the numbers typed, before saving them."""
        try:
            key = self._known(key)
        except AppError as error:
            return self._on_error(error)
        self.value_errors[key] = ""
        self.keep_errors[key] = ""
        try:
            actor = self._actor()
            keep = self.keeps.get(key) or None
            preview = await self._call(retention.preview, actor, key, self.values.get(key) or "", keep)
        except ValidationError as error:
            errors = self._field_errors(error)
            self.value_errors[key] = errors.get("value", "")
            self.keep_errors[key] = errors.get("keep", "")
            if not (self.value_errors[key] or self.keep_errors[key]):
                return self._on_error(error)
            return None
        except AppError as error:
            return self._on_error(error)
        self.counts[key] = preview.count
        self.sizes[key] = file_size_text(preview.bytes)
        self.samples[key] = list(preview.sample)
        self.unsaved_preview[key] = True
        return None

    @rx.event
    async def ask_run(self, key: str):
        try:
            key = self._known(key)
            actor = self._actor()
            preview = await self._call(retention.preview, actor, key)
        except AppError as error:
            return self._on_error(error)
        policy = retention.get_policy(key)
        self.counts[key] = preview.count
        self.sizes[key] = file_size_text(preview.bytes)
        self.samples[key] = list(preview.sample)
        self.unsaved_preview[key] = False
        self.confirm_key = key
        self.confirm_title = self._tr("retention.confirm_title", policy=self._tr(policy.label_key))
        self.confirm_message = self._tr(policy.preview_key, count=preview.count, size=self.sizes[key])
        self.confirm_typed = policy.typed_confirm
        self.confirm_count = preview.count
        self.confirm_text = ""
        self.confirm_error = ""
        self.confirm_open = True
        return None

    @rx.event
    def set_confirm_open(self, value: bool):
        self.confirm_open = value is True

    @rx.event
    def set_confirm_text(self, value: str):
        self.confirm_text = str(value)[:MAX_INPUT]
        self.confirm_error = ""

    @rx.event
    async def run(self):
        self.confirm_error = ""
        key = self.confirm_key
        try:
            key = self._known(key)
            actor = self._actor()
            job_id = await self._call(retention.start_run, actor, key, self.confirm_text)
        except ValidationError as error:
            self.confirm_error = next(iter(self._field_errors(error).values()), "")
            return None
        except AppError as error:
            return self._on_error(error)
        policy = retention.get_policy(key)
        self.confirm_open = False
        self.running_key = key
        self.job_id = job_id
        self.percent, self.done, self.total = 0, 0, self.confirm_count
        for lang, results in (("zh", self.results_zh), ("en", self.results_en)):
            results[key] = tr(lang, "retention.run_started", policy=tr(lang, policy.label_key))
        return RetentionState.poll_run

    @rx.event(background=True)
    async def poll_run(self):
        while True:
            async with self:
                if not self.job_id:
                    return None
                try:
                    view = await asyncio.to_thread(retention.run_view, self._actor(), self.job_id)
                except AppError as error:
                    self.running_key = ""
                    return self._on_error(error)
                self.percent, self.done, self.total = view.percent, view.processed, view.total
                if view.finished:
                    key = self.running_key
                    policy = retention.get_policy(key)
                    counts = (view.result or {}).get("counts") or {}
                    for lang, results in (("zh", self.results_zh), ("en", self.results_en)):
                        results[key] = tr(
                            lang,
                            "retention.run_finished",
                            policy=tr(lang, policy.label_key),
                            status=tr(lang, f"cleanup.job.{view.status}"),
                            summary=self._summary(lang, counts),
                        )
                    self.running_key = ""
                    self.job_id = 0
                    try:
                        await self._reload()
                    except AppError as error:
                        return self._on_error(error)
                    return None
            await asyncio.sleep(0.5)
