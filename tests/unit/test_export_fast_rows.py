"""Rows built by the database (CSV lines, XLSX cells) equal the Python path's, byte for byte.

The fast path (``RowSource.iter_sql_rows``) must write exactly what the
Python row source + csv.writer / streaming XLSX writer write for the same
rows, including hostile values: quotes, commas, newlines, formula starters,
control characters, XML specials, NULLs, Chinese, unknown codes, negative
amounts, timestamps from the zone's daylight-saving years and unusual stored
forms.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import openpyxl
import pytest
import pyzipper
from sqlalchemy import select, text, update

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.dbadapter import get_adapter
from meiqia_app.models import Customer, ExportJob
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.exports.rows import BASE_COLUMNS, ExportSpec, RowSource, csv_field
from meiqia_app.services.exports.writers import ExportMeta, LineBlock, write_csv, write_csv_lines, write_xlsx

C = Customer.__table__.c
ALL_SQL_FIELDS = tuple(f for f in BASE_COLUMNS if f != "custom_attributes")
TYPICAL = (
    "id",
    "name",
    "gender",
    "source",
    "province",
    "city",
    "registered_at",
    "last_active_at",
    "lifecycle_stage",
    "membership_tier",
    "order_count",
    "total_spent",
)

NASTY_TEXT = [
    'say "hi", ok',
    "line1\nline2",
    "cr\ronly",
    "crlf\r\nend",
    "=SUM(A1:A2)",
    "+86 138",
    "-42",
    "@cmd",
    "\tleading tab",
    "\rleading cr",
    '"=quoted"',
    "=a,b",
    "A&B <x> 'y'",
    "ctrl\x01\x02x\x1f",
    "  spaces  ",
    "王小明，上海",
    "emoji 😀",
    "'already",
    ",",
    '"',
    "",
    "x\uffffy",
]


def _database_built_rows():
    # Both adapters (SQLite, PostgreSQL) build export rows; these tests hold them to the Python path.
    assert get_adapter(get_engine()).builds_export_rows


def _on_postgresql() -> bool:
    return get_engine().dialect.name == "postgresql"


def _poison() -> None:
    """Hostile values in many customers' columns (ids 1..len(NASTY_TEXT)+)."""
    text_columns = ("name", "company", "province", "city", "phone", "email", "address", "external_id", "visitor_id")
    with get_engine().begin() as conn:
        for i, value in enumerate(NASTY_TEXT, start=1):
            values = {column: value for column in text_columns if column != "name"}
            values["name"] = value or "空"
            conn.execute(update(Customer.__table__).where(C.id == i).values(**values))
        # NULLs everywhere a column allows them.
        conn.execute(
            update(Customer.__table__)
            .where(C.id == 40)
            .values(
                company=None,
                province=None,
                city=None,
                phone=None,
                email=None,
                address=None,
                external_id=None,
                visitor_id=None,
                birthday=None,
                last_login_at=None,
                first_purchase_at=None,
                last_purchase_at=None,
            )
        )
        raw = conn.connection.driver_connection
        if get_engine().dialect.name == "sqlite":
            # Stored forms only the Python helpers handle: DST years in Shanghai
            # (1986-1991), an ISO "T" form with an offset, a time without microseconds,
            # the last microsecond of a day, far future; unknown codes, negative cents.
            raw.execute(
                "UPDATE customer SET registered_at='1988-06-01 12:30:00.000000', "
                "last_login_at='1990-07-15 23:59:59.999999' WHERE id=41"
            )
            raw.execute(
                "UPDATE customer SET registered_at='2026-03-01T10:00:00+00:00', "
                "last_active_at='2026-03-01 15:59:59' WHERE id=42"
            )
            raw.execute(
                "UPDATE customer SET last_active_at='2026-12-31 15:59:59.999999', "
                "first_purchase_at='2150-01-01 00:00:00.000000' WHERE id=43"
            )
            raw.execute(
                "UPDATE customer SET gender='?', source='=evil', lifecycle_stage='new,\"x\"', "
                "membership_tier='', total_spent_cents=-5 WHERE id=44"
            )
            raw.execute("UPDATE customer SET total_spent_cents=1234567890123, birthday='1970-01-01' WHERE id=45")
            raw.execute("UPDATE customer SET consent_marketing=1, consent_analytics=0 WHERE id=46")
        else:
            # The same instants as timestamptz values, plus the extremes of the integer
            # cents column, and timestamps with odd microseconds spread over 1901-2107
            # (Shanghai kept summer time in 1940-1949 and 1986-1991).
            conn.exec_driver_sql(
                "UPDATE customer SET registered_at='1988-06-01 12:30:00+00', "
                "last_login_at='1990-07-15 23:59:59.999999+00' WHERE id=41"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET registered_at='2026-03-01 10:00:00+00', "
                "last_active_at='2026-03-01 15:59:59+00' WHERE id=42"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET last_active_at='2026-12-31 15:59:59.999999+00', "
                "first_purchase_at='2150-01-01 00:00:00+00' WHERE id=43"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET gender='?', source='=evil', lifecycle_stage='new,\"x\"', "
                "membership_tier='', total_spent_cents=-5 WHERE id=44"
            )
            conn.exec_driver_sql("UPDATE customer SET total_spent_cents=2147483647, birthday='1970-01-01' WHERE id=45")
            conn.exec_driver_sql("UPDATE customer SET consent_marketing=true, consent_analytics=false WHERE id=46")
            conn.exec_driver_sql(
                "UPDATE customer SET total_spent_cents=-2147483648, birthday='0999-12-31', "
                "last_login_at='1899-12-30 00:00:00+08' WHERE id=47"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET total_spent_cents=100, last_login_at='1899-12-29 23:59:59+08', "
                "birthday='1899-12-30' WHERE id=48"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET total_spent_cents=120, last_login_at='2026-05-01 00:00:00+08' WHERE id=49"
            )
            conn.exec_driver_sql(
                "UPDATE customer SET last_login_at = timestamptz '1901-01-01 00:00:00+00' "
                "+ id * interval '251 days 5:07:11.654321' WHERE id > 49"
            )


