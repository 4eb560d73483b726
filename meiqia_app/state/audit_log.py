"""State of /audit: filters, newest-first pages, chain verification, the chain's anchors."""

from __future__ import annotations

from typing import ClassVar

import reflex as rx

from meiqia_app.services.audit import reading as audit_log
from meiqia_app.services.audit.reading import AnchorRow, AuditFilter, AuditRow
from meiqia_app.services.errors import AppError
from meiqia_app.state.base import AppState


class AuditLogState(AppState):
    # Audit entries (who, what, masked changes): shown, not kept.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"rows"})

    rows: list[AuditRow] = []
    filters: dict[str, str] = {}
    page_number: int = 1
    has_older: bool = False
    verify_message: str = ""
    verify_ok: bool = True
    anchors: list[AnchorRow] = []

    _before_stack: list[int] = []
    _next_before: int = 0

    async def _load(self, before_id: int = 0):
        actor = self._actor()
        self._set_user(actor)
        page = await self._call(audit_log.list_entries, actor, AuditFilter.from_dict(self.filters), before_id)
        self.rows = page.rows
        self._next_before = page.next_before_id
        self.has_older = bool(page.next_before_id)

    async def _first_page(self):
        """Back to the newest entries of the current filter."""
        self.page_number = 1
        self._before_stack = []
        try:
            await self._load()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    async def on_load(self):
        self.verify_message = ""
        result = await self._first_page()
        if result is None:
            try:
                self.anchors = await self._call(audit_log.list_anchors, self._actor())
            except AppError as error:
                return self._on_error(error)
        return result

    @rx.event
    async def apply_filters(self, form: dict):
        if not isinstance(form, dict):
            return None
        preset = self.filters.get("preset", "")
        self.filters = {
            key: str(form.get(key, "") or "")[:64]
            for key in ("actor", "action", "target_type", "target_id", "result", "date_from", "date_to", "flagged")
        }
        self.filters["preset"] = preset
        if self.filters.get("result") == "any":
            self.filters["result"] = ""
        return await self._first_page()

    @rx.event
    async def apply_preset(self, name: str):
        """A preset button: "exports", "export_alerts" (exports, anomalies only) or "" (none)."""
        presets = {"exports": {"preset": "exports"}, "export_alerts": {"preset": "exports", "flagged": "1"}, "": {}}
        if not isinstance(name, str) or name not in presets:
            return None
        self.filters = dict(presets[name])
        return await self._first_page()

    @rx.var
    def active_preset(self) -> str:
        if self.filters.get("preset") != "exports":
            return ""
        return "export_alerts" if self.filters.get("flagged") == "1" else "exports"

    @rx.event
    async def clear_filters(self):
        self.filters = {}
        return await self.on_load()

    @rx.event
    async def older(self):
        if not self._next_before:
            return None
        try:
            before = self._next_before
            await self._load(before)
            self._before_stack = [*self._before_stack, before]
            self.page_number += 1
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def newest(self):
        return await self._first_page()

    @rx.event
    async def verify(self):
        try:
            report = await self._call(audit_log.verify, self._actor())
        except AppError as error:
            return self._on_error(error)
        self.verify_ok = report.ok
        if report.ok:
            self.verify_message = self._tr("audit.verify_ok", count=f"{report.checked:,}", anchors=report.anchors)
        else:
            self.verify_message = self._tr(
                "audit.verify_failed",
                id=report.first_bad_id or "?",
                problem=self._tr(f"audit.problem.{report.problem}"),
            )
        self.anchors = await self._call(audit_log.list_anchors, self._actor())
        await self._load()
        return None
