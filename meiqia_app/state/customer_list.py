"""State of /customers: the query a person builds and the page they see."""

from __future__ import annotations

import asyncio

import reflex as rx

from meiqia_app.services import customer_list
from meiqia_app.services.customer_dto import CustomerRow
from meiqia_app.services.customer_query import PAGE_SIZES, SORTS, ListQuery
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.state.base import AppState


class CustomerListState(AppState):
    q: str = ""
    sort: str = "last_active_at"
    direction: str = "desc"
    page_size: int = 50
    filters: dict[str, object] = {}

    rows: list[CustomerRow] = []
    page_number: int = 1
    has_next: bool = False
    has_prev: bool = False
    too_short: bool = False
    loading: bool = False

    count_value: int = -1
    count_exact: bool = False

    # Cursors and the count generation stay on the server.
    _next_cursor: str = ""
    _prev_cursor: str = ""
    _count_generation: int = 0

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
        self.too_short = page.too_short
        self._next_cursor = page.next_cursor
        self._prev_cursor = page.prev_cursor
        self.has_next = bool(page.next_cursor)
        self.has_prev = bool(page.prev_cursor)
        self.page_number = page_number
        return None

    async def _reload_first_page(self):
        result = await self._load()
        if result is not None:
            return result
        self.count_value = -1
        return CustomerListState.refresh_count

    # --- events -----------------------------------------------------------------------
    @rx.event
    async def on_load(self):
        try:
            self._set_user(self._actor())
        except AppError as error:
            return self._on_error(error)
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
            self.sort, self.direction = column, "desc"
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

    # --- view helpers -----------------------------------------------------------------
    @rx.var
    def page_label(self) -> str:
        return str(self.page_number) if self.page_number > 0 else "…"

    @rx.var
    def count_display(self) -> str:
        return f"{self.count_value:,}" if self.count_value >= 0 else ""
