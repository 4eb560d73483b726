"""/export (the wizard), /exports (history) and /exports/approvals (EXP-1, EXP-5, EXP-8)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.dialogs import field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import SOURCES
from meiqia_app.services.exports.fields import BUILTIN_SPECS, FIELD_GROUPS
from meiqia_app.state.export import ChosenField, ExportApprovalsState, ExportHistoryState, ExportRow, PortabilityState
from meiqia_app.state.export import ExportWizardState as S

register_nav(NavItem("/export", "nav.export", "file-down", "export.request", "export", 10))
register_nav(NavItem("/exports", "nav.export_history", "history", "export.request", "export", 20))
register_nav(NavItem("/exports/approvals", "nav.approvals", "stamp", "export.approve", "export", 30))

STEP_KEYS = ("export.step.scope", "export.step.fields", "export.step.format", "export.step.review", "export.step.run")


def _steps() -> rx.Component:
    return rx.hstack(
        *[
            rx.button(
                rx.text(f"{i}. ", as_="span"),
                t(key),
                variant=rx.cond(S.step == i, "solid", "soft"),
                size="2",
                on_click=S.go(i),
                disabled=(i == 5),
                id=f"export-step-{i}",
            )
            for i, key in enumerate(STEP_KEYS, start=1)
        ],
        spacing="2",
        wrap="wrap",
    )


def _nav_buttons(back: int | None, forward: int | None, forward_key: str = "export.next") -> rx.Component:
    return rx.hstack(
        rx.button(t("common.back"), variant="soft", color_scheme="gray", on_click=S.go(back), id="export-back")
        if back
        else rx.fragment(),
        rx.spacer(),
        rx.button(t(forward_key), on_click=S.go(forward), id="export-next") if forward else rx.fragment(),
        width="100%",
        margin_top="16px",
    )


# --- step 1 -----------------------------------------------------------------------------------


def _choice_boxes(values, label_prefix: str, chosen, toggle, id_prefix: str) -> rx.Component:
    """One checkbox per value of a multi-choice scope filter (``chosen``: the state's list var)."""
    return rx.hstack(
        *[
            rx.checkbox(
                t(f"{label_prefix}.{value}"),
                checked=chosen.contains(value),
                on_change=lambda checked, value=value: toggle(value, checked),
                id=f"{id_prefix}-{value}",
            )
            for value in values
        ],
        wrap="wrap",
        spacing="3",
    )


def _scope_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("export.step.scope"), size="4", as_="h2"),
        rx.radio_group.root(
            rx.vstack(
                rx.hstack(
                    rx.radio_group.item(value="all", id="scope-all", aria_label=t("export.scope.option_all")),
                    rx.text(t("export.scope.option_all")),
                    align="center",
                ),
                rx.hstack(
                    rx.radio_group.item(
                        value="current",
                        id="scope-current",
                        disabled=S.current_filter_text == "",
                        aria_label=t("export.scope.option_current"),
                    ),
                    rx.text(t("export.scope.option_current")),
                    rx.cond(
                        S.current_filter_text != "",
                        rx.code(S.current_filter_text, size="1", id="current-filter-text"),
                        rx.text(t("export.scope.no_current"), size="1", color_scheme="gray"),
                    ),
                    align="center",
                ),
                rx.hstack(
                    rx.radio_group.item(
                        value="view",
                        id="scope-view",
                        disabled=S.views.length() == 0,
                        aria_label=t("export.scope.option_view"),
                    ),
                    rx.text(t("export.scope.option_view")),
                    align="center",
                ),
                rx.hstack(
                    rx.radio_group.item(
                        value="ticked",
                        id="scope-ticked",
                        disabled=S.ticked_count == 0,
                        aria_label=t("export.scope.option_ticked", count=S.ticked_count),
                    ),
                    rx.text(t("export.scope.option_ticked", count=S.ticked_count), id="ticked-text"),
                    align="center",
                ),
                spacing="2",
            ),
            value=S.scope,
            on_change=S.set_scope,
            name="scope",
        ),
        rx.cond(
            S.scope == "view",
            rx.select.root(
                rx.select.trigger(
                    placeholder=t("export.scope.choose_view"),
                    id="view-select",
                    aria_label=t("export.scope.choose_view"),
                ),
                rx.select.content(rx.foreach(S.views, lambda v: rx.select.item(v["name"], value=v["id"]))),
                value=S.view_id,
                on_change=S.set_view_id,
            ),
        ),
        rx.cond(
            S.scope == "all",
            rx.card(
                rx.vstack(
                    rx.text(t("export.scope.quick"), weight="bold", size="2"),
                    rx.hstack(
                        rx.select.root(
                            rx.select.trigger(id="date-field", aria_label=t("label.date_field")),
                            rx.select.content(
                                rx.select.item(t("export.date.registered"), value="registered"),
                                rx.select.item(t("export.date.active"), value="active"),
                                rx.select.item(t("export.date.purchase"), value="purchase"),
                            ),
                            value=S.date_field,
                            on_change=S.set_date_field,
                        ),
                        rx.select.root(
                            rx.select.trigger(id="date-range", aria_label=t("label.date_range")),
                            rx.select.content(
                                rx.select.item(t("common.any"), value="none"),
                                rx.select.item(t("export.range.last30"), value="last30"),
                                rx.select.item(t("export.range.last_month"), value="last_month"),
                                rx.select.item(t("export.range.custom"), value="custom"),
                            ),
                            value=rx.cond(S.date_range == "", "none", S.date_range),
                            on_change=S.set_date_range,
                        ),
                        rx.cond(
                            S.date_range == "custom",
                            rx.hstack(
                                rx.input(
                                    type="date", on_change=S.set_date_from, id="date-from", aria_label=t("common.from")
                                ),
                                rx.input(type="date", on_change=S.set_date_to, id="date-to", aria_label=t("common.to")),
                            ),
                        ),
                        spacing="2",
                        wrap="wrap",
                    ),
                    rx.text(t("export.scope.sources"), weight="bold", size="2"),
                    _choice_boxes(SOURCES, "source", S.sources, S.toggle_source, "source"),
                    rx.text(t("export.scope.order_statuses"), weight="bold", size="2"),
                    _choice_boxes(
                        ORDER_STATUSES, "order_status", S.order_statuses, S.toggle_order_status, "order-status"
                    ),
                    spacing="2",
                ),
                width="100%",
            ),
        ),
        rx.hstack(
            rx.text(t("export.purpose"), weight="bold", size="2"),
            rx.select.root(
                rx.select.trigger(id="purpose", aria_label=t("export.purpose")),
                rx.select.content(
                    rx.select.item(t("export.purpose.analysis"), value="analysis"),
                    rx.select.item(t("export.purpose.marketing"), value="marketing"),
                    rx.select.item(t("export.purpose.service"), value="service"),
                ),
                value=S.purpose,
                on_change=S.set_purpose,
            ),
            rx.cond(
                S.purpose == "marketing", rx.text(t("export.purpose.marketing_note"), size="1", color_scheme="gray")
            ),
            align="center",
            spacing="2",
        ),
        _nav_buttons(None, 2),
        spacing="3",
        width="100%",
    )


