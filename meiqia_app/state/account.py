"""State of /account: one's own password, authenticator and sessions."""

from __future__ import annotations

from typing import ClassVar

import reflex as rx

from meiqia_app.services.errors import AppError, ValidationError
from meiqia_app.services.identity import account_security, sessions
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.state.base import LOGOUT_PATH, AppState, full_page_post


class AccountState(AppState):
    # The new TOTP secret, its QR code and the new recovery codes are shown
    # once; the challenge comes back with the confirmation form (hidden field).
    # The sessions list names devices and addresses: shown, not kept (the browser
    # sends a row's id back to sign it out; the service checks it is the actor's).
    _ephemeral_vars: ClassVar[frozenset[str]] = frozenset(
        {"reenrol_secret", "reenrol_qr", "reenrol_challenge", "new_recovery_codes", "sessions"}
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

    # New recovery codes: "" | verify (password + current code) | codes (shown once).
    regen_step: str = ""
    regen_error: str = ""

    sessions: list[sessions.SessionView] = []
    sign_out_current_open: bool = False

    @rx.event
    async def on_load(self):
        self.password_errors = {}
        self.reenrol_step = ""
        self.regen_step = ""
        self.regen_error = ""
        self.new_recovery_codes = []
        try:
            actor = self._actor()
            self._set_user(actor)
            self.recovery_left = await self._call(account_security.remaining_recovery_codes, actor.user_id)
            self.sessions = await self._call(sessions.list_own_sessions, actor)
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
            await self._call(account_security.change_own_password, actor, old, new)
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
        self.regen_step = ""
        self.regen_error = ""
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
            enrolment = await self._call(account_security.begin_reenrol, actor, password, code)
        except auth_tokens.AuthError as error:
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
                account_security.confirm_reenrol,
                actor,
                str(form.get("challenge", ""))[:128],
                str(form.get("code", ""))[:12],
            )
        except AppError as error:
            if isinstance(error, auth_tokens.AuthError):
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
            await self._call(sessions.logout_everywhere, actor)
        except AppError as error:
            return self._on_error(error)
        self.user_name = ""
        self.perms = []
        return full_page_post(LOGOUT_PATH)

    # --- new recovery codes ---------------------------------------------------------------
    @rx.event
    def start_regen(self):
        """Ask for the current password and authenticator code (nothing is created yet)."""
        self.reenrol_error = ""
        self.reenrol_challenge = ""
        self.reenrol_secret = ""
        self.reenrol_qr = ""
        self.reenrol_step = ""
        self.new_recovery_codes = []
        self.regen_error = ""
        self.regen_step = "verify"

    @rx.event
    async def regenerate_codes(self, form: dict):
        """Password + current authenticator code: ten new codes, shown once; the old ones stop working."""
        if self.regen_step != "verify" or not isinstance(form, dict):
            return None
        self.regen_error = ""
        password = str(form.get("regen_password", ""))[:256]
        code = str(form.get("regen_code", ""))[:32]
        try:
            actor = self._actor()
            codes = await self._call(account_security.regenerate_recovery_codes, actor, password, code)
        except auth_tokens.AuthError as error:
            self.regen_error = self._tr(error.message_key, **error.params)
            return [rx.set_value("regen-password", ""), rx.set_value("regen-code", "")]
        except AppError as error:
            return self._on_error(error)
        finally:
            password = code = ""
        self.new_recovery_codes = list(codes)
        self.recovery_left = len(codes)
        self.regen_step = "codes"
        return rx.toast.success(self._tr("account.recovery_renewed"))

    @rx.event
    def finish_regen(self):
        self.new_recovery_codes = []
        self.regen_step = ""

    @rx.event
    def cancel_regen(self):
        self.regen_error = ""
        self.regen_step = ""

    # --- sessions ---------------------------------------------------------------------------
    async def _reload_sessions(self, actor) -> None:
        self.sessions = await self._call(sessions.list_own_sessions, actor)

    @rx.event
    async def sign_out_session(self, session_id: int):
        """End another session of one's own (the current one goes through the confirmation)."""
        try:
            actor = self._actor()
            session_id = self._as_id(session_id)
            await self._call(sessions.revoke_own_session, actor, session_id)
            await self._reload_sessions(actor)
        except AppError as error:
            return self._on_error(error)
        return rx.toast.success(self._tr("account.session_signed_out"))

    @rx.event
    def set_sign_out_current_open(self, value: bool):
        self.sign_out_current_open = bool(value)

    @rx.event
    async def sign_out_current(self):
        """Confirmed: end this browser's own session, then leave through the logout route."""
        self.sign_out_current_open = False
        try:
            actor = self._actor()
            if actor.session_id is None:
                return None
            await self._call(sessions.revoke_own_session, actor, actor.session_id, True)
        except AppError as error:
            return self._on_error(error)
        self.user_name = ""
        self.perms = []
        return full_page_post(LOGOUT_PATH)
