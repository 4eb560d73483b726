"""/customers — search and browse customers (CUST-1..3)."""

from __future__ import annotations

import reflex as rx

from meiqia_app.components import customer_list_fields as cf_list
from meiqia_app.components.custom_fields import custom_field_inputs
from meiqia_app.components.dialogs import field_error, form_buttons
from meiqia_app.components.i18n import t
from meiqia_app.components.layout import page_shell
from meiqia_app.components.tags import tag_chip
from meiqia_app.models.activity import ORDER_STATUSES
from meiqia_app.models.customer import LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES
from meiqia_app.services.customers.dto import CustomerRow
from meiqia_app.services.customers.query import HIDDEN_VALUE_SORTS
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_create import CustomerCreateState as NewCustomer
from meiqia_app.state.customer_list import CustomerListState as S

# (column key, label key, sort key or None), in catalogue order (saved_views.LIST_COLUMNS).
COLUMNS = [
    ("name", "customers.col.name", "name"),
    ("phone", "customers.col.phone", None),
    ("email", "customers.col.email", None),
    ("region", "customers.col.region", None),
    ("source", "customers.col.source", None),
    ("lifecycle", "customers.col.lifecycle", None),
    ("tier", "customers.col.tier", None),
    ("tags", "customers.col.tags", None),
    ("total_spent", "customers.col.total_spent", "total_spent"),
    ("order_count", "customers.col.order_count", "order_count"),
    ("registered", "customers.col.registered", "registered_at"),
    ("last_purchase", "customers.col.last_purchase", "last_purchase_at"),
    ("last_active", "customers.col.last_active", "last_active_at"),
    ("status", "customers.col.status", None),
    ("owner", "owner.label", None),
    ("team", "owner.team", None),
]


def _shown(key: str, component: rx.Component) -> rx.Component:
    return rx.cond(S.columns.contains(key), component)


# Roles that see a value masked cannot sort or filter by it (services/customers/query).
SEES_HIDDEN_VALUES = AppState.perms.contains("customer.view_sensitive")


def _header_cell(key: str, label_key: str, sort_key: str | None) -> rx.Component:
    if sort_key is None:
        return _shown(key, rx.table.column_header_cell(t(label_key), scope="col"))
    if sort_key in HIDDEN_VALUE_SORTS:
        return rx.cond(
            SEES_HIDDEN_VALUES,
            _sortable_header_cell(key, label_key, sort_key),
            _shown(key, rx.table.column_header_cell(t(label_key), scope="col")),
        )
    return _sortable_header_cell(key, label_key, sort_key)


def _sortable_header_cell(key: str, label_key: str, sort_key: str) -> rx.Component:
    is_sorted = S.sort == sort_key
    arrow = rx.cond(is_sorted, rx.cond(S.direction == "desc", "↓", "↑"), "")
    return _shown(
        key,
        rx.table.column_header_cell(
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
        ),
    )


def _owner_cell(row: CustomerRow) -> rx.Component:
    """The owner's name, or 公海 / Pool with a 认领 / Claim button for those who may claim."""
    return rx.cond(
        row.in_pool,
        rx.hstack(
            rx.badge(t("owner.pool"), color_scheme="gray", variant="soft"),
            rx.cond(
                AppState.perms.contains("customer.claim") & (row.status_code == "active"),
                rx.button(
                    t("owner.claim"),
                    size="1",
                    variant="soft",
                    on_click=[rx.stop_propagation, S.claim(row.id)],
                    aria_label=t("owner.claim") + " " + row.name,
                    class_name="claim-button",
                ),
            ),
            spacing="2",
            align="center",
        ),
        rx.text(row.owner),
    )


def _cell(key: str, label_key: str, row: CustomerRow) -> rx.Component:
    content = {
        "phone": row.phone,
        "email": row.email,
        "region": row.region,
        "source": row.source,
        "lifecycle": rx.badge(row.lifecycle, variant="soft"),
        "tier": row.tier,
        "tags": rx.hstack(rx.foreach(row.tags, tag_chip), spacing="1", wrap="wrap"),
        "total_spent": row.total_spent,
        "order_count": row.order_count,
        "registered": row.registered,
        "last_purchase": row.last_purchase,
        "last_active": row.last_active,
        "status": row.status,
        "owner": _owner_cell(row),
        "team": row.team,
    }[key]
    # data-label: the column's name before the value when the row is a card (narrow screens, app.css).
    return _shown(key, rx.table.cell(content, class_name=f"col-{key}", data_label=t(label_key)))


