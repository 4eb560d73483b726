"""States of /export (the wizard), /exports (history) and /exports/approvals.

Thin: every handler resolves the actor from the session and calls
services.exports (request, approval, history, downloads), which re-checks permissions and the role's policy.
The protection password reaches the server only inside the form submitted by
the run step and is handed straight to the service: it never becomes a state
var (state is pickled into the state store).

Arriving from the customer list: ``/export`` offers the list's current filter
of this browser tab (read from ``CustomerListState``) and accepts
``/export?view=<saved view id>`` to preselect a saved view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import ClassVar

import reflex as rx

from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import SOURCES
from meiqia_app.services.customers import saved_views
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.exports import approval as export_approval
from meiqia_app.services.exports import custom_sort as export_custom_sort
from meiqia_app.services.exports import downloads as export_downloads
from meiqia_app.services.exports import history as export_history
from meiqia_app.services.exports import info as export_info
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports.fields import DEFAULT_FIELDS, FIELD_SPECS, custom_field_choices, field_label
from meiqia_app.services.exports.policy import field_availability, masked_fields
from meiqia_app.services.exports.rows import SORT_COLUMNS
from meiqia_app.services.platform.text_formats import file_size_text
from meiqia_app.state.base import AppState, full_page_load
from meiqia_app.timeutil import today_local

SCOPES = ("all", "current", "view", "ticked")
DATE_FIELDS = {"registered": "registered", "active": "active", "purchase": "purchase"}
DATE_RANGES = ("", "last30", "last_month", "custom")
STEPS = 5
WATCHED = (*export_info.ACTIVE, "pending_approval")
# The wizard watches a request waiting for approval (read from the database, so an
# approval given on another worker shows too) this often, for at most this long.
PENDING_POLL_SECONDS = 2.0
PENDING_WATCH_SECONDS = 30 * 60
POLL_STALE_SECONDS = 10.0


@dataclasses.dataclass
class ChosenField:
    key: str
    label: str
    sensitive: bool
    masked: bool


@dataclasses.dataclass
class CustomFieldChoice:
    """A custom field the picker offers ("cf.<key>"), under its group's heading."""

    key: str
    dom_id: str
    label: str
    group: str
    first_in_group: bool
    sensitive: bool


@dataclasses.dataclass
class ExportRow:
    id: int
    status: str
    status_label: str
    requested_by: str
    format: str
    protected: bool
    purpose: str
    scope_text: str
    fields_text: str
    rows: int
    percent: int
    size_text: str
    sha256: str
    created_at: str
    expires_at: str
    approver: str
    comment: str
    error: str
    downloadable: bool
    cancellable: bool
    needs_password: bool
    rerunnable: bool


def _quick_range(kind: str, start: str, end: str) -> tuple[str, str]:
    today = today_local()
    if kind == "last30":
        return (today - dt.timedelta(days=30)).isoformat(), today.isoformat()
    if kind == "last_month":
        last_day = today.replace(day=1) - dt.timedelta(days=1)
        return last_day.replace(day=1).isoformat(), last_day.isoformat()
    if kind == "custom":
        return start, end
    return "", ""


class _ExportBase(AppState):
    """Shared helpers of the export pages."""

    def _row(self, view: export_info.ExportInfo) -> ExportRow:
        return ExportRow(
            id=view.id,
            status=view.status,
            status_label=self._tr(f"export.status.{view.status}"),
            requested_by=view.requested_by,
            format=view.format.upper(),
            protected=view.protected,
            purpose=self._tr(f"export.purpose.{view.purpose}") if view.purpose in export_info.PURPOSES else "",
            scope_text=view.scope_text,
            fields_text=", ".join(
                self._tr("export.portability.all") if f == "*" else field_label(f, self.lang) for f in view.fields
            ),
            rows=view.row_count or view.row_estimate,
            percent=view.percent,
            size_text=file_size_text(view.file_size) if view.file_size else "",
            sha256=view.file_sha256,
            created_at=view.created_at,
            expires_at=view.expires_at,
            approver=view.approver,
            comment=view.decision_comment,
            error=self._tr(view.error) if view.error else "",
            downloadable=view.downloadable,
            cancellable=view.status in export_info.CANCELLABLE,
            needs_password=view.status == "approved" and view.protected,
            rerunnable=view.status in ("done", "expired", "failed", "cancelled") and view.kind == "customers",
        )


