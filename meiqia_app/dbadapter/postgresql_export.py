"""PostgreSQL builds the rows of a CSV / XLSX export itself (the twin of ``sqlite_export.py``).

Each row is one SQL expression giving, byte for byte, what the Python row
source and writers give: RFC 4180 minimal quoting, formula-injection
neutralisation (a CASE on the first character's code point), labels for coded
values, cents as units with two decimals, timestamps in the configured zone
with ``AT TIME ZONE`` (PostgreSQL applies the zone's rules to every instant,
so unlike SQLite nothing is left to Python), dates, booleans, and XLSX inline
strings with the control characters XML cannot hold removed and ``& < >``
escaped. No Python runs per row.

Two things the output depends on are pinned rather than assumed: the zone's
rules (PostgreSQL and Python each read their own tz database; a sample of
instants must give the same local times in both, else exports take the
Python path) and the text of floats (``extra_float_digits = 1``: the
shortest text that reads back as the same double, which is also what
Python's ``repr`` prints).
"""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import Connection, Engine

from meiqia_app.dbadapter.base import ExportRowFormat, bool_cell_sql, coded_cell_sql

# Formula starters (writers.FORMULA_PREFIXES) as code points: ascii() of the
# first character is cheaper than comparing substrings, and 0 for ''.
_FORMULA_CODES = ", ".join(str(ord(c)) for c in ("=", "+", "-", "@", "\t", "\r"))
# What makes csv.writer (excel dialect, QUOTE_MINIMAL, CRLF) quote a field.
_CSV_SPECIAL = '[",\\n\\r]'
# xlsx_stream._NEEDS_WORK: characters to escape, or to drop (_ILLEGAL_XML; NUL cannot occur in PostgreSQL text).
_XML_ILLEGAL = "[\\u0001-\\u0008\\u000b\\u000c\\u000e-\\u001f\\ufffe\\uffff]"
_XML_SPECIAL = "[&<>\\u0001-\\u0008\\u000b\\u000c\\u000e-\\u001f\\ufffe\\uffff]"
_DAY_MICROS = 86_400_000_000
_EXCEL_EPOCH = "TIMESTAMP '1899-12-30 00:00:00'"
_EXCEL_EPOCH_DATE = "DATE '1899-12-30'"


