"""Custom fields in exports (issue 23): the picker's fields, typed XLSX cells per type, CSV text
(formula-injection protection as for built-in fields), PDF text, masking and policy of a sensitive
custom field like the phone, keys not labels (a rename keeps a rerun working), a deleted field
skipped with a notice, and the database-built rows equal to the Python-built ones."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

import openpyxl
import pytest
from pypdf import PdfReader
from sqlalchemy import select
from sqlmodel import select as sm_select

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AuditEntry, Customer, ExportJob, Role
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers.masking import MASK
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.exports import approval as export_approval
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.exports.fields import custom_field_choices, export_fields
from meiqia_app.services.exports.policy import field_availability, masked_fields
from meiqia_app.services.identity.rbac import ExportPolicy
from meiqia_app.services.platform import jobs
from meiqia_app.timeutil import to_local
from tests.conftest import built_once

C = Customer.__table__.c

# key, type, options, value written through the edit form
VALUES = [
    ("m_text", "text", "", "=SUM(A1)"),
    ("m_number", "number", "", "1234.5"),
    ("m_money", "money", "", "-99.9"),
    ("m_percent", "percent", "", "12.5%"),
    ("m_date", "date", "", "2026-03-05"),
    ("m_datetime", "datetime", "", "2026-03-05T16:30"),
    ("m_yes", "yes_no", "", "true"),
    ("m_source", "single_select", "官网\n门店\n推荐", "门店"),
    ("m_multi", "multi_select", "微信\n电话\n邮件", ["o3", "o1"]),
    ("m_link", "link", "", "meiqia.com/x"),
]


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id, **_: jobs.run_job(job_id))


def _define(admin, key: str, field_type: str, options: str = "", **extra) -> int:
    data = {"key": key, "label_zh": f"中{key}", "label_en": f"En {key}", "field_type": field_type, **extra}
    if options:
        data["options"] = options
    return custom_fields.create_field(admin, data).field_id


def _ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _save(actor, customer_id: int, custom: dict) -> None:
    with read_session() as session:
        version = session.get(Customer, customer_id).version
    customer_edit.update_customer(actor, customer_id, version, {"custom_fields": custom})


@built_once("seeded_db")
def filled(actors):
    """Every type defined, the first customer holding a value of each, the second none, plus a
    sensitive phone field "m_secret" held by the first."""
    admin = actors["admin"]
    for key, field_type, options, _ in VALUES:
        _define(admin, key, field_type, options, group_zh="会员信息", group_en="Membership")
    _define(admin, "m_secret", "phone", sensitive=True)
    first, second = _ids(2)
    _save(admin, first, {key: value for key, _, _, value in VALUES} | {"m_secret": "13812345678"})
    return actors, first, second


def _request(ids, fields, fmt="csv", **extra) -> dict:
    return {
        "scope": {"kind": "ids", "ids": list(ids)},
        "fields": list(fields),
        "format": fmt,
        "sort_field": "id",
        "sort_dir": "asc",
        **extra,
    }


def _run(actor, data, password=""):
    view = export_request.request_export(actor, data, password=password, start=False)
    assert view.status == "queued", view
    view = export_run.run_export(view.id, password)
    assert view.status == "done", view.error
    return view


def _file(view) -> Path:
    with read_session() as session:
        return get_settings().exports_dir / session.get(ExportJob, view.id).file_name


def _csv_rows(view) -> list[list[str]]:
    return list(csv.reader(io.StringIO(_file(view).read_text("utf-8-sig"), newline="")))


def _names(*keys) -> list[str]:
    return ["id"] + [f"cf.{k}" for k in keys]


ALL = [key for key, *_ in VALUES]


def _set_policy(role_name, **changes):
    from tests.conftest import load_actors

    with write_session() as session:
        role = session.exec(sm_select(Role).where(Role.name == role_name)).one()
        role.export_policy = dataclasses.replace(ExportPolicy.from_json(role.export_policy), **changes).to_json()
        session.add(role)
    return load_actors()


def test_the_picker_offers_active_custom_fields_by_group_and_label(filled):
    actors, _, _ = filled
    custom_fields.retire_field(actors["admin"], custom_fields_id("m_link"), _version_of("m_link"))
    choices = custom_field_choices("en")
    assert [c.name for c in choices][:3] == ["cf.m_text", "cf.m_number", "cf.m_money"]
    assert "cf.m_link" not in export_fields() and "cf.m_link" not in [c.name for c in choices]
    membership = [c for c in choices if c.group == "Membership"]
    assert membership[0].first_in_group and not any(c.first_in_group for c in membership[1:])
    assert membership[0].label == "En m_text"
    secret = next(c for c in choices if c.key == "m_secret")
    assert secret.sensitive and secret.group == "" and secret.first_in_group
    assert "cf.m_secret" in masked_fields(actors["analyst"]) and "cf.m_secret" not in masked_fields(actors["manager"])


def custom_fields_id(key: str) -> int:
    from meiqia_app.services.custom_fields import catalog

    return catalog.field(key).id


def _version_of(key: str) -> int:
    from meiqia_app.services.custom_fields import catalog

    return catalog.field(key).version


def test_xlsx_cells_are_typed_per_custom_type(filled):
    actors, first, second = filled
    view = _run(actors["manager"], _request([first, second], _names(*ALL), fmt="xlsx"))
    sheet = openpyxl.load_workbook(_file(view)).worksheets[0]
    rows = list(sheet.iter_rows())
    assert [c.value for c in rows[0]] == ["客户ID"] + [f"中{k}" for k in ALL]
    cells = {key: rows[1][i + 1] for i, key in enumerate(ALL)}
    assert cells["m_text"].value == "'=SUM(A1)" and cells["m_text"].data_type == "s"
    assert cells["m_number"].value == 1234.5 and cells["m_number"].number_format == "General"
    assert cells["m_money"].value == -99.9 and cells["m_money"].number_format == "#,##0.00"
    assert cells["m_percent"].value == pytest.approx(0.125) and cells["m_percent"].number_format == "0.00%"
    assert cells["m_date"].value == dt.datetime(2026, 3, 5) and cells["m_date"].number_format == "yyyy-mm-dd"
    assert cells["m_datetime"].value == dt.datetime(2026, 3, 5, 16, 30)
    assert cells["m_datetime"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert cells["m_yes"].value == "是"
    assert cells["m_source"].value == "门店"
    assert cells["m_multi"].value == "微信、邮件"
    assert cells["m_link"].value == "https://meiqia.com/x"
    assert all(c.value is None for c in rows[2][1:])  # the second customer holds nothing


def test_an_english_export_says_yes_and_shows_english_option_labels(filled):
    actors, first, _ = filled
    admin = actors["admin"]
    field = custom_fields_id("m_source")

    custom_fields.update_option(admin, field, _version_of("m_source"), "o2", en="Store")
    view = export_request.request_export(
        actors["manager"], _request([first], _names("m_yes", "m_source", "m_multi")), lang="en", start=False
    )
    view = export_run.run_export(view.id)
    rows = _csv_rows(view)
    assert rows[0] == ["Customer ID", "En m_yes", "En m_source", "En m_multi"]
    assert rows[1][1:] == ["Yes", "Store", "微信, 邮件"]  # options without an English label: their Chinese one


def test_csv_writes_plain_text_and_neutralises_formulas(filled):
    actors, first, second = filled
    view = _run(actors["manager"], _request([first, second], _names(*ALL)))
    rows = _csv_rows(view)
    assert rows[0] == ["客户ID"] + [f"中{k}" for k in ALL]
    got = dict(zip(ALL, rows[1][1:]))
    local = to_local(dt.datetime(2026, 3, 5, 8, 30, tzinfo=dt.UTC)).strftime("%Y-%m-%d %H:%M:%S")
    assert got == {
        "m_text": "'=SUM(A1)",
        "m_number": "1234.5",
        "m_money": "-99.90",
        "m_percent": "12.5%",
        "m_date": "2026-03-05",
        "m_datetime": local,
        "m_yes": "是",
        "m_source": "门店",
        "m_multi": "微信、邮件",
        "m_link": "https://meiqia.com/x",
    }
    assert rows[2][1:] == [""] * len(ALL)


def test_the_database_built_rows_equal_the_python_built_ones(filled, monkeypatch):
    """CSV and XLSX with custom columns take the database-built path when they can; the file is
    the same as the Python path's, byte for byte (CSV) and cell for cell (XLSX)."""
    from meiqia_app.db import get_engine
    from meiqia_app.dbadapter import get_adapter
    from meiqia_app.services.exports.rows import RowSource

    actors, first, second = filled
    _define(actors["admin"], "m_level", "single_select", "银卡\n金卡", default="金卡")
    _define(actors["admin"], "m_flag", "yes_no", default="false")
    fields = _names(*[k for k in ALL if k != "m_multi"], "m_level", "m_flag") + ["name", "city"]
    spec = export_request.parse_request(actors["manager"], _request([first, second], fields)).spec
    # The database builds them where its adapter can (SQLite); elsewhere both runs take the Python path.
    can_build = bool(get_adapter(get_engine()).export_custom_kinds)
    assert RowSource(actors["manager"], spec).sql_fields_supported("csv") == can_build
    for fmt in ("csv", "xlsx"):
        fast = _run(actors["manager"], _request([first, second], fields, fmt=fmt))
        with monkeypatch.context() as patch:
            patch.setattr(RowSource, "sql_fields_supported", lambda self, fmt: False)
            slow = _run(actors["manager"], _request([first, second], fields, fmt=fmt))
        if fmt == "csv":
            assert _file(fast).read_bytes() == _file(slow).read_bytes()
            rows = _csv_rows(fast)
            assert rows[2][-4:-2] == ["金卡", "否"]  # the second customer has the defaults
            assert rows[1][1] == "'=SUM(A1)"
        else:
            a = [[c.value for c in r] for r in openpyxl.load_workbook(_file(fast)).worksheets[0].iter_rows()]
            b = [[c.value for c in r] for r in openpyxl.load_workbook(_file(slow)).worksheets[0].iter_rows()]
            assert a == b