def _row(row: CustomerRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.checkbox(
                checked=S.all_matching | S.selected_ids.contains(row.id),
                on_change=lambda checked: S.set_row_selected(row.id, checked),
                aria_label=t("bulk.select_row", name=row.name),
                class_name="row-select",
            ),
            # Ticking a row must not open it.
            on_click=rx.stop_propagation,
        ),
        rx.table.row_header_cell(
            rx.link(row.name, href="/customers/" + row.id.to_string(), aria_label=t("customers.open", name=row.name)),
            # Why the row matched the search (手机尾号匹配, 访客 ID 匹配 …).
            rx.cond(
                row.match != "",
                rx.text(row.match, as_="div", size="1", color_scheme="gray", class_name="match-reason"),
            ),
        ),
        *[_cell(key, label_key, row) for key, label_key, _sort in COLUMNS if key != "name"],
        cf_list.custom_cells(row),
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
        # Results must show within 300 ms of the last keystroke (CUST-1): 150 ms of
        # pause ends a word, the rest is the round trip (bench/keystroke_latency.py).
        debounce_timeout=150,
        placeholder=t("customers.search_placeholder"),
        aria_label=t("customers.search_label"),
        id="customer-search",
        type="search",
        size="3",
        class_name="search-box",
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
        rx.button(
            t("common.first_page"),
            on_click=S.first_page,
            disabled=~S.has_prev,
            variant="soft",
            size="2",
            id="page-first",
        ),
        rx.button(
            t("common.prev_page"), on_click=S.prev_page, disabled=~S.has_prev, variant="soft", size="2", id="page-prev"
        ),
        rx.text(t("customers.page", page=S.page_label), size="2", id="page-number"),
        rx.button(
            t("common.next_page"), on_click=S.next_page, disabled=~S.has_next, variant="soft", size="2", id="page-next"
        ),
        rx.button(
            t("common.last_page"), on_click=S.last_page, disabled=~S.has_next, variant="soft", size="2", id="page-last"
        ),
        rx.spacer(),
        rx.text(t("common.page_size"), size="2"),
        rx.select.root(
            rx.select.trigger(aria_label=t("common.page_size"), id="page-size"),
            rx.select.content(*[rx.select.item(size, value=size) for size in ("20", "50", "100")]),
            value=S.page_size.to_string(),
            on_change=S.set_page_size,
            size="2",
        ),
        align="center",
        width="100%",
        spacing="2",
        flex_wrap="wrap",  # on a phone the page size goes to the next line
    )


def customers_table() -> rx.Component:
    return rx.cond(
        S.rows.length() > 0,
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    rx.table.column_header_cell(
                        rx.checkbox(
                            checked=S.page_all_selected,
                            on_change=S.set_page_selected,
                            aria_label=t("bulk.select_page"),
                            id="select-page",
                        ),
                        width="36px",
                    ),
                    *[_header_cell(*column) for column in COLUMNS],
                    rx.foreach(S.shown_custom, cf_list.custom_header_cell),
                )
            ),
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


def _checkbox_group(key: str, codes: tuple[str, ...], prefix: str) -> rx.Component:
    return rx.el.fieldset(
        rx.el.legend(t(f"filter.{key}"), font_size="13px", font_weight="600"),
        rx.flex(
            *[
                rx.el.label(
                    rx.checkbox(
                        name=f"{key}:{code}", default_checked=S.filters.get(key, []).to(list[str]).contains(code)
                    ),
                    t(f"{prefix}.{code}"),
                    display="flex",
                    gap="4px",
                    align_items="center",
                    font_size="13px",
                )
                for code in codes
            ],
            spacing="3",
            wrap="wrap",
        ),
        border="none",
        padding="0",
        margin="0",
    )


