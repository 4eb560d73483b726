"""File writers: CSV (UTF-8 BOM, RFC 4180), XLSX (openpyxl write-only) and PDF
(reportlab platypus, embedded CJK font). Each takes an iterator of row batches
and never holds more than one batch.

Formula injection: a text cell beginning with ``= + - @`` tab or CR is
prefixed with an apostrophe in CSV and XLSX, so spreadsheet programs show it
as text instead of evaluating it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from meiqia_app.services.exports.fields import BUILTIN_SPECS, FIELD_SPECS

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
Progress = Callable[[int], None]


def neutralise(text: str) -> str:
    """Make a text cell inert in spreadsheet programs (OWASP CSV injection)."""
    if text and text[0] in FORMULA_PREFIXES:
        return "'" + text
    return text


@dataclasses.dataclass(frozen=True)
class ExportMeta:
    """What the file says about itself (XLSX metadata sheet, PDF page header)."""

    exporter: str
    exported_at: dt.datetime  # local time
    scope_text: str
    headers: tuple[str, ...]  # translated column titles, in order
    fields: tuple[str, ...]
    lang: str = "zh"
    labels: dict = dataclasses.field(default_factory=dict)  # translated metadata labels
    true_text: str = "是"
    false_text: str = "否"


def _xml_safe(text: str) -> str:
    """Drop the control characters XML (and so XLSX) cannot hold."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("", text)


def _text_formatter(kind: str, meta: ExportMeta):
    if kind == "datetime":
        return lambda v: v.isoformat(" ", "seconds") if isinstance(v, dt.datetime) else _as_text(v)
    if kind == "date":
        return lambda v: v.isoformat() if isinstance(v, dt.date) else _as_text(v)
    if kind == "money":
        return lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else _as_text(v)
    if kind == "int":
        return lambda v: str(v) if isinstance(v, int) else _as_text(v)
    if kind == "number":
        return lambda v: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _as_text(v)
    if kind == "percent":
        # The row source gives CSV percents as their text already ("12.5%", see rows.custom_cell).
        return lambda v: v if v.__class__ is str and v[-1:] == "%" else _as_text(v)
    if kind == "bool":
        yes, no = meta.true_text, meta.false_text
        return lambda v: (yes if v else no) if isinstance(v, bool) else _as_text(v)
    return _as_text


_FORMULA_START = frozenset(FORMULA_PREFIXES)


def _as_text(value) -> str:
    """Any value as CSV text, neutralised (one call per cell: this is the hot path)."""
    if value.__class__ is not str:
        if value is None:
            return ""
        value = str(value)
    if value and value[0] in _FORMULA_START:
        return "'" + value
    return value


#: Columns that need no CSV conversion: plain ints (csv writes them itself) and
#: text from our own label catalogue (nothing to neutralise).
_PASS_THROUGH = frozenset(
    {"gender", "source", "lifecycle_stage", "membership_tier"}
    | {f for f, spec in BUILTIN_SPECS.items() if spec.kind == "int" and not spec.sensitive}
)


def _csv_columns(meta: ExportMeta, formatters: list, rows: list) -> list:
    """One batch, formatted column by column (``map`` runs in C); pass-through
    columns and timestamps the row source already rendered as text are skipped."""
    if not rows:
        return []
    columns = list(zip(*rows))
    for i, (field, column) in enumerate(zip(meta.fields, columns)):
        if field in _PASS_THROUGH:
            continue
        if FIELD_SPECS[field].kind == "datetime":
            sample = next((v for v in column if v is not None), None)
            if sample is None or sample.__class__ is str:
                continue  # "YYYY-MM-DD HH:MM:SS" from the row source: digits only
        columns[i] = list(map(formatters[i], column))
    return list(zip(*columns))


def write_csv(path: Path, meta: ExportMeta, batches: Iterable[list[list]], progress: Progress | None = None) -> int:
    """RFC 4180 CSV (CRLF rows, quotes doubled) with a UTF-8 BOM so Excel shows Chinese."""
    formatters = [_text_formatter(FIELD_SPECS[f].kind, meta) for f in meta.fields]
    count = 0
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, dialect="excel", lineterminator="\r\n")
        writer.writerow([neutralise(h) for h in meta.headers])
        for rows in batches:
            writer.writerows(_csv_columns(meta, formatters, rows))
            count += len(rows)
            if progress:
                progress(count)
    return count


CSV_LINE_END = "\r\n"


@dataclasses.dataclass(frozen=True)
class LineBlock:
    """Consecutive CSV lines the database built and joined (``CSV_LINE_END``
    between them, none after the last); ``len()`` is the number of rows."""

    text: str
    rows: int

    def __len__(self) -> int:
        return self.rows


