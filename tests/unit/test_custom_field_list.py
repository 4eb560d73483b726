"""Custom fields on the customer list (issue 23): filters per type, the sort with keyset pages,
columns masked for the actor, the masked-field rule, fields retired or deleted since a query was
made, saved views across a label rename and a delete, and the bulk edit job.

Dialect-neutral: ``make test-pg`` runs it on PostgreSQL too (the filters and sorts are SQL that
differs per database: json_extract vs ->>, partial indexes on SQLite only)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update
from sqlmodel import select as sm_select

from meiqia_app.db import get_engine, read_session
from meiqia_app.models import AuditEntry, Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.customers import bulk_edit, list_fields, saved_views
from meiqia_app.services.customers import edit as customer_edit
from meiqia_app.services.customers import listing as customer_list
from meiqia_app.services.customers.masking import MASK
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import Selection
from meiqia_app.services.errors import NotFound, PermissionDenied, ValidationError
from meiqia_app.services.platform import jobs
from tests.conftest import built_once

C = Customer.__table__.c


@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    monkeypatch.setattr(jobs, "start_in_background", lambda job_id, memory=None: jobs.run_job(job_id, memory))


def _define(admin, key: str, field_type: str, options: str = "", **extra) -> int:
    data = {"key": key, "label_zh": f"字段{key}", "label_en": f"Field {key}", "field_type": field_type, **extra}
    if options:
        data["options"] = options
    return custom_fields.create_field(admin, data).field_id


def _field(admin, key: str):
    return next(f for f in custom_fields.list_fields(admin) if f.key == key)


def _active_ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _save(actor, customer_id: int, custom: dict) -> None:
    with read_session() as session:
        version = session.get(Customer, customer_id).version
    customer_edit.update_customer(actor, customer_id, version, {"custom_fields": custom})


def _document(customer_id: int) -> dict:
    with get_engine().connect() as conn:
        return conn.execute(select(C.custom_fields).where(C.id == customer_id)).scalar_one() or {}


def _query(*filters, **extra) -> ListQuery:
    return ListQuery.from_dict({"custom_filters": [{"key": k, "op": op, "value": v} for k, op, v in filters], **extra})


def _all_ids(actor, query: ListQuery, page_size: int = 100, **kwargs) -> list[int]:
    """Every matching id in the list's order, page after page (the keyset cursors)."""
    found: list[int] = []
    cursor = ""
    while True:
        page = customer_list.list_customers(actor, query, cursor, "next", page_size, **kwargs)
        found += [row.id for row in page.rows]
        if not page.next_cursor:
            return found
        cursor = page.next_cursor