class ExportWizardState(_ExportBase):
    step: int = 1
    # 1. scope
    scope: str = "all"
    view_id: str = ""
    views: list[dict[str, str]] = []
    current_filter_text: str = ""
    date_field: str = "registered"
    date_range: str = ""
    date_from: str = ""
    date_to: str = ""
    sources: list[str] = []
    order_statuses: list[str] = []
    purpose: str = "analysis"
    # 2. fields
    chosen: list[str] = list(DEFAULT_FIELDS)
    blocked: dict[str, str] = {}
    masked: list[str] = []
    custom_choices: list[CustomFieldChoice] = []
    # 3. sort and format
    sort_field: str = "id"
    sort_dir: str = "asc"
    fmt: str = "csv"
    pdf_max_rows: int = 20000
    # 4. review
    reviewed: bool = False
    review_rows: int = 0
    review_size: str = ""
    review_reasons: list[str] = []
    review_allowed: bool = False
    review_needs_approval: bool = False
    review_password_required: bool = False
    review_scope: str = ""
    review_notice: str = ""
    password_error: str = ""
    # 5. run
    export_id: int = 0
    run_status: str = ""
    run_status_label: str = ""
    run_percent: int = 0
    run_done: int = 0
    run_total: int = 0
    run_error: str = ""
    run_downloadable: bool = False
    run_protected: bool = False
    run_approver: str = ""
    run_comment: str = ""
    polling: bool = False
    _poll_beat: float = 0.0

    _current_filter: dict = {}
    # The rows ticked in the customer list of this tab (a Selection of ids), if any.
    _ticked: dict = {}
    ticked_count: int = 0

    all_sources: ClassVar[tuple[str, ...]] = SOURCES

    # --- loading ---------------------------------------------------------------------------
    @rx.event
    async def on_load(self):
        from meiqia_app.config import get_settings
        from meiqia_app.state.customer_list import CustomerListState

        try:
            actor = self._actor()
            self._set_user(actor)
            views = await self._call(saved_views.list_views, actor)
        except AppError as error:
            return self._on_error(error)
        self.views = [{"id": str(v.id), "name": v.name} for v in views]
        availability = field_availability(actor)
        self.blocked = {k: self._tr(v) for k, v in availability.items() if v}
        self.masked = sorted(masked_fields(actor))
        self.custom_choices = [
            CustomFieldChoice(
                key=c.name,
                dom_id="field-cf-" + c.key,
                label=c.label,
                group=c.group or self._tr("export.group.cf_ungrouped"),
                first_in_group=c.first_in_group,
                sensitive=c.sensitive,
            )
            for c in custom_field_choices(self.lang)
        ]
        self.chosen = [f for f in self.chosen if f in FIELD_SPECS and f not in self.blocked] or [
            f for f in DEFAULT_FIELDS if f not in self.blocked
        ]
        self.pdf_max_rows = get_settings().export_pdf_max_rows
        # The customer list's filter of this tab, if the person came from there.
        listing = await self.get_state(CustomerListState)
        try:
            query = listing._query()
            if query.has_filters() or query.q:
                self._current_filter = query.to_dict()
                self.current_filter_text = export_request.query_text(query, self.lang)
            else:
                self._current_filter, self.current_filter_text = {}, ""
        except AppError:
            self._current_filter = {}
            self.current_filter_text = ""
        try:
            ticked = [] if listing.all_matching else list(listing.selected_ids)
            self._ticked = Selection.of_ids(ticked, status=listing._query().status).to_dict() if ticked else {}
        except AppError:
            self._ticked = {}
        self.ticked_count = len(self._ticked.get("ids") or [])
        url = getattr(self.router, "url", None)
        params = dict(getattr(url, "query_parameters", None) or self.router.page.params or {})
        view = str(params.get("view", "") or "")
        if view and any(v["id"] == view for v in self.views):
            self.scope, self.view_id = "view", view
        elif self.ticked_count:
            self.scope = "ticked"
        elif self.current_filter_text:
            self.scope = "current"
        self.step = 1
        self.reviewed = False
        self.export_id = 0
        return None

    # --- step navigation ------------------------------------------------------------------
    @rx.event
    def go(self, step: int):
        try:
            step = int(step)
        except (TypeError, ValueError):
            return None
        if 1 <= step <= 4 and self.run_status in (
            "",
            "done",
            "failed",
            "cancelled",
            "rejected",
            "pending_approval",
            "approved",
        ):
            if step != self.step:
                self.reviewed = False if step < 4 else self.reviewed
            self.step = step
            if step == 4:
                return ExportWizardState.review
        return None

    # --- step 1 ----------------------------------------------------------------------------
    @rx.event
    def set_scope(self, value: str):
        if value in SCOPES:
            self.scope = value
            self.reviewed = False

    @rx.event
    def set_view_id(self, value: str):
        if any(v["id"] == str(value) for v in self.views):
            self.view_id = str(value)
            self.scope = "view"

    @rx.event
    def set_date_field(self, value: str):
        if value in DATE_FIELDS:
            self.date_field = value

    @rx.event
    def set_date_range(self, value: str):
        value = "" if value == "none" else value
        if value in DATE_RANGES:
            self.date_range = value

    @rx.event
    def set_date_from(self, value: str):
        self.date_from = str(value)[:10]

    @rx.event
    def set_date_to(self, value: str):
        self.date_to = str(value)[:10]

    @rx.event
    def toggle_source(self, source: str, checked: bool):
        if source not in SOURCES:
            return
        wanted = set(self.sources)
        if checked:
            wanted.add(source)
        else:
            wanted.discard(source)
        self.sources = [s for s in SOURCES if s in wanted]

    @rx.event
    def toggle_order_status(self, status: str, checked: bool):
        if status not in ORDER_STATUSES:
            return
        wanted = set(self.order_statuses)
        if checked:
            wanted.add(status)
        else:
            wanted.discard(status)
        self.order_statuses = [s for s in ORDER_STATUSES if s in wanted]

    @rx.event
    def set_purpose(self, value: str):
        if value in export_info.PURPOSES:
            self.purpose = value

    # --- step 2 ----------------------------------------------------------------------------
    @rx.event
    def toggle_field(self, key: str, checked: bool):
        if key not in FIELD_SPECS or key in self.blocked:
            return
        if checked and key not in self.chosen:
            self.chosen = self.chosen + [key]
        elif not checked:
            self.chosen = [f for f in self.chosen if f != key]
        if self.sort_field not in self.chosen and self.sort_field != "id":
            self.sort_field = "id"

    @rx.event
    def move_field(self, key: str, delta: int):
        if key not in self.chosen:
            return
        try:
            delta = 1 if int(delta) > 0 else -1
        except (TypeError, ValueError):
            return
        fields = list(self.chosen)
        i = fields.index(key)
        j = i + delta
        if 0 <= j < len(fields):
            fields[i], fields[j] = fields[j], fields[i]
            self.chosen = fields

    @rx.event
    def minimal_fields(self):
        self.chosen = [f for f in DEFAULT_FIELDS if f not in self.blocked]

    # --- step 3 ----------------------------------------------------------------------------
    @rx.event
    def set_sort_field(self, value: str):
        # A built-in sort, or a chosen custom field that may sort ("cf.<key>": stored by key).
        if value in SORT_COLUMNS or (
            isinstance(value, str) and value in self.chosen and export_custom_sort.sortable_names([value])
        ):
            self.sort_field = value

    @rx.event
    def set_sort_dir(self, value: str):
        if value in ("asc", "desc"):
            self.sort_dir = value

    @rx.event
    def set_fmt(self, value: str):
        if value in export_info.FORMATS:
            self.fmt = value

    # --- request ---------------------------------------------------------------------------
    def _request(self) -> dict:
        if self.scope == "view":
            if not self.view_id:
                raise ValidationError.single("scope", "export.error.choose_view")
            scope = {"kind": "view", "view_id": self.view_id}
        elif self.scope == "current":
            scope = {"kind": "query", "query": dict(self._current_filter)}
        elif self.scope == "ticked":
            if not self._ticked:
                raise ValidationError.single("scope", "export.error.no_ticked")
            scope = dict(self._ticked)
        else:
            query: dict = {}
            start, end = _quick_range(self.date_range, self.date_from, self.date_to)
            if start or end:
                query[f"{self.date_field}_from"] = start
                query[f"{self.date_field}_to"] = end
            if self.sources:
                query["sources"] = list(self.sources)
            if self.order_statuses:
                query["order_statuses"] = list(self.order_statuses)
            scope = {"kind": "query", "query": query}
        return {
            "scope": scope,
            "fields": list(self.chosen),
            "format": self.fmt,
            "sort_field": self.sort_field,
            "sort_dir": self.sort_dir,
            "purpose": self.purpose,
        }

    @rx.event
    async def review(self):
        self.reviewed = False
        try:
            actor = self._actor()
            result = await self._call(export_request.review, actor, self._request(), self.lang)
        except AppError as error:
            self.step = 1 if isinstance(error, ValidationError) and "scope" in error.field_errors else self.step
            return self._on_error(error)
        self.review_rows = result.row_count
        self.review_size = file_size_text(result.size_estimate)
        self.review_reasons = [self._tr(key, **params) for key, params in result.reasons]
        self.review_allowed = result.allowed
        self.review_needs_approval = result.needs_approval
        self.review_password_required = result.password_required
        self.review_scope = result.scope_text
        self.review_notice = (
            self._tr("export.skipped_fields", fields=", ".join(f.removeprefix("cf.") for f in result.skipped))
            if result.skipped
            else ""
        )
        self.password_error = ""
        self.reviewed = True
        return None

    @rx.event
    async def run(self, form: dict):
        """Submit the request; the password comes only with this form."""
        password = str(form.get("password", "") or "")[:200]
        confirm = str(form.get("password_confirm", "") or "")[:200]
        self.password_error = ""
        if password != confirm:
            self.password_error = self._tr("export.error.password_mismatch")
            return None
        try:
            actor = self._actor()
            view = await self._call(export_request.request_export, actor, self._request(), password, self.lang)
        except ValidationError as error:
            if "password" in error.field_errors:
                self.password_error = self._field_errors(error)["password"]
                return None
            return self._on_error(error)
        except AppError as error:
            return self._on_error(error)
        finally:
            password = confirm = ""
        self._apply(view)
        self.step = 5
        if view.status in WATCHED:
            return ExportWizardState.poll
        return None

    @rx.event
    async def start_approved(self, form: dict):
        """An approved protected export: the requester gives its password again (never stored)."""
        if self.run_status != "approved" or not isinstance(form, dict):
            return None
        password = str(form.get("password", "") or "")[:200]
        self.password_error = ""
        try:
            view = await self._call(export_approval.start_approved, self._actor(), self.export_id, password)
        except ValidationError as error:
            self.password_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        finally:
            password = ""
        self._apply(view)
        return ExportWizardState.poll

    def _apply(self, view: export_info.ExportInfo) -> None:
        self.export_id = view.id
        self.run_status = view.status
        self.run_status_label = self._tr(f"export.status.{view.status}")
        self.run_percent = view.percent
        self.run_done = view.progress_done
        self.run_total = view.row_estimate
        self.run_error = self._tr(view.error) if view.error else ""
        self.run_downloadable = view.downloadable
        self.run_protected = bool(view.protected)
        self.run_approver = view.approver
        self.run_comment = view.decision_comment

    @rx.event(background=True)
    async def poll(self):
        """Follow the export: its progress while it runs, and a request waiting for
        approval until it is decided (the database is read each time, so a manager
        approving on another worker is seen), then the download button.

        One loop per tab follows whatever export the wizard shows now; a flag left
        behind by a loop that died with its process (no beat for a while) is ignored.
        """
        async with self:
            if self.polling and time.time() - self._poll_beat < POLL_STALE_SECONDS:
                return
            self.polling = True
            self._poll_beat = time.time()
        followed, watch_until = 0, 0.0
        try:
            while True:
                async with self:
                    export_id = self.export_id
                    self._poll_beat = time.time()
                    try:
                        actor = self._actor()
                    except AppError:
                        return
                if not export_id:
                    return
                if export_id != followed:
                    followed, watch_until = export_id, time.monotonic() + PENDING_WATCH_SECONDS
                try:
                    view = await asyncio.to_thread(export_info.export_view, actor, export_id)
                except AppError:
                    return
                async with self:
                    if self.export_id != export_id:
                        continue  # the wizard moved on to another export: follow that one
                    self._apply(view)
                if view.status in export_info.ACTIVE:
                    await asyncio.sleep(0.5)
                elif view.status in WATCHED and time.monotonic() < watch_until:
                    await asyncio.sleep(PENDING_POLL_SECONDS)
                else:
                    return
        finally:
            async with self:
                self.polling = False

    @rx.event
    async def cancel(self):
        try:
            view = await self._call(export_approval.cancel_export, self._actor(), self.export_id)
        except AppError as error:
            return self._on_error(error)
        self._apply(view)
        return None

    @rx.event
    async def download(self):
        return await _download(self, self.export_id)

    @rx.event
    def restart(self):
        self.step = 1
        self.reviewed = False
        self.export_id = 0
        self.run_status = ""
        self.run_downloadable = False  # the last file's button must not stand for the next export

    # --- views -----------------------------------------------------------------------------
    @rx.var
    def chosen_rows(self) -> list[ChosenField]:
        masked = set(self.masked)
        return [
            ChosenField(
                key=f,
                label=field_label(f, self.lang),
                sensitive=FIELD_SPECS[f].sensitive,
                masked=f in masked and FIELD_SPECS[f].sensitive,
            )
            for f in self.chosen
            if f in FIELD_SPECS
        ]

    @rx.var
    def sort_options(self) -> list[dict[str, str]]:
        # Not by a value this role sees masked (the order would rank the hidden values).
        masked = set(self.masked)
        custom = set(export_custom_sort.sortable_names(self.chosen))
        keys = ["id"] + [f for f in self.chosen if (f in SORT_COLUMNS or f in custom) and f != "id" and f not in masked]
        # Custom fields by their label (the request names them by key).
        return [{"key": k, "label": field_label(k, self.lang)} for k in keys]

    @rx.var
    def sensitive_chosen(self) -> bool:
        masked = set(self.masked)
        return any(f in FIELD_SPECS and FIELD_SPECS[f].sensitive and f not in masked for f in self.chosen)


