"""Dialogs shared by pages: a confirmation for destructive steps."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t


def confirm_dialog(
    *,
    open_var,
    on_open_change,
    on_confirm,
    title: rx.Var | str,
    message: rx.Var | str,
    confirm_label: rx.Var | str | None = None,
    dialog_id: str = "confirm-dialog",
) -> rx.Component:
    """A controlled alert dialog: nothing destructive happens without a second click."""
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(title),
            rx.alert_dialog.description(message, size="2"),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                rx.alert_dialog.action(
                    rx.button(
                        confirm_label if confirm_label is not None else t("common.confirm"),
                        color_scheme="red",
                        on_click=on_confirm,
                        id=f"{dialog_id}-confirm",
                    ),
                ),
                spacing="3",
                justify="end",
                margin_top="4",
            ),
            id=dialog_id,
        ),
        open=open_var,
        on_open_change=on_open_change,
    )


def field_error(message: rx.Var) -> rx.Component:
    return rx.cond(message, rx.text(message, color="var(--red-11)", size="1", role="alert"))


def form_buttons(
    submit_id: str, *, submit_key: str = "common.save", closer=rx.dialog.close, **submit_props
) -> rx.Component:
    """Cancel (closes the dialog or popover) and the submit button, right-aligned."""
    return rx.hstack(
        closer(rx.button(t("common.cancel"), type="button", variant="soft", color_scheme="gray")),
        rx.button(t(submit_key), type="submit", id=submit_id, **submit_props),
        justify="end",
        width="100%",
    )
