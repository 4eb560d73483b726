"""/customers — search and browse customers (CUST-1..3)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.components.tags import tag_chip
from meiqia_app.services.customer_dto import CustomerRow
from meiqia_app.state.customer_list import CustomerListState as S

# (column key, label key, sort key or None)
COLUMNS = [
    ("name", "customers.col.name", "name"),
    ("phone", "customers.col.phone", None),
    ("region", "customers.col.region", None),
    ("source", "customers.col.source", None),
    ("lifecycle", "customers.col.lifecycle", None),
    ("tags", "customers.col.tags", None),
    ("last_active", "customers.col.last_active", "last_active_at"),
]


def _header_cell(key: str, label_key: str, sort_key: str | None) -> rx.Component:
    if sort_key is None:
        return rx.table.column_header_cell(t(label_key), scope="col")
    is_sorted = S.sort == sort_key
    arrow = rx.cond(is_sorted, rx.cond(S.direction == "desc", "↓", "↑"), "")
    return rx.table.column_header_cell(
        rx.button(
            t(label_key),
            rx.text(arrow, as_="span", aria_hidden="true"),
            on_click=S.sort_by(sort_key),
            variant="ghost",
            size="1",
            aria_label=t("customers.sort_by", column=t(label_key)),
            id=f"sort-{key}",
        ),
        scope="col",
        aria_sort=rx.cond(is_sorted, rx.cond(S.direction == "desc", "descending", "ascending"), "none"),
    )


def _row(row: CustomerRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.link(row.name, href="/customers/" + row.id.to_string(), aria_label=t("customers.open", name=row.name)),
        ),
        rx.table.cell(row.phone),
        rx.table.cell(row.region),
        rx.table.cell(row.source),
        rx.table.cell(rx.badge(row.lifecycle, variant="soft")),
        rx.table.cell(rx.hstack(rx.foreach(row.tags, tag_chip), spacing="1", wrap="wrap")),
        rx.table.cell(row.last_active),
        class_name="customer-row",
        data_customer_id=row.id,
        # The whole row is a target for the mouse; keyboard users have the name link.
        on_click=rx.redirect("/customers/" + row.id.to_string()),
    )


def search_box() -> rx.Component:
    return rx.input(
        rx.input.slot(rx.icon("search", size=16, aria_hidden="true")),
        value=S.q,
        on_change=S.set_q,
        debounce_timeout=250,
        placeholder=t("customers.search_placeholder"),
        aria_label=t("customers.search_label"),
        id="customer-search",
        type="search",
        size="3",
        width="100%",
        max_width="520px",
        auto_focus=True,
    )


def count_line() -> rx.Component:
    return rx.text(
        rx.cond(
            S.count_value < 0,
            t("customers.counting"),
            rx.cond(
                S.count_exact,
                t("customers.count_exact", count=S.count_display),
                t("customers.count_estimate", count=S.count_display),
            ),
        ),
        id="match-count",
        size="2",
        color_scheme="gray",
        aria_live="polite",
    )


def pager() -> rx.Component:
    return rx.hstack(
        rx.button(t("common.first_page"), on_click=S.first_page, disabled=~S.has_prev, variant="soft", size="2", id="page-first"),
        rx.button(t("common.prev_page"), on_click=S.prev_page, disabled=~S.has_prev, variant="soft", size="2", id="page-prev"),
        rx.text(t("customers.page", page=S.page_label), size="2", id="page-number"),
        rx.button(t("common.next_page"), on_click=S.next_page, disabled=~S.has_next, variant="soft", size="2", id="page-next"),
        rx.button(t("common.last_page"), on_click=S.last_page, disabled=~S.has_next, variant="soft", size="2", id="page-last"),
        rx.spacer(),
        rx.text(t("common.page_size"), size="2"),
        rx.select(
            ["20", "50", "100"],
            value=S.page_size.to_string(),
            on_change=S.set_page_size,
            size="2",
            aria_label=t("common.page_size"),
        ),
        align="center",
        width="100%",
        spacing="2",
    )


def customers_table() -> rx.Component:
    return rx.cond(
        S.rows.length() > 0,
        rx.table.root(
            rx.table.header(rx.table.row(*[_header_cell(*column) for column in COLUMNS])),
            rx.table.body(rx.foreach(S.rows, _row)),
            variant="surface",
            size="2",
            width="100%",
            id="customer-table",
        ),
        rx.callout(
            rx.cond(S.too_short, t("error.search_too_short"), t("customers.empty")),
            icon="info",
            id="customers-empty",
        ),
    )


def customers_page() -> rx.Component:
    return page_shell(
        rx.hstack(search_box(), rx.spacer(), count_line(), align="center", width="100%"),
        customers_table(),
        pager(),
        title_key="customers.title",
    )
