"""The selection object bulk actions receive: a filter, or ticked ids."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from meiqia_app.db import get_engine
from meiqia_app.models import Customer
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.customers.selection import (
    MAX_TICKED_IDS,
    Selection,
    iter_selected_ids,
    selection_conditions,
    selection_count,
)
from meiqia_app.services.errors import PermissionDenied, ValidationError

C = Customer.__table__.c


def _all_ids(selection, actor, batch):
    return [i for chunk in iter_selected_ids(actor, selection, batch=batch) for i in chunk]


def test_query_selection_walks_every_match_in_bounded_batches(seeded_actors):
    actor = seeded_actors["admin"]
    query = ListQuery.from_dict({"sources": ["wechat"]})
    selection = Selection.of_query(query)
    batches = list(iter_selected_ids(actor, selection, batch=17))
    assert all(len(b) <= 17 for b in batches)
    ids = [i for b in batches for i in b]
    with get_engine().connect() as conn:
        expected = list(
            conn.execute(select(C.id).where(C.source == "wechat", C.status == "active").order_by(C.id)).scalars()
        )
    assert ids == expected and len(ids) > 17
    assert selection_count(actor, selection) == len(expected)
    # Resuming after a checkpoint continues exactly where it stopped.
    assert [i for b in iter_selected_ids(actor, selection, after_id=ids[9], batch=17) for i in b] == ids[10:]


def test_ticked_ids_skip_missing_and_other_status_rows(seeded_actors):
    actor = seeded_actors["admin"]
    with get_engine().begin() as conn:
        some = list(conn.execute(select(C.id).order_by(C.id).limit(5)).scalars())
        conn.execute(Customer.__table__.update().where(C.id == some[0]).values(status="trashed"))
    selection = Selection.of_ids([*some, some[1], 99_999_999], status="all")
    assert _all_ids(selection, actor, batch=2) == some[1:]
    assert selection_count(actor, selection) == 4
    with get_engine().connect() as conn:
        counted = conn.execute(
            select(func.count()).select_from(Customer.__table__).where(*selection_conditions(conn, selection, actor))
        ).scalar_one()
    assert counted == 4


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"kind": "everything"},
        {"kind": "ids", "ids": []},
        {"kind": "ids", "ids": ["x"]},
        {"kind": "ids", "ids": [0, 1]},
        {"kind": "ids", "ids": list(range(1, MAX_TICKED_IDS + 2))},
        {"kind": "query", "query": {"status": "gone"}},
    ],
)
def test_crafted_selections_are_refused(bad):
    with pytest.raises(ValidationError):
        Selection.from_dict(bad)


def test_selection_round_trips_and_describes_without_rows():
    selection = Selection.from_dict(
        {"kind": "ids", "ids": [3, 1, 2, 3], "query": {"q": "ignored", "status": "archived"}}
    )
    assert selection.ids == (1, 2, 3) and selection.query.q == ""
    assert Selection.from_dict(selection.to_dict()) == selection
    assert selection.describe()["count"] == 3
    query_selection = Selection.of_query(ListQuery.from_dict({"q": "张"}))
    assert Selection.from_dict(query_selection.to_dict()) == query_selection


def test_walking_a_selection_needs_customer_view(seeded_actors):
    from meiqia_app.services.identity.rbac import Actor

    nobody = Actor(user_id=None, username="x", display_name="", role_name="", permissions=frozenset())
    with pytest.raises(PermissionDenied):
        list(iter_selected_ids(nobody, Selection.of_query(ListQuery())))
