"""State of /customers/[customer_id]: the profile and its edit form."""

from __future__ import annotations

from typing import ClassVar

import reflex as rx

from meiqia_app.services.custom_fields import values as custom_field_values
from meiqia_app.services.customers import consent, ownership
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.profile import CustomerDetail
from meiqia_app.services.errors import AppError, Conflict, NotFound, ValidationError
from meiqia_app.state.base import AppState

FORM_FIELDS = (
    "name",
    "gender",
    "birthday",
    "phone",
    "email",
    "address",
    "province",
    "city",
    "company",
    "source",
    "external_id",
    "visitor_id",
    "lifecycle_stage",
    "membership_tier",
)


class CustomerDetailState(AppState):
    # The profile is shown, not kept: the handlers use _shown_id and _shown_version.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset({"customer"})

    customer: CustomerDetail | None = None
    not_found: bool = False

    editing: bool = False
    edit_errors: dict[str, str] = {}
    conflict: str = ""
    saving: bool = False
    # The owner line (colleagues' names, no customer data) and what the viewer may do.
    owner_name: str = ""
    owner_team: str = ""
    owner_in_pool: bool = True
    can_claim: bool = False
    can_assign: bool = False
    can_release: bool = False
    owner_choices: list[dict[str, str]] = []
    # The customer on the page (0: none) and the version it was read at.
    _shown_id: int = 0
    _shown_version: int = 0
    # The version the edit form was opened on: the save is checked against it.
    _edit_version: int = 0

    def _customer_id(self) -> int:
        raw = self.router.page.params.get("customer_id", "")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise NotFound() from None

    async def _reload(self, actor=None):
        try:
            actor = actor or self._actor()
            self._set_user(actor)
            customer = await self._call(customers.get_customer, actor, self._customer_id(), self.lang)
            self.customer = customer
            self._shown_id, self._shown_version = customer.id, customer.version
            self.not_found = False
            card = await self._call(ownership.owner_card, actor, customer.id)
            self.owner_name, self.owner_team, self.owner_in_pool = card.owner_name, card.team_name, card.in_pool
            self.can_claim, self.can_assign, self.can_release = card.can_claim, card.can_assign, card.can_release
            if card.can_assign and not self.owner_choices:
                options = await self._call(ownership.owner_options, actor)
                self.owner_choices = [
                    {"value": str(o.id), "label": f"{o.name} · {o.team}" if o.team else o.name} for o in options
                ]
        except NotFound:
            self.customer = None
            self._shown_id = self._shown_version = 0
            self.not_found = True
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    async def on_load(self):
        self.customer = None
        self._shown_id = 0
        self.not_found = False
        self.owner_choices = []
        self.editing = False
        self.conflict = ""
        try:
            actor = self._actor()
        except AppError as error:
            return self._on_error(error)
        self._set_user(actor)
        if await self._page_refused(actor):
            self._mark_loaded()
            return None
        problem = await self._reload()
        if problem is not None or not self._shown_id:
            self._mark_loaded()
            return problem
        # The timeline loads as the next event, after this one has let go of the state.
        from meiqia_app.state.customer_activity import CustomerActivityState  # its substate

        return [CustomerActivityState.on_load_activity, AppState.page_loaded]

    @rx.event
    def start_edit(self):
        if not self._shown_id:
            return None
        self._edit_version = self._shown_version
        self.edit_errors = {}
        self.conflict = ""
        self.editing = True
        return None

    @rx.event
    def set_editing(self, value: bool):
        self.editing = bool(value)

    @rx.event
    async def set_consent(self, kind: str, granted: bool):
        """Record that the customer gave or withdrew (退订) a consent; audited, and on the timeline."""
        if not self._shown_id or kind not in consent.CONSENT_KINDS or not isinstance(granted, bool):
            return None
        try:
            changed = await self._call(consent.set_consent, self._actor(), self._shown_id, kind, granted)
        except AppError as error:
            return self._on_error(error)
        failed = await self._reload()
        if failed is not None:
            return failed
        if not changed:
            return None
        from meiqia_app.state.customer_activity import CustomerActivityState  # its substate

        key = "consent.recorded_granted" if granted else "consent.recorded_withdrawn"
        return [
            rx.toast.success(self._tr(key, consent=self._tr(f"consent.{kind}"))),
            CustomerActivityState.refresh_timeline,
        ]

    async def _owner_change(self, function, *args):
        if not self._shown_id:
            return None
        try:
            result = await self._call(function, self._actor(), self._shown_id, *args)
        except AppError as error:
            await self._reload()
            return self._on_error(error)
        failed = await self._reload()
        if failed is not None:
            return failed
        from meiqia_app.state.customer_activity import CustomerActivityState  # its substate

        if result.action == "release":
            message = self._tr("owner.released")
        elif result.action == "claim":
            message = self._tr("owner.claimed")
        else:
            message = self._tr("owner.assigned", name=result.owner.owner_name)
        return [rx.toast.success(message), CustomerActivityState.refresh_timeline]

    @rx.event
    async def claim(self):
        """认领 / Claim: the customer leaves the pool for the viewer."""
        return await self._owner_change(ownership.claim)

    @rx.event
    async def release(self):
        return await self._owner_change(ownership.release)

    @rx.event
    async def assign_to(self, user_value: str):
        try:
            user_id = self._as_id(user_value)
        except ValidationError as error:
            return self._on_error(error)
        return await self._owner_change(ownership.assign, user_id)

    @rx.event
    async def reload_after_conflict(self):
        """Throw away the form and show what is stored now."""
        self.conflict = ""
        self.editing = False
        return await self._reload()

    @rx.event
    async def save(self, form: dict):
        if not self._shown_id:
            return
        if not isinstance(form, dict):
            return
        values: dict = {field: str(form.get(field, "") or "")[:300] for field in FORM_FIELDS if field in form}
        custom = custom_field_values.values_from_form(form)
        if custom:
            values["custom_fields"] = custom
        self.edit_errors = {}
        self.conflict = ""
        self.saving = True
        yield
        try:
            actor = self._actor()
            await self._call(customer_edit.update_customer, actor, self._shown_id, self._edit_version, values)
        except ValidationError as error:
            self.edit_errors = self._field_errors(error)
            self.saving = False
            return
        except Conflict as error:
            self.conflict = self._tr(error.message_key, **error.params)
            self.saving = False
            return
        except AppError as error:
            self.saving = False
            yield self._on_error(error)
            return
        self.saving = False
        self.editing = False
        await self._reload()
        yield rx.toast.success(self._tr("common.saved"))
