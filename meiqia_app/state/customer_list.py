"""State of /customers: the query a person builds and the page they see."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import ClassVar

import reflex as rx

from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.services.cleanup import actions as cleanup
from meiqia_app.services.cleanup import criteria as cleanup_criteria
from meiqia_app.services.cleanup import preview as cleanup_preview
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import ownership, saved_views
from meiqia_app.services.customers.dto import CustomerRow
from meiqia_app.services.customers.query import PAGE_SIZES, SORTS, ListQuery
from meiqia_app.services.customers.saved_views import DEFAULT_COLUMNS, LIST_COLUMNS, ViewOption, clean_columns
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags import catalog as tags
from meiqia_app.services.tags.catalog import TagOption
from meiqia_app.state.base import AppState

MULTI_FILTERS = {
    "lifecycle": LIFECYCLE_STAGES,
    "tiers": MEMBERSHIP_TIERS,
    "sources": SOURCES,
    "order_statuses": ORDER_STATUSES,
}
TEXT_FILTERS = (
    "province",
    "city",
    "registered_from",
    "registered_to",
    "active_from",
    "active_to",
    "purchase_from",
    "purchase_to",
    "spent_min",
    "spent_max",
    "orders_min",
    "orders_max",
)
TAG_FILTERS = ("tags_any", "tags_all", "tags_none")
# Set outside the filter panel (the quick filters, the team select): kept when the panel is applied.
OWNER_FILTERS = ("owner", "team_ids", "owner_ids")
OWNER_QUICK = ("mine", "pool")
LABEL_PREFIX = {"lifecycle": "lifecycle", "tiers": "tier", "sources": "source", "order_statuses": "order_status"}


def _row_id(row) -> int:
    return row["id"] if isinstance(row, dict) else row.id


@dataclasses.dataclass
class OwnerChoice:
    value: str
    label: str


@dataclasses.dataclass
class FilterChip:
    key: str
    label: str


def filters_from_form(form: dict) -> dict:
    """The filter panel's form → the dict ListQuery.from_dict validates.

    Multi-choice filters arrive as one checkbox per value ("lifecycle:active").
    """
    filters: dict[str, object] = {}
    for key, allowed in MULTI_FILTERS.items():
        chosen = [value for value in allowed if form.get(f"{key}:{value}") in ("on", True, "true")]
        if chosen:
            filters[key] = chosen
    for key in TEXT_FILTERS:
        value = str(form.get(key, "") or "").strip()[:32]
        if value:
            filters[key] = value
    for key in TAG_FILTERS:
        value = str(form.get(key, "") or "")
        if value and value != "none":
            filters[key] = [value]
    consent = str(form.get("consent_marketing", "") or "")
    if consent in ("yes", "no"):
        filters["consent_marketing"] = consent
    status = str(form.get("status", "") or "")
    if status in ("archived", "all"):
        filters["status"] = status
    return filters


#: How long a shown page is reused on coming back to the list (the count cache's lifetime).
SHOWN_PAGE_FRESH_SECONDS = 60.0


class CustomerListState(AppState):
    # The rows (names, phones, e-mails…) are shown, not kept: what the
    # handlers need of them later is in _row_ids.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"rows"})

    q: str = ""
    sort: str = "last_active_at"
    direction: str = "desc"
    page_size: int = 50
    filters: dict[str, object] = {}

    rows: list[CustomerRow] = []
    tag_options: list[TagOption] = []
    chips: list[FilterChip] = []
    filters_open: bool = False
    views: list[ViewOption] = []
    save_view_open: bool = False
    save_view_error: str = ""
    page_number: int = 1
    has_next: bool = False
    has_prev: bool = False
    too_short: bool = False
    loading: bool = False

    count_value: int = -1
    count_exact: bool = False

    # Owners a bulk "assign to…" may choose (the user's names, not customer data), teams to filter by.
    owner_choices: list[OwnerChoice] = []
    team_choices: list[OwnerChoice] = []
    owner_filter_choices: list[OwnerChoice] = []
    assign_open: bool = False
    assign_error: str = ""
    # The bulk tag dialog and its job's progress.
    bulk_open: bool = False
    bulk_action: str = "add"
    bulk_running: bool = False
    bulk_percent: int = 0
    bulk_error: str = ""
    _bulk_job_id: int = 0
    _bulk_done_key: str = ""
    # Archive / move to trash from the list: typed confirmation of the count.
    status_open: bool = False
    status_action: str = "archive"
    status_count: int = 0
    status_error: str = ""

    columns: list[str] = list(DEFAULT_COLUMNS)
    # Bulk selection (CUST-1): ticked ids, or every match of the current query.
    selected_ids: list[int] = []
    all_matching: bool = False

    # The ids of the rows on the page (the rows themselves are not kept).
    _row_ids: list[int] = []

    # Cursors and the count generation stay on the server.
    _next_cursor: str = ""
    _prev_cursor: str = ""
    _count_generation: int = 0
    # What the shown rows were read for (data version, query, page size,
    # language, viewer, websocket connection) and when (wall clock: another worker may read it): coming back to the list within a minute to an
    # unchanged key keeps the page, its count and the ticked rows instead of
    # asking the database again (agents go list -> customer -> list all day).
    # The connection is part of the key because only the browser holds the
    # rows: a reload or reconnect hydrates the tab without them.
    _shown_key: str = ""
    _shown_at: float = 0.0

    # --- helpers ----------------------------------------------------------------------
    def _query(self) -> ListQuery:
        return ListQuery.from_dict({**self.filters, "q": self.q, "sort": self.sort, "direction": self.direction})

    async def _load(self, cursor: str = "", direction: str = "next", page_number: int = 1):
        try:
            actor = self._actor()
            query = self._query()
            page = await self._call(
                customer_list.list_customers, actor, query, cursor, direction, self.page_size, self.lang
            )
        except ValidationError as error:
            return self._on_error(error)
        except AppError as error:
            return self._on_error(error)
        self.rows = page.rows
        self._row_ids = [_row_id(row) for row in page.rows]
        self._shown_key = self._page_key(actor, page.data_version)
        self._shown_at = time.time()
        self.too_short = page.too_short
        self._next_cursor = page.next_cursor
        self._prev_cursor = page.prev_cursor
        self.has_next = bool(page.next_cursor)
        self.has_prev = bool(page.prev_cursor)
        self.page_number = page_number
        return None

    def _page_key(self, actor, data_version: str) -> str:
        viewer = f"{actor.user_id}:{','.join(sorted(actor.permissions))}"
        connection = str(getattr(self.router.session, "session_id", "") or "")
        return json.dumps(
            [data_version, self._query().to_dict(), self.page_size, self.lang, viewer, connection], sort_keys=True
        )

    def _shown_page_is_current(self, actor, data_version: str) -> bool:
        return (
            bool(self._shown_key)
            and time.time() - self._shown_at < SHOWN_PAGE_FRESH_SECONDS
            and self._shown_key == self._page_key(actor, data_version)
        )

    def _selection(self) -> Selection:
        """What a bulk action works on; built server-side from the list's own query."""
        if self.all_matching:
            return Selection.of_query(self._query())
        if not self.selected_ids:
            raise ValidationError.single("selection", "bulk.nothing_selected")
        return Selection.of_ids(self.selected_ids, status=self._query().status)

    def _clear_selection(self) -> None:
        self.selected_ids = []
        self.all_matching = False

    async def _reload_first_page(self):
        # A changed query changes what "selected" means: start over.
        self._clear_selection()
        result = await self._load()
        if result is not None:
            return result
        self.count_value = -1
        return CustomerListState.refresh_count

    # --- events -----------------------------------------------------------------------
    @rx.event
    async def on_load(self):
        try:
            actor = self._actor()
            self._set_user(actor)
            if await self._page_refused(actor):
                self._mark_loaded()
                return None
            self.tag_options = await self._call(tags.list_tag_options, actor)
            self.views = await self._call(saved_views.list_views, actor)
            self.team_choices = [
                OwnerChoice(str(t.id), t.name) for t in await self._call(ownership.team_options, actor)
            ]
            self.owner_filter_choices = [
                OwnerChoice(str(o.id), f"{o.name} · {o.team}" if o.team else o.name)
                for o in await self._call(ownership.owner_filter_options, actor)
            ]
            version = await self._call(customer_list.data_version, actor)
        except AppError as error:
            return self._on_error(error)
        self._refresh_chips()
        if self._shown_page_is_current(actor, version):
            self._mark_loaded()
            return None
        reloaded = await self._reload_first_page()
        self._mark_loaded()
        return reloaded

    def _refresh_chips(self) -> None:
        names = {str(option.id): option.name for option in self.tag_options}
        chips: list[FilterChip] = []
        for key, value in self.filters.items():
            if key in MULTI_FILTERS:
                text = "、".join(self._tr(f"{LABEL_PREFIX[key]}.{v}") for v in value)
            elif key in TAG_FILTERS:
                text = "、".join(names.get(str(v), str(v)) for v in value)
            elif key == "status":
                text = self._tr(f"status.{value}")
            elif key == "consent_marketing":
                text = self._tr(f"common.{value}")
            elif key == "owner":
                text = self._tr(f"owner.filter_{value}")
            elif key == "team_ids":
                teams = {c.value: c.label for c in self.team_choices}
                text = "、".join(teams.get(str(v), "?") for v in value)
            elif key == "owner_ids":
                owners = {c.value: c.label for c in self.owner_filter_choices}
                text = "、".join(owners.get(str(v), "?") for v in value)
            else:
                text = str(value)
            chips.append(FilterChip(key, f"{self._tr('filter.' + key)}: {text}"))
        self.chips = chips

    @rx.event
    def set_filters_open(self, value: bool):
        self.filters_open = bool(value)

    @rx.event
    async def apply_filters(self, form: dict):
        if not isinstance(form, dict):
            return None
        candidate = {k: v for k, v in self.filters.items() if k in OWNER_FILTERS} | filters_from_form(form)
        for key in ("team_ids", "owner_ids"):  # one team / one owner picked from a select
            picked = str(form.get(key, "") or "")
            if picked == "none":
                candidate.pop(key, None)
            elif picked:
                candidate[key] = [picked]
        try:
            ListQuery.from_dict({**candidate, "q": self.q, "sort": self.sort, "direction": self.direction})
        except ValidationError as error:
            return self._on_error(error)
        self.filters = candidate
        self.filters_open = False
        self._refresh_chips()
        return await self._reload_first_page()

    @rx.event
    async def remove_filter(self, key: str):
        if key not in self.filters:
            return None
        self.filters = {k: v for k, v in self.filters.items() if k != key}
        self._refresh_chips()
        return await self._reload_first_page()

    # --- saved views -------------------------------------------------------------------
    @rx.event
    def set_save_view_open(self, value: bool):
        self.save_view_open = bool(value)
        self.save_view_error = ""

    @rx.event
    async def save_view(self, form: dict):
        self.save_view_error = ""
        try:
            actor = self._actor()
            view = await self._call(
                saved_views.save_view,
                actor,
                str(form.get("name", ""))[:80],
                self._query(),
                form.get("shared") in ("on", True, "true"),
                self.columns,
            )
            self.views = await self._call(saved_views.list_views, actor)
        except ValidationError as error:
            self.save_view_error = next(iter(self._field_errors(error).values()), "")
            return None
        except AppError as error:
            return self._on_error(error)
        self.save_view_open = False
        return rx.toast.success(self._tr("view.saved", name=view.name))

    @rx.event
    async def open_view(self, view_id: int):
        try:
            query, columns = await self._call(saved_views.load_view_setup, self._actor(), self._as_id(view_id))
        except AppError as error:
            return self._on_error(error)
        data = query.to_dict()
        self.columns = columns
        self.q = data.pop("q")
        self.sort = data.pop("sort")
        self.direction = data.pop("direction")
        self.filters = {
            key: value
            for key, value in data.items()
            if value not in (None, "", [], ()) and not (key == "status" and value == "active")
        }
        self._refresh_chips()
        return await self._reload_first_page()

    @rx.event
    async def delete_view(self, view_id: int):
        try:
            actor = self._actor()
            await self._call(saved_views.delete_view, actor, self._as_id(view_id))
            self.views = await self._call(saved_views.list_views, actor)
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("view.deleted"))

    @rx.event
    async def set_owner_filter(self, value: str | list[str]):
        """The quick filters: all / my customers (我的客户) / the pool (公海)."""
        value = value if isinstance(value, str) else ""
        self.filters = {k: v for k, v in self.filters.items() if k != "owner"}
        if value in OWNER_QUICK:
            self.filters["owner"] = value
        self._refresh_chips()
        return await self._reload_first_page()

    @rx.event
    async def claim(self, customer_id: int):
        """认领 / Claim a pool customer from its row."""
        try:
            result = await self._call(ownership.claim, self._actor(), self._as_id(customer_id))
        except AppError as error:
            await self._load(page_number=self.page_number)
            return self._on_error(error)
        await self._load(page_number=self.page_number)
        return rx.toast.success(self._tr("owner.claimed") + " · " + result.owner.owner_name)

    @rx.event
    async def open_assign(self):
        if self.bulk_running:
            return None
        try:
            options = await self._call(ownership.owner_options, self._actor())
        except AppError as error:
            return self._on_error(error)
        self.owner_choices = [OwnerChoice(str(o.id), f"{o.name} · {o.team}" if o.team else o.name) for o in options]
        self.assign_error = ""
        self.assign_open = True
        return None

    @rx.event
    def set_assign_open(self, value: bool):
        if not value and not self.bulk_running:
            self.assign_open = False

    @rx.event
    async def start_bulk_assign(self, form: dict):
        """Assign the selection (ticked rows or all matching) to one user, or release it, as a job."""
        if self.bulk_running or not isinstance(form, dict):
            return None
        self.assign_error = ""
        owner = str(form.get("owner", "") or "")
        try:
            target = None if owner in ("", "pool") else self._as_id(owner)
            job_id = await self._call(ownership.start_bulk_assign_job, self._actor(), self._selection(), target)
        except ValidationError as error:
            self.assign_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        self._bulk_job_id = job_id
        self._bulk_done_key = "bulk.assigned"
        self.bulk_running = True
        self.bulk_percent = 0
        return CustomerListState.follow_bulk_job

    @rx.event
    async def clear_filters(self):
        self.filters = {}
        self._refresh_chips()
        return await self._reload_first_page()

    @rx.event(supersedes=True)
    async def set_q(self, value: str):
        self.q = str(value or "")[:100]
        return await self._reload_first_page()

    @rx.event
    async def sort_by(self, column: str):
        if column not in SORTS:
            return None
        if self.sort == column:
            self.direction = "asc" if self.direction == "desc" else "desc"
        else:
            # A new column sorts ascending first (A→Z, oldest first); a second click reverses it.
            self.sort, self.direction = column, "asc"
        return await self._load()

    @rx.event
    async def set_page_size(self, value: str):
        try:
            size = int(value)
        except (TypeError, ValueError):
            return None
        if size in PAGE_SIZES:
            self.page_size = size
            return await self._load()
        return None

    @rx.event
    async def next_page(self):
        if self._next_cursor:
            return await self._load(self._next_cursor, "next", self.page_number + 1)
        return None

    @rx.event
    async def prev_page(self):
        if self._prev_cursor:
            result = await self._load(self._prev_cursor, "prev", max(1, self.page_number - 1))
            if not self.has_prev:
                self.page_number = 1
            return result
        return None

    @rx.event
    async def first_page(self):
        return await self._load()

    @rx.event
    async def last_page(self):
        result = await self._load("", "last", 0)
        if self.count_exact and self.count_value > 0:
            self.page_number = (self.count_value + self.page_size - 1) // self.page_size
        return result

    @rx.event(background=True)
    async def refresh_count(self):
        """The number of matches: an estimate first when exact is not cheap, then exact."""
        async with self:
            self._count_generation += 1
            generation = self._count_generation
            try:
                actor = self._actor()
                query = self._query()
            except AppError:
                return
        for exact in (False, True):
            try:
                result = await asyncio.to_thread(customer_list.count_customers, actor, query, exact)
            except AppError:
                return
            async with self:
                if generation != self._count_generation:
                    return
                self.count_value = result.value
                self.count_exact = result.exact
            if result.exact:
                return

    # --- columns and selection ----------------------------------------------------------
    @rx.event
    def toggle_column(self, key: str):
        if key not in LIST_COLUMNS or key == "name":
            return
        chosen = set(self.columns) ^ {key}
        self.columns = clean_columns(list(chosen))

    @rx.event
    def set_row_selected(self, customer_id: int, checked: bool):
        try:
            customer_id = int(customer_id)
        except (TypeError, ValueError):
            return
        if customer_id not in self._row_ids:
            return
        self.all_matching = False
        if checked and customer_id not in self.selected_ids:
            self.selected_ids = [*self.selected_ids, customer_id]
        elif not checked:
            self.selected_ids = [i for i in self.selected_ids if i != customer_id]

    @rx.event
    def set_page_selected(self, checked: bool):
        page_ids = list(self._row_ids)
        self.all_matching = False
        if checked:
            self.selected_ids = list(dict.fromkeys([*self.selected_ids, *page_ids]))
        else:
            self.selected_ids = [i for i in self.selected_ids if i not in set(page_ids)]

    @rx.event
    def select_all_matching(self):
        self.all_matching = True

    @rx.event
    def clear_selection(self):
        self._clear_selection()

    # --- bulk tagging -------------------------------------------------------------------
    @rx.event
    def open_bulk_tag(self, action: str):
        if action not in ("add", "remove") or self.bulk_running:
            return
        self.bulk_action = action
        self.bulk_error = ""
        self.bulk_open = True

    @rx.event
    def set_bulk_open(self, value: bool):
        if not value and not self.bulk_running:
            self.bulk_open = False

    @rx.event
    async def start_bulk_tag(self, form: dict):
        """Add or remove one tag on the selection, as a background job with a progress bar."""
        if self.bulk_running or not isinstance(form, dict):
            return None
        self.bulk_error = ""
        try:
            selection = self._selection()
            job_id = await self._call(
                tags.start_bulk_tag_job, self._actor(), selection, self._as_id(form.get("tag_id")), self.bulk_action
            )
        except ValidationError as error:
            self.bulk_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        self._bulk_job_id = job_id
        self._bulk_done_key = "bulk.tag_added" if self.bulk_action == "add" else "bulk.tag_removed"
        self.bulk_running = True
        self.bulk_percent = 0
        return CustomerListState.follow_bulk_job

    # --- archive / trash the selection (the cleanup service's jobs) ----------------------------
    def _status_criteria(self, action: str) -> cleanup_criteria.Criteria:
        selection = self._selection()
        status = selection.query.status
        scope = "active" if action == "archive" or status not in ("active", "archived") else status
        return cleanup_criteria.Criteria.from_dict({"selection": selection.to_dict(), "scope": scope})

    @rx.event
    async def open_status_action(self, action: str):
        if action not in ("archive", "trash") or self.bulk_running:
            return None
        try:
            count = await self._call(cleanup_preview.count_matching, self._actor(), self._status_criteria(action))
        except AppError as error:
            return self._on_error(error)
        self.status_action = action
        self.status_count = count
        self.status_error = ""
        self.status_open = True
        return None

    @rx.event
    def set_status_open(self, value: bool):
        if not value and not self.bulk_running:
            self.status_open = False

    @rx.event
    async def confirm_status_action(self, form: dict):
        if self.bulk_running or not isinstance(form, dict) or self.status_action not in ("archive", "trash"):
            return None
        self.status_error = ""
        try:
            job_id = await self._call(
                cleanup.start_action,
                self._actor(),
                self._status_criteria(self.status_action),
                self.status_action,
                str(form.get("confirm", ""))[:20],
            )
        except ValidationError as error:
            self.status_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return None
        except AppError as error:
            return self._on_error(error)
        self._bulk_job_id = job_id
        self._bulk_done_key = "bulk.archived" if self.status_action == "archive" else "bulk.trashed"
        self.bulk_running = True
        self.bulk_percent = 0
        return CustomerListState.follow_bulk_job

    @rx.event(background=True)
    async def follow_bulk_job(self):
        async with self:
            job_id = self._bulk_job_id
            try:
                actor = self._actor()
            except AppError:
                self.bulk_running = False
                return
        while True:
            await asyncio.sleep(0.5)
            try:
                view = await asyncio.to_thread(jobs.job_view, actor, job_id)
            except AppError:
                async with self:
                    self.bulk_running = False
                return
            async with self:
                self.bulk_percent = view.percent
                if view.finished:
                    self.bulk_running = False
                    self.bulk_open = False
                    self.status_open = False
                    self.assign_open = False
                    changed = view.result.get("changed", view.result.get("processed", view.processed))
                    if view.status == "done":
                        yield rx.toast.success(self._tr(self._bulk_done_key, count=f"{changed:,}"))
                    else:
                        yield rx.toast.error(self._tr("bulk.job_failed", status=view.status))
                    self._clear_selection()
                    result = await self._load()
                    if result is not None:
                        yield result
                        return
                    # The rows changed (archived / trashed ones left the list): so did their number.
                    self.count_value = -1
                    yield CustomerListState.refresh_count
                    return

    # --- view helpers -----------------------------------------------------------------
    @rx.var
    def selected_count(self) -> int:
        if self.all_matching:
            return max(self.count_value, 0)
        return len(self.selected_ids)

    @rx.var
    def page_all_selected(self) -> bool:
        return bool(self._row_ids) and (
            self.all_matching or all(row_id in self.selected_ids for row_id in self._row_ids)
        )

    @rx.var
    def owner_filter(self) -> str:
        value = self.filters.get("owner", "")
        return value if value in OWNER_QUICK else "any"

    @rx.var
    def team_filter(self) -> str:
        value = self.filters.get("team_ids") or []
        return str(value[0]) if value else "none"

    @rx.var
    def owner_ids_filter(self) -> str:
        value = self.filters.get("owner_ids") or []
        return str(value[0]) if value else "none"

    @rx.var
    def page_label(self) -> str:
        return str(self.page_number) if self.page_number > 0 else "…"

    @rx.var
    def count_display(self) -> str:
        return f"{self.count_value:,}" if self.count_value >= 0 else ""
