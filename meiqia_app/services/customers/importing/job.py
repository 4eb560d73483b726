"""Importing customers from CSV or XLSX files (CUST-6).

The flow the page follows:

1. The upload is saved under the imports dir (:func:`new_upload_path`); the
   services only read files there, so a handler called with a made-up path
   cannot turn a server file into an "error report".
2. :func:`read_table` gives the header row; :func:`suggest_mapping` proposes
   which column fills which customer field (Chinese and English headers); the
   person corrects it.
3. :func:`dry_run` validates every row exactly as the edit form would
   (``customer_validation.clean_customer_fields``), finds rows that repeat an
   existing customer or an earlier row (same phone, e-mail or external id: the
   rule of ``services/customers/duplicates/check``, which the new-customer dialog follows too), and writes the
   complete error report; nothing is saved.
4. :func:`run_import` does the same pass and inserts the good rows in batches,
   one transaction each. A bad row is skipped and reported, never fatal. One
   audit entry records the counts.

The page runs both as jobs of the runner (services/platform/jobs.py; kinds
``customer.import_check`` and ``customer.import``, :func:`start_job`): the
progress is the job's, a cancel stops after the current batch, and a restart
neither loses nor repeats work silently: a check starts again from the top
(it saves nothing), an import a dead process was running ends as failed
saying how many rows went in (its audit entry says so too), since importing
the same file again skips them as duplicates.

Files are streamed: rows are read, checked and written a batch at a time, so
memory stays flat whatever the file's length. Row numbers are the ones a
spreadsheet shows: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import itertools
import re
import secrets
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import Connection, insert

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, write_session
from meiqia_app.i18n import tr
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.models import Customer, CustomerSearch
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.changes import IMPORTED, MANY, customers_changed, publish_committed
from meiqia_app.services.customers.duplicates.check import existing_by_key, identity_keys, reachable_ids
from meiqia_app.services.customers.search_text import pinyin_of, search_row
from meiqia_app.services.customers.validation import CHOICES, EDITABLE_FIELDS, clean_customer_fields
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import utcnow

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
XLSX_SUFFIXES = (".xlsx",)
SUPPORTED_SUFFIXES = CSV_SUFFIXES + XLSX_SUFFIXES

BATCH_ROWS = 2_000  # rows checked and inserted per transaction
MAX_PROBLEMS = 200  # problems kept in the report for display; the file has all
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
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

C = Customer.__table__.c
SEARCH_FIELDS = ("name", "phone", "email", "external_id", "visitor_id")  # build_search_text's arguments, in order

Progress = Callable[[int, int], None]
"""``progress(rows_done, rows_expected)``; rows_expected is an estimate (0: unknown)."""


# --- report -------------------------------------------------------------------------------


@dataclasses.dataclass
class ImportProblem:
    """One thing wrong with one row. ``field`` is a customer field ("" for the row as a whole)."""

    row: int
    field: str
    message_key: str
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    value: str = ""


@dataclasses.dataclass
class ImportReport:
    """What a dry run found or an import did; plain values so a Reflex state can hold it.

    ``total_rows`` = ``valid`` + ``invalid`` + ``duplicates`` (blank rows are not counted).
    ``valid`` rows pass every check and repeat nobody; ``duplicates`` pass the
    checks but share a phone or e-mail with an existing customer
    (``duplicates_existing``) or with an earlier row of the file
    (``duplicates_in_file``). ``inserted`` is 0 for a dry run.
    """

    file_name: str
    dry_run: bool
    total_rows: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    duplicates_existing: int = 0
    duplicates_in_file: int = 0
    inserted: int = 0
    skipped: int = 0
    skip_duplicates: bool = True
    problems: list[ImportProblem] = dataclasses.field(default_factory=list)
    problem_count: int = 0
    problems_truncated: bool = False
    reason_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    error_rows: int = 0
    error_report_path: str = ""
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)  # header -> field
    seconds: float = 0.0


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
    return folder / f"{_stamp()}-{secrets.token_hex(6)}-upload{suffix}"


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
            [_cell_text(v)[:MAX_VALUE_CHARS] for v in values[: len(headers)]]
            + [""] * max(0, len(headers) - len(values))
        )
    suggested = {str(index): field for index, field in suggest_mapping(headers).items()}
    return TablePreview([str(h or "")[:MAX_VALUE_CHARS] for h in headers], sample, suggested)


# An error report goes to the browser through the websocket (rx.download), which
# suits reports of bad rows; a file whose report is bigger is better fixed at the source.
MAX_ERROR_REPORT_DOWNLOAD = 20 * 1024 * 1024


def read_error_report(actor: Actor, path: str | Path) -> tuple[str, bytes]:
    """(file name, bytes) of an error report written by a dry run or an import."""
    require(actor, "customer.import", action="customer.import_error_report", target_type="customer")
    candidate = Path(path).resolve()
    root = imports_dir().resolve()
    if not candidate.is_relative_to(root) or not candidate.name.endswith("-errors.csv") or not candidate.is_file():
        raise ValidationError.single("file", "import.file_missing")
    if candidate.stat().st_size > MAX_ERROR_REPORT_DOWNLOAD:
        raise ValidationError.single("file", "import.report_too_big", mb=MAX_ERROR_REPORT_DOWNLOAD // (1024 * 1024))
    return candidate.name, candidate.read_bytes()


def _stamp() -> str:
    return utcnow().strftime("%Y%m%d-%H%M%S")


def _checked_path(path: str | Path) -> Path:
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


def _is_blank(values: Sequence | None) -> bool:
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


def _open_table(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        rows, expected = _xlsx_rows(path)
    else:
        encoding, expected = _scan_csv(path)
        rows = _csv_rows(path, encoding)
    rows = _bounded_rows(rows)
    # Started here, so closing (or dropping) the iterator closes the file.
    for _number, values in rows:
        if values is None or _is_blank(values):
            continue
        headers = [_cell_text(v) for v in values]
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
    table = _open_table(_checked_path(path))
    return table.headers, table.rows


def _cell_text(value) -> str:
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


# --- mapping --------------------------------------------------------------------------------

_HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "name": (
        "姓名",
        "名字",
        "客户姓名",
        "客户名称",
        "客户名",
        "名称",
        "联系人",
        "联系人姓名",
        "客户",
        "真实姓名",
        "name",
        "fullname",
        "customername",
        "customer",
        "contactname",
        "contact",
    ),
    "gender": ("性别", "gender", "sex"),
    "birthday": ("生日", "出生日期", "出生年月日", "出生年月", "birthday", "birthdate", "dateofbirth", "dob"),
    "phone": (
        "手机",
        "手机号",
        "手机号码",
        "电话",
        "电话号码",
        "联系电话",
        "联系方式",
        "移动电话",
        "手机电话",
        "phone",
        "phonenumber",
        "mobile",
        "mobilephone",
        "mobilenumber",
        "tel",
        "telephone",
        "cellphone",
        "cell",
    ),
    "email": ("邮箱", "电子邮箱", "邮件", "电子邮件", "邮箱地址", "电邮", "email", "emailaddress", "mail"),
    "address": (
        "地址",
        "详细地址",
        "联系地址",
        "收货地址",
        "通讯地址",
        "家庭地址",
        "address",
        "streetaddress",
        "street",
    ),
    "province": ("省份", "省", "所在省份", "省市", "省/直辖市", "province", "state"),
    "city": ("城市", "市", "所在城市", "city", "town"),
    "company": (
        "公司",
        "公司名称",
        "单位",
        "工作单位",
        "企业",
        "企业名称",
        "所属公司",
        "company",
        "companyname",
        "organization",
        "organisation",
        "org",
        "employer",
    ),
    "source": ("来源", "来源渠道", "渠道", "客户来源", "source", "channel", "leadsource"),
    "external_id": (
        "外部id",
        "外部编号",
        "客户编号",
        "客户id",
        "会员编号",
        "会员id",
        "会员号",
        "externalid",
        "customerid",
        "customerno",
        "memberid",
        "memberno",
    ),
    "visitor_id": ("访客id", "访客编号", "美洽访客id", "visitorid", "visitor"),
    "lifecycle_stage": ("生命周期", "生命周期阶段", "客户阶段", "阶段", "lifecycle", "lifecyclestage", "stage"),
    "membership_tier": (
        "会员等级",
        "等级",
        "会员级别",
        "会员类型",
        "会员",
        "tier",
        "membershiptier",
        "membership",
        "memberlevel",
        "level",
    ),
}
# Our own labels for the fields (the export's column headers) map back too.
FIELD_LABEL_KEYS: dict[str, str] = {
    field: {"lifecycle_stage": "customer.lifecycle", "membership_tier": "customer.tier"}.get(field, f"customer.{field}")
    for field in EDITABLE_FIELDS
}
# Words too general to suggest a field when they only appear inside a longer
# header (客户类型 is not a name, 产品名称 is not one either).
_EXACT_ONLY = {
    "客户",
    "会员",
    "名称",
    "等级",
    "阶段",
    "单位",
    "企业",
    "联系人",
    "联系方式",
    "mail",
    "cell",
    "level",
    "stage",
    "state",
    "town",
    "customer",
    "contact",
    "visitor",
    "membership",
    "street",
    "channel",
}
_BRACKETS = re.compile(r"[(（\[【].*?[)）\]】]")
_HEADER_NOISE = re.compile(r"[\s_\-.:：*＊#]+")


def _header_key(header: str) -> str:
    """张三's "手机号码（必填）*" and "Mobile_Phone" alike: NFKC, lower case, no brackets or punctuation."""
    text = unicodedata.normalize("NFKC", str(header or "")).lower()
    text = _BRACKETS.sub("", text)
    return _HEADER_NOISE.sub("", text)


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for field in EDITABLE_FIELDS:
        names = list(_HEADER_ALIASES.get(field, ())) + [field]
        names += list(ENTRIES.get(FIELD_LABEL_KEYS[field], ()))
        for name in names:
            aliases.setdefault(_header_key(name), field)
    return aliases