def _audits(action: str) -> list[AuditEntry]:
    with read_session() as session:
        entries = session.exec(sm_select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [dataclass_like(e) for e in entries]


class dataclass_like:  # noqa: N801 - a detached copy of an audit row, details parsed
    def __init__(self, entry: AuditEntry) -> None:
        self.result = entry.result
        self.details = json.loads(entry.details or "{}")


@built_once("seeded_db")
def filled(actors):
    """Six customers with values; the other active customers have none."""
    admin = actors["admin"]
    _define(admin, "source2", "single_select", "官网\n门店\n推荐", shown_in_list=True)
    _define(admin, "channels", "multi_select", "微信\n电话\n邮件")
    _define(admin, "points", "number")
    _define(admin, "spent2", "money")
    _define(admin, "rate", "percent")
    _define(admin, "joined", "date")
    _define(admin, "seen_at", "datetime")
    _define(admin, "vip", "yes_no")
    _define(admin, "nick", "text")
    _define(admin, "id_number", "text", sensitive=True)
    ids = _active_ids(6)
    rows = [
        {"source2": "官网", "channels": ["微信"], "points": 10, "spent2": "5", "joined": "2026-01-01", "vip": "是"},
        {"source2": "门店", "channels": ["电话", "邮件"], "points": 250, "spent2": "100.5", "rate": "20"},
        {"source2": "门店", "points": -3, "spent2": "0", "vip": "否", "nick": "阿明", "id_number": "X1"},
        {"source2": "推荐", "channels": ["邮件"], "points": 7.5, "seen_at": "2026-03-05T23:30", "rate": "5"},
        {"seen_at": "2026-03-06T00:30", "nick": "小红", "joined": "2026-02-01"},
        {},
    ]
    for customer_id, row in zip(ids, rows, strict=True):
        if row:
            _save(admin, customer_id, row)
    return admin, ids


# --- filters per type, through the list's pages and counts ------------------------------------------


@pytest.mark.parametrize(
    ("key", "op", "value", "expected"),
    [
        ("source2", "equals", "门店", "bc"),
        ("source2", "equals", "o1", "a"),
        ("source2", "any_of", ["官网", "推荐"], "ad"),
        ("channels", "any_of", ["邮件"], "bd"),
        ("points", "range", [0, 100], "ad"),
        ("points", "range", ["8", None], "ab"),
        ("points", "equals", "250", "b"),
        ("spent2", "range", ["1", "100.5"], "ab"),
        ("rate", "range", ["10", ""], "b"),
        ("joined", "range", ["2026-01-15", "2026-12-31"], "e"),
        ("joined", "equals", "2026-01-01", "a"),
        ("seen_at", "range", ["2026-03-05", "2026-03-05"], "d"),
        ("vip", "equals", "true", "a"),
        ("vip", "equals", "false", "c"),
        ("nick", "equals", "阿明", "c"),
        ("nick", "any_of", ["阿明", "小红"], "ce"),
    ],
)
def test_each_type_filters_the_list(filled, key, op, value, expected):
    admin, ids = filled
    wanted = {ids["abcdef".index(letter)] for letter in expected}
    query = _query((key, op, value))
    assert set(_all_ids(admin, query)) == wanted
    assert customer_list.count_customers(admin, query, exact=True).value == len(wanted)


def test_empty_and_not_empty_split_the_list(filled):
    admin, (a, b, c, d, e, f) = filled
    total = customer_list.count_customers(admin, ListQuery(), exact=True).value
    not_empty = set(_all_ids(admin, _query(("source2", "not_empty", None))))
    assert not_empty == {a, b, c, d}
    assert customer_list.count_customers(admin, _query(("source2", "empty", None)), exact=True).value == total - 4
    assert {a, b, c, d} & set(_all_ids(admin, _query(("channels", "empty", None)))) == {c}


def test_two_custom_filters_and_a_built_in_one_combine(filled):
    admin, (a, b, c, d, e, f) = filled
    query = _query(("source2", "equals", "门店"), ("points", "range", [0, None]))
    assert _all_ids(admin, query) == [b]
    assert _all_ids(admin, ListQuery.from_dict({**query.to_dict(), "status": "archived"})) == []


@pytest.mark.parametrize(
    "custom_filters",
    [
        [{"key": "Bad-Key", "op": "equals", "value": "x"}],
        [{"key": "points", "op": "like", "value": "x"}],
        [{"key": "points", "op": "range", "value": "1-2"}],
        [{"key": "points", "op": "range", "value": [None, ""]}],
        [{"key": "points", "op": "equals", "value": {"$gt": 1}}],
        [{"key": "points", "op": "equals", "value": ""}],
        [{"key": "points", "op": "any_of", "value": list(range(60))}],
        [{"key": f"k{i}x", "op": "empty"} for i in range(11)],
        "points=1",
        [["points", "equals", 1]],
    ],
)
def test_malformed_custom_filters_are_refused_when_the_query_is_built(seeded_db, custom_filters):
    with pytest.raises(ValidationError):
        ListQuery.from_dict({"custom_filters": custom_filters})


@pytest.mark.parametrize(
    ("key", "op", "value", "error"),
    [
        ("no_such", "equals", "x", "error.cf_unknown_field"),
        ("points", "any_of", [1], "error.cf_operator"),
        ("channels", "equals", "微信", "error.cf_operator"),
        ("points", "equals", "many", "error.cf_number"),
        ("source2", "equals", "电视", "error.cf_option"),
        ("nick", "range", ["a", "b"], "error.cf_operator"),
    ],
)
def test_well_formed_filters_the_field_does_not_allow_get_a_clear_message(filled, key, op, value, error):
    admin, _ids = filled
    query = _query((key, op, value))
    with pytest.raises(ValidationError) as caught:
        list_fields.check(list_fields.CustomerAccess(admin), query)
    assert next(iter(caught.value.field_errors.values()))[0] == error


# --- the sort ------------------------------------------------------------------------------------------


def _expected_order(admin, key: str, descending: bool) -> list[int]:
    """Every active customer by (value, [last active,] id), empty last when descending."""
    with get_engine().connect() as conn:
        rows = conn.execute(select(C.id, C.custom_fields, C.last_active_at).where(C.status == "active")).all()
    field = list_fields.custom_field_catalog.field(key)
    tail = list_fields.has_activity_tail(field)

    def sort_key(row):
        value = (row.custom_fields or {}).get(key)
        return (row.last_active_at, row.id) if tail else (row.id,), value

    present = [r for r in rows if (r.custom_fields or {}).get(key) is not None]
    empty = [r for r in rows if (r.custom_fields or {}).get(key) is None]
    present.sort(key=lambda r: (sort_key(r)[1], *sort_key(r)[0]), reverse=descending)
    empty.sort(key=lambda r: sort_key(r)[0], reverse=descending)
    ordered = present + empty if descending else empty + present
    return [r.id for r in ordered]


@pytest.mark.parametrize(("key", "direction"), [("points", "desc"), ("points", "asc"), ("source2", "desc")])
def test_sort_by_a_custom_field_walks_every_page_in_order(filled, key, direction):
    admin, _ids = filled
    query = ListQuery.from_dict({"sort": f"cf.{key}", "direction": direction})
    walked = _all_ids(admin, query, page_size=20)
    assert walked == _expected_order(admin, key, direction == "desc")
    # Back one page from the second: the first page again.
    first = customer_list.list_customers(admin, query, "", "next", 20)
    second = customer_list.list_customers(admin, query, first.next_cursor, "next", 20)
    back = customer_list.list_customers(admin, query, second.prev_cursor, "prev", 20)
    assert [r.id for r in back.rows] == [r.id for r in first.rows]


def test_a_text_field_is_not_sortable_and_a_crafted_cursor_is_refused(filled):
    admin, _ids = filled
    with pytest.raises(ValidationError):
        customer_list.list_customers(admin, ListQuery.from_dict({"sort": "cf.nick"}))
    query = ListQuery.from_dict({"sort": "cf.points"})
    with pytest.raises(ValidationError):
        customer_list.list_customers(admin, query, "bm90LWpzb24", "next", 20)
    with pytest.raises(ValidationError):
        ListQuery.from_dict({"sort": "cf.Bad Key"})


# --- columns and masking --------------------------------------------------------------------------------


def test_custom_columns_show_values_masked_like_the_detail_page_and_defaults(filled, seeded_actors):
    admin, (a, b, c, d, e, f) = filled
    manager, agent = seeded_actors["manager"], seeded_actors["agent"]
    _define(admin, "level", "single_select", "普通\n金卡", default="普通")
    names = ["cf.source2", "cf.id_number", "cf.level", "cf.gone"]
    query = _query(("source2", "equals", "门店"))
    by_id = {row.id: row for row in customer_list.list_customers(manager, query, custom_columns=names).rows}
    assert [(x.name, x.value) for x in by_id[c].custom] == [
        ("cf.source2", "门店"),
        ("cf.id_number", "X1"),
        ("cf.level", "普通"),  # the default, had without being written
    ]
    assert [x.label for x in by_id[c].custom] == ["字段source2", "字段id_number", "字段level"]
    english = customer_list.list_customers(manager, query, custom_columns=names, lang="en").rows
    assert english[0].custom[0].label == "Field source2"
    # The agent sees the sensitive value masked (for the rows it may reach).
    _save(admin, a, {"id_number": "Y2"})
    for row in customer_list.list_customers(agent, ListQuery(), custom_columns=names, page_size=100).rows:
        assert row.custom[1].value in (MASK, "")
        if row.id == a:
            assert row.custom[1].value == MASK


def test_the_column_picker_offers_active_fields_by_label_and_the_defaults(filled, seeded_actors):
    admin, _ids = filled
    agent = seeded_actors["agent"]
    options = {o.name: o for o in list_fields.column_options(list_fields.CustomerAccess(agent), "en")}
    assert options["cf.source2"].label == "Field source2" and options["cf.source2"].shown_by_default
    assert [o.label for o in options["cf.source2"].options] == ["官网", "门店", "推荐"]
    assert not options["cf.id_number"].filterable and not options["cf.id_number"].sortable
    assert options["cf.points"].operators == ["equals", "range", "empty", "not_empty"]
    assert "cf.source2" in saved_views.default_columns() and "cf.points" not in saved_views.default_columns()
    custom_fields.retire_field(admin, _field(admin, "nick").id, _field(admin, "nick").version)
    assert "cf.nick" not in {o.name for o in list_fields.column_options(list_fields.CustomerAccess(admin))}


def test_a_role_that_sees_a_field_masked_cannot_filter_or_sort_by_it(filled, seeded_actors):
    """The masked-search rule (issue 19): each answer would narrow the hidden value down."""
    agent = seeded_actors["agent"]
    before = len([e for e in _audits("customer.list") if e.result == "refused"])
    with pytest.raises(PermissionDenied):
        customer_list.list_customers(agent, _query(("id_number", "equals", "X1")))
    with pytest.raises(PermissionDenied):
        customer_list.count_customers(agent, _query(("id_number", "not_empty", None)), exact=True)
    with pytest.raises(PermissionDenied):
        customer_list.list_customers(agent, ListQuery.from_dict({"sort": "cf.id_number"}))
    refusals = [e for e in _audits("customer.list") if e.result == "refused"]
    assert len(refusals) - before >= 2
    assert "cf.id_number" in str(refusals[-1].details)


# --- fields retired or deleted since --------------------------------------------------------------------


def test_a_retired_or_deleted_field_in_a_query_is_ignored_and_named(filled):
    admin, (a, b, c, d, e, f) = filled
    query = _query(("source2", "equals", "门店"), ("points", "range", [0, None]))
    query = ListQuery.from_dict({**query.to_dict(), "sort": "cf.points"})
    points = _field(admin, "points")
    custom_fields.retire_field(admin, points.id, points.version)
    page = customer_list.list_customers(admin, query, page_size=100)
    assert {b, c} <= {row.id for row in page.rows} and page.ignored_fields == ["字段points"]
    assert customer_list.count_customers(admin, query, exact=True).value == 2
    custom_fields.delete_field(admin, points.id, "points")
    page = customer_list.list_customers(admin, query, page_size=100, lang="en")
    assert page.ignored_fields == ["a deleted field"]


# --- saved views ---------------------------------------------------------------------------------------


def test_a_saved_view_keeps_working_after_a_label_rename_and_loads_without_a_deleted_field(filled):
    admin, (a, b, c, d, e, f) = filled
    query = _query(("source2", "equals", "门店"), ("vip", "equals", "false"))
    view = saved_views.save_view(admin, "门店客户", query, columns=["name", "cf.source2", "cf.vip", "cf.nope"])
    source = _field(admin, "source2")
    custom_fields.update_field(admin, source.id, source.version, {"label_zh": "会员来源渠道"})
    setup = saved_views.load_view_details(admin, view.id)
    assert setup.columns[-2:] == ["cf.source2", "cf.vip"] and setup.ignored_fields == ()
    assert _all_ids(admin, setup.query) == [c]
    row = customer_list.list_customers(admin, setup.query, custom_columns=setup.columns).rows[0]
    assert row.custom[0].label == "会员来源渠道"
    vip = _field(admin, "vip")
    custom_fields.delete_field(admin, vip.id, "vip")
    setup = saved_views.load_view_details(admin, view.id, "en")
    assert setup.ignored_fields == ("a deleted field",)
    assert "cf.vip" not in setup.columns and [f.key for f in setup.query.custom_filters] == ["source2"]
    assert set(_all_ids(admin, setup.query)) == {b, c}


# --- bulk edit -----------------------------------------------------------------------------------------


def test_bulk_edit_sets_a_custom_field_on_ticked_rows_with_audit_and_versions(filled, seeded_actors):
    admin, (a, b, c, d, e, f) = filled
    manager = seeded_actors["manager"]
    selection = Selection.of_ids([a, b, e], status="active")
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "cf.source2", "推荐", confirm="2")
    with read_session() as session:
        versions = {i: session.get(Customer, i).version for i in (a, b, c)}
    result = bulk_edit.bulk_edit(manager, selection, "cf.source2", "推荐", confirm="3")
    assert result.status == "done" and result.changed == 3
    assert [_document(i).get("source2") for i in (a, b, e)] == ["o3", "o3", "o3"]
    assert _document(b)["points"] == 250 and _document(c)["source2"] == "o2"  # other keys, other rows kept
    with read_session() as session:
        assert session.get(Customer, a).version == versions[a] + 1
        assert session.get(Customer, c).version == versions[c]
    entry = _audits("customer.bulk_edit")[-1]
    assert entry.details["field"] == "cf.source2" and entry.details["count"] == 3
    assert entry.details["value"] == "推荐"
    # Again: nobody changes (they hold the value), nothing is written twice.
    assert bulk_edit.bulk_edit(manager, selection, "cf.source2", "o3", confirm="3").changed == 0


