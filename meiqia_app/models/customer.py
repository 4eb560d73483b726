"""The customer aggregate: the profile row and its search text."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Column, Index, Text, literal_column, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from meiqia_app.timeutil import utcnow

STATUS_ACTIVE = "active"
STATUS_ARCHIVED = "archived"
STATUS_TRASHED = "trashed"
STATUSES = (STATUS_ACTIVE, STATUS_ARCHIVED, STATUS_TRASHED)

LIFECYCLE_STAGES = ("prospect", "new", "active", "dormant", "churned")
MEMBERSHIP_TIERS = ("regular", "silver", "gold")
SOURCES = ("web", "wechat", "app", "weibo", "miniprogram", "douyin", "phone", "offline")
GENDERS = ("M", "F", "U")

# On SQLite the status-led indexes hold only the working set (active and
# archived customers), and one small index holds the trash. Emptying the trash
# then deletes nothing from the eleven working-set indexes (at 1M customers
# that was ~5 s of a 100,000-customer purge: ~1.1M index seeks), and moving a
# customer to or from the trash writes them once instead of twice. SQLite uses
# a partial index only when the query's WHERE clause contains the index's
# condition literally, so queries on those indexes carry it as SQL text
# (``IN_WORKING_SET_INDEXES`` / ``IN_TRASH`` below, added by
# services.customers.query.status_condition and the cleanup and report queries);
# tests/unit/test_cleanup_plans.py checks the plans at 1M statistics.
# PostgreSQL keeps full indexes (its planner does not need the literal, and
# its purge is fast enough without).
WORKING_SET_INDEX_WHERE = "status != 'trashed'"
TRASH_INDEX_WHERE = "status = 'trashed'"
ERASED_INDEX_WHERE = "erased_at IS NOT NULL"


# The type of ``customer.custom_fields``: JSON text on SQLite, JSONB on PostgreSQL.
CUSTOM_FIELDS_TYPE = JSON().with_variant(JSONB(), "postgresql")


def _working_set_index(name: str, *columns: str) -> Index:
    return Index(name, *columns, sqlite_where=text(WORKING_SET_INDEX_WHERE))


class Customer(SQLModel, table=True):
    __tablename__ = "customer"
    __table_args__ = (
        # One index per sortable column, led by status: the list always filters
        # on status (archived/trashed customers leave the working set), and the
        # trailing id makes keyset pagination an index range scan.
        _working_set_index("ix_customer_status_last_active", "status", "last_active_at", "id"),
        _working_set_index("ix_customer_status_registered", "status", "registered_at", "id"),
        _working_set_index("ix_customer_status_last_purchase", "status", "last_purchase_at", "id"),
        _working_set_index("ix_customer_status_spent", "status", "total_spent_cents", "id"),
        _working_set_index("ix_customer_status_orders", "status", "order_count", "id"),
        _working_set_index("ix_customer_status_name", "status", "name_pinyin", "id"),
        # Owner (负责人) and the pool (公海): "my customers", "pool" and a team's
        # owners, each walked in the list's default order (migration 0013).
        _working_set_index("ix_customer_status_owner", "status", "owner_id", "last_active_at", "id"),
        # The erased customers (a handful): the pool return's preview takes them away from
        # its count along ix_customer_status_owner without reading the table (migration 0015).
        Index(
            "ix_customer_erased_owner",
            "owner_id",
            "last_active_at",
            "status",
            sqlite_where=text(ERASED_INDEX_WHERE),
            postgresql_where=text(ERASED_INDEX_WHERE),
        ),
        # The open API's "updated since" walk (migration 0011).
        _working_set_index("ix_customer_status_updated", "status", "updated_at", "id"),
        # Equality filters, each followed by the default sort.
        _working_set_index("ix_customer_source", "status", "source", "last_active_at"),
        _working_set_index("ix_customer_lifecycle", "status", "lifecycle_stage", "last_active_at"),
        _working_set_index("ix_customer_tier", "status", "membership_tier", "last_active_at"),
        _working_set_index("ix_customer_region", "status", "province", "city", "last_active_at"),
        # Reports: new customers per period by source / region and their conversion, index-only.
        _working_set_index(
            "ix_customer_report_registered", "status", "registered_at", "source", "province", "first_purchase_at"
        ),
        # Duplicate finder and import de-duplication.
        Index("ix_customer_phone", "phone"),
        Index("ix_customer_email", "email"),
        Index("ix_customer_name_city", "name", "city"),
        Index("ix_customer_external_id", "external_id"),
        Index("ix_customer_visitor_id", "visitor_id"),
        Index("ix_customer_trashed_at", "trashed_at", sqlite_where=text(TRASH_INDEX_WHERE)),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    name_pinyin: str = Field(default="", max_length=256)
    name_initials: str = Field(default="", max_length=64)
    gender: str = Field(default="U", max_length=1)
    birthday: dt.date | None = None
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)
    address: str | None = Field(default=None, max_length=255)
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    company: str | None = Field(default=None, max_length=128)
    source: str = Field(default="web", max_length=16)
    external_id: str | None = Field(default=None, max_length=64)
    visitor_id: str | None = Field(default=None, max_length=64)

    registered_at: dt.datetime = Field(default_factory=utcnow)
    last_active_at: dt.datetime = Field(default_factory=utcnow)
    last_login_at: dt.datetime | None = None
    first_purchase_at: dt.datetime | None = None
    last_purchase_at: dt.datetime | None = None
    order_count: int = 0
    total_spent_cents: int = 0
    lifecycle_stage: str = Field(default="prospect", max_length=16)
    membership_tier: str = Field(default="regular", max_length=16)

    consent_marketing: bool = False
    consent_marketing_at: dt.datetime | None = None
    consent_analytics: bool = False
    consent_analytics_at: dt.datetime | None = None

    status: str = Field(default=STATUS_ACTIVE, max_length=16)
    # The owner (负责人, an app_user id); None: the customer is in the pool (公海).
    # Its team is the owner's team. No foreign key: users are never deleted, and
    # bulk assignment then checks no constraint per row.
    owner_id: int | None = None
    archived_at: dt.datetime | None = None
    trashed_at: dt.datetime | None = None
    erased_at: dt.datetime | None = None

    custom_attributes: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    # The values of the defined custom fields (models/custom_field.py): {key: canonical value},
    # a key absent when the value is empty. JSON text on SQLite (read with json_extract),
    # JSONB on PostgreSQL; filterable fields have an expression index each (ix_cf_<key>,
    # made by the adapter at run time). ``custom_attributes`` above stays the open API's
    # free-form, untyped extension (no definitions, no filters).
    custom_fields: dict = Field(
        default_factory=dict, sa_column=Column(CUSTOM_FIELDS_TYPE, nullable=False, server_default="{}")
    )
    # Bumped whenever behaviour is recorded for the customer (the open API's
    # ingestion): an open customer page polls it to show new activity live.
    # Not the edit ``version``: activity must not turn an open edit into a conflict.
    activity_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    version: int = 1
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    updated_by_id: int | None = None
    updated_by_name: str | None = Field(default=None, max_length=64)


# The two index conditions as literal SQL terms, for queries that should use those indexes.
IN_WORKING_SET_INDEXES = Customer.__table__.c.status != literal_column("'trashed'")
IN_TRASH = Customer.__table__.c.status == literal_column("'trashed'")


class CustomerSearch(SQLModel, table=True):
    """Lower-cased texts search terms are matched against, one row per customer.

    Kept apart from ``customer`` so that list scans stay narrow. ``text`` is
    what every role may match (contact data masked), ``contact`` the full
    phone and e-mail (only for roles with customer.view_sensitive),
    ``phone_mask`` the phone as those roles see it (ranking by its visible
    last digits). On SQLite an FTS5 trigram index over ``text`` and
    ``contact`` (created in the migrations, kept in sync by triggers), on
    PostgreSQL a pg_trgm index on each, answers substring queries; see
    services/customers/search_text.py for the format.
    """

    __tablename__ = "customer_search"

    customer_id: int = Field(primary_key=True, foreign_key="customer.id", ondelete="CASCADE")
    text: str = Field(sa_column=Column(Text, nullable=False))
    contact: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    phone_mask: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))


class OwnerChange(SQLModel, table=True):
    """One change of a customer's owner (claim, assign, transfer, release, pool return).

    The customer's timeline reads these (services/customers/timeline.py); the audit log
    has one entry per action (a bulk assignment: one entry with its count), so
    a 100,000-customer assignment writes these rows set-based, not 100,000
    chained audit entries.
    """

    __tablename__ = "owner_change"
    __table_args__ = (Index("ix_owner_change_customer", "customer_id", "changed_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    changed_at: dt.datetime = Field(default_factory=utcnow)
    action: str = Field(max_length=16)  # claim | assign | release
    old_owner_id: int | None = None
    new_owner_id: int | None = None
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=64)
    # The audit entry (single changes) or the job (bulk) that made it.
    audit_id: int | None = None
    job_id: int | None = None


class FieldChange(SQLModel, table=True):
    """One customer's field set by a bulk edit (services/customers/bulk_edit.py).

    The customer's timeline reads these as "field" changes; the audit log has one
    entry per bulk edit (with its count), so a 1,000,000-customer edit writes these
    rows set-based (one INSERT … SELECT per batch), not a million chained entries.
    ``value`` is what the timeline may show to anyone allowed to see the customer:
    the new value as stored (JSON) for choices, numbers, dates and the like; the
    masked form for a sensitive field (``note`` "masked"); nothing for free text
    (``note`` "text": a person's words are never copied into history).
    """

    __tablename__ = "field_change"
    __table_args__ = (Index("ix_field_change_customer", "customer_id", "changed_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    changed_at: dt.datetime = Field(default_factory=utcnow)
    field: str = Field(max_length=48)  # a built-in column or "cf.<key>"
    value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str = Field(default="", max_length=8)  # "" | masked | text
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=64)
    job_id: int | None = None
