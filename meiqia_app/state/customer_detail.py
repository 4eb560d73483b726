"""State of /customers/[customer_id]."""

from __future__ import annotations

import reflex as rx

from meiqia_app.services import customers
from meiqia_app.services.customers import CustomerDetail
from meiqia_app.services.errors import AppError, NotFound
from meiqia_app.state.base import AppState


class CustomerDetailState(AppState):
    customer: CustomerDetail | None = None
    not_found: bool = False

    def _customer_id(self) -> int:
        raw = self.router.page.params.get("customer_id", "")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise NotFound() from None

    async def _reload(self):
        try:
            actor = self._actor()
            self._set_user(actor)
            self.customer = await self._call(customers.get_customer, actor, self._customer_id(), self.lang)
            self.not_found = False
        except NotFound:
            self.customer = None
            self.not_found = True
        except AppError as error:
            return self._on_error(error)
        return None

    @rx.event
    async def on_load(self):
        self.customer = None
        self.not_found = False
        return await self._reload()