def write_csv_lines(path: Path, meta: ExportMeta, batches: Iterable, progress: Progress | None = None) -> int:
    """The same file as ``write_csv`` from lines the database built (see
    ``RowSource.iter_sql_rows``: lists of lines, or blocks it joined itself):
    the header through csv.writer, then each batch written in one go."""
    count = 0
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle, dialect="excel", lineterminator="\r\n").writerow([neutralise(h) for h in meta.headers])
        for lines in batches:
            if len(lines):
                handle.write(lines.text if isinstance(lines, LineBlock) else "\r\n".join(lines))
                handle.write("\r\n")
            count += len(lines)
            if progress:
                progress(count)
    return count


_NUMBER_FORMATS = {
    "datetime": "yyyy-mm-dd hh:mm:ss",
    "date": "yyyy-mm-dd",
    "money": "#,##0.00",
    "int": "0",
    "number": "General",
    "percent": "0.00%",
}


def write_xlsx(
    path: Path,
    meta: ExportMeta,
    batches: Iterable[list[list]],
    progress: Progress | None = None,
    prebuilt: bool = False,
) -> int:
    """XLSX through the streaming writer (several times faster than openpyxl);
    ``prebuilt``: batches of row cells the database built."""
    from meiqia_app.services.exports.xlsx_stream import write_xlsx_stream

    return write_xlsx_stream(path, meta, batches, progress, prebuilt=prebuilt)


