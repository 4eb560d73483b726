"""What the dashboard and the reports page show, and the XLSX export of it.

Display-ready DTOs (``DashboardView``, ``SegmentReportView``, ``SnapshotView``;
their rows are plain dicts of strings and numbers, both languages for labels,
because the pages keep them as ``list[dict]`` state vars that the charts and
tables read by key) are built here from :mod:`reports`, so the page and the
exported file are made from the same figures. No Reflex here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from meiqia_app.i18n import tr
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.reports import cache as report_cache
from meiqia_app.services.reports import custom_segments
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import formatting as report_formatting
from meiqia_app.services.reports import measures as reports
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends
from meiqia_app.timeutil import format_local, today_local

MAX_TREND_BUCKETS = {"day": 31, "week": 26, "month": 24}
CHART_COLORS = (
    "#3e63dd",
    "#30a46c",
    "#f76b15",
    "#8e4ec6",
    "#e5484d",
    "#12a594",
    "#ffc53d",
    "#978365",
    "#0090ff",
    "#d6409f",
    "#8d8d8d",
)


def _both(key: str, **params) -> dict:
    return {"label_zh": tr("zh", key, **params), "label_en": tr("en", key, **params)}


def _measure_row(measure: reports.Measure) -> dict:
    direction = report_formatting.change_direction(measure)
    tone = report_formatting.change_tone(measure)
    return {
        "key": measure.key,
        **_both(f"dash.{measure.key}"),
        "value": report_formatting.format_value(measure.kind, measure.value),
        "previous": report_formatting.format_value(measure.kind, measure.previous),
        "change": report_formatting.format_change(measure),
        "direction": direction,
        # good / bad / neutral: the arrow's colour (a falling complaint share is good news)
        "tone": tone,
        "arrow_zh": tr("zh", f"dash.arrow_{direction}_{tone}"),
        "arrow_en": tr("en", f"dash.arrow_{direction}_{tone}"),
    }


def _group_label(prefix: str, key: str) -> dict:
    if key == "__other__":
        return _both("dash.other")
    if not key:
        return _both("dash.unknown")
    if prefix:
        return _both(f"{prefix}.{key}")
    return {"label_zh": key, "label_en": key}


def _breakdown_rows(items: list[report_dashboard.Breakdown], prefix: str) -> list[dict]:
    return [
        {
            "key": item.key,
            **_group_label(prefix, item.key),
            "color": CHART_COLORS[index % len(CHART_COLORS)],
            "total": item.total,
            "new": item.new,
            "new_previous": item.new_previous,
            "total_text": f"{item.total:,}",
            "new_text": f"{item.new:,}",
            "new_previous_text": f"{item.new_previous:,}",
        }
        for index, item in enumerate(items)
    ]


def _trend_rows(points: list[report_trends.TrendPoint]) -> list[dict]:
    return [
        {
            "start": p.start,
            # A week or month under way is marked (the footnote under the chart says what "*" means).
            "label": f"{p.label}*" if p.partial else p.label,
            "partial": p.partial,
            "new_customers": p.new_customers,
            "orders": p.orders,
            "amount": round(p.amount_cents / 100, 2),
            "conversations": p.conversations,
            "new_customers_text": f"{p.new_customers:,}",
            "orders_text": f"{p.orders:,}",
            "amount_text": report_formatting.format_value("money", p.amount_cents),
            "conversations_text": f"{p.conversations:,}",
        }
        for p in points
    ]


def period_from_params(params: dict, now: dt.datetime | None = None) -> report_periods.Period:
    kind = str(params.get("kind") or "month")
    return report_periods.make_period(kind, params.get("anchor") or None, params.get("end") or None, now=now)


def comparison_note(period: report_periods.Period, lang: str) -> str:
    """What the page compares, in words: a period under way is compared with
    the same days of the one before, and the page says so."""
    previous = period.previous()
    if period.to_date:
        return tr(
            lang,
            f"dash.vs_to_date_{period.kind}",
            first=period.first.isoformat(),
            last=period.last.isoformat(),
            previous=previous.label(),
            days=period.days,
        )
    return tr(lang, "dash.vs_previous", label=previous.label())


def granularity_from_params(params: dict) -> str:
    granularity = str(params.get("granularity") or "day")
    if granularity not in report_periods.GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    return granularity


@dataclasses.dataclass(frozen=True)
class DashboardView:
    """The whole dashboard for one period, ready to show (rows: dicts the page's charts read by key)."""

    period: dict  # periods.Period.to_dict(): label, first, last, to_date…
    previous: dict  # the period compared with, the same shape
    note_zh: str
    note_en: str
    latest: bool  # the period reaches today: there is no later one to move to
    partial_bucket: bool
    cards: list[dict]  # one per measure: key, label_zh/en, value, previous, change, direction, tone, arrow_zh/en
    lifecycle: list[dict]  # breakdown rows: key, label_zh/en, color, total, new, new_previous, *_text
    sources: list[dict]
    regions: list[dict]
    trend: list[dict]  # start, label, partial, new_customers, orders, amount, conversations, *_text
    empty: bool
    computed_at: str
    stale: bool  # figures being computed or behind changes: the page asks again shortly
    computing: bool


def dashboard_view(
    actor: Actor, params: dict, allow_stale: bool = False, now: dt.datetime | None = None
) -> DashboardView:
    """The whole dashboard for ``params`` = {kind, anchor, end, granularity} (``now``: the clock)."""
    period = period_from_params(params, now)
    granularity = granularity_from_params(params)
    report_cache.take_served_stale()
    board = report_dashboard.dashboard(actor, period, allow_stale=allow_stale)
    count = MAX_TREND_BUCKETS[granularity]
    if granularity == "day" and period.kind in ("month", "custom") and period.days <= 92:
        count = period.days  # the days of the period itself (up to today)
    # While the aggregates are first built there are no figures (and no trend) yet.
    points = (
        []
        if board.computing
        else report_trends.trend(actor, granularity, period.last, count, allow_stale=allow_stale, now=now)
    )
    raw = board.raw
    empty = not board.computing and not (
        raw["new_customers"] or raw["orders"] or raw["conversations"] or raw["active_customers"]
    )
    computed = dt.datetime.fromisoformat(board.computed_at) if board.computed_at else None
    return DashboardView(
        period=board.period,
        previous=board.previous,
        note_zh=comparison_note(period, "zh"),
        note_en=comparison_note(period, "en"),
        latest=period.last >= report_periods.local_today(now),
        partial_bucket=any(p.partial for p in points),
        cards=[_measure_row(m) for m in board.measures],
        lifecycle=_breakdown_rows(board.lifecycle, "lifecycle"),
        sources=_breakdown_rows(board.sources, "source"),
        regions=_breakdown_rows(board.regions, ""),
        trend=_trend_rows(points),
        empty=empty,
        computed_at=format_local(computed, with_seconds=True) if computed else "",
        stale=report_cache.take_served_stale() or board.computing,
        computing=board.computing,
    )


def segment_from_params(actor: Actor, params: dict) -> tuple[ListQuery | None, str]:
    """(segment, its description) from {view_id} or {lifecycle, source}, narrowed by a
    custom field ({cf_key, cf_value}: reports/custom_segments.py)."""
    segment, description = _base_segment(actor, params)
    if not params.get("cf_key"):
        return segment, description
    narrowed = custom_segments.narrowed(actor, segment, params)
    key, value = narrowed.custom_filter
    return narrowed, ("" if description == "all" else description + ",") + f"cf.{key}={value}"


def _base_segment(actor: Actor, params: dict) -> tuple[ListQuery | None, str]:
    view_id = params.get("view_id")
    if view_id not in (None, "", "0", 0):
        from meiqia_app.services.customers import saved_views

        try:
            number = int(str(view_id))
        except ValueError:
            raise ValidationError.single("view_id", "error.bad_choice") from None
        query = saved_views.load_view(actor, number)
        return query, f"view:{number}"
    lifecycle = params.get("lifecycle") or ""
    source = params.get("source") or ""
    data = {}
    if lifecycle:
        data["lifecycle"] = [lifecycle]
    if source:
        data["sources"] = [source]
    if not data:
        return None, "all"
    query = ListQuery.from_dict(data)
    return query, ",".join(f"{k}={v[0]}" for k, v in data.items())


def segment_text(actor: Actor, params: dict, lang: str) -> str:
    """The segment of ``params`` as a person reads it, e.g. "生命周期 = 活跃 · 来源 = 微信"."""
    view_id = str(params.get("view_id") or "")
    if view_id not in ("", "0"):
        from meiqia_app.services.customers import saved_views

        name = next((v.name for v in saved_views.list_views(actor) if str(v.id) == view_id), view_id)
        return f"{tr(lang, 'report.segment_view')} = {name}"
    parts = []
    lifecycle = params.get("lifecycle") or ""
    source = params.get("source") or ""
    if lifecycle:
        parts.append(f"{tr(lang, 'report.filter_lifecycle')} = {tr(lang, f'lifecycle.{lifecycle}')}")
    if source:
        parts.append(f"{tr(lang, 'report.filter_source')} = {tr(lang, f'source.{source}')}")
    custom = custom_segments.filter_text(params, lang)
    if custom:
        parts.append(custom)
    return " · ".join(parts) or tr(lang, "report.segment_all")


@dataclasses.dataclass(frozen=True)
class SegmentReportView:
    """A segment's two periods side by side, its cohorts and top products (rows: dicts the page reads by key)."""

    segment: str  # "all", "view:<id>" or "lifecycle=…,sources=…"
    period_a: dict  # periods.Period.to_dict()
    period_b: dict
    comparison: list[dict]  # measure rows: key, label_zh/en, a, b, change, direction, tone, arrow_zh/en
    chart: list[dict]  # label_zh/en, a, b
    cohorts: list[dict]  # month, size, size_text, retained, r1, r3, r6, raw
    products: list[dict]  # product, orders, *_text, amount, raw
    empty: bool
    # the segment grouped by a custom field (params "group_by"): its label, then value, label, customers, share
    group_label: str = ""
    groups: list[dict] = dataclasses.field(default_factory=list)


def segment_report_view(
    actor: Actor, params: dict, now: dt.datetime | None = None, lang: str = "zh"
) -> SegmentReportView:
    """Two periods side by side for a segment, cohorts and top products.

    ``params`` = {view_id | lifecycle, source, a_from, a_to, b_from, b_to}.
    """
    require(actor, "report.view", action="report.segment")
    segment, description = segment_from_params(actor, params)
    period_a = report_periods.make_period("custom", params.get("a_from"), params.get("a_to"), now=now)
    period_b = report_periods.make_period("custom", params.get("b_from"), params.get("b_to"), now=now)
    comparison = report_trends.compare_periods(actor, segment, period_a, period_b)
    cohort_rows = report_trends.cohorts(actor, 12, period_b.last, segment, now=now)
    products = report_trends.top_products(actor, segment, period_b, 10)
    group_by = str(params.get("group_by") or "")
    groups = custom_segments.group_counts(actor, segment, group_by, lang) if group_by else []
    rows = []
    for m in comparison.measures:
        row = _measure_row(m)
        row["a"] = row.pop("previous")
        row["b"] = row.pop("value")
        rows.append(row)
    return SegmentReportView(
        segment=description,
        period_a=comparison.period_a,
        period_b=comparison.period_b,
        comparison=rows,
        chart=[
            {**_both(f"dash.{key}"), "a": comparison.raw_a[key], "b": comparison.raw_b[key]}
            for key in ("orders", "buyers", "conversations", "new_customers")
        ],
        cohorts=[
            {
                "month": row.month,
                "size": row.size,
                "size_text": f"{row.size:,}",
                # "—": the window has not ended yet (its month is still under way).
                "retained": [
                    ("—" if n is None else f"{n:,} ({(n / row.size * 100) if row.size else 0:.1f}%)")
                    for n in row.retained
                ],
                "r1": "—" if row.retained[0] is None else f"{row.retained[0]:,}",
                "r3": "—" if row.retained[1] is None else f"{row.retained[1]:,}",
                "r6": "—" if row.retained[2] is None else f"{row.retained[2]:,}",
                "raw": [row.size, *row.retained],
            }
            for row in cohort_rows
        ],
        products=[
            {
                "product": p.product,
                "orders": p.orders,
                "orders_text": f"{p.orders:,}",
                "quantity_text": f"{p.quantity:,}",
                "amount_text": report_formatting.format_value("money", p.amount_cents),
                "amount": round(p.amount_cents / 100, 2),
                "buyers_text": f"{p.buyers:,}",
                "raw": [p.product, p.orders, p.quantity, p.amount_cents / 100, p.buyers],
            }
            for p in products
        ],
        empty=not any(comparison.raw_a[k] or comparison.raw_b[k] for k in ("orders", "conversations", "new_customers")),
        group_label=_custom_field_label(group_by, lang) if group_by else "",
        groups=[dataclasses.asdict(g) for g in groups],
    )


def _custom_field_label(key: str, lang: str) -> str:
    field = custom_segments.custom_field_catalog.field(key)
    return field.label(lang) if field is not None else key


def default_segment_params() -> dict:
    """B = the last 30 days (today included), A = the 30 days before."""
    today = today_local()
    b_from = today - dt.timedelta(days=29)
    a_to = b_from - dt.timedelta(days=1)
    a_from = a_to - dt.timedelta(days=29)
    return {
        "a_from": a_from.isoformat(),
        "a_to": a_to.isoformat(),
        "b_from": b_from.isoformat(),
        "b_to": today.isoformat(),
        "view_id": "",
        "lifecycle": "",
        "source": "",
        "cf_key": "",
        "cf_value": "",
        "group_by": "",
    }


def shift_period(params: dict, step: int) -> dict:
    """The period ``step`` periods before (negative) or after (positive) the one in ``params``."""
    period = period_from_params(params)
    step = max(-1200, min(1200, int(step)))
    if period.kind == "custom":
        days = period.days * step
        first = period.first + dt.timedelta(days=days)
        return {**params, "anchor": first.isoformat(), "end": (period.last + dt.timedelta(days=days)).isoformat()}
    if period.kind == "month":
        return {**params, "anchor": report_periods.add_months(period.first, step).isoformat()}
    return {**params, "anchor": (period.first + dt.timedelta(days=period.days * step)).isoformat()}


@dataclasses.dataclass(frozen=True)
class SnapshotView:
    """An agent's dashboard without reports: three counts as display text."""

    total: str
    today: str
    month: str


def snapshot_view(actor: Actor) -> SnapshotView:
    snap = report_dashboard.agent_snapshot(actor)
    return SnapshotView(
        total=f"{snap.total_customers:,}", today=f"{snap.new_today:,}", month=f"{snap.new_this_month:,}"
    )
