"""Every page of the app, for the tests that visit them all (accessibility, small screens)."""

from __future__ import annotations

from tests.e2e.harness import wait_ready

# Each route an administrator can open, in the navigation's order; the detail
# page's id is filled in by detail_route().
ROUTES = (
    "/customers",
    "/customers/{id}",
    "/duplicates",
    "/import",
    "/tags",
    "/",
    "/reports",
    "/export",
    "/exports",
    "/exports/approvals",
    "/cleanup",
    "/cleanup/archive",
    "/admin/backups",
    "/admin/retention",
    "/admin/users",
    "/admin/roles",
    "/audit",
    "/account",
)


def first_customer_id(app_server) -> int:
    with app_server.sql() as db:
        return db.execute("SELECT id FROM customer WHERE status = 'active' ORDER BY id LIMIT 1").fetchone()[0]


def routes(app_server) -> list[str]:
    customer_id = first_customer_id(app_server)
    return [route.format(id=customer_id) for route in ROUTES]


def open_route(page, route: str) -> None:
    """Go to ``route`` and wait until it is hydrated and its on_load has answered."""
    page.goto(route)
    wait_ready(page)
    # The page's own data arrives with the on_load's delta, just after the user.
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(400)
