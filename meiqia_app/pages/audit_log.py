"""/audit — who did what, when; newest first; chain verification."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.services.audit.reading import AnchorRow, AuditRow
from meiqia_app.state.audit_log import AuditLogState as S


def _result_badge(result) -> rx.Component:
    return rx.match(
        result,
        ("ok", rx.badge(t("audit.result.ok"), color_scheme="green")),
        ("refused", rx.badge(t("audit.result.refused"), color_scheme="red")),
        rx.badge(t("audit.result.failed"), color_scheme="orange"),
    )


# Columns that only repeat what the sentence says give way on narrow screens.
# On phones the time moves into the sentence's cell.
WIDE_ONLY = ["none", "none", "table-cell"]
NARROW_ONLY = ["block", "block", "none"]


def _raw(row: AuditRow) -> rx.Component:
    """The entry as stored (action code, target, details JSON), one click away."""
    return rx.el.details(
        rx.el.summary(t("audit.raw"), class_name="audit-raw-toggle", cursor="pointer", font_size="12px"),
        rx.vstack(
            rx.text(t("audit.raw.action"), ": ", rx.code(row.action, variant="ghost"), size="1"),
            rx.cond(
                row.target != "", rx.text(t("audit.raw.target"), ": ", rx.code(row.target, variant="ghost"), size="1")
            ),
            rx.cond(
                row.details != "",
                rx.el.pre(
                    row.details,
                    font_size="12px",
                    white_space="pre-wrap",
                    word_break="break-all",
                    margin="0",
                    padding="8px",
                    background="var(--gray-3)",
                    border_radius="4px",
                    width="100%",
                ),
                rx.text(t("audit.raw.none"), size="1", color_scheme="gray"),
            ),
            spacing="1",
            padding_top="4px",
            width="100%",
            class_name="audit-raw",
        ),
        color="var(--gray-11)",
    )


def _row(row: AuditRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row.occurred_at, white_space="nowrap", display=WIDE_ONLY),
        rx.table.cell(row.actor, display=WIDE_ONLY),
        rx.table.cell(
            rx.vstack(
                rx.text(row.occurred_at, size="1", color_scheme="gray", display=NARROW_ONLY),
                rx.text(rx.cond(S.is_en, row.sentence_en, row.sentence_zh), size="2", class_name="audit-sentence"),
                _raw(row),
                spacing="1",
                width="100%",
            ),
            min_width="220px",
            max_width="640px",
        ),
        rx.table.cell(
            rx.hstack(
                _result_badge(row.result),
                rx.cond(row.flagged, rx.icon("flag", size=14, color="var(--red-9)")),
                spacing="1",
            )
        ),
        rx.table.cell(row.client_ip, display=WIDE_ONLY),
        class_name="audit-row",
        custom_attrs={"data-action": row.action},
    )


def _filter_input(label_key: str, name: str, input_type: str = "text") -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"audit-{name}", font_size="12px"),
        rx.input(id=f"audit-{name}", name=name, type=input_type, size="2"),
        spacing="1",
    )


def filter_bar() -> rx.Component:
    return rx.form(
        rx.flex(
            _filter_input("audit.filter.actor", "actor"),
            _filter_input("audit.filter.action", "action"),
            _filter_input("audit.filter.target_type", "target_type"),
            _filter_input("audit.filter.target_id", "target_id"),
            rx.vstack(
                rx.el.label(t("audit.filter.result"), html_for="audit-result", font_size="12px"),
                rx.select.root(
                    rx.select.trigger(id="audit-result", aria_label=t("audit.filter.result")),
                    rx.select.content(
                        rx.select.item(t("common.any"), value="any"),
                        rx.select.item(t("audit.result.ok"), value="ok"),
                        rx.select.item(t("audit.result.refused"), value="refused"),
                        rx.select.item(t("audit.result.failed"), value="failed"),
                    ),
                    name="result",
                    default_value="any",
                ),
                spacing="1",
            ),
            _filter_input("audit.filter.date_from", "date_from", "date"),
            _filter_input("audit.filter.date_to", "date_to", "date"),
            rx.el.label(
                rx.hstack(
                    rx.checkbox(
                        name="flagged", value="1", id="audit-flagged", aria_label=t("export.audit.flagged_only")
                    ),
                    rx.text(t("export.audit.flagged_only"), size="2"),
                    spacing="1",
                    align="center",
                )
            ),
            rx.button(rx.icon("filter", size=14), t("common.apply"), type="submit", id="audit-apply"),
            spacing="3",
            wrap="wrap",
            align="end",
        ),
        on_submit=S.apply_filters,
        reset_on_submit=False,
        width="100%",
    )


def _preset_button(name: str, label_key: str, icon: str) -> rx.Component:
    return rx.button(
        rx.icon(icon, size=14),
        t(label_key),
        on_click=S.apply_preset(name),
        variant=rx.cond(S.active_preset == name, "solid", "soft"),
        size="2",
        id=f"audit-preset-{name.replace('_', '-')}",
        data_active=rx.cond(S.active_preset == name, "true", "false"),
    )


def preset_bar() -> rx.Component:
    return rx.hstack(
        rx.text(t("export.audit.presets"), size="2", color_scheme="gray"),
        _preset_button("exports", "export.audit.preset_exports", "file-down"),
        _preset_button("export_alerts", "export.audit.preset_export_alerts", "flag"),
        rx.cond(
            S.active_preset != "",
            rx.button(
                t("export.audit.preset_none"),
                on_click=S.apply_preset(""),
                variant="ghost",
                size="2",
                id="audit-preset-none",
            ),
        ),
        spacing="2",
        align="center",
        wrap="wrap",
    )


def _anchor_row(row: AnchorRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row.at, white_space="nowrap"),
        rx.table.cell(row.id),
        rx.table.cell(rx.code(row.hash, variant="ghost", size="1", style={"word_break": "break-all"})),
        rx.table.cell(
            rx.match(
                row.reason,
                ("nightly", t("audit.anchor.reason.nightly")),
                ("backup", t("audit.anchor.reason.backup")),
                ("restore", t("audit.anchor.reason.restore")),
                t("audit.anchor.reason.manual"),
            )
        ),
        rx.table.cell(
            rx.cond(
                row.valid,
                rx.badge(t("audit.anchor.valid"), color_scheme="green"),
                rx.badge(t("audit.anchor.invalid"), color_scheme="red"),
            )
        ),
        class_name="anchor-row",
    )


def anchors_card() -> rx.Component:
    """The chain's anchors outside the database: to be written down or sent elsewhere."""
    return rx.card(
        rx.vstack(
            rx.heading(t("audit.anchor.title"), size="3", as_="h2"),
            rx.text(t("audit.anchor.hint"), size="2", color_scheme="gray"),
            rx.cond(
                S.anchors.length() == 0,
                rx.text(t("audit.anchor.none"), size="2", color_scheme="gray", id="audit-anchors-none"),
                rx.box(
                    rx.table.root(
                        rx.table.header(
                            rx.table.row(
                                *[
                                    rx.table.column_header_cell(t(key), scope="col")
                                    for key in (
                                        "audit.anchor.col.time",
                                        "audit.anchor.col.entry",
                                        "audit.anchor.col.hash",
                                        "audit.anchor.col.reason",
                                        "audit.anchor.col.check",
                                    )
                                ]
                            )
                        ),
                        rx.table.body(rx.foreach(S.anchors, _anchor_row)),
                        size="1",
                        variant="surface",
                        id="audit-anchors",
                    ),
                    overflow_x="auto",
                    width="100%",
                ),
            ),
            spacing="2",
            width="100%",
        ),
        width="100%",
    )


