"""Export scopes: rows ticked in the customer list."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import text

from meiqia_app.config import get_settings
from meiqia_app.db import get_engine, read_session
from meiqia_app.models import ExportJob
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.exports import request as export_request
from meiqia_app.services.exports import run as export_run


def test_ticked_ids_are_exactly_the_exported_rows_in_the_chosen_order(seeded_actors):
    manager = seeded_actors["manager"]
    ids = [7, 3, 250, 42]
    data = {
        "scope": {"kind": "ids", "ids": ids, "query": {"status": "active"}},
        "fields": ["id", "name"],
        "format": "csv",
        "sort_field": "id",
        "sort_dir": "desc",
    }
    review = export_request.review(manager, data)
    assert review.row_count == 4 and "4" in review.scope_text
    view = export_run.run_export(export_request.request_export(manager, data, start=False).id)
    with read_session() as session:
        path = get_settings().exports_dir / session.get(ExportJob, view.id).file_name
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))[1:]
    assert [int(r[0]) for r in rows] == sorted(ids, reverse=True)


def _exported_ids(view: dict) -> list[int]:
    with read_session() as session:
        path = get_settings().exports_dir / session.get(ExportJob, view.id).file_name
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))[1:]
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("fields", [["id", "name"], ["id", "tags"]])  # rows built in SQL (where it can) / in Python
def test_an_order_status_scope_exports_exactly_the_customers_with_such_an_order(seeded_actors, fields):
    manager = seeded_actors["manager"]
    with get_engine().connect() as conn:
        expected = list(
            conn.execute(
                text(
                    "SELECT c.id FROM customer c WHERE c.status = 'active' AND c.id IN "
                    "(SELECT customer_id FROM customer_order WHERE status = 'paid') ORDER BY c.id"
                )
            ).scalars()
        )
        active = conn.execute(text("SELECT count(*) FROM customer WHERE status = 'active'")).scalar_one()
    assert 0 < len(expected) < active
    data = {
        "scope": {"kind": "query", "query": {"order_statuses": ["paid"]}},
        "fields": fields,
        "format": "csv",
        "sort_field": "id",
        "sort_dir": "asc",
    }
    review = export_request.review(manager, data)
    assert review.row_count == len(expected) and "有订单状态: 已付款" in review.scope_text
    assert "Has an order: Paid" in export_request.review(manager, data, "en").scope_text
    view = export_run.run_export(export_request.request_export(manager, data, start=False).id)
    assert view.status == "done" and view.row_count == len(expected)
    assert _exported_ids(view) == expected


def test_an_unknown_order_status_in_the_scope_is_refused(seeded_actors):
    data = {
        "scope": {"kind": "query", "query": {"order_statuses": ["shipped"]}},
        "fields": ["id", "name"],
        "format": "csv",
    }
    with pytest.raises(ValidationError) as caught:
        export_request.review(seeded_actors["manager"], data)
    assert "order_statuses" in caught.value.field_errors