def _meta(fields, true_text="是", false_text="否") -> ExportMeta:
    return ExportMeta(
        exporter="测试",
        exported_at=dt.datetime(2026, 11, 1, 9, 30),
        scope_text="全部",
        headers=tuple(f'列 {f}, "{i}"' if i == 1 else f"列{f}" for i, f in enumerate(fields)),
        fields=tuple(fields),
        true_text=true_text,
        false_text=false_text,
        labels={"sheet": "客户", "meta_sheet": "导出信息"},
    )


def _spec(fields, sort_field="id", descending=False, status="all") -> ExportSpec:
    return ExportSpec(
        selection=Selection.of_query(ListQuery.from_dict({"status": status})),
        fields=tuple(fields),
        sort_field=sort_field,
        descending=descending,
    )


@pytest.mark.parametrize(
    "fields,sort_field,descending,batch",
    [
        (ALL_SQL_FIELDS, "id", False, 17),
        (TYPICAL, "registered_at", True, 1000),
        (("name", "city"), "last_purchase_at", False, 50),
        (("id", "last_purchase_at"), "last_purchase_at", True, 9),
        (("id", "city"), "city", False, 300),
        (("consent_marketing", "total_spent", "birthday", "gender"), "total_spent", True, 7),
    ],
)
def test_database_built_csv_is_byte_for_byte_the_csv_writer_output(
    seeded_actors, tmp_path, fields, sort_field, descending, batch
):
    _database_built_rows()
    _poison()
    manager = seeded_actors["manager"]
    spec = _spec(fields, sort_field, descending)
    for yes, no in (("是", "否"), ('Yes, "sure"', "=No")):
        meta = _meta(fields, yes, no)
        slow, fast = tmp_path / "slow.csv", tmp_path / "fast.csv"
        rows_slow = write_csv(slow, meta, RowSource(manager, spec, datetimes_as_text=True).iter_batches(batch))
        source = RowSource(manager, spec)
        assert source.sql_fields_supported("csv")
        for workers in (1, 3):  # one connection, or batches built by three threads
            rows_fast = write_csv_lines(fast, meta, source.iter_sql_rows("csv", yes, no, batch=batch, workers=workers))
            assert rows_fast == rows_slow == source.count() > 40
            expected, got = slow.read_bytes(), fast.read_bytes()
            if got != expected:  # show the first differing line
                for a, b in zip(expected.split(b"\r\n"), got.split(b"\r\n")):
                    assert b == a
            assert got == expected


