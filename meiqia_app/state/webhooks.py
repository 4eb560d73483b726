"""State of /admin/webhooks: endpoints (add, edit, enable, delete) and their delivery logs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import ClassVar

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.integrations import webhooks
from meiqia_app.state.base import AppState
from meiqia_app.timeutil import format_local


def _local(iso: str | None) -> str:
    if not iso:
        return ""
    return format_local(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")))


@dataclasses.dataclass
class EndpointRow:
    id: int
    url: str
    events: str
    enabled: bool
    level: str
    last_success_at: str
    failing: str
    disabled_reason: str


@dataclasses.dataclass
class DeliveryRow:
    id: int
    event: str
    status: str
    code: str
    attempts: int
    at: str
    error: str
    customer_id: str


class WebhooksState(AppState):
    # A receiver's URL may carry its own token, and a new secret is shown once:
    # shown, then forgotten (privacy rule 3). Handlers work with ids.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"endpoints", "new_secret", "form_url"})

    endpoints: list[EndpointRow] = []
    deliveries: list[DeliveryRow] = []
    deliveries_for: int = 0
    form_open: bool = False
    editing_id: int = 0
    form_url: str = ""
    form_events: list[str] = []
    form_enabled: bool = True
    errors: dict[str, str] = {}
    saving: bool = False
    new_secret: str = ""
    secret_open: bool = False
    delete_open: bool = False
    delete_id: int = 0

    async def _reload(self):
        actor = self._actor()
        self._set_user(actor)
        views = await self._call(webhooks.list_endpoints, actor)
        self.endpoints = [
            EndpointRow(
                id=v.id,
                url=v.url,
                events=", ".join(self._tr(f"webhook.event.{e}") for e in v.events),
                enabled=v.enabled,
                level=self._tr(f"webhook.level.{v.data_level}"),
                last_success_at=_local(v.last_success_at),
                failing=self._tr("webhook.failing_since", at=_local(v.failing_since), error=v.last_error)
                if v.failing_since
                else "",
                disabled_reason=v.disabled_reason,
            )
            for v in views
        ]
        if self.deliveries_for:
            await self._load_deliveries(self.deliveries_for)

    async def _load_deliveries(self, endpoint_id: int):
        views = await self._call(webhooks.list_deliveries, self._actor(), endpoint_id, 50)
        self.deliveries = [
            DeliveryRow(
                id=v.id,
                event=self._tr(f"webhook.event.{v.event_type}"),
                status=v.status,
                code=str(v.last_status_code or ""),
                attempts=v.attempts,
                at=_local(v.delivered_at or v.last_attempt_at or v.created_at),
                error=v.last_error,
                customer_id=str(v.customer_id or ""),
            )
            for v in views
        ]
        self.deliveries_for = endpoint_id

    @rx.event
    async def on_load(self):
        self.form_open = self.secret_open = self.delete_open = False
        self.new_secret = ""
        self.deliveries_for = 0
        self.deliveries = []
        try:
            await self._reload()
        except AppError as error:
            self.endpoints = []
            return self._on_error(error)
        return None

    @rx.event
    def open_new(self):
        self.editing_id = 0
        self.form_url = ""
        self.form_events = list(webhooks.EVENT_TYPES)
        self.form_enabled = True
        self.errors = {}
        self.form_open = True

    @rx.event
    async def open_edit(self, endpoint_id: int):
        try:
            view = await self._call(webhooks.get_endpoint, self._actor(), self._as_id(endpoint_id))
        except AppError as error:
            return self._on_error(error)
        self.editing_id = view.id
        self.form_url = view.url
        self.form_events = list(view.events)
        self.form_enabled = view.enabled
        self.errors = {}
        self.form_open = True
        return None

    @rx.event
    def set_form_open(self, value: bool):
        self.form_open = value is True

    @rx.event
    def toggle_event(self, event: str, checked: bool):
        if event not in webhooks.EVENT_TYPES:
            return
        chosen = [e for e in self.form_events if e != event]
        if checked is True:
            chosen.append(event)
        self.form_events = [e for e in webhooks.EVENT_TYPES if e in chosen]

    @rx.event
    def set_form_enabled(self, value: bool):
        self.form_enabled = value is True

    @rx.event
    async def save(self, form: dict):
        if not isinstance(form, dict):
            return None
        url = str(form.get("url", "") or "")[:2048]
        secret = str(form.get("secret", "") or "")[:200]
        self.errors = {}
        self.saving = True
        try:
            actor = self._actor()
            generated = ""
            if self.editing_id:
                changes = {"url": url, "events": list(self.form_events), "enabled": self.form_enabled}
                if secret:
                    changes["secret"] = secret
                await self._call(webhooks.update_endpoint, actor, self.editing_id, changes)
            else:
                _view, generated = await self._call(
                    webhooks.create_endpoint, actor, url, list(self.form_events), secret or None, self.form_enabled
                )
            await self._reload()
        except ValidationError as error:
            self.saving = False
            self.errors = self._field_errors(error)
            return None
        except AppError as error:
            self.saving = False
            return self._on_error(error)
        self.saving = False
        self.form_open = False
        if generated:
            self.new_secret = generated
            self.secret_open = True
        return rx.toast.success(self._tr("common.saved"))

    @rx.event
    def close_secret(self, value: bool = False):
        if value is not True:
            self.secret_open = False
            self.new_secret = ""

    @rx.event
    async def set_enabled(self, endpoint_id: int, enabled: bool):
        try:
            await self._call(
                webhooks.update_endpoint, self._actor(), self._as_id(endpoint_id), {"enabled": enabled is True}
            )
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    def ask_delete(self, endpoint_id: int):
        try:
            self.delete_id = self._as_id(endpoint_id)
        except AppError as error:
            return self._on_error(error)
        self.delete_open = True
        return None

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open = value is True

    @rx.event
    async def delete(self):
        self.delete_open = False
        try:
            await self._call(webhooks.delete_endpoint, self._actor(), self.delete_id)
            if self.deliveries_for == self.delete_id:
                self.deliveries_for = 0
                self.deliveries = []
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("webhook.deleted"))

    @rx.event
    async def show_deliveries(self, endpoint_id: int):
        try:
            await self._load_deliveries(self._as_id(endpoint_id))
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    async def resend(self, delivery_id: int):
        try:
            await self._call(webhooks.resend_delivery, self._actor(), self._as_id(delivery_id))
            await self._reload()
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("webhook.resent"))
