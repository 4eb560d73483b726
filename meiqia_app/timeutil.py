"""Time helpers.

Timestamps are timezone-aware UTC in Python (SQLModel's UTCDateTime refuses naive
ones) and stored as UTC; people see them in the configured zone.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from meiqia_app.config import get_settings

UTC = dt.UTC
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def sqlite_text(value: dt.datetime | None) -> str | None:
    """How SQLAlchemy stores a datetime in SQLite; raw bulk inserts must match it."""
    if value is None:
        return None
    return as_utc(value).strftime(SQLITE_FORMAT)


def local_zone() -> ZoneInfo:
    return ZoneInfo(get_settings().timezone)


def to_local(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return as_utc(value).astimezone(local_zone())


def local_to_utc(value: dt.datetime) -> dt.datetime:
    """A naive local wall-clock time -> aware UTC."""
    return value.replace(tzinfo=local_zone()).astimezone(UTC)


def local_day_start_utc(day: dt.date) -> dt.datetime:
    return local_to_utc(dt.datetime.combine(day, dt.time.min))


def format_local(value: dt.datetime | None, with_seconds: bool = False) -> str:
    local = to_local(value)
    if local is None:
        return ""
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def today_local() -> dt.date:
    return dt.datetime.now(local_zone()).date()
