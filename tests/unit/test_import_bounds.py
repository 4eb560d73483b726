"""Import files that try to exhaust the server: zip bombs, huge sheets, endless lines,
and cells with NUL bytes. Each is refused with a clear message; nothing is stored."""

from __future__ import annotations

import resource
import time
import zipfile

import pytest

from meiqia_app.config import get_settings, reload_settings
from meiqia_app.services.customers.importing import files as import_files
from meiqia_app.services.customers.importing.columns import suggest_mapping
from meiqia_app.services.customers.importing.files import preview_table
from meiqia_app.services.customers.importing.job import dry_run, run_import
from meiqia_app.services.errors import ValidationError
from tests.unit.test_customer_import import rows, write_csv, write_xlsx

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
)


def bomb_xlsx(name: str, rows: int, strings: int = 0) -> tuple[int, int]:
    """A real, openable XLSX: a sheet repeating the same row ``rows`` times and a shared-string
    table of ``strings`` entries (openpyxl loads that table whole, even read-only): a few
    hundred KB on disk, far more once unpacked. Returns (packed, unpacked) sizes."""
    path = get_settings().imports_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    row = '<row><c t="inlineStr"><is><t>张三</t></is></c><c t="inlineStr"><is><t>13800138000</t></is></c></row>'
    content_types = _CONTENT_TYPES.replace(
        "</Types>",
        '<Override PartName="/xl/sharedStrings.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
    )
    workbook_rels = _WORKBOOK_RELS.replace(
        "</Relationships>",
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'sharedStrings" Target="sharedStrings.xml"/></Relationships>',
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", workbook_rels)
        with archive.open("xl/sharedStrings.xml", "w") as table:
            table.write(b'<?xml version="1.0" encoding="UTF-8"?>')
            table.write(b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            block = b"<si><t>x</t></si>" * 1000
            for _ in range(strings // 1000):
                table.write(block)
            table.write(b"</sst>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(b'<?xml version="1.0" encoding="UTF-8"?>')
            sheet.write(b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
            header = '<row><c t="inlineStr"><is><t>姓名</t></is></c><c t="inlineStr"><is><t>手机</t></is></c></row>'
            sheet.write(header.encode())
            block = (row * 1000).encode()
            for _ in range(rows // 1000):
                sheet.write(block)
            sheet.write(b"</sheetData></worksheet>")
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(part.file_size for part in archive.infolist())
    return path.stat().st_size, unpacked


@pytest.fixture()
def env(monkeypatch):
    def set_env(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))
        reload_settings()

    yield set_env
    monkeypatch.undo()
    reload_settings()


def test_a_zip_bomb_xlsx_is_refused_before_it_is_opened(actors):
    # ~40 MB of sheet XML and 2 million shared strings (~34 MB) in a few hundred KB.
    packed, unpacked = bomb_xlsx("bomb.xlsx", 400_000, 2_000_000)
    assert packed < 1_000_000 and unpacked > 100 * packed
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ValidationError) as caught:
        preview_table(actors["manager"], get_settings().imports_dir / "bomb.xlsx")
    assert caught.value.field_errors["file"] == ("import.xlsx_too_large", {"mb": 500})
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50_000  # KiB: nothing was inflated
    with pytest.raises(ValidationError):
        dry_run(actors["manager"], get_settings().imports_dir / "bomb.xlsx", {0: "name", 1: "phone"})


def test_an_xlsx_over_the_unpacked_budget_is_refused(actors, env):
    env(MEIQIA_IMPORT_MAX_UNCOMPRESSED_MB=1)
    path = write_xlsx(
        "big.xlsx", [["姓名", "备注"], *([f"客户{i}", f"{i * 7919 % 100003:x}" * 8] for i in range(20_000))]
    )
    with pytest.raises(ValidationError) as caught:
        preview_table(actors["manager"], path)
    assert caught.value.field_errors["file"] == ("import.xlsx_too_large", {"mb": 1})


def test_more_rows_than_allowed_are_refused_and_nothing_is_imported(actors, env):
    env(MEIQIA_IMPORT_MAX_ROWS=5)
    path = write_csv("many.csv", [["姓名", "手机号码"], *([f"行{i}", f"1991234{i:04d}"] for i in range(8))])
    with pytest.raises(ValidationError) as caught:
        run_import(actors["manager"], path, {0: "name", 1: "phone"})
    assert caught.value.field_errors["file"] == ("import.too_many_rows", {"max": 5})
    ok = write_csv("few.csv", [["姓名", "手机号码"], *([f"少{i}", f"1991235{i:04d}"] for i in range(5))])
    assert dry_run(actors["manager"], ok, {0: "name", 1: "phone"}).valid == 5


def test_more_columns_than_allowed_are_refused(actors, env):
    env(MEIQIA_IMPORT_MAX_COLUMNS=10)
    wide = write_csv("wide.csv", [[f"列{i}" for i in range(11)], ["x"] * 11])
    with pytest.raises(ValidationError) as caught:
        preview_table(actors["manager"], wide)
    assert caught.value.field_errors["file"] == ("import.too_many_columns", {"max": 10})
    # Trailing empty cells (an XLSX with formatted blank columns) do not count.
    padded = write_xlsx("padded.xlsx", [["姓名", "手机号码", *[None] * 20], ["李雷", "13800138000"]])
    assert preview_table(actors["manager"], padded).headers == ["姓名", "手机号码"]


def test_a_line_of_millions_of_commas_is_refused_without_building_the_row(actors):
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "commas.csv"
    path.write_bytes(b"name,phone\n" + b"," * 5_000_000 + b"\n")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValidationError) as caught:
        dry_run(actors["manager"], path, {0: "name"})
    assert caught.value.field_errors["file"] == ("import.line_too_long", {"row": 2})
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB


def test_a_cell_with_nul_bytes_is_invalid_and_never_stored(actors):
    path = write_csv(
        "nul.csv",
        [
            ["姓名", "手机号码", "城市"],
            ["张\x00三", "19912340011", "北京"],
            ["李四", "19912340012", "上\x00海"],
            ["王五", "19912340013", "杭州"],
        ],
    )
    mapping = suggest_mapping(["姓名", "手机号码", "城市"])
    report = dry_run(actors["manager"], path, mapping)
    assert (report.total_rows, report.valid, report.invalid) == (3, 1, 2)
    assert [(p.row, p.field, p.message_key) for p in report.problems] == [
        (2, "name", "import.invalid_characters"),
        (3, "city", "import.invalid_characters"),
    ]
    assert "\x00" not in report.problems[0].value
    done = run_import(actors["manager"], path, mapping)
    assert done.inserted == 1
    assert rows("SELECT name, city FROM customer WHERE phone LIKE '1991234001%'") == [("王五", "杭州")]
    report_text = open(done.error_report_path, encoding="utf-8-sig").read()
    assert "\x00" not in report_text and "张\ufffd三" in report_text


def test_the_upload_cap_is_configurable(env):
    assert import_files.max_upload_bytes() == 50 * 1024 * 1024
    env(MEIQIA_MAX_UPLOAD_MB=7)
    assert import_files.max_upload_bytes() == 7 * 1024 * 1024
