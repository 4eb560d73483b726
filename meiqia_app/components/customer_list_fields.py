"""Custom fields on /customers (issue 23): columns, the custom field filter, the notice about
fields gone since a view was saved, and the bulk edit dialog ("set one field").

Fields show by their label in the page's language (``FieldColumn.label``), never by key.
"""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_list import CustomerListState as S

OPERATOR_LABELS = ("equals", "any_of", "range", "empty", "not_empty")


def _op_label(op) -> rx.Var:
    return rx.match(op, *[(name, t(f"cf_list.op.{name}")) for name in OPERATOR_LABELS], op)


# --- columns -------------------------------------------------------------------------------------


def custom_header_cell(field) -> rx.Component:
    is_sorted = S.sort == field.name
    arrow = rx.cond(is_sorted, rx.cond(S.direction == "desc", "↓", "↑"), "")
    return rx.table.column_header_cell(
        rx.cond(
            field.sortable,
            rx.button(
                field.label,
                rx.text(arrow, as_="span", aria_hidden="true"),
                on_click=S.sort_by(field.name),
                variant="ghost",
                size="1",
                aria_label=t("customers.sort_by", column=field.label),
                class_name="cf-sort",
            ),
            rx.text(field.label),
        ),
        scope="col",
        aria_sort=rx.cond(is_sorted, rx.cond(S.direction == "desc", "descending", "ascending"), "none"),
        data_field=field.name,
    )


def custom_cells(row) -> rx.Component:
    return rx.foreach(
        row.custom,
        lambda cell: rx.table.cell(cell.value, class_name="col-custom", data_label=cell.label, data_field=cell.name),
    )


def custom_column_choices() -> rx.Component:
    return rx.cond(
        S.field_columns.length() > 0,
        rx.vstack(
            rx.separator(size="4"),
            rx.text(t("cf_list.custom_columns"), size="1", weight="bold", color_scheme="gray"),
            rx.foreach(
                S.field_columns,
                lambda field: rx.el.label(
                    rx.checkbox(
                        checked=S.columns.contains(field.name),
                        on_change=lambda _checked: S.toggle_column(field.name),
                        class_name="cf-column-choice",
                        data_field=field.name,
                    ),
                    field.label,
                    display="flex",
                    gap="6px",
                    align_items="center",
                    font_size="14px",
                ),
            ),
            spacing="2",
            width="100%",
        ),
    )


# --- a value input by type (filters and bulk edit) ---------------------------------------------------


def _options_select(options, input_id: str, label) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(id=input_id, aria_label=label, width="100%", placeholder="—"),
        rx.select.content(rx.foreach(options, lambda o: rx.select.item(o.label, value=o.value))),
        name="value",
    )


def _option_boxes(options) -> rx.Component:
    return rx.flex(
        rx.foreach(
            options,
            lambda o: rx.el.label(
                rx.checkbox(name="opt:" + o.value),
                o.label,
                display="flex",
                gap="4px",
                align_items="center",
                font_size="13px",
            ),
        ),
        spacing="3",
        wrap="wrap",
    )


def _html_type(field_type) -> rx.Var:
    return rx.match(field_type, ("date", "date"), ("datetime", "datetime-local"), "text")


def value_input(field_type, options, input_id: str, label, many=False) -> rx.Component:
    """The value of a field: options as a select (or boxes when ``many``), else an input of the type."""
    return rx.cond(
        (field_type == "single_select") | (field_type == "yes_no") | (field_type == "multi_select"),
        rx.cond(
            many | (field_type == "multi_select"), _option_boxes(options), _options_select(options, input_id, label)
        ),
        rx.input(id=input_id, name="value", type=_html_type(field_type), size="2", width="100%", max_length=4000),
    )


def _range_inputs(field_type) -> rx.Component:
    return rx.grid(
        rx.vstack(
            rx.el.label(t("cf_list.from"), html_for="cf-filter-low", font_size="13px"),
            rx.input(id="cf-filter-low", name="low", type=_html_type(field_type), size="2", width="100%"),
            spacing="1",
        ),
        rx.vstack(
            rx.el.label(t("cf_list.to"), html_for="cf-filter-high", font_size="13px"),
            rx.input(id="cf-filter-high", name="high", type=_html_type(field_type), size="2", width="100%"),
            spacing="1",
        ),
        columns="2",
        spacing="2",
        width="100%",
    )


# --- the custom field filter --------------------------------------------------------------------------


