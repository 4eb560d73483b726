"""Tags on one customer (CUST-5): autocomplete, add, remove.

Tag names compare by ``Tag.name_key`` (services/tags/names.tag_key), so "VIP",
"vip" and "ｖｉｐ" are one tag. Adding by a name nobody has used yet creates
the tag, but only for actors with tag.manage; others pick from existing tags.

Tag changes do NOT bump the customer's ``version`` / ``updated_at`` /
``updated_by_*``: tags live in their own table, and a colleague clicking a tag
must not turn somebody's open profile edit into a conflict. The audit log
records who tagged whom and when.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import case, exists
from sqlalchemy import select as core_select
from sqlmodel import Session, select

from meiqia_app.db import read_connection, write_session
from meiqia_app.dbadapter.base import escape_like
from meiqia_app.models import Tag, TagAssignment
from meiqia_app.models.tag import SOURCE_MANUAL
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import TAGS, customers_changed
from meiqia_app.services.customers.dto import TagChip
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.integrations import webhooks
from meiqia_app.services.tags.names import MAX_TAG_NAME, tag_key
from meiqia_app.timeutil import utcnow

MAX_SUGGESTIONS = 50
NEW_TAG_GROUP = "custom"
NEW_TAG_COLOR = "gray"


@dataclasses.dataclass
class TagOption:
    """One autocomplete suggestion."""

    id: int
    name: str
    color: str
    group: str


def _clean_name(name: object) -> str:
    value = " ".join(str(name or "").split())
    if not value:
        raise ValidationError.single("tag", "error.required")
    if len(value) > MAX_TAG_NAME:
        raise ValidationError.single("tag", "error.too_long", max=MAX_TAG_NAME)
    return value


def suggest_tags(actor: Actor, prefix: str, limit: int = 10, exclude_customer_id: int | None = None) -> list[TagOption]:
    """Existing tags whose name starts with, then contains, ``prefix`` (width- and case-insensitive).

    An empty prefix lists the most recently assigned tags. ``exclude_customer_id``
    leaves out the tags that customer already has.
    """
    require(actor, "customer.view", action="tag.suggest")
    try:
        limit = max(1, min(MAX_SUGGESTIONS, int(limit)))
    except (TypeError, ValueError):
        limit = 10
    key = tag_key(str(prefix or ""))
    t = Tag.__table__.c
    statement = core_select(t.id, t.name, t.color, t.group)
    if key:
        # The tag table is small (hundreds of rows at most): a substring LIKE
        # over name_key is cheap; prefix matches sort first.
        pattern = escape_like(key)
        statement = statement.where(t.name_key.like(f"%{pattern}%", escape="\\")).order_by(
            case((t.name_key.like(f"{pattern}%", escape="\\"), 0), else_=1), t.name_key
        )
    else:
        statement = statement.order_by(t.last_assigned_at.is_(None), t.last_assigned_at.desc(), t.name_key)
    if exclude_customer_id not in (None, ""):
        ta = TagAssignment.__table__.c
        statement = statement.where(~exists().where(ta.tag_id == t.id, ta.customer_id == parse_id(exclude_customer_id)))
    with read_connection() as conn:
        rows = conn.execute(statement.limit(limit)).all()
    return [TagOption(id=r.id, name=r.name, color=r.color, group=r.group) for r in rows]


def _resolve_tag(session: Session, actor: Actor, tag_id_or_name: int | str) -> tuple[Tag, bool]:
    """(tag, created). An int is a tag id; a string is a tag name."""
    if isinstance(tag_id_or_name, int) and not isinstance(tag_id_or_name, bool):
        tag = session.get(Tag, tag_id_or_name)
        if tag is None:
            raise NotFound()
        return tag, False
    name = _clean_name(tag_id_or_name)
    key = tag_key(name)
    tag = session.exec(select(Tag).where(Tag.name_key == key)).first()
    if tag is not None:
        return tag, False
    if not actor.can("tag.manage"):
        raise ValidationError.single("tag", "tag.not_found", name=name)
    tag = Tag(name=name, name_key=key, group=NEW_TAG_GROUP, color=NEW_TAG_COLOR, created_by_id=actor.user_id)
    session.add(tag)
    session.flush()
    audit.record(
        session,
        actor,
        "tag.create",
        target_type="tag",
        target_id=tag.id,
        details={"name": name, "group": NEW_TAG_GROUP, "via": "customer.tag_add"},
    )
    return tag, True


def add_tag(actor: Actor, customer_id: int, tag_id_or_name: int | str) -> TagChip:
    """Give the customer a tag (by id, or by name: see _resolve_tag); returns the chip to show.

    Adding a tag a rule had assigned makes the assignment manual, so a rule in
    sync mode no longer takes it away.
    """
    return add_tags(actor, customer_id, [tag_id_or_name])[0]


MAX_TAGS_AT_ONCE = 50


def add_tags(actor: Actor, customer_id: int, tags: list[int | str]) -> list[TagChip]:
    """Several tags at once, all or none (one unknown name refuses the lot)."""
    require(actor, "tag.assign", action="customer.tag_add", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    if not isinstance(tags, (list, tuple)) or not tags:
        raise ValidationError.single("tags", "error.required")
    if len(tags) > MAX_TAGS_AT_ONCE:
        raise ValidationError.single("tags", "error.too_many", max=MAX_TAGS_AT_ONCE)
    chips: list[TagChip] = []
    added: list[str] = []
    with write_session() as session:
        CustomerAccess(actor).load(session, customer_id, for_write=True, action="customer.tag_add")
        for tag_id_or_name in tags:
            tag, created = _resolve_tag(session, actor, tag_id_or_name)
            chip = TagChip(tag.id, tag.name, tag.color, SOURCE_MANUAL)
            if _assign(session, actor, customer_id, tag, created):
                added.append(tag.name)
            if all(c.id != chip.id for c in chips):
                chips.append(chip)
        if added:
            webhooks.emit(session, "customer.tagged", customer_id, {"added": added})
            customers_changed(session, [customer_id], TAGS)
    return chips


def _assign(session: Session, actor: Actor, customer_id: int, tag: Tag, created: bool) -> bool:
    """Make the assignment manual (adding it when missing); False when it already was."""
    assignment = session.get(TagAssignment, (customer_id, tag.id))
    if assignment is not None and assignment.source == SOURCE_MANUAL:
        return False
    now = utcnow()
    previous_source = assignment.source if assignment is not None else None
    if assignment is None:
        assignment = TagAssignment(customer_id=customer_id, tag_id=tag.id)
    assignment.source = SOURCE_MANUAL
    assignment.rule_id = None
    assignment.assigned_at = now
    assignment.assigned_by_id = actor.user_id
    session.add(assignment)
    tag.last_assigned_at = now
    session.add(tag)
    details = {"tag_id": tag.id, "tag": tag.name, "changes": {"tags": [None, tag.name]}, "tag_created": created}
    if previous_source is not None:
        details["changes"] = {"tag_source": [previous_source, SOURCE_MANUAL]}
    audit.record(session, actor, "customer.tag_add", target_type="customer", target_id=customer_id, details=details)
    session.flush()
    return True


def tag_id_by_name(actor: Actor, name: str) -> int | None:
    """The id of the tag with this name (width- and case-insensitive), None when there is none."""
    require(actor, "customer.view", action="tag.lookup")
    key = tag_key(_clean_name(name))
    t = Tag.__table__.c
    with read_connection() as conn:
        return conn.execute(core_select(t.id).where(t.name_key == key)).scalar()


def tag_ids_by_name(actor: Actor, names: list[str]) -> list[int | None]:
    """:func:`tag_id_by_name` for several names, in order."""
    return [tag_id_by_name(actor, name) for name in names]


def pick_typed_tag(actor: Actor, customer_id: int, typed: str, highlighted_id: object = None) -> int | str:
    """What the tag input means when a person presses Enter or 添加标签 (add tag).

    * the typed text names a tag (letter case and width aside): that tag;
    * else the suggestion the input highlighted, if it is one for this text;
    * else the only suggestion, if there is exactly one ("VIP" -> VIP客户);
    * else the text itself: ``add_tag`` creates it for tag.manage, and tells
      the others that no such tag exists.

    Returns a tag id or the (cleaned) name, for ``add_tag``.
    """
    require(actor, "tag.assign", action="customer.tag_add", target_type="customer", target_id=customer_id)
    name = _clean_name(typed)
    key = tag_key(name)
    t = Tag.__table__.c
    with read_connection() as conn:
        exact = conn.execute(core_select(t.id).where(t.name_key == key)).scalar_one_or_none()
        if exact is not None:
            return int(exact)
        if highlighted_id not in (None, "", 0, "0"):
            try:
                picked = int(str(highlighted_id))
            except ValueError:
                picked = 0
            pattern = escape_like(key)
            found = conn.execute(
                core_select(t.id).where(t.id == picked, t.name_key.like(f"%{pattern}%", escape="\\"))
            ).scalar_one_or_none()
            if found is not None:
                return int(found)
    options = suggest_tags(actor, name, 2, customer_id)
    if len(options) == 1:
        return options[0].id
    return name


def remove_tag(actor: Actor, customer_id: int, tag_id: int) -> bool:
    """Take a tag off the customer (manual or rule-assigned); False when it was not there.

    A rule in sync mode may assign a rule tag again on its next run.
    """
    require(actor, "tag.assign", action="customer.tag_remove", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    tag_id = parse_id(tag_id)
    with write_session() as session:
        CustomerAccess(actor).load(session, customer_id, for_write=True, action="customer.tag_remove")
        assignment = session.get(TagAssignment, (customer_id, tag_id))
        if assignment is None:
            return False
        tag = session.get(Tag, tag_id)
        name = tag.name if tag is not None else str(tag_id)
        details = {"tag_id": tag_id, "tag": name, "source": assignment.source, "changes": {"tags": [name, None]}}
        session.delete(assignment)
        audit.record(
            session, actor, "customer.tag_remove", target_type="customer", target_id=customer_id, details=details
        )
        customers_changed(session, [customer_id], TAGS)
    return True


def remove_tag_by_name(actor: Actor, customer_id: int, name: str) -> bool:
    """:func:`remove_tag` by the tag's name; False when there is no such tag or the customer lacks it."""
    require(actor, "tag.assign", action="customer.tag_remove", target_type="customer", target_id=customer_id)
    key = tag_key(_clean_name(name))
    t = Tag.__table__.c
    with read_connection() as conn:
        tag_id = conn.execute(core_select(t.id).where(t.name_key == key)).scalar()
    if tag_id is None:
        parse_id(customer_id)
        return False
    return remove_tag(actor, customer_id, tag_id)
