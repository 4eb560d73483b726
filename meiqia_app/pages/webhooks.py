"""/admin/webhooks — signed notifications to connected systems: endpoints, failures, delivery log."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.integrations.webhooks import EVENT_TYPES
from meiqia_app.state.webhooks import DeliveryRow, EndpointRow
from meiqia_app.state.webhooks import WebhooksState as S

register_nav(NavItem("/admin/webhooks", "nav.webhooks", "webhook", "webhook.manage", "system", 50))


def _state(row: EndpointRow) -> rx.Component:
    return rx.vstack(
        rx.cond(
            row.enabled,
            rx.badge(t("webhook.state.enabled"), color_scheme="green"),
            rx.badge(t("webhook.state.disabled"), color_scheme="gray"),
        ),
        rx.cond(
            row.disabled_reason != "",
            rx.text(
                t("webhook.disabled_because", reason=row.disabled_reason),
                size="1",
                color="var(--red-11)",
                class_name="webhook-disabled-reason",
            ),
        ),
        rx.cond(row.failing != "", rx.text(row.failing, size="1", color="var(--orange-11)")),
        spacing="1",
        align="start",
    )


def _endpoint_row(row: EndpointRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.text(row.url, size="1", font_family="monospace", style={"word_break": "break-all"})
        ),
        rx.table.cell(rx.text(row.events, size="1")),
        rx.table.cell(rx.text(row.level, size="1")),
        rx.table.cell(_state(row)),
        rx.table.cell(
            rx.hstack(
                rx.button(t("common.edit"), size="1", variant="soft", on_click=S.open_edit(row.id)),
                rx.cond(
                    row.enabled,
                    rx.button(t("webhook.disable"), size="1", variant="soft", on_click=S.set_enabled(row.id, False)),
                    rx.button(t("webhook.enable"), size="1", variant="soft", on_click=S.set_enabled(row.id, True)),
                ),
                rx.button(
                    t("webhook.deliveries"),
                    size="1",
                    variant="soft",
                    on_click=S.show_deliveries(row.id),
                    id="webhook-deliveries-" + row.id.to_string(),
                ),
                rx.button(
                    t("webhook.delete"), size="1", variant="soft", color_scheme="red", on_click=S.ask_delete(row.id)
                ),
                spacing="2",
                wrap="wrap",
            )
        ),
        class_name="webhook-row",
    )


def _status_badge(row: DeliveryRow) -> rx.Component:
    return rx.match(
        row.status,
        ("succeeded", rx.badge(t("webhook.status.succeeded"), color_scheme="green")),
        ("failed", rx.badge(t("webhook.status.failed"), color_scheme="red")),
        rx.badge(t("webhook.status.pending"), color_scheme="orange"),
    )


def _delivery_row(row: DeliveryRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row.at),
        rx.table.cell(row.event),
        rx.table.cell(row.customer_id),
        rx.table.cell(_status_badge(row)),
        rx.table.cell(rx.text(row.code, font_family="monospace")),
        rx.table.cell(row.attempts),
        rx.table.cell(rx.text(row.error, size="1")),
        rx.table.cell(
            rx.button(
                t("webhook.resend"),
                size="1",
                variant="soft",
                on_click=S.resend(row.id),
                id="webhook-resend-" + row.id.to_string(),
            )
        ),
        class_name="delivery-row",
    )


def _form_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(S.editing_id == 0, t("webhook.add"), t("common.edit"))),
            rx.form(
                rx.vstack(
                    rx.el.label(t("webhook.url"), html_for="webhook-url"),
                    rx.input(
                        name="url",
                        id="webhook-url",
                        default_value=S.form_url,
                        placeholder="https://",
                        required=True,
                        width="100%",
                    ),
                    field_error(S.errors.get("url", "")),
                    rx.text(t("webhook.events"), size="2", weight="medium"),
                    *[
                        rx.checkbox(
                            t(f"webhook.event.{event}"),
                            checked=S.form_events.contains(event),
                            on_change=lambda checked, event=event: S.toggle_event(event, checked),
                        )
                        for event in EVENT_TYPES
                    ],
                    field_error(S.errors.get("events", "")),
                    rx.el.label(t("webhook.secret"), html_for="webhook-secret"),
                    rx.input(name="secret", id="webhook-secret", type="password", auto_complete="off", width="100%"),
                    field_error(S.errors.get("secret", "")),
                    rx.checkbox(t("webhook.enabled"), checked=S.form_enabled, on_change=S.set_form_enabled),
                    form_buttons("webhook-save", submit_key="webhook.save", loading=S.saving),
                    spacing="2",
                    width="100%",
                ),
                on_submit=S.save,
                reset_on_submit=False,
            ),
            max_width="620px",
        ),
        open=S.form_open,
        on_open_change=S.set_form_open,
    )


def _secret_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("webhook.secret")),
            rx.dialog.description(t("webhook.secret_once"), size="2"),
            rx.code(S.new_secret, id="webhook-new-secret", style={"word_break": "break-all"}),
            rx.hstack(
                rx.dialog.close(rx.button(t("common.close"), id="webhook-secret-close")),
                justify="end",
                margin_top="12px",
            ),
        ),
        open=S.secret_open,
        on_open_change=S.close_secret,
    )


def webhooks_page() -> rx.Component:
    return page_shell(
        rx.hstack(
            rx.text(t("webhook.hint"), size="2", color_scheme="gray"),
            rx.spacer(),
            rx.button(rx.icon("plus", size=16), t("webhook.add"), on_click=S.open_new, id="webhook-add"),
            width="100%",
            align="center",
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    *[
                        rx.table.column_header_cell(t(key), scope="col")
                        for key in (
                            "webhook.url",
                            "webhook.events",
                            "webhook.col.level",
                            "webhook.col.state",
                            "common.actions",
                        )
                    ]
                )
            ),
            rx.table.body(rx.foreach(S.endpoints, _endpoint_row)),
            id="webhooks-table",
            width="100%",
        ),
        rx.cond(
            S.deliveries_for != 0,
            rx.vstack(
                rx.heading(t("webhook.deliveries"), size="4", as_="h2"),
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            *[
                                rx.table.column_header_cell(t(key), scope="col")
                                for key in (
                                    "webhook.col.at",
                                    "webhook.col.event",
                                    "nav.customers",
                                    "webhook.col.status",
                                    "webhook.col.code",
                                    "webhook.col.attempts",
                                    "webhook.col.error",
                                    "common.actions",
                                )
                            ]
                        )
                    ),
                    rx.table.body(rx.foreach(S.deliveries, _delivery_row)),
                    id="webhook-deliveries",
                    width="100%",
                ),
                width="100%",
            ),
        ),
        _form_dialog(),
        _secret_dialog(),
        confirm_dialog(
            open_var=S.delete_open,
            on_open_change=S.set_delete_open,
            on_confirm=S.delete,
            title=t("webhook.delete"),
            message=t("webhook.delete"),
            confirm_label=t("webhook.delete"),
            dialog_id="webhook-delete-dialog",
        ),
        title_key="nav.webhooks",
    )