def test_database_built_csv_covers_the_hostile_values(seeded_actors, tmp_path):
    _database_built_rows()
    _poison()
    fields = ("id", "company", "registered_at", "last_login_at", "gender", "source", "total_spent")
    path = tmp_path / "fast.csv"
    blocks = list(RowSource(seeded_actors["manager"], _spec(fields)).iter_sql_rows("csv", batch=13))
    # The database joins each batch's lines itself (one string per batch reaches Python).
    assert blocks and all(isinstance(b, LineBlock) for b in blocks) and sum(map(len, blocks)) > 40
    write_csv_lines(path, _meta(fields), blocks)
    import csv

    rows = {int(r[0]): r for r in list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))[1:]}
    for i, value in enumerate(NASTY_TEXT, start=1):
        safe = "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
        assert rows[i][1] == safe
    assert rows[40][1] == "" and rows[40][3] == ""
    assert rows[41][2] == "1988-06-01 21:30:00"  # daylight saving time in Shanghai that summer
    assert rows[42][2] == "2026-03-01 18:00:00"
    assert rows[44][4:] == ["?", "=evil", "-0.05"]


def _cells_xml(path) -> str:
    """The data sheet's XML without cell references and without the empty ``<c/>``
    cells the database-built rows use to keep the columns in place."""
    with zipfile.ZipFile(path) as package:
        sheet = package.read("xl/worksheets/sheet1.xml").decode("utf-8")
    return re.sub(r' r="[A-Z]+[0-9]+"', "", sheet).replace("<c/>", "")


def _xlsx_values(path):
    book = openpyxl.load_workbook(path)
    return [
        [
            (c.value, c.data_type, c.number_format if c.value is not None and not isinstance(c.value, str) else "")
            for c in row
        ]
        for row in book.worksheets[0].iter_rows()
    ], book


def _assert_same_cells(got, expected) -> None:
    """Cells read back: same values (timestamps within 1 ms, floats approximately), types and formats."""
    assert len(got) == len(expected)
    for row_got, row_expected in zip(got, expected, strict=True):
        for (value, dtype, fmt), (want, want_type, want_fmt) in zip(row_got, row_expected, strict=True):
            if isinstance(want, dt.datetime):
                assert isinstance(value, dt.datetime) and abs((value - want).total_seconds()) < 0.001
            elif isinstance(want, float):
                assert value == pytest.approx(want)
            else:
                assert value == want, (row_got[0], value, want)
            assert dtype == want_type and fmt == want_fmt


