"""The open API's endpoints: a thin HTTP layer over the services the console uses.

Nothing here reads or writes the database (tests/unit/test_architecture.py):
each endpoint turns the request into a service call with the key's Actor and
the service's answer into JSON, so masking, validation, read-only customers,
erasure and row scope apply exactly as in the console.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import list_field_params, timeline
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers import profile as customers
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import Conflict, NotFound, ValidationError
from meiqia_app.services.identity import rbac
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.services.integrations import ingest, webhooks
from meiqia_app.services.tags import assignments as customer_tags
from meiqia_app.web.api import problems
from meiqia_app.web.api.schemas import (
    CustomerCreate,
    CustomerOut,
    CustomerPage,
    CustomerPatch,
    CustomerUpsert,
    DeliveryList,
    DeliveryOut,
    EventsIn,
    EventsOut,
    Lifecycle,
    TagsIn,
    TagsOut,
    TimelinePage,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WriteResult,
)

MAX_ID = 2**53 - 1
CustomerId = Annotated[int, Path(ge=1, le=MAX_ID, description="The customer's id")]
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Same key + same body within 24 h → the first answer, nothing done twice.",
    ),
]


class BadParameters(Exception):
    """Query parameters the service refused (a ValidationError keyed by parameter): answered 400."""

    def __init__(self, error: ValidationError):
        super().__init__("bad parameters")
        self.error = error


class PreconditionFailed(Exception):
    def __init__(self, current_version: int | None = None, required: bool = False):
        super().__init__("precondition")
        self.current_version = current_version
        self.required = required


def lang_of(request: Request) -> str:
    return problems.lang_of(request.headers.get("accept-language"))


def actor_of(request: Request) -> Actor:
    actor = request.scope.get("state", {}).get("api_actor")
    if actor is None:  # the guard sets it for every request it lets through
        from meiqia_app.services.errors import NotAuthenticated

        raise NotAuthenticated()
    return actor


def needs(permission: str):
    """A dependency: the key's actor, refused (403, audited) without the permission."""

    def dependency(request: Request) -> Actor:
        actor = actor_of(request)
        rbac.require(
            actor,
            permission,
            action="open_api.read" if request.method in ("GET", "HEAD") else "open_api.write",
            target_type="api",
            target_id=request.url.path[:64],
        )
        return actor

    return dependency


def _problem_responses(*statuses: int) -> dict:
    return {status: {"description": problems_description(status)} for status in statuses}


def problems_description(status: int) -> str:
    names = [name for name, (code, _t, _m) in problems.PROBLEMS.items() if code == status]
    return "Problem: " + ", ".join(names)


COMMON = (401, 403, 413, 422, 429, 500, 503)

router = APIRouter(prefix="/api/v1")


def _customer(record) -> dict:
    return dataclasses.asdict(record)


def _version_from(if_match: str | None) -> int:
    if if_match is None or not if_match.strip():
        raise PreconditionFailed(required=True)
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit() or len(value) > 12:
        raise ValidationError.single("If-Match", "error.bad_number")
    return int(value)


# --- customers ------------------------------------------------------------------------------------


