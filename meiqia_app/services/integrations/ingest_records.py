"""Parsing of one behaviour record (``POST /api/v1/events``, services/integrations/ingest.py): no
database. A record that cannot be taken raises :class:`Reject` with the reason and the field
its result names."""

from __future__ import annotations

import dataclasses
import datetime as dt

from meiqia_app.models.activity import CHANNELS, CONVERSATION_CATEGORIES, ORDER_STATUSES
from meiqia_app.models.customer import SOURCES
from meiqia_app.services.customers.validation import normalize_phone
from meiqia_app.timeutil import as_utc

KINDS = ("page_view", "product_view", "search", "login", "chat_message", "conversation", "order")
EVENT_KINDS = ("page_view", "product_view", "search", "login")
MAX_BATCH = 1000
MAX_EVENT_ID = 128
MAX_REF = 128
MAX_TEXT = 4000
MAX_URL = 255
MAX_ITEMS = 100
MAX_CENTS = 10_000_000_000
MAX_QUANTITY = 10_000
FUTURE_SLACK = dt.timedelta(minutes=10)
OLDEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
REF_KEYS = ("id", "external_id", "visitor_id", "phone")


class Reject(Exception):
    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclasses.dataclass
class Record:
    index: int
    event_id: str
    kind: str
    at: dt.datetime
    ref: tuple[str, object]  # (id | external_id | visitor_id | phone, value)
    prospect: dict
    data: dict
    customer_id: int | None = None
    created_customer: bool = False


def _text(record: dict, field: str, limit: int, required: bool = False, prefix: str = "") -> str | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Reject("required", prefix + field)
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Reject("invalid", prefix + field)
    text = str(value).strip()
    if len(text) > limit:
        raise Reject("too_long", prefix + field)
    if "\x00" in text:
        raise Reject("invalid", prefix + field)
    return text


def _int(record: dict, field: str, low: int, high: int, prefix: str = "", required: bool = False) -> int | None:
    value = record.get(field)
    if value is None:
        if required:
            raise Reject("required", prefix + field)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Reject("invalid", prefix + field)
    return value


def _choice(record: dict, field: str, choices, default=None, prefix: str = ""):
    value = record.get(field)
    if value is None:
        return default
    if value not in choices:
        raise Reject("invalid", prefix + field)
    return value


def _moment(value, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    if not isinstance(value, str) or len(value) > 40:
        raise Reject("invalid", "occurred_at")
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Reject("invalid", "occurred_at") from None
    moment = as_utc(moment)
    if moment > now + FUTURE_SLACK or moment < OLDEST:
        raise Reject("out_of_range", "occurred_at")
    return moment


def _customer_ref(record: dict) -> tuple[tuple[str, object], dict]:
    """(the reference used, the prospect's details for an unknown visitor)."""
    customer = record.get("customer")
    if not isinstance(customer, dict):
        raise Reject("required", "customer")
    for key in REF_KEYS:
        value = customer.get(key)
        if value is None or value == "":
            continue
        if key == "id":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise Reject("invalid", "customer.id")
            return (key, value), {}
        if not isinstance(value, str) or len(value.strip()) > 64 or not value.strip():
            raise Reject("invalid", f"customer.{key}")
        value = value.strip()
        if key == "phone":
            try:
                value = normalize_phone(value)
            except ValueError:
                raise Reject("invalid", "customer.phone") from None
        prospect = {}
        if key == "visitor_id":
            name = customer.get("name")
            if name is not None and (not isinstance(name, str) or len(name.strip()) > 64):
                raise Reject("invalid", "customer.name")
            source = customer.get("source")
            if source is not None and source not in SOURCES:
                raise Reject("invalid", "customer.source")
            prospect = {"name": (name or "").strip(), "source": source}
        return (key, value), prospect
    raise Reject("required", "customer")


def _items(record: dict) -> list[dict]:
    raw = record.get("items")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
        raise Reject("invalid", "items")
    items = []
    for position, item in enumerate(raw):
        prefix = f"items.{position}."
        if not isinstance(item, dict):
            raise Reject("invalid", f"items.{position}")
        sku = _text(item, "sku", 32, prefix=prefix)
        name = _text(item, "name", 128, prefix=prefix)
        if not sku and not name:
            raise Reject("required", prefix + "name")
        quantity = _int(item, "quantity", 1, MAX_QUANTITY, prefix=prefix) or 1
        price = _int(item, "price_cents", 0, MAX_CENTS, prefix=prefix) or 0
        items.append({"sku": sku, "name": name or sku, "quantity": quantity, "price_cents": price})
    return items


def parse_record(index: int, record, now: dt.datetime) -> Record:
    if not isinstance(record, dict):
        raise Reject("invalid", "record")
    event_id = _text(record, "event_id", MAX_EVENT_ID, required=True)
    kind = record.get("type")
    if kind not in KINDS:
        raise Reject("required" if kind is None else "invalid", "type")
    at = _moment(record.get("occurred_at"), now)
    ref, prospect = _customer_ref(record)
    data: dict = {}
    if kind == "page_view":
        data["url"] = _text(record, "url", MAX_URL, required=True)
    elif kind == "product_view":
        product = record.get("product")
        if not isinstance(product, dict):
            raise Reject("required", "product")
        data["sku"] = _text(product, "sku", 32, required=True, prefix="product.")
        data["name"] = _text(product, "name", 128, prefix="product.")
        data["price_cents"] = _int(product, "price_cents", 0, MAX_CENTS, prefix="product.")
        data["url"] = _text(record, "url", MAX_URL)
    elif kind == "search":
        data["query"] = _text(record, "query", 200, required=True)
    elif kind == "chat_message":
        data["conversation_id"] = _text(record, "conversation_id", MAX_REF, required=True)
        data["direction"] = _choice(record, "direction", ("in", "out"), "in")
        data["text"] = _text(record, "text", MAX_TEXT, required=True)
        data["channel"] = _choice(record, "channel", CHANNELS)
        data["agent_name"] = _text(record, "agent_name", 64)
    elif kind == "conversation":
        data["conversation_id"] = _text(record, "conversation_id", MAX_REF, required=True)
        data["status"] = _choice(record, "status", ("started", "ended"), "started")
        data["channel"] = _choice(record, "channel", CHANNELS)
        data["agent_name"] = _text(record, "agent_name", 64)
        data["category"] = _choice(record, "category", CONVERSATION_CATEGORIES)
        data["rating"] = _int(record, "rating", 1, 5)
        data["summary"] = _text(record, "summary", 255)
    elif kind == "order":
        data["order_id"] = _text(record, "order_id", MAX_REF, required=True)
        data["status"] = _choice(record, "status", ORDER_STATUSES, "pending")
        data["items"] = _items(record)
        data["amount_cents"] = _int(record, "amount_cents", 0, MAX_CENTS)
        recipient = record.get("recipient")
        if recipient is not None:
            if not isinstance(recipient, dict):
                raise Reject("invalid", "recipient")
            data["recipient"] = {
                "recipient_name": _text(recipient, "name", 64, prefix="recipient."),
                "recipient_phone": _text(recipient, "phone", 32, prefix="recipient."),
                "shipping_address": _text(recipient, "address", 255, prefix="recipient."),
            }
    return Record(index=index, event_id=event_id, kind=kind, at=at, ref=ref, prospect=prospect, data=data)
