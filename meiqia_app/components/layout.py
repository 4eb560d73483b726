"""The frame around every logged-in page: navigation by permission (a fixed
sidebar, a drawer behind a menu button on narrow screens), the language
switch, the user menu, and "no access" instead of a page the role may not use."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections.abc import Callable

import reflex as rx
from reflex.components.core.banner import has_too_many_connection_errors
from reflex_base.utils.imports import ImportVar
from reflex_base.vars.base import VarData

from meiqia_app.components.i18n import t
from meiqia_app.state.base import AppState

# The navigation's groups, in the order people work (label key per group).
NAV_GROUPS: tuple[tuple[str, str], ...] = (
    ("customers", "nav.group.customers"),
    ("tags", "nav.group.tags"),
    ("reports", "nav.group.reports"),
    ("export", "nav.group.export"),
    ("data", "nav.group.data"),
    ("system", "nav.group.system"),
)
ACCOUNT_GROUP = "account"  # alone at the bottom of the sidebar


@dataclasses.dataclass(frozen=True)
class NavItem:
    href: str
    label_key: str
    icon: str
    permission: str
    group: str = "customers"
    order: int = 100  # within the group


NAV_ITEMS: list[NavItem] = [
    NavItem("/customers", "nav.customers", "users", "customer.view", "customers", 10),
    NavItem("/admin/users", "nav.users", "user-cog", "user.manage", "system", 10),
    NavItem("/admin/roles", "nav.roles", "shield", "role.manage", "system", 20),
    NavItem("/audit", "nav.audit", "scroll-text", "audit.view", "system", 30),
    NavItem("/account", "nav.account", "circle-user", "", ACCOUNT_GROUP, 10),
]


def register_nav(item: NavItem) -> None:
    """Pages add themselves to the navigation when they are registered."""
    if all(existing.href != item.href for existing in NAV_ITEMS):
        NAV_ITEMS.append(item)


def nav_items(group: str) -> list[NavItem]:
    return sorted((item for item in NAV_ITEMS if item.group == group), key=lambda item: (item.order, item.href))


# --- which pages a role may open ------------------------------------------------------------
# The permissions of the page being built, set by gated_page() while Reflex
# evaluates the page function (meiqia_app.py declares them with the route).
_PAGE_NEEDS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("meiqia_page_needs", default=())


def gated_page(page: Callable[[], rx.Component], needs: tuple[str, ...]) -> Callable[[], rx.Component]:
    """The page function, built so that page_shell shows "no access" to a role without ``needs``."""

    @functools.wraps(page)
    def build() -> rx.Component:
        token = _PAGE_NEEDS.set(tuple(needs))
        try:
            return page()
        finally:
            _PAGE_NEEDS.reset(token)

    return build


def _has_all(permissions: tuple[str, ...]) -> rx.Var:
    allowed = AppState.perms.contains(permissions[0])
    for permission in permissions[1:]:
        allowed = allowed & AppState.perms.contains(permission)
    return allowed


def no_access() -> rx.Component:
    """What a role sees instead of a page it may not use: no controls, no data."""
    return rx.card(
        rx.vstack(
            rx.icon("shield-x", size=32, color="var(--gray-11)", aria_hidden="true"),
            rx.heading(t("access.denied_title"), as_="h2", size="5"),
            rx.text(t("access.denied_text"), size="3"),
            rx.link(t("access.go_home"), href="/", id="no-access-home", size="3"),
            align="start",
            spacing="3",
        ),
        id="no-access",
        role="alert",
        max_width="560px",
    )


# --- <html lang> follows the language switch; tables that scroll take the keyboard -------------
# A table wider than its box scrolls inside it (narrow screens): keyboard users
# must be able to focus that box to scroll it (axe: scrollable-region-focusable).
_FOCUSABLE_SCROLLERS = """useEffect(() => {
    const mark = () => document.querySelectorAll('.rt-TableRoot .rt-ScrollAreaViewport').forEach((el) => {
        const scrolls = el.scrollWidth > el.clientWidth + 1;
        if (scrolls && !el.hasAttribute('tabindex')) {
            el.setAttribute('tabindex', '0');
            el.setAttribute('data-mq-scroller', '');
        } else if (!scrolls && el.hasAttribute('data-mq-scroller')) {
            el.removeAttribute('tabindex');
            el.removeAttribute('data-mq-scroller');
        }
    });
    const observer = new MutationObserver(mark);
    observer.observe(document.body, {childList: true, subtree: true});
    window.addEventListener('resize', mark);
    mark();
    return () => { observer.disconnect(); window.removeEventListener('resize', mark); };
}, [])"""


class _PageEffects(rx.Fragment):
    """Keeps ``<html lang>`` in step with the page's language (zh-CN or en) for
    screen readers, and makes tables that scroll sideways focusable."""

    def add_hooks(self) -> list[str | rx.Var]:
        is_en = AppState.is_en
        use_effect = VarData(imports={"react": [ImportVar(tag="useEffect")]})
        return [
            rx.Var(
                _js_expr=(
                    f"useEffect(() => {{ document.documentElement.lang = ({is_en!s}) ? 'en' : 'zh-CN'; }}, [{is_en!s}])"
                ),
                _var_data=VarData.merge(is_en._get_all_var_data(), use_effect),
            ),
            rx.Var(_js_expr=_FOCUSABLE_SCROLLERS, _var_data=use_effect),
        ]


def page_effects() -> rx.Component:
    return _PageEffects.create()


# --- navigation ------------------------------------------------------------------------------
def _nav_link(item: NavItem, prefix: str) -> rx.Component:
    active = AppState.router.page.path == item.href
    if item.href == "/":
        active = active | (AppState.router.page.path == "/index")  # Reflex's name for the root page
    link = rx.link(
        rx.hstack(
            rx.icon(item.icon, size=16, aria_hidden="true"),
            rx.text(t(item.label_key), size="2"),
            spacing="2",
            align="center",
        ),
        href=item.href,
        underline="none",
        class_name="nav-link",
        color=rx.cond(active, "var(--accent-12)", "var(--gray-12)"),
        background=rx.cond(active, "var(--accent-4)", "transparent"),
        font_weight=rx.cond(active, "600", "400"),
        aria_current=rx.cond(active, "page", "false"),
        id=f"{prefix}{item.href.strip('/').replace('/', '-') or 'home'}",
    )
    if prefix != "nav-":
        link = rx.dialog.close(link)  # in the drawer: following a link closes it
    entry = rx.el.li(link)
    if not item.permission:
        return entry
    # Hidden, not just disabled: a role does not see what it cannot use (the
    # services refuse it anyway).
    return rx.cond(AppState.perms.contains(item.permission), entry)


def _group_visible(items: list[NavItem]) -> rx.Var | bool:
    if any(not item.permission for item in items):
        return True
    visible = AppState.perms.contains(items[0].permission)
    for item in items[1:]:
        visible = visible | AppState.perms.contains(item.permission)
    return visible


def _nav_group(group: str, label_key: str, prefix: str) -> rx.Component | None:
    items = nav_items(group)
    if not items:
        return None
    label_id = f"{prefix}group-{group}"
    block = rx.box(
        rx.text(t(label_key), id=label_id, class_name="nav-group-label", size="1", weight="medium"),
        rx.el.ul(*[_nav_link(item, prefix) for item in items], class_name="nav-list", aria_labelledby=label_id),
        class_name="nav-group",
    )
    visible = _group_visible(items)
    return block if visible is True else rx.cond(visible, block)


def nav_menu(prefix: str = "nav-", *header: rx.Component) -> rx.Component:
    """The grouped links (the sidebar's and the drawer's), the account at the bottom."""
    groups = [g for g in (_nav_group(group, key, prefix) for group, key in NAV_GROUPS) if g is not None]
    return rx.el.nav(
        *header,
        rx.box(*groups, class_name="nav-groups"),
        rx.el.ul(*[_nav_link(item, prefix) for item in nav_items(ACCOUNT_GROUP)], class_name="nav-list nav-bottom"),
        aria_label=t("nav.main"),
        class_name="app-nav",
    )


def _brand() -> rx.Component:
    return rx.hstack(
        rx.icon("message-circle-heart", size=22, color="var(--accent-11)", aria_hidden="true"),
        rx.text(t("app.title"), size="4", weight="bold"),
        align="center",
        class_name="app-brand",
    )


def sidebar() -> rx.Component:
    """Wide screens: always there, fixed while the page scrolls (hidden at 768 px and below)."""
    return rx.box(nav_menu("nav-", _brand()), class_name="app-sidebar")


def nav_drawer() -> rx.Component:
    """Narrow screens: the navigation in a drawer behind the menu button
    (a modal dialog: focus stays inside, Esc or a link closes it)."""
    return rx.dialog.root(
        rx.dialog.trigger(
            rx.icon_button(
                rx.icon("menu", size=20, aria_hidden="true"),
                variant="soft",
                size="3",
                aria_label=t("nav.open_menu"),
                id="menu-button",
                class_name="menu-button",
            )
        ),
        rx.dialog.content(
            rx.hstack(
                rx.dialog.title(t("app.title"), size="4", margin="0"),
                rx.spacer(),
                rx.dialog.close(
                    rx.icon_button(
                        rx.icon("x", size=18, aria_hidden="true"),
                        variant="ghost",
                        color_scheme="gray",
                        aria_label=t("nav.close_menu"),
                        id="menu-close",
                    )
                ),
                align="center",
                width="100%",
                margin_bottom="8px",
            ),
            rx.dialog.description(t("nav.main"), class_name="sr-only"),
            nav_menu("drawer-nav-"),
            class_name="nav-drawer",
            id="nav-drawer",
        ),
    )


def language_switch() -> rx.Component:
    return rx.button(
        rx.icon("languages", size=16, aria_hidden="true"),
        rx.cond(AppState.is_en, "中文", "English"),
        on_click=AppState.set_lang(rx.cond(AppState.is_en, "zh", "en")),
        variant="soft",
        size="2",
        aria_label=rx.cond(AppState.is_en, "切换到中文", "Switch to English"),
        lang=rx.cond(AppState.is_en, "zh-CN", "en"),
        id="lang-switch",
    )


def user_menu() -> rx.Component:
    return rx.hstack(
        rx.text(
            t("nav.signed_in_as"),
            ": ",
            rx.text.strong(AppState.user_display),
            size="2",
            color="var(--gray-11)",
            class_name="signed-in-as",
        ),
        rx.button(
            rx.icon("log-out", size=16, aria_hidden="true"),
            t("nav.logout"),
            on_click=AppState.logout,
            variant="ghost",
            size="2",
            id="logout",
        ),
        align="center",
        spacing="3",
    )


# The page's own address, read in the browser (empty while the page is prerendered).
_PAGE_ORIGIN = rx.Var(_js_expr="(typeof window !== 'undefined' ? window.location.origin : '')", _var_type=str)


def connection_problem() -> rx.Component:
    """A clear error when the websocket cannot connect (server down, or the origin refused).

    Without it a refused origin looks like a page that hangs: the login button
    stays disabled and nothing says why. Shown after two failed attempts in a
    row, so an ordinary reconnect does not flash it.
    """
    return rx.cond(
        has_too_many_connection_errors,
        rx.callout(
            t("app.connection_failed", origin=_PAGE_ORIGIN.to(str)),
            icon="wifi-off",
            color_scheme="red",
            role="alert",
            id="connection-error",
            width="100%",
        ),
    )


def _gated(body: rx.Component) -> rx.Component:
    """The page body, or "no access" when the role lacks what the page needs.

    Decided in the browser from ``AppState.perms`` (refreshed at every event by
    the event guard), so a revoked permission hides an open page at its next
    event; until the tab knows its user, neither is shown.
    """
    needs = _PAGE_NEEDS.get()
    if not needs:
        return body
    return rx.cond(
        AppState.user_name == "",
        rx.center(rx.spinner(size="3"), width="100%", padding="48px"),
        rx.cond(_has_all(needs), body, no_access()),
    )


def page_shell(*children: rx.Component, title_key: str) -> rx.Component:
    return rx.box(
        page_effects(),
        rx.link(t("app.skip_to_content"), href="#main", class_name="skip-link"),
        sidebar(),
        rx.box(
            rx.el.header(
                nav_drawer(),
                rx.heading(t(title_key), size="6", as_="h1", class_name="page-title"),
                rx.box(language_switch(), user_menu(), class_name="header-tools"),
                class_name="app-header",
            ),
            rx.el.main(
                rx.vstack(
                    connection_problem(),
                    _gated(rx.vstack(*children, spacing="4", width="100%")),
                    spacing="4",
                    width="100%",
                ),
                id="main",
                tab_index=-1,
                # "true" once the page is hydrated and its user resolved: clicks before
                # that reach no handler (browser tests wait for it).
                data_ready=rx.cond(rx.State.is_hydrated & (AppState.user_name != ""), "true", "false"),
                # The last page load that finished (AppState.load_seq): tests wait for it.
                data_load_seq=AppState.load_seq,
                data_loaded_path=AppState.loaded_path,
                class_name="app-main",
            ),
            class_name="app-column",
        ),
        class_name="app-shell",
    )