def test_bulk_edit_of_all_matching_and_of_a_built_in_field(filled, seeded_actors):
    admin, (a, b, c, d, e, f) = filled
    manager = seeded_actors["manager"]
    selection = Selection.of_query(_query(("source2", "equals", "门店")))
    result = bulk_edit.bulk_edit(manager, selection, "city", "杭州", confirm="2")
    assert result.changed == 2
    with get_engine().connect() as conn:
        cities = dict(conn.execute(select(C.id, C.city).where(C.id.in_([b, c]))).all())
    assert cities == {b: "杭州", c: "杭州"}
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "source", "tv", confirm="2")
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "membership_tier", "gold", confirm="2")  # computed
    cleared = bulk_edit.bulk_edit(manager, selection, "cf.points", "", confirm="2")
    assert cleared.changed == 2 and "points" not in _document(b) and "points" not in _document(c)
    money = bulk_edit.bulk_edit(manager, Selection.of_ids([a]), "cf.spent2", "12.3", confirm="1")
    assert money.changed == 1 and _document(a)["spent2"] == 1230
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "cf.points", "many", confirm="2")
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "phone", "13800000000", confirm="2")  # never in bulk
    with pytest.raises(ValidationError):
        bulk_edit.bulk_edit(manager, selection, "cf.no_such", "1", confirm="2")


