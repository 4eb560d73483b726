"""The dashboard and the segment report as files: XLSX (downloaded at once) and PDF
(an export row, downloaded from the export history). What the figures are comes
from services/reports/views.py; this module only lays them out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re

from meiqia_app.i18n import tr
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import Conflict, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import formatting as report_formatting
from meiqia_app.services.reports import measures as reports
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import trends as report_trends
from meiqia_app.services.reports.views import (
    comparison_note,
    dashboard_view,
    granularity_from_params,
    period_from_params,
    segment_from_params,
    segment_report_view,
    segment_text,
)
from meiqia_app.timeutil import format_local

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


@dataclasses.dataclass
class _Table:
    """One table of an exported report: the XLSX sheet and the PDF table are made from it."""

    title: str
    header: list[str]
    rows: list[list]  # raw cell values (numbers as numbers; money in yuan)
    kinds: list[str | None]  # per column: count | money | rate | score | text (None)
    row_kinds: list[str] | None = None  # per row (measure tables: each row its own kind in columns 1-2)


def _report_tables(
    actor: Actor, report: str, params: dict, lang: str, now: dt.datetime | None = None
) -> tuple[str, dict, list[_Table], str]:
    """(file stem, audit details, tables, subtitle) of the dashboard or a segment report."""
    if report not in ("dashboard", "segment"):
        raise ValidationError.single("report", "error.bad_choice")
    label = "label_en" if lang == "en" else "label_zh"

    def measures_table(title_key: str, header: list[str], measures: list[reports.Measure]) -> _Table:
        return _Table(
            tr(lang, title_key),
            header,
            [
                [
                    tr(lang, f"dash.{m.key}"),
                    _cell_value(m.kind, m.previous),
                    _cell_value(m.kind, m.value),
                    report_formatting.format_change(m),
                ]
                for m in measures
            ],
            [None, None, None, None],
            [m.kind for m in measures],
        )

    def breakdown_table(title_key: str, rows: list[dict]) -> _Table:
        return _Table(
            tr(lang, title_key),
            [
                tr(lang, "dash.col_key"),
                tr(lang, "dash.col_total"),
                tr(lang, "dash.col_new"),
                tr(lang, "dash.col_new_prev"),
            ],
            [[r[label], r["total"], r["new"], r["new_previous"]] for r in rows],
            [None, "count", "count", "count"],
        )

    if report == "dashboard":
        period = period_from_params(params, now)
        granularity = granularity_from_params(params)
        board = report_dashboard.dashboard(actor, period)
        if board.computing:
            raise Conflict("dash.computing")
        view = dashboard_view(actor, params, now=now)
        header = [
            tr(lang, "report.measure"),
            f"{tr(lang, 'dash.previous_period')} {board.previous['label']}",
            f"{tr(lang, 'dash.current_period')} {board.period['label']}",
            tr(lang, "dash.change"),
        ]
        tables = [
            measures_table("report.sheet_summary", header, board.measures),
            _Table(
                tr(lang, "report.sheet_trend"),
                [
                    tr(lang, "dash.bucket"),
                    tr(lang, "dash.new_customers"),
                    tr(lang, "dash.orders"),
                    tr(lang, "dash.amount_cents"),
                    tr(lang, "dash.conversations"),
                ],
                [[p["start"], p["new_customers"], p["orders"], p["amount"], p["conversations"]] for p in view.trend],
                [None, "count", "count", "money", "count"],
            ),
            breakdown_table("report.sheet_lifecycle", view.lifecycle),
            breakdown_table("report.sheet_sources", view.sources),
            breakdown_table("report.sheet_regions", view.regions),
        ]
        stem = f"dashboard-{board.period['first']}-{board.period['last']}-{granularity}"
        details = {"period": board.period, "granularity": granularity}
        subtitle = f"{tr(lang, 'dash.title')} · {comparison_note(period, lang)}"
    else:
        segment, description = segment_from_params(actor, params)
        period_a = report_periods.make_period("custom", params.get("a_from"), params.get("a_to"), now=now)
        period_b = report_periods.make_period("custom", params.get("b_from"), params.get("b_to"), now=now)
        comparison = report_trends.compare_periods(actor, segment, period_a, period_b)
        view = segment_report_view(actor, params, now=now, lang=lang)
        header = [tr(lang, "report.measure"), f"A {period_a.label()}", f"B {period_b.label()}", tr(lang, "dash.change")]
        tables = [
            measures_table("report.sheet_comparison", header, comparison.measures),
            _Table(
                tr(lang, "report.sheet_cohorts"),
                [
                    tr(lang, "report.cohort_month"),
                    tr(lang, "report.cohort_size"),
                    *[tr(lang, "report.cohort_after", n=k) for k in report_trends.COHORT_OFFSETS],
                ],
                [[row["month"], *row["raw"]] for row in view.cohorts],
                [None, "count", "count", "count", "count"],
            ),
            _Table(
                tr(lang, "report.sheet_products"),
                [
                    tr(lang, "report.product"),
                    tr(lang, "dash.orders"),
                    tr(lang, "report.quantity"),
                    tr(lang, "dash.amount_cents"),
                    tr(lang, "dash.buyers"),
                ],
                [p["raw"] for p in view.products],
                [None, "count", "count", "money", "count"],
            ),
        ]
        if view.groups:
            # The segment grouped by a custom field, as the page shows it: option labels, not ids.
            tables.append(
                _Table(
                    tr(lang, "report.cf_groups_sheet", field=view.group_label),
                    [view.group_label, tr(lang, "dash.total_customers"), tr(lang, "report.cf_groups_share")],
                    [[g["label"], g["customers"], g["ratio"]] for g in view.groups],
                    [None, "count", "rate"],
                )
            )
        stem = f"report-{period_a.first}-{period_b.last}"
        details = {"segment": description, "a": period_a.to_dict(), "b": period_b.to_dict()}
        if view.groups:
            details["group_by"] = str(params.get("group_by") or "")
        subtitle = (
            f"{tr(lang, 'report.title')} · {tr(lang, 'report.segment')}: {segment_text(actor, params, lang)} · "
            f"A {period_a.label()} · B {period_b.label()}"
        )
    return stem, details, tables, subtitle


def _check_export(actor: Actor, report: str) -> None:
    require(actor, "report.view", action="report.export", target_type="report", target_id=report)
    require(actor, "export.request", action="report.export", target_type="report", target_id=report)


def export_xlsx(
    actor: Actor, report: str, params: dict, lang: str = "zh", now: dt.datetime | None = None
) -> tuple[str, bytes]:
    """The dashboard (``report='dashboard'``) or a segment report as XLSX, one sheet per table.

    Needs report.view and export.request; audited with the parameters. Small
    file (a few hundred cells), so it is returned as bytes.
    """
    from openpyxl import Workbook

    _check_export(actor, report)
    stem, details, tables, _subtitle = _report_tables(actor, report, params, lang, now)
    workbook = Workbook()
    workbook.remove(workbook.active)
    for table in tables:
        sheet = _sheet(
            workbook,
            table.title,
            table.header,
            table.rows,
            [_FORMATS.get(kind) if kind else None for kind in table.kinds],
        )
        for index, kind in enumerate(table.row_kinds or [], start=2):
            sheet.cell(row=index, column=2).number_format = _FORMATS[kind]
            sheet.cell(row=index, column=3).number_format = _FORMATS[kind]
    buffer = io.BytesIO()
    workbook.save(buffer)
    data = buffer.getvalue()
    audit.record_now(
        actor,
        "report.export",
        target_type="report",
        target_id=report,
        details={**details, "format": "xlsx", "bytes": len(data)},
    )
    return f"{stem}.xlsx", data


def _pdf_cell(kind: str | None, value) -> str:
    """A cell as the page shows it. The tables hold money in yuan; format_value takes cents."""
    if kind in ("count", "money", "rate", "score"):
        if value is not None and kind == "money":
            value = float(value) * 100
        return report_formatting.format_value(kind, value)
    return "—" if value is None else str(value)


def _write_report_pdf(path, title: str, subtitle: str, meta_line: str, tables: list[_Table], page_label: str) -> None:
    """A4 portrait; a heading per table and the table under it (the numbers every
    chart of the page draws); Chinese in the embedded TrueType font; a long
    cell wraps inside its column; "page X of N" at the bottom."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from meiqia_app.services.exports.fonts import register_cjk_font
    from meiqia_app.services.exports.pdf_layout import CellWrapper, PageLabel

    font = register_cjk_font()
    margin = 15 * mm
    # The frame's own padding (6 pt each side) is inside the margins.
    usable = A4[0] - 2 * margin - 12
    title_style = ParagraphStyle("title", fontName=font, fontSize=15, leading=20, spaceAfter=4)
    sub_style = ParagraphStyle("sub", fontName=font, fontSize=9, leading=12, textColor=colors.HexColor("#555555"))
    heading_style = ParagraphStyle("h", fontName=font, fontSize=11, leading=15, spaceBefore=10, spaceAfter=4)
    wrapper = CellWrapper(font, 8.5, 11, 6)
    footer = PageLabel(page_label, font, 8)
    story = [
        Paragraph(escape(title), title_style),
        Paragraph(escape(subtitle), sub_style),
        Paragraph(escape(meta_line), sub_style),
        Spacer(1, 4 * mm),
    ]
    for table in tables:
        columns = len(table.header)
        first = usable * (0.34 if columns <= 4 else 0.24)
        widths = [first] + [(usable - first) / (columns - 1)] * (columns - 1)
        rows = []
        for index, row in enumerate(table.rows):
            kinds = list(table.kinds)
            if table.row_kinds:
                kinds[1] = kinds[2] = table.row_kinds[index]
            rows.append(
                [
                    wrapper.cell(_pdf_cell(kind, value), width, right=column > 0)
                    for column, (kind, value, width) in enumerate(zip(kinds, row, widths))
                ]
            )
        style = TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), font),
                ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                ("LEADING", (0, 0), (-1, -1), 11),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf5")),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa5b5")),
                ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
        header = [wrapper.cell(str(text), width) for text, width in zip(table.header, widths)]
        body = rows or [["—"] + [""] * (columns - 1)]
        grid = Table([header] + body, colWidths=widths, repeatRows=1, style=style)
        story.append(
            KeepTogether([Paragraph(escape(table.title), heading_style), grid])
            if len(body) < 35
            else Paragraph(escape(table.title), heading_style)
        )
        if len(body) >= 35:
            story.append(grid)

    def decorate(canvas, doc):
        footer.draw(canvas, doc.page, A4[0] - margin, 8 * mm)

    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=title,
    )
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate, canvasmaker=footer.canvasmaker)


