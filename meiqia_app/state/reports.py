"""States of `/` (the dashboard) and `/reports` (segment reports)."""

from __future__ import annotations

import asyncio
from typing import Any

import reflex as rx

from meiqia_app.models.customer import LIFECYCLE_STAGES, SOURCES
from meiqia_app.services.customers import saved_views
from meiqia_app.services.errors import AppError
from meiqia_app.services.reports import custom_segments
from meiqia_app.services.reports import files as report_files
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import views as report_views
from meiqia_app.state.base import AppState, full_page_load


def _day(value: Any) -> str:
    """A YYYY-MM-DD string or ''; the service validates it again."""
    text = str(value or "").strip()[:10]
    return text


async def _export_pdf(state: AppState, report: str, params: dict):
    """Write the report's PDF (export pipeline: file + export_job + audit), then
    download it through the single-use token route."""
    from meiqia_app.services.exports import downloads as export_downloads

    try:
        actor = state._actor()
        export_id = await state._call(report_files.export_pdf, actor, report, params, state.lang)
        token = await state._call(export_downloads.create_download_token, actor, export_id)
    except AppError as error:
        return state._on_error(error)
    return [full_page_load(f"/api/export/download/{token}"), rx.toast.success(state._tr("report.exported"))]


class DashboardState(AppState):
    kind: str = "month"
    anchor: str = ""
    end: str = ""
    granularity: str = "day"
    full: bool = False
    loading: bool = False
    loaded: bool = False
    cards: list[dict[str, str]] = []
    lifecycle: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    regions: list[dict[str, Any]] = []
    trend: list[dict[str, Any]] = []
    period_label: str = ""
    previous_label: str = ""
    note_zh: str = ""
    note_en: str = ""
    latest: bool = False
    partial_bucket: bool = False
    period_first: str = ""
    period_last: str = ""
    computed_at: str = ""
    empty: bool = False
    computing: bool = False
    snap_total: str = ""
    snap_today: str = ""
    snap_month: str = ""
    quick_q: str = ""

    def _params(self) -> dict:
        return {"kind": self.kind, "anchor": self.anchor, "end": self.end, "granularity": self.granularity}

    async def _load(self):
        self.loading = True
        yield
        try:
            actor = self._actor()
            self._set_user(actor)
            self.full = actor.can("report.view")
            if self.full:
                view = await self._call(report_views.dashboard_view, actor, self._params(), True)
                self._apply_view(view)
                if view.stale:
                    yield DashboardState.refresh_when_recomputed
            else:
                snap = await self._call(report_views.snapshot_view, actor)
                self.snap_total, self.snap_today, self.snap_month = snap.total, snap.today, snap.month
            self.loaded = True
        except AppError as error:
            yield self._on_error(error)
        finally:
            self.loading = False

    def _apply_view(self, view: report_views.DashboardView) -> None:
        # The rows stay dicts: the charts and tables of the page read them by key.
        self.cards = view.cards
        self.lifecycle = view.lifecycle
        self.sources = view.sources
        self.regions = view.regions
        self.trend = view.trend
        self.period_label = view.period["label"]
        self.previous_label = view.previous["label"]
        self.note_zh, self.note_en = view.note_zh, view.note_en
        self.latest = view.latest
        self.partial_bucket = view.partial_bucket
        self.period_first = view.period["first"]
        self.period_last = view.period["last"]
        # The anchor stays the date the person chose (switching day / week /
        # month keeps the period around it); it is filled in on first load:
        # today while the period is under way, so "week" is this week.
        period = view.period
        self.anchor = self.anchor or (period["last"] if period.get("to_date") else period["first"])
        self.end = period["last"] if self.kind == "custom" else ""
        self.computed_at = view.computed_at
        self.empty = view.empty
        self.computing = view.computing

    @rx.event(background=True)
    async def refresh_when_recomputed(self):
        """The figures shown are being computed (first build of the daily
        aggregates) or are behind many changes being applied in the background:
        fetch them again until they are current."""
        async with self:
            params = self._params()
            try:
                actor = self._actor()
            except AppError:
                return
        # Changes being applied: a few seconds. A first build at 1M customers: a couple of minutes.
        for attempt in range(300):
            await asyncio.sleep(1 if attempt < 30 else 3)
            try:
                view = await asyncio.to_thread(report_views.dashboard_view, actor, params, True)
            except AppError:
                return
            async with self:
                if self._params() != params:
                    return  # the person moved to another period meanwhile
                if not view.stale:
                    self._apply_view(view)
                    return

    @rx.event
    async def on_load(self):
        async for update in self._load():
            yield update

    @rx.event
    async def set_kind(self, kind: str | list[str]):
        if not isinstance(kind, str) or kind not in report_periods.PERIOD_KINDS:
            return
        self.kind = kind
        if kind == "custom":
            # Keep the dates of the period shown; the person edits them and applies.
            self.anchor, self.end = self.period_first, self.period_last
            return
        self.end = ""
        async for update in self._load():
            yield update

    @rx.event
    async def set_granularity(self, granularity: str | list[str]):
        if not isinstance(granularity, str) or granularity not in report_periods.GRANULARITIES:
            return
        self.granularity = granularity
        async for update in self._load():
            yield update

    @rx.event
    async def shift(self, step: int):
        try:
            step = 1 if int(step) > 0 else -1
            if step > 0 and self.latest:
                return  # no period after today's
            params = report_views.shift_period(self._params(), step)
        except (TypeError, ValueError):
            return
        except AppError as error:
            yield self._on_error(error)
            return
        self.anchor, self.end = params["anchor"], params.get("end", "")
        async for update in self._load():
            yield update

    @rx.event
    def set_anchor(self, value: str):
        self.anchor = _day(value)

    @rx.event
    def set_end(self, value: str):
        self.end = _day(value)

    @rx.event
    async def apply_dates(self):
        if not self.anchor:
            return
        if self.kind != "custom":
            self.end = ""
        async for update in self._load():
            yield update

    @rx.event
    async def export_xlsx(self):
        try:
            actor = self._actor()
            name, data = await self._call(report_files.export_xlsx, actor, "dashboard", self._params(), self.lang)
        except AppError as error:
            return self._on_error(error)
        return [rx.download(data=data, filename=name), rx.toast.success(self._tr("report.exported"))]

    @rx.event
    async def export_pdf(self):
        return await _export_pdf(self, "dashboard", self._params())

    @rx.event
    async def quick_search(self, form: dict):
        """An agent's search box: hand the text to the customer list and go there."""
        from meiqia_app.state.customer_list import CustomerListState

        text = str(form.get("q", "") or "").strip()[:100]
        customers = await self.get_state(CustomerListState)
        customers.q = text
        return rx.redirect("/customers")

    @rx.var
    def can_export(self) -> bool:
        return "export.request" in self.perms and "report.view" in self.perms