def test_bulk_edit_is_refused_without_the_edit_permission(filled, seeded_actors):
    admin, (a, *_rest) = filled
    viewer = next(
        actor
        for actor in seeded_actors.values()
        if actor.can("customer.view") and not actor.can("customer.edit") and actor.user_id is not None
    )
    with pytest.raises(PermissionDenied):
        bulk_edit.bulk_edit(viewer, Selection.of_ids([a]), "cf.source2", "门店", confirm="1")
    assert _document(a)["source2"] == "o1"
    assert _audits("customer.bulk_edit")[-1].result == "refused"


def test_bulk_edit_of_a_sensitive_field_is_refused_for_a_role_that_sees_it_masked(filled, seeded_actors):
    admin, (a, *_rest) = filled
    agent, manager = seeded_actors["agent"], seeded_actors["manager"]
    reachable = customer_list.list_customers(agent, ListQuery(), page_size=20).rows[0].id
    with pytest.raises(PermissionDenied):
        bulk_edit.bulk_edit(agent, Selection.of_ids([reachable]), "cf.id_number", "Z9", confirm="1")
    assert "id_number" not in _document(reachable) or _document(reachable)["id_number"] != "Z9"
    refusal = _audits("customer.bulk_edit")[-1]
    assert refusal.result == "refused" and "cf.id_number" in str(refusal.details)
    # A role that sees it may, and the audit entry keeps the value masked.
    assert bulk_edit.bulk_edit(manager, Selection.of_ids([a]), "cf.id_number", "Z9", confirm="1").changed == 1
    assert _document(a)["id_number"] == "Z9"
    entry = _audits("customer.bulk_edit")[-1]
    assert entry.result == "ok" and "Z9" not in str(entry.details)
    job = jobs.job_view(manager, max(j for j in _job_ids()))
    assert "Z9" not in str(job.as_dict())


