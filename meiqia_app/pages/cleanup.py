"""/cleanup — criteria → dry run → action → typed confirmation → progress → report (CLEAN-1..7),
and /cleanup/archive — archived and trashed customers."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.services.cleanup.criteria import ACTIONS, INACTIVE_MONTHS, MATCH_MODES, SCOPES
from meiqia_app.services.privacy.mentions import MAX_CUSTOMERS as MAX_MENTION_CUSTOMERS
from meiqia_app.state.cleanup import ArchiveState as A
from meiqia_app.state.cleanup import CleanupState as S
from meiqia_app.state.cleanup import EffectView, MentionView, Option, ParkedView, SampleView

register_nav(NavItem("/cleanup", "nav.cleanup", "eraser", "cleanup.run", "data", 10))
register_nav(NavItem("/cleanup/archive", "nav.archive", "archive", "customer.archive", "data", 20))


def _flag(name: str) -> rx.Component:
    return rx.el.label(
        rx.hstack(
            rx.checkbox(
                checked=getattr(S, name),
                on_change=lambda value: S.set_flag(name, value),
                id=f"crit-{name}",
                aria_label=t(f"cleanup.crit.{name}"),
            ),
            rx.text(t(f"cleanup.crit.{name}"), size="2"),
            align="center",
            spacing="2",
        ),
    )


def _select(name: str, label_key: str, value, options: list[tuple[str, rx.Var | str]], select_id: str) -> rx.Component:
    return rx.vstack(
        rx.text(t(label_key), size="2", weight="medium"),
        rx.select.root(
            rx.select.trigger(id=select_id, aria_label=t(label_key), min_width="180px"),
            rx.select.content(*[rx.select.item(label, value=code) for code, label in options]),
            value=value,
            on_change=lambda v: S.set_choice(name, v),
        ),
        spacing="1",
    )


def _option_item(option: Option) -> rx.Component:
    return rx.select.item(option.label, value=option.value)


def criteria_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("cleanup.step.criteria"), size="4", as_="h2"),
            rx.hstack(
                _select(
                    "inactive_months",
                    "cleanup.crit.inactive",
                    S.inactive_months,
                    [("0", t("common.none"))] + [(str(m), t("cleanup.months", n=m)) for m in INACTIVE_MONTHS],
                    "crit-inactive",
                ),
                rx.vstack(
                    rx.text(t("cleanup.crit.view"), size="2", weight="medium"),
                    rx.select.root(
                        rx.select.trigger(id="crit-view", aria_label=t("cleanup.crit.view"), min_width="180px"),
                        rx.select.content(
                            rx.select.item(t("common.none"), value="0"), rx.foreach(S.views, _option_item)
                        ),
                        value=S.view_id,
                        on_change=lambda v: S.set_choice("view_id", v),
                    ),
                    spacing="1",
                ),
                _select(
                    "match", "cleanup.match", S.match, [(m, t(f"cleanup.match.{m}")) for m in MATCH_MODES], "crit-match"
                ),
                _select("scope", "cleanup.scope", S.scope, [(s, t(f"status.{s}")) for s in SCOPES], "crit-scope"),
                spacing="5",
                wrap="wrap",
            ),
            rx.hstack(
                *[_flag(name) for name in ("no_contact", "invalid_contact", "erasure_pending", "duplicates")],
                spacing="5",
                wrap="wrap",
            ),
            rx.hstack(
                _select(
                    "action",
                    "cleanup.action",
                    S.action,
                    [(a, t(f"cleanup.action.{a}")) for a in ACTIONS],
                    "cleanup-action",
                ),
                rx.cond(
                    S.action == "tag",
                    rx.vstack(
                        rx.text(t("cleanup.tag"), size="2", weight="medium"),
                        rx.select.root(
                            rx.select.trigger(id="cleanup-tag", aria_label=t("cleanup.tag"), min_width="180px"),
                            rx.select.content(rx.foreach(S.tag_options, _option_item)),
                            value=S.tag_id,
                            on_change=lambda v: S.set_choice("tag_id", v),
                        ),
                        spacing="1",
                    ),
                ),
                rx.spacer(),
                rx.button(
                    rx.icon("scan-search", size=16),
                    t("cleanup.dry_run"),
                    on_click=S.run_dry,
                    loading=S.busy,
                    id="cleanup-dry-run",
                ),
                align="end",
                width="100%",
            ),
            spacing="4",
            width="100%",
        ),
        width="100%",
    )


def _sample_row(row: SampleView) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.link(row.id, href="/customers/" + row.id.to_string())),
        rx.table.cell(row.name),
        rx.table.cell(row.phone),
        rx.table.cell(row.email),
        rx.table.cell(row.status),
        rx.table.cell(row.last_active),
        rx.table.cell(row.reasons),
    )


def _effect_row(row: EffectView) -> rx.Component:
    return rx.table.row(rx.table.cell(row.table), rx.table.cell(row.rows))


def _mention_row(row: MentionView) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.checkbox(
                checked=row.selected,
                on_change=lambda value: S.toggle_mention(row.key, value),
                id="mention-" + row.key.replace(":", "-"),
                aria_label=t("cleanup.mentions.redact_this"),
            )
        ),
        rx.table.cell(rx.text(row.kind, " #", row.record_id.to_string(), size="2")),
        rx.table.cell(rx.link("#" + row.customer_id.to_string(), href="/customers/" + row.customer_id.to_string())),
        rx.table.cell(row.erased),
        rx.table.cell(row.fields),
        rx.table.cell(rx.text(row.snippet, size="1", style={"word_break": "break-all"}), max_width="420px"),
        class_name="mention-row",
    )


def mentions_section() -> rx.Component:
    """Erasure: other customers' notes and messages naming the customers; tick the ones to redact."""
    return rx.vstack(
        rx.heading(t("cleanup.mentions.title"), size="3", as_="h3"),
        rx.cond(
            ~S.mentions_searched,
            rx.callout(
                t("cleanup.mentions.not_searched", max=str(MAX_MENTION_CUSTOMERS)),
                icon="info",
                color_scheme="gray",
                size="1",
                id="mentions-not-searched",
            ),
            rx.cond(
                S.mentions.length() == 0,
                rx.text(t("cleanup.mentions.none"), size="2", color_scheme="gray", id="mentions-none"),
                rx.vstack(
                    rx.text(t("cleanup.mentions.hint"), size="2"),
                    rx.hstack(
                        rx.button(
                            t("cleanup.mentions.select_all"),
                            size="1",
                            variant="soft",
                            on_click=S.select_all_mentions(True),
                        ),
                        rx.button(
                            t("cleanup.mentions.select_none"),
                            size="1",
                            variant="soft",
                            color_scheme="gray",
                            on_click=S.select_all_mentions(False),
                        ),
                        rx.text(
                            t("cleanup.mentions.selected", count=S.mentions_selected.to_string()),
                            size="2",
                            id="mentions-selected",
                        ),
                        spacing="2",
                        align="center",
                    ),
                    rx.table.root(
                        rx.table.header(
                            rx.table.row(
                                rx.table.column_header_cell(t("cleanup.mentions.col.redact"), scope="col"),
                                *[
                                    rx.table.column_header_cell(t(key), scope="col")
                                    for key in (
                                        "cleanup.mentions.col.record",
                                        "cleanup.mentions.col.customer",
                                        "cleanup.mentions.col.names",
                                        "cleanup.mentions.col.fields",
                                        "cleanup.mentions.col.text",
                                    )
                                ],
                            )
                        ),
                        rx.table.body(rx.foreach(S.mentions, _mention_row)),
                        size="1",
                        width="100%",
                        id="cleanup-mentions",
                    ),
                    spacing="2",
                    width="100%",
                ),
            ),
        ),
        spacing="2",
        width="100%",
    )


