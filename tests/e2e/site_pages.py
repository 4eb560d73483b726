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
    "/admin/fields",
    "/admin/api-keys",
    "/admin/webhooks",
    "/audit",
    "/account",
)


def first_customer_id(app_server) -> int:
    """An active customer nobody erased (earlier tests archive, trash and erase some)."""
    with app_server.sql() as db:
        return db.execute(
            "SELECT id FROM customer WHERE status = 'active' AND erased_at IS NULL ORDER BY id LIMIT 1"
        ).fetchone()[0]


def routes(app_server) -> list[str]:
    customer_id = first_customer_id(app_server)
    return [route.format(id=customer_id) for route in ROUTES]


def open_route(page, route: str) -> None:
    """Go to ``route`` and wait until it is hydrated and its page load has finished
    (AppState.load_seq moved on and names this path: the on_load's data is in)."""
    main = page.locator("#main")
    before = main.get_attribute("data-load-seq") if main.count() else None
    page.goto(route)
    wait_ready(page)
    page.wait_for_function(
        """before => {
            const main = document.querySelector('#main[data-ready=true]');
            const here = location.pathname.replace(/\\/$/, '') || '/';
            return !!main && main.dataset.loadSeq !== before && main.dataset.loadedPath === here;
        }""",
        arg=before,
    )
