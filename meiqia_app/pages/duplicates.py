"""/duplicates — duplicate customers and the merge dialog (CUST duplicates)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.customers.duplicates.finding import KINDS
from meiqia_app.services.customers.duplicates.merging import FieldValue
from meiqia_app.state.duplicates import DuplicatesState as S

register_nav(NavItem("/duplicates", "nav.duplicates", "copy", "customer.merge", "customers", 20))


def _member_row(member) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.link(member.name, href="/customers/" + member.id.to_string())),
        rx.table.cell(member.phone),
        rx.table.cell(member.email),
        rx.table.cell(member.city),
        rx.table.cell(member.order_count),
        rx.table.cell(member.last_active),
        class_name="dup-member",
    )


def _group_card(group) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.badge(group.key, size="2", variant="soft"),
                rx.text(t("dup.group_size", count=group.size), size="2", color_scheme="gray"),
                rx.spacer(),
                rx.button(
                    rx.icon("merge", size=14),
                    t("dup.merge"),
                    size="2",
                    on_click=S.open_merge(group.members.map(lambda m: m.id)),
                    class_name="dup-merge",
                ),
                width="100%",
                align="center",
            ),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell(t("customers.col.name")),
                        rx.table.column_header_cell(t("customers.col.phone")),
                        rx.table.column_header_cell(t("customers.col.email")),
                        rx.table.column_header_cell(t("customer.city")),
                        rx.table.column_header_cell(t("customers.col.order_count")),
                        rx.table.column_header_cell(t("customers.col.last_active")),
                    )
                ),
                rx.table.body(rx.foreach(group.members, _member_row)),
                size="1",
                width="100%",
            ),
            spacing="2",
            width="100%",
        ),
        class_name="dup-group",
        width="100%",
    )


def _candidate_column(candidate) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.el.label(
                rx.radio_group.item(
                    value=candidate.id.to_string(), id="survivor-" + candidate.id.to_string(), aria_label=candidate.name
                ),
                rx.text(candidate.name, weight="bold"),
                rx.text("#" + candidate.id.to_string(), size="1", color_scheme="gray"),
                display="flex",
                gap="6px",
                align_items="center",
            ),
            rx.text(t("dup.registered", date=candidate.registered), size="1"),
            rx.text(
                t(
                    "dup.history",
                    paid=candidate.paid_orders,
                    orders=candidate.orders,
                    chats=candidate.conversations,
                    events=candidate.events,
                    notes=candidate.notes,
                    tags=candidate.tags,
                ),
                size="1",
            ),
            spacing="1",
        ),
        class_name="merge-candidate",
    )


def _field_choice(field) -> rx.Component:
    return rx.vstack(
        rx.text(field.label, size="2", weight="medium", class_name="merge-field-label"),
        rx.cond(
            field.locked,
            # a sensitive custom field the actor sees masked: the values masked, no choice
            rx.vstack(
                rx.hstack(
                    rx.foreach(
                        field["values"].to(list[FieldValue]),
                        lambda value: rx.text(
                            rx.cond(value.empty, t("dup.empty_value"), value.value),
                            " #" + value.customer_id.to_string(),
                            size="2",
                        ),
                    ),
                    spacing="4",
                ),
                rx.text(t("merge.cf_masked_kept"), size="1", color_scheme="gray"),
                spacing="1",
            ),
            rx.radio_group.root(
                rx.foreach(
                    # field.values would be the object's values() method, not the attribute
                    field["values"].to(list[FieldValue]),
                    lambda value: rx.el.label(
                        rx.radio_group.item(value=value.customer_id.to_string()),
                        rx.text(rx.cond(value.empty, t("dup.empty_value"), value.value), size="2"),
                        rx.text("#" + value.customer_id.to_string(), size="1", color_scheme="gray"),
                        display="flex",
                        gap="6px",
                        align_items="center",
                    ),
                ),
                rx.cond(
                    field.union,
                    rx.el.label(
                        rx.radio_group.item(value="union"),
                        rx.text(t("merge.cf_union"), size="2"),
                        display="flex",
                        gap="6px",
                        align_items="center",
                    ),
                ),
                value=S.choices[field.field],
                on_change=lambda chosen: S.choose_value(field.field, chosen),
                direction="row",
                spacing="4",
                name="field-" + field.field,
            ),
        ),
        spacing="1",
        class_name="merge-field",
        width="100%",
    )


def merge_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("dup.merge_title")),
            rx.dialog.description(t("dup.merge_explained"), size="2"),
            rx.vstack(
                rx.text(t("dup.choose_survivor"), size="2", weight="medium"),
                rx.radio_group.root(
                    rx.flex(rx.foreach(S.merge_customers, _candidate_column), gap="12px", wrap="wrap"),
                    value=S.survivor_id,
                    on_change=S.choose_survivor,
                    name="survivor",
                ),
                rx.cond(
                    S.merge_fields.length() > 0,
                    rx.vstack(
                        rx.text(t("dup.choose_values"), size="2", weight="medium"),
                        rx.foreach(S.merge_fields, _field_choice),
                        spacing="3",
                        width="100%",
                    ),
                    rx.text(t("dup.no_differences"), size="2", color_scheme="gray"),
                ),
                rx.cond(
                    S.merge_error != "",
                    rx.callout(S.merge_error, icon="triangle-alert", color_scheme="red", id="merge-error"),
                ),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                    rx.button(t("dup.confirm_merge"), on_click=S.confirm_merge, loading=S.merging, id="confirm-merge"),
                    justify="end",
                    width="100%",
                    spacing="3",
                ),
                spacing="4",
                width="100%",
            ),
            max_width="900px",
            max_height="90vh",
            overflow_y="auto",
        ),
        open=S.merge_open,
        on_open_change=S.set_merge_open,
    )


def _groups() -> rx.Component:
    return rx.cond(
        S.groups.length() > 0,
        rx.vstack(rx.foreach(S.groups, _group_card), spacing="3", width="100%", id="dup-groups"),
        rx.cond(S.loading, rx.spinner(), rx.callout(t("dup.none"), icon="circle-check", id="dup-none")),
    )


def duplicates_page() -> rx.Component:
    return page_shell(
        rx.text(t("dup.intro"), size="2", color_scheme="gray"),
        rx.tabs.root(
            rx.tabs.list(
                *[rx.tabs.trigger(t(f"dup.kind.{kind}"), value=kind, id=f"dup-kind-{kind}") for kind in KINDS]
            ),
            # The groups are the selected tab's panel (only that one is mounted).
            *[rx.tabs.content(_groups(), value=kind, padding_top="12px") for kind in KINDS],
            value=S.kind,
            on_change=S.set_kind,
            width="100%",
        ),
        rx.hstack(
            rx.button(
                t("common.prev_page"),
                on_click=S.prev_page,
                disabled=S.page_number <= 1,
                variant="soft",
                size="2",
                id="dup-prev",
            ),
            rx.text(t("customers.page", page=S.page_number), size="2"),
            rx.button(
                t("common.next_page"),
                on_click=S.next_page,
                disabled=~S.has_next,
                variant="soft",
                size="2",
                id="dup-next",
            ),
            spacing="2",
            align="center",
        ),
        merge_dialog(),
        title_key="dup.title",
    )