def audit_page() -> rx.Component:
    return page_shell(
        rx.hstack(
            rx.button(
                rx.icon("shield-check", size=16),
                t("audit.verify"),
                on_click=S.verify,
                variant="soft",
                id="audit-verify",
            ),
            rx.cond(
                S.verify_message != "",
                rx.callout(
                    S.verify_message,
                    icon=rx.cond(S.verify_ok, "check", "triangle-alert"),
                    color_scheme=rx.cond(S.verify_ok, "green", "red"),
                    size="1",
                    id="audit-verify-result",
                    role="status",
                ),
            ),
            align="center",
            spacing="3",
        ),
        anchors_card(),
        preset_bar(),
        filter_bar(),
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell(t("audit.col.time"), scope="col", display=WIDE_ONLY),
                        rx.table.column_header_cell(t("audit.col.actor"), scope="col", display=WIDE_ONLY),
                        rx.table.column_header_cell(t("audit.col.what"), scope="col"),
                        rx.table.column_header_cell(t("audit.col.result"), scope="col"),
                        rx.table.column_header_cell(t("audit.col.ip"), scope="col", display=WIDE_ONLY),
                    )
                ),
                rx.table.body(rx.foreach(S.rows, _row)),
                variant="surface",
                size="1",
                id="audit-table",
            ),
            overflow_x="auto",
            width="100%",
        ),
        rx.hstack(
            rx.button(t("audit.newest"), on_click=S.newest, variant="soft", disabled=S.page_number <= 1),
            rx.text(t("customers.page", page=S.page_number), size="2"),
            rx.button(t("audit.older"), on_click=S.older, variant="soft", disabled=~S.has_older, id="audit-older"),
            spacing="3",
            align="center",
        ),
        title_key="audit.title",
    )
