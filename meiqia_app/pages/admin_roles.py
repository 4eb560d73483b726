"""/admin/roles — the permission matrix, custom roles and export policies."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.services.identity.rbac import PERMISSIONS
from meiqia_app.state.admin_roles import AdminRolesState as S
from meiqia_app.state.admin_roles import RoleView
from meiqia_app.state.base import AppState


def _label(role: RoleView) -> rx.Var:
    return rx.cond(AppState.is_en, role.label_en, role.label_zh)


def _role_header(role: RoleView) -> rx.Component:
    return rx.table.column_header_cell(
        rx.vstack(
            rx.text(_label(role), weight="bold"),
            rx.text(t("roles.users", count=role.user_count), size="1", color_scheme="gray"),
            rx.hstack(
                rx.icon_button(
                    rx.icon("file-down", size=14),
                    size="1",
                    variant="ghost",
                    on_click=S.open_policy(role.id),
                    aria_label=t("roles.export_policy"),
                    title=t("roles.export_policy"),
                    id="policy-" + role.name,
                ),
                rx.cond(
                    role.is_builtin,
                    rx.badge(t("roles.builtin"), size="1", variant="soft"),
                    rx.icon_button(
                        rx.icon("trash-2", size=14),
                        size="1",
                        variant="ghost",
                        color_scheme="red",
                        on_click=S.ask_delete(role.id),
                        aria_label=t("common.delete"),
                        id="delete-role-" + role.name,
                    ),
                ),
                spacing="1",
                align="center",
            ),
            spacing="1",
            align="center",
        ),
        scope="col",
        text_align="center",
    )


def _cell(role: RoleView, permission: str) -> rx.Component:
    return rx.table.cell(
        rx.checkbox(
            checked=role.permissions.contains(permission),
            on_change=lambda checked: S.toggle(role.id, permission, checked),
            aria_label=t("roles.toggle", role=_label(role), permission=t(f"perm.{permission}")),
            id="perm-" + role.name + "-" + permission.replace(".", "-"),
        ),
        text_align="center",
    )


SCOPES = ("own_pool", "team_pool", "team", "all")


def _scope_cell(role: RoleView) -> rx.Component:
    return rx.table.cell(
        rx.select.root(
            rx.select.trigger(
                aria_label=t("roles.data_scope"), id="scope-" + role.name, variant="soft", max_width="150px"
            ),
            rx.select.content(*[rx.select.item(t(f"scope.{scope}"), value=scope) for scope in SCOPES]),
            value=role.data_scope,
            on_change=lambda value: S.set_scope(role.id, value),
            size="1",
        ),
        text_align="center",
    )


def _cell_for(permission: str):
    # rx.foreach passes the index as a second argument to two-parameter
    # callables, so bind the permission in a closure instead of a default.
    def render(role: RoleView) -> rx.Component:
        return _cell(role, permission)

    return render


def matrix() -> rx.Component:
    return rx.box(
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell(t("roles.permission"), scope="col"),
                    rx.foreach(S.roles, _role_header),
                ),
            ),
            rx.table.body(
                rx.table.row(
                    rx.table.row_header_cell(rx.text(t("roles.data_scope"), weight="medium")),
                    rx.foreach(S.roles, _scope_cell),
                    id="role-scope-row",
                ),
                *[
                    rx.table.row(
                        rx.table.row_header_cell(
                            rx.vstack(
                                rx.text(t(f"perm.{permission}")),
                                rx.code(permission, size="1", variant="ghost"),
                                spacing="0",
                            ),
                        ),
                        rx.foreach(S.roles, _cell_for(permission)),
                    )
                    for permission in PERMISSIONS
                ],
            ),
            variant="surface",
            id="role-matrix",
        ),
        overflow_x="auto",
        width="100%",
    )


def create_dialog() -> rx.Component:
    def field(label_key: str, name: str, required: bool = False) -> rx.Component:
        return rx.vstack(
            rx.el.label(t(label_key), html_for=f"role-{name}", font_size="14px"),
            rx.input(id=f"role-{name}", name=name, required=required),
            field_error(S.create_errors.get(name, "")),
            spacing="1",
            width="100%",
        )

    # The button opens the (controlled) dialog itself (a trigger around it would add a div with button ARIA).
    return rx.fragment(
        rx.button(rx.icon("plus", size=16), t("roles.new"), on_click=S.open_create, id="new-role"),
        rx.dialog.root(
            rx.dialog.content(
                rx.dialog.title(t("roles.new")),
                rx.form(
                    rx.vstack(
                        field("roles.name", "name", True),
                        field("roles.label_zh", "label_zh"),
                        field("roles.label_en", "label_en"),
                        form_buttons("create-role-submit"),
                        spacing="3",
                    ),
                    on_submit=S.create_role,
                    reset_on_submit=False,
                ),
            ),
            open=S.create_open,
            on_open_change=S.set_create_open,
        ),
    )


def policy_dialog() -> rx.Component:
    role = S.policy_role

    def number(label_key: str, name: str, value) -> rx.Component:
        return rx.vstack(
            rx.el.label(t(label_key), html_for=f"policy-{name}", font_size="14px"),
            rx.input(id=f"policy-{name}", name=name, type="number", min=0, default_value=value.to_string()),
            spacing="1",
            width="100%",
        )

    def switch(label_key: str, name: str, value) -> rx.Component:
        return rx.hstack(
            rx.switch(id=f"policy-{name}", name=name, default_checked=value),
            rx.el.label(t(label_key), html_for=f"policy-{name}", font_size="14px"),
            spacing="2",
            align="center",
        )

    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("roles.export_policy"), ": ", rx.cond(role, _label(role), "")),
            rx.cond(
                role,
                rx.form(
                    rx.vstack(
                        number("roles.policy.max_rows", "max_rows", role.max_rows),
                        number("roles.policy.window_days", "window_days", role.window_days),
                        switch("roles.policy.bulk_allowed", "bulk_allowed", role.bulk_allowed),
                        switch("roles.policy.approval_required", "approval_required", role.approval_required),
                        number("roles.policy.approval_over_rows", "approval_over_rows", role.approval_over_rows),
                        field_error(S.policy_error),
                        form_buttons("policy-submit"),
                        spacing="3",
                    ),
                    on_submit=S.save_policy,
                    key=role.id,
                ),
            ),
        ),
        open=S.policy_open,
        on_open_change=S.set_policy_open,
    )


def admin_roles_page() -> rx.Component:
    return page_shell(
        rx.hstack(
            rx.text(t("roles.matrix_hint"), size="2", color_scheme="gray"),
            rx.spacer(),
            create_dialog(),
            width="100%",
            align="center",
        ),
        matrix(),
        policy_dialog(),
        confirm_dialog(
            open_var=S.delete_open,
            on_open_change=S.set_delete_open,
            on_confirm=S.delete_role,
            title=t("users.confirm_title"),
            message=t("roles.confirm_delete", name=S.delete_name),
        ),
        title_key="roles.title",
    )