@pytest.mark.parametrize(
    "fields,sort_field,descending",
    [
        (ALL_SQL_FIELDS, "id", False),
        (TYPICAL, "registered_at", True),
    ],
)
def test_database_built_xlsx_reads_back_like_the_python_path(seeded_actors, tmp_path, fields, sort_field, descending):
    _database_built_rows()
    _poison()
    manager = seeded_actors["manager"]
    spec = _spec(fields, sort_field, descending)
    meta = _meta(fields)
    slow, fast = tmp_path / "slow.xlsx", tmp_path / "fast.xlsx"
    rows_slow = write_xlsx(slow, meta, RowSource(manager, spec).iter_batches(33))
    rows_fast = write_xlsx(
        fast, meta, RowSource(manager, spec).iter_sql_rows("xlsx", batch=33, workers=2), prebuilt=True
    )
    assert rows_fast == rows_slow > 40
    with zipfile.ZipFile(fast) as package:
        assert package.testzip() is None
    (expected, _), (got, book) = _xlsx_values(slow), _xlsx_values(fast)
    _assert_same_cells(got, expected)
    if _on_postgresql():
        # Cell for cell the same XML: datetime serials as repr() prints them, money as
        # repr(round(cents / 100, 2)). (SQLite prints serials with 16 digits and money
        # with two decimals: the same numbers, other text.)
        assert _cells_xml(fast) == _cells_xml(slow)
    assert book.sheetnames == ["客户", "导出信息"] and book.worksheets[0].freeze_panes == "A2"
    sheet = book.worksheets[0]
    names = {r[0]: r for r in sheet.iter_rows(min_row=2, values_only=True)}
    if "company" in fields:
        company = list(fields).index("company")
        assert names[14][company] == "ctrlx"  # control characters dropped
        assert names[5][company] == "'=SUM(A1:A2)" and names[13][company] == "A&B <x> 'y'"
    registered = list(fields).index("registered_at")
    assert names[41][registered] == dt.datetime(1988, 6, 1, 21, 30)


def test_masked_computed_or_single_fields_take_the_python_path(seeded_actors):
    manager, analyst = seeded_actors["manager"], seeded_actors["analyst"]
    assert (
        RowSource(manager, _spec(("id", "phone"))).sql_fields_supported("csv")
        == get_adapter(get_engine()).builds_export_rows
    )
    assert not RowSource(analyst, _spec(("id", "phone"))).sql_fields_supported("csv")
    assert not RowSource(manager, _spec(("id", "tags"))).sql_fields_supported("csv")
    assert not RowSource(manager, _spec(("id", "custom_attributes"))).sql_fields_supported("xlsx")
    assert not RowSource(manager, _spec(("name",))).sql_fields_supported("csv")
    assert not RowSource(manager, _spec(("id", "name"))).sql_fields_supported("pdf")
    assert csv_field('a,"b"') == '"a,""b"""' and csv_field("plain") == "plain"


def test_an_export_job_uses_the_database_built_rows_with_progress_and_cancel(seeded_actors, monkeypatch):
    _database_built_rows()
    manager = seeded_actors["manager"]
    monkeypatch.setattr("meiqia_app.services.exports.rows.SQL_BATCH", {"csv": 25, "xlsx": 25})
    calls = []
    original = RowSource.iter_sql_rows

    def spy(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RowSource, "iter_sql_rows", spy)
    data = {
        "scope": {"kind": "query", "query": {"status": "all"}},
        "fields": list(TYPICAL),
        "format": "csv",
        "sort_field": "registered_at",
        "sort_dir": "asc",
    }
    password = "s3cret-Export!"  # total_spent is sensitive
    done = export_request.request_export(manager, data, password=password, start=False)
    view = export_run.run_export(done.id, password)
    assert view.status == "done" and view.row_count > 25 and calls == ["csv"]
    with get_engine().connect() as conn:
        assert (
            view.row_count
            == conn.execute(
                select(text("count(*)")).select_from(Customer.__table__).where(C.status.in_(("active", "archived")))
            ).scalar_one()
        )
    with read_session() as session:
        job = session.get(ExportJob, view.id)
        path = get_settings().exports_dir / job.file_name
    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(password.encode())
        content = archive.read(archive.namelist()[0])
    assert content.startswith(b"\xef\xbb\xbf") and content.count(b"\r\n") == view.row_count + 1
    xlsx = export_run.run_export(
        export_request.request_export(manager, {**data, "format": "xlsx"}, password=password, start=False).id, password
    )
    assert xlsx.status == "done" and calls == ["csv", "xlsx"]
    # Cancelling stops the database-built export at its next batch and leaves no file.
    pending = export_request.request_export(manager, data, password=password, start=False)
    with write_session() as session:
        job = session.get(ExportJob, pending.id)
        job.cancel_requested = True
        session.add(job)
    cancelled = export_run.run_export(pending.id, password)
    assert cancelled.status == "cancelled" and cancelled.progress_done == 25
    assert not any(
        p.name.startswith(f"export-{pending.id}-") or f"export-{pending.id}-" in p.name
        for p in get_settings().exports_dir.iterdir()
    )


