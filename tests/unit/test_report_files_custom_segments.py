"""The segment report's XLSX and PDF carry the segment grouped by a custom field, as the page
shows it: a table named after the field's label, one row per option label (never the option
id), the customers and their share (services/reports/files.py)."""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from meiqia_app.config import get_settings
from meiqia_app.db import read_session
from meiqia_app.models import ExportJob
from meiqia_app.services.reports import files as report_files
from meiqia_app.services.reports import views as report_views
from tests.unit.test_custom_field_segments import SEGMENT, world  # noqa: F401  (the fixture)

GROUPED = {**SEGMENT, "group_by": "member_source"}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_xlsx_has_the_group_table_with_option_labels_and_typed_counts(world, seeded_actors, lang):  # noqa: F811
    manager = seeded_actors["manager"]
    view = report_views.segment_report_view(manager, GROUPED, lang=lang)
    _name, data = report_files.export_xlsx(manager, "segment", GROUPED, lang)
    book = load_workbook(io.BytesIO(data))
    title = "按会员来源分组" if lang == "zh" else "By Member source"
    assert title in book.sheetnames, book.sheetnames
    rows = list(book[title].iter_rows(values_only=True))
    label = "会员来源" if lang == "zh" else "Member source"
    assert rows[0][0] == label
    options = ["官网", "门店", "老客户推荐", "（空）"] if lang == "zh" else ["Website", "Store", "Referral", "(empty)"]
    assert [r[0] for r in rows[1:]] == options
    assert [r[1] for r in rows[1:]] == [g["customers"] for g in view.groups]
    assert all(isinstance(r[1], int) for r in rows[1:]) and sum(r[1] for r in rows[1:]) > 0
    shares = [round(r[2] * 100, 1) for r in rows[1:]]
    assert [f"{s:.1f}%" for s in shares] == [g["share"] for g in view.groups]
    assert book[title].cell(row=2, column=3).number_format == "0.0%"
    assert not any(cell in ("o1", "o2", "o3") for row in rows for cell in row)


def test_without_group_by_there_is_no_group_table(world, seeded_actors):  # noqa: F811
    _name, data = report_files.export_xlsx(seeded_actors["manager"], "segment", SEGMENT, "zh")
    assert not [name for name in load_workbook(io.BytesIO(data)).sheetnames if name.startswith("按")]


def test_the_pdf_has_the_group_table_with_option_labels(world, seeded_actors):  # noqa: F811
    manager = seeded_actors["manager"]
    view = report_views.segment_report_view(manager, {**GROUPED, "group_by": "hobbies"}, lang="en")
    export_id = report_files.export_pdf(manager, "segment", {**GROUPED, "group_by": "hobbies"}, "en")
    with read_session() as session:
        path = get_settings().exports_dir / session.get(ExportJob, export_id).file_name
    text = "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)
    assert "By 爱好" in text
    table = [line.strip() for line in text[text.index("By 爱好") :].splitlines()]
    expected = ["By 爱好", "爱好", "Total customers", "Share"]
    for group in view.groups:
        expected += [group["label"], f"{group['customers']:,}", group["share"]]
    assert table[: len(expected)] == expected
    assert [g["label"] for g in view.groups] == ["Running", "Reading", "(empty)"]