def custom_filter_dialog() -> rx.Component:
    return rx.cond(
        S.filterable_fields.length() > 0,
        rx.dialog.root(
            rx.dialog.trigger(
                rx.button(
                    rx.icon("list-filter", size=16), t("cf_list.filter_open"), variant="soft", id="open-cf-filter"
                )
            ),
            rx.dialog.content(
                rx.dialog.title(t("cf_list.filter_title")),
                rx.form(
                    rx.vstack(
                        rx.el.label(t("cf_list.field"), html_for="cf-filter-field", font_size="13px"),
                        rx.select.root(
                            rx.select.trigger(
                                id="cf-filter-field", aria_label=t("cf_list.field"), width="100%", placeholder="—"
                            ),
                            rx.select.content(
                                rx.foreach(S.filterable_fields, lambda f: rx.select.item(f.label, value=f.key))
                            ),
                            value=S.cf_key,
                            on_change=S.set_cf_key,
                        ),
                        rx.cond(
                            S.cf_key != "",
                            rx.vstack(
                                rx.el.label(t("cf_list.operator"), html_for="cf-filter-op", font_size="13px"),
                                rx.select.root(
                                    rx.select.trigger(
                                        id="cf-filter-op", aria_label=t("cf_list.operator"), width="100%"
                                    ),
                                    rx.select.content(
                                        rx.foreach(S.cf_operators, lambda op: rx.select.item(_op_label(op), value=op))
                                    ),
                                    value=S.cf_op,
                                    on_change=S.set_cf_op,
                                ),
                                rx.match(
                                    S.cf_op,
                                    ("range", _range_inputs(S.cf_type)),
                                    ("empty", rx.fragment()),
                                    ("not_empty", rx.fragment()),
                                    rx.vstack(
                                        rx.el.label(t("cf_list.value"), html_for="cf-filter-value", font_size="13px"),
                                        value_input(
                                            S.cf_type,
                                            S.cf_options,
                                            "cf-filter-value",
                                            t("cf_list.value"),
                                            S.cf_op == "any_of",
                                        ),
                                        spacing="1",
                                        width="100%",
                                    ),
                                ),
                                spacing="2",
                                width="100%",
                            ),
                        ),
                        rx.cond(
                            S.cf_error != "", rx.text(S.cf_error, color="var(--red-11)", size="1", id="cf-filter-error")
                        ),
                        form_buttons("cf-filter-apply", submit_key="common.apply"),
                        spacing="3",
                        width="100%",
                    ),
                    on_submit=S.apply_custom_filter,
                    reset_on_submit=False,
                ),
                max_width="440px",
            ),
            open=S.cf_open,
            on_open_change=S.set_cf_open,
        ),
    )


def ignored_notice() -> rx.Component:
    return rx.cond(
        S.ignored_notice != "",
        rx.callout(S.ignored_notice, icon="info", color_scheme="amber", size="1", id="cf-ignored-notice"),
    )


# --- bulk edit -------------------------------------------------------------------------------------------


def bulk_edit_button() -> rx.Component:
    return rx.cond(
        AppState.perms.contains("customer.edit"),
        rx.button(
            rx.icon("pencil", size=14),
            t("bulk_edit.open"),
            size="1",
            variant="soft",
            on_click=S.open_bulk_edit,
            id="bulk-edit",
        ),
    )


def bulk_edit_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("bulk_edit.title")),
            rx.dialog.description(
                rx.cond(
                    S.all_matching,
                    t("bulk.all_matching_selected", count=S.count_display),
                    t("bulk.selected", count=S.selected_count),
                ),
                size="2",
            ),
            rx.form(
                rx.vstack(
                    rx.el.label(t("bulk_edit.field"), html_for="bulk-edit-field", font_size="13px"),
                    rx.select.root(
                        rx.select.trigger(
                            id="bulk-edit-field", aria_label=t("bulk_edit.field"), width="100%", placeholder="—"
                        ),
                        rx.select.content(rx.foreach(S.edit_fields, lambda f: rx.select.item(f.label, value=f.name))),
                        value=S.edit_field,
                        on_change=S.set_edit_field,
                        disabled=S.bulk_running,
                    ),
                    rx.cond(
                        S.edit_field != "",
                        rx.vstack(
                            rx.el.label(t("bulk_edit.value"), html_for="bulk-edit-value", font_size="13px"),
                            value_input(S.edit_type, S.edit_options, "bulk-edit-value", t("bulk_edit.value")),
                            spacing="1",
                            width="100%",
                        ),
                    ),
                    rx.cond(
                        S.edit_count >= 0,
                        rx.vstack(
                            rx.text(
                                t("bulk_edit.explained", count=S.edit_count, field=S.edit_label),
                                size="2",
                                id="bulk-edit-explained",
                            ),
                            rx.el.label(
                                t("bulk.type_count", count=S.edit_count), html_for="bulk-edit-confirm", font_size="13px"
                            ),
                            rx.input(id="bulk-edit-confirm", name="confirm", input_mode="numeric", auto_complete="off"),
                            spacing="1",
                            width="100%",
                        ),
                    ),
                    rx.cond(
                        S.edit_error != "", rx.text(S.edit_error, color="var(--red-11)", size="1", id="bulk-edit-error")
                    ),
                    rx.cond(
                        S.bulk_running,
                        rx.hstack(
                            rx.progress(value=S.bulk_percent, max=100, width="100%", id="bulk-edit-progress"),
                            rx.button(
                                t("bulk_edit.stop"),
                                type="button",
                                size="1",
                                variant="soft",
                                color_scheme="red",
                                on_click=S.stop_bulk_job,
                                id="bulk-edit-stop",
                            ),
                            width="100%",
                            align="center",
                        ),
                    ),
                    rx.cond(
                        S.edit_count >= 0,
                        form_buttons("bulk-edit-submit", submit_key="common.confirm", loading=S.bulk_running),
                        form_buttons("bulk-edit-check", submit_key="bulk_edit.check"),
                    ),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.submit_bulk_edit,
                reset_on_submit=False,
            ),
            max_width="460px",
        ),
        open=S.edit_open,
        on_open_change=S.set_edit_open,
    )
