"""State of /cleanup (the wizard) and /cleanup/archive (archived and trashed customers)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import reflex as rx

from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import criteria as cleanup_criteria
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.cleanup import retention
from meiqia_app.services.cleanup import trash as cleanup_trash
from meiqia_app.services.customers import saved_views
from meiqia_app.services.errors import AppError, NotFound, ValidationError
from meiqia_app.services.privacy import mentions
from meiqia_app.services.tags import catalog as tags
from meiqia_app.state.base import AppState

CRITERIA_FLAGS = ("no_contact", "invalid_contact", "erasure_pending", "duplicates")
STEPS = ("criteria", "dry_run", "running", "report")
TABLE_ORDER = (
    "customer",
    "customer_search",
    "customer_order",
    "conversation",
    "message",
    "behavior_event",
    "note",
    "tag_assignment",
    "erasure_request",
)


@dataclasses.dataclass
class SampleView:
    id: int
    name: str
    phone: str
    email: str
    status: str
    last_active: str
    reasons: str


@dataclasses.dataclass
class EffectView:
    table: str
    rows: int


@dataclasses.dataclass
class Option:
    value: str
    label: str


@dataclasses.dataclass
class MentionView:
    """A record of another customer naming a customer about to be erased (shown, then forgotten)."""

    key: str  # "note:12"
    kind: str  # translated: note / chat message
    record_id: int
    customer_id: int  # whose record it is
    erased: str  # the customers it names, "#5, #9"
    fields: str  # translated: name, phone
    snippet: str
    selected: bool


@dataclasses.dataclass
class ParkedView:
    id: int
    name: str
    phone: str
    since: str
    purge_on: str


class CleanupState(AppState):
    # The dry run's sample customers: shown, not kept.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"sample"})

    step: str = "criteria"
    inactive_months: str = "0"
    no_contact: bool = False
    invalid_contact: bool = False
    erasure_pending: bool = False
    duplicates: bool = False
    view_id: str = "0"
    match: str = "any"
    scope: str = "active"
    action: str = "archive"
    tag_id: str = ""
    views: list[Option] = []
    tag_options: list[Option] = []

    count: int = -1
    sample: list[SampleView] = []
    effects: list[EffectView] = []
    approx_kb: str = ""
    dry_seconds: str = ""
    confirm_text: str = ""
    confirm_error: str = ""
    # Erasure: mentions of the customers in other customers' notes and messages.
    mentions: list[MentionView] = []
    mentions_searched: bool = False

    job_id: int = 0
    percent: int = 0
    processed: int = 0
    total: int = 0
    job_status: str = ""
    report_lines: list[str] = []
    busy: bool = False

    _ACTIONS: ClassVar[tuple[str, ...]] = cleanup_criteria.ACTIONS

    def _criteria(self) -> cleanup_criteria.Criteria:
        return cleanup_criteria.Criteria.from_dict(
            {
                "inactive_months": self.inactive_months,
                "no_contact": self.no_contact,
                "invalid_contact": self.invalid_contact,
                "erasure_pending": self.erasure_pending,
                "duplicates": self.duplicates,
                "view_id": self.view_id,
                "match": self.match,
                "scope": self.scope,
            }
        )

    def _forget_mentions(self) -> None:
        """Snippets hold other customers' texts: shown for the review, then dropped."""
        self.mentions = []
        self.mentions_searched = False

    @rx.event
    def toggle_mention(self, key: str, value: bool):
        if not isinstance(key, str):
            return
        self.mentions = [dataclasses.replace(m, selected=value is True) if m.key == key else m for m in self.mentions]

    @rx.event
    def select_all_mentions(self, value: bool):
        self.mentions = [dataclasses.replace(m, selected=value is True) for m in self.mentions]

    @rx.var
    def mentions_selected(self) -> int:
        return sum(1 for m in self.mentions if m.selected)

    @rx.event
    async def on_load(self):
        self.step = "criteria"
        self.count = -1
        self.confirm_text = ""
        self.confirm_error = ""
        self._forget_mentions()
        try:
            actor = self._actor()
            self._set_user(actor)
            views = await self._call(saved_views.list_views, actor)
            self.views = [Option(str(v.id), v.name) for v in views]
            self.tag_options = [Option(str(o.id), o.name) for o in await self._call(tags.list_tag_options, actor)]
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def set_flag(self, name: str, value: bool):
        if name in CRITERIA_FLAGS:
            setattr(self, name, value is True)
            self.step = "criteria"
            self.count = -1
            self._forget_mentions()

    @rx.event
    def set_choice(self, name: str, value: str):
        allowed = {
            "inactive_months": ("0", *[str(m) for m in cleanup_criteria.INACTIVE_MONTHS]),
            "match": cleanup_criteria.MATCH_MODES,
            "scope": cleanup_criteria.SCOPES,
            "action": cleanup_criteria.ACTIONS,
            "view_id": ("0", *[v.value for v in self.views]),
            "tag_id": tuple(o.value for o in self.tag_options),
        }
        if name in allowed and str(value) in allowed[name]:
            setattr(self, name, str(value))
            self.step = "criteria"
            self.count = -1
            self._forget_mentions()

    @rx.event
    def set_confirm_text(self, value: str):
        self.confirm_text = str(value)[:20]

    @rx.event
    def back(self):
        self.step = "criteria"
        self.count = -1
        self._forget_mentions()

    @rx.event
    async def run_dry(self):
        self.busy = True
        yield
        try:
            actor = self._actor()
            result = await self._call(cleanup_preview.dry_run, actor, self._criteria(), self.action)
        except AppError as error:
            self.busy = False
            yield self._on_error(error)
            return
        self.busy = False
        self.count = result.count
        self.sample = [
            SampleView(
                r.id,
                r.name,
                r.phone,
                r.email,
                self._tr(f"status.{r.status}"),
                r.last_active,
                ", ".join(self._tr(f"cleanup.reason.{x}") for x in r.reasons),
            )
            for r in result.sample
        ]
        self.effects = [
            EffectView(self._tr(f"cleanup.table.{t}"), result.tables[t]) for t in TABLE_ORDER if t in result.tables
        ]
        self.mentions_searched = result.mentions is not None
        self.mentions = [
            MentionView(
                m["key"],
                self._tr(f"cleanup.mentions.kind.{m['kind']}"),
                m["record_id"],
                m["customer_id"],
                ", ".join(f"#{i}" for i in m["erased_ids"]),
                ", ".join(self._tr(f"cleanup.mentions.field.{f}") for f in m["fields"]),
                m["snippet"],
                True,  # redact unless the admin unticks it
            )
            for m in (result.mentions or [])
        ]
        self.approx_kb = f"{result.approx_bytes / 1024:,.1f}"
        self.dry_seconds = f"{result.seconds:.2f}"
        self.confirm_text = ""
        self.confirm_error = ""
        self.step = "dry_run"

    @rx.event
    async def run_action(self):
        self.confirm_error = ""
        try:
            actor = self._actor()
            tag_id = int(self.tag_id) if self.tag_id else 0
            redact = [m.key for m in self.mentions if m.selected] if self.action == "erase" else []
            job_id = await self._call(
                cleanup.start_action, actor, self._criteria(), self.action, self.confirm_text, tag_id, redact
            )
        except ValidationError as error:
            self.confirm_error = next(iter(self._field_errors(error).values()), "")
            return
        except AppError as error:
            yield self._on_error(error)
            return
        self._forget_mentions()
        self.job_id = job_id
        self.percent = 0
        self.processed = 0
        self.total = self.count
        self.job_status = "running"
        self.step = "running"
        yield CleanupState.poll_job

    @rx.event(background=True)
    async def poll_job(self):
        while True:
            async with self:
                job_id = self.job_id
                try:
                    view = await asyncio.to_thread(cleanup.job_report, self._actor(), job_id)
                except AppError as error:
                    self.step = "criteria"
                    return self._on_error(error)
                self.percent = view.percent
                self.processed = view.processed
                self.total = view.total
                self.job_status = view.status
                if view.finished:
                    self.report_lines = self._report(view)
                    self.step = "report"
                    return None
            await asyncio.sleep(0.5)

    def _report(self, view: cleanup.CleanupReport) -> list[str]:
        lines = [
            self._tr("cleanup.report.status", status=self._tr(f"cleanup.job.{view.status}")),
            self._tr("cleanup.report.processed", count=view.processed),
        ]
        for table, rows in view.counts.items():
            if table.startswith("mentions_"):
                continue  # reported below, with the records
            lines.append(self._tr("cleanup.report.rows", table=self._tr(f"cleanup.table.{table}"), count=rows))
        if view.skipped:
            lines.append(self._tr("cleanup.report.skipped", count=view.skipped))
        if view.mentions is not None:
            lines += self._mention_lines(view.mentions)
        if view.backup:
            lines.append(self._tr("cleanup.report.backup", name=view.backup))
        if view.list_ms_before is not None:
            lines.append(self._tr("cleanup.report.speed", before=view.list_ms_before, after=view.list_ms_after))
        if view.export_files_deleted is not None:
            lines.append(self._tr("cleanup.report.exports", count=view.export_files_deleted))
        if view.error:
            lines.append(self._tr(view.error, **view.error_params))
        return lines

    def _mention_lines(self, found: dict) -> list[str]:
        return mention_report_lines(found, self._tr)


