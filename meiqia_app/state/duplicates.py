"""State of /duplicates: pages of duplicate groups and the merge dialog."""

from __future__ import annotations

from typing import ClassVar

import reflex as rx

from meiqia_app.services.customers.duplicates import finding as duplicates
from meiqia_app.services.customers.duplicates import merging as duplicate_merging
from meiqia_app.services.customers.duplicates.finding import DuplicateGroup
from meiqia_app.services.customers.duplicates.merging import MergeCandidate, MergeField
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.state.base import AppState


class DuplicatesState(AppState):
    # Customers' names, phones, e-mails: shown, not kept (the merge keeps ids and versions).
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"groups", "merge_customers", "merge_fields"})

    kind: str = "phone"
    groups: list[DuplicateGroup] = []
    page_number: int = 1
    has_next: bool = False
    loading: bool = False

    merge_open: bool = False
    merge_customers: list[MergeCandidate] = []
    merge_fields: list[MergeField] = []
    survivor_id: str = ""
    # field -> id (as text, for the radio groups) of the customer whose value the survivor keeps
    choices: dict[str, str] = {}
    merging: bool = False
    merge_error: str = ""

    # Paging keys (encrypted by the service) and the versions the dialog showed stay on the server.
    _next_key: str = ""
    _page_keys: list[str] = []
    _versions: dict[int, int] = {}
    # multi-select custom fields that may take "all options of both" (the choice "union")
    _union_fields: list[str] = []

    async def _load(self, after_key: str) -> object:
        self.loading = True
        try:
            page = await self._call(duplicates.find_duplicate_groups, self._actor(), self.kind, after_key, 20)
        except AppError as error:
            self.loading = False
            return self._on_error(error)
        self.loading = False
        self.groups = page.groups
        self._next_key = page.next_key
        self.has_next = bool(page.next_key)
        return None

    @rx.event
    async def on_load(self):
        try:
            self._set_user(self._actor())
        except AppError as error:
            return self._on_error(error)
        self._page_keys = [""]
        self.page_number = 1
        return await self._load("")

    @rx.event
    async def set_kind(self, kind: str):
        if kind not in duplicates.KINDS:
            return None
        self.kind = kind
        self._page_keys = [""]
        self.page_number = 1
        return await self._load("")

    @rx.event
    async def next_page(self):
        if not self._next_key:
            return None
        self._page_keys = [*self._page_keys, self._next_key]
        self.page_number = len(self._page_keys)
        return await self._load(self._next_key)

    @rx.event
    async def prev_page(self):
        if len(self._page_keys) <= 1:
            return None
        self._page_keys = self._page_keys[:-1]
        self.page_number = len(self._page_keys)
        return await self._load(self._page_keys[-1])

    # --- merge dialog ------------------------------------------------------------------------
    @rx.event
    async def open_merge(self, ids: list[int]):
        """Preview a merge of the given group's members (the service validates the ids)."""
        self.merge_error = ""
        try:
            preview = await self._call(
                duplicate_merging.merge_preview,
                self._actor(),
                list(ids or [])[: duplicate_merging.MAX_MERGE],
                self.lang,
            )
        except AppError as error:
            return self._on_error(error)
        self.merge_customers = preview.customers
        self.merge_fields = [field for field in preview.fields if field.differs]
        self.survivor_id = str(preview.suggested_survivor_id)
        # A sensitive custom field the actor sees masked is locked: no choice (the service keeps the survivor's).
        self.choices = {
            field.field: str(field.default_customer_id)
            for field in preview.fields
            if field.differs and not field.locked
        }
        self._union_fields = [field.field for field in preview.fields if field.differs and field.union]
        self._versions = {candidate.id: candidate.version for candidate in preview.customers}
        self.merge_open = True
        return None

    @rx.event
    def set_merge_open(self, value: bool):
        if not value:
            self.merge_open = False
            self.merge_error = ""

    @rx.event
    def choose_survivor(self, customer_id: str):
        if self._as_known_id(customer_id) is not None:
            self.survivor_id = str(customer_id)

    @rx.event
    def choose_value(self, field: str, customer_id: str):
        if field in self.choices and (
            self._as_known_id(customer_id) is not None or (customer_id == "union" and field in self._union_fields)
        ):
            self.choices = {**self.choices, field: str(customer_id)}

    def _as_known_id(self, value) -> int | None:
        try:
            number = int(value)
        except (TypeError, ValueError):
            return None
        return number if number in self._versions else None

    @rx.event
    async def confirm_merge(self):
        survivor = self._as_known_id(self.survivor_id)
        if survivor is None or len(self._versions) < duplicate_merging.MIN_MERGE:
            return
        others = [cid for cid in self._versions if cid != survivor]
        field_choices = {field: cid if cid == "union" else int(cid) for field, cid in self.choices.items()}
        self.merging = True
        yield
        try:
            result = await self._call(
                duplicate_merging.merge_customers, self._actor(), survivor, others, field_choices, dict(self._versions)
            )
        except ValidationError as error:
            self.merging = False
            self.merge_error = next(iter(self._field_errors(error).values()), self._tr("error.validation"))
            return
        except AppError as error:
            self.merging = False
            self.merge_error = self._tr(error.message_key, **error.params)
            return
        self.merging = False
        self.merge_open = False
        self._versions = {}
        yield rx.toast.success(self._tr("dup.merged", count=len(result.merged_ids) + 1, id=result.survivor_id))
        # The group is gone from the list once its members are merged.
        yield DuplicatesState.reload_page

    @rx.event
    async def reload_page(self):
        return await self._load(self._page_keys[-1] if self._page_keys else "")