# --- step 2 -----------------------------------------------------------------------------------


def _field_box(key: str) -> rx.Component:
    spec = BUILTIN_SPECS[key]
    blocked = S.blocked.contains(key)
    return rx.hstack(
        rx.checkbox(
            t(f"export.field.{key}"),
            checked=S.chosen.contains(key),
            disabled=blocked,
            on_change=lambda checked: S.toggle_field(key, checked),
            id=f"field-{key}",
        ),
        rx.cond(
            spec.sensitive,
            rx.badge(t("export.sensitive"), color_scheme="orange", size="1", title=t("export.sensitive_hint")),
        )
        if spec.sensitive
        else rx.fragment(),
        rx.cond(blocked, rx.text(S.blocked[key], size="1", color_scheme="gray", id=f"field-reason-{key}")),
        align="center",
        spacing="2",
    )


def _custom_field_box(item) -> rx.Component:
    """A custom field in the picker (by its label in the page's language), under its group's name."""
    blocked = S.blocked.contains(item.key)
    return rx.vstack(
        rx.cond(item.first_in_group, rx.text(item.group, weight="bold", size="2", margin_top="6px")),
        rx.hstack(
            rx.checkbox(
                item.label,
                checked=S.chosen.contains(item.key),
                disabled=blocked,
                on_change=lambda checked: S.toggle_field(item.key, checked),
                id=item.dom_id,
            ),
            rx.cond(
                item.sensitive,
                rx.badge(t("export.sensitive"), color_scheme="orange", size="1", title=t("export.sensitive_hint")),
            ),
            rx.cond(blocked, rx.text(S.blocked[item.key], size="1", color_scheme="gray")),
            align="center",
            spacing="2",
        ),
        spacing="0",
    )


