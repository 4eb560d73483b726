"""/reports — a segment in two periods side by side, cohorts, top products (REP-2)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import NavItem, page_shell, register_nav
from meiqia_app.models.customer import LIFECYCLE_STAGES, SOURCES
from meiqia_app.pages.dashboard import _num_table, _right, label, tone_color
from meiqia_app.state.reports import ReportsState as S

register_nav(NavItem("/reports", "nav.reports", "chart-column", "report.view", "reports", 20))


def _date(name: str, label_key: str, value) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"report-{name}", font_size="12px"),
        rx.input(type="date", id=f"report-{name}", value=value, on_change=lambda v: S.set_field(name, v), size="2"),
        spacing="1",
    )


def _select(name: str, label_key: str, items: list[rx.Component], value) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"report-{name}", font_size="12px"),
        rx.select.root(
            rx.select.trigger(id=f"report-{name}", aria_label=t(label_key)),
            rx.select.content(*items),
            value=value,
            on_change=lambda v: S.set_field(name, v),
        ),
        spacing="1",
    )


def controls() -> rx.Component:
    return rx.box(
        rx.flex(
            _select(
                "view_id",
                "report.segment_view",
                [
                    rx.select.item(t("report.segment_all"), value="none"),
                    rx.foreach(S.views, lambda v: rx.select.item(v["name"], value=v["id"])),
                ],
                rx.cond(S.view_id == "", "none", S.view_id),
            ),
            _select(
                "lifecycle",
                "report.filter_lifecycle",
                [
                    rx.select.item(t("report.filter_any"), value="any"),
                    *[rx.select.item(t(f"lifecycle.{s}"), value=s) for s in LIFECYCLE_STAGES],
                ],
                rx.cond(S.lifecycle_filter == "", "any", S.lifecycle_filter),
            ),
            _select(
                "source",
                "report.filter_source",
                [
                    rx.select.item(t("report.filter_any"), value="any"),
                    *[rx.select.item(t(f"source.{s}"), value=s) for s in SOURCES],
                ],
                rx.cond(S.source_filter == "", "any", S.source_filter),
            ),
            rx.cond(
                S.cf_fields.length() > 0,
                rx.fragment(
                    _select(
                        "cf_key",
                        "report.cf_filter_field",
                        [
                            rx.select.item(t("report.filter_any"), value="none"),
                            rx.foreach(S.cf_fields, lambda f: rx.select.item(f["label"], value=f["key"])),
                        ],
                        rx.cond(S.cf_key == "", "none", S.cf_key),
                    ),
                    rx.cond(
                        S.cf_key != "",
                        _select(
                            "cf_value",
                            "report.cf_filter_value",
                            [rx.foreach(S.cf_values, lambda v: rx.select.item(v["label"], value=v["value"]))],
                            S.cf_value,
                        ),
                    ),
                    _select(
                        "group_by",
                        "report.cf_group_by",
                        [
                            rx.select.item(t("report.cf_group_none"), value="none"),
                            rx.foreach(S.cf_fields, lambda f: rx.select.item(f["label"], value=f["key"])),
                        ],
                        rx.cond(S.group_by == "", "none", S.group_by),
                    ),
                ),
            ),
            rx.card(
                rx.hstack(
                    rx.text(t("report.period_a"), weight="bold", size="2"),
                    _date("a_from", "dash.from", S.a_from),
                    _date("a_to", "dash.to", S.a_to),
                    align="end",
                    spacing="2",
                ),
                size="1",
            ),
            rx.card(
                rx.hstack(
                    rx.text(t("report.period_b"), weight="bold", size="2"),
                    _date("b_from", "dash.from", S.b_from),
                    _date("b_to", "dash.to", S.b_to),
                    align="end",
                    spacing="2",
                ),
                size="1",
            ),
            rx.button(rx.icon("play", size=14), t("report.run"), on_click=S.run, id="report-run", loading=S.loading),
            rx.cond(
                S.can_export,
                rx.button(
                    rx.icon("file-spreadsheet", size=16),
                    t("report.export_xlsx"),
                    type="button",
                    on_click=S.export_xlsx,
                    variant="soft",
                    id="report-export",
                ),
            ),
            rx.cond(
                S.can_export,
                rx.button(
                    rx.icon("file-text", size=16),
                    t("report.export_pdf"),
                    type="button",
                    on_click=S.export_pdf,
                    variant="soft",
                    id="report-export-pdf",
                ),
            ),
            spacing="3",
            wrap="wrap",
            align="end",
        ),
        width="100%",
    )


def comparison_section() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("report.comparison"), size="3", as_="h2"),
            rx.recharts.bar_chart(
                rx.recharts.bar(data_key="a", fill="#8d8d8d", name="A", is_animation_active=False),
                rx.recharts.bar(data_key="b", fill="#3e63dd", name="B", is_animation_active=False),
                rx.recharts.x_axis(data_key=rx.cond(S.is_en, "label_en", "label_zh")),
                rx.recharts.y_axis(),
                rx.recharts.graphing_tooltip(),
                rx.recharts.legend(),
                data=S.chart,
                width="100%",
                height=240,
            ),
            rx.box(
                _num_table(
                    [
                        t("report.measure"),
                        rx.text("A ", S.period_a_label),
                        rx.text("B ", S.period_b_label),
                        t("dash.change"),
                    ],
                    S.comparison,
                    lambda r: [
                        rx.table.cell(label(r)),
                        _right(r["a"]),
                        _right(r["b"]),
                        rx.table.cell(
                            r["change"],
                            text_align="right",
                            color=tone_color(r["tone"]),
                            data_tone=r["tone"],
                            style={"font_variant_numeric": "tabular-nums"},
                        ),
                    ],
                ),
                id="comparison-table",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def cohort_section() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("report.cohorts"), size="3", as_="h2"),
            rx.box(
                _num_table(
                    [
                        t("report.cohort_month"),
                        t("report.cohort_size"),
                        t("report.cohort_after", n=1),
                        t("report.cohort_after", n=3),
                        t("report.cohort_after", n=6),
                    ],
                    S.cohorts,
                    lambda r: [
                        rx.table.cell(r["month"]),
                        _right(r["size_text"]),
                        _right(r["retained"].to(list[str])[0]),
                        _right(r["retained"].to(list[str])[1]),
                        _right(r["retained"].to(list[str])[2]),
                    ],
                ),
                id="cohort-table",
                width="100%",
            ),
            rx.text(t("report.cohort_incomplete"), size="1", color_scheme="gray"),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def groups_section() -> rx.Component:
    """The segment's customers per value of the custom field chosen in "group by"."""
    return rx.cond(
        S.groups.length() > 0,
        rx.card(
            rx.vstack(
                rx.heading(S.group_label, size="3", as_="h2"),
                rx.box(
                    _num_table(
                        [t("report.cf_filter_value"), t("dash.total_customers"), "%"],
                        S.groups,
                        lambda g: [rx.table.cell(g["label"]), _right(g["customers"]), _right(g["share"])],
                    ),
                    id="cf-groups-table",
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
            width="100%",
        ),
    )


def products_section() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(t("report.top_products"), size="3", as_="h2"),
            rx.recharts.bar_chart(
                rx.recharts.bar(
                    data_key="amount", fill="#30a46c", is_animation_active=False, name=t("dash.amount_cents")
                ),
                rx.recharts.x_axis(data_key="product"),
                rx.recharts.y_axis(),
                rx.recharts.graphing_tooltip(),
                data=S.products,
                width="100%",
                height=240,
            ),
            rx.box(
                _num_table(
                    [
                        t("report.product"),
                        t("dash.orders"),
                        t("report.quantity"),
                        t("dash.amount_cents"),
                        t("dash.buyers"),
                    ],
                    S.products,
                    lambda p: [
                        rx.table.cell(p["product"]),
                        _right(p["orders_text"]),
                        _right(p["quantity_text"]),
                        _right(p["amount_text"]),
                        _right(p["buyers_text"]),
                    ],
                ),
                id="products-table",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def reports_page() -> rx.Component:
    return page_shell(
        controls(),
        rx.cond(S.empty, rx.callout(t("dash.empty"), icon="info", id="report-empty", width="100%")),
        rx.cond(
            S.loaded,
            rx.vstack(
                comparison_section(),
                groups_section(),
                cohort_section(),
                products_section(),
                rx.text(t("dash.definitions"), size="1", color_scheme="gray"),
                spacing="4",
                width="100%",
            ),
            rx.center(rx.spinner(size="3"), width="100%", padding="48px"),
        ),
        title_key="report.title",
    )