def test_pdf_shows_custom_values_as_text(filled):
    actors, first, _ = filled
    view = _run(actors["manager"], _request([first], _names("m_source", "m_money", "m_percent", "m_yes"), fmt="pdf"))
    text = "".join(page.extract_text() for page in PdfReader(str(_file(view))).pages)
    for expected in ("中m_source", "门店", "-99.90", "12.5%", "是"):
        assert expected in text, expected


def test_a_sensitive_custom_field_is_masked_for_a_role_without_the_permission(filled):
    actors, first, _ = filled
    actors = _set_policy("data_analyst", allowed_fields=None)  # lists no fields: only the masking applies
    analyst = actors["analyst"]
    review = export_request.review(analyst, _request([first], _names("m_secret", "m_text")))
    assert review.masked == ["cf.m_secret"] and not review.password_required
    rows = _csv_rows(_run(analyst, _request([first], _names("m_secret", "m_text"))))
    assert rows[1][1] == "138****5678" and "13812345678" not in _file_text_of_last()
    # The manager sees it in clear, and so needs a password, like the phone.
    manager = actors["manager"]
    assert export_request.review(manager, _request([first], _names("m_secret"))).password_required
    with pytest.raises(ValidationError):
        export_request.request_export(manager, _request([first], _names("m_secret")), start=False)


