"""/admin/api-keys — keys of connected systems: create (shown once), list, revoke."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.integrations.api_keys import SCOPES
from meiqia_app.state.api_keys import ApiKeyRow
from meiqia_app.state.api_keys import ApiKeysState as S

register_nav(NavItem("/admin/api-keys", "nav.api_keys", "key-round", "apikey.manage", "system", 40))


def _scope_key(scope: str) -> str:
    return "apikey.scope." + scope.replace(":", "_")


def _create_form() -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.el.label(t("apikey.name"), html_for="api-key-name"),
            rx.input(name="name", id="api-key-name", max_length=48, width="320px", required=True),
            field_error(S.name_error),
            rx.text(t("apikey.scopes"), size="2", weight="medium"),
            rx.vstack(
                *[
                    rx.checkbox(
                        rx.hstack(rx.code(scope), rx.text(t(_scope_key(scope)), size="2"), spacing="2"),
                        checked=S.chosen_scopes.contains(scope),
                        on_change=lambda checked, scope=scope: S.toggle_scope(scope, checked),
                    )
                    for scope in SCOPES
                ],
                spacing="1",
            ),
            field_error(S.scopes_error),
            rx.button(t("apikey.create"), type="submit", loading=S.creating, id="api-key-create"),
            spacing="2",
            align="start",
        ),
        on_submit=S.create,
        reset_on_submit=False,
        width="100%",
    )


def _row(row: ApiKeyRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.text(row.name, weight="medium")),
        rx.table.cell(rx.code(row.prefix + "…")),
        rx.table.cell(rx.text(row.scopes, size="1")),
        rx.table.cell(row.created_at),
        rx.table.cell(row.created_by),
        rx.table.cell(row.last_used_at),
        rx.table.cell(
            rx.cond(
                row.revoked,
                rx.badge(t("apikey.revoked"), color_scheme="gray"),
                rx.badge(t("apikey.active"), color_scheme="green"),
            )
        ),
        rx.table.cell(
            rx.cond(
                row.revoked,
                rx.fragment(),
                rx.button(
                    t("apikey.revoke"),
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=S.ask_revoke(row.id),
                    id="api-key-revoke-" + row.id.to_string(),
                ),
            )
        ),
        class_name="api-key-row",
    )


def _new_key_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(S.new_key_name),
            rx.dialog.description(t("apikey.created_once"), size="2"),
            rx.code(S.new_key, id="api-key-new", style={"word_break": "break-all", "user_select": "all"}),
            rx.hstack(
                rx.dialog.close(rx.button(t("common.close"), id="api-key-new-close")),
                justify="end",
                margin_top="12px",
            ),
            max_width="640px",
        ),
        open=S.new_key_open,
        on_open_change=S.close_new_key,
    )


def api_keys_page() -> rx.Component:
    return page_shell(
        rx.text(t("apikey.hint"), size="2", color_scheme="gray"),
        rx.card(_create_form(), width="100%"),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    *[
                        rx.table.column_header_cell(t(key), scope="col")
                        for key in (
                            "apikey.name",
                            "apikey.col.prefix",
                            "apikey.scopes",
                            "common.created_at",
                            "backup.col.by",
                            "apikey.col.last_used",
                            "apikey.col.status",
                            "common.actions",
                        )
                    ]
                )
            ),
            rx.table.body(rx.foreach(S.keys, _row)),
            id="api-keys-table",
            width="100%",
        ),
        rx.cond(S.keys.length() == 0, rx.text(t("common.empty"), color_scheme="gray")),
        _new_key_dialog(),
        confirm_dialog(
            open_var=S.revoke_open,
            on_open_change=S.set_revoke_open,
            on_confirm=S.revoke,
            title=t("apikey.revoke"),
            message=t("apikey.revoke_confirm", name=S.revoke_name),
            confirm_label=t("apikey.revoke"),
            dialog_id="api-key-revoke-dialog",
        ),
        title_key="nav.api_keys",
    )
