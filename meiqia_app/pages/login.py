"""/login — username and password, then the second factor."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import connection_problem, language_switch, page_effects
from meiqia_app.state.login import LoginState as S


def _error() -> rx.Component:
    return rx.cond(
        S.error != "",
        rx.callout(S.error, icon="triangle-alert", color_scheme="red", role="alert", id="login-error"),
    )


def password_form() -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.el.label(t("auth.username"), html_for="username"),
            # No default_value bound to state: the state arriving after the page loads would
            # append to what a quick typist already entered (seen as "lockmelockme").
            rx.input(
                id="username",
                name="username",
                auto_complete="username",
                required=True,
                size="3",
                width="100%",
                auto_focus=True,
            ),
            rx.el.label(t("auth.password"), html_for="password"),
            rx.input(
                id="password",
                name="password",
                type="password",
                auto_complete="current-password",
                required=True,
                size="3",
                width="100%",
            ),
            # Disabled until hydrated: before that a native submit would put the password in the URL.
            rx.button(
                t("auth.next"),
                type="submit",
                size="3",
                width="100%",
                loading=S.busy,
                id="login-submit",
                disabled=~rx.State.is_hydrated,
            ),
            spacing="3",
            width="100%",
        ),
        on_submit=S.submit_password,
        reset_on_submit=False,
        width="100%",
        id="password-form",
    )


def code_form() -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.el.label(t("auth.totp_code"), html_for="code"),
            rx.input(
                id="code",
                name="code",
                auto_complete="one-time-code",
                input_mode="numeric",
                required=True,
                size="3",
                width="100%",
                auto_focus=True,
                max_length=12,
            ),
            # The login challenge goes back with the code: the server does not keep it.
            rx.el.input(type="hidden", name="challenge", value=S.challenge),
            rx.button(t("auth.verify"), type="submit", size="3", width="100%", loading=S.busy, id="code-submit"),
            rx.button(
                t("auth.back_to_password"), type="button", variant="ghost", on_click=S.back_to_password, size="2"
            ),
            spacing="3",
            width="100%",
        ),
        on_submit=S.submit_code,
        reset_on_submit=True,
        width="100%",
        id="code-form",
    )


def totp_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("auth.totp_title"), size="5", as_="h2"),
        rx.text(t("auth.totp_prompt"), size="2"),
        code_form(),
        width="100%",
        spacing="3",
    )


def enrol_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("auth.enrol_title"), size="5", as_="h2"),
        rx.text(t("auth.enrol_prompt"), size="2"),
        rx.center(
            rx.image(src=S.enrol_qr, alt=t("auth.qr_alt"), width="180px", height="180px", id="enrol-qr"), width="100%"
        ),
        rx.text(t("auth.manual_key"), size="2", weight="bold"),
        rx.code(S.enrol_secret, id="enrol-secret", size="3"),
        code_form(),
        width="100%",
        spacing="3",
    )


def recovery_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("auth.recovery_title"), size="5", as_="h2"),
        rx.text(t("auth.recovery_prompt"), size="2"),
        rx.grid(
            rx.foreach(S.recovery_codes, lambda code: rx.code(code, size="3", class_name="recovery-code")),
            columns="2",
            spacing="2",
            id="recovery-codes",
        ),
        rx.button(
            t("auth.recovery_done"), on_click=S.finish_recovery(S.ticket), size="3", width="100%", id="recovery-done"
        ),
        width="100%",
        spacing="3",
    )


def login_page() -> rx.Component:
    return rx.center(
        page_effects(),
        rx.el.main(
            rx.card(
                rx.vstack(
                    rx.hstack(
                        rx.icon("message-circle-heart", size=26, color="var(--accent-9)", aria_hidden="true"),
                        rx.heading(t("app.title"), size="6", as_="h1"),
                        rx.spacer(),
                        language_switch(),
                        align="center",
                        width="100%",
                    ),
                    connection_problem(),
                    _error(),
                    rx.match(
                        S.step,
                        ("totp", totp_step()),
                        ("enrol", enrol_step()),
                        ("recovery", recovery_step()),
                        rx.vstack(
                            rx.heading(t("auth.title"), size="5", as_="h2"), password_form(), width="100%", spacing="3"
                        ),
                    ),
                    spacing="4",
                    width="100%",
                ),
                width="100%",
                padding="24px",
            ),
            width="100%",
            max_width="420px",
        ),
        min_height="100vh",
        padding="12px",
        background="var(--gray-2)",
    )