def _chosen_row(field: ChosenField) -> rx.Component:
    return rx.hstack(
        rx.text(field.label, size="2", min_width="120px"),
        rx.cond(field.masked, rx.badge(t("export.masked"), size="1", color_scheme="gray")),
        rx.spacer(),
        rx.icon_button(
            rx.icon("arrow-up", size=14),
            size="1",
            variant="ghost",
            on_click=S.move_field(field.key, -1),
            aria_label=t("export.move_up"),
            id="up-" + field.key,
        ),
        rx.icon_button(
            rx.icon("arrow-down", size=14),
            size="1",
            variant="ghost",
            on_click=S.move_field(field.key, 1),
            aria_label=t("export.move_down"),
            id="down-" + field.key,
        ),
        width="100%",
        align="center",
    )


def _fields_step() -> rx.Component:
    groups = []
    for group in FIELD_GROUPS:
        keys = [k for k, spec in BUILTIN_SPECS.items() if spec.group == group]
        if not keys:
            continue
        groups.append(
            rx.box(
                rx.text(t(f"export.group.{group}"), weight="bold", size="2"),
                rx.vstack(*[_field_box(k) for k in keys], spacing="1"),
                margin_bottom="12px",
            )
        )
    return rx.vstack(
        rx.heading(t("export.step.fields"), size="4", as_="h2"),
        rx.text(t("export.fields.hint"), size="2", color_scheme="gray"),
        rx.grid(
            rx.box(
                rx.grid(*groups, columns="2", spacing="4"),
                rx.cond(
                    S.custom_choices.length() > 0,
                    rx.box(
                        rx.text(t("export.group.cf"), weight="bold", size="3"),
                        rx.vstack(rx.foreach(S.custom_choices, _custom_field_box), spacing="1"),
                        margin_top="8px",
                        id="custom-fields",
                    ),
                ),
            ),
            rx.card(
                rx.vstack(
                    rx.hstack(
                        rx.text(t("export.fields.order"), weight="bold", size="2"),
                        rx.spacer(),
                        rx.button(
                            t("export.fields.minimal"),
                            size="1",
                            variant="soft",
                            on_click=S.minimal_fields,
                            id="fields-minimal",
                        ),
                    ),
                    rx.foreach(S.chosen_rows, _chosen_row),
                    spacing="1",
                    width="100%",
                ),
            ),
            columns="2fr 1fr",
            spacing="4",
            width="100%",
        ),
        _nav_buttons(1, 3),
        spacing="3",
        width="100%",
    )


# --- step 3 -----------------------------------------------------------------------------------