def _filter_input(key: str, input_type: str = "text") -> rx.Component:
    return rx.vstack(
        rx.el.label(t(f"filter.{key}"), html_for=f"filter-{key}", font_size="13px"),
        rx.input(
            id=f"filter-{key}",
            name=key,
            type=input_type,
            size="1",
            default_value=S.filters.get(key, "").to(str),
            min=0 if input_type == "number" else None,
        ),
        spacing="1",
    )


def _tag_select(key: str) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(f"filter.{key}"), html_for=f"filter-{key}", font_size="13px"),
        rx.select.root(
            rx.select.trigger(id=f"filter-{key}", aria_label=t(f"filter.{key}"), placeholder="—"),
            rx.select.content(
                rx.select.item("—", value="none"),
                rx.foreach(S.tag_options, lambda option: rx.select.item(option.name, value=option.id.to_string())),
            ),
            name=key,
            size="1",
        ),
        spacing="1",
    )


def _one_of_filter(key: str, choices, current) -> rx.Component:
    """A select of one team or one owner for the filter form (its value: an id, "none": any)."""
    return rx.vstack(
        rx.el.label(t(f"filter.{key}"), html_for=f"filter-{key}", font_size="13px"),
        rx.select.root(
            rx.select.trigger(id=f"filter-{key}", aria_label=t(f"filter.{key}"), placeholder="—"),
            rx.select.content(
                rx.select.item("—", value="none"),
                rx.foreach(choices, lambda option: rx.select.item(option.label, value=option.value)),
            ),
            name=key,
            default_value=current,
            size="1",
        ),
        spacing="1",
    )


def _team_filter() -> rx.Component:
    return _one_of_filter("team_ids", S.team_choices, S.team_filter)


def _owner_filter() -> rx.Component:
    # Hidden where the scope is "own + pool": the 我的客户 quick filter says it all.
    return rx.cond(
        S.owner_filter_choices.length() > 0,
        _one_of_filter("owner_ids", S.owner_filter_choices, S.owner_ids_filter),
    )


def owner_quick_filters() -> rx.Component:
    """全部 / 我的客户 / 公海."""
    return rx.segmented_control.root(
        rx.segmented_control.item(t("owner.filter_any"), value="any"),
        rx.segmented_control.item(t("owner.filter_mine"), value="mine"),
        rx.segmented_control.item(t("owner.filter_pool"), value="pool"),
        value=S.owner_filter,
        on_change=S.set_owner_filter,
        size="1",
        id="owner-quick-filters",
        aria_label=t("owner.quick_filters"),
    )


def filter_panel() -> rx.Component:
    return rx.popover.root(
        rx.popover.trigger(
            rx.button(rx.icon("sliders-horizontal", size=16), t("filter.open"), variant="soft", id="open-filters")
        ),
        rx.popover.content(
            rx.form(
                rx.vstack(
                    _checkbox_group("lifecycle", LIFECYCLE_STAGES, "lifecycle"),
                    _checkbox_group("tiers", MEMBERSHIP_TIERS, "tier"),
                    _checkbox_group("sources", SOURCES, "source"),
                    _checkbox_group("order_statuses", ORDER_STATUSES, "order_status"),
                    rx.grid(
                        _filter_input("province"),
                        _filter_input("city"),
                        _filter_input("registered_from", "date"),
                        _filter_input("registered_to", "date"),
                        _filter_input("active_from", "date"),
                        _filter_input("active_to", "date"),
                        _filter_input("purchase_from", "date"),
                        _filter_input("purchase_to", "date"),
                        rx.cond(SEES_HIDDEN_VALUES, _filter_input("spent_min", "number")),
                        rx.cond(SEES_HIDDEN_VALUES, _filter_input("spent_max", "number")),
                        _filter_input("orders_min", "number"),
                        _filter_input("orders_max", "number"),
                        _tag_select("tags_any"),
                        _tag_select("tags_none"),
                        rx.vstack(
                            rx.el.label(t("filter.consent_marketing"), html_for="filter-consent", font_size="13px"),
                            rx.select.root(
                                rx.select.trigger(id="filter-consent", aria_label=t("filter.consent_marketing")),
                                rx.select.content(
                                    rx.select.item(t("common.any"), value="any"),
                                    rx.select.item(t("common.yes"), value="yes"),
                                    rx.select.item(t("common.no"), value="no"),
                                ),
                                name="consent_marketing",
                                default_value="any",
                                size="1",
                            ),
                            spacing="1",
                        ),
                        rx.vstack(
                            rx.el.label(t("filter.status"), html_for="filter-status", font_size="13px"),
                            rx.select.root(
                                rx.select.trigger(id="filter-status", aria_label=t("filter.status")),
                                rx.select.content(
                                    rx.select.item(t("status.active"), value="active"),
                                    rx.select.item(t("status.archived"), value="archived"),
                                    rx.select.item(t("status.all"), value="all"),
                                ),
                                name="status",
                                default_value="active",
                                size="1",
                            ),
                            spacing="1",
                        ),
                        _team_filter(),
                        _owner_filter(),
                        columns="2",
                        spacing="3",
                        width="100%",
                    ),
                    form_buttons("apply-filters", submit_key="common.apply", closer=rx.popover.close),
                    spacing="3",
                ),
                on_submit=S.apply_filters,
                reset_on_submit=False,
            ),
            width="560px",
            max_height="80vh",
            overflow_y="auto",
        ),
        open=S.filters_open,
        on_open_change=S.set_filters_open,
    )


