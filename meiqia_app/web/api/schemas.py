"""The open API's request and response bodies (pydantic; they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from meiqia_app.models.activity import CHANNELS, CONVERSATION_CATEGORIES, ORDER_STATUSES
from meiqia_app.models.customer import GENDERS, LIFECYCLE_STAGES, MEMBERSHIP_TIERS, SOURCES, STATUSES
from meiqia_app.services.integrations.api_keys import SCOPES
from meiqia_app.services.integrations.ingest_records import KINDS, MAX_BATCH
from meiqia_app.services.integrations.webhooks import DATA_LEVELS, EVENT_TYPES
from meiqia_app.web.api.custom_field_schema import REF as CUSTOM_FIELDS_REF

Gender = Literal[GENDERS]  # type: ignore[valid-type]
Source = Literal[SOURCES]  # type: ignore[valid-type]
Lifecycle = Literal[LIFECYCLE_STAGES]  # type: ignore[valid-type]
Tier = Literal[MEMBERSHIP_TIERS]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Scope = Literal[SCOPES]  # type: ignore[valid-type]
# The defined custom fields: the schema is made from the live definitions (custom_field_schema.py).
CustomFieldValues = Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": CUSTOM_FIELDS_REF}]})]
MAX_CUSTOM_FIELDS = 300


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URI reference naming the kind of problem (see the docs page).")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="Bad input: one entry per field (field, code, message)."
    )


# --- customers ---------------------------------------------------------------------------------


class TagOut(BaseModel):
    id: int
    name: str
    source: Literal["manual", "rule"]


class Consent(BaseModel):
    marketing: bool
    marketing_at: str | None
    analytics: bool
    analytics_at: str | None


class CustomerOut(BaseModel):
    """A customer. Without ``customers:read_sensitive`` phone, e-mail and address come masked
    (as the console shows them) and birthday and amount spent are null (``masked_fields``)."""

    id: int
    name: str
    gender: Gender
    birthday: str | None = Field(description="YYYY-MM-DD")
    phone: str | None
    email: str | None
    address: str | None
    province: str | None
    city: str | None
    company: str | None
    source: Source
    external_id: str | None
    visitor_id: str | None
    lifecycle_stage: Lifecycle
    membership_tier: Tier
    status: Status
    registered_at: str | None = Field(description="ISO 8601, UTC")
    last_active_at: str | None
    last_login_at: str | None
    first_purchase_at: str | None
    last_purchase_at: str | None
    order_count: int = Field(description="Paid orders")
    total_spent_cents: int | None
    consent: Consent
    custom_attributes: dict[str, str]
    custom_fields: CustomFieldValues = Field(
        description="The defined custom fields by key (see the CustomFields schema); sensitive ones masked "
        "without customers:read_sensitive and named in masked_fields as cf.<key>."
    )
    tags: list[TagOut]
    version: int = Field(description="Send it back in If-Match to PATCH")
    updated_at: str | None
    masked_fields: list[str]
    erasure_pending: bool
    erased: bool


class CustomerPage(BaseModel):
    data: list[CustomerOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class TimelineItemOut(BaseModel):
    kind: Literal["conversation", "order", "event", "note"]
    id: int
    occurred_at: str
    title: str
    summary: str
    detail: str
    via: str = Field(description='"via API: NAME" when a connected system sent it')


class TimelinePage(BaseModel):
    data: list[TimelineItemOut]
    next_cursor: str | None


_TEXT = Annotated[str | None, Field(max_length=300)]


class CustomerFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gender: Gender | None = None
    birthday: str | None = Field(None, description="YYYY-MM-DD", max_length=10)
    phone: _TEXT = None
    email: _TEXT = None
    address: _TEXT = None
    province: _TEXT = None
    city: _TEXT = None
    company: _TEXT = None
    source: Source | None = None
    visitor_id: _TEXT = None
    lifecycle_stage: Lifecycle | None = None
    membership_tier: Tier | None = None
    custom_attributes: dict[str, str | None] | None = Field(
        None, description="Extend fields, merged into the customer's; a null value removes the key."
    )
    custom_fields: CustomFieldValues | None = Field(
        None,
        max_length=MAX_CUSTOM_FIELDS,
        description="Defined custom fields to change, by key (validated by type; null clears; other keys "
        "are left as they are; an unknown key is refused).",
    )
    consent_marketing: bool | None = None
    consent_analytics: bool | None = None


class CustomerCreate(CustomerFields):
    name: str = Field(min_length=1, max_length=300)
    external_id: _TEXT = None


class CustomerPatch(CustomerFields):
    name: str | None = Field(None, min_length=1, max_length=300)
    external_id: _TEXT = None


class CustomerUpsert(CustomerFields):
    name: str | None = Field(None, min_length=1, max_length=300, description="Required when the customer is new.")


class WriteResult(BaseModel):
    id: int
    version: int = Field(description="The customer's version now (If-Match for the next PATCH)")
    created: bool


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(min_length=1, max_length=50)


class TagsOut(BaseModel):
    tags: list[TagOut]


# --- events ------------------------------------------------------------------------------------

_REF = {"type": "string", "maxLength": 64}
EVENT_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "One behaviour record. Each is checked on its own: a bad one is rejected in the answer's "
        "`results`, the others are taken."
    ),
    "required": ["event_id", "type", "customer"],
    "properties": {
        "event_id": {"type": "string", "maxLength": 128, "description": "Your id: sending it again is a no-op."},
        "type": {"type": "string", "enum": list(KINDS)},
        "occurred_at": {"type": "string", "description": "ISO 8601; default: when received"},
        "customer": {
            "type": "object",
            "description": "Who: one of id, external_id, visitor_id, phone (in that order of precedence). "
            "An unknown visitor_id makes a prospect customer (name and source optional).",
            "properties": {
                "id": {"type": "integer"},
                "external_id": _REF,
                "visitor_id": _REF,
                "phone": _REF,
                "name": _REF,
                "source": {"type": "string", "enum": list(SOURCES)},
            },
        },
        "url": {"type": "string", "maxLength": 255, "description": "page_view (required), product_view"},
        "product": {
            "type": "object",
            "description": "product_view: the product by SKU (made when unknown)",
            "properties": {
                "sku": {"type": "string", "maxLength": 32},
                "name": {"type": "string", "maxLength": 128},
                "price_cents": {"type": "integer", "minimum": 0},
            },
        },
        "query": {"type": "string", "maxLength": 200, "description": "search"},
        "conversation_id": {"type": "string", "maxLength": 128, "description": "chat_message, conversation"},
        "direction": {"type": "string", "enum": ["in", "out"], "description": "chat_message: in = from the customer"},
        "text": {"type": "string", "maxLength": 4000, "description": "chat_message"},
        "channel": {"type": "string", "enum": list(CHANNELS)},
        "agent_name": {"type": "string", "maxLength": 64},
        "status": {
            "type": "string",
            "description": "conversation: started | ended; order: " + " | ".join(ORDER_STATUSES),
        },
        "category": {"type": "string", "enum": list(CONVERSATION_CATEGORIES)},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 255},
        "order_id": {"type": "string", "maxLength": 128, "description": "order: your order id"},
        "items": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 32},
                    "name": {"type": "string", "maxLength": 128},
                    "quantity": {"type": "integer", "minimum": 1},
                    "price_cents": {"type": "integer", "minimum": 0},
                },
            },
        },
        "amount_cents": {"type": "integer", "minimum": 0, "description": "order: default the items' sum"},
        "recipient": {
            "type": "object",
            "properties": {"name": _REF, "phone": _REF, "address": {"type": "string", "maxLength": 255}},
        },
    },
}

EventRecord = Annotated[Any, WithJsonSchema(EVENT_RECORD_SCHEMA)]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventRecord] = Field(min_length=1, max_length=MAX_BATCH)


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    customer_id: int | None = None
    created_customer: bool = False
    reason: str | None = None
    field: str | None = None


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


# --- webhooks ----------------------------------------------------------------------------------


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventType] = Field(min_length=1)
    secret: str | None = Field(
        None, min_length=16, max_length=128, description="Signing secret; omitted: one is made and returned once."
    )
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=2048)
    events: list[EventType] | None = Field(None, min_length=1)
    secret: str | None = Field(None, min_length=16, max_length=128)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[EventType]
    enabled: bool
    data_level: Literal[DATA_LEVELS]  # type: ignore[valid-type]
    created_at: str | None
    created_by: str
    updated_at: str | None
    last_success_at: str | None
    failing_since: str | None
    last_error: str
    disabled_at: str | None
    disabled_reason: str
    secret: str | None = Field(None, description="Only in the answer that created it, when it was generated.")


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event_id: str
    event_type: EventType
    customer_id: int | None
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    created_at: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str
    delivered_at: str | None


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