def test_python_helpers_only_see_the_values_sql_cannot_convert(seeded_actors, tmp_path, monkeypatch):
    _database_built_rows()
    _poison()
    from meiqia_app.services.exports import rows as rows_module

    calls = []

    class Counting(rows_module._LocalTime):
        def __call__(self, raw):
            calls.append(raw)
            return super().__call__(raw)

    monkeypatch.setattr(rows_module, "_LocalTime", Counting)
    fields = ("id", "registered_at", "last_active_at", "last_login_at")
    source = RowSource(seeded_actors["manager"], _spec(fields))
    for fmt in ("csv", "xlsx"):
        calls.clear()
        assert sum(len(b) for b in source.iter_sql_rows(fmt, workers=1)) > 250
        if _on_postgresql():
            assert calls == [], fmt  # AT TIME ZONE converts every instant in the database
        else:
            # Only the daylight-saving-years and "T"-form values of customers 41 and 42.
            assert 1 <= len(calls) <= 4, (fmt, calls)


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "UTC"])
def test_database_built_rows_follow_the_configured_zone_like_the_python_path(
    seeded_actors, tmp_path, monkeypatch, zone
):
    """Daylight saving time rules that changed over the years (1901-2107 spread of last_login_at)."""
    from meiqia_app.config import reload_settings

    _database_built_rows()
    _poison()
    monkeypatch.setenv("MEIQIA_TIMEZONE", zone)
    reload_settings()
    try:
        manager = seeded_actors["manager"]
        fields = ("id", "registered_at", "last_active_at", "last_login_at", "first_purchase_at", "birthday")
        spec = _spec(fields)
        meta = _meta(fields)
        slow, fast = tmp_path / "slow.csv", tmp_path / "fast.csv"
        write_csv(slow, meta, RowSource(manager, spec, datetimes_as_text=True).iter_batches(100))
        source = RowSource(manager, spec)
        assert source.sql_fields_supported("csv")
        write_csv_lines(fast, meta, source.iter_sql_rows("csv", batch=100))
        assert fast.read_bytes() == slow.read_bytes()
        slow_xlsx, fast_xlsx = tmp_path / "slow.xlsx", tmp_path / "fast.xlsx"
        write_xlsx(slow_xlsx, meta, RowSource(manager, spec).iter_batches(100))
        write_xlsx(fast_xlsx, meta, source.iter_sql_rows("xlsx", batch=100), prebuilt=True)
        if _on_postgresql():
            assert _cells_xml(fast_xlsx) == _cells_xml(slow_xlsx)
        else:
            _assert_same_cells(_xlsx_values(fast_xlsx)[0], _xlsx_values(slow_xlsx)[0])
    finally:
        monkeypatch.delenv("MEIQIA_TIMEZONE")
        reload_settings()


def test_a_zone_postgresql_does_not_know_as_python_does_takes_the_python_path(seeded_actors, monkeypatch):
    if not _on_postgresql():
        pytest.skip("PostgreSQL's own time zone rules")
    from zoneinfo import ZoneInfo

    from meiqia_app.dbadapter import postgresql_export

    engine = get_engine()
    monkeypatch.setattr(postgresql_export, "_agreement", {})
    assert postgresql_export.zone_agrees(engine, ZoneInfo("Asia/Shanghai"))

    class Unknown(dt.tzinfo):
        key = "Nowhere/Atlantis"

    assert not postgresql_export.zone_agrees(engine, Unknown())
    # Rules that differ (another tz database version): one sampled local time is enough.
    real = postgresql_export._python_local_times
    monkeypatch.setattr(
        postgresql_export, "_python_local_times", lambda zone: [*real(zone)[:-1], "2099-12-31 00:00:00"]
    )
    monkeypatch.setattr(postgresql_export, "_agreement", {})
    source = RowSource(seeded_actors["manager"], _spec(("id", "name")))
    assert not source.sql_fields_supported("csv")
