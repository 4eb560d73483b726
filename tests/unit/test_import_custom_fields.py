"""Custom fields in imports (issue 23): the mapping offers and auto-matches them (label in either
language, or key), cells are checked by type with per-row errors naming the field, select options
a file names are created on the fly only for a person who may manage fields, and a sensitive field
is importable only by a role that sees such values in clear."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import select as sm_select

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session
from meiqia_app.i18n import tr
from meiqia_app.models import AuditEntry, Customer
from meiqia_app.services.custom_fields import catalog
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers.importing.columns import suggest_mapping
from meiqia_app.services.customers.importing.custom_values import active_fields
from meiqia_app.services.customers.importing.job import dry_run, run_import
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from tests.conftest import built_once

C = Customer.__table__.c


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id, **_: jobs.run_job(job_id))


@built_once("seeded_db")
def fields(actors):
    admin = actors["admin"]
    for key, label_zh, label_en, field_type, extra in (
        ("member_source", "会员来源", "Member source", "single_select", {"options": "官网\n门店\n推荐"}),
        ("points", "积分", "Points", "number", {}),
        ("joined", "入会日期", "Joined", "date", {}),
        ("id_card", "身份证号", "ID card", "text", {"sensitive": True}),
    ):
        data = {"key": key, "label_zh": label_zh, "label_en": label_en, "field_type": field_type, **extra}
        custom_fields.create_field(admin, data)
    return actors


def _csv(name: str, data: list[list]) -> Path:
    folder = get_settings().imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(data)
    return path


def _documents(names: list[str]) -> dict[str, dict]:
    with get_engine().connect() as conn:
        found = conn.execute(select(C.name, C.custom_fields).where(C.name.in_(names))).all()
    return {name: (json.loads(doc) if isinstance(doc, str) else doc) or {} for name, doc in found}


def test_headers_equal_to_a_label_in_either_language_or_the_key_are_mapped(fields):
    headers = ["姓名", "会员来源", "Points", "joined", "身份证号（必填）", "备注"]
    assert suggest_mapping(headers, active_fields()) == {
        0: "name",
        1: "cf.member_source",
        2: "cf.points",
        3: "cf.joined",
        4: "cf.id_card",  # brackets and marks aside, as for built-in headers
    }


def test_values_are_checked_by_type_with_row_field_and_reason(fields):
    manager = fields["manager"]
    path = _csv(
        "cf.csv",
        [
            ["姓名", "会员来源", "积分", "入会日期"],
            ["导入甲", "门店", "1,200", "2026/3/5"],
            ["导入乙", "展会", "12", ""],
            ["导入丙", "官网", "很多", "2026-02-30"],
        ],
    )
    mapping = {"0": "name", "1": "cf.member_source", "2": "cf.points", "3": "cf.joined"}
    report = dry_run(manager, path, mapping)
    assert (report.valid, report.invalid) == (1, 2)
    problems = {(p.row, p.field): p for p in report.problems}
    assert set(problems) == {(3, "cf.member_source"), (4, "cf.points"), (4, "cf.joined")}
    unknown = problems[(3, "cf.member_source")]
    assert unknown.message_key == "error.cf_option" and unknown.value == "展会"
    assert "会员来源" in tr("zh", unknown.message_key, **unknown.params)
    # The error report names the row's field by its label and the reason.
    text = Path(report.error_report_path).read_text("utf-8-sig")
    assert "会员来源:" in text and "积分:" in text
    done = run_import(manager, path, mapping)
    assert done.inserted == 1
    assert _documents(["导入甲"])["导入甲"] == {"member_source": "o2", "points": 1200, "joined": "2026-03-05"}


def test_missing_options_are_created_for_a_field_manager(fields):
    admin = fields["admin"]
    path = _csv("opts.csv", [["姓名", "会员来源"], ["导入丁", "展会"], ["导入戊", "展会"], ["导入己", "门店"]])
    mapping = {"0": "name", "1": "cf.member_source"}
    checked = dry_run(admin, path, mapping, create_options=True)
    assert checked.invalid == 0 and checked.new_options == {"cf.member_source": ["展会"]}
    assert [o.zh for o in catalog.field("member_source").options] == ["官网", "门店", "推荐"]  # a check creates nothing
    done = run_import(admin, path, mapping, create_options=True)
    assert done.inserted == 3 and done.new_options == {"cf.member_source": ["展会"]}
    field = catalog.field("member_source")
    created = next(o for o in field.options if o.zh == "展会")
    docs = _documents(["导入丁", "导入戊", "导入己"])
    assert docs["导入丁"]["member_source"] == docs["导入戊"]["member_source"] == created.id
    with read_session() as session:
        entries = session.exec(sm_select(AuditEntry).where(AuditEntry.action.like("field.%"))).all()
    assert any("展会" in (e.details or "") for e in entries)


def test_creating_options_is_refused_without_field_manage_and_unknown_options_stay_errors(fields):
    manager = fields["manager"]
    path = _csv("opts2.csv", [["姓名", "会员来源"], ["导入庚", "展会"]])
    mapping = {"0": "name", "1": "cf.member_source"}
    with pytest.raises(PermissionDenied):
        run_import(manager, path, mapping, create_options=True)
    report = run_import(manager, path, mapping)
    assert report.inserted == 0 and report.problems[0].message_key == "error.cf_option"
    assert [o.zh for o in catalog.field("member_source").options] == ["官网", "门店", "推荐"]


def test_a_sensitive_field_is_importable_only_by_a_role_that_sees_it(fields):
    path = _csv("secret.csv", [["姓名", "身份证号"], ["导入辛", "110101199001011234"]])
    mapping = {"0": "name", "1": "cf.id_card"}
    analyst_like = fields["agent"]  # may import? agents have no customer.import: use the admin's check below
    assert not analyst_like.can("customer.view_sensitive")
    from dataclasses import replace

    importer = replace(analyst_like, permissions=analyst_like.permissions | {"customer.import"})
    with pytest.raises(PermissionDenied):
        dry_run(importer, path, mapping)
    with read_session() as session:
        refusal = session.exec(sm_select(AuditEntry).where(AuditEntry.result == "refused")).all()[-1]
    assert refusal.action == "customer.import" and "cf.id_card" in refusal.details
    done = run_import(fields["manager"], path, mapping)
    assert done.inserted == 1 and _documents(["导入辛"])["导入辛"] == {"id_card": "110101199001011234"}


def test_an_unknown_or_retired_custom_field_cannot_be_mapped(fields):
    admin = fields["admin"]
    path = _csv("bad.csv", [["姓名", "X"], ["导入壬", "1"]])
    with pytest.raises(ValidationError):
        dry_run(admin, path, {"0": "name", "1": "cf.nope"})
    field = catalog.field("points")
    custom_fields.retire_field(admin, field.id, field.version)
    with pytest.raises(ValidationError):
        dry_run(admin, path, {"0": "name", "1": "cf.points"})