def _chip(chip) -> rx.Component:
    return rx.badge(
        chip.label,
        rx.icon_button(
            rx.icon("x", size=12),
            size="1",
            variant="ghost",
            on_click=S.remove_filter(chip.key),
            aria_label=t("filter.remove", label=chip.label),
        ),
        variant="surface",
        size="2",
        class_name="filter-chip",
    )


def filter_chips() -> rx.Component:
    return rx.cond(
        S.chips.length() > 0,
        rx.hstack(
            rx.foreach(S.chips, _chip),
            rx.button(t("filter.clear"), variant="ghost", size="1", on_click=S.clear_filters, id="clear-filters"),
            wrap="wrap",
            spacing="2",
            align="center",
            id="filter-chips",
        ),
    )


def _view_item(view) -> rx.Component:
    return rx.menu.item(
        rx.hstack(
            rx.text(view.name),
            rx.cond(
                view.mine,
                rx.cond(view.shared, rx.icon("users", size=12)),
                rx.text(t("view.by", owner=view.owner), size="1", color_scheme="gray"),
            ),
            spacing="2",
            align="center",
        ),
        on_click=S.open_view(view.id),
        class_name="view-item",
    )


def views_menu() -> rx.Component:
    return rx.hstack(
        rx.menu.root(
            rx.menu.trigger(rx.button(rx.icon("bookmark", size=16), t("view.menu"), variant="soft", id="views-menu")),
            rx.menu.content(
                rx.cond(
                    S.views.length() > 0, rx.foreach(S.views, _view_item), rx.menu.item(t("view.none"), disabled=True)
                ),
                rx.menu.separator(),
                rx.menu.item(t("view.save_current"), on_click=S.set_save_view_open(True), id="save-view"),
            ),
        ),
        rx.dialog.root(
            rx.dialog.content(
                rx.dialog.title(t("view.save_current")),
                rx.form(
                    rx.vstack(
                        rx.el.label(t("view.name"), html_for="view-name", font_size="14px"),
                        rx.input(id="view-name", name="name", required=True, max_length=64),
                        rx.cond(S.save_view_error != "", rx.text(S.save_view_error, color="var(--red-11)", size="1")),
                        rx.el.label(
                            rx.checkbox(name="shared", id="view-shared"),
                            t("view.shared"),
                            display="flex",
                            gap="6px",
                            align_items="center",
                            font_size="14px",
                        ),
                        form_buttons("save-view-submit"),
                        spacing="3",
                    ),
                    on_submit=S.save_view,
                ),
            ),
            open=S.save_view_open,
            on_open_change=S.set_save_view_open,
        ),
    )


def column_chooser() -> rx.Component:
    return rx.popover.root(
        rx.popover.trigger(
            rx.button(rx.icon("columns-3", size=16), t("customers.columns"), variant="soft", id="choose-columns")
        ),
        rx.popover.content(
            rx.vstack(
                *[
                    rx.el.label(
                        rx.checkbox(
                            checked=S.columns.contains(key),
                            on_change=lambda _checked, key=key: S.toggle_column(key),
                            disabled=key == "name",
                            id=f"column-{key}",
                        ),
                        t(label_key),
                        display="flex",
                        gap="6px",
                        align_items="center",
                        font_size="14px",
                    )
                    for key, label_key, _sort in COLUMNS
                ],
                cf_list.custom_column_choices(),
                spacing="2",
            ),
            max_height="80vh",
            overflow_y="auto",
        ),
    )


