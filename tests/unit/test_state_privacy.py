"""What a tab's Reflex state may keep (meiqia_app/state/privacy.py).

Each test plays the attack or the leak against the app's real state classes
and handlers, processed the way Reflex processes a websocket event: the
browser must receive the secret or the personal value, and the tab as Reflex
stores it (pickled, for the disk and the Redis managers) and as the server
keeps it in memory must not hold it afterwards.
"""

from __future__ import annotations

import json
import stat
import time

import pyotp
import pytest
from reflex.istate.manager.token import BaseStateToken
from reflex.state import State
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import User
from meiqia_app.services.identity import login as auth
from meiqia_app.services.identity import second_factor, sessions
from meiqia_app.state import privacy
from meiqia_app.state.account import AccountState
from meiqia_app.state.base import AppState
from meiqia_app.state.customer_activity import CustomerActivityState
from meiqia_app.state.customer_detail import CustomerDetailState
from meiqia_app.state.customer_list import CustomerListState
from meiqia_app.state.login import LoginState
from tests.unit.tabs import all_states, demo_account, live_token, new_tab, pickled, run, serve, substate


def _cookie(token: str) -> str:
    return f"theme=light; mq_session={token}"


def _phones(served, state_cls=CustomerListState) -> list[str]:
    return [row["phone"] for row in served.value(state_cls, "rows") or []]


# --- the session cookie -------------------------------------------------------------------
def test_the_stored_tab_holds_no_session_cookie_but_handlers_still_get_the_live_one(seeded_db):
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    served = run(serve(tab, CustomerListState, "on_load", cookie=_cookie(token)))
    assert not served.refused and _phones(served)  # the handler resolved the session from the request
    assert token in (tab.router.headers.cookie or "")  # Reflex keeps the request's headers on the tab…
    assert token.encode() not in pickled(tab)  # …but they are stored without the cookie
    reloaded = State._deserialize(tab._serialize())
    assert "cookie" not in reloaded.router_data["headers"] and reloaded.router.headers.cookie == ""
    assert reloaded.router_data["headers"]["host"] == "127.0.0.1:3000"  # the rest is kept


# --- personal data ------------------------------------------------------------------------
def test_a_managers_unmasked_phones_reach_the_browser_and_are_not_kept(seeded_db):
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    served = run(serve(tab, CustomerListState, "on_load", cookie=_cookie(token)))
    phones = [p for p in _phones(served) if p]
    assert phones and all("*" not in p for p in phones)  # unmasked: the manager may see them
    stored = pickled(tab)
    assert [p for p in phones if p.encode() in stored] == []
    assert substate(tab, CustomerListState).rows == []  # not in memory either
    # The list still works from what it keeps: tick a shown row, then the whole page.
    shown_ids = [row["id"] for row in served.value(CustomerListState, "rows")]
    run(
        serve(
            tab,
            CustomerListState,
            "set_row_selected",
            _cookie(token),
            payload={"customer_id": shown_ids[0], "checked": True},
        )
    )
    assert substate(tab, CustomerListState).selected_ids == [shown_ids[0]]
    ticked = run(serve(tab, CustomerListState, "set_page_selected", _cookie(token), payload={"checked": True}))
    assert substate(tab, CustomerListState).selected_ids == shown_ids
    assert ticked.value(CustomerListState, "page_all_selected") is True


def test_the_customer_profile_and_timeline_are_shown_not_kept_and_the_edit_still_saves(seeded_db):
    token = live_token(seeded_db, "manager")
    with read_session() as session:
        from meiqia_app.models import Customer

        customer = session.exec(select(Customer).where(Customer.phone.is_not(None)).order_by(Customer.id)).first()
    tab = new_tab()
    path, query = f"/customers/{customer.id}", {"customer_id": str(customer.id)}
    detail = run(serve(tab, CustomerDetailState, "on_load", _cookie(token), path, query=query))
    assert detail.value(CustomerDetailState, "customer")["phone"] == customer.phone
    timeline = run(serve(tab, CustomerActivityState, "on_load_activity", _cookie(token), path, query=query))
    assert timeline.value(CustomerActivityState, "items")
    stored = pickled(tab)
    assert customer.phone.encode() not in stored and customer.name.encode() not in stored
    assert substate(tab, CustomerDetailState).customer is None
    # Editing works from the id and version the server kept.
    run(serve(tab, CustomerDetailState, "start_edit", _cookie(token), path, query=query))
    run(
        serve(
            tab,
            CustomerDetailState,
            "save",
            _cookie(token),
            path,
            payload={"form": {"company": "隐私测试公司"}},
            query=query,
        )
    )
    with read_session() as session:
        assert session.get(Customer, customer.id).company == "隐私测试公司"


