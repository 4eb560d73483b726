"""Export scopes: rows ticked in the customer list."""

from __future__ import annotations

import csv
import io

from meiqia_app.config import get_settings
from meiqia_app.db import read_session
from meiqia_app.models import ExportJob
from meiqia_app.services.exports import service


def test_ticked_ids_are_exactly_the_exported_rows_in_the_chosen_order(seeded_actors):
    manager = seeded_actors["manager"]
    ids = [7, 3, 250, 42]
    data = {"scope": {"kind": "ids", "ids": ids, "query": {"status": "active"}}, "fields": ["id", "name"],
            "format": "csv", "sort_field": "id", "sort_dir": "desc"}
    review = service.review(manager, data)
    assert review["row_count"] == 4 and "4" in review["scope_text"]
    view = service.run_export(service.request_export(manager, data, start=False)["id"])
    with read_session() as session:
        path = get_settings().exports_dir / session.get(ExportJob, view["id"]).file_name
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))[1:]
    assert [int(r[0]) for r in rows] == sorted(ids, reverse=True)
