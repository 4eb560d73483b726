"""/_upload: the request's own session cookie, the permission and the size are checked
before the body is read, and the handler works as the cookie's user."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from meiqia_app.config import get_settings, reload_settings
from meiqia_app.db import write_session
from meiqia_app.models import UserSession
from meiqia_app.services.errors import NotAuthenticated, PermissionDenied
from meiqia_app.services.identity import sessions
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.state.base import SESSION_COOKIE
from meiqia_app.state.customer_import import CustomerImportState
from meiqia_app.state.uploads import UPLOAD_GRANTS, upload_actor
from meiqia_app.timeutil import utcnow
from meiqia_app.web.upload_guard import UploadGuard, upload_path
from tests.unit.test_auth import audit_entries

HANDLER = f"{CustomerImportState.get_full_name()}.handle_upload"


def session_for(actor) -> str:
    token = auth_tokens.new_token()
    with write_session() as session:
        session.add(
            UserSession(
                token_hash=auth_tokens.token_hash(token),
                user_id=actor.user_id,
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
    return token


class FakeReflexUpload:
    """Stands in for Reflex's upload route: streams the body to a file, like Starlette's form parser."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.calls = 0
        self.grant_user = None

    async def __call__(self, scope, receive, send):
        self.calls += 1
        request = Request(scope, receive)
        grant = UPLOAD_GRANTS.get(request.headers.get("reflex-client-token", ""))
        self.grant_user = grant.actor.username if grant else None
        target = self.folder / f"upload-{self.calls}.bin"
        try:
            with target.open("wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
        except ClientDisconnect:
            target.unlink()  # what Starlette does with its temporary files
            await Response()(scope, receive, send)
            return
        await JSONResponse({"stored": target.stat().st_size})(scope, receive, send)


@pytest.fixture()
def small_cap(monkeypatch):
    monkeypatch.setenv("MEIQIA_MAX_UPLOAD_MB", "1")
    reload_settings()
    yield get_settings().max_upload_bytes
    monkeypatch.undo()
    reload_settings()


@pytest.fixture()
def guarded(tmp_path, small_cap):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    folder = tmp_path / "received"
    folder.mkdir()
    inner = FakeReflexUpload(folder)
    return TestClient(UploadGuard(inner)), inner, folder


def post(client, body, *, cookie: str | None = None, handler: str = HANDLER, token: str = "tab-1", **kwargs):
    cookies = {SESSION_COOKIE: cookie} if cookie else {}
    headers = {"Reflex-Client-Token": token, "Reflex-Event-Handler": handler, **kwargs.pop("headers", {})}
    return client.post(upload_path(), content=body, headers=headers, cookies=cookies, **kwargs)


def test_no_cookie_is_refused_before_the_body_is_read(guarded):
    client, inner, folder = guarded
    response = post(client, b"x" * 500_000)
    assert response.status_code == 401
    assert inner.calls == 0 and list(folder.iterdir()) == []


def test_a_dead_session_or_a_client_token_alone_is_refused(guarded, actors):
    client, inner, folder = guarded
    token = session_for(actors["manager"])
    sessions.logout(token)
    assert post(client, b"data", cookie=token).status_code == 401
    assert post(client, b"data", cookie="not-a-session").status_code == 401
    assert inner.calls == 0 and list(folder.iterdir()) == []


def test_a_user_without_the_import_permission_is_refused_and_audited(guarded, actors):
    client, inner, folder = guarded
    response = post(client, b"data", cookie=session_for(actors["agent"]))
    assert response.status_code == 403
    assert inner.calls == 0 and list(folder.iterdir()) == []
    refusal = audit_entries("upload")[-1]
    assert refusal.result == "refused" and refusal.actor_name == "agent"
    assert json.loads(refusal.details)["missing_permission"] == "customer.import"


@pytest.mark.parametrize("handler", ["", "reflex___state____state.nope.handle_upload", HANDLER + "x"])
def test_only_declared_upload_handlers_are_reachable(guarded, actors, handler):
    client, inner, _folder = guarded
    assert post(client, b"data", cookie=session_for(actors["manager"]), handler=handler).status_code == 403
    assert inner.calls == 0


def test_a_declared_size_over_the_cap_is_refused_unread(guarded, actors, small_cap):
    client, inner, folder = guarded
    response = post(client, b"x" * (small_cap + 200_000), cookie=session_for(actors["manager"]))
    assert response.status_code == 413
    assert inner.calls == 0 and list(folder.iterdir()) == []
    assert json.loads(audit_entries("upload")[-1].details)["reason"] == "too_large"


def test_a_streamed_body_over_the_cap_is_cut_off_with_413(guarded, actors, small_cap):
    client, inner, folder = guarded

    def chunks():  # no Content-Length: the size is only known while reading
        for _ in range(40):
            yield b"x" * 65536

    response = post(client, chunks(), cookie=session_for(actors["manager"]))
    assert response.status_code == 413
    assert inner.calls == 1 and list(folder.iterdir()) == []  # the partial file was dropped


def test_an_accepted_upload_belongs_to_the_cookies_user_and_the_grant_ends_with_it(guarded, actors):
    client, inner, folder = guarded
    response = post(client, b"name,phone\n", cookie=session_for(actors["manager"]), token="tab-7")
    assert response.status_code == 200 and response.json() == {"stored": 11}
    assert inner.grant_user == "manager"
    assert UPLOAD_GRANTS.get("tab-7") is None


def test_the_handler_takes_the_user_from_the_grant_not_from_the_tab(actors):
    from meiqia_app.state.uploads import UploadGrant

    manager, admin = actors["manager"], actors["admin"]
    grant = UploadGrant(session_for(admin), sessions.resolve_session(session_for(admin)), "")
    assert UPLOAD_GRANTS.open("tab-9", grant)
    try:
        # The tab belongs to the manager (its websocket logged in as manager); the request's cookie is the admin's.
        with pytest.raises(PermissionDenied):
            upload_actor("tab-9", manager.username)
        assert upload_actor("tab-9", admin.username).username == "admin"
    finally:
        UPLOAD_GRANTS.close("tab-9", grant)
    with pytest.raises(NotAuthenticated):  # no upload request open for that tab: nobody
        upload_actor("tab-9", admin.username)


def test_a_session_revoked_during_the_upload_no_longer_counts(actors):
    from meiqia_app.state.uploads import UploadGrant

    token = session_for(actors["manager"])
    grant = UploadGrant(token, sessions.resolve_session(token), "")
    assert UPLOAD_GRANTS.open("tab-10", grant)
    try:
        sessions.logout(token)
        with pytest.raises(NotAuthenticated):
            upload_actor("tab-10", "manager")
    finally:
        UPLOAD_GRANTS.close("tab-10", grant)


def test_one_upload_per_tab_at_a_time(actors):
    from meiqia_app.state.uploads import UploadGrant

    first = UploadGrant("a", actors["manager"], "")
    second = UploadGrant("b", actors["admin"], "")
    assert UPLOAD_GRANTS.open("tab-11", first)
    try:
        assert not UPLOAD_GRANTS.open("tab-11", second)
        UPLOAD_GRANTS.close("tab-11", second)  # closing somebody else's grant does nothing
        assert UPLOAD_GRANTS.get("tab-11") is first
    finally:
        UPLOAD_GRANTS.close("tab-11", first)
