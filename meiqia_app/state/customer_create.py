"""The "new customer" dialog on /customers (CUST: create by hand)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.services import customer_edit
from meiqia_app.services.customer_validation import EDITABLE_FIELDS
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.state.base import AppState


class CustomerCreateState(AppState):
    dialog_open: bool = False
    errors: dict[str, str] = {}
    saving: bool = False

    @rx.event
    def set_open(self, value: bool):
        self.dialog_open = bool(value)
        self.errors = {}

    @rx.event
    async def create(self, form: dict):
        if not isinstance(form, dict):
            return None
        raw = {field: str(form.get(field, "") or "")[:500] for field in EDITABLE_FIELDS if field in form}
        self.errors = {}
        self.saving = True
        try:
            new_id = await self._call(customer_edit.create_customer, self._actor(), raw)
        except ValidationError as error:
            self.saving = False
            self.errors = self._field_errors(error)
            return None
        except AppError as error:
            self.saving = False
            return self._on_error(error)
        self.saving = False
        self.dialog_open = False
        return [rx.toast.success(self._tr("customer.created")), rx.redirect(f"/customers/{new_id}")]
