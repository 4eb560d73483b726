"""Exports: the rows, the files read back, protection, policy, approval, audit, downloads."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import zipfile

import msoffcrypto
import msoffcrypto.exceptions
import openpyxl
import pytest
import pyzipper
from pypdf import PdfReader
from sqlalchemy import select, update
from sqlmodel import select as sm_select

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session, write_session
from meiqia_app.models import AuditEntry, Customer, ExportJob, Role, UserSession
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from meiqia_app.services.exports import approval as export_approval
from meiqia_app.services.exports import downloads as export_downloads
from meiqia_app.services.exports import files as export_files
from meiqia_app.services.exports import history as export_history
from meiqia_app.services.exports import info as export_info
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run
from meiqia_app.services.exports.rows import ExportSpec, RowSource
from meiqia_app.services.exports.writers import neutralise
from meiqia_app.services.identity.rbac import ExportPolicy
from meiqia_app.timeutil import to_local, utcnow

C = Customer.__table__.c
FIELDS = ["id", "name", "city", "registered_at", "order_count", "consent_marketing"]
PASSWORD = "s3cret-Export!"


def _request(fields=FIELDS, fmt="csv", query=None, sort_field="registered_at", sort_dir="asc", **extra):
    return {
        "scope": {"kind": "query", "query": query or {"sources": ["wechat"]}},
        "fields": list(fields),
        "format": fmt,
        "sort_field": sort_field,
        "sort_dir": sort_dir,
        **extra,
    }


def _run(actor, data, password=""):
    view = export_request.request_export(actor, data, password=password, start=False)
    assert view.status == "queued", view
    return export_run.run_export(view.id, password)


def _file(view) -> Path:  # noqa: F821
    with read_session() as session:
        job = session.get(ExportJob, view.id)
        return get_settings().exports_dir / job.file_name


def _expected(query=None, order=(C.registered_at, C.id)):
    with get_engine().connect() as conn:
        return conn.execute(
            select(C.id, C.name, C.city, C.order_count, C.total_spent_cents)
            .where(C.source == "wechat", C.status == "active")
            .order_by(*order)
        ).all()


def _with_session(actor):
    with write_session() as session:
        row = UserSession(
            token_hash=hashlib.sha256(f"{actor.username}{utcnow()}".encode()).hexdigest(),
            user_id=actor.user_id,
            expires_at=utcnow() + dt.timedelta(hours=1),
        )
        session.add(row)
        session.flush()
        return dataclasses.replace(actor, session_id=row.id)


def _audit(action):
    with read_session() as session:
        return session.exec(sm_select(AuditEntry).where(AuditEntry.action == action)).all()


def _set_policy(role_name, **changes):
    with write_session() as session:
        role = session.exec(sm_select(Role).where(Role.name == role_name)).one()
        role.export_policy = dataclasses.replace(ExportPolicy.from_json(role.export_policy), **changes).to_json()
        session.add(role)
    from tests.conftest import load_actors

    return load_actors()


def test_csv_has_bom_rfc4180_chinese_and_exactly_the_rows_of_a_direct_query(seeded_actors):
    view = _run(seeded_actors["manager"], _request())
    assert view.status == "done"
    raw = _file(view).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["客户ID", "姓名", "城市", "注册时间", "订单数", "营销同意"]
    expected = _expected()
    assert [(int(r[0]), r[1], r[2], int(r[4])) for r in rows[1:]] == [
        (e.id, e.name, e.city or "", e.order_count) for e in expected
    ]
    assert {r[5] for r in rows[1:]} <= {"是", "否"} and len(rows[1][3]) == 19
    with get_engine().connect() as conn:
        stored = conn.execute(select(C.registered_at).where(C.id == int(rows[1][0]))).scalar_one()
    assert rows[1][3] == to_local(stored.replace(tzinfo=dt.UTC)).strftime("%Y-%m-%d %H:%M:%S")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in rows[1][1])
    assert view.row_count == len(expected) and view.file_sha256 == hashlib.sha256(raw).hexdigest()


def test_xlsx_cells_are_typed_with_frozen_bold_header_and_a_metadata_sheet(seeded_actors):
    view = _run(seeded_actors["manager"], _request(fmt="xlsx", sort_dir="desc"))
    book = openpyxl.load_workbook(_file(view))
    sheet, info = book.worksheets
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.b
    expected = _expected(order=(C.registered_at.desc(), C.id.desc()))
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert len(rows) == len(expected)
    for row, e in zip(rows, expected):
        assert row[0] == e.id and row[1] == e.name and row[4] == e.order_count
        assert isinstance(row[3], dt.datetime) and row[5] in ("是", "否")
    meta = {r[0]: r[1] for r in info.iter_rows(values_only=True)}
    assert meta["导出人"] and meta["行数"] == len(expected) and meta["筛选条件"] == "来源渠道: 微信"


def test_pdf_text_holds_the_chinese_names_of_the_first_rows(seeded_actors):
    view = _run(seeded_actors["manager"], _request(fmt="pdf"))
    reader = PdfReader(_file(view))
    text = reader.pages[0].extract_text()
    for e in _expected()[:3]:
        assert e.name in text
    assert "第 1 页" in text and "导出人" in text
    assert len(reader.pages) >= 2
    assert re.search(rf"第 1 页 / 共\s*{len(reader.pages)}\s*页", text)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "pdf"])
def test_protected_files_refuse_without_password_and_open_with_it(seeded_actors, fmt):
    view = _run(seeded_actors["manager"], _request(fields=["id", "name", "phone", "total_spent"], fmt=fmt), PASSWORD)
    path = _file(view)
    expected_first = _expected()[0].name
    if fmt == "csv":
        assert path.suffix == ".zip"
        with pyzipper.AESZipFile(path) as archive:
            name = archive.namelist()[0]
            with pytest.raises(RuntimeError):
                archive.read(name)
            archive.setpassword(PASSWORD.encode())
            assert expected_first in archive.read(name).decode("utf-8-sig")
        # AES, not the weak ZipCrypto: the standard library cannot read the
        # entry even with the right password (WinZip AES, compression method 99).
        with zipfile.ZipFile(path) as plain_zip, pytest.raises(NotImplementedError):
            plain_zip.read(name, pwd=PASSWORD.encode())
    elif fmt == "xlsx":
        with pytest.raises(zipfile.BadZipFile):  # an OLE container, not a zip
            openpyxl.load_workbook(path)
        office = msoffcrypto.OfficeFile(open(path, "rb"))
        with pytest.raises(msoffcrypto.exceptions.InvalidKeyError):
            office.load_key(password="wrong-password")
            office.decrypt(io.BytesIO())
        office = msoffcrypto.OfficeFile(open(path, "rb"))
        office.load_key(password=PASSWORD)
        out = io.BytesIO()
        office.decrypt(out)
        sheet = openpyxl.load_workbook(out).worksheets[0]
        assert sheet["B2"].value == expected_first
        assert sheet["D2"].value == pytest.approx(_expected()[0].total_spent_cents / 100)
        assert sheet["D2"].number_format == "#,##0.00"
    else:
        reader = PdfReader(path)
        assert reader.is_encrypted
        assert reader.decrypt("wrong-password") == 0
        reader = PdfReader(path)
        assert reader.decrypt(PASSWORD) != 0
        assert expected_first in reader.pages[0].extract_text()


def test_sensitive_fields_require_a_password_that_is_never_stored_or_logged(seeded_actors):
    with pytest.raises(ValidationError):
        export_request.request_export(seeded_actors["manager"], _request(fields=["id", "phone"]), start=False)
    view = _run(seeded_actors["manager"], _request(fields=["id", "phone"]), PASSWORD)
    with read_session() as session:
        job = session.get(ExportJob, view.id)
        assert PASSWORD not in json.dumps(job.model_dump(), default=str)
        assert all(PASSWORD not in e.details for e in session.exec(sm_select(AuditEntry)).all())


def test_formula_injection_is_neutralised_in_csv_and_xlsx(seeded_actors):
    evil = {
        '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
        "+1+1": "'+1+1",
        "-2": "'-2",
        "@SUM(A1)": "'@SUM(A1)",
        "\tx": "'\tx",
    }
    for raw, safe in evil.items():
        assert neutralise(raw) == safe
    first = _expected()[0].id
    with get_engine().begin() as conn:
        conn.execute(update(Customer.__table__).where(C.id == first).values(company="=cmd|' /C calc'!A0"))
    fields = ["id", "company"]
    csv_view = _run(seeded_actors["manager"], _request(fields=fields))
    rows = list(csv.reader(io.StringIO(_file(csv_view).read_text("utf-8-sig"), newline="")))
    assert rows[1] == [str(first), "'=cmd|' /C calc'!A0"]
    xlsx_view = _run(seeded_actors["manager"], _request(fields=fields, fmt="xlsx"))
    cell = openpyxl.load_workbook(_file(xlsx_view)).worksheets[0]["B2"]
    assert cell.value == "'=cmd|' /C calc'!A0" and cell.data_type == "s"


def test_sensitive_values_are_masked_for_a_role_without_view_sensitive(seeded_actors):
    analyst = seeded_actors["analyst"]
    spec = ExportSpec(
        selection=Selection.of_query(ListQuery.from_dict({"sources": ["wechat"]})), fields=("id", "phone", "email")
    )
    rows = list(RowSource(analyst, spec).iter_rows(batch=7))
    assert rows and all("****" in (r[1] or "****") for r in rows)
    full = list(RowSource(seeded_actors["manager"], spec).iter_rows(batch=7))
    assert [r[0] for r in rows] == [r[0] for r in full]
    assert any(r[1] and "****" not in r[1] for r in full)


def test_keyset_batches_give_the_same_rows_as_one_query_whatever_the_batch(seeded_actors):
    spec = ExportSpec(
        selection=Selection.of_query(ListQuery.from_dict({"status": "all"})),
        fields=("id", "last_purchase_at", "tags", "last_order", "conversation_count", "chat_summary"),
        sort_field="last_purchase_at",
        descending=True,
    )
    source = RowSource(seeded_actors["manager"], spec)
    small = list(source.iter_rows(batch=13))
    big = list(source.iter_rows(batch=10_000))
    assert small == big and len(small) == source.count()
    with get_engine().connect() as conn:
        expected = list(
            conn.execute(
                select(C.id)
                .where(C.status.in_(("active", "archived")))
                .order_by(C.last_purchase_at.desc().nulls_last(), C.id.desc())
            ).scalars()
        )
    assert [r[0] for r in small] == expected
    assert any(r[2] for r in small) and any(r[3] for r in small) and any(r[4] for r in small)


def test_analyst_over_policy_requests_are_refused_and_audited(seeded_actors):
    analyst = seeded_actors["analyst"]
    # No date window (analysts may only export the last 366 days) and a sensitive field.
    with pytest.raises(PermissionDenied):
        export_request.request_export(analyst, _request(fields=["id", "phone"]), start=False)
    refused = [e for e in _audit("export.request") if e.result == "refused"]
    assert refused and "export.reason.window" in refused[-1].details and "export.reason.fields" in refused[-1].details
    review = export_request.review(analyst, _request(fields=["id", "phone"]))
    assert not review.allowed and {r[0] for r in review.reasons} >= {
        "export.reason.window",
        "export.reason.fields",
    }
    actors = _set_policy("data_analyst", max_rows=5, window_days=0)
    with pytest.raises(PermissionDenied) as raised:
        export_request.request_export(actors["analyst"], _request(fields=["id", "name"]), start=False)
    assert raised.value.message_key == "export.reason.max_rows"
    with read_session() as session:
        assert session.exec(sm_select(ExportJob)).all() == []


def test_agent_cannot_request_and_pdf_over_the_cap_is_refused(seeded_actors, monkeypatch):
    with pytest.raises(PermissionDenied):
        export_request.request_export(seeded_actors["agent"], _request(), start=False)
    from meiqia_app.config import reload_settings

    monkeypatch.setenv("MEIQIA_EXPORT_PDF_MAX_ROWS", "10")
    reload_settings()
    with pytest.raises(PermissionDenied) as raised:
        export_request.request_export(seeded_actors["manager"], _request(fmt="pdf"), start=False)
    assert raised.value.message_key == "export.reason.pdf_rows"


def test_an_export_needing_approval_waits_until_approved_and_nobody_approves_their_own(seeded_actors):
    actors = _set_policy("data_analyst", approval_over_rows=0, window_days=0)
    analyst, manager = actors["analyst"], actors["manager"]
    pending = export_request.request_export(analyst, _request(), start=False)
    assert pending.status == "pending_approval"
    assert export_run.run_export(pending.id).status == "pending_approval"  # does not run
    assert [p.id for p in export_approval.list_pending(manager)] == [pending.id]
    with pytest.raises(PermissionDenied):
        export_approval.list_pending(analyst)
    with pytest.raises(PermissionDenied):
        export_approval.decide(analyst, pending.id, True)
    approved = export_approval.decide(manager, pending.id, True, "ok for Q4 review")
    assert approved.status == "queued" and approved.approver == "manager"
    assert export_run.wait_for_export(pending.id, 30)
    done = export_info.export_view(analyst, pending.id)
    assert done.status == "done" and done.row_count > 0
    with pytest.raises(Conflict):
        export_approval.decide(manager, pending.id, False)
    assert _audit("export.approve")[-1].target_id == str(pending.id)
    rejected = export_request.request_export(analyst, _request(), start=False)
    assert export_approval.decide(manager, rejected.id, False, "too broad").status == "rejected"
    assert "too broad" in _audit("export.reject")[-1].details


def test_download_tokens_are_single_use_and_bound_to_user_and_session(seeded_actors):
    manager = _with_session(seeded_actors["manager"])
    view = _run(manager, _request())
    token = export_downloads.create_download_token(manager, view.id)
    other_session = _with_session(seeded_actors["manager"])
    with pytest.raises(PermissionDenied):
        export_downloads.claim_download(other_session, token)
    with pytest.raises(PermissionDenied):
        export_downloads.claim_download(None, token)
    got = export_downloads.claim_download(manager, token)
    assert got.path.read_bytes().startswith(b"\xef\xbb\xbf") and got.filename.endswith(".csv")
    with pytest.raises(PermissionDenied) as raised:
        export_downloads.claim_download(manager, token)
    assert raised.value.message_key == "export.reason.token_used"
    analyst = _with_session(seeded_actors["analyst"])
    with pytest.raises(PermissionDenied):
        export_downloads.create_download_token(analyst, view.id)
    downloads = _audit("export.download")
    assert [e.result for e in downloads].count("ok") == 1 and [e.result for e in downloads].count("refused") >= 3


def test_expired_files_are_deleted_and_cannot_be_downloaded(seeded_actors):
    manager = _with_session(seeded_actors["manager"])
    view = _run(manager, _request())
    path = _file(view)
    token = export_downloads.create_download_token(manager, view.id)
    with write_session() as session:
        job = session.get(ExportJob, view.id)
        job.expires_at = utcnow() - dt.timedelta(minutes=1)
        session.add(job)
    assert export_files.purge_expired() == 1
    assert not path.exists()
    with pytest.raises(PermissionDenied):
        export_downloads.claim_download(manager, token)
    assert export_info.export_view(manager, view.id).status == "expired"
    assert [v.status for v in export_history.list_exports(manager)] == ["expired"]


def test_cancel_before_run_and_large_exports_are_flagged(seeded_actors, monkeypatch):
    manager = seeded_actors["manager"]
    view = export_request.request_export(manager, _request(), start=False)
    assert export_approval.cancel_export(manager, view.id).status == "cancelled"
    assert export_run.run_export(view.id).status == "cancelled"
    monkeypatch.setattr(export_info, "LARGE_EXPORT_ROWS", 5)
    flagged = _run(manager, _request())
    entries = [e for e in _audit("export.run") if e.target_id == str(flagged.id)]
    assert entries and entries[0].flagged and "large" in entries[0].details


def test_streaming_xlsx_reads_back_like_the_openpyxl_reference(seeded_actors, tmp_path):
    from meiqia_app.services.exports.writers import ExportMeta, write_xlsx, write_xlsx_openpyxl

    fields = (
        "id",
        "name",
        "birthday",
        "registered_at",
        "last_purchase_at",
        "total_spent",
        "order_count",
        "consent_marketing",
        "tags",
        "company",
        "avg_rating",
    )
    spec = ExportSpec(selection=Selection.of_query(ListQuery.from_dict({"status": "all"})), fields=fields)
    with get_engine().begin() as conn:
        conn.execute(update(Customer.__table__).where(C.id == 1).values(company='A&B <公司> \x01 "x" =1+1'))
    meta = ExportMeta(
        exporter="王经理",
        exported_at=dt.datetime(2026, 11, 1, 9, 30),
        scope_text="全部 & <all>",
        headers=tuple(f"列{f}" for f in fields),
        fields=fields,
        labels={"sheet": "客户", "meta_sheet": "导出信息"},
    )
    fast, reference = tmp_path / "fast.xlsx", tmp_path / "ref.xlsx"
    rows_fast = write_xlsx(fast, meta, RowSource(seeded_actors["manager"], spec).iter_batches(50))
    rows_ref = write_xlsx_openpyxl(reference, meta, RowSource(seeded_actors["manager"], spec).iter_batches(50))
    assert rows_fast == rows_ref > 0
    a, b = openpyxl.load_workbook(fast), openpyxl.load_workbook(reference)
    assert a.sheetnames == b.sheetnames == ["客户", "导出信息"]
    sheet_a, sheet_b = a.worksheets[0], b.worksheets[0]
    assert sheet_a.freeze_panes == "A2" and sheet_a["A1"].font.b
    assert sheet_a.column_dimensions["B"].width == sheet_b.column_dimensions["B"].width
    for row_a, row_b in zip(sheet_a.iter_rows(), sheet_b.iter_rows(), strict=True):
        for cell_a, cell_b in zip(row_a, row_b, strict=True):
            value_a, value_b = cell_a.value, cell_b.value
            if isinstance(value_b, dt.datetime):
                assert abs((value_a - value_b).total_seconds()) < 0.001
            elif isinstance(value_b, float):
                assert value_a == pytest.approx(value_b)
            else:
                assert value_a == value_b, (cell_a.coordinate, value_a, value_b)
            if value_b is not None and not isinstance(value_b, str):
                assert cell_a.number_format == cell_b.number_format or cell_b.number_format == "0"
    company = [r[9] for r in sheet_a.iter_rows(min_row=2, values_only=True) if r[0] == 1][0]
    assert company == 'A&B <公司>  "x" =1+1'
    meta_a = {r[0]: r[1] for r in a.worksheets[1].iter_rows(values_only=True)}
    assert meta_a["exporter"] == "王经理" and meta_a["row_count"] == rows_fast and meta_a["scope"] == "全部 & <all>"


def test_marketing_exports_skip_customers_without_marketing_consent(seeded_actors):
    view = _run(seeded_actors["manager"], _request(fields=["id", "consent_marketing"], purpose="marketing"))
    rows = list(csv.reader(io.StringIO(_file(view).read_text("utf-8-sig"), newline="")))[1:]
    with get_engine().connect() as conn:
        expected = list(
            conn.execute(
                select(C.id)
                .where(C.source == "wechat", C.status == "active", C.consent_marketing.is_(True))
                .order_by(C.id)
            ).scalars()
        )
    assert sorted(int(r[0]) for r in rows) == expected and {r[1] for r in rows} == {"是"}


def test_an_approved_protected_export_waits_for_its_requesters_password(seeded_actors):
    actors = _set_policy("data_analyst", approval_over_rows=0, window_days=0, allowed_fields=("id", "name", "phone"))
    analyst, manager = actors["analyst"], actors["manager"]
    pending = export_request.request_export(analyst, _request(fields=["id", "name"]), password=PASSWORD, start=False)
    approved = export_approval.decide(manager, pending.id, True)
    assert approved.status == "approved" and pending.id not in export_info.RUNS
    with pytest.raises(ValidationError):
        export_approval.start_approved(analyst, pending.id, "short")
    with pytest.raises(NotFound):
        export_approval.start_approved(manager, pending.id, PASSWORD)  # only the requester
    export_approval.start_approved(analyst, pending.id, PASSWORD)
    assert export_run.wait_for_export(pending.id, 30)
    done = export_info.export_view(analyst, pending.id)
    assert done.status == "done" and _file(done).suffix == ".zip"


def test_portability_export_holds_everything_about_one_customer_and_downloads_like_any_export(seeded_actors):
    from meiqia_app.models import Order
    from meiqia_app.services.exports import portability

    manager = _with_session(seeded_actors["manager"])
    with read_session() as session:
        customer_id = session.exec(sm_select(Order.customer_id).limit(1)).first()
    view = portability.export_customer(manager, customer_id, password=PASSWORD)
    assert view.status == "done" and view.protected
    got = export_downloads.claim_download(manager, export_downloads.create_download_token(manager, view.id))
    with pyzipper.AESZipFile(got.path) as archive:
        archive.setpassword(PASSWORD.encode())
        data = json.loads(archive.read("customer.json"))
        book = openpyxl.load_workbook(io.BytesIO(archive.read("customer.xlsx")))
    assert data["customer"]["id"] == customer_id and data["orders"]
    assert all(o["customer_id"] == customer_id for o in data["orders"])
    assert book.sheetnames[:2] == ["customer", "orders"] and book["orders"].max_row == len(data["orders"]) + 1
    assert _audit("export.portability")[-1].target_id == str(customer_id)
    masked = portability.collect(seeded_actors["analyst"], customer_id)
    assert masked["customer"]["total_spent"] == "****"
    assert not masked["customer"]["phone"] or "****" in masked["customer"]["phone"]


def test_a_running_export_stops_at_the_next_batch_when_cancelled_and_leaves_no_file(seeded_actors):
    manager = seeded_actors["manager"]
    view = export_request.request_export(manager, _request(fmt="xlsx"), start=False)
    with write_session() as session:  # as if the person clicked cancel while it ran
        job = session.get(ExportJob, view.id)
        job.cancel_requested = True
        session.add(job)
    assert export_run.run_export(view.id).status == "cancelled"
    assert list(get_settings().exports_dir.iterdir()) == []
    assert [e.target_id for e in _audit("export.cancel")] == [str(view.id)]


def test_rerun_requests_the_same_export_again_under_the_current_policy(seeded_actors):
    manager = seeded_actors["manager"]
    first = _run(manager, _request(fmt="xlsx", sort_dir="desc"))
    again = export_approval.rerun_export(manager, first.id, start=False)
    assert again.id != first.id and again.fields == first.fields and again.format == "xlsx"
    second = export_run.run_export(again.id)
    assert _file(second).read_bytes() != b"" and second.row_count == first.row_count
    with pytest.raises(NotFound):
        export_approval.rerun_export(seeded_actors["analyst"], first.id, start=False)  # not theirs


def test_a_role_limited_to_some_tags_exports_only_those_customers(seeded_actors):
    from meiqia_app.models import TagAssignment

    with read_session() as session:
        tag_id = session.exec(sm_select(TagAssignment.tag_id).limit(1)).first()
        tagged = set(session.exec(sm_select(TagAssignment.customer_id).where(TagAssignment.tag_id == tag_id)).all())
    actors = _set_policy("manager", allowed_tag_ids=(tag_id,))
    view = _run(actors["manager"], _request(fields=["id"], query={"status": "all"}))
    ids = {int(r[0]) for r in list(csv.reader(io.StringIO(_file(view).read_text("utf-8-sig"))))[1:]}
    assert ids and ids <= tagged


def _decrypted(path, password: str) -> bytes:
    import msoffcrypto

    with path.open("rb") as handle:
        office = msoffcrypto.OfficeFile(handle)
        office.load_key(password=password)
        opened = io.BytesIO()
        office.decrypt(opened, verify_integrity=True)  # the data-integrity HMAC must match too
    return opened.getvalue()


def test_protected_xlsx_opens_with_the_password_only(tmp_path):
    from openpyxl import Workbook, load_workbook

    from meiqia_app.services.exports import protect as protection

    plain, locked = tmp_path / "plain.xlsx", tmp_path / "locked.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("客户")
    for i in range(2000):
        sheet.append([i, f"张三{i}", i * 0.5])
    workbook.save(plain)
    protection.protect_xlsx(plain, locked, PASSWORD)
    assert b"PK" not in locked.read_bytes()[:4096] and "张三1".encode() not in locked.read_bytes()
    opened = _decrypted(locked, PASSWORD)
    assert opened == plain.read_bytes()
    rows = list(load_workbook(io.BytesIO(opened), read_only=True)["客户"].iter_rows(values_only=True))
    assert len(rows) == 2000 and rows[1] == (1, "张三1", 0.5)
    with pytest.raises(msoffcrypto.exceptions.InvalidKeyError):
        _decrypted(locked, "not-the-password")
    assert not list(tmp_path.glob(".*package"))  # the temporary encrypted stream is gone


@pytest.mark.parametrize("rows", [0, 1, 10])
def test_a_protected_xlsx_of_a_few_rows_opens_with_the_password(tmp_path, rows):
    """A workbook under 4 KiB (the streaming writer's, a handful of rows) decrypts and opens."""
    from openpyxl import load_workbook

    from meiqia_app.services.exports import protect as protection
    from meiqia_app.services.exports.writers import ExportMeta, write_xlsx

    plain, locked = tmp_path / "few.xlsx", tmp_path / "locked.xlsx"
    meta = ExportMeta("王经理", dt.datetime(2026, 12, 7, 10), "全部客户", ("ID", "姓名"), ("id", "name"))
    write_xlsx(plain, meta, [[[i, f"客户{i}"] for i in range(rows)]])
    assert plain.stat().st_size < 4096
    protection.protect_xlsx(plain, locked, PASSWORD)
    opened = _decrypted(locked, PASSWORD)
    assert opened == plain.read_bytes()
    sheet = load_workbook(io.BytesIO(opened), read_only=True).worksheets[0]
    assert [row for row in sheet.iter_rows(values_only=True)][1:] == [(i, f"客户{i}") for i in range(rows)]


def test_protected_xlsx_is_encrypted_as_a_stream(tmp_path):
    import tracemalloc

    from meiqia_app.services.exports import protect as protection

    plain, locked = tmp_path / "big.xlsx", tmp_path / "locked.xlsx"
    # 9 MB: more FAT sectors than the compound file's header holds (a DIFAT sector).
    # A zip (what an .xlsx is; msoffcrypto checks the decrypted file is one) of random bytes.
    with zipfile.ZipFile(plain, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/blob.bin", os.urandom(9 * 1024 * 1024 + 123))
    tracemalloc.start()
    protection.protect_xlsx(plain, locked, PASSWORD)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # A few buffers, not the file (msoffcrypto's own encrypt held about three times the file).
    assert peak < 4 * 1024 * 1024
    assert _decrypted(locked, PASSWORD) == plain.read_bytes()


def _customer_pdf(tmp_path, lang: str, tag_list: str, rows: int = 90):
    from meiqia_app.i18n import tr
    from meiqia_app.services.exports.writers import ExportMeta, write_pdf

    fields = ("id", "name", "tags", "city", "registered_at", "order_count", "total_spent", "email", "source")
    keys = ("exporter", "exported_at", "scope", "page", "title")
    meta = ExportMeta(
        exporter="王经理",
        exported_at=dt.datetime(2026, 12, 7, 10),
        scope_text="来源渠道: 微信",
        headers=tuple(tr(lang, f"export.field.{f}") for f in fields),
        fields=fields,
        lang=lang,
        labels={key: tr(lang, f"export.meta.{key}") for key in keys},
    )
    data = [
        [
            i,
            f"客户{i}",
            tag_list if i % 3 == 0 else "金卡会员",
            "杭州",
            dt.datetime(2026, 11, 1, 8),
            i,
            12.5,
            "a@b.cn",
            "微信",
        ]
        for i in range(1, rows + 1)
    ]
    path = tmp_path / f"customers-{lang}.pdf"
    write_pdf(path, meta, iter([data]))
    return path, meta


def test_pdf_long_tag_list_wraps_inside_its_column(tmp_path):
    """Every piece of text of the tag column lies between the column's left edge
    and the next column's (the column titles mark where each column begins)."""
    tag_list = "、".join(["高价值客户", "金卡会员", "投诉客户", "待回访", "双十一活动", "直播间粉丝", "老客户推荐"] * 2)
    path, meta = _customer_pdf(tmp_path, "zh", tag_list)
    reader = PdfReader(path)
    tags_title, city_title = meta.headers[2], meta.headers[3]
    wrapped_rows = 0
    for page in reader.pages:
        pieces: list[tuple[float, float, str]] = []

        def visit(text, cm, tm, _font, size, pieces=pieces):
            if text.strip():
                pieces.append((tm[4] * cm[0] + tm[5] * cm[2] + cm[4], size, text.strip()))

        page.extract_text(visitor_text=visit)
        starts = {text: x for x, _size, text in pieces}
        left, right = starts[tags_title], starts[city_title]
        tag_pieces = [(x, size, text) for x, size, text in pieces if "高价值客户" in text or "直播间" in text]
        assert tag_pieces
        for x, size, text in tag_pieces:
            assert x >= left - 0.5, text
            # Chinese characters and "、" are one em wide in the embedded font.
            assert x + len(text) * size <= right, (text, x, right)
        wrapped_rows += sum(1 for _x, _s, text in tag_pieces if text.startswith("高价值客户"))
    # Nothing was cut: the whole list is there, over several lines.
    text = "".join(page.extract_text() for page in reader.pages).replace("\n", "")
    assert tag_list in text
    assert wrapped_rows == 30


@pytest.mark.parametrize(
    "lang,pattern",
    [("zh", r"第 {page} 页 / 共\s*{pages}\s*页"), ("en", r"Page {page} of\s*{pages}\b")],
)
def test_pdf_every_page_says_page_x_of_n(tmp_path, lang, pattern):
    import re

    path, _meta = _customer_pdf(tmp_path, lang, "、".join(["高价值客户"] * 30), rows=150)
    pages = PdfReader(path).pages
    assert len(pages) >= 3
    for number, page in enumerate(pages, start=1):
        assert re.search(pattern.format(page=number, pages=len(pages)), page.extract_text())
