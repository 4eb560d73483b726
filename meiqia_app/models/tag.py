"""Tags, their assignments to customers, and the rules that assign them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow

TAG_GROUPS = ("lifecycle", "behavior", "membership", "custom")
SOURCE_MANUAL = "manual"
SOURCE_RULE = "rule"


class Tag(SQLModel, table=True):
    __tablename__ = "tag"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32)
    # NFKC + casefold of the name: "VIP" and "ｖｉｐ" collide here, so the
    # unique index makes names unique the way people read them.
    name_key: str = Field(max_length=32, unique=True)
    group: str = Field(default="custom", max_length=16)
    color: str = Field(default="gray", max_length=16)
    description: str = Field(default="", max_length=255)
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by_id: int | None = None
    last_assigned_at: dt.datetime | None = None


class TagAssignment(SQLModel, table=True):
    __tablename__ = "tag_assignment"
    __table_args__ = (
        Index("ix_tag_assignment_tag_customer", "tag_id", "customer_id"),
        Index("ix_tag_assignment_rule", "rule_id", "tag_id"),
        {"sqlite_with_rowid": False},
    )

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    tag_id: int = Field(foreign_key="tag.id", primary_key=True, ondelete="CASCADE")
    # "manual" or "rule"; a rule never removes a manual assignment.
    source: str = Field(default=SOURCE_MANUAL, max_length=8)
    rule_id: int | None = Field(default=None, foreign_key="tag_rule.id", ondelete="SET NULL")
    assigned_at: dt.datetime = Field(default_factory=utcnow)
    assigned_by_id: int | None = None


class TagRule(SQLModel, table=True):
    __tablename__ = "tag_rule"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    tag_id: int = Field(foreign_key="tag.id", ondelete="CASCADE")
    match: str = Field(default="all", max_length=8)  # all | any
    conditions: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    mode: str = Field(default="add_only", max_length=16)  # add_only | sync
    enabled: bool = True
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    created_by_id: int | None = None
    last_run_at: dt.datetime | None = None
    last_run_summary: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