_ALIASES = _build_aliases()


def _header_guess(header: str) -> tuple[int, str] | None:
    """(score, field): an exact alias scores highest, else the longest alias inside the header."""
    key = _header_key(header)
    if not key:
        return None
    if key in _ALIASES:
        return 1000, _ALIASES[key]
    best: tuple[int, str] | None = None
    for alias, field in _ALIASES.items():
        short_latin = alias.isascii() and len(alias) < 4
        if len(alias) < 2 or short_latin or alias in _EXACT_ONLY or alias not in key:
            continue
        if best is None or len(alias) > best[0]:
            best = (len(alias), field)
    return best


def suggest_mapping(headers: Sequence[str]) -> dict[int, str]:
    """Column index -> customer field, for the headers we recognise.

    Each field is proposed for one column at most: exact names first, then
    the column whose header contains the longest known name, left to right.
    """
    guesses = []
    for index, header in enumerate(headers):
        guess = _header_guess(header)
        if guess is not None:
            guesses.append((-guess[0], index, guess[1]))
    mapping: dict[int, str] = {}
    taken: set[str] = set()
    for _score, index, field in sorted(guesses):
        if field not in taken:
            mapping[index] = field
            taken.add(field)
    return dict(sorted(mapping.items()))


def resolve_mapping(headers: Sequence[str], mapping: dict) -> dict[int, str]:
    """Check a mapping from the page: keys are column indexes (or header texts), values fields.

    Empty values mean "do not import this column". Raises ValidationError.
    """
    if not isinstance(mapping, dict):
        raise ValidationError.single("mapping", "import.unknown_column")
    positions = {header: index for index, header in reversed(list(enumerate(headers)))}
    resolved: dict[int, str] = {}
    for key, field in mapping.items():
        if field in (None, ""):
            continue
        if field not in EDITABLE_FIELDS:
            raise ValidationError.single("mapping", "import.unknown_field")
        if isinstance(key, bool):
            raise ValidationError.single("mapping", "import.unknown_column")
        if isinstance(key, int):
            index = key
        elif isinstance(key, str) and key in positions:
            index = positions[key]
        elif isinstance(key, str) and key.strip().isdigit():
            index = int(key)
        else:
            raise ValidationError.single("mapping", "import.unknown_column")
        if not 0 <= index < len(headers):
            raise ValidationError.single("mapping", "import.unknown_column")
        if field in resolved.values() and resolved.get(index) != field:
            raise ValidationError.single("mapping", "import.field_mapped_twice")
        resolved[index] = field
    if "name" not in resolved.values():
        raise ValidationError.single("mapping", "import.name_not_mapped")
    return dict(sorted(resolved.items()))