async def _download(state: AppState, export_id: int):
    try:
        token = await state._call(export_downloads.create_download_token, state._actor(), int(export_id))
    except AppError as error:
        return state._on_error(error)
    return full_page_load(f"/api/export/download/{token}")


class ExportHistoryState(_ExportBase):
    exports: list[ExportRow] = []
    polling: bool = False
    ttl_hours: int = 24

    async def _reload(self):
        from meiqia_app.services.cleanup import retention

        actor = self._actor()
        self._set_user(actor)
        self.ttl_hours = await self._call(retention.export_ttl_hours)
        views = await self._call(export_history.list_exports, actor)
        self.exports = [self._row(v) for v in views]

    @rx.event
    async def on_load(self):
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        if any(e.status in export_info.ACTIVE for e in self.exports):
            return ExportHistoryState.poll
        return None

    @rx.event(background=True)
    async def poll(self):
        async with self:
            if self.polling:
                return
            self.polling = True
        try:
            for _ in range(7200):
                await asyncio.sleep(1.0)
                async with self:
                    try:
                        await self._reload()
                    except AppError:
                        return
                    if not any(e.status in export_info.ACTIVE for e in self.exports):
                        return
        finally:
            async with self:
                self.polling = False

    @rx.event
    async def download(self, export_id: int):
        return await _download(self, self._as_id(export_id))

    @rx.event
    async def cancel(self, export_id: int):
        try:
            await self._call(export_approval.cancel_export, self._actor(), self._as_id(export_id))
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    async def start_with_password(self, form: dict):
        """Start an approved protected export: the requester gives its password again."""
        try:
            export_id = self._as_id(form.get("export_id"))
            await self._call(
                export_approval.start_approved, self._actor(), export_id, str(form.get("password", ""))[:200]
            )
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return ExportHistoryState.poll

    @rx.event
    async def rerun(self, form: dict):
        """Run a finished export again (the password, if any, comes with this form only)."""
        try:
            export_id = self._as_id(form.get("export_id"))
            await self._call(
                export_approval.rerun_export, self._actor(), export_id, str(form.get("password", ""))[:200], self.lang
            )
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return ExportHistoryState.poll