def mention_report_lines(found: dict, tr) -> list[str]:
    """The erasure report's lines about mentions in other records (``tr(key, **params)`` translates)."""

    def refs(keys: list[str]) -> str:
        shown = []
        for key in keys[:50]:
            kind, _, record_id = key.partition(":")
            shown.append(f"{tr(f'cleanup.mentions.kind.{kind}')} #{record_id}")
        return ", ".join(shown) + (" …" if len(keys) > 50 else "")

    if not found.get("searched"):
        return [tr("cleanup.report.mentions_not_searched", max=mentions.MAX_CUSTOMERS)]
    lines = [
        tr("cleanup.report.mentions", found=len(found.get("found") or []), redacted=len(found.get("redacted") or []))
    ]
    if found.get("redacted"):
        lines.append(tr("cleanup.report.mentions_redacted", refs=refs(found["redacted"])))
    if found.get("kept"):
        lines.append(tr("cleanup.report.mentions_kept", refs=refs(found["kept"])))
    return lines


class ArchiveState(AppState):
    """Archived and trashed customers: browse, restore one or all, empty the trash."""

    # Archived / trashed customers: shown, not kept.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"rows"})

    tab: str = "archived"
    rows: list[ParkedView] = []
    total: int = 0
    retention_days: int = 30
    purge_confirm: str = ""
    purge_error: str = ""
    job_id: int = 0
    purge_message: str = ""

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        rows = await self._call(cleanup_trash.list_parked, actor, self.tab, 0, 200)
        self.rows = [ParkedView(r.id, r.name, r.phone, r.since, r.purge_on) for r in rows]
        self.total = await self._call(cleanup_trash.count_parked, actor, self.tab)
        policy = await self._call(retention.current, "trash_purge")
        self.retention_days = policy.value if policy.enabled else 0  # 0: not purged automatically

    @rx.event
    async def on_load(self):
        self.purge_confirm = ""
        self.purge_error = ""
        self.purge_message = ""
        try:
            await self._reload()
        except AppError as error:
            self.rows = []
            return self._on_error(error)
        return None

    @rx.event
    async def set_tab(self, tab: str | list[str]):
        if tab not in ("archived", "trashed"):
            return None
        self.tab = tab
        try:
            await self._reload()
        except AppError as error:
            self.rows = []
            return self._on_error(error)
        return None

    @rx.event
    async def restore_one(self, customer_id: int):
        try:
            actor = self._actor()
            count = await self._call(cleanup_trash.restore, actor, self.tab, [self._as_id(customer_id)])
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        if not count:  # not in this list (missing, out of reach or no longer parked)
            return self._on_error(NotFound())
        return rx.toast.success(self._tr("cleanup.restored", count=count))

    @rx.event
    async def restore_all(self):
        try:
            actor = self._actor()
            count = await self._call(cleanup_trash.restore, actor, self.tab, None)
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("cleanup.restored", count=count))

    @rx.event
    def set_purge_confirm(self, value: str):
        self.purge_confirm = str(value)[:20]

    @rx.event
    async def empty_trash(self):
        self.purge_error = ""
        try:
            actor = self._actor()
            self.job_id = await self._call(cleanup_trash.start_purge, actor, True, self.purge_confirm)
        except ValidationError as error:
            self.purge_error = next(iter(self._field_errors(error).values()), "")
            return None
        except AppError as error:
            return self._on_error(error)
        self.purge_message = self._tr("cleanup.purge_started")
        return ArchiveState.poll_purge

    @rx.event(background=True)
    async def poll_purge(self):
        while True:
            async with self:
                try:
                    view = await asyncio.to_thread(cleanup.job_report, self._actor(), self.job_id)
                except AppError as error:
                    return self._on_error(error)
                if view.finished:
                    self.purge_message = self._tr(
                        "cleanup.purge_done", count=view.counts.get("customer", 0), name=view.backup
                    )
                    self.purge_confirm = ""
                    await self._reload()
                    return None
            await asyncio.sleep(0.5)