# --- values ---------------------------------------------------------------------------------

_CHOICE_PREFIX = {"gender": "gender", "source": "source", "lifecycle_stage": "lifecycle", "membership_tier": "tier"}
_CHOICE_EXTRA: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "M": ("男性", "先生", "male", "man"),
        "F": ("女性", "女士", "小姐", "female", "woman"),
        "U": ("保密", "其他", "不详", "unknown", "other"),
    },
    "source": {
        "web": ("官网", "网页", "网络", "pc", "website"),
        "wechat": ("weixin", "公众号", "微信公众号"),
        "miniprogram": ("微信小程序", "miniapp"),
        "douyin": ("tiktok",),
        "phone": ("电话咨询", "telephone"),
        "offline": ("门店", "线下门店", "实体店", "store"),
    },
    "lifecycle_stage": {
        "prospect": ("潜在客户",),
        "new": ("新",),
        "active": ("活跃客户",),
        "dormant": ("沉睡客户", "休眠"),
        "churned": ("流失客户",),
    },
    "membership_tier": {"regular": ("普通", "普卡"), "silver": ("银卡", "银牌"), "gold": ("金卡", "金牌")},
}


def _choice_key(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def _build_choice_labels() -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for field, codes in CHOICES.items():
        table: dict[str, str] = {}
        for code in codes:
            names = [
                code,
                *ENTRIES.get(f"{_CHOICE_PREFIX[field]}.{code}", ()),
                *_CHOICE_EXTRA.get(field, {}).get(code, ()),
            ]
            for name in names:
                table.setdefault(_choice_key(name), code)
        labels[field] = table
    return labels


CHOICE_LABELS = _build_choice_labels()
_DATE_PARTS = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[\sT].*)?$")


