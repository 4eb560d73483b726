"""The custom field definitions as every service reads them: a small cached catalogue.

The definitions are read on hot paths (each masked value asks whether a
"cf.<key>" field is sensitive; each customer page, edit and filter needs the
types), so they are kept in memory per engine for ``CACHE_SECONDS`` and read
again after that, or at once after a change made in this process
(``invalidate``, called by services/custom_fields/definitions.py). Another worker process
sees a change within ``CACHE_SECONDS``: a field made sensitive is masked
everywhere within that time.

No permission here: definitions (labels, types, options) are not customer
data. Values go through services/custom_fields/values.py.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import weakref

from sqlalchemy import select

from meiqia_app.db import get_engine, read_connection
from meiqia_app.models import CustomField
from meiqia_app.services.custom_fields.field_types import FieldDef, Option, key_of

CACHE_SECONDS = 2.0

F = CustomField.__table__.c


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Every definition (active, retired, being deleted), in the admin's order."""

    fields: tuple[FieldDef, ...] = ()

    def get(self, key: str | None) -> FieldDef | None:
        if not key:
            return None
        return next((f for f in self.fields if f.key == key), None)

    def by_name(self, name: str) -> FieldDef | None:
        """The field of a "cf.<key>" name (any status)."""
        return self.get(key_of(name))

    def by_id(self, field_id: int) -> FieldDef | None:
        return next((f for f in self.fields if f.id == field_id), None)

    @property
    def active(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.active)

    @property
    def sensitive(self) -> tuple[FieldDef, ...]:
        """Sensitive fields of any status: a retired field's kept values stay masked."""
        return tuple(f for f in self.fields if f.sensitive)


def definition_of(row) -> FieldDef:
    """A FieldDef from a custom_field row (ORM object or Core row)."""
    try:
        options = tuple(
            Option(
                id=str(o["id"]),
                zh=str(o.get("zh") or o["id"]),
                en=str(o.get("en") or ""),
                order=int(o.get("order") or 0),
                retired=bool(o.get("retired")),
            )
            for o in json.loads(row.options or "[]")
        )
    except (ValueError, KeyError, TypeError):
        options = ()
    try:
        default = json.loads(row.default_value) if row.default_value else None
    except ValueError:
        default = None
    return FieldDef(
        id=row.id,
        key=row.key,
        label_zh=row.label_zh,
        label_en=row.label_en or "",
        field_type=row.field_type,
        options=options,
        group_zh=row.group_zh or "",
        group_en=row.group_en or "",
        required=bool(row.required),
        default=default,
        sensitive=bool(row.sensitive),
        shown_in_list=bool(row.shown_in_list),
        sort_order=int(row.sort_order or 0),
        status=row.status,
        version=int(row.version or 1),
    )


def read_catalog(conn) -> Catalog:
    """The definitions as they are in the database now (no cache)."""
    rows = conn.execute(select(CustomField.__table__).order_by(F.sort_order, F.id)).all()
    return Catalog(tuple(definition_of(row) for row in rows))


_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def catalog() -> Catalog:
    """The definitions, at most CACHE_SECONDS old (fresh after a change made in this process)."""
    engine = get_engine()
    now = time.monotonic()
    with _lock:
        cached = _cache.get(engine)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    with read_connection() as conn:
        fresh = read_catalog(conn)
    with _lock:
        _cache[engine] = (now, fresh)
    return fresh


def invalidate() -> None:
    """Forget the cached definitions (after a change to them)."""
    with _lock:
        _cache.clear()


def field(key: str) -> FieldDef | None:
    return catalog().get(key)


def sensitive_field(name: str) -> FieldDef | None:
    """The sensitive custom field named "cf.<key>", or None (not custom, unknown, not sensitive)."""
    key = key_of(name)
    if key is None:
        return None
    found = catalog().get(key)
    return found if found is not None and found.sensitive else None