# --- secrets of the login and of the account page -------------------------------------------------
def test_enrolment_secret_recovery_codes_challenge_and_ticket_are_shown_once_never_kept(db):
    account = demo_account(db, "agent")
    with write_session() as session:
        user = session.exec(select(User).where(User.username == "agent")).one()
        user.totp_secret_enc = None  # the next login enrols a new authenticator
        session.add(user)
    tab = new_tab()
    form = {"username": "agent", "password": account["password"]}
    step1 = run(serve(tab, LoginState, "submit_password", path="/login", payload={"form": form}))
    secret = step1.value(LoginState, "enrol_secret")
    challenge = step1.value(LoginState, "challenge")
    assert secret and challenge and step1.value(LoginState, "enrol_qr")
    assert secret.encode() not in pickled(tab) and challenge.encode() not in pickled(tab)
    # The browser sends the challenge back with the code (a hidden field of the form).
    code = pyotp.TOTP(secret).now()
    step2 = run(
        serve(tab, LoginState, "submit_code", path="/login", payload={"form": {"code": code, "challenge": challenge}})
    )
    codes, ticket = step2.value(LoginState, "recovery_codes"), step2.value(LoginState, "ticket")
    assert len(codes) == second_factor.RECOVERY_CODE_COUNT and ticket
    stored = pickled(tab)
    assert [value for value in [secret, ticket, *codes] if value.encode() in stored] == []
    login = substate(tab, LoginState)
    assert (login.recovery_codes, login.ticket, login.enrol_secret, login.challenge) == ([], "", "", "")
    # The click that leaves the codes carries the ticket; it opens a session.
    done = run(serve(tab, LoginState, "finish_recovery", path="/login", payload={"ticket": ticket}))
    script = json.dumps([event.payload for event in done.events], default=str)
    assert "/api/session/claim?ticket=" in script and ticket in script
    assert sessions.resolve_session(auth.claim_ticket(ticket)) is not None


def test_reenrolment_secret_and_new_recovery_codes_are_shown_once_never_kept(db):
    token = live_token(db, "admin")
    account = demo_account(db, "admin")
    tab = new_tab()
    run(serve(tab, AccountState, "start_reenrol", _cookie(token), "/account"))
    # The current password and a code of the next step (the login used this one).
    proof = {
        "reenrol_password": account["password"],
        "reenrol_current_code": pyotp.TOTP(account["totp_secret"]).at(time.time() + 30),
    }
    started = run(serve(tab, AccountState, "verify_reenrol", _cookie(token), "/account", payload={"form": proof}))
    secret, challenge = started.value(AccountState, "reenrol_secret"), started.value(AccountState, "reenrol_challenge")
    assert secret and challenge
    assert secret.encode() not in pickled(tab) and challenge.encode() not in pickled(tab)
    form = {"code": pyotp.TOTP(secret).now(), "challenge": challenge}
    confirmed = run(serve(tab, AccountState, "confirm_reenrol", _cookie(token), "/account", payload={"form": form}))
    codes = confirmed.value(AccountState, "new_recovery_codes")
    assert len(codes) == second_factor.RECOVERY_CODE_COUNT
    assert [c for c in codes if c.encode() in pickled(tab)] == []
    with read_session() as session:
        user = session.exec(select(User).where(User.username == "admin")).one()
        assert second_factor.decrypt_secret(user.totp_secret_enc) == secret  # the re-enrolment took effect


# --- a stolen client token -------------------------------------------------------------------------
def test_a_stolen_client_token_hydrates_an_empty_tab(seeded_db):
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    run(serve(tab, CustomerListState, "on_load", cookie=_cookie(token)))
    run(serve(tab, CustomerListState, "set_q", cookie=_cookie(token), payload={"value": "13"}))
    assert substate(tab, AppState).user_name == "manager"
    # Someone with the tab's client token and no cookie (re)connects: the hydration snapshot.
    hydrated = run(serve(tab, State, "hydrate_and_load", path="/customers", payload={}))
    sent = hydrated.sent()
    assert "manager" not in sent and '"13"' not in sent
    assert substate(tab, AppState).user_name == "" and substate(tab, CustomerListState).q == ""
    assert substate(tab, AppState).perms == []


def test_another_users_session_does_not_inherit_the_tab_but_the_same_session_keeps_it(seeded_db):
    manager = live_token(seeded_db, "manager")
    tab = new_tab()
    run(serve(tab, CustomerListState, "set_q", cookie=_cookie(manager), payload={"value": "王"}))
    run(serve(tab, State, "hydrate_and_load", cookie=_cookie(manager), payload={}))
    assert substate(tab, CustomerListState).q == "王"  # a reload by the same session keeps the search
    agent = live_token(seeded_db, "agent")
    run(serve(tab, CustomerListState, "on_load", cookie=_cookie(agent)))
    assert substate(tab, CustomerListState).q == ""
    assert substate(tab, AppState).user_name == "agent"


def test_a_revoked_session_hydrates_an_empty_tab(seeded_db):
    token = live_token(seeded_db, "manager")
    tab = new_tab()
    run(serve(tab, CustomerListState, "set_q", cookie=_cookie(token), payload={"value": "王"}))
    sessions.logout(token)
    run(serve(tab, State, "hydrate_and_load", cookie=_cookie(token), payload={}))
    assert substate(tab, CustomerListState).q == ""