class PortabilityState(_ExportBase):
    """The "export everything about this customer" dialog (drop
    ``pages.export.portability_button(customer_id)`` on the detail page)."""

    open: bool = False
    customer_id: int = 0
    error: str = ""

    @rx.event
    def ask(self, customer_id: int):
        self.customer_id = self._as_id(customer_id)
        self.error = ""
        self.open = True

    @rx.event
    def set_open(self, value: bool):
        self.open = bool(value)

    @rx.event
    async def submit(self, form: dict):
        from meiqia_app.services.exports import portability

        password = str(form.get("password", "") or "")[:200]
        self.error = ""
        try:
            view = await self._call(portability.export_customer, self._actor(), self.customer_id, password)
        except ValidationError as error:
            self.error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        self.open = False
        # The file downloads right here; it is also in the export history (/exports) until it expires.
        return [rx.toast.success(self._tr("export.portability.ready")), await _download(self, view.id)]


class ExportApprovalsState(_ExportBase):
    pending: list[ExportRow] = []
    decide_open: bool = False
    decide_id: int = 0
    decide_approve: bool = True

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        self.pending = [self._row(v) for v in await self._call(export_approval.list_pending, actor)]

    @rx.event
    async def on_load(self):
        try:
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def ask(self, export_id: int, approve: bool):
        self.decide_id = self._as_id(export_id)
        self.decide_approve = bool(approve)
        self.decide_open = True

    @rx.event
    def set_decide_open(self, value: bool):
        self.decide_open = bool(value)

    @rx.event
    async def decide(self, form: dict):
        self.decide_open = False
        try:
            view = await self._call(
                export_approval.decide,
                self._actor(),
                self.decide_id,
                self.decide_approve,
                str(form.get("comment", ""))[:500],
            )
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        key = "export.approved_toast" if view.status != "rejected" else "export.rejected_toast"
        return rx.toast.success(self._tr(key, id=view.id))
