"""What the dashboard and the reports page show, and the XLSX export of it.

Display-ready DTOs (plain dicts of strings and numbers, both languages for
labels) are built here from :mod:`reports`, so the page and the exported file
are made from the same figures. No Reflex here.
"""

from __future__ import annotations

import datetime as dt
import io
import re

from meiqia_app.i18n import tr
from meiqia_app.services import audit, reports
from meiqia_app.services.customer_query import ListQuery
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.rbac import Actor, require
from meiqia_app.timeutil import format_local, today_local

MAX_TREND_BUCKETS = {"day": 31, "week": 26, "month": 24}
CHART_COLORS = ("#3e63dd", "#30a46c", "#f76b15", "#8e4ec6", "#e5484d", "#12a594", "#ffc53d", "#978365", "#0090ff",
                "#d6409f", "#8d8d8d")


def _both(key: str, **params) -> dict:
    return {"label_zh": tr("zh", key, **params), "label_en": tr("en", key, **params)}


def _measure_row(measure: reports.Measure) -> dict:
    return {
        "key": measure.key,
        **_both(f"dash.{measure.key}"),
        "value": reports.format_value(measure.kind, measure.value),
        "previous": reports.format_value(measure.kind, measure.previous),
        "change": reports.format_change(measure),
        "direction": reports.change_direction(measure),
    }


def _group_label(prefix: str, key: str) -> dict:
    if key == "__other__":
        return _both("dash.other")
    if not key:
        return _both("dash.unknown")
    if prefix:
        return _both(f"{prefix}.{key}")
    return {"label_zh": key, "label_en": key}


def _breakdown_rows(items: list[reports.Breakdown], prefix: str) -> list[dict]:
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


def _trend_rows(points: list[reports.TrendPoint]) -> list[dict]:
    return [
        {
            "start": p.start,
            "label": p.label,
            "new_customers": p.new_customers,
            "orders": p.orders,
            "amount": round(p.amount_cents / 100, 2),
            "conversations": p.conversations,
            "new_customers_text": f"{p.new_customers:,}",
            "orders_text": f"{p.orders:,}",
            "amount_text": reports.format_value("money", p.amount_cents),
            "conversations_text": f"{p.conversations:,}",
        }
        for p in points
    ]


def period_from_params(params: dict) -> reports.Period:
    kind = str(params.get("kind") or "month")
    return reports.make_period(kind, params.get("anchor") or None, params.get("end") or None)


def granularity_from_params(params: dict) -> str:
    granularity = str(params.get("granularity") or "day")
    if granularity not in reports.GRANULARITIES:
        raise ValidationError.single("granularity", "error.bad_choice")
    return granularity


def dashboard_view(actor: Actor, params: dict, allow_stale: bool = False) -> dict:
    """The whole dashboard for ``params`` = {kind, anchor, end, granularity}."""
    period = period_from_params(params)
    granularity = granularity_from_params(params)
    reports.take_served_stale()
    board = reports.dashboard(actor, period, allow_stale=allow_stale)
    count = MAX_TREND_BUCKETS[granularity]
    if granularity == "day" and period.kind in ("month", "custom") and period.days <= 92:
        count = period.days  # the days of the period itself
    points = reports.trend(actor, granularity, period.last, count, allow_stale=allow_stale)
    raw = board.raw
    empty = not (raw["new_customers"] or raw["orders"] or raw["conversations"] or raw["active_customers"])
    computed = dt.datetime.fromisoformat(board.computed_at) if board.computed_at else None
    return {
        "period": board.period,
        "previous": board.previous,
        "cards": [_measure_row(m) for m in board.measures],
        "lifecycle": _breakdown_rows(board.lifecycle, "lifecycle"),
        "sources": _breakdown_rows(board.sources, "source"),
        "regions": _breakdown_rows(board.regions, ""),
        "trend": _trend_rows(points),
        "empty": empty,
        "computed_at": format_local(computed, with_seconds=True) if computed else "",
        # Figures from before the last change, being recomputed: the page asks again shortly.
        "stale": reports.take_served_stale(),
    }


def segment_from_params(actor: Actor, params: dict) -> tuple[ListQuery | None, str]:
    """(segment, its description) from {view_id} or {lifecycle, source}."""
    view_id = params.get("view_id")
    if view_id not in (None, "", "0", 0):
        from meiqia_app.services import saved_views

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


