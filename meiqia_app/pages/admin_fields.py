"""/admin/fields — custom field definitions (自定义字段, issue 23): create, edit, options, retire, delete."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.models.custom_field import FIELD_TYPES
from meiqia_app.services.custom_fields.definitions import FieldView, OptionView
from meiqia_app.state.admin_fields import AdminFieldsState as S
from meiqia_app.state.base import AppState

register_nav(NavItem("/admin/fields", "nav.fields", "list-plus", "field.manage", "system", 25))


def _labelled(label_key: str, control: rx.Component, input_id: str, error=None, hint_key: str = "") -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=input_id, font_size="13px"),
        control,
        *([rx.text(t(hint_key), size="1", color_scheme="gray")] if hint_key else []),
        *([field_error(error)] if error is not None else []),
        spacing="1",
        width="100%",
    )


def _input(name: str, input_id: str, errors, **props) -> rx.Component:
    return rx.input(
        name=name,
        id=input_id,
        width="100%",
        aria_invalid=rx.cond(errors.contains(name), "true", "false"),
        **props,
    )


def _switches(prefix: str, required=None, sensitive=None, shown=None) -> rx.Component:
    def box(name: str, label_key: str, checked) -> rx.Component:
        props = {} if checked is None else {"default_checked": checked}
        return rx.checkbox(t(label_key), name=name, id=f"{prefix}-{name}", **props)

    return rx.vstack(
        box("required", "field.required", required),
        box("sensitive", "field.sensitive", sensitive),
        box("shown_in_list", "field.shown_in_list", shown),
        spacing="2",
        width="100%",
    )


def _create_form() -> rx.Component:
    errors = S.create_errors
    return rx.form(
        rx.vstack(
            rx.heading(t("field.new"), size="4", as_="h2"),
            rx.grid(
                _labelled(
                    "field.key",
                    _input("key", "field-key", errors, required=True, max_length=40, placeholder="member_source"),
                    "field-key",
                    errors.get("key", ""),
                    "field.key_hint",
                ),
                _labelled(
                    "field.type",
                    rx.select.root(
                        rx.select.trigger(id="field-type", aria_label=t("field.type"), width="100%"),
                        rx.select.content(
                            *[rx.select.item(t(f"field.type.{code}"), value=code) for code in FIELD_TYPES]
                        ),
                        value=S.new_type,
                        on_change=S.set_new_type,
                    ),
                    "field-type",
                ),
                _labelled(
                    "field.label_zh",
                    _input("label_zh", "field-label-zh", errors, required=True, max_length=64),
                    "field-label-zh",
                    errors.get("label_zh", ""),
                ),
                _labelled(
                    "field.label_en",
                    _input("label_en", "field-label-en", errors, max_length=64),
                    "field-label-en",
                    errors.get("label_en", ""),
                ),
                _labelled(
                    "field.group_zh",
                    _input("group_zh", "field-group-zh", errors, max_length=32, placeholder="会员信息"),
                    "field-group-zh",
                    errors.get("group_zh", ""),
                ),
                _labelled(
                    "field.group_en",
                    _input("group_en", "field-group-en", errors, max_length=32),
                    "field-group-en",
                    errors.get("group_en", ""),
                ),
                columns="2",
                spacing="3",
                width="100%",
                class_name="stack-on-narrow",
            ),
            rx.cond(
                (S.new_type == "single_select") | (S.new_type == "multi_select"),
                _labelled(
                    "field.options",
                    rx.text_area(name="options", id="field-options", rows="4", width="100%"),
                    "field-options",
                    errors.get("options", ""),
                    "field.options_hint",
                ),
            ),
            rx.grid(
                _labelled(
                    "field.default",
                    _input("default", "field-default", errors, max_length=255),
                    "field-default",
                    errors.get("default", ""),
                    "field.default_hint",
                ),
                _labelled(
                    "field.sort_order",
                    _input("sort_order", "field-sort-order", errors, input_mode="numeric", max_length=6),
                    "field-sort-order",
                    errors.get("sort_order", ""),
                ),
                columns="2",
                spacing="3",
                width="100%",
                class_name="stack-on-narrow",
            ),
            _switches("field-new"),
            rx.button(t("field.create"), type="submit", loading=S.creating, id="field-create"),
            spacing="3",
            align="start",
            width="100%",
        ),
        on_submit=S.create,
        reset_on_submit=False,
        id="field-create-form",
        width="100%",
    )


def _label_of(field: FieldView):
    return rx.cond(AppState.is_en & (field.label_en != ""), field.label_en, field.label_zh)


def _field_card(field: FieldView) -> rx.Component:
    active = field.status == "active"
    is_select = (field.field_type == "single_select") | (field.field_type == "multi_select")
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.text(_label_of(field), weight="bold", size="3"),
                rx.code(field.key),
                rx.badge(field.type_label, variant="soft"),
                rx.match(
                    field.status,
                    ("retired", rx.badge(t("field.status.retired"), color_scheme="gray")),
                    ("deleting", rx.badge(t("field.status.deleting"), color_scheme="red")),
                    rx.badge(t("field.status.active"), color_scheme="green"),
                ),
                spacing="2",
                align="center",
                wrap="wrap",
            ),
            rx.hstack(
                rx.cond(
                    field.group_zh != "",
                    rx.text(
                        rx.cond(AppState.is_en & (field.group_en != ""), field.group_en, field.group_zh),
                        size="2",
                        color_scheme="gray",
                    ),
                ),
                rx.cond(field.required, rx.badge(t("field.required"), color_scheme="orange", variant="soft")),
                rx.cond(
                    field.sensitive,
                    rx.badge(rx.icon("lock", size=12), t("field.sensitive"), color_scheme="red", variant="soft"),
                ),
                rx.cond(field.shown_in_list, rx.badge(t("field.shown_in_list"), variant="soft")),
                rx.cond(field.indexed, rx.badge(t("field.indexed"), color_scheme="gray", variant="soft")),
                spacing="2",
                wrap="wrap",
                align="center",
            ),
            rx.cond(
                field.default_display != "",
                rx.text(t("field.default"), ": ", field.default_display, size="2"),
            ),
            rx.cond(
                is_select,
                rx.text(
                    rx.foreach(
                        field.options,
                        lambda o: rx.text.span(
                            rx.cond(AppState.is_en & (o.en != ""), o.en, o.zh),
                            rx.cond(o.retired, " (", ""),
                            rx.cond(o.retired, t("field.option_retired"), ""),
                            rx.cond(o.retired, ")", ""),
                            "  ",
                            color=rx.cond(o.retired, "var(--gray-10)", "inherit"),
                        ),
                    ),
                    size="2",
                ),
            ),
            rx.hstack(
                rx.cond(
                    active,
                    rx.button(
                        rx.icon("pencil", size=14),
                        t("field.edit"),
                        size="1",
                        variant="soft",
                        on_click=S.start_edit(field.id),
                        id="field-edit-" + field.key,
                    ),
                ),
                rx.cond(
                    active & is_select,
                    rx.button(
                        rx.icon("list", size=14),
                        t("field.options"),
                        size="1",
                        variant="soft",
                        on_click=S.start_options(field.id),
                        id="field-options-" + field.key,
                    ),
                ),
                rx.cond(
                    active,
                    rx.button(
                        t("field.retire"),
                        size="1",
                        variant="soft",
                        color_scheme="gray",
                        on_click=S.retire(field.id),
                        id="field-retire-" + field.key,
                    ),
                ),
                rx.cond(
                    field.status == "retired",
                    rx.button(
                        t("field.restore"),
                        size="1",
                        variant="soft",
                        color_scheme="green",
                        on_click=S.restore(field.id),
                        id="field-restore-" + field.key,
                    ),
                ),
                rx.cond(
                    field.status != "deleting",
                    rx.button(
                        rx.icon("trash-2", size=14),
                        t("field.delete"),
                        size="1",
                        variant="soft",
                        color_scheme="red",
                        on_click=S.ask_delete(field.id),
                        id="field-delete-" + field.key,
                    ),
                ),
                spacing="2",
                wrap="wrap",
            ),
            spacing="2",
            width="100%",
        ),
        width="100%",
        class_name="field-card",
        id="field-card-" + field.key,
    )


def _edit_dialog() -> rx.Component:
    errors = S.edit_errors
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("field.edit"), " · ", rx.code(S.edit_key)),
            rx.form(
                rx.vstack(
                    rx.grid(
                        _labelled(
                            "field.label_zh",
                            _input(
                                "label_zh",
                                "field-edit-label-zh",
                                errors,
                                default_value=S.edit_label_zh,
                                required=True,
                                max_length=64,
                            ),
                            "field-edit-label-zh",
                            errors.get("label_zh", ""),
                        ),
                        _labelled(
                            "field.label_en",
                            _input(
                                "label_en", "field-edit-label-en", errors, default_value=S.edit_label_en, max_length=64
                            ),
                            "field-edit-label-en",
                            errors.get("label_en", ""),
                        ),
                        _labelled(
                            "field.group_zh",
                            _input(
                                "group_zh", "field-edit-group-zh", errors, default_value=S.edit_group_zh, max_length=32
                            ),
                            "field-edit-group-zh",
                            errors.get("group_zh", ""),
                        ),
                        _labelled(
                            "field.group_en",
                            _input(
                                "group_en", "field-edit-group-en", errors, default_value=S.edit_group_en, max_length=32
                            ),
                            "field-edit-group-en",
                            errors.get("group_en", ""),
                        ),
                        _labelled(
                            "field.default",
                            _input(
                                "default", "field-edit-default", errors, default_value=S.edit_default, max_length=255
                            ),
                            "field-edit-default",
                            errors.get("default", ""),
                            "field.default_hint",
                        ),
                        _labelled(
                            "field.sort_order",
                            _input(
                                "sort_order",
                                "field-edit-sort-order",
                                errors,
                                default_value=S.edit_sort_order,
                                max_length=6,
                            ),
                            "field-edit-sort-order",
                            errors.get("sort_order", ""),
                        ),
                        columns="2",
                        spacing="3",
                        width="100%",
                    ),
                    _switches("field-edit", S.edit_required, S.edit_sensitive, S.edit_shown),
                    form_buttons("field-edit-save"),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.save_edit,
                reset_on_submit=False,
                key=S.edit_id.to_string() + "-" + S.edit_version.to_string(),
            ),
            max_width="640px",
        ),
        open=S.edit_open,
        on_open_change=S.set_edit_open,
    )


def _option_row(option: OptionView) -> rx.Component:
    return rx.form(
        rx.el.input(type="hidden", name="option_id", value=option.id),
        rx.hstack(
            rx.input(
                name="zh",
                default_value=option.zh,
                aria_label=t("field.option_zh"),
                max_length=64,
                size="1",
                width="8em",
                id="option-zh-" + option.id,
            ),
            rx.input(
                name="en",
                default_value=option.en,
                aria_label=t("field.option_en"),
                max_length=64,
                size="1",
                width="8em",
            ),
            rx.button(
                t("field.option_rename"), type="submit", size="1", variant="soft", id="option-rename-" + option.id
            ),
            rx.icon_button(
                rx.icon("arrow-up", size=14),
                type="button",
                size="1",
                variant="ghost",
                aria_label=t("field.option_up"),
                on_click=S.move_option(option.id, "up"),
            ),
            rx.icon_button(
                rx.icon("arrow-down", size=14),
                type="button",
                size="1",
                variant="ghost",
                aria_label=t("field.option_down"),
                on_click=S.move_option(option.id, "down"),
            ),
            rx.cond(
                option.retired,
                rx.button(
                    t("field.option_restore"),
                    type="button",
                    size="1",
                    variant="soft",
                    color_scheme="green",
                    on_click=S.retire_option(option.id, False),
                    id="option-restore-" + option.id,
                ),
                rx.button(
                    t("field.option_retire"),
                    type="button",
                    size="1",
                    variant="soft",
                    color_scheme="gray",
                    on_click=S.retire_option(option.id, True),
                    id="option-retire-" + option.id,
                ),
            ),
            rx.cond(option.retired, rx.badge(t("field.option_retired"), color_scheme="gray")),
            spacing="2",
            align="center",
            wrap="wrap",
        ),
        on_submit=S.rename_option,
        reset_on_submit=False,
        key=option.id + option.zh + option.en,
        class_name="option-row",
    )


def _options_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("field.options_of", name=S.options_label)),
            rx.vstack(
                rx.foreach(S.options, _option_row),
                field_error(S.option_error),
                rx.form(
                    rx.hstack(
                        rx.input(
                            name="option_zh",
                            id="option-new-zh",
                            placeholder=t("field.option_zh"),
                            aria_label=t("field.option_zh"),
                            max_length=64,
                            required=True,
                            width="10em",
                        ),
                        rx.input(
                            name="option_en",
                            id="option-new-en",
                            placeholder=t("field.option_en"),
                            aria_label=t("field.option_en"),
                            max_length=64,
                            width="10em",
                        ),
                        rx.button(t("field.add_option"), type="submit", id="option-add"),
                        spacing="2",
                        wrap="wrap",
                    ),
                    on_submit=S.add_option,
                    reset_on_submit=False,
                    id="option-add-form",
                ),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.close"), variant="soft", color_scheme="gray")),
                    justify="end",
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
            max_width="640px",
        ),
        open=S.options_open,
        on_open_change=S.set_options_open,
    )


def _delete_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("field.delete_title", name=S.delete_label)),
            rx.form(
                rx.vstack(
                    rx.el.label(
                        t("field.delete_warning", field_key=S.delete_key),
                        html_for="field-delete-confirm",
                        font_size="14px",
                    ),
                    rx.input(
                        name="confirm", id="field-delete-confirm", autocomplete="off", width="100%", required=True
                    ),
                    field_error(S.delete_error),
                    form_buttons("field-delete-submit", submit_key="field.delete", color_scheme="red"),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.confirm_delete,
                reset_on_submit=True,
            ),
            max_width="520px",
        ),
        open=S.delete_open,
        on_open_change=S.set_delete_open,
    )


def admin_fields_page() -> rx.Component:
    return page_shell(
        rx.text(t("field.intro"), size="2", color_scheme="gray"),
        rx.cond(
            S.job_running,
            rx.callout(
                rx.vstack(
                    rx.text(t("field.job_running", percent=S.job_percent)),
                    rx.progress(value=S.job_percent, max=100, width="100%"),
                    width="100%",
                ),
                icon="loader",
                id="field-job",
                width="100%",
            ),
        ),
        rx.card(_create_form(), width="100%"),
        rx.vstack(rx.foreach(S.fields, _field_card), spacing="2", width="100%", id="field-list"),
        rx.cond(S.fields.length() == 0, rx.text(t("field.none"), color_scheme="gray")),
        _edit_dialog(),
        _options_dialog(),
        _delete_dialog(),
        title_key="field.title",
    )
