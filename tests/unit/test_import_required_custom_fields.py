"""Required custom fields in an import: a mapping that leaves one (without a default) unmapped is
refused at the mapping step with a message naming it in the reader's language, before any job
or row; rows whose mapped required field is empty (or holds only separators) are invalid rows
naming the field by its label, in the report and the error file, and nothing of them is saved."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from meiqia_app.db import get_engine
from meiqia_app.i18n import tr
from meiqia_app.models import Customer, Job
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers.importing import custom_values
from meiqia_app.services.customers.importing import job as customer_import
from meiqia_app.services.errors import ValidationError
from tests.unit.test_import_custom_fields import _csv, _documents, _jobs_run_inline  # noqa: F401  (fixture)

C = Customer.__table__.c


@pytest.fixture()
def required(seeded_actors):
    admin = seeded_actors["admin"]
    specs = (
        {"key": "member_no", "label_zh": "会员编号", "label_en": "Member no.", "field_type": "text", "required": True},
        {
            "key": "channels",
            "label_zh": "渠道",
            "label_en": "Channels",
            "field_type": "multi_select",
            "options": "微信\n电话",
            "required": True,
        },
        # required with a default: every customer has a value without a column
        {"key": "level", "label_zh": "级别", "field_type": "text", "required": True, "default": "普通"},
        {"key": "note_cf", "label_zh": "备注字段", "field_type": "text"},
    )
    for spec in specs:
        custom_fields.create_field(admin, spec)
    return seeded_actors


def _count(table) -> int:
    with get_engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(table.__table__)).scalar_one()


def test_a_mapping_without_a_required_field_is_refused_before_any_job(required):
    manager = required["manager"]
    path = _csv("req.csv", [["姓名", "会员编号"], ["导入甲", "A1"]])
    jobs_before = _count(Job)
    with pytest.raises(ValidationError) as caught:
        customer_import.start_job(manager, path, {"0": "name", "1": "cf.member_no"}, dry_run=True)
    assert caught.value.field_errors["mapping"][0] == "import.cf_required_unmapped"
    assert _count(Job) == jobs_before  # the importer cannot start: no job, no row
    key, params = caught.value.field_errors["mapping"]
    zh, en = tr("zh", key, **params), tr("en", key, **params)
    assert "渠道" in zh and "会员编号" not in zh and "级别" not in zh
    assert "Channels" in en and "required" in en
    # the services called directly refuse it too (a check and an import)
    for run in (customer_import.dry_run, customer_import.run_import):
        with pytest.raises(ValidationError):
            run(manager, path, {"0": "name"})
    assert not _documents(["导入甲"])
    assert [f.key for f in custom_values.unmapped_required(["name", "cf.channels"])] == ["member_no"]


def test_rows_with_an_empty_required_value_are_invalid_and_name_the_field(required):
    manager = required["manager"]
    path = _csv(
        "req-rows.csv",
        [
            ["姓名", "会员编号", "渠道"],
            ["导入甲", "A1", "微信"],
            ["导入乙", "", "电话"],
            ["导入丙", "A3", "，"],  # separators only: no option, so empty
        ],
    )
    mapping = {"0": "name", "1": "cf.member_no", "2": "cf.channels"}
    report = customer_import.run_import(manager, path, mapping, lang="en")
    assert (report.inserted, report.invalid) == (1, 2)
    problems = {(p.row, p.field): p.message_key for p in report.problems}
    assert problems == {(3, "cf.member_no"): "error.cf_required", (4, "cf.channels"): "error.cf_required"}
    rows = list(csv.reader(io.StringIO(Path(report.error_report_path).read_text("utf-8-sig"))))
    reasons = {row[0]: row[-1] for row in rows[1:]}
    assert reasons["3"].startswith("Member no.:") and "is required" in reasons["3"]
    assert reasons["4"].startswith("Channels:")
    saved = _documents(["导入甲", "导入乙", "导入丙"])
    assert list(saved) == ["导入甲"] and saved["导入甲"]["member_no"] == "A1"
