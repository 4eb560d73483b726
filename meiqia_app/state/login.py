"""State of /login: password, then TOTP (or enrolment), then the session cookie."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

import reflex as rx

from meiqia_app.services import auth
from meiqia_app.services.errors import AppError
from meiqia_app.state.base import AppState, full_page_load


def safe_next(target: str | None) -> str:
    """Only same-site paths: never //host or a scheme (open redirect)."""
    target = (target or "").strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target or target.startswith("/api/"):
        return "/"
    return target[:200]


class LoginState(AppState):
    requires_login: ClassVar[bool] = False

    step: str = "password"  # password | totp | enrol | recovery
    username: str = ""
    error: str = ""
    busy: bool = False
    enrol_secret: str = ""
    enrol_qr: str = ""
    recovery_codes: list[str] = []

    _challenge: str = ""
    _ticket: str = ""

    def _claim_url(self) -> str:
        target = safe_next(self.router.page.params.get("next"))
        return f"/api/session/claim?ticket={quote(self._ticket)}&next={quote(target, safe='/')}"

    @rx.event
    async def on_load(self):
        """An already logged-in person skips the form."""
        self.error = ""
        self.busy = False
        if self.step == "recovery" and self.recovery_codes:
            return None
        actor = await self._call(auth.resolve_session, self._session_token(), self._client_ip())
        if actor is not None:
            return rx.redirect(safe_next(self.router.page.params.get("next")))
        self.step = "password"
        self._challenge = ""
        if self.router.page.params.get("expired"):
            self.error = self._tr("auth.session_expired")
        return None

    @rx.event
    async def submit_password(self, form: dict):
        username = str(form.get("username", ""))[:64]
        password = str(form.get("password", ""))[:256]
        self.username = username
        self.error = ""
        self.busy = True
        yield
        try:
            accepted = await self._call(auth.begin_login, username, password, self._client_ip())
        except AppError as error:
            self.error = self._tr(error.message_key, **error.params)
            self.busy = False
            return
        self._challenge = accepted.challenge
        self.busy = False
        if accepted.must_enrol:
            self.enrol_secret = accepted.enrol_secret or ""
            self.enrol_qr = accepted.enrol_qr or ""
            self.step = "enrol"
        else:
            self.step = "totp"

    @rx.event
    async def submit_code(self, form: dict):
        code = str(form.get("code", ""))[:32]
        self.error = ""
        self.busy = True
        yield
        try:
            result = await self._call(auth.complete_login, self._challenge, code, self._client_ip())
        except AppError as error:
            self.error = self._tr(error.message_key, **error.params)
            self.busy = False
            if error.message_key in ("auth.challenge_expired", "auth.locked", "auth.address_locked"):
                self.step = "password"
                self._challenge = ""
            return
        self._challenge = ""
        self._ticket = result.ticket
        self.busy = False
        if result.recovery_codes:
            self.recovery_codes = list(result.recovery_codes)
            self.enrol_secret = ""
            self.enrol_qr = ""
            self.step = "recovery"
            return
        yield full_page_load(self._claim_url())

    @rx.event
    def finish_recovery(self):
        """The codes were shown once; forget them and go claim the session."""
        self.recovery_codes = []
        self.step = "password"
        url = self._claim_url()
        self._ticket = ""
        return full_page_load(url)

    @rx.event
    def back_to_password(self):
        self.step = "password"
        self.error = ""
        self._challenge = ""
        self.enrol_secret = ""
        self.enrol_qr = ""
        # The password form remounts empty; give the person their username back.
        return rx.set_value("username", self.username)