@router.get(
    "/customers",
    response_model=CustomerPage,
    tags=["customers"],
    summary="Search and filter customers (cursor pages)",
    description=(
        "The list page's search and filters. Custom fields filter by their key: `cf.<key>=<value>` "
        "(select: option id; multi select: holds it; yes/no: true / false; text: equals; repeat a "
        "select's or a text field's parameter for any of them), `cf.<key>.min` / `cf.<key>.max` "
        "(number, money in yuan, percent, date, datetime; inclusive) and `cf.<key>.empty=true|false`. "
        "The parameters of every defined field are listed below. An unknown key or a bad value is "
        "400 naming the parameter; a sensitive field needs customers:read_sensitive (else 403)."
    ),
    responses=_problem_responses(400, *COMMON),
)
def list_customers(
    request: Request,
    actor: Annotated[Actor, Depends(needs("customer.view"))],
    q: Annotated[str, Query(max_length=100, description="As the list page's search box")] = "",
    tag: Annotated[list[str], Query(max_length=20, description="Tag names; customers with all of them")] = [],  # noqa: B006
    lifecycle: Annotated[list[Lifecycle], Query(max_length=5)] = [],  # noqa: B006
    updated_since: Annotated[
        str,
        Query(
            max_length=40,
            description="ISO 8601: profiles changed since; sorts by update time",
            json_schema_extra={"format": "date-time"},
        ),
    ] = "",
    cursor: Annotated[str, Query(max_length=500)] = "",
    limit: Annotated[int, Query(ge=1, le=customer_list.MAX_PAGE_SIZE)] = 50,
):
    try:
        # The list's own custom field filters (services/customers/list_field_params.py).
        custom = list_field_params.filters_from_params(actor, request.query_params.multi_items())
    except ValidationError as error:
        raise BadParameters(error) from None
    tag_ids = customer_tags.tag_ids_by_name(actor, tag) if tag else []
    if any(tag_id is None for tag_id in tag_ids):
        return {"data": [], "next_cursor": None}
    raw = {"q": q, "tags_all": tag_ids, "lifecycle": list(lifecycle), "status": "all"}
    if custom.filters:
        raw["custom_filters"] = list(custom.filters)
    if updated_since:
        raw.update(updated_since=updated_since, sort="updated_at", direction="asc")
    query = ListQuery.from_dict(raw)
    page = customer_list.list_customer_records(actor, query, cursor, limit)
    return {"data": [_customer(r) for r in page.records], "next_cursor": page.next_cursor or None}


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerOut,
    tags=["customers"],
    summary="One customer: profile, tags, lifecycle, consent, version",
    responses=_problem_responses(404, *COMMON),
)
def get_customer(customer_id: CustomerId, actor: Annotated[Actor, Depends(needs("customer.view"))], response: Response):
    record = customers.get_customer_record(actor, customer_id)
    response.headers["ETag"] = f'"{record.version}"'
    return _customer(record)


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=TimelinePage,
    tags=["customers"],
    summary="Orders, conversations, events and notes, newest first",
    responses=_problem_responses(404, *COMMON),
)
def get_timeline(
    customer_id: CustomerId,
    request: Request,
    actor: Annotated[Actor, Depends(needs("customer.view"))],
    cursor: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=timeline.MAX_LIMIT)] = timeline.DEFAULT_LIMIT,
):
    page = timeline.customer_timeline(actor, customer_id, None, cursor, limit, lang_of(request))
    return {
        "data": [
            {
                "kind": item.kind,
                "id": item.id,
                "occurred_at": item.occurred_at,
                "title": item.title,
                "summary": item.summary,
                "detail": item.detail,
                "via": item.via,
            }
            for item in page.items
        ],
        "next_cursor": page.next_cursor or None,
    }


def _fields(body) -> dict:
    fields = body.model_dump(exclude_unset=True)
    if fields.get("custom_fields") is None:
        fields.pop("custom_fields", None)  # null: no custom field changes
    return fields


@contextlib.contextmanager
def _body_field_names():
    """A write's bad custom values are named as the body names them: ``custom_fields.<key>``
    (the services name a custom field ``cf.<key>`` wherever built-in fields are named)."""
    try:
        yield
    except ValidationError as error:
        if not any(name.startswith(FIELD_PREFIX) for name in error.field_errors):
            raise
        renamed = {
            ("custom_fields." + name[len(FIELD_PREFIX) :]) if name.startswith(FIELD_PREFIX) else name: problem
            for name, problem in error.field_errors.items()
        }
        raise ValidationError(renamed, error.message_key, **error.params) from None


