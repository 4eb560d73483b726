"""/admin/users — accounts, roles, and an admin's actions on them."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.state.admin_users import AdminUsersState as S
from meiqia_app.state.admin_users import RoleChoice, TeamRowView, UserRowView
from meiqia_app.state.base import AppState


def _role_label(choice: RoleChoice) -> rx.Var:
    return rx.cond(AppState.is_en, choice.label_en, choice.label_zh)


def _role_select(row: UserRowView) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(aria_label=t("users.change_role"), variant="ghost"),
        rx.select.content(rx.foreach(S.role_choices, lambda c: rx.select.item(_role_label(c), value=c.name))),
        value=row.role,
        on_change=lambda value: S.change_role(row.id, value),
        size="1",
    )


def _team_select(row: UserRowView) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(aria_label=t("owner.team"), variant="ghost", id="user-team-" + row.username),
        rx.select.content(
            rx.select.item(t("team.none"), value="none"),
            rx.foreach(S.team_choices, lambda c: rx.select.item(c.label, value=c.value)),
        ),
        value=row.team,
        on_change=lambda value: S.change_team(row.id, value),
        size="1",
    )


def _status(row: UserRowView) -> rx.Component:
    return rx.hstack(
        rx.cond(
            row.is_active,
            rx.badge(t("users.active"), color_scheme="green"),
            rx.badge(t("users.inactive"), color_scheme="gray"),
        ),
        rx.cond(row.locked, rx.badge(rx.icon("lock", size=12), t("users.unlock"), color_scheme="red")),
        spacing="1",
    )


def _actions(row: UserRowView) -> rx.Component:
    return rx.menu.root(
        rx.menu.trigger(
            rx.icon_button(
                rx.icon("ellipsis", size=16),
                variant="ghost",
                aria_label=t("users.actions_for", username=row.username),
                id="user-actions-" + row.username,
            ),
        ),
        rx.menu.content(
            rx.menu.item(t("users.reset_password"), on_click=S.open_password(row.id)),
            rx.menu.item(t("users.reset_totp"), on_click=S.ask("reset_totp", row.id)),
            rx.menu.item(t("users.revoke_sessions"), on_click=S.ask("revoke", row.id)),
            rx.cond(row.locked, rx.menu.item(t("users.unlock"), on_click=S.unlock(row.id))),
            rx.menu.separator(),
            rx.cond(
                row.is_active,
                rx.menu.item(t("users.deactivate"), color="red", on_click=S.ask("deactivate", row.id)),
                rx.menu.item(t("users.activate"), on_click=S.activate(row.id)),
            ),
        ),
    )


def _row(row: UserRowView) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.text(row.username, weight="medium")),
        rx.table.cell(row.display_name),
        rx.table.cell(_role_select(row)),
        rx.table.cell(_team_select(row)),
        rx.table.cell(_status(row)),
        rx.table.cell(rx.cond(row.totp_enrolled, t("users.enrolled"), t("users.not_enrolled"))),
        rx.table.cell(row.last_login),
        rx.table.cell(row.active_sessions),
        rx.table.cell(_actions(row)),
        id="user-row-" + row.username,
        class_name="user-row",
    )


def users_table() -> rx.Component:
    headers = [
        "users.col.username",
        "users.col.display_name",
        "users.col.role",
        "owner.team",
        "users.col.status",
        "users.col.totp",
        "users.col.last_login",
        "users.col.sessions",
        "common.actions",
    ]
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(t(key), scope="col") for key in headers])),
        rx.table.body(rx.foreach(S.rows, _row)),
        width="100%",
        variant="surface",
        id="users-table",
    )


def _lead_select(team: TeamRowView) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(aria_label=t("team.lead"), variant="ghost", id="team-lead-" + team.name),
        rx.select.content(
            rx.select.item("—", value="none"),
            rx.foreach(S.user_choices, lambda c: rx.select.item(c.label, value=c.value)),
        ),
        value=team.lead,
        on_change=lambda value: S.set_team_lead(team.id, value),
        size="1",
    )


def _team_row(team: TeamRowView) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.input(
                default_value=team.name,
                key=team.name,
                aria_label=t("team.rename"),
                on_blur=lambda value: S.rename_team(team.id, value),
                size="1",
                variant="soft",
                max_length=64,
            )
        ),
        rx.table.cell(_lead_select(team)),
        rx.table.cell(rx.text(team.members, size="2"), max_width="420px"),
        rx.table.cell(
            rx.icon_button(
                rx.icon("trash-2", size=14),
                variant="ghost",
                color_scheme="red",
                aria_label=t("team.delete"),
                on_click=S.delete_team(team.id),
            )
        ),
        class_name="team-row",
    )


def teams_section() -> rx.Component:
    headers = ["team.name", "team.lead", "team.members", "common.actions"]
    return rx.vstack(
        rx.heading(t("team.title"), size="4", as_="h2", id="teams-heading"),
        rx.form(
            rx.hstack(
                rx.input(
                    name="team_name",
                    id="new-team-name",
                    placeholder=t("team.name"),
                    aria_label=t("team.name"),
                    required=True,
                    max_length=64,
                ),
                rx.button(rx.icon("plus", size=14), t("team.create"), type="submit", id="create-team"),
                spacing="2",
                wrap="wrap",
            ),
            on_submit=S.create_team,
            reset_on_submit=True,
        ),
        field_error(S.team_error),
        rx.box(
            rx.table.root(
                rx.table.header(rx.table.row(*[rx.table.column_header_cell(t(key), scope="col") for key in headers])),
                rx.table.body(rx.foreach(S.teams, _team_row)),
                width="100%",
                variant="surface",
                id="teams-table",
            ),
            width="100%",
            overflow_x="auto",
        ),
        spacing="3",
        width="100%",
    )


def _labelled(label_key: str, control: rx.Component, error_key: str) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=control.id, font_size="14px"),
        control,
        field_error(S.create_errors.get(error_key, "")),
        spacing="1",
        width="100%",
    )


def create_dialog() -> rx.Component:
    # The button opens the (controlled) dialog itself: a dialog trigger around a
    # button with its own click handler wraps it in a div with button ARIA (axe: aria-allowed-attr).
    return rx.fragment(
        rx.button(rx.icon("user-plus", size=16), t("users.new"), on_click=S.open_create, id="new-user"),
        _create_dialog_root(),
    )


def _create_dialog_root() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("users.new")),
            rx.form(
                rx.vstack(
                    _labelled(
                        "users.col.username",
                        rx.input(id="new-username", name="username", required=True, auto_complete="off"),
                        "username",
                    ),
                    _labelled(
                        "users.col.display_name", rx.input(id="new-display-name", name="display_name"), "display_name"
                    ),
                    _labelled(
                        "users.password",
                        rx.input(
                            id="new-password",
                            name="password",
                            type="password",
                            required=True,
                            auto_complete="new-password",
                        ),
                        "password",
                    ),
                    rx.text(t("users.password_hint"), size="1", color_scheme="gray"),
                    rx.vstack(
                        rx.el.label(t("users.col.role"), html_for="new-role", font_size="14px"),
                        rx.select.root(
                            rx.select.trigger(id="new-role", aria_label=t("users.col.role")),
                            rx.select.content(
                                rx.foreach(S.role_choices, lambda c: rx.select.item(_role_label(c), value=c.name))
                            ),
                            name="role",
                            default_value="agent",
                        ),
                        field_error(S.create_errors.get("role", "")),
                        spacing="1",
                    ),
                    form_buttons("create-user-submit"),
                    spacing="3",
                ),
                on_submit=S.create_user,
                reset_on_submit=False,
            ),
        ),
        open=S.create_open,
        on_open_change=S.set_create_open,
    )


def password_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("users.reset_password"), ": ", S.target_username),
            rx.form(
                rx.vstack(
                    rx.el.label(t("users.new_password"), html_for="reset-password", font_size="14px"),
                    rx.input(
                        id="reset-password",
                        name="new_password",
                        type="password",
                        required=True,
                        auto_complete="new-password",
                    ),
                    field_error(S.password_error),
                    rx.text(t("users.password_hint"), size="1", color_scheme="gray"),
                    form_buttons("reset-password-submit"),
                    spacing="3",
                ),
                on_submit=S.reset_password,
            ),
        ),
        open=S.password_open,
        on_open_change=S.set_password_open,
    )


def admin_users_page() -> rx.Component:
    message = rx.match(
        S.confirm_action,
        ("reset_totp", t("users.confirm_reset_totp", username=S.target_username)),
        ("deactivate", t("users.confirm_deactivate", username=S.target_username)),
        ("revoke", t("users.confirm_revoke", username=S.target_username)),
        t("users.confirm_title"),
    )
    return page_shell(
        rx.hstack(rx.spacer(), create_dialog(), width="100%"),
        rx.box(users_table(), width="100%", overflow_x="auto"),
        teams_section(),
        password_dialog(),
        confirm_dialog(
            open_var=S.confirm_open,
            on_open_change=S.set_confirm_open,
            on_confirm=S.confirm,
            title=t("users.confirm_title"),
            message=message,
        ),
        title_key="users.title",
    )
