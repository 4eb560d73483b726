"""The open API application (FastAPI) and its place in front of Reflex's backend.

``mount`` is one of the app's ``api_transformer`` steps (meiqia_app.py):
requests under ``/api/v1`` and the docs page ``/api/docs`` go to the API,
everything else to Reflex (and the other routes) untouched. The API runs in
the same process, on the same services and database as the console.
"""

from __future__ import annotations

import functools
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meiqia_app.services.errors import AppError
from meiqia_app.web.api import custom_field_schema, docs_page, problems, routes
from meiqia_app.web.api.guard import ApiGuard
from meiqia_app.web.api.schemas import Problem

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
OPENAPI_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/api/docs"
PREFIXES = ("/api/v1/", "/api/v1")


def _problem(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=problems.MEDIA_TYPE, headers=headers)


def _lang(request: Request) -> str:
    return problems.lang_of(request.headers.get("accept-language"))


async def _app_error(request: Request, error: AppError) -> JSONResponse:
    status, body = problems.from_app_error(error, _lang(request), request.url.path)
    return _problem(status, body, {"Retry-After": "1"} if status == 503 else None)


async def _request_validation(request: Request, error: RequestValidationError) -> JSONResponse:
    from meiqia_app.i18n import tr

    lang = _lang(request)
    errors = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path", "header")]
        errors.append(
            {
                "field": ".".join(location) or str((item.get("loc") or ["body"])[0]),
                "code": str(item.get("type", "invalid")),
                "message": str(item.get("msg", ""))[:300],
            }
        )
    status, body = problems.problem(
        "validation", detail=tr(lang, "error.validation"), instance=request.url.path, errors=errors
    )
    return _problem(status, body)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    name = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(error.status_code)
    if name is None:
        name = "validation" if 400 <= error.status_code < 500 else "internal"
    status, body = problems.problem(name, instance=request.url.path)
    return _problem(status, body, getattr(error, "headers", None))


async def _precondition(request: Request, error: routes.PreconditionFailed) -> JSONResponse:
    return routes.precondition_response(error, request)


async def _bad_parameters(request: Request, error: routes.BadParameters) -> JSONResponse:
    return routes.bad_parameters_response(error, request)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("open API request failed: %s %s", request.method, request.url.path)
    status, body = problems.problem("internal", instance=request.url.path)
    return _problem(status, body)


def _problem_content() -> dict:
    return {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _custom_openapi(app: FastAPI) -> dict:
    # The CustomFields schema follows the field definitions: a change to them (in this process
    # or, within the catalogue's cache time, another) makes the document again.
    fingerprint = custom_field_schema.fingerprint()
    if app.openapi_schema and app.state.openapi_fingerprint == fingerprint:
        return app.openapi_schema
    schema = get_openapi(
        title="美洽客户数据 Open API",
        version=API_VERSION,
        openapi_version="3.1.0",
        summary="Customers, behaviour ingestion and webhooks of 美洽客户数据",
        description=docs_page.INTRO_MARKDOWN,
        routes=app.routes,
        tags=[
            {"name": "customers", "description": "Read, search, create, update and tag customers."},
            {"name": "events", "description": "Behaviour records from the chat, the website and the shop."},
            {"name": "webhooks", "description": "Signed notifications of customer changes."},
        ],
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["schemas"][custom_field_schema.SCHEMA_NAME] = custom_field_schema.custom_fields_schema()
    listing = schema["paths"].get("/api/v1/customers", {}).get("get")
    if listing is not None:
        # One set of filter parameters per defined field (cf.<key>, .min / .max, .empty).
        listing.setdefault("parameters", []).extend(custom_field_schema.filter_parameters())
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer mqk_… (python -m meiqia_app create-api-key, or /admin/api-keys)",
        }
    }
    schema["security"] = [{"apiKey": []}]
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if status.isdigit() and int(status) >= 400:
                    response["content"] = _problem_content()
                    response.setdefault("description", "Problem details (RFC 9457)")
            for status in ("401", "403", "413", "422", "429", "500", "503"):
                responses.setdefault(
                    status,
                    {"description": routes.problems_description(int(status)), "content": _problem_content()},
                )
            if "429" in responses:
                responses["429"]["headers"] = {
                    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
                }
            if "503" in responses:
                responses["503"]["headers"] = {
                    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
                }
    app.openapi_schema = schema
    app.state.openapi_fingerprint = fingerprint
    return schema


def build_app() -> FastAPI:
    app = FastAPI(
        title="美洽客户数据 Open API",
        version=API_VERSION,
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(routes.router)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(routes.PreconditionFailed, _precondition)
    app.add_exception_handler(routes.BadParameters, _bad_parameters)
    app.add_exception_handler(Exception, _unexpected)
    app.openapi = functools.partial(_custom_openapi, app)  # type: ignore[method-assign]

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(
            docs_page.render(app.openapi()),
            headers={
                # Everything is in the page: no script, no font, no stylesheet from anywhere else.
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                "Cache-Control": "no-cache",
            },
        )

    return app


@functools.cache
def api_app():
    """The API with its guard (one per process)."""
    return ApiGuard(build_app())


def is_api_path(path: str) -> bool:
    return path == DOCS_PATH or path == "/api/v1" or path.startswith("/api/v1/")


def mount(inner):
    """The ``api_transformer`` step: the open API in front of everything else."""
    api = api_app()

    async def app(scope, receive, send):
        if scope["type"] == "http" and is_api_path(scope.get("path", "")):
            await api(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app