def segment_report_view(actor: Actor, params: dict) -> dict:
    """Two periods side by side for a segment, cohorts and top products.

    ``params`` = {view_id | lifecycle, source, a_from, a_to, b_from, b_to}.
    """
    require(actor, "report.view", action="report.segment")
    segment, description = segment_from_params(actor, params)
    period_a = reports.make_period("custom", params.get("a_from"), params.get("a_to"))
    period_b = reports.make_period("custom", params.get("b_from"), params.get("b_to"))
    comparison = reports.compare_periods(actor, segment, period_a, period_b)
    cohort_rows = reports.cohorts(actor, 12, period_b.last, segment)
    products = reports.top_products(actor, segment, period_b, 10)
    rows = []
    for m in comparison.measures:
        row = _measure_row(m)
        row["a"] = row.pop("previous")
        row["b"] = row.pop("value")
        rows.append(row)
    return {
        "segment": description,
        "period_a": comparison.period_a,
        "period_b": comparison.period_b,
        "comparison": rows,
        "chart": [
            {**_both(f"dash.{key}"), "a": comparison.raw_a[key], "b": comparison.raw_b[key]}
            for key in ("orders", "buyers", "conversations", "new_customers")
        ],
        "cohorts": [
            {
                "month": row.month,
                "size": row.size,
                "size_text": f"{row.size:,}",
                "retained": [("—" if n is None else f"{n:,} ({(n / row.size * 100) if row.size else 0:.1f}%)") for n in row.retained],
                "r1": "—" if row.retained[0] is None else f"{row.retained[0]:,}",
                "r3": "—" if row.retained[1] is None else f"{row.retained[1]:,}",
                "r6": "—" if row.retained[2] is None else f"{row.retained[2]:,}",
                "raw": [row.size, *row.retained],
            }
            for row in cohort_rows
        ],
        "products": [
            {
                "product": p.product,
                "orders": p.orders,
                "orders_text": f"{p.orders:,}",
                "quantity_text": f"{p.quantity:,}",
                "amount_text": reports.format_value("money", p.amount_cents),
                "amount": round(p.amount_cents / 100, 2),
                "buyers_text": f"{p.buyers:,}",
                "raw": [p.product, p.orders, p.quantity, p.amount_cents / 100, p.buyers],
            }
            for p in products
        ],
        "empty": not any(comparison.raw_a[k] or comparison.raw_b[k] for k in ("orders", "conversations", "new_customers")),
    }


# --- XLSX export ------------------------------------------------------------------------

RATE_FORMAT = "0.0%"
MONEY_FORMAT = "#,##0.00"
COUNT_FORMAT = "#,##0"
SCORE_FORMAT = "0.00"
_FORMATS = {"rate": RATE_FORMAT, "money": MONEY_FORMAT, "count": COUNT_FORMAT, "score": SCORE_FORMAT}


def _cell_value(kind: str, value):
    if value is None:
        return None
    if kind == "money":
        return round(value / 100, 2)
    if kind == "count":
        return int(value)
    return float(value)


def _sheet(workbook, title: str, header: list[str], rows: list[list], formats: list[str | None] | None = None):
    sheet = workbook.create_sheet(title=re.sub(r"[\[\]\*\?/\\:]", " ", title)[:31])
    sheet.append(header)
    for row in rows:
        sheet.append([_safe(v) for v in row])
    if formats:
        for column, number_format in enumerate(formats, start=1):
            if number_format:
                for cells in sheet.iter_rows(min_row=2, min_col=column, max_col=column):
                    for cell in cells:
                        cell.number_format = number_format
    for column_cells in sheet.columns:
        width = max(len(str(c.value or "")) for c in column_cells)
        sheet.column_dimensions[column_cells[0].column_letter].width = min(40, max(10, width + 2))
    return sheet


