"""The append-only, hash-chained audit log (entries MACed since migration 0007)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_occurred", "occurred_at"),
        Index("ix_audit_actor", "actor_name", "occurred_at"),
        Index("ix_audit_action", "action", "occurred_at"),
        Index("ix_audit_target", "target_type", "target_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: dt.datetime = Field(default_factory=utcnow)
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=64)
    action: str = Field(max_length=64)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    result: str = Field(default="ok", max_length=16)  # ok | refused | failed
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    client_ip: str = Field(default="", max_length=64)
    flagged: bool = False
    prev_hash: str = Field(default="", max_length=64)
    entry_hash: str = Field(default="", max_length=64)
    # HMAC-SHA256 of the same canonical form with a key derived from the secret key
    # (services/platform/keys.py); "" on entries written before migration 0007.
    entry_mac: str = Field(default="", max_length=64)
