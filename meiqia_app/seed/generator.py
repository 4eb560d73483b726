"""Deterministic generation of demo customers and everything they did.

Customers are made in chunks of consecutive ids. A chunk depends only on
(seed, chunk index, as-of time), so chunks can be generated in parallel
processes and the result is the same for the same seed. Child rows refer to
their customer by id and to their conversation by its position in the chunk;
the loader turns positions into ids.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import itertools
import json
import random
from collections.abc import Callable, Sequence

from meiqia_app.seed import data
from meiqia_app.services.customers.lifecycle import lifecycle_stage, membership_tier
from meiqia_app.services.customers.search_text import SEARCH_ROW_COLUMNS, pinyin_of, search_row

CUSTOMER_COLUMNS = (
    "id",
    "name",
    "name_pinyin",
    "name_initials",
    "gender",
    "birthday",
    "phone",
    "email",
    "address",
    "province",
    "city",
    "company",
    "source",
    "external_id",
    "visitor_id",
    "registered_at",
    "last_active_at",
    "last_login_at",
    "first_purchase_at",
    "last_purchase_at",
    "order_count",
    "total_spent_cents",
    "lifecycle_stage",
    "membership_tier",
    "consent_marketing",
    "consent_marketing_at",
    "consent_analytics",
    "consent_analytics_at",
    "status",
    "archived_at",
    "trashed_at",
    "erased_at",
    "custom_attributes",
    "version",
    "created_at",
    "updated_at",
    "updated_by_id",
    "updated_by_name",
)
ORDER_COLUMNS = (
    "id",
    "order_no",
    "customer_id",
    "product_id",
    "product_name",
    "quantity",
    "amount_cents",
    "status",
    "created_at",
    "paid_at",
    "recipient_name",
    "recipient_phone",
    "shipping_address",
)
CONVERSATION_COLUMNS = (
    "id",
    "customer_id",
    "channel",
    "agent_name",
    "category",
    "rating",
    "started_at",
    "ended_at",
    "summary",
)
MESSAGE_COLUMNS = ("conversation_id", "sender", "body", "sent_at")
EVENT_COLUMNS = ("customer_id", "kind", "product_id", "url", "occurred_at")
NOTE_COLUMNS = ("customer_id", "author_id", "author_name", "body", "created_at", "updated_at")

DAY = 86400


class _Weighted:
    """Fast weighted choice: one random() and a bisect."""

    def __init__(self, items: Sequence[tuple[object, float]]):
        self.values = [value for value, _ in items]
        self.cumulative = list(itertools.accumulate(weight for _, weight in items))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random):
        return self.values[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


_SURNAMES = _Weighted(data.SURNAMES)
_COMMON_GIVEN = _Weighted(data.COMMON_GIVEN_NAMES)
_PROVINCES = _Weighted(list(zip(data.PROVINCES, data.PROVINCE_WEIGHTS)))
_SOURCES = _Weighted(data.SOURCES)
_DOMAINS = _Weighted(data.EMAIL_DOMAINS)
_CATEGORIES = _Weighted(data.CONVERSATION_CATEGORIES)
_CHANNEL_OF_SOURCE = {
    "web": "web",
    "wechat": "wechat",
    "app": "app",
    "miniprogram": "miniprogram",
    "weibo": "weibo",
    "douyin": "app",
    "phone": "phone",
    "offline": "phone",
}


@dataclasses.dataclass(frozen=True)
class SeedProduct:
    id: int
    name: str
    price_cents: int


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    seed: int
    as_of: dt.datetime  # aware UTC; "now" for the generated history
    products: tuple[SeedProduct, ...]
    author_ids: tuple[int | None, ...]  # users who write notes
    author_names: tuple[str, ...]
    format_datetime: Callable[[dt.datetime | None], object]
    format_date: Callable[[dt.date | None], object]


@dataclasses.dataclass
class Chunk:
    first_id: int
    customers: list[tuple] = dataclasses.field(default_factory=list)
    search: list[tuple] = dataclasses.field(default_factory=list)
    orders: list[tuple] = dataclasses.field(default_factory=list)  # ORDER_COLUMNS without id, order_no
    conversations: list[tuple] = dataclasses.field(default_factory=list)  # without id
    messages: list[tuple] = dataclasses.field(default_factory=list)  # (conversation position, sender, body, sent_at)
    events: list[tuple] = dataclasses.field(default_factory=list)
    notes: list[tuple] = dataclasses.field(default_factory=list)
    manual_tags: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (customer id, MANUAL_TAGS index)
    erasure_requests: list[int] = dataclasses.field(default_factory=list)


def _name(rng: random.Random) -> str:
    surname = _SURNAMES.pick(rng)
    roll = rng.random()
    if roll < 0.35:
        given = _COMMON_GIVEN.pick(rng)
    elif roll < 0.55:
        given = rng.choice(data.GIVEN_CHARS)
    else:
        given = rng.choice(data.GIVEN_CHARS) + rng.choice(data.GIVEN_CHARS)
    return surname + given


def _phone(rng: random.Random) -> str:
    return rng.choice(data.MOBILE_PREFIXES) + f"{rng.randrange(100_000_000):08d}"


def _invalid_phone(rng: random.Random) -> str:
    return rng.choice(["1381234", "12012345678", "0000000", "1" * 11, "138123456789"])


def _email(rng: random.Random, pinyin: str, initials: str, birth_year: int) -> str:
    style = rng.random()
    if style < 0.4:
        local = pinyin + str(rng.randrange(10, 9999))
    elif style < 0.6:
        local = initials + str(birth_year)
    elif style < 0.8:
        local = str(rng.randrange(100_000, 3_000_000_000))  # QQ-number style
    else:
        local = pinyin[:6] + "_" + str(rng.randrange(100))
    return f"{local}@{_DOMAINS.pick(rng)}"


def _invalid_email(rng: random.Random, pinyin: str) -> str:
    return rng.choice([f"{pinyin}@", f"{pinyin}@@qq.com", f"{pinyin}.qq.com", f"{pinyin}@163"])


def _activity_window(rng: random.Random, registered_days_ago: float) -> float:
    """Days ago of the customer's last activity, by segment."""
    roll = rng.random()
    if roll < 0.22 and registered_days_ago > 400:
        return rng.uniform(365, registered_days_ago)  # long inactive
    if roll < 0.36 and registered_days_ago > 100:
        return rng.uniform(90, min(365, registered_days_ago))  # drifting away
    return min(registered_days_ago, 90 * rng.random() ** 2)  # recently active


