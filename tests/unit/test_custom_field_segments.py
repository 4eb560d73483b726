"""Segment reports by custom fields (issue 23): group a segment by a single select,
multi select or yes/no field (labels, counts that match the documents), filter a
segment by one (every figure follows), within the actor's scope; a sensitive field
is refused (and audited) for a role that sees it masked."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select, text

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.errors import PermissionDenied
from meiqia_app.services.platform import jobs
from meiqia_app.services.reports import custom_segments
from meiqia_app.services.reports import views as report_views
from tests.conftest import built_once

C = Customer.__table__.c
SEGMENT = {"a_from": "2026-08-01", "a_to": "2026-08-31", "b_from": "2026-09-01", "b_to": "2026-10-31"}


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id: jobs.run_job(job_id))


def _active(n: int, source: str | None = None) -> list[int]:
    statement = select(C.id).where(C.status == "active").order_by(C.id).limit(n)
    if source:
        statement = statement.where(C.source == source)
    with get_engine().connect() as conn:
        return list(conn.execute(statement).scalars())


def _set(actor, customer_id: int, values: dict) -> None:
    with read_session() as session:
        version = session.get(Customer, customer_id).version
    customer_edit.update_customer(actor, customer_id, version, {"custom_fields": values})


def _documents() -> dict[int, dict]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(C.id, C.custom_fields, C.source).where(C.status == "active")).all()
    return {cid: ((doc if isinstance(doc, dict) else json.loads(doc or "{}")), source) for cid, doc, source in rows}


@built_once("seeded_db")
def world(actors):
    admin = actors["admin"]
    custom_fields.create_field(
        admin,
        {
            "key": "member_source",
            "label_zh": "会员来源",
            "label_en": "Member source",
            "field_type": "single_select",
            "options": "官网 / Website\n门店 / Store\n老客户推荐 / Referral",
        },
    )
    custom_fields.create_field(
        admin,
        {
            "key": "hobbies",
            "label_zh": "爱好",
            "field_type": "multi_select",
            "options": "跑步 / Running\n读书 / Reading",
        },
    )
    custom_fields.create_field(admin, {"key": "vip_flag", "label_zh": "重点客户", "field_type": "yes_no"})
    ids = _active(30)
    for n, customer_id in enumerate(ids):
        values = {"member_source": ["官网", "门店", "老客户推荐"][n % 3] if n % 5 else None}
        if n % 2:
            values["hobbies"] = ["跑步", "读书"] if n % 3 == 0 else ["读书"]
        if n % 4 == 0:
            values["vip_flag"] = "是"
        _set(admin, customer_id, values)
    return {"admin": admin, "ids": ids}


def _by_value(groups) -> dict[str, tuple[str, int]]:
    return {g.value: (g.label, g.customers) for g in groups}


def test_a_segment_grouped_by_a_select_counts_each_option_by_its_label(world, seeded_actors):
    manager = seeded_actors["manager"]
    documents = _documents()
    groups = custom_segments.group_counts(manager, None, "member_source", "en")
    expected = {o: sum(1 for d, _s in documents.values() if d.get("member_source") == o) for o in ("o1", "o2", "o3")}
    assert _by_value(groups) == {
        "o1": ("Website", expected["o1"]),
        "o2": ("Store", expected["o2"]),
        "o3": ("Referral", expected["o3"]),
        custom_segments.EMPTY: ("(empty)", len(documents) - sum(expected.values())),
    }
    assert all(expected.values())
    # within a segment (source = wechat)
    segment, _ = report_views.segment_from_params(manager, {"source": "wechat"})
    wechat = custom_segments.group_counts(manager, segment, "member_source")
    assert {g.value: g.customers for g in wechat}["o1"] == sum(
        1 for d, s in documents.values() if d.get("member_source") == "o1" and s == "wechat"
    )
    # a multi select counts each option held, and yes / no both ways
    hobbies = {g.value: g.customers for g in custom_segments.group_counts(manager, None, "hobbies")}
    assert hobbies["o2"] == sum(1 for d, _s in documents.values() if "o2" in (d.get("hobbies") or []))
    assert hobbies["o1"] == sum(1 for d, _s in documents.values() if "o1" in (d.get("hobbies") or []))
    assert hobbies[custom_segments.EMPTY] == sum(1 for d, _s in documents.values() if not d.get("hobbies"))
    vip = _by_value(custom_segments.group_counts(manager, None, "vip_flag"))
    assert vip["true"] == ("是", sum(1 for d, _s in documents.values() if d.get("vip_flag") is True))


def test_the_segment_report_shows_the_groups_and_a_custom_filter_narrows_every_figure(world, seeded_actors):
    manager = seeded_actors["manager"]
    view = report_views.segment_report_view(manager, {**SEGMENT, "group_by": "member_source"}, lang="zh")
    assert view.group_label == "会员来源"
    assert [g["label"] for g in view.groups] == ["官网", "门店", "老客户推荐", "（空）"]
    narrowed = report_views.segment_report_view(
        manager, {**SEGMENT, "cf_key": "member_source", "cf_value": "o2", "group_by": "member_source"}
    )
    counts = {g["value"]: g["customers"] for g in narrowed.groups}
    assert counts["o2"] > 0 and counts["o1"] == counts["o3"] == counts[custom_segments.EMPTY] == 0
    assert narrowed.segment == "cf.member_source=o2"
    assert report_views.segment_text(manager, {"cf_key": "member_source", "cf_value": "o2"}, "en") == (
        "Member source = Store"
    )
    # the figures are the narrowed segment's (new customers over both periods ≤ the segment's size)
    total_new = sum(int(str(r["b"]).replace(",", "") or 0) for r in narrowed.comparison if r["key"] == "new_customers")
    assert total_new <= counts["o2"]


def test_groups_respect_the_actors_scope(world, seeded_actors):
    agent = seeded_actors["agent"]
    with get_engine().begin() as conn:
        # give the agent two of the customers; the agent's role sees its own and the pool
        owned = world["ids"][:2]
        conn.execute(
            text("UPDATE customer SET owner_id = :u WHERE id IN (:a, :b)"),
            {"u": agent.user_id, "a": owned[0], "b": owned[1]},
        )
        others = world["ids"][2:]
        conn.execute(
            text(f"UPDATE customer SET owner_id = :u WHERE id IN ({','.join(map(str, others))})"),
            {"u": seeded_actors["manager"].user_id},
        )
    agent_with_reports = dataclasses.replace(agent, permissions=frozenset(agent.permissions | {"report.view"}))
    mine = custom_segments.group_counts(agent_with_reports, None, "member_source")
    everyone = custom_segments.group_counts(seeded_actors["manager"], None, "member_source")
    held = sum(g.customers for g in mine if g.value != custom_segments.EMPTY)
    assert held < sum(g.customers for g in everyone if g.value != custom_segments.EMPTY)


def test_a_sensitive_field_is_refused_and_audited_for_a_role_that_sees_it_masked(world, seeded_actors):
    admin, manager = world["admin"], seeded_actors["manager"]
    custom_fields.create_field(
        admin, {"key": "risk_level", "label_zh": "风险", "field_type": "yes_no", "sensitive": "true"}
    )
    masked = dataclasses.replace(manager, permissions=frozenset(manager.permissions - {"customer.view_sensitive"}))
    assert "risk_level" not in {f.key for f in custom_segments.groupable_fields(masked)}
    assert "risk_level" in {f.key for f in custom_segments.groupable_fields(manager)}
    with pytest.raises(PermissionDenied):
        custom_segments.group_counts(masked, None, "risk_level")
    with pytest.raises(PermissionDenied):
        report_views.segment_report_view(masked, {**SEGMENT, "cf_key": "risk_level", "cf_value": "true"})
    with read_session() as session:
        refused = (
            session.execute(
                select(AuditEntry).where(AuditEntry.action == "report.segment", AuditEntry.result == "refused")
            )
            .scalars()
            .all()
        )
    assert len(refused) == 2 and all("cf.risk_level" in e.details for e in refused)