@router.post(
    "/customers",
    status_code=201,
    response_model=WriteResult,
    tags=["customers"],
    summary="Create a customer (409 with the existing id for a known phone, e-mail or external id)",
    responses=_problem_responses(409, *COMMON),
)
def create_customer(
    body: CustomerCreate,
    actor: Annotated[Actor, Depends(needs("customer.create"))],
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    with _body_field_names():
        new_id = customer_edit.create_customer(actor, _fields(body))
    response.headers["Location"] = f"/api/v1/customers/{new_id}"
    response.headers["ETag"] = '"1"'
    return {"id": new_id, "version": 1, "created": True}


@router.put(
    "/customers/by-external-id/{external_id}",
    response_model=WriteResult,
    tags=["customers"],
    summary="Create or update the customer with this external id (member sync)",
    responses={201: {"description": "Created", "model": WriteResult}, **_problem_responses(409, *COMMON)},
)
def upsert_customer(
    external_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: CustomerUpsert,
    actor: Annotated[Actor, Depends(needs("customer.edit"))],
    response: Response,
):
    rbac.require(actor, "customer.create", action="open_api.upsert", target_type="api", target_id="upsert")
    with _body_field_names():
        customer_id, created, version = customer_edit.upsert_by_external_id(actor, external_id, _fields(body))
    response.status_code = 201 if created else 200
    response.headers["ETag"] = f'"{version}"'
    if created:
        response.headers["Location"] = f"/api/v1/customers/{customer_id}"
    return {"id": customer_id, "version": version, "created": created}


@router.patch(
    "/customers/{customer_id}",
    response_model=WriteResult,
    tags=["customers"],
    summary="Change fields of a customer; If-Match: the version read (412 when stale)",
    responses=_problem_responses(404, 409, 412, 428, *COMMON),
)
def patch_customer(
    customer_id: CustomerId,
    body: CustomerPatch,
    actor: Annotated[Actor, Depends(needs("customer.edit"))],
    response: Response,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=40, description='"<version>"')] = None,
):
    expected = _version_from(if_match)
    try:
        with _body_field_names():
            version = customer_edit.update_customer(actor, customer_id, expected, _fields(body))
    except Conflict:
        current = None
        if actor.can("customer.view"):
            try:
                current = customers.get_customer_record(actor, customer_id).version
            except NotFound:
                current = None
        raise PreconditionFailed(current) from None
    response.headers["ETag"] = f'"{version}"'
    return {"id": customer_id, "version": version, "created": False}


@router.post(
    "/customers/{customer_id}/tags",
    response_model=TagsOut,
    tags=["customers"],
    summary="Give the customer tags (existing tags, by name)",
    responses=_problem_responses(404, 409, *COMMON),
)
def add_tags(
    customer_id: CustomerId,
    body: TagsIn,
    actor: Annotated[Actor, Depends(needs("tag.assign"))],
    idempotency_key: IdempotencyKey = None,
):
    chips = customer_tags.add_tags(actor, customer_id, list(body.tags))
    return {"tags": [{"id": c.id, "name": c.name, "source": c.source} for c in chips]}


@router.delete(
    "/customers/{customer_id}/tags/{tag}",
    status_code=204,
    tags=["customers"],
    summary="Take a tag off the customer",
    responses=_problem_responses(404, 409, *COMMON),
)
def remove_tag(
    customer_id: CustomerId,
    tag: Annotated[str, Path(min_length=1, max_length=32)],
    actor: Annotated[Actor, Depends(needs("tag.assign"))],
):
    if not customer_tags.remove_tag_by_name(actor, customer_id, tag):
        raise NotFound()
    return Response(status_code=204)


# --- events -------------------------------------------------------------------------------------


@router.post(
    "/events",
    response_model=EventsOut,
    tags=["events"],
    summary="Behaviour records, up to 1,000 per batch; one result per record",
    responses=_problem_responses(*COMMON),
)
def post_events(
    body: EventsIn,
    actor: Annotated[Actor, Depends(needs("event.ingest"))],
    idempotency_key: IdempotencyKey = None,
):
    results = ingest.ingest(actor, list(body.events))
    return {
        "accepted": sum(r.status == "accepted" for r in results),
        "duplicates": sum(r.status == "duplicate" for r in results),
        "rejected": sum(r.status == "rejected" for r in results),
        # Flat dataclasses: a copy of each one's fields (dataclasses.asdict deep-copies
        # recursively: 3.5 ms for 500 results, under the GIL the agents' events wait for).
        "results": [dict(vars(r)) for r in results],
    }


