"""Checking each row of an import: choice labels, normalised values, repeats within the file and against the database, safe cells in the error report."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Connection

from meiqia_app.i18n import tr
from meiqia_app.i18n.messages import ENTRIES
from meiqia_app.services.custom_fields.field_types import FIELD_PREFIX as CUSTOM_PREFIX
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.duplicates.check import existing_by_key, identity_keys, reachable_ids
from meiqia_app.services.customers.importing.columns import field_label, resolve_mapping
from meiqia_app.services.customers.importing.custom_values import (
    MAX_NEW_OPTIONS,
    check_cells,
    check_mapped,
    check_required_mapped,
    create_options,
)
from meiqia_app.services.customers.importing.files import (
    CONTROL_CHARS,
    MAX_VALUE_CHARS,
    cell_text,
    file_stamp,
    imports_dir,
    is_blank_row,
    open_table,
)
from meiqia_app.services.customers.validation import CHOICES, clean_customer_fields
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.identity.rbac import Actor

BATCH_ROWS = 2_000  # rows checked and inserted per transaction
MAX_PROBLEMS = 200  # problems kept in the report for display; the file has all
SEARCH_FIELDS = ("name", "phone", "email", "external_id", "visitor_id")  # build_search_text's arguments, in order

Progress = Callable[[int, int], None]


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
    # Options of select custom fields the file names that do not exist: "cf.<key>" -> labels
    # (a check lists them; an import that may create them created them).
    new_options: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


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
class CheckedRow:
    number: int
    values: list[str]
    cleaned: dict | None = None
    problems: list[ImportProblem] = dataclasses.field(default_factory=list)
    duplicate_of: str = ""  # "existing" | "file"
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # select options to create

    def search_key(self) -> tuple:
        return tuple(self.cleaned.get(field) for field in SEARCH_FIELDS)


def _check_row(number: int, values: list | None, mapping: dict[int, str], creatable: bool = False) -> CheckedRow:
    if values is None:
        return CheckedRow(number, [], problems=[ImportProblem(number, "", "import.unreadable_row")])
    texts = [cell_text(v) for v in values]
    raw = {field: _prepared(field, texts[index] if index < len(texts) else "") for index, field in mapping.items()}
    custom = {field: raw.pop(field) for field in list(raw) if field.startswith(CUSTOM_PREFIX)}
    row = _check_builtin(number, texts, raw)
    if not custom:
        return row
    values_, problems, row.missing = check_cells(number, custom, creatable)
    for field, key, params, value in problems:
        row.problems.append(ImportProblem(number, field, key, params, str(value)[:MAX_VALUE_CHARS]))
    if row.problems:
        row.cleaned = None
    elif row.cleaned is not None and values_:
        row.cleaned["custom_fields"] = values_
    return row


def _check_builtin(number: int, texts: list[str], raw: dict[str, str]) -> CheckedRow:
    controls = [field for field, text in raw.items() if text and CONTROL_CHARS.search(text)]
    if controls:
        # NUL and other control characters: the cell is invalid (never stored, and the
        # error report shows them as U+FFFD).
        shown = [CONTROL_CHARS.sub("\ufffd", text) for text in texts]
        return CheckedRow(
            number,
            shown,
            problems=[
                ImportProblem(
                    number,
                    field,
                    "import.invalid_characters",
                    value=CONTROL_CHARS.sub("\ufffd", raw[field])[:MAX_VALUE_CHARS],
                )
                for field in controls
            ],
        )
    row = CheckedRow(number, texts)
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


def repeated_customers(conn: Connection, rows: list[CheckedRow], actor: Actor) -> dict[tuple[str, str], int]:
    """(field, value) -> id of a customer the rows repeat: the rule of services/customers/duplicates/check;
    0 for one outside the importer's data scope (the report does not name it)."""
    found = existing_by_key(conn, [r.cleaned for r in rows if r.cleaned])
    seen = reachable_ids(conn, CustomerAccess(actor), found.values())
    return {key: customer_id if customer_id in seen else 0 for key, customer_id in found.items()}


class ImportPass:
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
        actor: Actor | None = None,
        create_options: bool = False,
    ):
        self.table = open_table(path)
        try:
            self.mapping = resolve_mapping(self.table.headers, mapping)
            check_mapped(actor, self.mapping.values())
            check_required_mapped(self.mapping.values())
        except (ValidationError, PermissionDenied):
            self.table.rows.close()
            raise
        self.actor = actor
        self.create_options = create_options
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
    def batches(self) -> Iterator[list[CheckedRow]]:
        data = ((n, v) for n, v in self.table.rows if not is_blank_row(v))
        while True:
            chunk = list(itertools.islice(data, BATCH_ROWS))
            if not chunk:
                return
            rows = [_check_row(number, values, self.mapping, self.create_options) for number, values in chunk]
            missing: dict[str, dict[str, None]] = {}
            for row in rows:
                for field, labels in row.missing.items():
                    missing.setdefault(field, {}).update(dict.fromkeys(labels))
            if missing and not self.report.dry_run and self.actor is not None:
                # Create the options this batch names, then check its rows again with them.
                for field, labels in create_options(self.actor, missing).items():
                    self._note_new_options(field, labels)
                again = {row.number for row in rows if row.missing}
                values_of = dict(chunk)
                rows = [
                    _check_row(row.number, values_of[row.number], self.mapping) if row.number in again else row
                    for row in rows
                ]
            elif missing:
                for field, labels in missing.items():
                    self._note_new_options(field, list(labels))
            yield rows

    def _note_new_options(self, field: str, labels: list[str]) -> None:
        known = self.report.new_options.setdefault(field, [])
        known.extend(label for label in labels if label not in known and len(known) < MAX_NEW_OPTIONS)

    def classify(self, rows: list[CheckedRow], existing: dict[tuple[str, str], int]) -> None:
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
    def problem(self, row: CheckedRow, problems: list[ImportProblem]) -> None:
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
        return f"{field_label(problem.field, self.lang)}: {message}"

    def _write_error_row(self, row: CheckedRow, problems: list[ImportProblem]) -> None:
        if self._error_writer is None:
            folder = imports_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{file_stamp()}-{secrets.token_hex(6)}-errors.csv"
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
