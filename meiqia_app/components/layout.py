"""The frame around every logged-in page: navigation by permission, language
switch, the user menu."""

from __future__ import annotations

import dataclasses

import reflex as rx
from reflex.components.core.banner import has_too_many_connection_errors

from meiqia_app.components.i18n import t
from meiqia_app.state.base import AppState


@dataclasses.dataclass(frozen=True)
class NavItem:
    href: str
    label_key: str
    icon: str
    permission: str


NAV_ITEMS: list[NavItem] = [
    NavItem("/customers", "nav.customers", "users", "customer.view"),
    NavItem("/audit", "nav.audit", "scroll-text", "audit.view"),
    NavItem("/admin/users", "nav.users", "user-cog", "user.manage"),
    NavItem("/admin/roles", "nav.roles", "shield", "role.manage"),
    NavItem("/account", "nav.account", "circle-user", ""),
]


def register_nav(item: NavItem) -> None:
    """Pages add themselves to the navigation when they are registered."""
    if all(existing.href != item.href for existing in NAV_ITEMS):
        NAV_ITEMS.append(item)


def _nav_link(item: NavItem) -> rx.Component:
    active = AppState.router.page.path == item.href
    link = rx.link(
        rx.hstack(
            rx.icon(item.icon, size=16, aria_hidden="true"),
            rx.text(t(item.label_key), size="2"),
            spacing="2",
            align="center",
        ),
        href=item.href,
        underline="none",
        padding_x="12px",
        padding_y="8px",
        border_radius="6px",
        width="100%",
        color=rx.cond(active, "var(--accent-11)", "var(--gray-12)"),
        background=rx.cond(active, "var(--accent-3)", "transparent"),
        aria_current=rx.cond(active, "page", "false"),
        id=f"nav-{item.href.strip('/').replace('/', '-') or 'home'}",
    )
    if not item.permission:
        return link
    # Hidden, not just disabled: a role does not see what it cannot use (the
    # services refuse it anyway).
    return rx.cond(AppState.perms.contains(item.permission), link)


def sidebar() -> rx.Component:
    return rx.box(
        rx.vstack(
            rx.hstack(
                rx.icon("message-circle-heart", size=22, color="var(--accent-9)", aria_hidden="true"),
                rx.text(t("app.title"), size="4", weight="bold"),
                align="center",
                padding_x="12px",
                padding_bottom="12px",
            ),
            rx.el.nav(
                rx.vstack(*[_nav_link(item) for item in NAV_ITEMS], spacing="1", width="100%"),
                aria_label=t("nav.main"),
                width="100%",
                class_name="app-nav",
            ),
            spacing="2",
            width="100%",
        ),
        width="220px",
        min_width="220px",
        padding="16px",
        border_right="1px solid var(--gray-5)",
        min_height="100vh",
        background="var(--gray-2)",
        class_name="app-sidebar",
    )


def language_switch() -> rx.Component:
    return rx.button(
        rx.icon("languages", size=16, aria_hidden="true"),
        rx.cond(AppState.is_en, "中文", "English"),
        on_click=AppState.set_lang(rx.cond(AppState.is_en, "zh", "en")),
        variant="soft",
        size="2",
        aria_label=rx.cond(AppState.is_en, "切换到中文", "Switch to English"),
        id="lang-switch",
    )


def user_menu() -> rx.Component:
    return rx.hstack(
        rx.text(t("nav.signed_in_as"), ": ", rx.text.strong(AppState.user_display), size="2", color_scheme="gray"),
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


def page_shell(*children: rx.Component, title_key: str) -> rx.Component:
    return rx.hstack(
        rx.link(t("app.skip_to_content"), href="#main", class_name="skip-link"),
        sidebar(),
        rx.box(
            rx.hstack(
                rx.heading(t(title_key), size="6", as_="h1"),
                rx.spacer(),
                language_switch(),
                user_menu(),
                align="center",
                padding_x="24px",
                padding_y="12px",
                border_bottom="1px solid var(--gray-5)",
                width="100%",
                class_name="app-header",
            ),
            rx.el.main(
                rx.vstack(connection_problem(), *children, spacing="4", width="100%"),
                id="main",
                # "true" once the page is hydrated and its user resolved: clicks before
                # that reach no handler (browser tests wait for it).
                data_ready=rx.cond(rx.State.is_hydrated & (AppState.user_name != ""), "true", "false"),
                padding="24px",
                width="100%",
                class_name="app-main",
            ),
            width="100%",
            min_width="0",
        ),
        spacing="0",
        align="start",
        width="100%",
        class_name="app-shell",
    )
