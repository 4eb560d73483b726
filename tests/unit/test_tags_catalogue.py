"""The tag catalogue: CRUD with normalised names, usage, merge, delete, hygiene, bulk jobs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from meiqia_app.db import get_engine
from meiqia_app.models import AuditEntry, Customer, Tag, TagAssignment, TagRule
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags import catalog as tags

C = Customer.__table__.c
TA = TagAssignment.__table__.c


def _assigned(tag_id: int) -> dict[int, str]:
    with get_engine().connect() as conn:
        return dict(conn.execute(select(TA.customer_id, TA.source).where(TA.tag_id == tag_id)).all())


def _audits(action: str) -> list[dict]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(AuditEntry.__table__.c.details).where(AuditEntry.__table__.c.action == action)).all()
    return [json.loads(r[0]) for r in rows]


def _customer_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _assign(customer_id: int, tag_id: int, source: str = "manual", rule_id: int | None = None) -> None:
    with get_engine().begin() as conn:
        conn.execute(
            TagAssignment.__table__.insert().values(
                customer_id=customer_id,
                tag_id=tag_id,
                source=source,
                rule_id=rule_id,
                assigned_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        )


def test_tag_names_are_unique_ignoring_case_and_width(actors):
    manager = actors["manager"]
    tag_id = tags.create_tag(manager, "Vip Gold", "custom", "gold", "big spenders")
    for clash in ("vip gold", "ＶＩＰ　ＧＯＬＤ", "  VIP   gold "):
        with pytest.raises(ValidationError) as caught:
            tags.create_tag(manager, clash)
        assert caught.value.field_errors["name"][0] == "tagadmin.name_taken"
    other = tags.create_tag(manager, "Silver")
    with pytest.raises(ValidationError):
        tags.update_tag(manager, other, "ｖｉｐ gold", "custom", "gray")
    tags.update_tag(manager, tag_id, "VIP Gold", "membership", "amber", "renamed")
    view = next(v for v in tags.list_tags(manager) if v.id == tag_id)
    assert (view.name, view.group, view.color, view.description) == ("VIP Gold", "membership", "amber", "renamed")
    assert _audits("tag.update")[-1]["changes"]["name"] == ["Vip Gold", "VIP Gold"]


def test_tag_form_is_validated_and_needs_tag_manage(actors):
    with pytest.raises(ValidationError) as caught:
        tags.create_tag(actors["manager"], "", "nonsense", "neon", "x" * 300)
    assert set(caught.value.field_errors) == {"name", "group", "color", "description"}
    with pytest.raises(PermissionDenied):
        tags.create_tag(actors["agent"], "mine")


def test_usage_counts_split_manual_and_rule(seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "usage-test")
    a, b, c = _customer_ids(3)
    _assign(a, tag_id)
    _assign(b, tag_id, "rule")
    view = next(v for v in tags.list_tags(manager) if v.id == tag_id)
    assert (view.usage, view.manual, view.by_rule) == (2, 1, 1)
    assert tags.tag_usage(manager, tag_id) == 2


def test_merge_moves_assignments_without_duplicates_and_deletes_the_source(seeded_actors):
    manager = seeded_actors["manager"]
    source = tags.create_tag(manager, "vip-old")
    target = tags.create_tag(manager, "vip-new")
    a, b, c = _customer_ids(3)
    _assign(a, source)  # only source
    _assign(b, source)  # both, source manual, target by rule -> manual
    _assign(b, target, "rule")
    _assign(c, target)  # only target
    with get_engine().begin() as conn:
        conn.execute(
            TagRule.__table__.insert().values(
                name="r",
                tag_id=source,
                match="all",
                conditions="[]",
                mode="add_only",
                enabled=True,
                created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                last_run_summary="{}",
            )
        )
    moved = tags.merge_tags(manager, source, target)
    assert moved == 1
    assert _assigned(target) == {a: "manual", b: "manual", c: "manual"}
    assert _assigned(source) == {}
    with get_engine().connect() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(Tag.__table__).where(Tag.__table__.c.id == source)
            ).scalar_one()
            == 0
        )
        assert conn.execute(
            select(TagRule.__table__.c.tag_id).where(TagRule.__table__.c.name == "r")
        ).scalars().all() == [target]
    entry = _audits("tag.merge")[-1]
    assert entry["moved"] == 1 and entry["already_had"] == 1 and entry["from"] == "vip-old"
    with pytest.raises(ValidationError):
        tags.merge_tags(manager, target, target)


def test_delete_reports_the_affected_customers(seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "to-delete")
    for customer_id in _customer_ids(4):
        _assign(customer_id, tag_id)
    assert tags.tag_usage(manager, tag_id) == 4
    assert tags.delete_tag(manager, tag_id) == 4
    assert _assigned(tag_id) == {}
    assert _audits("tag.delete")[-1]["customers"] == 4
    with pytest.raises(PermissionDenied):
        tags.delete_tag(seeded_actors["agent"], tag_id)


def test_hygiene_finds_unused_stale_and_near_duplicate_tags(seeded_actors):
    manager = seeded_actors["manager"]
    unused = tags.create_tag(manager, "never-used")
    stale = tags.create_tag(manager, "old-campaign")
    _assign(_customer_ids(1)[0], stale)
    with get_engine().begin() as conn:
        conn.execute(
            Tag.__table__.update()
            .where(Tag.__table__.c.id == stale)
            .values(last_assigned_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        )
    tags.create_tag(manager, "高价值")
    tags.create_tag(manager, "高价植")  # same pinyin (gaojiazhi vs gaojiazhi)
    tags.create_tag(manager, "newsletter")
    tags.create_tag(manager, "news-leter")  # a letter and a hyphen apart: a slip of the keyboard
    report = tags.tag_hygiene(manager, idle_days=90, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    assert unused in {v.id for v in report.unused}
    assert stale in {v.id for v in report.stale}
    pairs = {(p.a_name, p.b_name, p.reason) for p in report.near_duplicates}
    assert ("高价值", "高价植", "pinyin") in pairs
    assert ("news-leter", "newsletter", "edit_distance") in pairs or (
        "newsletter",
        "news-leter",
        "edit_distance",
    ) in pairs
    assert tags.edit_distance("kitten", "sitting") == 3


def test_bulk_add_and_remove_over_a_filter_is_one_audited_job(seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "bulk")
    with get_engine().connect() as conn:
        wechat = set(conn.execute(select(C.id).where(C.source == "wechat", C.status == "active")).scalars())
    first = min(wechat)
    _assign(first, tag_id, "rule")  # already has it: not duplicated, counted as unchanged
    selection = Selection.of_query(ListQuery.from_dict({"sources": ["wechat"]}))
    old_batch = tags.BULK_BATCH
    tags.BULK_BATCH = 7
    try:
        result = tags.bulk_tag(manager, selection, tag_id, "add")
    finally:
        tags.BULK_BATCH = old_batch
    assert result.status == "done" and result.changed == len(wechat) - 1
    assigned = _assigned(tag_id)
    assert set(assigned) == wechat
    assert assigned[first] == "rule"
    entries = _audits("tag.bulk_add")
    assert len(entries) == 1 and entries[0]["count"] == len(wechat) - 1

    ticked = sorted(wechat)[:5]
    result = tags.bulk_tag(manager, Selection.of_ids(ticked), tag_id, "remove")
    assert result.changed == 5
    assert set(_assigned(tag_id)) == wechat - set(ticked)
    assert _audits("tag.bulk_remove")[0]["count"] == 5


def test_bulk_job_resumes_from_checkpoint_and_needs_permission(seeded_actors):
    manager = seeded_actors["manager"]
    tag_id = tags.create_tag(manager, "resume")
    selection = Selection.of_query(ListQuery.from_dict({"sources": ["web"]}))
    with get_engine().connect() as conn:
        web = sorted(conn.execute(select(C.id).where(C.source == "web", C.status == "active")).scalars())
    job_id = jobs.create_job(
        manager,
        tags.BULK_JOB_KIND,
        {"tag_id": tag_id, "action": "add", "selection": selection.to_dict()},
        total=len(web),
    )
    from meiqia_app.models import Job

    with get_engine().begin() as conn:
        conn.execute(
            Job.__table__.update()
            .where(Job.__table__.c.id == job_id)
            .values(checkpoint=json.dumps({"after_id": web[9], "changed": 10}), processed=10)
        )
    view = jobs.run_job(job_id)
    assert view.status == "done" and view.result["changed"] == len(web)
    # Only customers after the checkpoint were tagged by the resumed run.
    assert set(_assigned(tag_id)) == set(web[10:])
    with pytest.raises(PermissionDenied):
        tags.start_bulk_tag_job(seeded_actors["analyst"], selection, tag_id, "add")
    with pytest.raises(ValidationError):
        tags.start_bulk_tag_job(manager, selection, tag_id, "explode")


def test_names_that_differ_in_a_meaningful_character_are_not_near_duplicates(seeded_actors):
    pairs = lambda names: {(p.a_name, p.b_name, p.reason) for p in tags.near_duplicates(list(enumerate(names)))}  # noqa: E731
    assert pairs(["金卡会员", "银卡会员"]) == set()  # gold and silver: different tiers
    assert pairs(["新客户", "老客户"]) == set()
    assert pairs(["campaign-2025", "campaign-2026"]) == set()  # different years
    assert pairs(["VIP1", "VIP2"]) == set()
    assert pairs(["高价值", "高价植"]) == {("高价值", "高价植", "pinyin")}  # a homophone typed by mistake
    assert pairs(["newsletter", "newsleter"]) == {("newsletter", "newsleter", "edit_distance")}
    assert pairs(["VIP客户", "VIP-客户"]) == {("VIP客户", "VIP-客户", "edit_distance")}
    # The shipped tags (金卡会员, 银卡会员, 普通会员 …) are not proposed for merging, and each pair shows both counts.
    manager = seeded_actors["manager"]
    report = tags.tag_hygiene(manager, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    assert not {("金卡会员", "银卡会员"), ("银卡会员", "金卡会员")} & {
        (p.a_name, p.b_name) for p in report.near_duplicates
    }
    a = tags.create_tag(manager, "newsletter")
    b = tags.create_tag(manager, "newsleter")
    _assign(_customer_ids(1)[0], a)
    found = tags.tag_hygiene(manager).near_duplicates
    assert [(p.a_usage, p.b_usage) for p in found if {p.a_id, p.b_id} == {a, b}] in ([(1, 0)], [(0, 1)])


def test_merging_two_big_tags_needs_the_typed_name_server_side(seeded_actors):
    manager = seeded_actors["manager"]
    source = tags.create_tag(manager, "大客户A")
    target = tags.create_tag(manager, "大客户B")
    ids = _customer_ids(tags.MERGE_CONFIRM_USAGE + 20)
    for customer_id in ids[: tags.MERGE_CONFIRM_USAGE + 10]:
        _assign(customer_id, source)
    for customer_id in ids[10:]:
        _assign(customer_id, target)
    preview = tags.merge_preview(manager, source, target)
    assert (preview.source_usage, preview.target_usage, preview.both) == (60, 60, 50)
    assert preview.needs_confirm and (preview.source_name, preview.target_name) == ("大客户A", "大客户B")
    # The event handler can be called with any arguments: no confirmation, or the wrong name, merges nothing.
    for typed in ("", "大客户B", "大客户"):
        with pytest.raises(ValidationError) as refused:
            tags.merge_tags(manager, source, target, typed)
        assert refused.value.field_errors["confirm"][0] == "tagadmin.merge_confirm_mismatch"
    assert len(_assigned(source)) == 60 and len(_assigned(target)) == 60
    assert _audits("tag.merge") == []
    # Typed (width and case do not matter, as for tag names), it merges.
    assert tags.merge_tags(manager, source, target, " 大客户Ａ ".replace("Ａ", "A")) == 10
    assert _assigned(source) == {} and len(_assigned(target)) == 70
    # A small tag merges without typing.
    small = tags.create_tag(manager, "小标签")
    _assign(ids[0], small)
    assert not tags.merge_preview(manager, small, target).needs_confirm
    tags.merge_tags(manager, small, target)
    assert _assigned(small) == {}