def export_pdf(actor: Actor, report: str, params: dict, lang: str = "zh", now: dt.datetime | None = None) -> int:
    """The dashboard or a segment report as a PDF with every table of the page.

    Same permissions as the XLSX (report.view + export.request). The file goes
    through the export pipeline: it is written to the private exports folder
    and recorded as a finished ``export_job`` (kind ``report``), so it appears
    in the export history, expires with the other exports and is downloaded
    through the single-use token route (``/api/export/download/{token}``).
    Returns the export id; audited as ``report.export`` (format pdf, hash).
    """
    import hashlib
    import json
    import os
    import secrets

    from meiqia_app.config import get_settings
    from meiqia_app.db import write_session
    from meiqia_app.models import ExportJob
    from meiqia_app.services.cleanup import retention
    from meiqia_app.timeutil import utcnow

    _check_export(actor, report)
    stem, details, tables, subtitle = _report_tables(actor, report, params, lang, now)
    settings = get_settings()
    directory = settings.exports_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = directory / f"report-{secrets.token_hex(8)}.pdf"
    partial = directory / f".{final.stem}.part.pdf"
    title = tr(lang, "dash.title" if report == "dashboard" else "report.title")
    meta_line = (
        f"{tr(lang, 'report.pdf_by')}: {actor.display_name or actor.username} · "
        f"{tr(lang, 'report.pdf_at')}: {format_local(utcnow())}"
    )
    try:
        _write_report_pdf(partial, title, subtitle, meta_line, tables, tr(lang, "report.pdf_page"))
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    data = final.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    now = utcnow()
    with write_session() as session:
        job = ExportJob(
            requested_by_id=actor.user_id,
            requested_by_name=actor.username,
            status="done",
            kind="report",
            purpose="analysis",
            scope=json.dumps({"report": report, "text": subtitle, **details}, ensure_ascii=False, default=str),
            fields="[]",
            sort=json.dumps({"lang": lang}),
            format="pdf",
            row_count=sum(len(t.rows) for t in tables),
            file_name=final.name,
            file_size=len(data),
            file_sha256=digest,
            created_at=now,
            started_at=now,
            finished_at=now,
            expires_at=now + dt.timedelta(hours=retention.export_ttl_hours()),
        )
        session.add(job)
        session.flush()
        export_id = int(job.id)
        audit.record(
            session,
            actor,
            "report.export",
            target_type="report",
            target_id=report,
            details={**details, "format": "pdf", "bytes": len(data), "sha256": digest, "export_id": export_id},
        )
    return export_id