def _file_text_of_last() -> str:
    with read_session() as session:
        job = session.exec(sm_select(ExportJob).order_by(ExportJob.id.desc())).first()
    return (get_settings().exports_dir / job.file_name).read_text("utf-8-sig")


def test_a_hidden_custom_value_is_masked_in_xlsx_too(filled):
    actors, first, _ = filled
    admin = actors["admin"]
    _define(admin, "m_salary", "money", sensitive=True)
    _save(admin, first, {"m_salary": "8000"})
    actors = _set_policy("data_analyst", allowed_fields=None)
    view = _run(actors["analyst"], _request([first], _names("m_salary", "m_money"), fmt="xlsx"))
    row = [c.value for c in list(openpyxl.load_workbook(_file(view)).worksheets[0].iter_rows())[1]]
    assert row[1:] == [MASK, -99.9]


def test_a_role_whose_field_list_refuses_the_phone_is_refused_a_sensitive_custom_field(filled):
    actors, first, _ = filled
    analyst = actors["analyst"]  # the built-in analyst's list: every field but the sensitive ones
    availability = field_availability(analyst)
    assert availability["phone"] and availability["cf.m_secret"] == availability["phone"]
    assert availability["cf.m_text"] == ""
    with pytest.raises(PermissionDenied):
        export_request.request_export(analyst, _request([first], _names("m_secret")), start=False)
    with read_session() as session:
        refusal = session.exec(
            sm_select(AuditEntry).where(AuditEntry.action == "export.request", AuditEntry.result == "refused")
        ).all()
    assert refusal and "cf.m_secret" in refusal[-1].details