def _prepared(field: str, text: str) -> str:
    """A cell's text made ready for clean_customer_fields (labels to codes, dates to ISO)."""
    if not text:
        return text
    if field in CHOICE_LABELS:
        return CHOICE_LABELS[field].get(_choice_key(text), text)
    if field == "birthday":
        match = _DATE_PARTS.match(text)
        if match:
            year, month, day = match.groups()
            return f"{year}-{int(month):02d}-{int(day):02d}"
        if len(text) == 8 and text.isdigit():
            return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


# --- the pass over the file -------------------------------------------------------------------


@dataclasses.dataclass
class _Row:
    number: int
    values: list[str]
    cleaned: dict | None = None
    problems: list[ImportProblem] = dataclasses.field(default_factory=list)
    duplicate_of: str = ""  # "existing" | "file"

    def search_key(self) -> tuple:
        return tuple(self.cleaned.get(field) for field in SEARCH_FIELDS)


def _check_row(number: int, values: list | None, mapping: dict[int, str]) -> _Row:
    if values is None:
        return _Row(number, [], problems=[ImportProblem(number, "", "import.unreadable_row")])
    texts = [_cell_text(v) for v in values]
    raw = {field: _prepared(field, texts[index] if index < len(texts) else "") for index, field in mapping.items()}
    controls = [field for field, text in raw.items() if text and _CONTROL_CHARS.search(text)]
    if controls:
        # NUL and other control characters: the cell is invalid (never stored, and the
        # error report shows them as U+FFFD).
        shown = [_CONTROL_CHARS.sub("\ufffd", text) for text in texts]
        return _Row(
            number,
            shown,
            problems=[
                ImportProblem(
                    number,
                    field,
                    "import.invalid_characters",
                    value=_CONTROL_CHARS.sub("\ufffd", raw[field])[:MAX_VALUE_CHARS],
                )
                for field in controls
            ],
        )
    row = _Row(number, texts)
    try:
        row.cleaned = clean_customer_fields(raw)
    except ValidationError as error:
        for field, (key, params) in error.field_errors.items():
            row.problems.append(
                ImportProblem(
                    number,
                    field,
                    key,
                    {k: str(v) for k, v in params.items()},
                    str(raw.get(field) or "")[:MAX_VALUE_CHARS],
                )
            )
    return row


