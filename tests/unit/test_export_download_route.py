"""The download route: streams the file once for the session that asked, refuses everyone else."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from starlette.applications import Starlette

from meiqia_app.db import write_session
from meiqia_app.models import UserSession
from meiqia_app.services.exports import downloads as export_downloads
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.identity import sessions
from meiqia_app.services.identity import tokens as auth_tokens
from meiqia_app.state.base import SESSION_COOKIE
from meiqia_app.timeutil import utcnow
from meiqia_app.web import export_routes


def _login_token(actor) -> str:
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


@pytest.fixture()
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(Starlette(routes=export_routes.routes()))


def test_download_route_streams_once_for_the_owning_session_only(seeded_actors, client):
    cookie = _login_token(seeded_actors["manager"])
    actor = sessions.resolve_session(cookie)
    view = export_request.request_export(
        actor,
        {"scope": {"kind": "query", "query": {"sources": ["app"]}}, "fields": ["id", "name"], "format": "csv"},
        start=False,
    )
    export_run.run_export(view.id)
    token = export_downloads.create_download_token(actor, view.id)
    url = f"/api/export/download/{token}"

    other = _login_token(seeded_actors["manager"])  # same user, another browser
    refused = client.get(url, cookies={SESSION_COOKIE: other})
    assert refused.status_code == 403 and "会话" in refused.text
    assert client.get(url).status_code == 403  # no session at all

    ok = client.get(url, cookies={SESSION_COOKIE: cookie})
    assert ok.status_code == 200
    assert ok.content.startswith(b"\xef\xbb\xbf") and "姓名".encode() in ok.content
    assert "attachment" in ok.headers["content-disposition"] and ok.headers["cache-control"] == "no-store"
    again = client.get(url, cookies={SESSION_COOKIE: cookie})
    assert again.status_code == 403
    assert client.get("/api/export/download/not-a-token", cookies={SESSION_COOKIE: cookie}).status_code == 403
