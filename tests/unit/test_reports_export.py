"""The dashboard / report views and their XLSX export: same numbers, permissions, audit."""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import AuditEntry
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.reports import dashboard as report_dashboard
from meiqia_app.services.reports import files as report_files
from meiqia_app.services.reports import periods as report_periods
from meiqia_app.services.reports import views as report_views

PARAMS = {"kind": "month", "anchor": "2026-10-15", "granularity": "week"}
SEGMENT = {
    "a_from": "2026-08-01",
    "a_to": "2026-08-31",
    "b_from": "2026-09-01",
    "b_to": "2026-10-31",
    "source": "wechat",
}


def test_dashboard_view_cards_match_the_service(seeded_db, seeded_actors):
    view = report_views.dashboard_view(seeded_actors["manager"], PARAMS)
    board = report_dashboard.dashboard(seeded_actors["manager"], report_periods.make_period("month", "2026-10-15"))
    cards = {c["key"]: c for c in view.cards}
    assert cards["new_customers"]["value"] == f"{board.raw['new_customers']:,}"
    assert cards["new_customers"]["label_zh"] == "新增客户" and cards["new_customers"]["label_en"] == "New customers"
    assert len(view.trend) == report_views.MAX_TREND_BUCKETS["week"]
    assert view.trend[-1]["start"] == "2026-10-26"
    daily = report_views.dashboard_view(seeded_actors["manager"], {**PARAMS, "granularity": "day"})
    assert [p["start"] for p in daily.trend][::30] == ["2026-10-01", "2026-10-31"]
    assert not view.empty


def test_dashboard_xlsx_has_a_sheet_per_table_with_the_page_numbers(seeded_db, seeded_actors):
    manager = seeded_actors["manager"]
    view = report_views.dashboard_view(manager, PARAMS)
    name, data = report_files.export_xlsx(manager, "dashboard", PARAMS, "en")
    assert name.endswith(".xlsx")
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["Summary", "Trend", "Lifecycle", "Sources", "Regions"]
    summary = {row[0]: row for row in book["Summary"].iter_rows(min_row=2, values_only=True)}
    board = report_dashboard.dashboard(manager, report_periods.make_period("month", "2026-10-15"))
    assert summary["New customers"][2] == board.raw["new_customers"]
    assert summary["New customers"][1] == board.raw_previous["new_customers"]
    assert summary["Amount"][2] == pytest.approx(board.raw["amount_cents"] / 100)
    assert summary["Active rate"][2] == pytest.approx(board.raw["active_rate"])
    cards = {c["label_en"]: c for c in view.cards}
    assert f"{summary['Total customers'][2]:,}" == cards["Total customers"]["value"]
    trend = list(book["Trend"].iter_rows(min_row=2, values_only=True))
    assert [r[1] for r in trend] == [p["new_customers"] for p in view.trend]
    sources = {r[0]: r for r in book["Sources"].iter_rows(min_row=2, values_only=True)}
    assert sources["WeChat"][1] == next(s["total"] for s in view.sources if s["key"] == "wechat")
    with read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "report.export")).one()
    assert entry.actor_name == "manager" and '"xlsx"' in entry.details


def test_segment_report_xlsx(seeded_db, seeded_actors):
    analyst = seeded_actors["analyst"]
    view = report_views.segment_report_view(analyst, SEGMENT)
    name, data = report_files.export_xlsx(analyst, "segment", SEGMENT, "zh")
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["周期对比", "留存", "热门商品"]
    comparison = {r[0]: r for r in book["周期对比"].iter_rows(min_row=2, values_only=True)}
    rows = {r["key"]: r for r in view.comparison}
    assert f"{comparison['购买次数'][1]:,}" == rows["orders"]["a"]
    assert f"{comparison['购买次数'][2]:,}" == rows["orders"]["b"]
    cohorts = list(book["留存"].iter_rows(min_row=2, values_only=True))
    assert [r[1] for r in cohorts] == [c["size"] for c in view.cohorts]
    products = list(book["热门商品"].iter_rows(min_row=2, values_only=True))
    assert [r[0] for r in products] == [p["product"] for p in view.products]


@pytest.mark.parametrize("username", ["agent", "senior"])
def test_export_refused_without_permissions(db, actors, username):
    with pytest.raises(PermissionDenied):
        report_files.export_xlsx(actors[username], "dashboard", PARAMS)


def test_bad_parameters_are_refused(db, actors):
    with pytest.raises(ValidationError):
        report_views.dashboard_view(actors["manager"], {"kind": "month", "granularity": "hour"})
    with pytest.raises(ValidationError):
        report_views.segment_report_view(actors["manager"], {**SEGMENT, "lifecycle": "vip"})
    with pytest.raises(ValidationError):
        report_files.export_xlsx(actors["manager"], "everything", PARAMS)


def test_saved_view_is_a_segment(seeded_db, seeded_actors):
    from meiqia_app.services.customers import saved_views
    from meiqia_app.services.customers.query import ListQuery

    manager = seeded_actors["manager"]
    option = saved_views.save_view(manager, "微信客户", ListQuery(sources=("wechat",)))
    by_view = report_views.segment_report_view(manager, {**SEGMENT, "source": "", "view_id": str(option.id)})
    by_filter = report_views.segment_report_view(manager, SEGMENT)
    assert by_view.comparison == by_filter.comparison


def _with_session(actor):
    import dataclasses
    import datetime as dt
    import hashlib

    from meiqia_app.db import write_session
    from meiqia_app.models import UserSession
    from meiqia_app.timeutil import utcnow

    with write_session() as session:
        row = UserSession(
            token_hash=hashlib.sha256(f"{actor.username}{utcnow()}".encode()).hexdigest(),
            user_id=actor.user_id,
            expires_at=utcnow() + dt.timedelta(hours=1),
        )
        session.add(row)
        session.flush()
        return dataclasses.replace(actor, session_id=row.id)