def dry_run_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("cleanup.step.dry_run"), size="4", as_="h2"),
            rx.text(t("cleanup.matches", count=S.count.to_string()), size="4", weight="bold", id="cleanup-count"),
            rx.text(t("cleanup.dry_meta", kb=S.approx_kb, seconds=S.dry_seconds), size="1", color_scheme="gray"),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell(t("cleanup.table_name"), scope="col"),
                        rx.table.column_header_cell(t("cleanup.rows"), scope="col"),
                    )
                ),
                rx.table.body(rx.foreach(S.effects, _effect_row)),
                id="cleanup-effects",
                size="1",
            ),
            rx.heading(t("cleanup.sample"), size="3", as_="h3"),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[
                            rx.table.column_header_cell(t(key), scope="col")
                            for key in (
                                "cleanup.col.id",
                                "customer.name",
                                "customer.phone",
                                "customer.email",
                                "cleanup.col.status",
                                "customer.last_active_at",
                                "cleanup.col.reasons",
                            )
                        ]
                    )
                ),
                rx.table.body(rx.foreach(S.sample, _sample_row)),
                id="cleanup-sample",
                size="1",
                width="100%",
            ),
            rx.cond(S.action == "erase", mentions_section()),
            rx.cond(
                S.count > 0,
                rx.vstack(
                    rx.callout(
                        t("cleanup.confirm_hint", count=S.count.to_string()),
                        icon="triangle-alert",
                        color_scheme="orange",
                    ),
                    rx.hstack(
                        rx.input(
                            value=S.confirm_text,
                            on_change=S.set_confirm_text,
                            id="cleanup-confirm",
                            placeholder=S.count.to_string(),
                            aria_label=t("cleanup.confirm_label"),
                            width="160px",
                        ),
                        rx.button(
                            t("cleanup.run"),
                            color_scheme="red",
                            on_click=S.run_action,
                            id="cleanup-run",
                            disabled=S.confirm_text != S.count.to_string(),
                        ),
                        rx.button(t("common.back"), variant="soft", color_scheme="gray", on_click=S.back),
                        spacing="3",
                        align="center",
                    ),
                    rx.cond(
                        S.confirm_error != "", rx.text(S.confirm_error, color="var(--red-11)", size="1", role="alert")
                    ),
                    spacing="2",
                    width="100%",
                ),
                rx.button(t("common.back"), variant="soft", color_scheme="gray", on_click=S.back),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def progress_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("cleanup.step.running"), size="4", as_="h2"),
            rx.progress(value=S.percent, max=100, width="100%", id="cleanup-progress"),
            rx.text(t("cleanup.progress", done=S.processed.to_string(), total=S.total.to_string()), size="2"),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def report_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("cleanup.step.report"), size="4", as_="h2"),
            rx.vstack(
                rx.foreach(S.report_lines, lambda line: rx.text(line, size="2")), id="cleanup-report", spacing="1"
            ),
            rx.hstack(
                rx.button(t("cleanup.again"), on_click=S.back, id="cleanup-again"),
                rx.link(t("cleanup.browse_archive"), href="/cleanup/archive"),
                spacing="4",
                align="center",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def cleanup_page() -> rx.Component:
    return page_shell(
        rx.hstack(rx.link(t("cleanup.browse_archive"), href="/cleanup/archive", id="to-archive"), width="100%"),
        rx.match(
            S.step,
            ("dry_run", rx.vstack(criteria_card(), dry_run_card(), width="100%", spacing="3")),
            ("running", progress_card()),
            ("report", report_card()),
            criteria_card(),
        ),
        title_key="nav.cleanup",
    )


# --- /cleanup/archive ----------------------------------------------------------------------


def _parked_row(row: ParkedView) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.link(row.id, href="/customers/" + row.id.to_string())),
        rx.table.cell(row.name),
        rx.table.cell(row.phone),
        rx.table.cell(row.since),
        rx.table.cell(row.purge_on),
        rx.table.cell(
            rx.button(
                t("cleanup.restore"),
                size="1",
                variant="soft",
                on_click=A.restore_one(row.id),
                id="restore-" + row.id.to_string(),
            )
        ),
    )