# --- the declarations ------------------------------------------------------------------------------
def test_ephemeral_declarations_name_real_frontend_vars_and_nothing_computed_depends_on_them():
    for state_cls in privacy._state_classes_below(AppState):
        declared = set(vars(state_cls).get("_ephemeral_vars", ()))
        fields = state_cls.get_fields()
        assert declared <= set(fields), (state_cls.__name__, declared - set(fields))
        assert not [name for name in declared if name.startswith("_")], state_cls.__name__
        # A computed var over a forgotten var would be recomputed from the default.
        for name in privacy.ephemeral_fields(state_cls):
            assert not state_cls._var_dependencies.get(name), (state_cls.__name__, name)


# --- private files ---------------------------------------------------------------------------------
def test_the_disk_manager_writes_a_private_folder_of_private_files_without_secrets(seeded_db, tmp_path, monkeypatch):
    folder = tmp_path / "states"
    folder.mkdir(mode=0o755)
    (folder / "old.pkl").write_bytes(b"from an earlier version")
    (folder / "old.pkl").chmod(0o644)
    monkeypatch.setenv("REFLEX_STATES_WORKDIR", str(folder))
    token = live_token(seeded_db, "manager")

    async def fill_and_store():
        manager = privacy.PrivateStateManagerDisk(_write_debounce_seconds=0)
        async with manager.modify_state(BaseStateToken(ident="client-token-1", cls=State)) as tab:
            served = await serve(tab, CustomerListState, "on_load", cookie=_cookie(token))
            # Values still held when Reflex writes (a write between the handler and its delta).
            substate(tab, LoginState).enrol_secret = "JBSWY3DPEHPK3PXP"
            substate(tab, CustomerListState).rows = list(substate(tab, CustomerListState).rows)
            for state in all_states(tab):
                state._was_touched = True
        await manager.close()
        return served

    served = run(fill_and_store())
    phones = [p for p in _phones(served) if p]
    assert phones
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [path for path in folder.iterdir() if path.is_file()]
    assert len(files) > 10
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {oct(0o600)}
    data = b"".join(path.read_bytes() for path in files)
    assert token.encode() not in data and b"JBSWY3DPEHPK3PXP" not in data
    assert [p for p in phones if p.encode() in data] == []


@pytest.mark.parametrize("header", ["cookie", "Authorization", "proxy-authorization"])
def test_credential_headers_are_dropped_from_stored_router_data(header):
    data = {"headers": {header: "secret-value", "host": "h"}, "pathname": "/"}
    clean = privacy.scrub_router_data(data)
    assert clean["headers"] == {"host": "h"} and data["headers"][header] == "secret-value"


# --- uploads: the live request is the upload request ------------------------------------------------
def test_an_upload_event_carries_the_cookie_of_its_own_request():
    from types import SimpleNamespace

    from reflex_base.event import Event
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from meiqia_app.web import upload_request

    received: list[Event] = []

    class Processor:
        async def enqueue(self, token, event, ev_ctx=None):
            received.append(event)

    processor = Processor()
    upload_request.attach_upload_headers(SimpleNamespace(event_processor=processor))

    async def endpoint(request):  # what Reflex's upload route does: an event without router data
        await processor.enqueue("client-token-1", Event(name="x.handle_upload", payload={}))
        return PlainTextResponse("ok")

    inner = Starlette(
        routes=[Route("/_upload", endpoint, methods=["POST"]), Route("/other", endpoint, methods=["POST"])]
    )
    client = TestClient(upload_request.capture_upload_headers(inner))
    client.post("/_upload", headers={"cookie": "mq_session=upload-cookie"})
    client.post("/other", headers={"cookie": "mq_session=other-cookie"})
    assert received[0].router_data["headers"]["cookie"] == "mq_session=upload-cookie"
    assert received[1].router_data == {}  # only uploads


def test_load_more_shows_the_next_page_after_the_ones_the_server_did_not_keep(seeded_db):
    from meiqia_app.models.activity import Order as CustomerOrder

    token = live_token(seeded_db, "manager")
    with read_session() as session:
        from sqlalchemy import func

        customer_id, _orders = session.exec(
            select(CustomerOrder.customer_id, func.count())
            .group_by(CustomerOrder.customer_id)
            .order_by(func.count().desc())
        ).first()
    tab = new_tab()
    path, query = f"/customers/{customer_id}", {"customer_id": str(customer_id)}
    first = run(serve(tab, CustomerActivityState, "on_load_activity", _cookie(token), path, query=query))
    shown = first.value(CustomerActivityState, "items")
    assert len(shown) == 20 and first.value(CustomerActivityState, "has_more") is True
    more = run(serve(tab, CustomerActivityState, "load_more", _cookie(token), path, query=query))
    both = more.value(CustomerActivityState, "items")
    assert len(both) > 20 and [item["key"] for item in both[:20]] == [item["key"] for item in shown]
    assert len({item["key"] for item in both}) == len(both)
