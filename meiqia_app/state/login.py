"""State of /login: password, then TOTP (or enrolment), then the session cookie."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

import reflex as rx

from meiqia_app.services.errors import AppError
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import sessions
from meiqia_app.state.base import AppState, full_page_load


def safe_next(target: str | None) -> str:
    """Only same-site paths: never //host or a scheme (open redirect)."""
    target = (target or "").strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target or target.startswith("/api/"):
        return "/"
    return target[:200]


class LoginState(AppState):
    requires_login: ClassVar[bool] = False
    # The TOTP secret (and its QR code) shown at enrolment, the recovery codes,
    # and the two one-time values of the flow: shown (or handed to the browser)
    # once, never kept by the server. The browser sends the challenge back with
    # the code (a hidden field of the code form) and the ticket with the click
    # that leaves the recovery codes.
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset(
        {"enrol_secret", "enrol_qr", "recovery_codes", "challenge", "ticket"}
    )

    step: str = "password"  # password | totp | enrol | recovery
    username: str = ""
    error: str = ""
    busy: bool = False
    enrol_secret: str = ""
    enrol_qr: str = ""
    recovery_codes: list[str] = []
    challenge: str = ""
    ticket: str = ""

    def _claim_url(self, ticket: str) -> str:
        target = safe_next(self.router.page.params.get("next"))
        return f"/api/session/claim?ticket={quote(ticket)}&next={quote(target, safe='/')}"

    @rx.event
    async def on_load(self):
        """An already logged-in person skips the form.

        A page load (re)connects the tab, which hydrates it with the defaults
        of the show-once vars: whatever step the tab was at, it starts over.
        """
        self.error = ""
        self.busy = False
        actor = await self._call(sessions.resolve_session, self._session_token(), self._client_ip())
        if actor is not None:
            return rx.redirect(safe_next(self.router.page.params.get("next")))
        self.step = "password"
        self.challenge = ""
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
        self.challenge = accepted.challenge
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
        challenge = str(form.get("challenge", ""))[:128]
        self.error = ""
        self.busy = True
        yield
        try:
            result = await self._call(auth.complete_login, challenge, code, self._client_ip())
        except AppError as error:
            self.error = self._tr(error.message_key, **error.params)
            self.busy = False
            if error.message_key in ("auth.challenge_expired", "auth.locked", "auth.address_locked"):
                self.step = "password"
                self.challenge = ""
            return
        self.busy = False
        if result.recovery_codes:
            self.recovery_codes = list(result.recovery_codes)
            self.ticket = result.ticket
            self.challenge = ""
            self.enrol_secret = ""
            self.enrol_qr = ""
            self.step = "recovery"
            return
        yield full_page_load(self._claim_url(result.ticket))

    @rx.event
    def finish_recovery(self, ticket: str = ""):
        """The codes were shown once; go claim the session with the ticket the browser holds."""
        self.recovery_codes = []
        self.ticket = ""
        self.step = "password"
        ticket = ticket if isinstance(ticket, str) else ""
        if not ticket:
            self.error = self._tr("auth.challenge_expired")
            return None
        return full_page_load(self._claim_url(ticket[:128]))

    @rx.event
    def back_to_password(self):
        self.step = "password"
        self.error = ""
        self.challenge = ""
        self.enrol_secret = ""
        self.enrol_qr = ""
        # The password form remounts empty; give the person their username back.
        return rx.set_value("username", self.username)
