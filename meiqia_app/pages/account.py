"""/account — change password, move to a new authenticator, new recovery codes,
one's own sessions (sign one out, or all)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.services.identity.sessions import SessionView
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
    )


def _codes_shown_once(done_handler, done_id: str, grid_id: str) -> rx.Component:
    return rx.vstack(
        rx.callout(t("auth.recovery_prompt"), icon="key-round"),
        rx.grid(
            rx.foreach(S.new_recovery_codes, lambda code: rx.code(code, size="3", class_name="recovery-code")),
            columns="2",
            spacing="2",
            id=grid_id,
        ),
        rx.button(t("auth.recovery_done"), on_click=done_handler, id=done_id),
        spacing="3",
        margin_top="3",
        width="100%",
    )


def _regen_block() -> rx.Component:
    """New recovery codes: the current password and authenticator code first, then the codes, once."""
    return rx.match(
        S.regen_step,
        (
            "verify",
            rx.form(
                rx.vstack(
                    rx.text(t("account.regen_hint"), size="2"),
                    rx.el.label(t("account.old_password"), html_for="regen-password", font_size="14px"),
                    rx.input(
                        id="regen-password",
                        name="regen_password",
                        type="password",
                        auto_complete="current-password",
                        required=True,
                        width="100%",
                    ),
                    rx.el.label(t("account.authenticator_code"), html_for="regen-code", font_size="14px"),
                    rx.input(
                        id="regen-code",
                        name="regen_code",
                        auto_complete="one-time-code",
                        input_mode="numeric",
                        required=True,
                        max_length=6,
                        width="100%",
                    ),
                    field_error(S.regen_error),
                    rx.hstack(
                        rx.button(
                            t("common.cancel"),
                            type="button",
                            variant="soft",
                            color_scheme="gray",
                            on_click=S.cancel_regen,
                        ),
                        rx.button(t("account.regen_submit"), type="submit", id="regen-submit"),
                        spacing="2",
                        wrap="wrap",
                    ),
                    spacing="2",
                    width="100%",
                ),
                on_submit=S.regenerate_codes,
                reset_on_submit=False,
                margin_top="3",
                width="100%",
            ),
        ),
        ("codes", _codes_shown_once(S.finish_regen, "regen-done", "regenerated-codes")),
        rx.fragment(),
    )


def two_step_card() -> rx.Component:
    return rx.card(
        rx.heading(t("account.two_step"), size="4", as_="h2", margin_bottom="3"),
        rx.text(t("account.recovery_left", count=S.recovery_left), size="2", id="recovery-left"),
        rx.cond(
            (S.recovery_left == 0) & (S.regen_step == ""),
            rx.callout(
                t("account.no_recovery_left"),
                icon="triangle-alert",
                color_scheme="orange",
                size="1",
                margin_top="2",
                id="no-recovery-left",
            ),
        ),
        _regen_block(),
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
            ("codes", _codes_shown_once(S.finish_reenrol, "reenrol-done", "new-recovery-codes")),
            rx.cond(
                S.regen_step == "",
                rx.flex(
                    rx.button(
                        rx.icon("smartphone", size=16),
                        t("account.reenrol"),
                        on_click=S.start_reenrol,
                        variant="soft",
                        id="start-reenrol",
                    ),
                    rx.button(
                        rx.icon("key-round", size=16),
                        t("account.regen"),
                        on_click=S.start_regen,
                        variant="soft",
                        id="start-regen",
                    ),
                    spacing="2",
                    wrap="wrap",
                    margin_top="3",
                ),
            ),
        ),
        width="100%",
    )


def _session_row(row: SessionView) -> rx.Component:
    return rx.box(
        rx.flex(
            rx.vstack(
                rx.hstack(
                    rx.icon("monitor-smartphone", size=16),
                    rx.text(rx.cond(row.device != "", row.device, t("account.unknown_device")), weight="medium"),
                    rx.cond(row.current, rx.badge(t("account.this_session"), color_scheme="green")),
                    align="center",
                    spacing="2",
                    wrap="wrap",
                ),
                rx.text(t("account.session_ip"), ": ", rx.cond(row.client_ip != "", row.client_ip, "—"), size="1"),
                rx.text(
                    t("account.session_started"),
                    ": ",
                    row.started,
                    " · ",
                    t("account.session_last_seen"),
                    ": ",
                    row.last_seen,
                    size="1",
                    color_scheme="gray",
                ),
                spacing="1",
                min_width="0",
            ),
            rx.spacer(),
            rx.cond(
                row.current,
                rx.button(
                    t("account.sign_out_session"),
                    size="1",
                    variant="soft",
                    color_scheme="gray",
                    on_click=S.set_sign_out_current_open(True),
                    id="session-signout-current",
                ),
                rx.button(
                    t("account.sign_out_session"),
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=S.sign_out_session(row.id),
                    id="session-signout-" + row.id.to_string(),
                ),
            ),
            spacing="3",
            align="center",
            wrap="wrap",
            width="100%",
        ),
        padding_y="8px",
        border_bottom="1px solid var(--gray-4)",
        width="100%",
        class_name="session-row",
        custom_attrs={"data-current": rx.cond(row.current, "true", "false")},
    )


def sessions_card() -> rx.Component:
    return rx.card(
        rx.heading(t("account.sessions"), size="4", as_="h2", margin_bottom="3"),
        rx.text(t("account.sessions_hint"), size="1", color_scheme="gray"),
        rx.vstack(rx.foreach(S.sessions, _session_row), spacing="0", width="100%", id="session-list"),
        confirm_dialog(
            open_var=S.sign_out_current_open,
            on_open_change=S.set_sign_out_current_open,
            on_confirm=S.sign_out_current,
            title=t("users.confirm_title"),
            message=t("account.confirm_sign_out_current"),
            dialog_id="sign-out-current-dialog",
        ),
        rx.button(
            rx.icon("log-out", size=16),
            t("account.logout_everywhere"),
            color_scheme="red",
            variant="soft",
            on_click=S.set_logout_all_open(True),
            id="logout-everywhere",
            margin_top="3",
        ),
        confirm_dialog(
            open_var=S.logout_all_open,
            on_open_change=S.set_logout_all_open,
            on_confirm=S.logout_everywhere,
            title=t("users.confirm_title"),
            message=t("account.confirm_logout_everywhere"),
        ),
        width="100%",
    )


def account_page() -> rx.Component:
    # One column on phones; on wide screens the password and the two-step cards side by
    # side, the sessions below (they want the width: device, address, times, a button).
    return page_shell(
        rx.grid(
            password_card(),
            two_step_card(),
            rx.box(sessions_card(), grid_column=rx.breakpoints(initial="auto", lg="1 / -1"), width="100%"),
            columns=rx.breakpoints(initial="1", lg="2"),
            spacing="4",
            align_items="start",
            width="100%",
            max_width="1100px",
        ),
        title_key="account.title",
    )
