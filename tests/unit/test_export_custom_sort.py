"""Exports sorted by a custom field (services/exports/custom_sort.py): the request names the
field by key and checks it (unknown, retired, unsortable → refused; sensitive for a masked role →
refused and audited); CSV, XLSX and PDF rows come out in the field's order, values first in
either direction and empty values last; the keyset walk pages across batches without loss or
repeat; a field retired after the request sorts the file by id in the asked direction."""

from __future__ import annotations

import openpyxl
import pytest
from pypdf import PdfReader
from sqlalchemy import select

from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.services.custom_fields import definitions as custom_fields
from meiqia_app.services.errors import PermissionDenied, ValidationError
from meiqia_app.services.exports import custom_sort
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports.rows import RowSource
from tests.unit.test_export_custom_fields import (  # noqa: F401  (a fixture)
    _csv_rows,
    _define,
    _file,
    _ids,
    _jobs_run_inline,
    _request,
    _run,
    _save,
)

C = Customer.__table__.c
# customer position -> (score, level option label); None: empty
VALUES = {
    0: (5, "金卡"),
    1: (None, None),
    2: (-2.5, "银卡"),
    3: (5, None),
    4: (10, "金卡"),
    5: (None, "银卡"),
    6: (0, "金卡"),
}


@pytest.fixture()
def sorted_world(seeded_actors):
    admin = seeded_actors["admin"]
    _define(admin, "score", "number")
    _define(admin, "level", "single_select", "银卡\n金卡")
    _define(admin, "secret_score", "number", sensitive=True)
    _define(admin, "motto", "text")
    ids = _ids(len(VALUES))
    for position, (score, level) in VALUES.items():
        values = {"secret_score": position}
        if score is not None:
            values["score"] = score
        if level is not None:
            values["level"] = level
        _save(admin, ids[position], values)
    return seeded_actors, ids


def _expected(ids, descending: bool) -> list[int]:
    held = [(VALUES[p][0], ids[p]) for p in VALUES if VALUES[p][0] is not None]
    empty = [ids[p] for p in VALUES if VALUES[p][0] is None]
    return [i for _v, i in sorted(held, reverse=descending)] + sorted(empty, reverse=descending)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_csv_rows_follow_the_custom_field_with_empty_values_last(sorted_world, direction):
    actors, ids = sorted_world
    data = _request(ids, ["id", "cf.score"], sort_field="cf.score", sort_dir=direction)
    rows = _csv_rows(_run(actors["manager"], data))[1:]
    assert [int(r[0]) for r in rows] == _expected(ids, direction == "desc")
    assert [r[1] for r in rows][-2:] == ["", ""]


def test_xlsx_and_pdf_rows_come_out_in_the_same_order(sorted_world):
    actors, ids = sorted_world
    want = _expected(ids, descending=False)
    xlsx = _run(actors["manager"], _request(ids, ["id", "cf.score"], fmt="xlsx", sort_field="cf.score"))
    sheet = openpyxl.load_workbook(_file(xlsx)).worksheets[0]
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == want
    pdf = _run(actors["manager"], _request(ids, ["id", "cf.score"], fmt="pdf", sort_field="cf.score"))
    text = "\n".join(page.extract_text() for page in PdfReader(str(_file(pdf))).pages)
    body = text[text.index("中score") + len("中score") :].splitlines()
    cells = [line.strip() for line in body if line.strip() and "页" not in line]  # the footer aside
    score = {ids[p]: VALUES[p][0] for p in VALUES}
    expected = [text for i in want for text in ([str(i), str(score[i])] if score[i] is not None else [str(i)])]
    assert cells == expected, text


def test_a_select_sorts_by_option_then_last_active_across_batches(sorted_world):
    actors, ids = sorted_world
    spec = export_request.parse_request(
        actors["manager"], _request(ids, ["id", "cf.level"], sort_field="cf.level", sort_dir="asc")
    ).spec
    with get_engine().connect() as conn:
        active = dict(conn.execute(select(C.id, C.last_active_at).where(C.id.in_(ids))).all())
    option = {"银卡": "o1", "金卡": "o2"}
    held = sorted((option[VALUES[p][1]], active[ids[p]], ids[p]) for p in VALUES if VALUES[p][1] is not None)
    empty = sorted((active[ids[p]], ids[p]) for p in VALUES if VALUES[p][1] is None)
    for batch in (1, 2, 3, 50):  # keyset pages over both legs, whatever the batch
        rows = [row for rows in RowSource(actors["manager"], spec).iter_batches(batch) for row in rows]
        assert [row[0] for row in rows] == [i for *_k, i in held] + [i for _a, i in empty], batch
    assert [row[1] for row in rows][:3] == ["银卡", "银卡", "金卡"]
    assert RowSource(actors["manager"], spec).sql_fields_supported("csv") is False


def test_the_request_checks_the_custom_sort(sorted_world):
    actors, ids = sorted_world
    manager = actors["manager"]
    for bad in ("cf.no_such_field", "cf.motto", "cf.", "cf.BAD KEY"):
        with pytest.raises(ValidationError) as caught:
            export_request.parse_request(manager, _request(ids, ["id"], sort_field=bad))
        assert "sort" in caught.value.field_errors, bad
    with pytest.raises(ValidationError):
        export_request.parse_request(manager, _request(ids, ["id"], sort_field=["cf.score"]))
    # a sensitive field: only for a role that sees it in clear (the order would rank hidden values)
    analyst = actors["analyst"]
    assert not analyst.can("customer.view_sensitive")
    with pytest.raises(PermissionDenied):
        export_request.parse_request(analyst, _request(ids, ["id"], sort_field="cf.secret_score"))
    assert export_request.parse_request(manager, _request(ids, ["id"], sort_field="cf.secret_score")).spec
    # stored by key
    view = export_request.request_export(manager, _request(ids, ["id"], sort_field="cf.score"), start=False)
    assert custom_sort.present_sort("cf.score") == "cf.score"
    assert view.id


def test_a_field_retired_after_the_request_sorts_the_file_by_id(sorted_world):
    from meiqia_app.services.custom_fields import catalog
    from meiqia_app.services.exports import approval as export_approval
    from meiqia_app.services.exports import run as export_run

    actors, ids = sorted_world
    view = export_request.request_export(
        actors["manager"], _request(ids, ["id", "name"], sort_field="cf.score", sort_dir="desc"), start=False
    )
    field = catalog.field("score")
    custom_fields.retire_field(actors["admin"], field.id, field.version)
    done = export_run.run_export(view.id)
    assert done.status == "done", done.error
    assert [int(r[0]) for r in _csv_rows(done)[1:]] == sorted(ids, reverse=True)  # by id, as asked (desc)
    again = export_run.run_export(export_approval.rerun_export(actors["manager"], view.id, start=False).id)
    assert again.status == "done" and [int(r[0]) for r in _csv_rows(again)[1:]] == sorted(ids, reverse=True)


def test_the_wizard_offers_chosen_sortable_custom_fields_by_label(sorted_world):
    from meiqia_app.services.exports.fields import field_label

    assert custom_sort.sortable_names(["id", "cf.score", "cf.motto", "cf.level", "cf.gone"]) == [
        "cf.score",
        "cf.level",
    ]
    assert field_label("cf.score", "en") == "En score"