def generate_chunk(config: GeneratorConfig, chunk_index: int, chunk_size: int, total: int) -> Chunk:
    first_id = chunk_index * chunk_size + 1
    last_id = min(total, first_id + chunk_size - 1)
    rng = random.Random((config.seed * 1_000_003) ^ (chunk_index * 7919))
    chunk = Chunk(first_id=first_id)
    fmt = config.format_datetime
    now = config.as_of
    products = config.products
    recent_in_chunk: list[tuple] = []

    for customer_id in range(first_id, last_id + 1):
        name = _name(rng)
        pinyin, initials = pinyin_of(name)
        province = _PROVINCES.pick(rng)
        city = rng.choice(data.PROVINCES[province])
        birth_year = rng.randrange(1960, 2006)
        registered_days_ago = 1095 * rng.random() ** 1.4
        registered = now - dt.timedelta(seconds=int(registered_days_ago * DAY))
        quiet_days_ago = _activity_window(rng, registered_days_ago)
        window_start = registered.timestamp()
        window_end = (now - dt.timedelta(seconds=int(quiet_days_ago * DAY))).timestamp()
        span = max(window_end - window_start, 1.0)

        def moment(window_start: float = window_start, span: float = span) -> dt.datetime:
            return dt.datetime.fromtimestamp(window_start + rng.random() * span, dt.UTC)

        # Contact data: mostly complete and valid, some missing or broken.
        contact_roll = rng.random()
        phone = None if contact_roll < 0.08 else _phone(rng)
        email = None if rng.random() < 0.32 else _email(rng, pinyin, initials, birth_year)
        if contact_roll < 0.03:
            email = None  # incomplete: neither phone nor e-mail
        elif 0.08 <= contact_roll < 0.095:
            phone = _invalid_phone(rng)
        if email and rng.random() < 0.012:
            email = _invalid_email(rng, pinyin)

        # Some customers are duplicates of a recent one: same phone, same
        # e-mail, or same name in the same city.
        if recent_in_chunk and rng.random() < 0.01:
            original = rng.choice(recent_in_chunk)
            kind = rng.random()
            if kind < 0.4 and original[1]:
                phone = original[1]
            elif kind < 0.7 and original[2]:
                email = original[2]
            else:
                name, city, province = original[0], original[3], original[4]
                pinyin, initials = pinyin_of(name)
        recent_in_chunk.append((name, phone, email, city, province))
        if len(recent_in_chunk) > 200:
            recent_in_chunk.pop(0)

        source = _SOURCES.pick(rng)
        channel = _CHANNEL_OF_SOURCE[source]

        # Orders.
        order_times: list[dt.datetime] = []
        paid_times: list[dt.datetime] = []
        spent = 0
        if rng.random() > 0.35:
            count = min(20, 1 + int(rng.expovariate(1 / 2.4)))
            for _ in range(count):
                product = products[rng.randrange(len(products))]
                quantity = 1 if rng.random() < 0.8 else rng.randrange(2, 4)
                amount = product.price_cents * quantity
                created = moment()
                status_roll = rng.random()
                status = "paid" if status_roll < 0.85 else ("refunded" if status_roll < 0.92 else "pending")
                paid_at = created + dt.timedelta(minutes=rng.randrange(1, 30)) if status != "pending" else None
                if status == "paid":
                    spent += amount
                    paid_times.append(created)
                order_times.append(created)
                chunk.orders.append(
                    (
                        customer_id,
                        product.id,
                        product.name,
                        quantity,
                        amount,
                        status,
                        fmt(created),
                        fmt(paid_at),
                        name,
                        phone,
                        f"{province}{city}{rng.choice(data.DISTRICTS)}{rng.choice(data.STREETS)}{rng.randrange(1, 999)}号",
                    )
                )

        # Conversations and their messages.
        conversation_times: list[dt.datetime] = []
        if rng.random() > 0.4:
            for _ in range(1 + int(rng.expovariate(1 / 0.8))):
                category = _CATEGORIES.pick(rng)
                started = moment()
                lines = data.CHAT_LINES[category]
                product = products[rng.randrange(len(products))]
                if rng.random() < 0.3:
                    rating = None
                elif category == "complaint":
                    rating = rng.choice((1, 1, 2, 2, 3))
                else:
                    rating = rng.choice((3, 4, 4, 5, 5, 5))
                n_lines = rng.randrange(2, len(lines) + 1)
                ended = started + dt.timedelta(minutes=2 * n_lines + rng.randrange(5))
                position = len(chunk.conversations)
                chunk.conversations.append(
                    (
                        customer_id,
                        channel,
                        rng.choice(data.AGENT_NAMES),
                        category,
                        rating,
                        fmt(started),
                        fmt(ended),
                        lines[0][1].format(product=product.name)[:120],
                    )
                )
                for index, (sender, template) in enumerate(lines[:n_lines]):
                    sent = started + dt.timedelta(minutes=2 * index, seconds=rng.randrange(60))
                    chunk.messages.append((position, sender, template.format(product=product.name), fmt(sent)))
                conversation_times.append(started)

        # Behaviour events.
        event_times: list[dt.datetime] = []
        last_login = None
        for _ in range(int(rng.expovariate(1 / 3.0))):
            occurred = moment()
            kind_roll = rng.random()
            if kind_roll < 0.35:
                kind, product_id, url = "product_view", products[rng.randrange(len(products))].id, None
            elif kind_roll < 0.65:
                kind, product_id, url = "page_view", None, rng.choice(data.PAGE_URLS)
            elif kind_roll < 0.85:
                kind, product_id, url = "login", None, None
                last_login = occurred if last_login is None or occurred > last_login else last_login
            else:
                kind, product_id, url = "search", None, "/search?q=" + rng.choice(data.SEARCH_WORDS)
            chunk.events.append((customer_id, kind, product_id, url, fmt(occurred)))
            event_times.append(occurred)

        last_active = max([registered, *order_times, *conversation_times, *event_times])
        first_purchase = min(paid_times) if paid_times else None
        last_purchase = max(paid_times) if paid_times else None
        stage = lifecycle_stage(first_purchase, last_active, now)
        tier = membership_tier(spent)

        consent_marketing = rng.random() < 0.55
        consent_analytics = rng.random() < 0.8
        consent_at = registered + dt.timedelta(minutes=1)
        status = "archived" if rng.random() < 0.01 else "active"
        gender = rng.choice(("M", "F", "M", "F", "U"))
        birthday = dt.date(birth_year, rng.randrange(1, 13), rng.randrange(1, 29)) if rng.random() < 0.6 else None
        company = rng.choice(data.COMPANIES) if rng.random() < 0.2 else None
        external_id = f"EXT{customer_id:08d}" if rng.random() < 0.4 else None
        visitor_id = f"v_{rng.getrandbits(48):012x}" if rng.random() < 0.9 else None
        attributes = (
            json.dumps({"会员卡号": f"M{rng.randrange(10**9):09d}", "偏好渠道": channel}, ensure_ascii=False)
            if rng.random() < 0.3
            else "{}"
        )
        address = (
            f"{province}{city}{rng.choice(data.DISTRICTS)}{rng.choice(data.STREETS)}{rng.randrange(1, 999)}号"
            if rng.random() < 0.7
            else None
        )
        chunk.customers.append(
            (
                customer_id,
                name,
                pinyin,
                initials,
                gender,
                config.format_date(birthday),
                phone,
                email,
                address,
                province,
                city,
                company,
                source,
                external_id,
                visitor_id,
                fmt(registered),
                fmt(last_active),
                fmt(last_login),
                fmt(first_purchase),
                fmt(last_purchase),
                len(paid_times),
                spent,
                stage,
                tier,
                consent_marketing,
                fmt(consent_at) if consent_marketing else None,
                consent_analytics,
                fmt(consent_at) if consent_analytics else None,
                status,
                fmt(now - dt.timedelta(days=rng.randrange(1, 60))) if status == "archived" else None,
                None,
                None,
                attributes,
                1,
                fmt(registered),
                fmt(last_active),
                None,
                None,
            )
        )
        row = search_row(name, phone, email, external_id, visitor_id)
        chunk.search.append((customer_id, *(row[column] for column in SEARCH_ROW_COLUMNS)))

        if rng.random() < 0.12:
            for _ in range(rng.randrange(1, 3)):
                author = rng.randrange(len(config.author_names))
                written = fmt(moment())
                chunk.notes.append(
                    (
                        customer_id,
                        config.author_ids[author],
                        config.author_names[author],
                        rng.choice(data.NOTE_TEXTS),
                        written,
                        written,
                    )
                )
        for tag_index, (_, _, _, share) in enumerate(data.MANUAL_TAGS):
            if rng.random() < share:
                chunk.manual_tags.append((customer_id, tag_index))
        if rng.random() < 0.0008:
            chunk.erasure_requests.append(customer_id)
    return chunk
