"""/ — the dashboard (REP-1): KPI cards with change, charts each with its table.

Managers and analysts (report.view) see every figure; other roles get a quick
customer search box and a few small figures.
"""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.state.base import AppState
from meiqia_app.state.reports import DashboardState as S

register_nav(NavItem("/", "nav.dashboard", "layout-dashboard", "", "reports", 10))


def label(item) -> rx.Var:
    return rx.cond(AppState.is_en, item["label_en"], item["label_zh"])


def tone_color(tone) -> rx.Var:
    """Green for good news, red for bad, grey when neither (each measure knows which way is good)."""
    return rx.match(tone, ("good", "var(--green-11)"), ("bad", "var(--red-11)"), "var(--gray-11)")


def _arrow(item) -> rx.Component:
    color = tone_color(item["tone"])
    name = rx.cond(AppState.is_en, item["arrow_en"], item["arrow_zh"])
    return rx.match(
        item["direction"],
        ("up", rx.icon("arrow-up-right", size=14, color=color, aria_label=name, class_name="kpi-arrow")),
        ("down", rx.icon("arrow-down-right", size=14, color=color, aria_label=name, class_name="kpi-arrow")),
        rx.icon("minus", size=14, color=color, aria_label=name, class_name="kpi-arrow"),
    )


def kpi_card(item) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text(label(item), size="2", color_scheme="gray"),
            rx.text(
                item["value"],
                size="6",
                weight="bold",
                id="kpi-" + item["key"].to(str) + "-value",
                class_name="kpi-value",
            ),
            rx.hstack(
                _arrow(item),
                rx.text(
                    item["change"],
                    size="1",
                    class_name="kpi-change",
                    color=tone_color(item["tone"]),
                    data_tone=item["tone"],
                ),
                rx.text(t("dash.previous_period"), ": ", item["previous"], size="1", color_scheme="gray"),
                spacing="2",
                align="center",
                wrap="wrap",
            ),
            spacing="1",
        ),
        id="kpi-" + item["key"].to(str),
        min_width="180px",
    )


def period_bar() -> rx.Component:
    kinds = ("day", "week", "month", "custom")
    return rx.flex(
        rx.segmented_control.root(
            *[rx.segmented_control.item(t(f"dash.period_{k}"), value=k, id=f"period-{k}") for k in kinds],
            value=S.kind,
            on_change=S.set_kind,
            aria_label=t("dash.period"),
            id="period-kind",
        ),
        rx.icon_button(
            rx.icon("chevron-left", size=16),
            on_click=S.shift(-1),
            variant="soft",
            aria_label=t("dash.prev_period"),
            id="period-prev",
        ),
        rx.text(S.period_label, weight="bold", id="period-label"),
        rx.icon_button(
            rx.icon("chevron-right", size=16),
            on_click=S.shift(1),
            variant="soft",
            aria_label=t("dash.next_period"),
            disabled=S.latest,
            id="period-next",
        ),
        rx.hstack(
            rx.input(
                type="date",
                value=S.anchor,
                on_change=S.set_anchor,
                aria_label=rx.cond(S.kind == "custom", t("dash.from"), t("dash.anchor")),
                id="period-anchor",
                size="2",
            ),
            rx.cond(
                S.kind == "custom",
                rx.input(
                    type="date", value=S.end, on_change=S.set_end, aria_label=t("dash.to"), id="period-end", size="2"
                ),
            ),
            rx.button(t("dash.apply"), on_click=S.apply_dates, variant="soft", id="period-apply"),
            spacing="2",
            align="center",
        ),
        rx.text(rx.cond(AppState.is_en, S.note_en, S.note_zh), size="1", color_scheme="gray", id="period-note"),
        rx.spacer(),
        rx.cond(S.loading, rx.spinner(size="2")),
        rx.cond(
            S.can_export,
            rx.hstack(
                rx.button(
                    rx.icon("file-spreadsheet", size=16),
                    t("report.export_xlsx"),
                    on_click=S.export_xlsx,
                    id="dashboard-export",
                ),
                rx.button(
                    rx.icon("file-text", size=16),
                    t("report.export_pdf"),
                    on_click=S.export_pdf,
                    variant="soft",
                    id="dashboard-export-pdf",
                ),
                spacing="2",
            ),
        ),
        spacing="3",
        align="center",
        wrap="wrap",
        width="100%",
    )


def _num_table(headers: list, rows, cells) -> rx.Component:
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
        rx.table.body(rx.foreach(rows, lambda row: rx.table.row(*cells(row)))),
        size="1",
        variant="surface",
        width="100%",
    )


def _right(value) -> rx.Component:
    return rx.table.cell(value, text_align="right", style={"font_variant_numeric": "tabular-nums"})


