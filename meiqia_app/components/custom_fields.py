"""Custom fields on the customer pages: the card's groups and the form inputs by type.

The values come as ``FieldValueView`` (services/custom_field_values.py), already
masked for the viewer. Inputs are named ``cf.<key>`` (a multi select:
``cf.<key>._multi`` plus ``cf.<key>.<option id>`` per ticked box), which
``custom_field_values.values_from_form`` reads back.
"""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import field_error
from meiqia_app.components.i18n import t
from meiqia_app.services.custom_fields.values import FieldGroupView, FieldValueView


def _value_item(field: FieldValueView) -> rx.Component:
    return rx.data_list.item(
        rx.data_list.label(field.label),
        rx.data_list.value(
            rx.cond(field.display != "", field.display, "—"),
            id="field-cf-" + field.key,
            class_name=rx.cond(field.masked, "cf-value masked", "cf-value"),
            white_space=rx.cond(field.field_type == "long_text", "pre-wrap", "normal"),
        ),
    )


def _group(group: FieldGroupView) -> rx.Component:
    return rx.vstack(
        rx.heading(group.name, size="3", as_="h3"),
        rx.data_list.root(rx.foreach(group.fields, _value_item), width="100%"),
        spacing="2",
        width="100%",
        class_name="cf-group",
    )


def custom_field_groups(groups) -> rx.Component:
    """The card's custom fields, one block per group (nothing when no field is defined)."""
    return rx.cond(
        groups.length() > 0,
        rx.grid(rx.foreach(groups, _group), columns="2", spacing="6", width="100%", class_name="stack-on-narrow"),
    )


def _label(field: FieldValueView, input_id) -> rx.Component:
    return rx.el.label(field.label, rx.cond(field.required, " *", ""), html_for=input_id, font_size="13px")


def _placeholder(field: FieldValueView):
    return rx.cond(field.masked, t("customer.masked_hint", value=field.display), "")


def _input(field: FieldValueView, input_id, errors, input_type: str, **props) -> rx.Component:
    return rx.input(
        id=input_id,
        name="cf." + field.key,
        type=input_type,
        default_value=field.value,
        placeholder=_placeholder(field),
        width="100%",
        aria_invalid=rx.cond(errors.contains(field.name), "true", "false"),
        **props,
    )


def _native_select(field: FieldValueView, input_id, *options) -> rx.Component:
    return rx.el.select(
        rx.el.option(t("field.choose"), value=""),
        *options,
        id=input_id,
        name="cf." + field.key,
        default_value=field.value,
        class_name="cf-select",
    )


def _checkbox(field: FieldValueView, option, prefix: str) -> rx.Component:
    return rx.el.label(
        rx.checkbox(
            name="cf." + field.key + "." + option.id,
            default_checked=field.chosen.contains(option.id),
            id=prefix + "cf-" + field.key + "-" + option.id,
        ),
        rx.text(option.label, size="2"),
        display="flex",
        gap="6px",
        align_items="center",
    )


def _control(field: FieldValueView, errors, prefix: str) -> rx.Component:
    input_id = prefix + "cf-" + field.key
    return rx.match(
        field.field_type,
        (
            "long_text",
            rx.text_area(
                id=input_id,
                name="cf." + field.key,
                default_value=field.value,
                placeholder=_placeholder(field),
                width="100%",
                rows="3",
            ),
        ),
        (
            "single_select",
            _native_select(field, input_id, rx.foreach(field.options, lambda o: rx.el.option(o.label, value=o.id))),
        ),
        (
            "yes_no",
            _native_select(
                field,
                input_id,
                [rx.el.option(t("field.yes"), value="true"), rx.el.option(t("field.no"), value="false")],
            ),
        ),
        (
            "multi_select",
            rx.box(
                rx.el.input(type="hidden", name="cf." + field.key + "._multi", value="1"),
                rx.flex(rx.foreach(field.options, lambda o: _checkbox(field, o, prefix)), wrap="wrap", gap="12px"),
                id=input_id,
                role="group",
                aria_label=field.label,
            ),
        ),
        ("date", _input(field, input_id, errors, "date")),
        ("datetime", _input(field, input_id, errors, "datetime-local")),
        ("number", _input(field, input_id, errors, "text", input_mode="decimal")),
        ("money", _input(field, input_id, errors, "text", input_mode="decimal")),
        ("percent", _input(field, input_id, errors, "text", input_mode="decimal")),
        ("email", _input(field, input_id, errors, "email")),
        ("phone", _input(field, input_id, errors, "tel")),
        ("link", _input(field, input_id, errors, "url")),
        _input(field, input_id, errors, "text"),
    )


def _form_field(field: FieldValueView, errors, prefix: str) -> rx.Component:
    input_id = prefix + "cf-" + field.key
    return rx.vstack(
        rx.cond(field.field_type == "multi_select", rx.text(field.label, size="2"), _label(field, input_id)),
        _control(field, errors, prefix),
        field_error(errors.get(field.name, "")),
        spacing="1",
        width="100%",
        class_name="cf-input",
    )


def custom_field_inputs(fields, errors, prefix: str) -> rx.Component:
    """The form's custom fields, in the admin's order, under a heading (nothing when none are defined).

    ``errors``: the state's {field name: message} var; ``prefix``: of the input ids ("edit-", "new-")."""
    return rx.cond(
        fields.length() > 0,
        rx.vstack(
            rx.heading(t("field.custom_section"), size="3", as_="h3", margin_top="12px"),
            rx.grid(
                rx.foreach(fields, lambda f: _form_field(f, errors, prefix)),
                columns="2",
                spacing="3",
                width="100%",
            ),
            width="100%",
            spacing="2",
        ),
    )
