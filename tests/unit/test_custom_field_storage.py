"""Custom field storage (issue 23): migration 0016, the JSON document and its SQL, the run-time indexes.

Dialect-neutral: the same tests run on PostgreSQL with ``make test-pg``.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, inspect, select, text, update

from meiqia_app.db import get_engine
from meiqia_app.dbadapter import get_adapter
from meiqia_app.dbadapter.base import custom_field_index_name, custom_field_key, index_key
from meiqia_app.models import Customer

C = Customer.__table__.c


def _migrate(target: str, down: bool = False) -> None:
    from alembic import command

    from meiqia_app.migrate import alembic_config

    with get_engine().begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, target)


def _ids(n: int) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(C.id).where(C.status == "active").order_by(C.id).limit(n)).scalars())


def _patch(customer_id: int, sets: dict, removes=()) -> None:
    adapter = get_adapter()
    with get_engine().begin() as conn:
        conn.execute(
            update(Customer.__table__)
            .where(C.id == customer_id)
            .values(custom_fields=adapter.custom_patch(C.custom_fields, sets, removes))
        )


def _document(customer_id: int) -> dict:
    with get_engine().connect() as conn:
        return conn.execute(select(C.custom_fields).where(C.id == customer_id)).scalar_one()


def test_migration_0016_adds_the_document_the_definitions_and_the_admins_permission(seeded_db):
    adapter = get_adapter()
    adapter.create_custom_field_index(get_engine(), "probe", "text", True)
    _migrate("0015_pool_return", down=True)
    with get_engine().connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("customer")}
        tables = set(inspect(conn).get_table_names())
        admin = json.loads(conn.execute(text("SELECT permissions FROM role WHERE name = 'admin'")).scalar_one())
        manager = conn.execute(text("SELECT permissions FROM role WHERE name = 'manager'")).scalar_one()
    # The run-time index went with the column (SQLite would refuse to drop a column an index uses).
    assert "custom_fields" not in columns and "custom_field" not in tables and "field.manage" not in admin
    _migrate("head")
    with get_engine().connect() as conn:
        after = json.loads(conn.execute(text("SELECT permissions FROM role WHERE name = 'admin'")).scalar_one())
        assert conn.execute(text("SELECT permissions FROM role WHERE name = 'manager'")).scalar_one() == manager
        documents = conn.execute(select(C.custom_fields).distinct()).scalars().all()
        assert adapter.custom_field_indexes(conn) == set()
    assert "field.manage" in after and after[: len(admin)] == admin
    assert documents == [{}]  # every existing customer starts with an empty document


def test_a_patch_sets_and_removes_keys_and_keeps_the_others(seeded_db):
    customer_id = _ids(1)[0]
    _patch(customer_id, {"src": "o2", "spent": 1234, "rate": 12.5, "vip": True, "tags": ["o1", "o3"], "note": "会员 ✓"})
    _patch(customer_id, {"spent": 99}, ("rate", "missing"))
    assert _document(customer_id) == {"src": "o2", "spent": 99, "vip": True, "tags": ["o1", "o3"], "note": "会员 ✓"}
    _patch(customer_id, {}, ("src", "spent", "vip", "tags", "note"))
    assert _document(customer_id) == {}


def test_values_compare_in_sql_by_their_kind(seeded_db):
    a, b, c = _ids(3)
    _patch(a, {"num": 5, "day": "2026-01-02", "yes": True, "multi": ["o1", "o2"], "sel": "o1"})
    _patch(b, {"num": 12.5, "day": "2025-12-31", "yes": False, "multi": ["o3"]})
    _patch(c, {"num": -3})
    adapter = get_adapter()

    def ids(condition) -> set[int]:
        with get_engine().connect() as conn:
            return set(conn.execute(select(C.id).where(C.id.in_((a, b, c)), condition)).scalars())

    number = adapter.custom_value(C.custom_fields, "num", "number")
    assert ids(number > 4) == {a, b}  # numerically: 12.5 > 5 > 4 > -3 (as text "12.5" < "5")
    assert ids(number.between(-5, 6)) == {a, c}
    assert ids(adapter.custom_value(C.custom_fields, "num", "number", use_index=False) > 4) == {a, b}
    day = adapter.custom_value(C.custom_fields, "day", "text")
    assert ids(day >= "2026-01-01") == {a}
    assert ids(day.is_(None)) == {c}
    flag = adapter.custom_value(C.custom_fields, "yes", "bool")
    assert ids(flag == True) == {a}  # noqa: E712 (SQL, not Python)
    assert ids(flag == False) == {b}  # noqa: E712
    assert ids(adapter.custom_has_any(C.custom_fields, "multi", ["o2", "o3"])) == {a, b}
    assert ids(adapter.custom_has_any(C.custom_fields, "multi", ["o9"])) == set()
    assert ids(adapter.custom_has_key(C.custom_fields, "sel")) == {a}
    assert ids(~adapter.custom_has_key(C.custom_fields, "sel")) == {b, c}
    with get_engine().connect() as conn:
        order = conn.execute(select(C.id).where(C.id.in_((a, b, c))).order_by(number.desc(), C.id)).scalars().all()
    assert order == [b, a, c]


@pytest.mark.parametrize("key", ["x", "1abc", "Abc", "a-b", "a'b", "a b", "a" * 41, "a.b"])
def test_only_checked_keys_reach_the_sql(key):
    with pytest.raises(ValueError):
        custom_field_key(key)
    with pytest.raises(ValueError):
        get_adapter().custom_value(C.custom_fields, key, "text")


def test_a_field_index_is_made_once_used_by_its_filter_and_dropped(seeded_db):
    engine, adapter = get_engine(), get_adapter()
    ids = _ids(40)
    for position, customer_id in enumerate(ids):
        _patch(customer_id, {"src": f"o{position % 4 + 1}"})
    name = adapter.create_custom_field_index(engine, "src", "text", True)
    assert adapter.create_custom_field_index(engine, "src", "text", True) == name  # idempotent
    assert name == custom_field_index_name("src", "text", True) and index_key(name) == "src"
    with engine.connect() as conn:
        assert adapter.custom_field_indexes(conn) == {name}
    value = adapter.custom_value(C.custom_fields, "src", "text")
    query = (
        select(C.id)
        .where(C.status == "active", C.status != text("'trashed'"), value == "o2")
        .order_by(C.last_active_at.desc(), C.id.desc())
        .limit(5)
    )
    with engine.connect() as conn:
        if adapter.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN {_explain(adapter)}{compiled}").all())
        found = conn.execute(query).scalars().all()
    assert name in plan
    assert found and len(found) == 5
    adapter.drop_custom_field_index(engine, "src")
    with engine.connect() as conn:
        assert adapter.custom_field_indexes(conn) == set()
        assert conn.execute(select(func.count()).select_from(Customer.__table__).where(value == "o2")).scalar() == 10


def _explain(adapter) -> str:
    return "QUERY PLAN " if adapter.name == "sqlite" else ""


def test_a_default_is_what_a_customer_without_the_key_has_and_its_index_holds_it(seeded_db):
    engine, adapter = get_engine(), get_adapter()
    ids = _ids(30)
    explicit, cleared = ids[0], ids[1]
    _patch(explicit, {"level": "o2"})
    _patch(cleared, {"level": None})  # JSON null: explicitly empty
    assert _document(cleared) == {"level": None}
    first = adapter.create_custom_field_index(engine, "level", "text", True, "o1")
    value = adapter.custom_value(C.custom_fields, "level", "text", default="o1")
    with engine.connect() as conn:
        rows = dict(conn.execute(select(C.id, value).where(C.id.in_(ids))).all())
    assert rows[explicit] == "o2" and rows[cleared] is None
    assert all(rows[i] == "o1" for i in ids[2:])
    # The query's expression is the index's: the index answers the default's filter.
    query = select(C.id).where(C.status == "active", C.status != text("'trashed'"), value == "o1").limit(5)
    with engine.connect() as conn:
        if adapter.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN {_explain(adapter)}{compiled}").all())
    assert first in plan
    # Another default: another index; the one for the old default goes once the new one is there.
    second = adapter.create_custom_field_index(engine, "level", "text", True, "it's")
    with engine.connect() as conn:
        assert adapter.custom_field_indexes(conn) == {second} != {first}
        quoted = adapter.custom_value(C.custom_fields, "level", "text", default="it's")
        assert conn.execute(select(quoted).where(C.id == ids[5])).scalar_one() == "it's"
    for kind, default in (("number", 12.5), ("number", 3), ("bool", True)):
        number = adapter.custom_value(C.custom_fields, "points", kind, default=default)
        with engine.connect() as conn:
            assert conn.execute(select(number).where(C.id == ids[5])).scalar_one() == default
        adapter.create_custom_field_index(engine, "points", kind, False, default)