# --- webhooks -----------------------------------------------------------------------------------


def _webhook(view, secret: str | None = None) -> dict:
    return {**dataclasses.asdict(view), "secret": secret or None}


@router.get(
    "/webhooks",
    response_model=list[WebhookOut],
    tags=["webhooks"],
    summary="The webhook endpoints",
    responses=_problem_responses(*COMMON),
)
def list_webhooks(actor: Annotated[Actor, Depends(needs("webhook.manage"))]):
    return [_webhook(v) for v in webhooks.list_endpoints(actor)]


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookOut,
    tags=["webhooks"],
    summary="Add an endpoint (loopback and private addresses are refused)",
    responses=_problem_responses(*COMMON),
)
def create_webhook(
    body: WebhookIn,
    actor: Annotated[Actor, Depends(needs("webhook.manage"))],
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    view, secret = webhooks.create_endpoint(actor, body.url, list(body.events), body.secret, body.enabled)
    response.headers["Location"] = f"/api/v1/webhooks/{view.id}"
    return _webhook(view, secret)


@router.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    tags=["webhooks"],
    summary="One endpoint, with why it is disabled when it is",
    responses=_problem_responses(404, *COMMON),
)
def get_webhook(webhook_id: WebhookId, actor: Annotated[Actor, Depends(needs("webhook.manage"))]):
    return _webhook(webhooks.get_endpoint(actor, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    tags=["webhooks"],
    summary="Change url, events, secret or enabled",
    responses=_problem_responses(404, *COMMON),
)
def patch_webhook(webhook_id: WebhookId, body: WebhookPatch, actor: Annotated[Actor, Depends(needs("webhook.manage"))]):
    return _webhook(webhooks.update_endpoint(actor, webhook_id, body.model_dump(exclude_unset=True)))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    tags=["webhooks"],
    summary="Remove an endpoint and its delivery log",
    responses=_problem_responses(404, *COMMON),
)
def delete_webhook(webhook_id: WebhookId, actor: Annotated[Actor, Depends(needs("webhook.manage"))]):
    webhooks.delete_endpoint(actor, webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    tags=["webhooks"],
    summary="The delivery log, newest first",
    responses=_problem_responses(404, *COMMON),
)
def list_deliveries(
    webhook_id: WebhookId,
    actor: Annotated[Actor, Depends(needs("webhook.manage"))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
):
    views = webhooks.list_deliveries(actor, webhook_id, limit, before_id)
    return {"data": [dataclasses.asdict(v) for v in views]}


@router.post(
    "/webhooks/deliveries/{delivery_id}/resend",
    response_model=DeliveryOut,
    status_code=202,
    tags=["webhooks"],
    summary="Send a delivery again (a new delivery of the same event)",
    responses=_problem_responses(404, *COMMON),
)
def resend_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    actor: Annotated[Actor, Depends(needs("webhook.manage"))],
    idempotency_key: IdempotencyKey = None,
):
    return dataclasses.asdict(webhooks.resend_delivery(actor, delivery_id))


def bad_parameters_response(error: BadParameters, request: Request) -> JSONResponse:
    from meiqia_app.i18n import tr

    lang = lang_of(request)
    errors = problems.field_errors(error.error, lang)
    status, body = problems.problem(
        "bad-parameter",
        detail=errors[0]["message"] if errors else tr(lang, "error.validation"),
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(body, status_code=status, media_type=problems.MEDIA_TYPE)


def precondition_response(error: PreconditionFailed, request: Request) -> JSONResponse:
    lang = lang_of(request)
    from meiqia_app.i18n import tr

    if error.required:
        status, body = problems.problem(
            "precondition-required", detail=tr(lang, "api.if_match_required"), instance=request.url.path
        )
    else:
        status, body = problems.problem(
            "precondition-failed",
            detail=tr(lang, "api.version_stale"),
            instance=request.url.path,
            current_version=error.current_version,
        )
    return JSONResponse(body, status_code=status, media_type=problems.MEDIA_TYPE)
