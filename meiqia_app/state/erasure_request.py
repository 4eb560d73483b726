"""The "request erasure" dialog on the customer detail page."""

from __future__ import annotations

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.privacy import erasure
from meiqia_app.state.base import AppState


class ErasureRequestState(AppState):
    erasure_open: bool = False
    erasure_error: str = ""

    @rx.event
    def set_erasure_open(self, value: bool):
        self.erasure_open = value is True
        self.erasure_error = ""

    @rx.event
    async def submit_erasure(self, form: dict):
        reason = str((form or {}).get("reason", "") or "")[:300]
        raw_id = self.router.page.params.get("customer_id", "")
        self.erasure_error = ""
        try:
            actor = self._actor()
            await self._call(erasure.request_erasure, actor, raw_id, reason)
        except ValidationError as error:
            self.erasure_error = next(iter(self._field_errors(error).values()), "")
            return
        except AppError as error:
            yield self._on_error(error)
            return
        self.erasure_open = False
        yield rx.toast.success(self._tr("cleanup.erasure.requested"))
        from meiqia_app.state.customer_detail import CustomerDetailState

        yield CustomerDetailState.on_load
