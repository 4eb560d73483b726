"""Report periods: calendar ranges in the local zone, their previous period, and trend buckets."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt

from meiqia_app.services.errors import ValidationError
from meiqia_app.timeutil import as_utc, local_day_start_utc, local_zone, today_local

PERIOD_KINDS = ("day", "week", "month", "custom")
GRANULARITIES = ("day", "week", "month")
MAX_CUSTOM_DAYS = 731
MAX_BUCKETS = 120


# --- periods -------------------------------------------------------------------------


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _month_end(day: dt.date) -> dt.date:
    return add_months(month_start(day), 1) - dt.timedelta(days=1)


def local_today(now: dt.datetime | None = None) -> dt.date:
    """The local calendar day of ``now`` (default: the clock)."""
    return today_local() if now is None else as_utc(now).astimezone(local_zone()).date()


@dataclasses.dataclass(frozen=True)
class Period:
    """Local calendar days ``first`` .. ``last`` (inclusive).

    A week, month or custom range that contains today ends today: days that
    have not happened are neither counted nor plotted. ``calendar_last`` then
    keeps the calendar period's last day, and the previous period is the same
    days of the period before (1–7 December against 1–7 November), so a period
    under way is compared like with like.
    """

    kind: str
    first: dt.date
    last: dt.date
    calendar_last: dt.date | None = None

    @property
    def to_date(self) -> bool:
        """Cut at today: the calendar period goes on after ``last``."""
        return self.calendar_last is not None and self.calendar_last > self.last

    @property
    def start_utc(self) -> dt.datetime:
        return local_day_start_utc(self.first)

    @property
    def end_utc(self) -> dt.datetime:
        """Exclusive: local midnight after the last day."""
        return local_day_start_utc(self.last + dt.timedelta(days=1))

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        if self.kind == "month":
            first = add_months(self.first, -1)
            if self.to_date:
                # The same days of the month before (31 March to date: to the end of February).
                return Period("month", first, add_months(self.last, -1))
            return Period("month", first, self.first - dt.timedelta(days=1))
        if self.kind == "week" and self.to_date:
            week = dt.timedelta(days=7)
            return Period("week", self.first - week, self.last - week)
        last = self.first - dt.timedelta(days=1)
        return Period(self.kind, last - dt.timedelta(days=self.days - 1), last)

    def label(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        if self.kind == "month" and self.first.day == 1 and self.last == _month_end(self.first):
            return self.first.strftime("%Y-%m")
        return f"{self.first.isoformat()} ~ {self.last.isoformat()}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "label": self.label(),
            "to_date": self.to_date,
        }


def parse_day(value, field: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value or "").strip())
    except ValueError:
        raise ValidationError.single(field, "error.bad_date") from None


def make_period(
    kind: str,
    anchor: str | dt.date | None = None,
    end: str | dt.date | None = None,
    now: dt.datetime | None = None,
) -> Period:
    """The period of ``kind`` containing ``anchor`` (default today, local);
    for ``custom``, ``anchor`` .. ``end``. A period under way ends today
    (``now``, default the clock); one that has not begun is refused.
    Validates untrusted input."""
    if kind not in PERIOD_KINDS:
        raise ValidationError.single("period", "error.bad_choice")
    today = local_today(now)
    day = today if anchor in (None, "") else parse_day(anchor, "anchor")
    if not dt.date(2000, 1, 1) <= day <= dt.date(2100, 1, 1):
        raise ValidationError.single("anchor", "error.bad_date")
    if kind == "day":
        first = last = day
    elif kind == "week":
        first = day - dt.timedelta(days=day.weekday())
        last = first + dt.timedelta(days=6)
    elif kind == "month":
        first, last = month_start(day), _month_end(day)
    else:
        first = day
        last = parse_day(end, "end") if end not in (None, "") else day
        if last < first:
            raise ValidationError.single("end", "report.error_range_order")
        if (last - first).days + 1 > MAX_CUSTOM_DAYS:
            raise ValidationError.single("end", "report.error_range_long", max=MAX_CUSTOM_DAYS)
    if first > today:
        raise ValidationError.single("anchor", "report.error_future")
    if last > today:
        return Period(kind, first, today, calendar_last=last)
    return Period(kind, first, last)


def bucket_starts(granularity: str, last_day: dt.date, count: int) -> list[dt.date]:
    """``count`` consecutive bucket start days, the last bucket containing ``last_day``."""
    if granularity not in GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    count = max(1, min(int(count), MAX_BUCKETS))
    if granularity == "day":
        return [last_day - dt.timedelta(days=i) for i in range(count - 1, -1, -1)]
    if granularity == "week":
        monday = last_day - dt.timedelta(days=last_day.weekday())
        return [monday - dt.timedelta(weeks=i) for i in range(count - 1, -1, -1)]
    first = month_start(last_day)
    return [add_months(first, -i) for i in range(count - 1, -1, -1)]


def bucket_end(granularity: str, start: dt.date) -> dt.date:
    """Exclusive end day of the bucket starting at ``start``."""
    if granularity == "day":
        return start + dt.timedelta(days=1)
    if granularity == "week":
        return start + dt.timedelta(days=7)
    return add_months(start, 1)