def _safe(value):
    """No formula injection through product names or region names."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _measure_sheet(workbook, lang: str, title_key: str, header: list[str], measures: list[reports.Measure]):
    rows = []
    formats_rows = []
    for m in measures:
        rows.append([tr(lang, f"dash.{m.key}"), _cell_value(m.kind, m.previous), _cell_value(m.kind, m.value),
                     reports.format_change(m)])
        formats_rows.append(_FORMATS[m.kind])
    sheet = _sheet(workbook, tr(lang, title_key), header, rows)
    for index, number_format in enumerate(formats_rows, start=2):
        sheet.cell(row=index, column=2).number_format = number_format
        sheet.cell(row=index, column=3).number_format = number_format
    return sheet


def _breakdown_sheet(workbook, lang: str, title_key: str, rows: list[dict]):
    label = "label_en" if lang == "en" else "label_zh"
    _sheet(workbook, tr(lang, title_key),
           [tr(lang, "dash.col_key"), tr(lang, "dash.col_total"), tr(lang, "dash.col_new"), tr(lang, "dash.col_new_prev")],
           [[r[label], r["total"], r["new"], r["new_previous"]] for r in rows],
           [None, COUNT_FORMAT, COUNT_FORMAT, COUNT_FORMAT])


def export_xlsx(actor: Actor, report: str, params: dict, lang: str = "zh") -> tuple[str, bytes]:
    """The dashboard (``report='dashboard'``) or a segment report as XLSX, one sheet per table.

    Needs report.view and export.request; audited with the parameters. Small
    file (a few hundred cells), so it is returned as bytes.
    """
    from openpyxl import Workbook

    require(actor, "report.view", action="report.export", target_type="report", target_id=report)
    require(actor, "export.request", action="report.export", target_type="report", target_id=report)
    if report not in ("dashboard", "segment"):
        raise ValidationError.single("report", "error.bad_choice")
    workbook = Workbook()
    workbook.remove(workbook.active)
    if report == "dashboard":
        period = period_from_params(params)
        granularity = granularity_from_params(params)
        board = reports.dashboard(actor, period)
        view = dashboard_view(actor, params)
        header = [tr(lang, "report.measure"), f"{tr(lang, 'dash.previous_period')} {board.previous['label']}",
                  f"{tr(lang, 'dash.current_period')} {board.period['label']}", tr(lang, "dash.change")]
        _measure_sheet(workbook, lang, "report.sheet_summary", header, board.measures)
        _sheet(workbook, tr(lang, "report.sheet_trend"),
               [tr(lang, "dash.bucket"), tr(lang, "dash.new_customers"), tr(lang, "dash.orders"),
                tr(lang, "dash.amount_cents"), tr(lang, "dash.conversations")],
               [[p["start"], p["new_customers"], p["orders"], p["amount"], p["conversations"]] for p in view["trend"]],
               [None, COUNT_FORMAT, COUNT_FORMAT, MONEY_FORMAT, COUNT_FORMAT])
        _breakdown_sheet(workbook, lang, "report.sheet_lifecycle", view["lifecycle"])
        _breakdown_sheet(workbook, lang, "report.sheet_sources", view["sources"])
        _breakdown_sheet(workbook, lang, "report.sheet_regions", view["regions"])
        name = f"dashboard-{board.period['first']}-{board.period['last']}-{granularity}.xlsx"
        details = {"period": board.period, "granularity": granularity}
    else:
        segment, description = segment_from_params(actor, params)
        period_a = reports.make_period("custom", params.get("a_from"), params.get("a_to"))
        period_b = reports.make_period("custom", params.get("b_from"), params.get("b_to"))
        comparison = reports.compare_periods(actor, segment, period_a, period_b)
        view = segment_report_view(actor, params)
        header = [tr(lang, "report.measure"), f"A {period_a.label()}", f"B {period_b.label()}", tr(lang, "dash.change")]
        _measure_sheet(workbook, lang, "report.sheet_comparison", header, comparison.measures)
        _sheet(workbook, tr(lang, "report.sheet_cohorts"),
               [tr(lang, "report.cohort_month"), tr(lang, "report.cohort_size"),
                *[tr(lang, "report.cohort_after", n=k) for k in reports.COHORT_OFFSETS]],
               [[row["month"], *row["raw"]] for row in view["cohorts"]],
               [None, COUNT_FORMAT, COUNT_FORMAT, COUNT_FORMAT, COUNT_FORMAT])
        _sheet(workbook, tr(lang, "report.sheet_products"),
               [tr(lang, "report.product"), tr(lang, "dash.orders"), tr(lang, "report.quantity"),
                tr(lang, "dash.amount_cents"), tr(lang, "dash.buyers")],
               [p["raw"] for p in view["products"]],
               [None, COUNT_FORMAT, COUNT_FORMAT, MONEY_FORMAT, COUNT_FORMAT])
        name = f"report-{period_a.first}-{period_b.last}.xlsx"
        details = {"segment": description, "a": period_a.to_dict(), "b": period_b.to_dict()}
    buffer = io.BytesIO()
    workbook.save(buffer)
    data = buffer.getvalue()
    audit.record_now(actor, "report.export", target_type="report", target_id=report,
                     details={**details, "format": "xlsx", "bytes": len(data)})
    return name, data


def default_segment_params() -> dict:
    """B = the last 30 days (today included), A = the 30 days before."""
    today = today_local()
    b_from = today - dt.timedelta(days=29)
    a_to = b_from - dt.timedelta(days=1)
    a_from = a_to - dt.timedelta(days=29)
    return {"a_from": a_from.isoformat(), "a_to": a_to.isoformat(), "b_from": b_from.isoformat(), "b_to": today.isoformat(),
            "view_id": "", "lifecycle": "", "source": ""}


def shift_period(params: dict, step: int) -> dict:
    """The period ``step`` periods before (negative) or after (positive) the one in ``params``."""
    period = period_from_params(params)
    step = max(-1200, min(1200, int(step)))
    if period.kind == "custom":
        days = period.days * step
        first = period.first + dt.timedelta(days=days)
        return {**params, "anchor": first.isoformat(), "end": (period.last + dt.timedelta(days=days)).isoformat()}
    if period.kind == "month":
        return {**params, "anchor": reports._add_months(period.first, step).isoformat()}
    return {**params, "anchor": (period.first + dt.timedelta(days=period.days * step)).isoformat()}


def snapshot_view(actor: Actor) -> dict:
    snap = reports.agent_snapshot(actor)
    return {"total": f"{snap.total_customers:,}", "today": f"{snap.new_today:,}", "month": f"{snap.new_this_month:,}"}