def breakdown_section(title_key: str, rows, chart: rx.Component, table_id: str) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t(title_key), size="3", as_="h2"),
            chart,
            rx.box(
                _num_table(
                    [t("dash.col_key"), t("dash.col_total"), t("dash.col_new"), t("dash.col_new_prev")],
                    rows,
                    lambda r: [
                        rx.table.cell(label(r)),
                        _right(r["total_text"]),
                        _right(r["new_text"]),
                        _right(r["new_previous_text"]),
                    ],
                ),
                id=table_id,
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def lifecycle_chart() -> rx.Component:
    return rx.recharts.pie_chart(
        rx.recharts.pie(
            rx.foreach(S.lifecycle, lambda row: rx.recharts.cell(fill=row["color"])),
            data=S.lifecycle,
            data_key="total",
            name_key=rx.cond(AppState.is_en, "label_en", "label_zh"),
            outer_radius=90,
            label=True,
            is_animation_active=False,
        ),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        width="100%",
        height=260,
    )


def bar_chart(rows, key: str = "total") -> rx.Component:
    return rx.recharts.bar_chart(
        rx.recharts.bar(data_key=key, fill="#3e63dd", is_animation_active=False, name=t("dash.col_total")),
        rx.recharts.bar(data_key="new", fill="#30a46c", is_animation_active=False, name=t("dash.col_new")),
        rx.recharts.x_axis(data_key=rx.cond(AppState.is_en, "label_en", "label_zh")),
        rx.recharts.y_axis(),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        data=rows,
        width="100%",
        height=260,
    )


def trend_section() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(t("dash.trend"), size="3", as_="h2"),
                rx.spacer(),
                rx.segmented_control.root(
                    *[
                        rx.segmented_control.item(t(f"dash.gran_{g}"), value=g, id=f"gran-{g}")
                        for g in ("day", "week", "month")
                    ],
                    value=S.granularity,
                    on_change=S.set_granularity,
                    aria_label=t("dash.granularity"),
                ),
                width="100%",
                align="center",
            ),
            rx.recharts.line_chart(
                rx.recharts.line(
                    data_key="new_customers", stroke="#3e63dd", is_animation_active=False, name=t("dash.new_customers")
                ),
                rx.recharts.line(data_key="orders", stroke="#30a46c", is_animation_active=False, name=t("dash.orders")),
                rx.recharts.line(
                    data_key="conversations", stroke="#f76b15", is_animation_active=False, name=t("dash.conversations")
                ),
                rx.recharts.x_axis(data_key="label"),
                rx.recharts.y_axis(),
                rx.recharts.graphing_tooltip(),
                rx.recharts.legend(),
                rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
                data=S.trend,
                width="100%",
                height=280,
            ),
            rx.cond(
                S.partial_bucket,
                rx.text(t("dash.partial_bucket"), size="1", color_scheme="gray", id="trend-partial-note"),
            ),
            rx.box(
                _num_table(
                    [
                        t("dash.bucket"),
                        t("dash.new_customers"),
                        t("dash.orders"),
                        t("dash.amount_cents"),
                        t("dash.conversations"),
                    ],
                    S.trend,
                    lambda p: [
                        rx.table.cell(rx.cond(p["partial"], p["start"].to(str) + "*", p["start"])),
                        _right(p["new_customers_text"]),
                        _right(p["orders_text"]),
                        _right(p["amount_text"]),
                        _right(p["conversations_text"]),
                    ],
                ),
                id="trend-table",
                max_height="320px",
                overflow_y="auto",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def full_dashboard() -> rx.Component:
    return rx.vstack(
        period_bar(),
        rx.cond(
            S.empty,
            rx.callout(t("dash.empty"), icon="info", id="dashboard-empty", width="100%"),
        ),
        rx.cond(
            S.computing,
            rx.callout(t("dash.computing"), icon="loader", id="dashboard-computing", width="100%"),
        ),
        rx.grid(
            rx.foreach(S.cards, kpi_card),
            columns=rx.breakpoints(initial="1", sm="2", md="3", lg="5"),
            spacing="3",
            width="100%",
            id="kpi-cards",
        ),
        trend_section(),
        rx.grid(
            breakdown_section("dash.lifecycle", S.lifecycle, lifecycle_chart(), "lifecycle-table"),
            breakdown_section("dash.sources", S.sources, bar_chart(S.sources), "sources-table"),
            columns=rx.breakpoints(initial="1", lg="2"),
            spacing="3",
            width="100%",
        ),
        breakdown_section("dash.regions", S.regions, bar_chart(S.regions), "regions-table"),
        rx.text(t("dash.definitions"), size="1", color_scheme="gray"),
        rx.cond(S.computed_at != "", rx.text(t("dash.computed_at", time=S.computed_at), size="1", color_scheme="gray")),
        spacing="4",
        width="100%",
    )


def _small_figure(key: str, value) -> rx.Component:
    return rx.card(
        rx.vstack(rx.text(t(key), size="2", color_scheme="gray"), rx.text(value, size="6", weight="bold"), spacing="1"),
        min_width="180px",
    )


def agent_dashboard() -> rx.Component:
    return rx.vstack(
        rx.form(
            rx.hstack(
                rx.input(
                    rx.input.slot(rx.icon("search", size=16, aria_hidden="true")),
                    name="q",
                    placeholder=t("dash.quick_search_placeholder"),
                    aria_label=t("dash.quick_search"),
                    id="quick-search",
                    type="search",
                    size="3",
                    width="100%",
                    max_width="520px",
                    auto_focus=True,
                ),
                rx.button(t("dash.search"), type="submit", size="3", id="quick-search-submit"),
                width="100%",
            ),
            on_submit=S.quick_search,
            width="100%",
        ),
        rx.hstack(
            _small_figure("dash.total_customers", S.snap_total),
            _small_figure("dash.new_today", S.snap_today),
            _small_figure("dash.new_this_month", S.snap_month),
            spacing="3",
            wrap="wrap",
        ),
        spacing="4",
        width="100%",
    )


def dashboard_page() -> rx.Component:
    return page_shell(
        rx.cond(
            S.loaded,
            # The figures go as soon as report.view does (perms are refreshed at every event).
            rx.cond(S.full & AppState.perms.contains("report.view"), full_dashboard(), agent_dashboard()),
            rx.center(rx.spinner(size="3"), rx.text(t("dash.loading")), width="100%", padding="48px"),
        ),
        title_key="dash.title",
    )
