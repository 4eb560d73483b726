"""Saved views, background jobs, exports, backups, erasure requests, settings."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow


class SavedView(SQLModel, table=True):
    __tablename__ = "saved_view"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_saved_view_owner_name"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE")
    owner_name: str = Field(default="", max_length=64)
    name: str = Field(max_length=64)
    shared: bool = False
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON ListQuery
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """A long piece of work (bulk tagging, cleanup, rule runs) run in batches.

    Progress and the checkpoint live here, so any worker can show the bar and a
    restarted worker resumes where the last committed batch ended.
    """

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status", "status", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    status: str = Field(default="queued", max_length=16)  # queued|running|done|failed|cancelled
    params: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    total: int = 0
    processed: int = 0
    checkpoint: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    result: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, max_length=500)
    cancel_requested: bool = False
    created_by_id: int | None = None
    created_by_name: str = Field(default="", max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    # The process running it ("host|boot id|pid|start ticks", services/platform/process_owner.py).
    owner: str | None = Field(default=None, max_length=200)
    finished_at: dt.datetime | None = None


class ExportJob(SQLModel, table=True):
    __tablename__ = "export_job"
    __table_args__ = (
        Index("ix_export_requester", "requested_by_id", "created_at"),
        Index("ix_export_status", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    requested_by_id: int = Field(foreign_key="app_user.id")
    requested_by_name: str = Field(default="", max_length=64)
    status: str = Field(default="queued", max_length=24)
    kind: str = Field(default="customers", max_length=16)  # customers | report | portability
    purpose: str = Field(default="analysis", max_length=16)  # analysis | marketing | service
    scope: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    fields: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    sort: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    format: str = Field(default="csv", max_length=8)
    protected: bool = False
    row_estimate: int = 0
    row_count: int = 0
    progress_done: int = 0
    file_name: str | None = Field(default=None, max_length=255)
    file_size: int = 0
    file_sha256: str | None = Field(default=None, max_length=64)
    expires_at: dt.datetime | None = None
    approver_id: int | None = None
    approver_name: str | None = Field(default=None, max_length=64)
    decided_at: dt.datetime | None = None
    decision_comment: str | None = Field(default=None, max_length=500)
    error: str | None = Field(default=None, max_length=500)
    cancel_requested: bool = False
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    owner: str | None = Field(default=None, max_length=200)  # the process writing it (see Job.owner)
    finished_at: dt.datetime | None = None


class DownloadToken(SQLModel, table=True):
    __tablename__ = "download_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    kind: str = Field(default="export", max_length=16)  # export | backup | import_errors
    object_id: int
    user_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE")
    session_id: int = Field(foreign_key="user_session.id", ondelete="CASCADE")
    expires_at: dt.datetime
    used_at: dt.datetime | None = None


class Backup(SQLModel, table=True):
    __tablename__ = "backup"

    id: int | None = Field(default=None, primary_key=True)
    file_name: str = Field(max_length=255)
    kind: str = Field(default="manual", max_length=16)  # manual | scheduled | pre_purge | pre_restore
    size_bytes: int = 0
    sha256: str = Field(default="", max_length=64)
    integrity: str = Field(default="", max_length=255)
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by_name: str = Field(default="", max_length=64)
    note: str = Field(default="", max_length=255)


class ErasureRequest(SQLModel, table=True):
    __tablename__ = "erasure_request"
    __table_args__ = (
        Index("ix_erasure_status", "status", "customer_id"),
        Index("ix_erasure_customer", "customer_id"),
    )  # purge and its FK cascade

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    requested_by_id: int | None = None
    requested_by_name: str = Field(default="", max_length=64)
    requested_at: dt.datetime = Field(default_factory=utcnow)
    reason: str = Field(default="", max_length=255)
    status: str = Field(default="pending", max_length=16)  # pending | done | cancelled
    executed_at: dt.datetime | None = None
    executed_by_name: str | None = Field(default=None, max_length=64)


class AppSetting(SQLModel, table=True):
    __tablename__ = "app_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="null", sa_column=Column(Text, nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow)
    updated_by_name: str = Field(default="", max_length=64)