def _in_order(text: str, cells: list[str]) -> bool:
    """The cells appear as one table row (consecutive lines of the extracted text)."""
    lines = [line.strip() for line in text.splitlines()]
    return any(lines[i : i + len(cells)] == cells for i in range(len(lines)))


def _pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)


def test_dashboard_pdf_has_every_table_with_the_page_figures_and_downloads_once(seeded_db, seeded_actors):
    from meiqia_app.models import ExportJob
    from meiqia_app.services.exports import downloads as export_downloads

    manager = _with_session(seeded_actors["manager"])
    view = report_views.dashboard_view(manager, PARAMS)
    export_id = report_files.export_pdf(manager, "dashboard", PARAMS, "zh")
    with read_session() as session:
        job = session.get(ExportJob, export_id)
        assert (job.kind, job.format, job.status, job.requested_by_id) == ("report", "pdf", "done", manager.user_id)
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "report.export")).one()
    assert '"pdf"' in entry.details and job.file_sha256 in entry.details
    token = export_downloads.create_download_token(manager, export_id)
    found = export_downloads.claim_download(manager, token)
    assert found.media_type == "application/pdf"
    text = _pdf_text(found.path)
    compact = text.replace(" ", "")
    for title in ("概览", "趋势", "生命周期", "来源渠道", "地区", "新增客户", "客户总数", "微信"):
        assert title in compact, title
    for card in view.cards:
        assert card["value"].replace(" ", "") in compact, card
    for row in view.sources:
        assert _in_order(text, [row["label_zh"], row["total_text"], row["new_text"], row["new_previous_text"]]), row
    for point in view.trend:
        assert point["new_customers_text"] in compact and point["amount_text"] in compact
    with pytest.raises(PermissionDenied):
        export_downloads.claim_download(manager, token)  # single use


def test_segment_pdf_has_comparison_cohorts_and_products(seeded_db, seeded_actors):
    analyst = seeded_actors["analyst"]
    view = report_views.segment_report_view(analyst, SEGMENT)
    export_id = report_files.export_pdf(analyst, "segment", SEGMENT, "en")
    from meiqia_app.config import get_settings
    from meiqia_app.models import ExportJob

    with read_session() as session:
        job = session.get(ExportJob, export_id)
    text = _pdf_text(get_settings().exports_dir / job.file_name)
    for title in ("Comparison", "Cohorts", "Top products", "New customers"):
        assert title in text
    for row in view.comparison:
        assert _in_order(text, [row["label_en"], row["a"], row["b"], row["change"]]), row
    for cohort in view.cohorts:
        assert _in_order(text, [cohort["month"], cohort["size_text"], cohort["r1"], cohort["r3"], cohort["r6"]])
    for product in view.products:
        assert product["product"][:6] in text and product["amount_text"] in text


@pytest.mark.parametrize("username", ["agent", "senior"])
def test_pdf_export_refused_without_permissions(db, actors, username):
    with pytest.raises(PermissionDenied):
        report_files.export_pdf(actors[username], "dashboard", PARAMS)
    from meiqia_app.models import ExportJob

    with read_session() as session:
        assert session.exec(select(ExportJob)).first() is None


def _pages(path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() for page in PdfReader(str(path)).pages]


def _export_file(export_id: int):
    from meiqia_app.config import get_settings
    from meiqia_app.models import ExportJob

    with read_session() as session:
        return get_settings().exports_dir / session.get(ExportJob, export_id).file_name


def test_report_pdf_header_names_the_segment_readably_and_every_page_says_of_n(seeded_db, seeded_actors):
    import re

    analyst = seeded_actors["analyst"]
    params = {**SEGMENT, "source": "", "lifecycle": "active"}
    zh = _pages(_export_file(report_files.export_pdf(analyst, "segment", params, "zh")))
    assert "客户群: 生命周期 = 活跃" in zh[0] and "lifecycle=active" not in "".join(zh)
    en = _pages(_export_file(report_files.export_pdf(analyst, "segment", {**params, "source": "wechat"}, "en")))
    assert "Segment: Lifecycle = Active · Source = WeChat" in en[0]
    everyone = _pages(_export_file(report_files.export_pdf(analyst, "segment", SEGMENT | {"source": ""}, "en")))
    assert "Segment: All customers" in everyone[0]
    # "第 X 页 / 共 N 页" / "Page X of N" on every page (the dashboard has several).
    dashboard = _pages(_export_file(report_files.export_pdf(analyst, "dashboard", PARAMS, "zh")))
    assert len(dashboard) >= 2
    for number, text in enumerate(dashboard, start=1):
        assert re.search(rf"第 {number} 页 / 共\s*{len(dashboard)}\s*页", text), text[-80:]
    for number, text in enumerate(en, start=1):
        assert re.search(rf"Page {number} of\s*{len(en)}\b", text), text[-80:]


def test_dashboard_pdf_says_what_is_compared(seeded_db, seeded_actors):
    import datetime as dt

    manager = seeded_actors["manager"]
    now = dt.datetime(2026, 10, 7, 3, tzinfo=dt.UTC)
    text = "".join(_pages(_export_file(report_files.export_pdf(manager, "dashboard", {"kind": "month"}, "zh", now))))
    assert "本月截至今天：2026-10-01 ~ 2026-10-07（7 天），对比上月同期 2026-09-01 ~ 2026-09-07" in text