def lit(text: str) -> str:
    """A PostgreSQL string literal that means the same whatever
    standard_conforming_strings says (E'' with quotes and backslashes escaped)."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _neutralised(x: str) -> str:
    return f"CASE WHEN ascii({x}) IN ({_FORMULA_CODES}) THEN '''' || {x} ELSE {x} END"


def _csv_text(x: str, neutralise: bool) -> str:
    """A non-NULL text expression as a CSV field (quoted only when needed)."""
    plain = _neutralised(x) if neutralise else x
    # The prefix "'" is not a quote: doubling the quotes of the neutralised text is the same as
    # neutralising the text with its quotes doubled.
    return f"CASE WHEN {x} ~ {lit(_CSV_SPECIAL)} THEN '\"' || replace({plain}, '\"', '\"\"') || '\"' ELSE {plain} END"


def _xml_text_cell(x: str) -> str:
    """xlsx_stream.text_cell_xml: neutralised first, then stripped and escaped
    (so a text whose formula starter follows a control character stays as it is)."""
    neutral = _neutralised(x)
    escaped = (
        f"replace(replace(replace(regexp_replace({neutral}, {lit(_XML_ILLEGAL)}, '', 'g'), "
        "'&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
    )
    body = f"CASE WHEN {x} ~ {lit(_XML_SPECIAL)} THEN {escaped} ELSE {neutral} END"
    return (
        f"CASE WHEN {x} = '' THEN '<c/>' ELSE '<c t=\"inlineStr\"><is><t xml:space=\"preserve\">' || {body} "
        "|| '</t></is></c>' END"
    )


def _money_csv(col: str) -> str:
    """Cents as f"{round(cents / 100, 2):.2f}" (bigint: abs() of the smallest integer overflows)."""
    cents = f"abs({col}::bigint)"
    return (
        f"(CASE WHEN {col} < 0 THEN '-' ELSE '' END || ({cents} / 100)::text || '.' "
        f"|| lpad(({cents} % 100)::text, 2, '0'))"
    )


def _money_xlsx(col: str) -> str:
    """Cents as repr(round(cents / 100, 2)): the decimal without trailing zeros, at least one decimal."""
    cents = f"abs({col}::bigint)"
    units = f"(CASE WHEN {col} < 0 THEN '-' ELSE '' END || ({cents} / 100)::text || '.')"
    return (
        f"({units} || CASE WHEN {cents} % 100 = 0 THEN '0' WHEN {cents} % 10 = 0 THEN (({cents} % 100) / 10)::text "
        f"ELSE lpad(({cents} % 100)::text, 2, '0') END)"
    )


def _local(col: str, zone: str) -> str:
    """The stored instant as a local wall-clock timestamp."""
    return f"({col} AT TIME ZONE {lit(zone)})"


def _serial(col: str, zone: str) -> str:
    """(local time - 1899-12-30) / 1 day like Python's timedelta division: exact
    integer microseconds over the day's, one float division (exact operands up
    to the year 2185), printed as repr() does (a whole number gets ".0")."""
    micros = f"(extract(epoch FROM {_local(col, zone)} - {_EXCEL_EPOCH}) * 1000000)::bigint"
    return (
        f"CASE WHEN {micros} % {_DAY_MICROS} = 0 THEN ({micros} / {_DAY_MICROS})::text || '.0' "
        f"ELSE ({micros}::float8 / {_DAY_MICROS}::float8)::text END"
    )


def _csv_cell(column, row_format: ExportRowFormat, zone: str) -> str:
    col, kind = column.column, column.kind
    if kind == "text":
        return _csv_text(f"coalesce({col}, '')", neutralise=True)
    if kind == "coded":
        # Labels are ours; an unknown code is written as stored, unneutralised, like the Python path.
        other = _csv_text(f"coalesce({col}, '')", neutralise=False)
        return coded_cell_sql(column, lit, row_format.csv_quote, other)
    if kind == "int":
        return f"coalesce({col}::text, '')"
    if kind == "money":
        return f"coalesce({_money_csv(col)}, '')"
    if kind == "date":
        return f"coalesce(to_char({col}, 'YYYY-MM-DD'), '')"
    if kind == "bool":
        return bool_cell_sql(column, lit, row_format.csv_quote, row_format)
    if kind == "datetime":
        # to_char truncates the fraction of a second, as isoformat(timespec="seconds") does.
        return f"coalesce(to_char({_local(col, zone)}, 'YYYY-MM-DD HH24:MI:SS'), '')"
    raise ValueError(kind)


def _xlsx_cell(column, row_format: ExportRowFormat, zone: str) -> str:
    col, kind = column.column, column.kind
    if kind == "text":
        return _xml_text_cell(f"coalesce({col}, '')")
    if kind == "coded":
        return coded_cell_sql(column, lit, row_format.xml_cell, _xml_text_cell(f"coalesce({col}, '')"))
    if kind == "int":
        return f"CASE WHEN {col} IS NULL THEN '<c/>' ELSE '<c><v>' || {col}::text || '</v></c>' END"
    if kind == "money":
        return f"CASE WHEN {col} IS NULL THEN '<c/>' ELSE '<c s=\"2\"><v>' || {_money_xlsx(col)} || '</v></c>' END"
    if kind == "date":
        return (
            f"CASE WHEN {col} IS NULL THEN '<c/>' "
            f"ELSE '<c s=\"4\"><v>' || ({col} - {_EXCEL_EPOCH_DATE})::text || '</v></c>' END"
        )
    if kind == "bool":
        return bool_cell_sql(column, lit, row_format.xml_cell, row_format)
    if kind == "datetime":
        return f"CASE WHEN {col} IS NULL THEN '<c/>' ELSE '<c s=\"3\"><v>' || ({_serial(col, zone)}) || '</v></c>' END"
    raise ValueError(kind)


def zone_name(zone) -> str | None:
    """The IANA name of a zoneinfo zone (None for zones PostgreSQL cannot be told by name)."""
    return getattr(zone, "key", None) or None


def row_sql(row_format: ExportRowFormat) -> str:
    zone = zone_name(row_format.zone)
    if zone is None:
        raise ValueError("the export zone has no IANA name")
    if row_format.fmt == "csv":
        return " || ',' || ".join(f"({_csv_cell(c, row_format, zone)})" for c in row_format.columns)
    if row_format.fmt == "xlsx":
        return " || ".join(f"({_xlsx_cell(c, row_format, zone)})" for c in row_format.columns)
    raise ValueError(row_format.fmt)


# --- does PostgreSQL know the zone as Python does? ------------------------------------------

#: Instants compared: every 7 days and 5 hours from 1900 to 2100 (~10,400, ~20 ms once per
#: process and database): any difference in offsets or daylight-saving rules shows up.
_SAMPLE_FIRST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_SAMPLE_LAST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
_SAMPLE_STEP = dt.timedelta(days=7, hours=5)
_agreement: dict[tuple[str, str], bool] = {}
_agreement_lock = threading.Lock()


def _python_local_times(zone) -> list[str]:
    found, moment = [], _SAMPLE_FIRST
    while moment <= _SAMPLE_LAST:
        found.append(moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"))
        moment += _SAMPLE_STEP
    return found


def zone_agrees(bind: Engine | Connection, zone) -> bool:
    """Whether PostgreSQL's rules for ``zone`` give the local times Python's give (cached)."""
    name = zone_name(zone)
    if name is None:
        return False
    engine = bind if isinstance(bind, Engine) else bind.engine
    key = (engine.url.render_as_string(hide_password=True), name)
    with _agreement_lock:
        if key in _agreement:
            return _agreement[key]
    with engine.connect() as conn:
        known = conn.exec_driver_sql("SELECT 1 FROM pg_timezone_names WHERE name = %(name)s", {"name": name}).first()
        local = []
        if known:
            step = f"{_SAMPLE_STEP.days} days {_SAMPLE_STEP.seconds} seconds"
            local = list(
                conn.exec_driver_sql(
                    "SELECT to_char(t AT TIME ZONE %(name)s, 'YYYY-MM-DD HH24:MI:SS') FROM generate_series("
                    "%(first)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS t ORDER BY t",
                    {"name": name, "first": _SAMPLE_FIRST, "last": _SAMPLE_LAST, "step": step},
                ).scalars()
            )
    agrees = bool(known) and local == _python_local_times(zone)
    with _agreement_lock:
        _agreement[key] = agrees
    return agrees