def write_xlsx_openpyxl(
    path: Path, meta: ExportMeta, batches: Iterable[list[list]], progress: Progress | None = None
) -> int:
    """The same workbook through openpyxl's write-only mode: the reference the
    streaming writer is tested against. Typed cells (dates as dates, numbers as numbers), frozen bold header,
    column widths, and a second sheet with the export's metadata."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(meta.labels.get("sheet", "customers"))
    kinds = [FIELD_SPECS[f].kind for f in meta.fields]
    for i, field in enumerate(meta.fields, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = max(
            FIELD_SPECS[field].width or 12, len(meta.headers[i - 1]) * 2 + 2
        )
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for title in meta.headers:
        cell = WriteOnlyCell(sheet, value=neutralise(title))
        cell.font = bold
        header.append(cell)
    sheet.append(header)

    # One styled template cell per typed column; plain values elsewhere (fast path).
    def make_converter(kind: str):
        number_format = _NUMBER_FORMATS.get(kind)
        if kind == "bool":
            yes, no = meta.true_text, meta.false_text
            return lambda v: (yes if v else no) if isinstance(v, bool) else _as_text(v)
        if number_format is None:
            return lambda v: _xml_safe(neutralise(v)) if isinstance(v, str) else v

        def convert(v):
            if v is None:
                return None
            if isinstance(v, str):
                return _xml_safe(neutralise(v))
            cell = WriteOnlyCell(sheet, value=v)
            cell.number_format = number_format
            return cell

        return convert

    converters = [make_converter(kind) for kind in kinds]
    count = 0
    for rows in batches:
        for row in rows:
            sheet.append([convert(v) for convert, v in zip(converters, row)])
        count += len(rows)
        if progress:
            progress(count)

    info = workbook.create_sheet(meta.labels.get("meta_sheet", "export"))
    info.column_dimensions["A"].width = 16
    info.column_dimensions["B"].width = 80
    for key, value in (
        ("exporter", meta.exporter),
        ("exported_at", meta.exported_at.replace(microsecond=0)),
        ("scope", meta.scope_text),
        ("fields", ", ".join(meta.headers)),
        ("row_count", count),
    ):
        label = WriteOnlyCell(info, value=meta.labels.get(key, key))
        label.font = bold
        cell = WriteOnlyCell(info, value=neutralise(value) if isinstance(value, str) else value)
        if isinstance(value, dt.datetime):
            cell.number_format = "yyyy-mm-dd hh:mm:ss"
        info.append([label, cell])
    workbook.save(path)
    return count


# --- PDF -----------------------------------------------------------------------------------

PDF_ROWS_PER_TABLE = 38
PDF_CELL_PADDING = 3
PDF_MAX_TEXT = 2000  # characters of one cell considered at all (the cell shows at most a few lines)


def _pdf_text(value, kind: str, meta: ExportMeta) -> str:
    if value is None:
        return ""
    if kind == "bool" and isinstance(value, bool):
        text = meta.true_text if value else meta.false_text
    elif isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M")
    elif isinstance(value, dt.date):
        text = value.isoformat()
    elif kind == "money" and isinstance(value, (int, float)):
        text = f"{value:,.2f}"
    elif kind == "percent" and isinstance(value, (int, float)) and not isinstance(value, bool):
        text = f"{round(value * 100, 4):g}%"
    else:
        text = str(value)[:PDF_MAX_TEXT]
    return text.replace("\r", " ").replace("\n", " ")


def write_pdf(
    path: Path,
    meta: ExportMeta,
    batches: Iterable[list[list]],
    progress: Progress | None = None,
    max_rows: int | None = None,
) -> int:
    """Landscape A4: a table of the rows under a header naming the exporter, the
    time and the filter; the column titles at the top of every page and
    "page X of N" at the bottom; Chinese in an embedded TrueType font.

    A long cell (a customer's tag list, an address) wraps inside its column,
    its row growing to fit (at most a few lines, then "…"). The rows go to
    platypus in tables of ``PDF_ROWS_PER_TABLE`` that flow on from page to page
    (split where a page ends), so the cost grows linearly with the rows and only
    a couple of tables exist at a time."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.units import mm
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Table, TableStyle

    from meiqia_app.services.exports.fonts import register_cjk_font
    from meiqia_app.services.exports.pdf_layout import CellWrapper, PageLabel, fit_text

    font = register_cjk_font()
    page_size = landscape(A4)
    margin = 12 * mm
    top = 12 * mm
    bottom = 10 * mm
    usable = page_size[0] - 2 * margin
    widths = [float(FIELD_SPECS[f].width or 12) for f in meta.fields]
    scale = usable / sum(widths)
    col_widths = [w * scale for w in widths]
    font_size = 7 if len(meta.fields) > 8 else 8
    leading = font_size + 2
    kinds = [FIELD_SPECS[f].kind for f in meta.fields]
    right = [kind in ("int", "money", "number", "percent") for kind in kinds]
    wrapper = CellWrapper(font, font_size, leading, PDF_CELL_PADDING)
    page_label = PageLabel(meta.labels.get("page", "Page {page} of {pages}"), font, 8)
    heading = " · ".join(
        x
        for x in (
            f"{meta.labels.get('exporter', 'exporter')}: {meta.exporter}",
            f"{meta.labels.get('exported_at', 'time')}: {meta.exported_at:%Y-%m-%d %H:%M}",
            f"{meta.labels.get('scope', 'scope')}: {meta.scope_text}",
        )
        if x
    )
    heading = fit_text(heading, usable, font, 8)

    base_style = [
        ("FONTNAME", (0, 0), (-1, -1), font),
        ("FONTSIZE", (0, 0), (-1, -1), font_size),
        ("LEADING", (0, 0), (-1, -1), leading),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa5b5")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), PDF_CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), PDF_CELL_PADDING),
    ]
    body_style = TableStyle(base_style + [("ALIGN", (i, 0), (i, -1), "RIGHT") for i, r in enumerate(right) if r])
    # The column titles: drawn at the top of every page (the body tables flow under them).
    header = Table(
        [[wrapper.cell(title, width) for title, width in zip(meta.headers, col_widths)]],
        colWidths=col_widths,
        style=TableStyle(base_style + [("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#e8edf5"))]),
    )
    header_height = header.wrap(usable, page_size[1])[1]

    def decorate(canvas, doc):
        canvas.saveState()
        canvas.setFont(font, 8)
        canvas.drawString(margin, page_size[1] - 8 * mm, heading)
        canvas.restoreState()
        header.drawOn(canvas, margin, page_size[1] - top - header_height)
        page_label.draw(canvas, doc.page, page_size[0] - margin, 6 * mm)

    count = 0

    def body(rows: list[list]) -> Table:
        return Table(rows, colWidths=col_widths, style=body_style)

    def flowables() -> Iterator:
        nonlocal count
        pending: list[list] = []
        for rows in batches:
            for row in rows:
                if max_rows is not None and count >= max_rows:
                    break
                pending.append(
                    [wrapper.cell(_pdf_text(v, k, meta), w, r) for v, k, w, r in zip(row, kinds, col_widths, right)]
                )
                count += 1
                if len(pending) == PDF_ROWS_PER_TABLE:
                    yield body(pending)
                    pending = []
            if progress:
                progress(count)
        if pending:
            yield body(pending)

    frame = Frame(
        margin,
        bottom,
        usable,
        page_size[1] - top - bottom - header_height,
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
        id="rows",
    )
    doc = BaseDocTemplate(
        str(path),
        pagesize=page_size,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=top,
        bottomMargin=bottom,
        title=meta.labels.get("title", "export"),
        author=meta.exporter,
        pageTemplates=[PageTemplate("rows", [frame], onPage=decorate)],
    )
    story = _LazyStory(flowables())
    if not story:
        from reportlab.platypus import Spacer

        story = [Spacer(1, 1)]  # no rows: a page with the header alone
    doc.build(story, canvasmaker=page_label.canvasmaker)
    return count


class _LazyStory(list):
    """platypus consumes its story from the front (``del story[0]``); feed it
    lazily so only a couple of pages' tables exist at a time."""

    BUFFER = 2

    def __init__(self, source: Iterator) -> None:
        super().__init__()
        self._source = source
        self._done = False
        self._fill()

    def _fill(self) -> None:
        while not self._done and super().__len__() < self.BUFFER:
            try:
                super().append(next(self._source))
            except StopIteration:
                self._done = True

    def __delitem__(self, index) -> None:
        super().__delitem__(index)
        self._fill()

    def pop(self, index: int = -1):
        item = super().pop(index)
        self._fill()
        return item

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __bool__(self) -> bool:
        return len(self) > 0