def _job_ids() -> list[int]:
    from meiqia_app.models import Job

    with read_session() as session:
        return list(session.exec(sm_select(Job.id)))


def test_a_crafted_bulk_edit_with_ids_out_of_reach_changes_nothing(filled, seeded_actors):
    admin, ids = filled
    agent = seeded_actors["agent"]
    target = ids[5]
    with get_engine().begin() as conn:  # owned by someone outside the agent's team
        conn.execute(update(Customer.__table__).where(C.id == target).values(owner_id=9999))
    reach = list_fields.CustomerAccess(agent).reach_condition()
    with get_engine().connect() as conn:
        assert conn.execute(select(C.id).where(C.id == target, reach)).first() is None
    before = _document(target)
    with pytest.raises(NotFound):
        bulk_edit.bulk_edit(agent, Selection.of_ids([target]), "cf.source2", "推荐", confirm="1")
    with pytest.raises(NotFound):
        bulk_edit.start_bulk_edit_job(agent, {"kind": "ids", "ids": [target]}, "cf.source2", "推荐", "1")
    assert _document(target) == before


# --- the list page's forms (state/customer_list_fields.py) ----------------------------------------------


def test_the_filter_form_becomes_a_filter_by_key_and_its_chip_reads_labels(filled):
    from meiqia_app.state import customer_list_fields as cf_forms

    admin, (a, b, c, d, e, f) = filled
    fields = list_fields.column_options(list_fields.CustomerAccess(admin), "zh")
    source = cf_forms.field_of(fields, "cf.source2")
    item = cf_forms.filter_from_form(source, "any_of", {"opt:o1": "on", "opt:o3": "on", "opt:o9": "on"})
    assert item == {"key": "source2", "op": "any_of", "value": ["o1", "o3"]}
    assert cf_forms.chip_text("zh", source, item) == "字段source2：官网、推荐"
    points = cf_forms.field_of(fields, "points")
    ranged = cf_forms.filter_from_form(points, "range", {"low": " 5 ", "high": ""})
    assert cf_forms.chip_text("en", points, ranged) == "字段points: 5 to …"  # the label of the fields given
    assert set(_all_ids(admin, _query(("points", ranged["op"], ranged["value"])))) == {a, b, d}
    crafted = cf_forms.filter_from_form(points, "drop table", {"value": "1"})
    with pytest.raises(ValidationError):
        ListQuery.from_dict({"custom_filters": [crafted]})
    assert cf_forms.chip_text("zh", None, {"key": "gone", "op": "empty"}, "已删除的字段") == "已删除的字段：为空"


def test_stop_ends_the_bulk_edit_after_its_batch_and_the_audit_says_how_many_changed(
    filled, seeded_actors, monkeypatch
):
    admin, (a, b, c, d, e, f) = filled
    manager = seeded_actors["manager"]
    monkeypatch.setattr(bulk_edit, "TX_ROWS", 2)
    original = jobs.JobContext.progress

    def stop_after_first_batch(self, processed, checkpoint=None, total=None):
        jobs.request_cancel(manager, self.job_id)  # the Stop button, while the batch commits
        original(self, processed, checkpoint, total)

    monkeypatch.setattr(jobs.JobContext, "progress", stop_after_first_batch)
    result = bulk_edit.bulk_edit(manager, Selection.of_ids([a, b, c, d]), "cf.nick", "批量", confirm="4")
    assert result.status == "cancelled" and result.changed == 2
    assert [_document(i).get("nick") for i in (a, b, c)] == ["批量", "批量", "阿明"]
    entry = _audits("customer.bulk_edit")[-1]
    assert entry.details["stopped"] is True and entry.details["count"] == 2
    assert entry.details["value"] != "批量"  # free text: a reference, not the text