def archive_page() -> rx.Component:
    return page_shell(
        rx.hstack(
            rx.link(t("nav.cleanup"), href="/cleanup"),
            rx.segmented_control.root(
                rx.segmented_control.item(t("status.archived"), value="archived"),
                rx.segmented_control.item(t("status.trashed"), value="trashed"),
                value=A.tab,
                on_change=A.set_tab,
                id="archive-tab",
            ),
            rx.text(t("cleanup.parked_total", count=A.total.to_string()), size="2", id="archive-total"),
            rx.spacer(),
            rx.button(
                t("cleanup.restore_all"),
                on_click=A.restore_all,
                variant="soft",
                id="restore-all",
                disabled=A.total == 0,
            ),
            align="center",
            spacing="4",
            width="100%",
            flex_wrap="wrap",
        ),
        rx.cond(
            A.tab == "trashed",
            rx.card(
                rx.vstack(
                    rx.text(
                        rx.cond(
                            A.retention_days > 0,
                            t("cleanup.trash_hint", days=A.retention_days.to_string()),
                            t("retention.trash_hint_off"),
                        ),
                        size="2",
                    ),
                    rx.hstack(
                        rx.input(
                            value=A.purge_confirm,
                            on_change=A.set_purge_confirm,
                            id="purge-confirm",
                            placeholder=A.total.to_string(),
                            aria_label=t("cleanup.confirm_label"),
                            width="160px",
                        ),
                        rx.button(
                            t("cleanup.empty_trash"),
                            color_scheme="red",
                            on_click=A.empty_trash,
                            id="empty-trash",
                            disabled=A.purge_confirm != A.total.to_string(),
                        ),
                        spacing="3",
                        align="center",
                    ),
                    rx.cond(A.purge_error != "", rx.text(A.purge_error, color="var(--red-11)", size="1", role="alert")),
                    rx.cond(A.purge_message != "", rx.text(A.purge_message, size="2", id="purge-message")),
                    spacing="2",
                ),
                width="100%",
            ),
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    *[
                        rx.table.column_header_cell(t(key), scope="col")
                        for key in (
                            "cleanup.col.id",
                            "customer.name",
                            "customer.phone",
                            "cleanup.col.since",
                            "cleanup.col.purge_on",
                            "common.actions",
                        )
                    ]
                )
            ),
            rx.table.body(rx.foreach(A.rows, _parked_row)),
            id="archive-table",
            width="100%",
        ),
        title_key="cleanup.archive_title",
    )
