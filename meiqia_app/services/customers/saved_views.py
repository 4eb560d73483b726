"""Saved views (CUST-3): a named search + filters + sort, private or shared with the team."""

from __future__ import annotations

import dataclasses
import json

from sqlalchemy import or_
from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import SavedView
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers import list_fields
from meiqia_app.services.customers.query import ListQuery
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.timeutil import utcnow

MAX_VIEWS_PER_USER = 50

# The list's columns (CUST-1 column chooser); a view remembers which are shown.
LIST_COLUMNS = (
    "name",
    "phone",
    "email",
    "region",
    "source",
    "lifecycle",
    "tier",
    "tags",
    "total_spent",
    "order_count",
    "registered",
    "last_purchase",
    "last_active",
    "status",
    "owner",
    "team",
)
DEFAULT_COLUMNS = ("name", "phone", "region", "source", "lifecycle", "tags", "last_active", "owner")


def clean_columns(columns) -> list[str]:
    """Known columns in catalogue order, then active custom fields' ("cf.<key>", the admin's
    order); the name is always shown (it opens the customer). Without a choice: the
    default columns and the custom fields shown in the list by default."""
    if not isinstance(columns, (list, tuple)):
        return default_columns()
    chosen = {str(c) for c in columns[: len(LIST_COLUMNS)]} | {"name"}
    return [c for c in LIST_COLUMNS if c in chosen] + list_fields.clean_column_names(columns)


def default_columns() -> list[str]:
    """The list's columns before anyone chose: DEFAULT_COLUMNS and the custom fields
    "shown in list by default"."""
    return list(DEFAULT_COLUMNS) + list_fields.default_column_names()


@dataclasses.dataclass
class ViewOption:
    id: int
    name: str
    owner: str
    shared: bool
    mine: bool


def list_views(actor: Actor) -> list[ViewOption]:
    require(actor, "customer.view", action="view.list")
    with read_session() as session:
        rows = session.exec(
            select(SavedView)
            .where(or_(SavedView.owner_id == actor.user_id, SavedView.shared.is_(True)))
            .order_by(SavedView.name)
        ).all()
        return [ViewOption(v.id, v.name, v.owner_name, v.shared, v.owner_id == actor.user_id) for v in rows]


def save_view(actor: Actor, name: str, query: ListQuery, shared: bool = False, columns=None) -> ViewOption:
    """Create or overwrite (same name) one of the actor's own views."""
    require(actor, "customer.view", action="view.save")
    name = (name or "").strip()
    if not name:
        raise ValidationError.single("name", "error.required")
    if len(name) > 64:
        raise ValidationError.single("name", "error.too_long", max=64)
    payload = json.dumps({**query.to_dict(), "columns": clean_columns(columns)}, ensure_ascii=False, sort_keys=True)
    with write_session() as session:
        view = session.exec(
            select(SavedView).where(SavedView.owner_id == actor.user_id, SavedView.name == name)
        ).first()
        if view is None:
            count = len(session.exec(select(SavedView.id).where(SavedView.owner_id == actor.user_id)).all())
            if count >= MAX_VIEWS_PER_USER:
                raise ValidationError.single("name", "view.too_many", max=MAX_VIEWS_PER_USER)
            view = SavedView(owner_id=actor.user_id, owner_name=actor.display_name or actor.username, name=name)
        view.payload = payload
        view.shared = bool(shared)
        view.updated_at = utcnow()
        session.add(view)
        session.flush()
        audit.record(
            session,
            actor,
            "view.save",
            target_type="view",
            target_id=view.id,
            details={"name": name, "shared": view.shared},
        )
        return ViewOption(view.id, view.name, view.owner_name, view.shared, True)


def load_view(actor: Actor, view_id: int) -> ListQuery:
    """The stored query, validated again (the rules may have changed since it was saved)."""
    return load_view_setup(actor, view_id)[0]


def load_view_setup(actor: Actor, view_id: int) -> tuple[ListQuery, list[str]]:
    """The stored query and the columns the list showed."""
    setup = load_view_details(actor, view_id)
    return setup.query, setup.columns


@dataclasses.dataclass(frozen=True)
class ViewSetup:
    """A saved view as the list opens it: its query and columns without the custom fields
    retired or deleted since it was saved, and those fields named (labels; "a deleted field")."""

    query: ListQuery
    columns: list[str]
    ignored_fields: tuple[str, ...] = ()


def load_view_details(actor: Actor, view_id: int, lang: str = "zh") -> ViewSetup:
    """The stored query, validated again (fields are named by key: a renamed label changes nothing)."""
    require(actor, "customer.view", action="view.load")
    with read_session() as session:
        view = session.get(SavedView, int(view_id))
        if view is None or (view.owner_id != actor.user_id and not view.shared):
            raise NotFound()
        payload = json.loads(view.payload or "{}")
    stored_columns = payload.pop("columns", None)
    columns = clean_columns(stored_columns)
    query, gone = list_fields.without_gone_fields(ListQuery.from_dict(payload))
    keys = list(gone.keys)
    if isinstance(stored_columns, list):
        kept = set(columns)
        keys += [
            str(c)[3:]
            for c in stored_columns
            if isinstance(c, str) and c.startswith("cf.") and c not in kept and str(c)[3:] not in keys
        ][: list_fields.MAX_CUSTOM_COLUMNS]
    return ViewSetup(query, columns, tuple(list_fields.GoneFields(tuple(keys)).labels(lang)))


def delete_view(actor: Actor, view_id: int) -> None:
    require(actor, "customer.view", action="view.delete")
    # Ownership is checked in a read first: a refusal is audited in its own
    # write transaction, which must not wait behind ours (SQLite has one writer).
    with read_session() as session:
        view = session.get(SavedView, int(view_id))
        if view is None:
            raise NotFound()
        owner_id = view.owner_id
    if owner_id != actor.user_id and not actor.can("view.manage_any"):
        refuse(actor, "view.delete", "error.permission_denied", target_type="view", target_id=view_id)
    with write_session() as session:
        view = session.get(SavedView, int(view_id))
        if view is None:
            raise NotFound()
        session.delete(view)
        audit.record(session, actor, "view.delete", target_type="view", target_id=view_id, details={"name": view.name})
