"""Helpers of the open API tests: a client on the in-process app, keys, and a check of
answers against the OpenAPI document (an independent JSON Schema validator)."""

from __future__ import annotations

import re
import warnings

import jsonschema
from sqlmodel import select

with warnings.catch_warnings():
    # Starlette's TestClient on httpx still works; its successor (httpx2) is not a dependency here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from meiqia_app.db import read_session
from meiqia_app.models import AuditEntry
from meiqia_app.services.identity.rbac import SYSTEM_ACTOR
from meiqia_app.services.integrations import api_keys
from meiqia_app.web.api import guard
from meiqia_app.web.api.app import api_app

ALL_SCOPES = list(api_keys.SCOPES)


def client() -> TestClient:
    guard.buckets.clear()
    return TestClient(api_app(), raise_server_exceptions=True)


def new_key(name: str, scopes) -> str:
    _view, raw = api_keys.create_key(SYSTEM_ACTOR, name, list(scopes))
    return raw


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def audit_rows(action: str) -> list[AuditEntry]:
    with read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all())


_document: dict | None = None


def openapi_document(test_client: TestClient) -> dict:
    global _document
    if _document is None:
        response = test_client.get("/api/v1/openapi.json")
        assert response.status_code == 200
        _document = response.json()
    return _document


def _operation(document: dict, method: str, path: str) -> dict:
    for template, operations in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def assert_conforms(test_client: TestClient, response) -> None:
    """The answer's status is documented for the operation, its content type is the documented
    one and its body validates against the documented schema (Draft 2020-12, as OpenAPI 3.1)."""
    document = openapi_document(test_client)
    request = response.request
    operation = _operation(document, request.method, request.url.path)
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{response.status_code} is not documented for {request.method} {request.url.path}"
    content = documented.get("content")
    if not content:
        assert not response.content, "an answer documented without a body has one"
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{media} is not documented ({list(content)})"
    schema = {**content[media]["schema"], "components": document["components"]}
    jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
