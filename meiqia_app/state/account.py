"""State of /account: one's own password, authenticator and sessions."""

from __future__ import annotations

from typing import ClassVar

import reflex as rx

from meiqia_app.services import auth
from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.state.base import LOGOUT_PATH, AppState, full_page_post


class AccountState(AppState):
    # The new TOTP secret, its QR code and the new recovery codes are shown
    # once; the challenge comes back with the confirmation form (hidden field).
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset(
        {"reenrol_secret", "reenrol_qr", "reenrol_challenge", "new_recovery_codes"}
    )

    password_errors: dict[str, str] = {}
    recovery_left: int = 0

    reenrol_step: str = ""  # "" | verify | scan | codes
    reenrol_secret: str = ""
    reenrol_qr: str = ""
    reenrol_error: str = ""
    new_recovery_codes: list[str] = []
    reenrol_challenge: str = ""

    logout_all_open: bool = False

    @rx.event
    async def on_load(self):
        self.password_errors = {}
        self.reenrol_step = ""
        self.new_recovery_codes = []
        try:
            actor = self._actor()
            self._set_user(actor)
            self.recovery_left = await self._call(auth.remaining_recovery_codes, actor.user_id)
        except AppError as error:
            return self._on_error(error)

    @rx.event
    async def change_password(self, form: dict):
        self.password_errors = {}
        old = str(form.get("old_password", ""))[:256]
        new = str(form.get("new_password", ""))[:256]
        if new != str(form.get("repeat_password", ""))[:256]:
            self.password_errors = {"repeat_password": self._tr("account.passwords_differ")}
            return None
        try:
            actor = self._actor()
            await self._call(auth.change_own_password, actor, old, new)
        except ValidationError as error:
            errors = self._field_errors(error)
            if "password" in errors:
                errors["new_password"] = errors.pop("password")
            self.password_errors = errors
            return None
        except AppError as error:
            return self._on_error(error)
        return [
            rx.toast.success(self._tr("account.password_changed")),
            rx.set_value("old_password", ""),
            rx.set_value("new_password", ""),
            rx.set_value("repeat_password", ""),
        ]

    @rx.event
    def start_reenrol(self):
        """Ask for the current password and code first (nothing is created yet)."""
        self.reenrol_challenge = ""
        self.reenrol_secret = ""
        self.reenrol_qr = ""
        self.reenrol_error = ""
        self.reenrol_step = "verify"

    @rx.event
    async def verify_reenrol(self, form: dict):
        """Current password + current code (or a recovery code): then the new QR code."""
        if self.reenrol_step != "verify":
            return None
        self.reenrol_error = ""
        password = str(form.get("reenrol_password", ""))[:256]
        code = str(form.get("reenrol_current_code", ""))[:32]
        try:
            actor = self._actor()
            enrolment = await self._call(auth.begin_reenrol, actor, password, code)
        except auth.AuthError as error:
            self.reenrol_error = self._tr(error.message_key, **error.params)
            return rx.set_value("reenrol-password", "")
        except AppError as error:
            return self._on_error(error)
        self.reenrol_challenge = enrolment.challenge
        self.reenrol_secret = enrolment.secret
        self.reenrol_qr = enrolment.qr
        self.reenrol_step = "scan"
        return None

    @rx.event
    async def confirm_reenrol(self, form: dict):
        if self.reenrol_step != "scan":
            return None
        self.reenrol_error = ""
        try:
            actor = self._actor()
            done = await self._call(
                auth.confirm_reenrol, actor, str(form.get("challenge", ""))[:128], str(form.get("code", ""))[:12]
            )
        except AppError as error:
            if isinstance(error, auth.AuthError):
                self.reenrol_error = self._tr(error.message_key, **error.params)
                return None
            return self._on_error(error)
        self.reenrol_challenge = ""
        self.reenrol_secret = ""
        self.reenrol_qr = ""
        self.new_recovery_codes = list(done.recovery_codes)
        self.recovery_left = len(done.recovery_codes)
        self.reenrol_step = "codes"
        return rx.toast.success(self._tr("account.reenrolled_sessions", count=done.sessions_revoked))

    @rx.event
    def finish_reenrol(self):
        self.new_recovery_codes = []
        self.reenrol_step = ""

    @rx.event
    def cancel_reenrol(self):
        self.reenrol_error = ""
        self.reenrol_challenge = ""
        self.reenrol_secret = ""
        self.reenrol_qr = ""
        self.reenrol_step = ""

    @rx.event
    def set_logout_all_open(self, value: bool):
        self.logout_all_open = bool(value)

    @rx.event
    async def logout_everywhere(self):
        self.logout_all_open = False
        try:
            actor = self._actor()
            await self._call(auth.logout_everywhere, actor)
        except AppError as error:
            return self._on_error(error)
        self.user_name = ""
        self.perms = []
        return full_page_post(LOGOUT_PATH)