def _existing(conn: Connection, rows: list[_Row], actor: Actor) -> dict[tuple[str, str], int]:
    """(field, value) -> id of a customer the rows repeat: the rule of services/customers/duplicates/check;
    0 for one outside the importer's data scope (the report does not name it)."""
    found = existing_by_key(conn, [r.cleaned for r in rows if r.cleaned])
    seen = reachable_ids(conn, CustomerAccess(actor), found.values())
    return {key: customer_id if customer_id in seen else 0 for key, customer_id in found.items()}


class _Pass:
    """One pass over a file: checks, duplicate detection, report and error file."""

    def __init__(
        self,
        path: Path,
        mapping: dict,
        *,
        dry_run: bool,
        skip_duplicates: bool,
        file_name: str,
        lang: str,
        progress: Progress | None,
    ):
        self.table = _open_table(path)
        try:
            self.mapping = resolve_mapping(self.table.headers, mapping)
        except ValidationError:
            self.table.rows.close()
            raise
        self.report = ImportReport(
            file_name=file_name,
            dry_run=dry_run,
            skip_duplicates=skip_duplicates,
            mapping={self.table.headers[i] or f"#{i + 1}": field for i, field in self.mapping.items()},
        )
        self.lang = lang
        self.progress = progress
        self.seen: dict[tuple[str, str], int] = {}
        self._error_file = None
        self._error_writer = None

    # rows ------------------------------------------------------------------------------------
    def batches(self) -> Iterator[list[_Row]]:
        data = ((n, v) for n, v in self.table.rows if not _is_blank(v))
        while True:
            chunk = list(itertools.islice(data, BATCH_ROWS))
            if not chunk:
                return
            yield [_check_row(number, values, self.mapping) for number, values in chunk]

    def classify(self, rows: list[_Row], existing: dict[tuple[str, str], int]) -> None:
        """Mark duplicates: an earlier row of the file first, else an existing customer."""
        report = self.report
        for row in rows:
            report.total_rows += 1
            if row.cleaned is None:
                report.invalid += 1
                self.problem(row, row.problems)
                continue
            keys = identity_keys(row.cleaned)
            earlier = next(
                ((field, self.seen[(field, value)]) for field, value in keys if (field, value) in self.seen), None
            )
            other = (
                None
                if earlier
                else next(
                    ((field, existing[(field, value)]) for field, value in keys if (field, value) in existing), None
                )
            )
            for key in keys:
                self.seen.setdefault(key, row.number)
            if earlier:
                row.duplicate_of = "file"
                report.duplicates_in_file += 1
                problem = ImportProblem(
                    row.number,
                    earlier[0],
                    "import.duplicate_in_file",
                    {"row": str(earlier[1])},
                    str(row.cleaned[earlier[0]])[:MAX_VALUE_CHARS],
                )
            elif other:
                row.duplicate_of = "existing"
                report.duplicates_existing += 1
                problem = ImportProblem(
                    row.number,
                    other[0],
                    "import.duplicate_existing" if other[1] else "import.duplicate_hidden",
                    {"id": str(other[1])} if other[1] else {},
                    str(row.cleaned[other[0]])[:MAX_VALUE_CHARS],
                )
            else:
                report.valid += 1
                continue
            report.duplicates += 1
            if self.report.dry_run or self.report.skip_duplicates:
                self.problem(row, [problem])

    # reporting -------------------------------------------------------------------------------
    def problem(self, row: _Row, problems: list[ImportProblem]) -> None:
        report = self.report
        for problem in problems:
            report.problem_count += 1
            report.reason_counts[problem.message_key] = report.reason_counts.get(problem.message_key, 0) + 1
            if len(report.problems) < MAX_PROBLEMS:
                report.problems.append(problem)
            else:
                report.problems_truncated = True
        self._write_error_row(row, problems)

    def _reason_text(self, problem: ImportProblem) -> str:
        message = tr(self.lang, problem.message_key, **problem.params)
        if not problem.field:
            return message
        return f"{tr(self.lang, FIELD_LABEL_KEYS[problem.field])}: {message}"

    def _write_error_row(self, row: _Row, problems: list[ImportProblem]) -> None:
        if self._error_writer is None:
            folder = imports_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{_stamp()}-{secrets.token_hex(6)}-errors.csv"
            # UTF-8 with BOM so Excel shows Chinese; the importer reads it back as is.
            self._error_file = path.open("w", encoding="utf-8-sig", newline="")
            self._error_writer = csv.writer(self._error_file)
            self._error_writer.writerow(
                [tr(self.lang, "import.col_row"), *self.table.headers, tr(self.lang, "import.col_problem")]
            )
            self.report.error_report_path = str(path)
        width = len(self.table.headers)
        values = row.values + [""] * (width - len(row.values))
        reason = "; ".join(self._reason_text(p) for p in problems)
        self._error_writer.writerow([row.number, *(_safe_cell(v) for v in values), _safe_cell(reason)])
        self.report.error_rows += 1

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self.report.total_rows, max(self.table.expected_rows, self.report.total_rows))

    def close(self) -> None:
        if self._error_file is not None:
            self._error_file.close()
            self._error_file = None
        close = getattr(self.table.rows, "close", None)
        if close is not None:
            close()


