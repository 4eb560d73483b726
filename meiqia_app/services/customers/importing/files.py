"""The uploaded file: where uploads live, reading CSV and XLSX within bounds (zip bombs, endless lines), the preview."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import itertools
import re
import secrets
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from meiqia_app.config import get_settings
from meiqia_app.services.customers.importing.columns import suggest_mapping
from meiqia_app.services.customers.importing.custom_values import active_fields
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import utcnow

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
XLSX_SUFFIXES = (".xlsx",)
SUPPORTED_SUFFIXES = CSV_SUFFIXES + XLSX_SUFFIXES
MAX_VALUE_CHARS = 100  # an offending value shown next to its problem
MAX_UNREADABLE_IN_A_ROW = 1_000  # a CSV that is not a CSV: give up instead of reporting every line

DELIMITERS = ",\t;|"
_SCAN_BLOCK = 1 << 20
MAX_CSV_LINE_CHARS = 1 << 20  # one physical line of a CSV; longer is not a table (a row of a million commas)
# XLSX: a part that unpacks more than this many times its packed size is a zip bomb, not a
# spreadsheet (real sheets pack 5-30x; deflate's ceiling is ~1000x). Small parts are let be.
XLSX_MAX_RATIO = 100
XLSX_RATIO_MIN_BYTES = 1 << 20
XLSX_MAX_PARTS = 10_000
# Control characters no customer field holds (NUL above all); tab and line breaks are kept.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --- reading files --------------------------------------------------------------------------


@dataclasses.dataclass
class _Table:
    headers: list[str]
    rows: Iterator[tuple[int, list]]
    expected_rows: int


def imports_dir() -> Path:
    return get_settings().imports_dir


def new_upload_path(original_name: str) -> Path:
    """Where to save an uploaded file so the import services will read it."""
    suffix = Path(str(original_name or "")).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValidationError.single("file", "import.unsupported_format")
    folder = imports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{file_stamp()}-{secrets.token_hex(6)}-upload{suffix}"


PREVIEW_ROWS = 5


def max_upload_bytes() -> int:
    """The largest file an upload may carry (``MEIQIA_MAX_UPLOAD_MB``)."""
    return get_settings().max_upload_bytes


def upload_path_for(actor: Actor, original_name: str) -> Path:
    """Where the page may save an upload: only for people who may import."""
    require(actor, "customer.import", action="customer.import_upload", target_type="customer")
    return new_upload_path(original_name)


@dataclasses.dataclass
class TablePreview:
    headers: list[str]
    sample: list[list[str]]  # the first data rows, as text, for the mapping step
    suggested: dict[str, str]  # column index (as text) -> field


def preview_table(actor: Actor, path: str | Path) -> TablePreview:
    require(actor, "customer.import", action="customer.import_preview", target_type="customer")
    headers, rows = read_table(path)
    if not headers:
        raise ValidationError.single("file", "import.empty_file")
    sample = []
    for _number, values in itertools.islice(rows, PREVIEW_ROWS):
        values = list(values or [])
        sample.append(
            [cell_text(v)[:MAX_VALUE_CHARS] for v in values[: len(headers)]] + [""] * max(0, len(headers) - len(values))
        )
    suggested = {str(index): field for index, field in suggest_mapping(headers, active_fields()).items()}
    return TablePreview([str(h or "")[:MAX_VALUE_CHARS] for h in headers], sample, suggested)


def file_stamp() -> str:
    return utcnow().strftime("%Y%m%d-%H%M%S")


def checked_upload_path(path: str | Path) -> Path:
    """The file, if it is a supported file inside the imports dir."""
    candidate = Path(path).resolve()
    root = imports_dir().resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        raise ValidationError.single("file", "import.file_missing")
    if candidate.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValidationError.single("file", "import.unsupported_format")
    return candidate


def _scan_csv(path: Path) -> tuple[str, int]:
    """(encoding, number of line breaks) in one streaming pass.

    A BOM decides; otherwise UTF-8 if every byte decodes, else GB18030 (what
    Excel on a Chinese Windows writes as "CSV").
    """
    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        else:
            encoding = "utf-8"
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")() if encoding == "utf-8" else None
        breaks = 0
        while block := handle.read(_SCAN_BLOCK):
            breaks += block.count(b"\n")
            if decoder is not None:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    encoding, decoder = "gb18030", None
        if decoder is not None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                encoding = "gb18030"
    return encoding, breaks


def _sniff_delimiter(sample: str) -> str:
    first_line = sample.split("\n", 1)[0]
    cut = sample.rfind("\n")
    try:
        delimiter = csv.Sniffer().sniff(sample[:cut] if cut > 0 else sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ""
    if delimiter and delimiter in first_line:
        return delimiter
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list]]:
    # gb18030 is the last resort: a stray undecodable byte becomes U+FFFD in
    # its cell (and likely fails validation) instead of stopping the file.
    errors = "replace" if encoding == "gb18030" else "strict"
    with path.open("r", encoding=encoding, errors=errors, newline="") as handle:
        delimiter = _sniff_delimiter(handle.read(64 * 1024))
        handle.seek(0)
        reader = csv.reader(_bounded_lines(handle), delimiter=delimiter)
        number = 0
        unreadable = 0
        while True:
            number += 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error:
                unreadable += 1
                if unreadable > MAX_UNREADABLE_IN_A_ROW:
                    raise ValidationError.single("file", "import.unreadable_file") from None
                yield number, None  # reported as an unreadable row
                continue
            unreadable = 0
            yield number, values


def _bounded_lines(handle) -> Iterator[str]:
    """The physical lines of a text file, refusing one longer than ``MAX_CSV_LINE_CHARS``
    before it is read whole (the csv module would build a row of it first)."""
    number = 0
    while line := handle.readline(MAX_CSV_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_CSV_LINE_CHARS:
            raise ValidationError.single("file", "import.line_too_long", row=number)
        yield line


def _check_xlsx_archive(path: Path) -> None:
    """Refuse an XLSX that would unpack to too much, before openpyxl opens it.

    The sizes come from the zip's central directory; Python's zipfile never
    inflates a part beyond the size declared there (and fails its CRC check if
    the data was longer), so what is declared is what reading can cost.
    """
    cap_mb = get_settings().import_max_uncompressed_mb
    cap = cap_mb * 1024 * 1024
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ValidationError.single("file", "import.unreadable_file") from None
    too_large = ValidationError.single("file", "import.xlsx_too_large", mb=cap_mb)
    if len(parts) > XLSX_MAX_PARTS:
        raise too_large
    total = 0
    for part in parts:
        total += part.file_size
        # openpyxl keeps the shared strings in memory (and a Python string costs a multiple
        # of its XML): that part gets a quarter of the budget.
        part_cap = cap // 4 if part.filename.lower().endswith("sharedstrings.xml") else cap
        bomb = part.file_size > XLSX_RATIO_MIN_BYTES and part.file_size > XLSX_MAX_RATIO * max(part.compress_size, 1)
        if bomb or part.file_size > part_cap or total > cap:
            raise too_large


def _xlsx_rows(path: Path) -> tuple[Iterator[tuple[int, list]], int]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    _check_xlsx_archive(path)
    try:
        # read_only streams the sheet; data_only gives a formula's last value, not its text.
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError):
        raise ValidationError.single("file", "import.unreadable_file") from None
    sheet = workbook.worksheets[0] if workbook.worksheets else None
    if sheet is None:
        workbook.close()
        raise ValidationError.single("file", "import.empty_file")
    expected = sheet.max_row or 0
    # Files not written by Excel often carry a wrong <dimension>; read what is there.
    sheet.reset_dimensions()

    def rows() -> Iterator[tuple[int, list]]:
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, list(values)
        finally:
            workbook.close()

    return rows(), expected


def is_blank_row(values: Sequence | None) -> bool:
    return values is not None and all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _bounded_rows(rows: Iterator[tuple[int, list]]) -> Iterator[tuple[int, list]]:
    """Stop at ``MEIQIA_IMPORT_MAX_ROWS`` data rows and refuse rows wider than
    ``MEIQIA_IMPORT_MAX_COLUMNS`` (trailing empty cells do not count)."""
    settings = get_settings()
    max_rows, max_columns = settings.import_max_rows, settings.import_max_columns
    try:
        for number, values in rows:
            if number - 1 > max_rows:  # row 1 is the header
                raise ValidationError.single("file", "import.too_many_rows", max=max_rows)
            if values is not None and len(values) > max_columns:
                values = list(values)
                while values and (values[-1] is None or values[-1] == ""):
                    values.pop()
                if len(values) > max_columns:
                    raise ValidationError.single("file", "import.too_many_columns", max=max_columns)
            yield number, values
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def open_table(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        rows, expected = _xlsx_rows(path)
    else:
        encoding, expected = _scan_csv(path)
        rows = _csv_rows(path, encoding)
    rows = _bounded_rows(rows)
    # Started here, so closing (or dropping) the iterator closes the file.
    for _number, values in rows:
        if values is None or is_blank_row(values):
            continue
        headers = [cell_text(v) for v in values]
        while headers and headers[-1] == "":
            headers.pop()
        if headers:
            return _Table(headers, rows, max(expected - 1, 0))
    raise ValidationError.single("file", "import.empty_file")


def read_table(path: str | Path) -> tuple[list[str], Iterator[tuple[int, list]]]:
    """The header row and an iterator of ``(row_number, values)`` for the data rows.

    CSV: UTF-8 (with or without BOM), UTF-16 with BOM, else GB18030; the
    delimiter (, tab ; |) is sniffed. XLSX: the first sheet, streamed. Values
    are strings for CSV and cell values (str, int, float, date…) for XLSX; a CSV
    row the csv module cannot parse comes as ``None``. Blank rows are included.
    """
    table = open_table(checked_upload_path(path))
    return table.headers, table.rows


def cell_text(value) -> str:
    """A cell as the text a person typed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    # Undo the apostrophe our error reports put before formula-like text.
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r":
        text = text[1:]
    return text