def test_sensitive_custom_fields_need_approval_when_the_policy_says_so(filled):
    actors, first, _ = filled
    actors = _set_policy("manager", approval_required=True)
    view = export_request.request_export(
        actors["manager"], _request([first], _names("m_secret")), password="s3cret-Export!", start=False
    )
    assert view.status == "pending_approval"
    assert export_approval.decide(actors["admin"], view.id, True).status == "approved"


def test_exports_store_keys_so_a_rename_keeps_a_rerun_working(filled):
    actors, first, _ = filled
    manager, admin = actors["manager"], actors["admin"]
    view = _run(manager, _request([first], _names("m_source")))
    assert view.fields == ["id", "cf.m_source"]
    field = custom_fields_id("m_source")
    custom_fields.update_field(
        admin, field, _version_of("m_source"), {"label_zh": "会员来源", "label_en": "Member source"}
    )
    again = export_run.run_export(export_approval.rerun_export(manager, view.id, start=False).id)
    assert _csv_rows(again)[0] == ["客户ID", "会员来源"] and _csv_rows(again)[1][1] == "门店"


def test_a_deleted_field_is_skipped_with_a_notice(filled):
    actors, first, _ = filled
    manager, admin = actors["manager"], actors["admin"]
    view = _run(manager, _request([first], _names("m_source", "m_text")))
    custom_fields.delete_field(admin, custom_fields_id("m_text"), "m_text")
    data = _request([first], _names("m_source", "m_text"))
    review = export_request.review(manager, data)
    assert review.skipped == ["cf.m_text"]
    again = export_run.run_export(export_approval.rerun_export(manager, view.id, start=False).id)
    assert _csv_rows(again)[0] == ["客户ID", "中m_source"]
    with read_session() as session:
        entry = session.exec(sm_select(AuditEntry).where(AuditEntry.action == "export.request")).all()[-1]
    assert "cf.m_text" in entry.details  # the request's audit entry says what was left out
    with pytest.raises(ValidationError):
        export_request.request_export(manager, _request([first], ["cf.m_text"]), start=False)


def test_an_export_queued_before_its_field_was_deleted_leaves_it_out(filled):
    actors, first, _ = filled
    manager, admin = actors["manager"], actors["admin"]
    view = export_request.request_export(manager, _request([first], _names("m_source", "m_text")), start=False)
    custom_fields.delete_field(admin, custom_fields_id("m_text"), "m_text")
    done = export_run.run_export(view.id)
    assert done.status == "done" and _csv_rows(done)[0] == ["客户ID", "中m_source"]


def test_an_unknown_custom_name_is_refused(seeded_actors):
    with pytest.raises(ValidationError):
        export_request.request_export(seeded_actors["manager"], _request([1], ["id", "cf.Bad Key"]), start=False)