def _format_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("export.step.format"), size="4", as_="h2"),
        rx.hstack(
            rx.text(t("export.sort_by"), weight="bold", size="2"),
            rx.select.root(
                rx.select.trigger(id="sort-field", aria_label=t("export.sort_by")),
                rx.select.content(rx.foreach(S.sort_options, lambda o: rx.select.item(o["label"], value=o["key"]))),
                value=S.sort_field,
                on_change=S.set_sort_field,
            ),
            rx.select.root(
                rx.select.trigger(id="sort-dir", aria_label=t("label.sort_direction")),
                rx.select.content(
                    rx.select.item(t("export.asc"), value="asc"), rx.select.item(t("export.desc"), value="desc")
                ),
                value=S.sort_dir,
                on_change=S.set_sort_dir,
            ),
            align="center",
            spacing="2",
        ),
        rx.text(t("export.format"), weight="bold", size="2"),
        rx.radio_group.root(
            rx.vstack(
                rx.hstack(
                    rx.radio_group.item(value="csv", id="format-csv", aria_label=t("export.format.csv")),
                    rx.text(t("export.format.csv")),
                    align="center",
                ),
                rx.hstack(
                    rx.radio_group.item(value="xlsx", id="format-xlsx", aria_label=t("export.format.xlsx")),
                    rx.text(t("export.format.xlsx")),
                    align="center",
                ),
                rx.hstack(
                    rx.radio_group.item(
                        value="pdf", id="format-pdf", aria_label=t("export.format.pdf", limit=S.pdf_max_rows)
                    ),
                    rx.text(t("export.format.pdf", limit=S.pdf_max_rows)),
                    align="center",
                ),
                spacing="2",
            ),
            value=S.fmt,
            on_change=S.set_fmt,
            name="format",
        ),
        rx.callout(t("export.protect.note"), icon="lock", size="1"),
        _nav_buttons(2, 4, "export.to_review"),
        spacing="3",
        width="100%",
    )


# --- step 4 -----------------------------------------------------------------------------------


