"""/account — change password, move to a new authenticator, log out everywhere."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.state.account import AccountState as S


def _password_field(label_key: str, name: str, autocomplete: str) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=name, font_size="14px"),
        rx.input(id=name, name=name, type="password", required=True, auto_complete=autocomplete, width="100%"),
        field_error(S.password_errors.get(name, "")),
        spacing="1",
        width="100%",
    )


def password_card() -> rx.Component:
    return rx.card(
        rx.heading(t("account.change_password"), size="4", as_="h2", margin_bottom="3"),
        rx.form(
            rx.vstack(
                _password_field("account.old_password", "old_password", "current-password"),
                _password_field("account.new_password", "new_password", "new-password"),
                _password_field("account.repeat_password", "repeat_password", "new-password"),
                rx.text(t("account.password_rules"), size="1", color_scheme="gray"),
                rx.button(t("common.save"), type="submit", id="change-password-submit"),
                spacing="3",
                width="100%",
            ),
            on_submit=S.change_password,
            reset_on_submit=False,
        ),
        width="100%",
        max_width="480px",
    )


def two_step_card() -> rx.Component:
    return rx.card(
        rx.heading(t("account.two_step"), size="4", as_="h2", margin_bottom="3"),
        rx.text(t("account.recovery_left", count=S.recovery_left), size="2", id="recovery-left"),
        rx.match(
            S.reenrol_step,
            (
                "verify",
                rx.form(
                    rx.vstack(
                        rx.text(t("account.reenrol_verify_hint"), size="2"),
                        rx.el.label(t("account.old_password"), html_for="reenrol-password", font_size="14px"),
                        rx.input(
                            id="reenrol-password",
                            name="reenrol_password",
                            type="password",
                            auto_complete="current-password",
                            required=True,
                            width="100%",
                        ),
                        rx.el.label(t("account.current_code"), html_for="reenrol-current-code", font_size="14px"),
                        rx.input(
                            id="reenrol-current-code",
                            name="reenrol_current_code",
                            auto_complete="one-time-code",
                            required=True,
                            max_length=12,
                            width="100%",
                        ),
                        field_error(S.reenrol_error),
                        rx.hstack(
                            rx.button(
                                t("common.cancel"),
                                type="button",
                                variant="soft",
                                color_scheme="gray",
                                on_click=S.cancel_reenrol,
                            ),
                            rx.button(t("account.continue"), type="submit", id="reenrol-verify-submit"),
                            spacing="2",
                        ),
                        spacing="2",
                        width="100%",
                    ),
                    on_submit=S.verify_reenrol,
                    reset_on_submit=False,
                    margin_top="3",
                ),
            ),
            (
                "scan",
                rx.vstack(
                    rx.text(t("account.reenrol_hint"), size="2"),
                    rx.image(src=S.reenrol_qr, alt=t("auth.qr_alt"), width="200px", height="200px"),
                    rx.text(t("auth.manual_key"), ": ", rx.code(S.reenrol_secret, id="reenrol-secret"), size="2"),
                    rx.form(
                        rx.vstack(
                            rx.el.label(t("auth.totp_code"), html_for="reenrol-code", font_size="14px"),
                            rx.input(
                                id="reenrol-code",
                                name="code",
                                auto_complete="one-time-code",
                                input_mode="numeric",
                                required=True,
                                max_length=6,
                            ),
                            # The challenge goes back with the code: the server does not keep it.
                            rx.el.input(type="hidden", name="challenge", value=S.reenrol_challenge),
                            field_error(S.reenrol_error),
                            rx.hstack(
                                rx.button(
                                    t("common.cancel"),
                                    type="button",
                                    variant="soft",
                                    color_scheme="gray",
                                    on_click=S.cancel_reenrol,
                                ),
                                rx.button(t("auth.verify"), type="submit", id="reenrol-submit"),
                                spacing="2",
                            ),
                            spacing="2",
                        ),
                        on_submit=S.confirm_reenrol,
                    ),
                    spacing="3",
                    margin_top="3",
                ),
            ),
            (
                "codes",
                rx.vstack(
                    rx.callout(t("auth.recovery_prompt"), icon="key-round"),
                    rx.grid(
                        rx.foreach(S.new_recovery_codes, lambda code: rx.code(code, size="3")),
                        columns="2",
                        spacing="2",
                        id="new-recovery-codes",
                    ),
                    rx.button(t("auth.recovery_done"), on_click=S.finish_reenrol),
                    spacing="3",
                    margin_top="3",
                ),
            ),
            rx.button(
                rx.icon("smartphone", size=16),
                t("account.reenrol"),
                on_click=S.start_reenrol,
                variant="soft",
                margin_top="3",
                id="start-reenrol",
            ),
        ),
        width="100%",
        max_width="480px",
    )


def sessions_card() -> rx.Component:
    return rx.card(
        rx.heading(t("account.sessions"), size="4", as_="h2", margin_bottom="3"),
        rx.button(
            rx.icon("log-out", size=16),
            t("account.logout_everywhere"),
            color_scheme="red",
            variant="soft",
            on_click=S.set_logout_all_open(True),
            id="logout-everywhere",
        ),
        confirm_dialog(
            open_var=S.logout_all_open,
            on_open_change=S.set_logout_all_open,
            on_confirm=S.logout_everywhere,
            title=t("users.confirm_title"),
            message=t("account.confirm_logout_everywhere"),
        ),
        width="100%",
        max_width="480px",
    )


def account_page() -> rx.Component:
    return page_shell(
        rx.flex(
            password_card(),
            rx.vstack(two_step_card(), sessions_card(), spacing="4", width="100%"),
            spacing="4",
            wrap="wrap",
            width="100%",
        ),
        title_key="account.title",
    )