def selection_bar() -> rx.Component:
    """Shown while rows are ticked: the count, "select all N matching", and the bulk actions."""
    return rx.cond(
        S.selected_count > 0,
        rx.callout.root(
            rx.hstack(
                rx.cond(
                    S.all_matching,
                    rx.text(t("bulk.all_matching_selected", count=S.count_display), size="2", weight="medium"),
                    rx.text(t("bulk.selected", count=S.selected_count), size="2", weight="medium"),
                ),
                rx.cond(
                    S.page_all_selected & ~S.all_matching & (S.count_value > S.rows.length()),
                    rx.button(
                        t("bulk.select_all_matching", count=S.count_display),
                        variant="ghost",
                        size="1",
                        on_click=S.select_all_matching,
                        id="select-all-matching",
                    ),
                ),
                rx.spacer(),
                bulk_actions(),
                rx.button(t("bulk.clear"), variant="ghost", size="1", on_click=S.clear_selection, id="clear-selection"),
                align="center",
                width="100%",
                spacing="3",
                flex_wrap="wrap",
            ),
            variant="surface",
            id="selection-bar",
            width="100%",
        ),
    )


def bulk_actions() -> rx.Component:
    """The actions a role may take on the selection (each service re-checks the permission)."""
    return rx.hstack(
        rx.cond(
            AppState.perms.contains("tag.assign"),
            rx.hstack(
                rx.button(
                    rx.icon("tag", size=14),
                    t("bulk.add_tag"),
                    size="1",
                    variant="soft",
                    on_click=S.open_bulk_tag("add"),
                    id="bulk-add-tag",
                ),
                rx.button(
                    rx.icon("tag", size=14),
                    t("bulk.remove_tag"),
                    size="1",
                    variant="soft",
                    color_scheme="gray",
                    on_click=S.open_bulk_tag("remove"),
                    id="bulk-remove-tag",
                ),
                spacing="2",
            ),
        ),
        rx.cond(
            AppState.perms.contains("customer.assign"),
            rx.button(
                rx.icon("user-check", size=14),
                t("owner.assign"),
                size="1",
                variant="soft",
                on_click=S.open_assign,
                id="bulk-assign",
            ),
        ),
        assign_dialog(),
        cf_list.bulk_edit_button(),
        cf_list.bulk_edit_dialog(),
        rx.cond(
            AppState.perms.contains("customer.archive"),
            rx.button(
                rx.icon("archive", size=14),
                t("bulk.archive"),
                size="1",
                variant="soft",
                color_scheme="gray",
                on_click=S.open_status_action("archive"),
                id="bulk-archive",
            ),
        ),
        rx.cond(
            AppState.perms.contains("customer.delete"),
            rx.button(
                rx.icon("trash-2", size=14),
                t("bulk.trash"),
                size="1",
                variant="soft",
                color_scheme="red",
                on_click=S.open_status_action("trash"),
                id="bulk-trash",
            ),
        ),
        status_action_dialog(),
        # The wizard takes the list's current filter over; ticked rows are a filter of their own there.
        rx.cond(
            AppState.perms.contains("export.request") & (S.all_matching | (S.selected_ids.length() > 0)),
            rx.link(
                rx.button(
                    rx.icon("download", size=14),
                    rx.cond(S.all_matching, t("bulk.export_matching"), t("export.bulk_ticked")),
                    size="1",
                    variant="soft",
                ),
                href="/export",
                id="bulk-export",
            ),
        ),
        bulk_tag_dialog(),
        spacing="2",
        align="center",
        flex_wrap="wrap",  # five actions do not fit one line on a phone
    )