def _review_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("export.step.review"), size="4", as_="h2"),
        rx.cond(
            S.reviewed,
            rx.vstack(
                rx.data_list.root(
                    rx.data_list.item(
                        rx.data_list.label(t("export.meta.scope")),
                        rx.data_list.value(S.review_scope, id="review-scope"),
                    ),
                    rx.data_list.item(
                        rx.data_list.label(t("export.review.rows")), rx.data_list.value(S.review_rows, id="review-rows")
                    ),
                    rx.data_list.item(
                        rx.data_list.label(t("export.review.size")), rx.data_list.value(S.review_size, id="review-size")
                    ),
                    rx.data_list.item(rx.data_list.label(t("export.format")), rx.data_list.value(S.fmt.upper())),
                ),
                rx.cond(
                    S.review_notice != "",
                    rx.callout(S.review_notice, icon="info", color_scheme="gray", id="review-skipped"),
                ),
                rx.cond(
                    S.review_allowed,
                    rx.callout(t("export.review.allowed"), icon="check", color_scheme="green", id="review-allowed"),
                    rx.callout(
                        rx.vstack(
                            rx.text(t("export.review.refused")),
                            rx.foreach(S.review_reasons, lambda r: rx.text("• ", r, size="2")),
                        ),
                        icon="ban",
                        color_scheme="red",
                        id="review-refused",
                    ),
                ),
                rx.cond(
                    S.review_needs_approval,
                    rx.callout(
                        t("export.review.needs_approval"),
                        icon="stamp",
                        color_scheme="orange",
                        id="review-needs-approval",
                    ),
                ),
                rx.form(
                    rx.vstack(
                        rx.text(
                            rx.cond(
                                S.review_password_required, t("export.password.required"), t("export.password.optional")
                            ),
                            size="2",
                        ),
                        rx.hstack(
                            rx.input(
                                name="password",
                                type="password",
                                placeholder=t("export.password"),
                                auto_complete="new-password",
                                id="export-password",
                            ),
                            rx.input(
                                name="password_confirm",
                                type="password",
                                placeholder=t("export.password_confirm"),
                                auto_complete="new-password",
                                id="export-password-confirm",
                            ),
                        ),
                        field_error(S.password_error),
                        rx.hstack(
                            rx.button(
                                t("common.back"), type="button", variant="soft", color_scheme="gray", on_click=S.go(3)
                            ),
                            rx.spacer(),
                            rx.button(
                                rx.cond(S.review_needs_approval, t("export.submit_for_approval"), t("export.run")),
                                type="submit",
                                disabled=~S.review_allowed,
                                id="export-run",
                            ),
                            width="100%",
                        ),
                        spacing="2",
                        width="100%",
                    ),
                    on_submit=S.run,
                    reset_on_submit=True,
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
            rx.spinner(),
        ),
        spacing="3",
        width="100%",
    )


# --- step 5 -----------------------------------------------------------------------------------


def _run_step() -> rx.Component:
    return rx.vstack(
        rx.heading(t("export.step.run"), size="4", as_="h2"),
        rx.hstack(
            rx.text(t("export.status")),
            rx.badge(S.run_status_label, id="export-status", custom_attrs={"data-status": S.run_status}),
            align="center",
        ),
        rx.cond(
            (S.run_status == "queued") | (S.run_status == "running"),
            rx.vstack(
                rx.progress(value=S.run_percent, max=100, width="100%", id="export-progress"),
                rx.text(t("export.progress", done=S.run_done, total=S.run_total), size="2"),
                rx.button(
                    t("common.cancel"), color_scheme="red", variant="soft", on_click=S.cancel, id="export-cancel"
                ),
                rx.text(t("export.leave_ok"), size="1", color_scheme="gray"),
                width="100%",
            ),
        ),
        rx.cond(
            S.run_status == "pending_approval",
            rx.callout(t("export.pending_live"), icon="stamp", color_scheme="orange", id="export-pending"),
        ),
        rx.cond(
            (S.run_approver != "") & (S.run_status != "pending_approval"),
            rx.callout.root(
                rx.callout.icon(rx.cond(S.run_status == "rejected", rx.icon("circle-x"), rx.icon("circle-check"))),
                rx.callout.text(
                    rx.cond(
                        S.run_status == "rejected",
                        t("export.rejected_by", approver=S.run_approver),
                        t("export.approved_by", approver=S.run_approver),
                    )
                ),
                rx.cond(S.run_comment != "", rx.callout.text(t("export.decision_comment", comment=S.run_comment))),
                color_scheme=rx.cond(S.run_status == "rejected", "red", "green"),
                id="export-decision",
                role="status",
                width="100%",
            ),
        ),
        rx.cond(
            S.run_status == "approved",
            rx.form(
                rx.vstack(
                    rx.text(t("export.approved_needs_password"), size="2"),
                    rx.input(
                        name="password",
                        type="password",
                        placeholder=t("export.password"),
                        auto_complete="new-password",
                        id="approved-password",
                        max_width="320px",
                        width="100%",
                    ),
                    field_error(S.password_error),
                    rx.button(t("export.run"), type="submit", id="approved-start"),
                    spacing="2",
                    width="100%",
                ),
                on_submit=S.start_approved,
                reset_on_submit=True,
                width="100%",
            ),
        ),
        rx.cond(S.run_error != "", rx.callout(S.run_error, icon="triangle-alert", color_scheme="red")),
        rx.cond(
            S.run_downloadable,
            rx.button(rx.icon("download", size=16), t("export.download"), on_click=S.download, id="export-download"),
        ),
        rx.hstack(
            rx.link(t("nav.export_history"), href="/exports", id="to-history"),
            rx.button(t("export.new"), variant="soft", on_click=S.restart, id="export-new"),
            spacing="4",
            align="center",
        ),
        spacing="3",
        width="100%",
    )


def export_page() -> rx.Component:
    return page_shell(
        rx.vstack(
            _steps(),
            rx.card(
                rx.match(
                    S.step,
                    (1, _scope_step()),
                    (2, _fields_step()),
                    (3, _format_step()),
                    (4, _review_step()),
                    (5, _run_step()),
                    _scope_step(),
                ),
                width="100%",
            ),
            spacing="4",
            width="100%",
        ),
        title_key="nav.export",
    )


# --- history ------------------------------------------------------------------------------------


def _history_row(row: ExportRow) -> rx.Component:
    H = ExportHistoryState
    return rx.table.row(
        rx.table.cell(row.id),
        rx.table.cell(row.created_at),
        rx.table.cell(
            rx.badge(
                row.status_label, custom_attrs={"data-status": row.status}, id="history-status-" + row.id.to_string()
            )
        ),
        rx.table.cell(rx.hstack(rx.text(row.format), rx.cond(row.protected, rx.icon("lock", size=14)), align="center")),
        rx.table.cell(rx.text(row.scope_text, size="1"), max_width="260px"),
        rx.table.cell(row.rows),
        rx.table.cell(
            rx.cond(
                (row.status == "running") | (row.status == "queued"),
                rx.progress(value=row.percent, max=100, width="80px"),
                row.size_text,
            )
        ),
        rx.table.cell(rx.text(row.sha256[:12], size="1", title=row.sha256, font_family="monospace")),
        rx.table.cell(row.expires_at),
        rx.table.cell(
            rx.hstack(
                rx.cond(
                    row.downloadable,
                    rx.button(
                        rx.icon("download", size=14),
                        t("export.download"),
                        size="1",
                        on_click=H.download(row.id),
                        id="download-" + row.id.to_string(),
                    ),
                ),
                rx.cond(
                    row.cancellable,
                    rx.button(
                        t("common.cancel"),
                        size="1",
                        variant="soft",
                        color_scheme="red",
                        on_click=H.cancel(row.id),
                        id="cancel-" + row.id.to_string(),
                    ),
                ),
                rx.cond(
                    row.needs_password,
                    rx.form(
                        rx.hstack(
                            rx.el.input(type="hidden", name="export_id", value=row.id.to_string()),
                            rx.input(
                                name="password",
                                type="password",
                                size="1",
                                placeholder=t("export.password"),
                                auto_complete="new-password",
                            ),
                            rx.button(t("export.run"), size="1", type="submit"),
                        ),
                        on_submit=H.start_with_password,
                        reset_on_submit=True,
                    ),
                ),
                rx.cond(
                    row.rerunnable,
                    rx.form(
                        rx.hstack(
                            rx.el.input(type="hidden", name="export_id", value=row.id.to_string()),
                            rx.cond(
                                row.protected,
                                rx.input(
                                    name="password",
                                    type="password",
                                    size="1",
                                    placeholder=t("export.password"),
                                    auto_complete="new-password",
                                ),
                            ),
                            rx.button(
                                rx.icon("rotate-cw", size=14),
                                t("export.rerun"),
                                size="1",
                                variant="soft",
                                type="submit",
                                id="rerun-" + row.id.to_string(),
                            ),
                        ),
                        on_submit=H.rerun,
                        reset_on_submit=True,
                    ),
                ),
                rx.cond(row.error != "", rx.text(row.error, size="1", color_scheme="red")),
                rx.cond(row.comment != "", rx.text(row.approver, ": ", row.comment, size="1", color_scheme="gray")),
                spacing="2",
                align="center",
            ),
        ),
    )


def export_history_page() -> rx.Component:
    H = ExportHistoryState
    return page_shell(
        rx.vstack(
            rx.hstack(
                rx.text(t("export.history.hint", hours=H.ttl_hours), size="2", color_scheme="gray"),
                rx.spacer(),
                rx.link(rx.button(t("nav.export")), href="/export"),
            ),
            rx.cond(
                H.exports.length() > 0,
                rx.table.root(
                    rx.table.header(
                        rx.table.row(
                            *[
                                rx.table.column_header_cell(t(k), scope="col")
                                for k in (
                                    "export.col.id",
                                    "export.col.created",
                                    "export.status",
                                    "export.format",
                                    "export.meta.scope",
                                    "export.meta.row_count",
                                    "export.col.size",
                                    "export.col.sha256",
                                    "export.col.expires",
                                    "common.actions",
                                )
                            ]
                        )
                    ),
                    rx.table.body(rx.foreach(H.exports, _history_row)),
                    width="100%",
                    id="export-history",
                ),
                rx.text(t("common.empty"), color_scheme="gray"),
            ),
            spacing="3",
            width="100%",
        ),
        title_key="nav.export_history",
    )


# --- approvals ------------------------------------------------------------------------------------


def _approval_fact(label_key: str, value, **props) -> rx.Component:
    return rx.vstack(
        rx.text(t(label_key), size="1", color_scheme="gray"),
        rx.text(value, size="2", **props),
        spacing="0",
        min_width="0",
    )


def _approval_row(row: ExportRow) -> rx.Component:
    """One request as a card: who, what for, what, how much, and the two buttons
    (a card reads on a phone as well as on a wide screen; a 9-column table does not)."""
    A = ExportApprovalsState
    return rx.card(
        rx.vstack(
            rx.flex(
                rx.hstack(
                    rx.text("#", row.id, weight="bold"),
                    rx.text(row.requested_by, weight="medium"),
                    rx.text(row.created_at, size="1", color_scheme="gray"),
                    spacing="2",
                    align="center",
                    wrap="wrap",
                ),
                rx.spacer(),
                rx.hstack(
                    rx.button(
                        t("export.approve"),
                        size="2",
                        color_scheme="green",
                        on_click=A.ask(row.id, True),
                        id="approve-" + row.id.to_string(),
                    ),
                    rx.button(
                        t("export.reject"),
                        size="2",
                        color_scheme="red",
                        variant="soft",
                        on_click=A.ask(row.id, False),
                        id="reject-" + row.id.to_string(),
                    ),
                    spacing="2",
                ),
                spacing="3",
                align="center",
                wrap="wrap",
                width="100%",
            ),
            rx.grid(
                _approval_fact("export.purpose", row.purpose, weight="medium", class_name="approval-purpose"),
                _approval_fact("export.meta.row_count", row.rows),
                rx.vstack(
                    rx.text(t("export.format"), size="1", color_scheme="gray"),
                    rx.hstack(
                        rx.text(row.format, size="2"), rx.cond(row.protected, rx.icon("lock", size=14)), align="center"
                    ),
                    spacing="0",
                ),
                _approval_fact("export.meta.scope", row.scope_text, style={"overflow_wrap": "anywhere"}),
                rx.box(
                    _approval_fact("export.meta.fields", row.fields_text, style={"overflow_wrap": "anywhere"}),
                    grid_column="1 / -1",
                ),
                columns=rx.breakpoints(initial="2", md="4"),
                spacing="3",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        class_name="approval-card",
        custom_attrs={"data-export-id": row.id},
    )


def export_approvals_page() -> rx.Component:
    A = ExportApprovalsState
    return page_shell(
        rx.vstack(
            rx.cond(
                A.pending.length() > 0,
                rx.vstack(rx.foreach(A.pending, _approval_row), spacing="3", width="100%", id="approvals-table"),
                rx.text(t("export.approvals.empty"), color_scheme="gray", id="approvals-empty"),
            ),
            rx.dialog.root(
                rx.dialog.content(
                    rx.dialog.title(rx.cond(A.decide_approve, t("export.approve"), t("export.reject"))),
                    rx.form(
                        rx.vstack(
                            rx.text_area(
                                name="comment",
                                placeholder=t("export.comment"),
                                id="decision-comment",
                                max_length=500,
                                width="100%",
                            ),
                            form_buttons("decision-submit", submit_key="common.confirm"),
                            spacing="3",
                        ),
                        on_submit=A.decide,
                        reset_on_submit=True,
                    ),
                ),
                open=A.decide_open,
                on_open_change=A.set_decide_open,
            ),
            spacing="3",
            width="100%",
        ),
        title_key="nav.approvals",
    )


# --- per-customer portability ----------------------------------------------------------------------


def portability_button(customer_id) -> rx.Component:
    """A button + dialog exporting everything about one customer (JSON + XLSX zip).
    For the customer detail page: ``portability_button(CustomerDetailState.customer.id)``."""
    P = PortabilityState
    return rx.fragment(
        rx.button(
            rx.icon("package", size=14),
            t("export.portability"),
            size="2",
            variant="soft",
            on_click=P.ask(customer_id),
            id="portability-open",
        ),
        rx.dialog.root(
            rx.dialog.content(
                rx.dialog.title(t("export.portability")),
                rx.dialog.description(t("export.portability.hint"), size="2"),
                rx.form(
                    rx.vstack(
                        rx.input(
                            name="password",
                            type="password",
                            placeholder=t("export.password"),
                            auto_complete="new-password",
                            id="portability-password",
                        ),
                        field_error(P.error),
                        form_buttons("portability-submit", submit_key="export.run"),
                        spacing="3",
                    ),
                    on_submit=P.submit,
                    reset_on_submit=True,
                ),
            ),
            open=P.open,
            on_open_change=P.set_open,
        ),
    )