class ReportsState(AppState):
    a_from: str = ""
    a_to: str = ""
    b_from: str = ""
    b_to: str = ""
    view_id: str = ""
    lifecycle_filter: str = ""
    source_filter: str = ""
    # custom fields (issue 23): narrow by one (cf_key = cf_value), group by one (group_by)
    cf_key: str = ""
    cf_value: str = ""
    group_by: str = ""
    cf_fields: list[dict[str, str]] = []  # key, label: the groupable fields
    cf_values: list[dict[str, str]] = []  # value, label: the chosen filter field's values
    group_label: str = ""
    groups: list[dict[str, Any]] = []
    _cf_choices: dict[str, list[list[str]]] = {}
    views: list[dict[str, str]] = []
    comparison: list[dict[str, str]] = []
    chart: list[dict[str, Any]] = []
    cohorts: list[dict[str, Any]] = []
    products: list[dict[str, Any]] = []
    period_a_label: str = ""
    period_b_label: str = ""
    empty: bool = False
    loading: bool = False
    loaded: bool = False

    def _params(self) -> dict:
        return {
            "a_from": self.a_from,
            "a_to": self.a_to,
            "b_from": self.b_from,
            "b_to": self.b_to,
            "view_id": self.view_id,
            "lifecycle": self.lifecycle_filter,
            "source": self.source_filter,
            "cf_key": self.cf_key,
            "cf_value": self.cf_value if self.cf_key else "",
            "group_by": self.group_by,
        }

    async def _run(self):
        self.loading = True
        yield
        try:
            actor = self._actor()
            self._set_user(actor)
            view = await self._call(report_views.segment_report_view, actor, self._params(), None, self.lang)
            self.comparison = view.comparison
            self.chart = view.chart
            self.cohorts = view.cohorts
            self.products = view.products
            self.period_a_label = view.period_a["label"]
            self.period_b_label = view.period_b["label"]
            self.empty = view.empty
            self.group_label = view.group_label
            self.groups = view.groups
            self.loaded = True
        except AppError as error:
            yield self._on_error(error)
        finally:
            self.loading = False

    @rx.event
    async def on_load(self):
        try:
            actor = self._actor()
            options = await self._call(saved_views.list_views, actor)
            fields = await self._call(custom_segments.groupable_fields, actor, self.lang)
        except AppError as error:
            yield self._on_error(error)
            return
        self.views = [{"id": str(o.id), "name": o.name} for o in options]
        self.cf_fields = [{"key": f.key, "label": f.label} for f in fields]
        self._cf_choices = {f.key: [list(pair) for pair in f.values] for f in fields}
        if self.cf_key not in self._cf_choices:
            self.cf_key, self.cf_value = "", ""
        if self.group_by not in self._cf_choices:
            self.group_by = ""
        self._set_cf_values()
        if not self.a_from:
            defaults = report_views.default_segment_params()
            self.a_from, self.a_to, self.b_from, self.b_to = (
                defaults["a_from"],
                defaults["a_to"],
                defaults["b_from"],
                defaults["b_to"],
            )
        async for update in self._run():
            yield update

    @rx.event
    def set_field(self, name: str, value: str):
        """The period dates and segment pickers (allowlisted names; values checked again by the service)."""
        value = str(value or "")
        if name in ("a_from", "a_to", "b_from", "b_to"):
            setattr(self, name, _day(value))
        elif name == "view_id":
            self.view_id = value if value.isdigit() else ""
        elif name == "lifecycle":
            self.lifecycle_filter = value if value in LIFECYCLE_STAGES else ""
        elif name == "source":
            self.source_filter = value if value in SOURCES else ""
        elif name == "cf_key":
            self.cf_key = value if value in self._cf_choices else ""
            self._set_cf_values()
            self.cf_value = self.cf_values[0]["value"] if self.cf_values else ""
        elif name == "cf_value":
            self.cf_value = value if any(v["value"] == value for v in self.cf_values) else ""
        elif name == "group_by":
            self.group_by = value if value in self._cf_choices else ""

    def _set_cf_values(self) -> None:
        choices = self._cf_choices.get(self.cf_key, [])
        self.cf_values = [{"value": v, "label": label} for v, label in choices] + (
            [{"value": custom_segments.EMPTY, "label": self._tr("report.cf_empty")}] if self.cf_key else []
        )

    @rx.event
    async def run(self):
        async for update in self._run():
            yield update

    @rx.event
    async def export_xlsx(self):
        try:
            actor = self._actor()
            name, data = await self._call(report_files.export_xlsx, actor, "segment", self._params(), self.lang)
        except AppError as error:
            return self._on_error(error)
        return [rx.download(data=data, filename=name), rx.toast.success(self._tr("report.exported"))]

    @rx.event
    async def export_pdf(self):
        return await _export_pdf(self, "segment", self._params())

    @rx.var
    def can_export(self) -> bool:
        return "export.request" in self.perms