def status_action_dialog() -> rx.Component:
    """Archive or move to trash: the person types the count to confirm (as in the cleanup wizard)."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(S.status_action == "archive", t("bulk.archive"), t("bulk.trash"))),
            rx.dialog.description(
                rx.cond(
                    S.status_action == "archive",
                    t("bulk.archive_explained", count=S.status_count),
                    t("bulk.trash_explained", count=S.status_count),
                ),
                size="2",
            ),
            rx.form(
                rx.vstack(
                    rx.el.label(
                        t("bulk.type_count", count=S.status_count), html_for="status-confirm", font_size="13px"
                    ),
                    rx.input(
                        id="status-confirm", name="confirm", required=True, input_mode="numeric", auto_complete="off"
                    ),
                    rx.cond(
                        S.status_error != "",
                        rx.text(S.status_error, color="var(--red-11)", size="1", id="status-error"),
                    ),
                    rx.cond(S.bulk_running, rx.progress(value=S.bulk_percent, max=100, width="100%")),
                    form_buttons(
                        "status-confirm-submit",
                        submit_key="common.confirm",
                        loading=S.bulk_running,
                        color_scheme=rx.cond(S.status_action == "trash", "red", "blue"),
                    ),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.confirm_status_action,
                reset_on_submit=False,
            ),
            max_width="460px",
        ),
        open=S.status_open,
        on_open_change=S.set_status_open,
    )


def assign_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("owner.assign")),
            rx.dialog.description(
                rx.cond(
                    S.all_matching,
                    t("bulk.all_matching_selected", count=S.count_display),
                    t("bulk.selected", count=S.selected_count),
                ),
                size="2",
            ),
            rx.form(
                rx.vstack(
                    rx.el.label(t("bulk.assign_to"), html_for="bulk-owner", font_size="13px"),
                    rx.select.root(
                        rx.select.trigger(id="bulk-owner", aria_label=t("bulk.assign_to"), width="100%"),
                        rx.select.content(
                            rx.select.item(t("owner.release"), value="pool"),
                            rx.foreach(S.owner_choices, lambda o: rx.select.item(o.label, value=o.value)),
                        ),
                        name="owner",
                        required=True,
                    ),
                    rx.cond(S.assign_error != "", rx.text(S.assign_error, color="var(--red-11)", size="1")),
                    rx.cond(
                        S.bulk_running, rx.progress(value=S.bulk_percent, max=100, width="100%", id="assign-progress")
                    ),
                    form_buttons("bulk-assign-submit", submit_key="common.confirm", loading=S.bulk_running),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.start_bulk_assign,
                reset_on_submit=False,
            ),
            max_width="440px",
        ),
        open=S.assign_open,
        on_open_change=S.set_assign_open,
    )


def bulk_tag_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(S.bulk_action == "add", t("bulk.add_tag"), t("bulk.remove_tag"))),
            rx.dialog.description(
                rx.cond(
                    S.all_matching,
                    t("bulk.all_matching_selected", count=S.count_display),
                    t("bulk.selected", count=S.selected_count),
                ),
                size="2",
            ),
            rx.form(
                rx.vstack(
                    rx.el.label(t("customers.col.tags"), html_for="bulk-tag", font_size="13px"),
                    rx.select.root(
                        rx.select.trigger(id="bulk-tag", aria_label=t("customers.col.tags"), width="100%"),
                        rx.select.content(
                            rx.foreach(
                                S.tag_options, lambda option: rx.select.item(option.name, value=option.id.to_string())
                            )
                        ),
                        name="tag_id",
                        required=True,
                    ),
                    rx.cond(S.bulk_error != "", rx.text(S.bulk_error, color="var(--red-11)", size="1")),
                    rx.cond(
                        S.bulk_running, rx.progress(value=S.bulk_percent, max=100, width="100%", id="bulk-progress")
                    ),
                    form_buttons("bulk-tag-submit", submit_key="common.confirm", loading=S.bulk_running),
                    spacing="3",
                    width="100%",
                ),
                on_submit=S.start_bulk_tag,
                reset_on_submit=False,
            ),
            max_width="440px",
        ),
        open=S.bulk_open,
        on_open_change=S.set_bulk_open,
    )


def _new_field(label_key: str, field: str, input_type: str = "text", required: bool = False) -> rx.Component:
    return rx.vstack(
        rx.el.label(t(label_key), html_for=f"new-{field}", font_size="13px"),
        rx.input(
            id=f"new-{field}",
            name=field,
            type=input_type,
            required=required,
            width="100%",
            aria_invalid=rx.cond(NewCustomer.errors.contains(field), "true", "false"),
        ),
        field_error(NewCustomer.errors.get(field, "")),
        spacing="1",
        width="100%",
    )


def _duplicate_hint(hint) -> rx.Component:
    return rx.hstack(
        rx.text(hint.text, size="2"),
        rx.cond(
            hint.customer_id > 0,
            rx.link(
                t("customer.open_existing"),
                href=hint.href,
                on_click=NewCustomer.open_existing(hint.customer_id).prevent_default,
                size="2",
                class_name="duplicate-link",
            ),
        ),
        spacing="2",
        align="center",
        wrap="wrap",
    )


def duplicate_warning() -> rx.Component:
    """Shown when the new customer repeats existing ones: open one of them, or save anyway."""
    return rx.cond(
        NewCustomer.duplicate_warning,
        rx.callout.root(
            rx.callout.icon(rx.icon("users", size=16)),
            rx.vstack(
                rx.text(t("customer.duplicate_warning"), weight="medium", size="2"),
                rx.foreach(NewCustomer.duplicates, _duplicate_hint),
                spacing="1",
            ),
            color_scheme="orange",
            role="alert",
            id="new-customer-duplicates",
            margin_top="12px",
        ),
    )


def new_customer_dialog() -> rx.Component:
    return rx.cond(
        AppState.perms.contains("customer.create"),
        rx.dialog.root(
            rx.dialog.trigger(rx.button(rx.icon("user-plus", size=16), t("customer.new"), id="new-customer")),
            rx.dialog.content(
                rx.dialog.title(t("customer.new")),
                rx.form(
                    rx.grid(
                        _new_field("customer.name", "name", required=True),
                        rx.vstack(
                            rx.el.label(t("customer.source"), html_for="new-source", font_size="13px"),
                            rx.select.root(
                                rx.select.trigger(id="new-source", aria_label=t("customer.source"), width="100%"),
                                rx.select.content(
                                    *[rx.select.item(t(f"source.{code}"), value=code) for code in SOURCES]
                                ),
                                name="source",
                                default_value=SOURCES[0],
                            ),
                            spacing="1",
                            width="100%",
                        ),
                        _new_field("customer.phone", "phone", "tel"),
                        _new_field("customer.email", "email", "email"),
                        _new_field("customer.province", "province"),
                        _new_field("customer.city", "city"),
                        _new_field("customer.company", "company"),
                        _new_field("customer.external_id", "external_id"),
                        rx.el.input(
                            type="hidden", name="save_anyway", value=rx.cond(NewCustomer.duplicate_warning, "1", "0")
                        ),
                        columns="2",
                        spacing="3",
                        width="100%",
                    ),
                    custom_field_inputs(NewCustomer.custom_fields, NewCustomer.errors, "new-"),
                    duplicate_warning(),
                    rx.box(
                        rx.cond(
                            NewCustomer.duplicate_warning,
                            form_buttons(
                                "new-customer-save-anyway",
                                submit_key="customer.save_anyway",
                                loading=NewCustomer.saving,
                                color_scheme="orange",
                            ),
                            form_buttons("new-customer-save", loading=NewCustomer.saving),
                        ),
                        width="100%",
                        margin_top="16px",
                    ),
                    on_submit=NewCustomer.create,
                    reset_on_submit=False,
                ),
                max_width="640px",
            ),
            open=NewCustomer.dialog_open,
            on_open_change=NewCustomer.set_open,
        ),
    )


def customers_page() -> rx.Component:
    return page_shell(
        rx.box(
            search_box(),
            rx.box(
                filter_panel(),
                cf_list.custom_filter_dialog(),
                views_menu(),
                column_chooser(),
                class_name="toolbar-actions",
            ),
            rx.spacer(),
            rx.box(count_line(), new_customer_dialog(), class_name="toolbar-actions"),
            class_name="list-toolbar",
        ),
        owner_quick_filters(),
        filter_chips(),
        cf_list.ignored_notice(),
        selection_bar(),
        customers_table(),
        pager(),
        title_key="customers.title",
    )
