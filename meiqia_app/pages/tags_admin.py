"""/tags — the tag catalogue, the rule builder and tag hygiene (TAG-1..5)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import confirm_dialog, field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.models.tag import TAG_GROUPS
from meiqia_app.services.tags.catalog import TAG_COLORS, NearDuplicate, TagView
from meiqia_app.services.tags.rules.conditions import FIELDS
from meiqia_app.state.tags_admin import CondRow, Option, RuleRow
from meiqia_app.state.tags_admin import TagsAdminState as S

register_nav(NavItem("/tags", "nav.tags", "tags", "tag.manage", "tags", 10))


def _group_label(group) -> rx.Component:
    return rx.match(group, *[(g, t(f"tagadmin.group.{g}")) for g in TAG_GROUPS], group)


# --- tags table ---------------------------------------------------------------------------


def _tag_row(tag: TagView) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.badge(tag.name, color_scheme=tag.color, variant="soft", size="2")),
        rx.table.cell(_group_label(tag.group)),
        rx.table.cell(rx.text(tag.usage, id="usage-" + tag.id.to_string())),
        rx.table.cell(rx.text(tag.manual, " / ", tag.by_rule, size="2", color_scheme="gray")),
        rx.table.cell(tag.rules),
        rx.table.cell(rx.text(tag.description, size="2")),
        rx.table.cell(tag.last_assigned_at),
        rx.table.cell(
            rx.hstack(
                rx.icon_button(
                    rx.icon("pencil", size=14),
                    size="1",
                    variant="ghost",
                    on_click=S.open_edit(tag.id),
                    aria_label=t("common.edit"),
                    title=t("common.edit"),
                    id="edit-tag-" + tag.id.to_string(),
                ),
                rx.icon_button(
                    rx.icon("merge", size=14),
                    size="1",
                    variant="ghost",
                    on_click=S.open_merge(tag.id),
                    aria_label=t("tagadmin.merge"),
                    title=t("tagadmin.merge"),
                    id="merge-tag-" + tag.id.to_string(),
                ),
                rx.icon_button(
                    rx.icon("trash-2", size=14),
                    size="1",
                    variant="ghost",
                    color_scheme="red",
                    on_click=S.ask_delete(tag.id),
                    aria_label=t("common.delete"),
                    title=t("common.delete"),
                    id="delete-tag-" + tag.id.to_string(),
                ),
                spacing="2",
            ),
        ),
    )


def tags_table() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(t("tagadmin.hint"), size="2", color_scheme="gray"),
            rx.spacer(),
            rx.button(rx.icon("plus", size=16), t("tagadmin.new"), on_click=S.open_create, id="new-tag"),
            width="100%",
            align="center",
        ),
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[
                            rx.table.column_header_cell(t(key), scope="col")
                            for key in (
                                "tagadmin.name",
                                "tagadmin.group",
                                "tagadmin.usage",
                                "tagadmin.manual_rule",
                                "tagadmin.rules",
                                "tagadmin.description",
                                "tagadmin.last_assigned",
                                "common.actions",
                            )
                        ],
                    )
                ),
                rx.table.body(rx.foreach(S.tags, _tag_row)),
                variant="surface",
                id="tag-table",
                width="100%",
            ),
            overflow_x="auto",
            width="100%",
        ),
        width="100%",
        spacing="3",
    )


def _labelled(label_key: str, control: rx.Component, html_for: str, error=None) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=html_for, font_size="14px"),
        control,
        *([field_error(error)] if error is not None else []),
        spacing="1",
        width="100%",
    )


def edit_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(S.edit_id, t("tagadmin.edit"), t("tagadmin.new"))),
            rx.form(
                rx.vstack(
                    _labelled(
                        "tagadmin.name",
                        rx.input(
                            id="tag-name",
                            value=S.edit_name,
                            max_length=32,
                            on_change=lambda v: S.set_edit_field("name", v),
                        ),
                        "tag-name",
                        S.edit_errors.get("name", ""),
                    ),
                    _labelled(
                        "tagadmin.group",
                        rx.select.root(
                            rx.select.trigger(id="tag-group"),
                            rx.select.content(*[rx.select.item(t(f"tagadmin.group.{g}"), value=g) for g in TAG_GROUPS]),
                            value=S.edit_group,
                            on_change=lambda v: S.set_edit_field("group", v),
                        ),
                        "tag-group",
                        S.edit_errors.get("group", ""),
                    ),
                    _labelled(
                        "tagadmin.color",
                        rx.select.root(
                            rx.select.trigger(id="tag-color"),
                            rx.select.content(
                                *[
                                    rx.select.item(rx.badge(c, color_scheme=c, variant="soft"), value=c)
                                    for c in TAG_COLORS
                                ]
                            ),
                            value=S.edit_color,
                            on_change=lambda v: S.set_edit_field("color", v),
                        ),
                        "tag-color",
                        S.edit_errors.get("color", ""),
                    ),
                    _labelled(
                        "tagadmin.description",
                        rx.text_area(
                            id="tag-description",
                            value=S.edit_description,
                            max_length=255,
                            on_change=lambda v: S.set_edit_field("description", v),
                        ),
                        "tag-description",
                        S.edit_errors.get("description", ""),
                    ),
                    form_buttons("tag-save"),
                    spacing="3",
                ),
                on_submit=lambda _form: S.save_tag(),
                reset_on_submit=False,
            ),
        ),
        open=S.edit_open,
        on_open_change=S.set_edit_open,
    )


def _tag_option(option: Option) -> rx.Component:
    return rx.select.item(option.label, value=option.value)


def merge_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("tagadmin.merge_title", name=S.merge_source_name)),
            rx.vstack(
                rx.text(t("tagadmin.merge_hint"), size="2", color_scheme="gray"),
                rx.select.root(
                    rx.select.trigger(placeholder=t("tagadmin.merge_into"), id="merge-target"),
                    rx.select.content(rx.foreach(S.tag_options, _tag_option)),
                    value=S.merge_target,
                    on_change=S.set_merge_target,
                ),
                rx.cond(
                    S.merge_ready,
                    rx.callout.root(
                        rx.callout.text(
                            rx.vstack(
                                rx.text(
                                    t(
                                        "tagadmin.merge_source_count",
                                        name=S.merge_source_name,
                                        count=S.merge_source_count,
                                    )
                                ),
                                rx.text(
                                    t(
                                        "tagadmin.merge_target_count",
                                        name=S.merge_target_name,
                                        count=S.merge_target_count,
                                    )
                                ),
                                rx.text(t("tagadmin.merge_both", count=S.merge_both)),
                                spacing="1",
                            )
                        ),
                        color_scheme=rx.cond(S.merge_needs_confirm, "amber", "gray"),
                        size="1",
                        width="100%",
                        id="merge-counts",
                    ),
                ),
                rx.cond(
                    S.merge_ready & S.merge_needs_confirm,
                    rx.vstack(
                        rx.el.label(
                            t("tagadmin.merge_type_name", name=S.merge_source_name),
                            html_for="merge-confirm",
                            font_size="14px",
                        ),
                        rx.input(
                            id="merge-confirm",
                            value=S.merge_confirm,
                            on_change=S.set_merge_confirm,
                            auto_complete="off",
                            width="100%",
                        ),
                        spacing="1",
                        width="100%",
                    ),
                ),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                    rx.button(t("tagadmin.merge"), on_click=S.merge, disabled=~S.merge_can_submit, id="merge-submit"),
                    justify="end",
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
        ),
        open=S.merge_open,
        on_open_change=S.set_merge_open,
    )


# --- hygiene ------------------------------------------------------------------------------


def _hygiene_tag(tag: TagView) -> rx.Component:
    return rx.hstack(
        rx.badge(tag.name, color_scheme=tag.color, variant="soft"),
        rx.text(t("tagadmin.usage_n", count=tag.usage), size="1", color_scheme="gray"),
        rx.text(tag.last_assigned_at, size="1", color_scheme="gray"),
        rx.icon_button(
            rx.icon("merge", size=14),
            size="1",
            variant="ghost",
            on_click=S.open_merge(tag.id),
            aria_label=t("tagadmin.merge"),
        ),
        rx.icon_button(
            rx.icon("trash-2", size=14),
            size="1",
            variant="ghost",
            color_scheme="red",
            on_click=S.ask_delete(tag.id),
            aria_label=t("common.delete"),
        ),
        spacing="2",
        align="center",
    )


def _duplicate(pair: NearDuplicate) -> rx.Component:
    return rx.hstack(
        rx.badge(pair.a_name, variant="soft"),
        rx.text(t("tagadmin.usage_n", count=pair.a_usage), size="1", color_scheme="gray"),
        rx.text("≈"),
        rx.badge(pair.b_name, variant="soft"),
        rx.text(t("tagadmin.usage_n", count=pair.b_usage), size="1", color_scheme="gray"),
        rx.text(
            rx.cond(pair.reason == "pinyin", t("tagadmin.same_pinyin"), t("tagadmin.similar_spelling")),
            size="1",
            color_scheme="gray",
        ),
        rx.button(
            t("tagadmin.merge_a_into_b"),
            size="1",
            variant="soft",
            on_click=S.open_merge_into(pair.a_id, pair.b_id),
        ),
        spacing="2",
        align="center",
        wrap="wrap",
        class_name="near-duplicate",
    )


def hygiene_tab() -> rx.Component:
    def section(title_key: str, items, render, empty_key: str = "tagadmin.none") -> rx.Component:
        return rx.vstack(
            rx.heading(t(title_key), size="3"),
            rx.cond(
                items.length() > 0,
                rx.vstack(rx.foreach(items, render), spacing="2"),
                rx.text(t(empty_key), size="2", color_scheme="gray"),
            ),
            spacing="2",
            width="100%",
        )

    return rx.vstack(
        rx.hstack(
            rx.el.label(t("tagadmin.idle_days"), html_for="idle-days", font_size="14px"),
            rx.input(id="idle-days", value=S.idle_days, on_change=S.set_idle_days, width="80px"),
            rx.button(t("tagadmin.refresh"), on_click=S.refresh_hygiene, variant="soft"),
            align="center",
            spacing="2",
        ),
        section("tagadmin.unused", S.unused, _hygiene_tag),
        section("tagadmin.stale", S.stale, _hygiene_tag),
        section("tagadmin.duplicates", S.duplicates, _duplicate),
        spacing="4",
        width="100%",
    )


# --- rules --------------------------------------------------------------------------------


def _rule_row(rule: RuleRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.text(rule.name, weight="medium")),
        rx.table.cell(rx.badge(rule.tag_name, color_scheme=rule.tag_color, variant="soft")),
        rx.table.cell(
            rx.vstack(
                rx.text(rule.summary, size="2"),
                rx.cond(rule.flag != "", rx.badge(rule.flag, color_scheme="red", variant="soft")),
                spacing="1",
            )
        ),
        rx.table.cell(rx.cond(rule.mode == "sync", t("rule.mode.sync"), t("rule.mode.add_only"))),
        rx.table.cell(
            rx.switch(checked=rule.enabled, on_change=lambda v: S.toggle_rule(rule.id, v), aria_label=t("rule.enabled"))
        ),
        rx.table.cell(
            rx.vstack(
                rx.text(rule.last_run_at, size="1"), rx.text(rule.last_run, size="1", color_scheme="gray"), spacing="0"
            )
        ),
        rx.table.cell(
            rx.hstack(
                rx.button(
                    t("rule.run_now"),
                    size="1",
                    variant="soft",
                    on_click=S.run_rule(rule.id),
                    disabled=S.job_running,
                    id="run-rule-" + rule.id.to_string(),
                ),
                rx.icon_button(
                    rx.icon("pencil", size=14),
                    size="1",
                    variant="ghost",
                    on_click=S.open_rule(rule.id),
                    aria_label=t("common.edit"),
                    id="edit-rule-" + rule.id.to_string(),
                ),
                rx.icon_button(
                    rx.icon("trash-2", size=14),
                    size="1",
                    variant="ghost",
                    color_scheme="red",
                    on_click=S.delete_rule(rule.id),
                    aria_label=t("common.delete"),
                ),
                spacing="2",
            )
        ),
    )


def job_progress() -> rx.Component:
    return rx.cond(
        S.job_id,
        rx.vstack(
            rx.hstack(
                rx.text(t("rule.job"), size="2"),
                rx.text(S.job_percent, "%", size="2", id="job-percent"),
                rx.text(S.job_status, size="2", color_scheme="gray", id="job-status"),
                spacing="2",
            ),
            rx.progress(value=S.job_percent, max=100, width="100%"),
            rx.text(S.job_result, size="2", id="job-result"),
            width="100%",
            spacing="1",
        ),
    )


def thresholds_card() -> rx.Component:
    def number(label_key: str, which: str, value) -> rx.Component:
        return rx.hstack(
            rx.el.label(t(label_key), html_for=f"lc-{which}", font_size="14px"),
            rx.input(id=f"lc-{which}", value=value, on_change=lambda v: S.set_lc(which, v), width="70px"),
            align="center",
            spacing="1",
        )

    return rx.cond(
        S.perms.contains("settings.manage"),
        rx.card(
            rx.vstack(
                rx.text(t("tagadmin.thresholds"), weight="bold", size="2"),
                rx.text(t("tagadmin.thresholds_hint"), size="1", color_scheme="gray"),
                rx.hstack(
                    number("tagadmin.lc_new", "new", S.lc_new),
                    number("tagadmin.lc_active", "active", S.lc_active),
                    number("tagadmin.lc_churn", "churn", S.lc_churn),
                    rx.button(
                        t("tagadmin.thresholds_save"),
                        size="1",
                        on_click=S.save_thresholds,
                        disabled=S.job_running,
                        id="save-thresholds",
                    ),
                    spacing="4",
                    align="center",
                    wrap="wrap",
                ),
                spacing="2",
            ),
            width="100%",
        ),
    )


def rules_tab() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(t("rule.hint"), size="2", color_scheme="gray"),
            rx.spacer(),
            rx.el.label(t("rule.schedule"), html_for="rule-schedule", font_size="14px"),
            rx.input(id="rule-schedule", value=S.schedule, on_change=S.set_schedule, width="70px", placeholder="02:30"),
            rx.button(t("common.save"), size="1", variant="soft", on_click=S.save_schedule, id="save-schedule"),
            rx.button(
                rx.icon("play", size=16),
                t("rule.run_all"),
                variant="soft",
                on_click=S.run_all,
                disabled=S.job_running,
                id="run-all-rules",
            ),
            rx.button(rx.icon("plus", size=16), t("rule.new"), on_click=S.open_new_rule, id="new-rule"),
            width="100%",
            align="center",
        ),
        job_progress(),
        thresholds_card(),
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[
                            rx.table.column_header_cell(t(k), scope="col")
                            for k in (
                                "rule.name",
                                "rule.tag",
                                "rule.conditions",
                                "rule.mode",
                                "rule.enabled",
                                "rule.last_run_at",
                                "common.actions",
                            )
                        ]
                    )
                ),
                rx.table.body(rx.foreach(S.rules, _rule_row)),
                variant="surface",
                id="rule-table",
                width="100%",
            ),
            overflow_x="auto",
            width="100%",
        ),
        width="100%",
        spacing="3",
    )


def _option_item(option: Option) -> rx.Component:
    return rx.select.item(option.label, value=option.value)


def _condition_row(row: CondRow, index) -> rx.Component:
    return rx.hstack(
        rx.select.root(
            rx.select.trigger(id="cond-field-" + index.to_string(), aria_label=t("rule.field")),
            rx.select.content(
                rx.select.group(*[rx.select.item(t(f"rule.field.{key}"), value=key) for key in FIELDS]),
                rx.cond(
                    S.cf_field_options.length() > 0,
                    rx.select.group(
                        rx.select.label(t("rule.cf_group")),
                        rx.foreach(S.cf_field_options, _option_item),
                    ),
                ),
                rx.cond(
                    row.kind == "cf_gone",
                    rx.select.item(row.field, value=row.field, disabled=True),
                ),
            ),
            value=row.field,
            on_change=lambda v: S.set_row(index, "field", v),
        ),
        rx.select.root(
            rx.select.trigger(id="cond-op-" + index.to_string(), aria_label=t("rule.operator")),
            rx.select.content(rx.foreach(row.ops, _option_item)),
            value=row.op,
            on_change=lambda v: S.set_row(index, "op", v),
        ),
        rx.cond(
            (row.kind == "has") | row.valueless,
            rx.fragment(),
            rx.cond(
                (row.choices.length() > 0) & ((row.op == "eq") | (row.op == "ne")),
                rx.select.root(
                    rx.select.trigger(id="cond-choice-" + index.to_string(), aria_label=t("rule.value")),
                    rx.select.content(rx.foreach(row.choices, _option_item)),
                    value=row.value,
                    on_change=lambda v: S.set_row(index, "value", v),
                ),
                rx.input(
                    value=row.value,
                    on_change=lambda v: S.set_row(index, "value", v),
                    placeholder=rx.cond(
                        row.op == "between",
                        t("rule.cf_placeholder_range"),
                        rx.cond(row.kind == "date", "YYYY-MM-DD", rx.cond(row.kind == "choice", "a,b", "")),
                    ),
                    aria_label=t("rule.value"),
                    id="cond-value-" + index.to_string(),
                    width="120px",
                ),
            ),
        ),
        rx.cond(
            row.product,
            rx.select.root(
                rx.select.trigger(placeholder=t("rule.product"), aria_label=t("rule.product")),
                rx.select.content(rx.foreach(S.products, _option_item)),
                value=row.product_id,
                on_change=lambda v: S.set_row(index, "product_id", v),
            ),
        ),
        rx.cond(
            row.window != "none",
            rx.hstack(
                rx.text(t("rule.within"), size="2"),
                rx.input(
                    value=row.days,
                    on_change=lambda v: S.set_row(index, "days", v),
                    width="70px",
                    aria_label=t("rule.days"),
                    id="cond-days-" + index.to_string(),
                    placeholder=rx.cond(row.window == "optional", t("rule.ever"), ""),
                ),
                rx.text(t("rule.days"), size="2"),
                align="center",
                spacing="1",
            ),
        ),
        rx.icon_button(
            rx.icon("x", size=14),
            size="1",
            variant="ghost",
            on_click=S.remove_row(index),
            aria_label=t("rule.remove_condition"),
        ),
        spacing="2",
        align="center",
        wrap="wrap",
    )


def _sample_row(row: dict) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.link(row["name"], href="/customers/" + row["id"])),
        rx.table.cell(row["city"]),
        rx.table.cell(row["orders"]),
        rx.table.cell(row["spent"]),
        rx.table.cell(rx.cond(row["gains"] == "True", rx.badge(t("rule.gains"), color_scheme="green"), "")),
    )


def rule_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(S.rule_id, t("rule.edit"), t("rule.new"))),
            rx.vstack(
                rx.hstack(
                    _labelled(
                        "rule.name",
                        rx.input(
                            id="rule-name",
                            value=S.rule_name,
                            max_length=64,
                            on_change=lambda v: S.set_rule_field("name", v),
                        ),
                        "rule-name",
                    ),
                    _labelled(
                        "rule.tag",
                        rx.select.root(
                            rx.select.trigger(id="rule-tag"),
                            rx.select.content(rx.foreach(S.tag_options, _tag_option)),
                            value=S.rule_tag,
                            on_change=lambda v: S.set_rule_field("tag", v),
                        ),
                        "rule-tag",
                    ),
                    width="100%",
                    spacing="3",
                ),
                rx.hstack(
                    rx.text(t("rule.match"), size="2"),
                    rx.radio_group.root(
                        rx.hstack(
                            rx.radio_group.item(value="all", id="match-all", aria_label=t("rule.match.all")),
                            rx.text(t("rule.match.all"), size="2"),
                            rx.radio_group.item(value="any", id="match-any", aria_label=t("rule.match.any")),
                            rx.text(t("rule.match.any"), size="2"),
                            spacing="2",
                            align="center",
                        ),
                        value=S.rule_match,
                        on_change=lambda v: S.set_rule_field("match", v),
                    ),
                    rx.spacer(),
                    rx.text(t("rule.mode"), size="2"),
                    rx.radio_group.root(
                        rx.hstack(
                            rx.radio_group.item(
                                value="add_only", id="mode-add-only", aria_label=t("rule.mode.add_only")
                            ),
                            rx.text(t("rule.mode.add_only"), size="2"),
                            rx.radio_group.item(value="sync", id="mode-sync", aria_label=t("rule.mode.sync")),
                            rx.text(t("rule.mode.sync"), size="2"),
                            spacing="2",
                            align="center",
                        ),
                        value=S.rule_mode,
                        on_change=lambda v: S.set_rule_field("mode", v),
                    ),
                    width="100%",
                    align="center",
                    spacing="2",
                ),
                rx.vstack(rx.foreach(S.rows, _condition_row), spacing="2", width="100%", id="conditions"),
                rx.button(
                    rx.icon("plus", size=14),
                    t("rule.add_condition"),
                    size="1",
                    variant="soft",
                    on_click=S.add_row,
                    id="add-condition",
                ),
                field_error(S.rule_error),
                rx.cond(
                    S.preview_ready,
                    rx.vstack(
                        rx.hstack(
                            rx.text(
                                t("rule.preview_matching"),
                                ": ",
                                rx.text.strong(S.preview_matching, id="preview-matching"),
                            ),
                            rx.text(t("rule.preview_gain"), ": ", rx.text.strong(S.preview_gain, id="preview-gain")),
                            rx.text(t("rule.preview_lose"), ": ", rx.text.strong(S.preview_lose, id="preview-lose")),
                            spacing="4",
                        ),
                        rx.table.root(rx.table.body(rx.foreach(S.preview_sample, _sample_row)), size="1", width="100%"),
                        width="100%",
                        spacing="2",
                        id="rule-preview",
                    ),
                ),
                rx.hstack(
                    rx.dialog.close(rx.button(t("common.cancel"), variant="soft", color_scheme="gray")),
                    rx.button(t("rule.preview"), variant="soft", on_click=S.preview, id="rule-preview-button"),
                    rx.button(t("common.save"), on_click=S.save_rule, id="rule-save"),
                    justify="end",
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
            max_width="900px",
        ),
        open=S.rule_open,
        on_open_change=S.set_rule_open,
    )


def tags_admin_page() -> rx.Component:
    return page_shell(
        rx.tabs.root(
            rx.tabs.list(
                rx.tabs.trigger(t("tagadmin.tab.tags"), value="tags", id="tab-tags"),
                rx.tabs.trigger(t("tagadmin.tab.rules"), value="rules", id="tab-rules"),
                rx.tabs.trigger(t("tagadmin.tab.hygiene"), value="hygiene", id="tab-hygiene"),
            ),
            rx.tabs.content(tags_table(), value="tags", padding_top="16px"),
            rx.tabs.content(rules_tab(), value="rules", padding_top="16px"),
            rx.tabs.content(hygiene_tab(), value="hygiene", padding_top="16px"),
            value=S.tab,
            on_change=S.set_tab,
            width="100%",
        ),
        edit_dialog(),
        merge_dialog(),
        rule_dialog(),
        confirm_dialog(
            open_var=S.delete_open,
            on_open_change=S.set_delete_open,
            on_confirm=S.delete_tag,
            title=t("tagadmin.delete_title"),
            message=t("tagadmin.delete_message", name=S.delete_name, count=S.delete_count),
            dialog_id="delete-tag-dialog",
        ),
        title_key="tagadmin.title",
    )
