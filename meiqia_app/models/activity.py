"""What customers did: orders, conversations and messages, behaviour events, notes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow

ORDER_STATUSES = ("paid", "refunded", "pending")
CONVERSATION_CATEGORIES = ("inquiry", "presale", "aftersale", "complaint", "other")
CHANNELS = ("web", "wechat", "app", "weibo", "miniprogram", "phone")
EVENT_KINDS = ("page_view", "product_view", "login", "search")


class Product(SQLModel, table=True):
    __tablename__ = "product"

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=128)
    category: str = Field(max_length=32)
    price_cents: int = 0


class Order(SQLModel, table=True):
    __tablename__ = "customer_order"
    __table_args__ = (
        Index("ix_order_customer_created", "customer_id", "created_at"),
        Index("ix_order_product_customer", "product_id", "customer_id", "created_at"),
        # Covering indexes of the report aggregates (services/reports/measures.py); they
        # also serve every query on (created_at) and (status, paid_at) alone
        # (migration 0005 dropped those prefix indexes).
        Index("ix_order_report_paid", "status", "paid_at", "customer_id", "amount_cents"),
        Index("ix_order_report_created", "created_at", "customer_id"),
        Index("ix_order_report_customer_paid", "customer_id", "status", "paid_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_no: str = Field(max_length=32, unique=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    product_id: int | None = Field(default=None, foreign_key="product.id")
    product_name: str = Field(max_length=128)
    quantity: int = 1
    amount_cents: int = 0
    status: str = Field(default="pending", max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    paid_at: dt.datetime | None = None
    # Personal fields of the order: blanked by an erasure, the amounts stay.
    recipient_name: str | None = Field(default=None, max_length=64)
    recipient_phone: str | None = Field(default=None, max_length=32)
    shipping_address: str | None = Field(default=None, max_length=255)
    # The API key that sent it (the timeline says "via API: NAME"); None: made here or seeded.
    api_key_id: int | None = None


class Conversation(SQLModel, table=True):
    __tablename__ = "conversation"
    __table_args__ = (
        Index("ix_conversation_customer_started", "customer_id", "started_at"),
        Index("ix_conversation_category_started", "category", "started_at", "customer_id"),
        # Also serves queries on started_at alone (0005).
        Index("ix_conversation_report_started", "started_at", "customer_id", "category", "rating"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    channel: str = Field(default="web", max_length=16)
    agent_name: str | None = Field(default=None, max_length=64)
    category: str = Field(default="inquiry", max_length=16)
    rating: int | None = None  # 1..5 satisfaction, None when not rated
    started_at: dt.datetime = Field(default_factory=utcnow)
    ended_at: dt.datetime | None = None
    summary: str | None = Field(default=None, max_length=255)
    api_key_id: int | None = None


class Message(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (Index("ix_message_conversation_sent", "conversation_id", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE")
    sender: str = Field(default="customer", max_length=16)  # customer | agent
    body: str = Field(sa_column=Column(Text, nullable=False))
    sent_at: dt.datetime = Field(default_factory=utcnow)


class BehaviorEvent(SQLModel, table=True):
    __tablename__ = "behavior_event"
    __table_args__ = (
        Index("ix_event_customer_occurred", "customer_id", "occurred_at"),
        Index("ix_event_product_kind", "product_id", "kind", "occurred_at", "customer_id"),
        # No (kind, occurred_at) index: no query filters events by kind alone
        # (rules always name the product; migration 0006 dropped it).
        Index("ix_event_report_occurred", "occurred_at", "customer_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)
    product_id: int | None = Field(default=None, foreign_key="product.id")
    url: str | None = Field(default=None, max_length=255)
    occurred_at: dt.datetime = Field(default_factory=utcnow)
    api_key_id: int | None = None


class Note(SQLModel, table=True):
    __tablename__ = "note"
    __table_args__ = (Index("ix_note_customer_created", "customer_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    author_id: int | None = Field(default=None, foreign_key="app_user.id")
    author_name: str = Field(default="", max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
