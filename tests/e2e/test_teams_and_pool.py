"""Teams, owners and the pool (公海) in the browser (issue 21, part 2).

The admin creates two teams on the users page; two agents join them (the
CLI's ``create-user --team``, with a known authenticator secret, so they log
in through the real login page). Agent A sees team A's customers and the
pool's, not team B's; claims a pool customer (认领); the manager transfers it
to agent B (team B); agent A no longer sees it.
"""

from __future__ import annotations

import pyotp
from playwright.sync_api import expect

from tests.e2e.conftest import Account, login

PASSWORD = "Team-pool-e2e-2026!"


def _customers(app_server, n: int) -> list[tuple[int, str]]:
    with app_server.sql() as db:
        return db.execute(
            "SELECT id, name FROM customer WHERE status = 'active' AND owner_id IS NULL AND erased_at IS NULL "
            "AND name NOT IN (SELECT name FROM customer GROUP BY name HAVING count(*) > 1) ORDER BY id DESC LIMIT ?",
            (n,),
        ).fetchall()


def _user_id(app_server, username: str) -> int:
    with app_server.sql() as db:
        return db.execute("SELECT id FROM app_user WHERE username = ?", (username,)).fetchone()[0]


def _owner(app_server, customer_id: int):
    with app_server.sql() as db:
        return db.execute("SELECT owner_id FROM customer WHERE id = ?", (customer_id,)).fetchone()[0]


def _listed(page, name: str) -> list[str]:
    search = page.get_by_role("searchbox")
    search.fill(name)
    expect(page.locator("#customer-table")).to_be_visible()
    page.wait_for_timeout(600)  # the search is debounced
    page.wait_for_function(
        "n => [...document.querySelectorAll('#customer-table .customer-row')].every("
        "r => r.textContent.includes(n)) || document.querySelectorAll('#customer-table .customer-row').length === 0",
        arg=name,
    )
    return page.locator("#customer-table .customer-row").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-customer-id'))"
    )


def _login_as(page, app_server, username: str, path: str) -> None:
    """Switch user: the previous user's cookie must not carry over into a first login through the form."""
    page.context.clear_cookies()
    login(page, app_server, username, path)


def _back_to_the_pool(app_server, ids) -> None:
    """Later tests (in any order) open these customers as the demo agent: give them back to the pool."""
    with app_server.sql() as db:
        db.executemany("UPDATE customer SET owner_id = NULL WHERE id = ?", [(i,) for i in ids])


def test_agent_sees_team_and_pool_claims_and_loses_a_transferred_customer(page, app_server, request):
    # The admin creates two teams on the users page.
    login(page, app_server, "admin", "/admin/users")
    for name in ("e2e 一组", "e2e 二组"):
        page.locator("#new-team-name").fill(name)
        page.locator("#create-team").click()
        page.wait_for_function(
            "n => [...document.querySelectorAll('#teams-table .team-row input')].some(i => i.value === n)", arg=name
        )
    # Two agents, one per team (known authenticator secrets: they log in through the login page).
    for username, team in (("e2e_agent_a", "e2e 一组"), ("e2e_agent_b", "e2e 二组")):
        secret = pyotp.random_base32()
        app_server.cli(
            "create-user",
            "--username",
            username,
            "--password",
            PASSWORD,
            "--role",
            "agent",
            "--team",
            team,
            "--totp-secret",
            secret,
        )
        app_server.accounts[username] = Account(username, PASSWORD, "agent", secret)
    page.reload()
    expect(page.locator("#teams-table")).to_contain_text("e2e_agent_a")
    expect(page.locator("#teams-table")).to_contain_text("e2e_agent_b")

    # Setup: one customer of team B, one of team A, one in the pool.
    (b_id, b_name), (a_id, a_name), (pool_id, pool_name) = _customers(app_server, 3)
    request.addfinalizer(lambda: _back_to_the_pool(app_server, (b_id, a_id, pool_id)))
    with app_server.sql() as db:
        db.execute("UPDATE customer SET owner_id = ? WHERE id = ?", (_user_id(app_server, "e2e_agent_b"), b_id))
        db.execute("UPDATE customer SET owner_id = ? WHERE id = ?", (_user_id(app_server, "e2e_agent_a"), a_id))
        db.commit()

    # Agent A: team A's and the pool's customers, not team B's.
    _login_as(page, app_server, "e2e_agent_a", "/customers")
    assert str(a_id) in _listed(page, a_name)
    assert str(pool_id) in _listed(page, pool_name)
    assert str(b_id) not in _listed(page, b_name)
    page.goto(f"/customers/{b_id}")
    expect(page.locator("#customer-not-found")).to_be_visible()

    # Agent A claims the pool customer on its page.
    page.goto(f"/customers/{pool_id}")
    expect(page.locator("#customer-owner")).to_have_text("公海")
    page.locator("#claim-customer").click()
    expect(page.locator("#customer-owner")).to_contain_text("e2e_agent_a")
    assert _owner(app_server, pool_id) == _user_id(app_server, "e2e_agent_a")

    # The manager transfers it to agent B (team B).
    _login_as(page, app_server, "manager", f"/customers/{pool_id}")
    expect(page.locator("#customer-owner")).to_contain_text("e2e_agent_a")
    page.locator("#assign-customer").click()
    page.get_by_role("option", name="e2e_agent_b · e2e 二组").click()
    expect(page.locator("#customer-owner")).to_contain_text("e2e_agent_b")
    assert _owner(app_server, pool_id) == _user_id(app_server, "e2e_agent_b")

    # The manager filters the list by owner: agent B's customers, the transferred one among them.
    page.goto("/customers")
    page.locator("#open-filters").click()
    page.locator("#filter-owner_ids").click()
    page.get_by_role("option", name="e2e_agent_b · e2e 二组").click()
    page.locator("#apply-filters").click()
    expect(page.locator(".filter-chip")).to_contain_text("e2e_agent_b")
    expect(page.locator("#customer-table .customer-row")).to_have_count(2)
    shown = page.locator("#customer-table .customer-row").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-customer-id'))"
    )
    assert sorted(shown) == sorted([str(b_id), str(pool_id)])

    # Agent A no longer sees it.
    _login_as(page, app_server, "e2e_agent_a", f"/customers/{pool_id}")
    expect(page.locator("#customer-not-found")).to_be_visible()
    page.goto("/customers")
    assert str(pool_id) not in _listed(page, pool_name)