_SAFE_SIGNED = re.compile(r"^[+-][\d\s().-]*$")


def _safe_cell(text: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (phones like +86… stay as they are)."""
    if text and (text[0] in "=@\t\r" or (text[0] in "+-" and not _SAFE_SIGNED.match(text))):
        return "'" + text
    return text


# --- services -------------------------------------------------------------------------------


def dry_run(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    *,
    file_name: str = "",
    lang: str = "zh",
    progress: Progress | None = None,
) -> ImportReport:
    """Check every row and find duplicates; nothing is saved except the error report file."""
    require(actor, "customer.import", action="customer.import_dry_run", target_type="customer")
    started = time.perf_counter()
    checked = _checked_path(path)
    work = _Pass(
        checked,
        mapping,
        dry_run=True,
        skip_duplicates=True,
        file_name=file_name or checked.name,
        lang=lang,
        progress=progress,
    )
    try:
        engine = get_engine()
        for rows in work.batches():
            with engine.connect() as conn:
                existing = _existing(conn, rows, actor)
            work.classify(rows, existing)
            work.tick()
    finally:
        work.close()
    work.report.seconds = round(time.perf_counter() - started, 3)
    return work.report


def _customer_template() -> dict:
    """Every customer column with the model's defaults (what ``Customer(...)`` would store)."""
    template = Customer(name="").model_dump()
    template.pop("id", None)
    return template


def _prepare_inserts(rows: Iterable[_Row], actor: Actor, template: dict, now: dt.datetime) -> tuple[list, dict]:
    """Customer rows and search texts for the valid rows, computed before the write lock is taken."""
    by = (actor.display_name or actor.username)[:64]
    records: list[dict] = []
    texts: dict[tuple, dict[str, str]] = {}
    for row in rows:
        if row.cleaned is None:
            continue
        values = row.cleaned
        full, initials = pinyin_of(values["name"])
        records.append(
            {
                **template,
                **values,
                "name_pinyin": full[:256],
                "name_initials": initials[:64],
                "registered_at": now,
                "last_active_at": now,
                "created_at": now,
                "updated_at": now,
                "updated_by_id": actor.user_id,
                "updated_by_name": by,
            }
        )
        key = row.search_key()
        if key not in texts:
            texts[key] = search_row(*key)
    return records, texts


def _insert_rows(conn: Connection, records: list[dict], texts: dict[tuple, dict[str, str]]) -> int:
    if not records:
        return 0
    from meiqia_app.services.integrations import webhooks

    # Multi-row INSERT ... RETURNING. The order of returned rows is not
    # guaranteed, so each search row is found by the returned values
    # themselves: rows that come back identical have identical search texts.
    inserted = conn.execute(
        insert(Customer.__table__).returning(C.id, *(C[field] for field in SEARCH_FIELDS)), records
    ).all()
    conn.execute(
        insert(CustomerSearch.__table__),
        [{"customer_id": customer_id, **texts[tuple(values)]} for customer_id, *values in inserted],
    )
    webhooks.emit_many(conn, "customer.created", [row[0] for row in inserted], {"via": "import"})
    return len(inserted)


def run_import(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    skip_duplicates: bool = True,
    progress: Progress | None = None,
    *,
    file_name: str = "",
    lang: str = "zh",
    after_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Insert the good rows, ``BATCH_ROWS`` per transaction; bad rows go to the error report.

    With ``skip_duplicates`` off, rows repeating a customer's phone, e-mail or
    external id are inserted too (and counted as duplicates). Ends with one audit entry
    and returns the report.

    ``progress(rows_done, rows_expected)`` is called after each committed
    batch; raising from it stops the import there (a cancel button). Batches
    already committed stay, and the audit entry (result "error") says how many
    rows went in. Importing the same file again then skips those rows as
    duplicates when they have a phone, e-mail or external id.
    ``after_batch(report)`` sees the counts after each committed batch, before
    ``progress`` (the job keeps them as its checkpoint).
    """
    require(actor, "customer.import", action="customer.import", target_type="customer")
    started = time.perf_counter()
    checked = _checked_path(path)
    work = _Pass(
        checked,
        mapping,
        dry_run=False,
        skip_duplicates=bool(skip_duplicates),
        file_name=file_name or checked.name,
        lang=lang,
        progress=progress,
    )
    report = work.report
    template = _customer_template()
    now = utcnow()
    try:
        for rows in work.batches():
            records, texts = _prepare_inserts(rows, actor, template, now)
            with write_session() as session:
                conn = session.connection()
                # Duplicates are looked up under the write lock, so a customer
                # saved meanwhile by someone else is seen.
                work.classify(rows, _existing(conn, rows, actor))
                wanted = [
                    record
                    for row, record in zip((r for r in rows if r.cleaned is not None), records)
                    if not row.duplicate_of or not skip_duplicates
                ]
                count = _insert_rows(conn, wanted, texts)
                if count:
                    customers_changed(session, MANY, IMPORTED)  # once per batch, told after its commit
            report.inserted += count  # committed
            report.skipped = report.total_rows - report.inserted
            if after_batch is not None:
                after_batch(report)
            work.tick()
    except Exception:
        work.close()
        _audit_import(actor, report, result="error")
        raise
    work.close()
    report.skipped = report.total_rows - report.inserted
    report.seconds = round(time.perf_counter() - started, 3)
    _audit_import(actor, report)
    return report


def _audit_import(actor: Actor, report: ImportReport, result: str = "ok") -> None:
    with write_session() as session:
        audit.record(
            session,
            actor,
            "customer.import",
            target_type="customer",
            result=result,
            details={
                "file": report.file_name[:255],
                "rows": report.total_rows,
                "inserted": report.inserted,
                "invalid": report.invalid,
                "duplicates": report.duplicates,
                "duplicates_existing": report.duplicates_existing,
                "duplicates_in_file": report.duplicates_in_file,
                "skip_duplicates": report.skip_duplicates,
                "error_report": Path(report.error_report_path).name if report.error_report_path else "",
                "mapping": sorted(set(report.mapping.values())),
            },
        )


# --- as jobs of the runner ----------------------------------------------------------------------

IMPORT_JOB_KIND = "customer.import"
CHECK_JOB_KIND = "customer.import_check"
JOB_KINDS = (IMPORT_JOB_KIND, CHECK_JOB_KIND)
# Finished reports with the offending values, for the page of the person who ran them:
# kept in this process only (the job row keeps the counts and reasons, not the values).
_REPORTS: dict[int, ImportReport] = {}
_KEPT_REPORTS = 50


def start_job(
    actor: Actor,
    path: str | Path,
    mapping: dict,
    *,
    dry_run: bool,
    skip_duplicates: bool = True,
    file_name: str = "",
    lang: str = "zh",
) -> int:
    """Check (``dry_run``) or import an uploaded file as a job of the runner; returns the job's id."""
    require(
        actor,
        "customer.import",
        action="customer.import_dry_run" if dry_run else "customer.import",
        target_type="customer",
    )
    checked = _checked_path(path)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, (str, int)) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValidationError.single("mapping", "error.bad_choice")
    params = {
        "path": str(checked),
        "mapping": {str(k): v for k, v in mapping.items()},
        "skip_duplicates": bool(skip_duplicates),
        "file_name": str(file_name or checked.name)[:255],
        "lang": lang if lang in ("zh", "en") else "zh",
    }
    job_id = jobs.create_job(actor, CHECK_JOB_KIND if dry_run else IMPORT_JOB_KIND, params)
    jobs.start_in_background(job_id)
    return job_id


def _stored(report: ImportReport) -> dict:
    """The report as the job row keeps it: counts and reasons, not the rows' values (customers' data)."""
    data = dataclasses.asdict(report)
    data["problems"] = [{**problem, "value": ""} for problem in data["problems"]]
    return data


def _from_stored(data: dict) -> ImportReport:
    fields = {f.name for f in dataclasses.fields(ImportReport)}
    report = ImportReport(**{k: v for k, v in data.items() if k in fields and k != "problems"})
    report.problems = [ImportProblem(**problem) for problem in data.get("problems") or []]
    return report


def _import_worker(ctx: jobs.JobContext) -> dict:
    params = ctx.params
    dry = ctx.kind == CHECK_JOB_KIND
    if ctx.resumed and not dry:
        # A dead process was importing: its committed batches stay (the checkpoint
        # counts them). Going on would need the rows it had seen; say what went in.
        done = ctx.checkpoint
        report = ImportReport(
            file_name=params.get("file_name", ""),
            dry_run=False,
            total_rows=int(done.get("rows", 0)),
            inserted=int(done.get("inserted", 0)),
            skip_duplicates=bool(params.get("skip_duplicates", True)),
            mapping=dict(done.get("mapping") or {}),
        )
        _audit_import(ctx.actor, report, result="error")
        publish_committed(MANY, IMPORTED)  # the dead process may have died before telling of its last batch
        raise jobs.JobFailed("import.error.interrupted", inserted=report.inserted)
    seen = {"rows": 0, "inserted": 0}

    def after_batch(report: ImportReport) -> None:
        seen.update(rows=report.total_rows, inserted=report.inserted, mapping=report.mapping)

    def progress(done: int, expected: int) -> None:
        ctx.progress(done, dict(seen) if not dry else None, total=expected)

    common = {"file_name": params.get("file_name", ""), "lang": params.get("lang", "zh")}
    try:
        if dry:
            report = dry_run(ctx.actor, params["path"], params["mapping"], progress=progress, **common)
        else:
            report = run_import(
                ctx.actor,
                params["path"],
                params["mapping"],
                bool(params.get("skip_duplicates", True)),
                progress,
                after_batch=after_batch,
                **common,
            )
    except jobs.JobCancelled:
        raise jobs.JobCancelled({"inserted": seen["inserted"], "rows": seen["rows"]}) from None
    _REPORTS[ctx.job_id] = report
    while len(_REPORTS) > _KEPT_REPORTS:
        _REPORTS.pop(next(iter(_REPORTS)))
    return {"report": _stored(report)}


jobs.register_worker(IMPORT_JOB_KIND, _import_worker)
jobs.register_worker(CHECK_JOB_KIND, _import_worker)


def job_progress(actor: Actor, job_id: int) -> jobs.JobView:
    """A check's or an import's progress (its starter, or those with job.view_all)."""
    view = jobs.job_view(actor, int(job_id))
    if view.kind not in JOB_KINDS:
        raise NotFound()
    return view


def job_report(actor: Actor, job_id: int) -> ImportReport:
    """The report of a finished check or import: with the offending values when this
    process ran it, else as the job row keeps it (counts and reasons)."""
    view = job_progress(actor, job_id)
    if view.status != "done":
        raise NotFound()
    kept = _REPORTS.pop(view.id, None)
    return kept if kept is not None else _from_stored(view.result.get("report") or {})


def cancel_job(actor: Actor, job_id: int) -> None:
    """Stop a check or an import after its current batch (committed batches stay)."""
    job_progress(actor, job_id)
    jobs.request_cancel(actor, int(job_id))


__all__ = [
    "ImportProblem",
    "ImportReport",
    "dry_run",
    "new_upload_path",
    "read_table",
    "resolve_mapping",
    "run_import",
    "suggest_mapping",
]
