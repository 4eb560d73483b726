"""The detail page's activity: tags editor, notes and the merged timeline."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.tags import tag_color_scheme
from meiqia_app.services.customers.dto import TagChip
from meiqia_app.services.customers.timeline import MessageItem, TimelineItem
from meiqia_app.services.tags.assignments import TagOption
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_activity import KINDS
from meiqia_app.state.customer_activity import CustomerActivityState as S

KIND_ICONS = {
    "conversation": "message-circle",
    "order": "shopping-bag",
    "event": "mouse-pointer-click",
    "note": "sticky-note",
    "consent": "shield-check",
}


def _may_tag():
    """tag.assign, on a customer that is not read-only (archived, trashed, erased)."""
    return AppState.perms.contains("tag.assign") & ~S.customer.read_only


def _removable_tag(tag: TagChip) -> rx.Component:
    return rx.badge(
        tag.name,
        rx.cond(
            _may_tag(),
            rx.icon_button(
                rx.icon("x", size=10),
                size="1",
                variant="ghost",
                on_click=S.remove_tag(tag.id),
                aria_label=t("tag.remove", name=tag.name),
            ),
        ),
        color_scheme=tag_color_scheme(tag.color),
        variant="soft",
        radius="full",
        class_name="tag-chip",
    )


def _suggestion(option: TagOption, index) -> rx.Component:
    # The first suggestion for typed text is the highlighted one: Enter or 添加标签 takes it
    # when the text itself names no tag.
    highlighted = (index == 0) & (S.tag_query != "")
    return rx.button(
        option.name,
        size="1",
        variant=rx.cond(highlighted, "solid", "outline"),
        on_click=S.add_tag(option.id),
        type="button",
        class_name=rx.cond(highlighted, "tag-suggestion tag-suggestion-highlighted", "tag-suggestion"),
        aria_current=rx.cond(highlighted, "true", "false"),
    )


def tags_editor() -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.foreach(S.customer.tags, _removable_tag), spacing="1", wrap="wrap", id="customer-tags"),
        rx.cond(
            _may_tag(),
            rx.form(
                rx.hstack(
                    rx.el.input(
                        type="hidden",
                        name="highlighted",
                        value=rx.cond(
                            (S.tag_query != "") & (S.tag_suggestions.length() > 0),
                            S.tag_suggestions[0].id.to_string(),
                            "",
                        ),
                    ),
                    rx.input(
                        id="tag-input",
                        name="tag",
                        placeholder=t("tag.placeholder"),
                        aria_label=t("tag.add"),
                        on_change=S.suggest.debounce(200),
                        on_focus=S.suggest(""),
                        size="1",
                        width="200px",
                        auto_complete="off",
                    ),
                    rx.button(rx.icon("plus", size=12), t("tag.add"), size="1", type="submit", id="tag-add"),
                    rx.hstack(
                        rx.foreach(S.tag_suggestions, _suggestion),
                        rx.cond(
                            S.tag_can_create,
                            rx.button(
                                rx.icon("plus", size=12),
                                t("tag.create_new", name=S.tag_query),
                                size="1",
                                variant="ghost",
                                type="button",
                                on_click=S.create_typed_tag,
                                id="tag-create",
                            ),
                        ),
                        spacing="1",
                        wrap="wrap",
                        id="tag-suggestions",
                    ),
                    spacing="2",
                    align="center",
                    wrap="wrap",
                ),
                on_submit=S.add_tag_by_name,
                reset_on_submit=False,
            ),
        ),
        spacing="2",
        width="100%",
    )


def _message(message: MessageItem) -> rx.Component:
    return rx.hstack(
        rx.badge(message.sender, color_scheme=rx.cond(message.sender_code == "agent", "blue", "gray"), size="1"),
        rx.text(message.text, size="2"),
        rx.spacer(),
        rx.text(message.at, size="1", color_scheme="gray", white_space="nowrap"),
        width="100%",
        align="start",
    )


def _note_actions(item: TimelineItem) -> rx.Component:
    return rx.hstack(
        rx.cond(
            item.can_edit, rx.button(t("common.edit"), size="1", variant="ghost", on_click=S.start_note_edit(item.id))
        ),
        rx.cond(
            item.can_delete,
            rx.alert_dialog.root(
                rx.alert_dialog.trigger(rx.button(t("common.delete"), size="1", variant="ghost", color_scheme="red")),
                rx.alert_dialog.content(
                    rx.alert_dialog.title(t("note.confirm_delete")),
                    rx.alert_dialog.description(item.summary, size="2"),
                    rx.hstack(
                        rx.alert_dialog.cancel(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                        rx.alert_dialog.action(
                            rx.button(t("common.delete"), color_scheme="red", on_click=S.delete_note(item.id))
                        ),
                        justify="end",
                        spacing="3",
                        margin_top="12px",
                    ),
                ),
            ),
        ),
        spacing="1",
    )


def _note_edit_form(item: TimelineItem) -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.text_area(name="text", default_value=item.body, aria_label=t("note.add"), width="100%", rows="3"),
            rx.cond(S.note_error != "", rx.text(S.note_error, color="var(--red-11)", size="1")),
            rx.hstack(
                rx.button(t("common.cancel"), size="1", variant="soft", type="button", on_click=S.cancel_note_edit),
                rx.button(t("common.save"), size="1", type="submit"),
                spacing="2",
            ),
            width="100%",
        ),
        on_submit=S.save_note,
        width="100%",
    )


def _timeline_item(item: TimelineItem) -> rx.Component:
    return rx.box(
        rx.hstack(
            rx.match(
                item.kind,
                *[(kind, rx.icon(icon, size=16, aria_hidden="true")) for kind, icon in KIND_ICONS.items()],
                rx.icon("circle", size=16),
            ),
            rx.text(item.title, weight="medium", size="2"),
            rx.spacer(),
            rx.text(item.at, size="1", color_scheme="gray"),
            align="center",
            width="100%",
        ),
        rx.cond(
            (item.kind == "note") & (S.editing_note_id == item.id),
            _note_edit_form(item),
            rx.text(item.summary, size="2", white_space="pre-wrap"),
        ),
        rx.cond(item.detail != "", rx.text(item.detail, size="1", color_scheme="gray")),
        rx.hstack(
            rx.cond(
                item.expandable,
                rx.button(
                    rx.cond(S.expanded_key == item.key, t("timeline.collapse"), t("timeline.expand")),
                    size="1",
                    variant="ghost",
                    on_click=S.toggle_messages(item.key, item.id),
                ),
            ),
            rx.cond(item.kind == "note", _note_actions(item)),
        ),
        rx.cond(
            S.expanded_key == item.key,
            rx.vstack(
                rx.foreach(S.messages, _message),
                spacing="1",
                padding="8px",
                background="var(--gray-2)",
                border_radius="6px",
                width="100%",
            ),
        ),
        padding_y="10px",
        border_bottom="1px solid var(--gray-4)",
        width="100%",
        class_name="timeline-item",
        data_kind=item.kind,
    )


def note_form() -> rx.Component:
    return rx.cond(
        AppState.perms.contains("customer.edit") & ~S.customer.read_only,
        rx.form(
            rx.vstack(
                rx.text_area(
                    id="note-text",
                    name="text",
                    placeholder=t("note.placeholder"),
                    aria_label=t("note.add"),
                    width="100%",
                    rows="2",
                ),
                rx.cond(
                    (S.note_error != "") & (S.editing_note_id == 0),
                    rx.text(S.note_error, color="var(--red-11)", size="1", role="alert"),
                ),
                rx.button(rx.icon("plus", size=14), t("note.add"), size="2", type="submit", id="note-add"),
                spacing="2",
                width="100%",
                align="end",
            ),
            on_submit=S.add_note,
            reset_on_submit=False,
            width="100%",
        ),
    )


def timeline_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(t("timeline.title"), size="4", as_="h2"),
                rx.spacer(),
                rx.select.root(
                    rx.select.trigger(aria_label=t("timeline.all_kinds"), id="timeline-kind"),
                    rx.select.content(
                        rx.select.item(t("timeline.all_kinds"), value="all"),
                        *[rx.select.item(t(f"timeline.kind.{kind}"), value=kind) for kind in KINDS],
                    ),
                    value=S.kind,
                    on_change=S.set_kind,
                    size="2",
                ),
                width="100%",
                align="center",
            ),
            note_form(),
            rx.cond(
                S.items.length() > 0,
                rx.vstack(rx.foreach(S.items, _timeline_item), spacing="0", width="100%", id="timeline"),
                rx.text(t("timeline.empty"), color_scheme="gray", size="2"),
            ),
            rx.cond(
                S.has_more,
                rx.button(
                    t("timeline.load_more"),
                    variant="soft",
                    on_click=S.load_more,
                    loading=S.loading_more,
                    id="timeline-more",
                ),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )
