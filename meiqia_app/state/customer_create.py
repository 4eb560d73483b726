"""The "new customer" dialog on /customers (CUST: create by hand).

A customer who repeats an existing one's phone, e-mail or external id is not
saved at once: the dialog names the existing customers (with links) and the
person opens one of them or saves anyway (services/customers/duplicates/check). One
outside the person's data scope is not named: "a customer you cannot see
already has this phone", without a link.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import reflex as rx

from meiqia_app.services.custom_fields import values as custom_field_values
from meiqia_app.services.custom_fields.values import FieldValueView
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers.validation import EDITABLE_FIELDS
from meiqia_app.services.errors import AppError, DuplicateCustomer, ValidationError
from meiqia_app.state.base import AppState

FIELD_LABEL_KEYS = {"phone": "customer.phone", "email": "customer.email", "external_id": "customer.external_id"}


@dataclasses.dataclass
class DuplicateHint:
    """One existing customer the new one repeats, as the dialog shows it
    (one the person may not see: id 0, no name, no link)."""

    customer_id: int
    name: str
    text: str  # "电话与已有客户 张伟 相同" in the page's language
    href: str


class CustomerCreateState(AppState):
    # The existing customers' names are shown, not kept; their ids are (_warned_ids).
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"duplicates"})

    dialog_open: bool = False
    errors: dict[str, str] = {}
    saving: bool = False
    # A duplicate warning is showing: the next save is "save anyway".
    duplicate_warning: bool = False
    duplicates: list[DuplicateHint] = []
    # The ids of the customers the warning named, and the fields of those it could
    # not name (what "save anyway" acknowledges).
    _warned_ids: list[int] = []
    _warned_fields: list[str] = []
    # The custom fields the form offers (definitions and defaults: no customer data).
    custom_fields: list[FieldValueView] = []

    def _reset_warning(self) -> None:
        self.duplicate_warning = False
        self.duplicates = []
        self._warned_ids = []
        self._warned_fields = []

    @rx.event
    async def set_open(self, value: bool):
        self.dialog_open = value is True
        self.errors = {}
        self._reset_warning()
        if not self.dialog_open:
            return None
        try:
            self.custom_fields = await self._call(custom_field_values.form_fields, self._actor(), self.lang)
        except AppError as error:
            self.custom_fields = []
            return self._on_error(error)
        return None

    @rx.event
    def open_existing(self, customer_id: int):
        """Leave the dialog for one of the customers the warning named."""
        customer_id = self._as_id(customer_id)
        if customer_id not in self._warned_ids:
            return None
        self.dialog_open = False
        self._reset_warning()
        return rx.redirect(f"/customers/{customer_id}")

    @rx.event
    async def create(self, form: dict):
        if not isinstance(form, dict):
            return None
        raw: dict = {field: str(form.get(field, "") or "")[:500] for field in EDITABLE_FIELDS if field in form}
        # Always sent: the form offers every custom field, so required ones are checked.
        raw["custom_fields"] = custom_field_values.values_from_form(form)
        save_anyway = self.duplicate_warning and str(form.get("save_anyway", "")) == "1"
        acknowledged = list(self._warned_ids) if save_anyway else []
        acknowledged_hidden = list(self._warned_fields) if save_anyway else []
        self.errors = {}
        self.saving = True
        try:
            new_id = await self._call(
                customer_edit.create_customer, self._actor(), raw, None, acknowledged, acknowledged_hidden
            )
        except ValidationError as error:
            self.saving = False
            self.errors = self._field_errors(error)
            return None
        except DuplicateCustomer as error:
            self.saving = False
            shown = [m for m in error.matches if m.visible and m.customer_id]
            self._warned_ids = sorted({m.customer_id for m in shown})
            self._warned_fields = sorted({m.field for m in error.matches if not m.visible})
            self.duplicates = [
                DuplicateHint(
                    customer_id=match.customer_id,
                    name=match.name,
                    text=self._tr(
                        "customer.duplicate_of",
                        field=self._tr(FIELD_LABEL_KEYS.get(match.field, match.field)),
                        name=match.name,
                        id=match.customer_id,
                    ),
                    href=f"/customers/{match.customer_id}",
                )
                for match in shown
            ] + [
                DuplicateHint(customer_id=0, name="", text=self._tr(f"customer.duplicate_hidden.{field}"), href="")
                for field in self._warned_fields
            ]
            self.duplicate_warning = True
            return None
        except AppError as error:
            self.saving = False
            return self._on_error(error)
        self.saving = False
        self.dialog_open = False
        self._reset_warning()
        return [rx.toast.success(self._tr("customer.created")), rx.redirect(f"/customers/{new_id}")]
