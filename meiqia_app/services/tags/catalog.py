"""The tag catalogue (TAG-1, TAG-2): CRUD, usage counts, merge, delete, hygiene,
and bulk assignment over a Selection as a background job.

Names are unique the way people read them: ``Tag.name_key`` is NFKC + casefold
(services/tags/names.tag_key), so ``VIP`` and ``ｖｉｐ`` are one tag.

Bulk tagging never loads customers: it walks the selection in id-ordered
batches (``selection.iter_selected_ids``) and issues one set-based
``INSERT … SELECT`` / ``DELETE`` per batch, committing and checkpointing after
each, with one audit entry (with the count) at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import case, delete, exists, func, insert, literal, select, update
from sqlmodel import select as sm_select

from meiqia_app.db import get_engine, read_connection, read_session, write_session
from meiqia_app.models import Customer, Tag, TagAssignment, TagRule
from meiqia_app.models.tag import SOURCE_MANUAL, TAG_GROUPS
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.changes import MANY, TAGS, customers_changed
from meiqia_app.services.customers.profile import parse_id
from meiqia_app.services.customers.selection import (
    BulkResult,
    Selection,
    check_ticked_in_reach,
    iter_selected_ids,
    selection_count,
)
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.services.platform import jobs
from meiqia_app.services.tags.names import MAX_TAG_NAME, tag_key
from meiqia_app.timeutil import as_utc, format_local, utcnow

TAG_COLORS = (
    "gray",
    "gold",
    "bronze",
    "brown",
    "yellow",
    "amber",
    "orange",
    "tomato",
    "red",
    "ruby",
    "crimson",
    "pink",
    "plum",
    "purple",
    "violet",
    "iris",
    "indigo",
    "blue",
    "cyan",
    "teal",
    "jade",
    "green",
    "grass",
    "lime",
    "mint",
    "sky",
)
MAX_DESCRIPTION = 255
BULK_JOB_KIND = "tags.bulk"
BULK_ACTIONS = ("add", "remove")
BULK_BATCH = 10_000

T = Tag.__table__.c
TA = TagAssignment.__table__.c
C = Customer.__table__.c


@dataclasses.dataclass
class TagOption:
    id: int
    name: str
    color: str


@dataclasses.dataclass
class TagView:
    """One row of the /tags table (a DTO)."""

    id: int
    name: str
    group: str
    color: str
    description: str
    usage: int
    manual: int
    by_rule: int
    rules: int
    last_assigned_at: str
    created_at: str


def list_tag_options(actor: Actor) -> list[TagOption]:
    require(actor, "customer.view", action="tag.list")
    with read_session() as session:
        return [
            TagOption(tag.id, tag.name, tag.color) for tag in session.exec(sm_select(Tag).order_by(Tag.group, Tag.name))
        ]


# --- reading ------------------------------------------------------------------------


def _usage_counts(conn) -> dict[int, tuple[int, int]]:
    """tag id -> (all assignments, manual ones); one pass over the (tag, customer) index."""
    manual = func.sum(case((TA.source == SOURCE_MANUAL, 1), else_=0))
    rows = conn.execute(select(TA.tag_id, func.count(), manual).group_by(TA.tag_id)).all()
    return {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in rows}


def list_tags(actor: Actor) -> list[TagView]:
    """Every tag with its usage count (manual / by rule) and number of rules."""
    require(actor, "customer.view", action="tag.list")
    rule = TagRule.__table__.c
    with read_connection() as conn:
        usage = _usage_counts(conn)
        rules = dict(conn.execute(select(rule.tag_id, func.count()).group_by(rule.tag_id)).all())
        tags = conn.execute(
            select(T.id, T.name, T.group, T.color, T.description, T.last_assigned_at, T.created_at).order_by(
                T.group, T.name_key
            )
        ).all()
    views = []
    for tag in tags:
        total, manual = usage.get(tag.id, (0, 0))
        views.append(
            TagView(
                id=tag.id,
                name=tag.name,
                group=tag.group,
                color=tag.color,
                description=tag.description or "",
                usage=total,
                manual=manual,
                by_rule=total - manual,
                rules=int(rules.get(tag.id, 0)),
                last_assigned_at=format_local(tag.last_assigned_at),
                created_at=format_local(tag.created_at),
            )
        )
    return views


def tag_usage(actor: Actor, tag_id: int) -> int:
    """How many customers have the tag (what a delete would affect)."""
    require(actor, "customer.view", action="tag.list")
    tag_id = parse_id(tag_id)
    with read_connection() as conn:
        return conn.execute(
            select(func.count()).select_from(TagAssignment.__table__).where(TA.tag_id == tag_id)
        ).scalar_one()


# --- create / edit ------------------------------------------------------------------


def _clean(name: object, group: object, color: object, description: object) -> dict:
    errors: dict[str, tuple[str, dict]] = {}
    clean_name = " ".join(str(name or "").split())
    if not clean_name:
        errors["name"] = ("error.required", {})
    elif len(clean_name) > MAX_TAG_NAME:
        errors["name"] = ("error.too_long", {"max": MAX_TAG_NAME})
    group = str(group or "custom")
    if group not in TAG_GROUPS:
        errors["group"] = ("error.bad_choice", {})
    color = str(color or "gray")
    if color not in TAG_COLORS:
        errors["color"] = ("error.bad_choice", {})
    description = str(description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = ("error.too_long", {"max": MAX_DESCRIPTION})
    if errors:
        raise ValidationError(errors)
    return {
        "name": clean_name,
        "name_key": tag_key(clean_name),
        "group": group,
        "color": color,
        "description": description,
    }


def _name_taken(session, key: str, except_id: int | None = None) -> Tag | None:
    statement = sm_select(Tag).where(Tag.name_key == key)
    if except_id is not None:
        statement = statement.where(Tag.id != except_id)
    return session.exec(statement).first()


def create_tag(actor: Actor, name: str, group: str = "custom", color: str = "gray", description: str = "") -> int:
    require(actor, "tag.manage", action="tag.create", target_type="tag")
    values = _clean(name, group, color, description)
    with write_session() as session:
        other = _name_taken(session, values["name_key"])
        if other is not None:
            raise ValidationError.single("name", "tagadmin.name_taken", name=other.name)
        tag = Tag(**values, created_by_id=actor.user_id)
        session.add(tag)
        session.flush()
        audit.record(
            session,
            actor,
            "tag.create",
            target_type="tag",
            target_id=tag.id,
            details={k: values[k] for k in ("name", "group", "color", "description")},
        )
        return tag.id


def update_tag(actor: Actor, tag_id: int, name: str, group: str, color: str, description: str = "") -> None:
    tag_id = parse_id(tag_id)
    require(actor, "tag.manage", action="tag.update", target_type="tag", target_id=tag_id)
    values = _clean(name, group, color, description)
    with write_session() as session:
        tag = session.get(Tag, tag_id)
        if tag is None:
            raise NotFound()
        other = _name_taken(session, values["name_key"], except_id=tag_id)
        if other is not None:
            raise ValidationError.single("name", "tagadmin.name_taken", name=other.name)
        changes = {k: [getattr(tag, k), v] for k, v in values.items() if k != "name_key" and getattr(tag, k) != v}
        if not changes:
            return
        for key, value in values.items():
            setattr(tag, key, value)
        session.add(tag)
        audit.record(session, actor, "tag.update", target_type="tag", target_id=tag_id, details={"changes": changes})


# --- merge / delete -----------------------------------------------------------------


#: When both tags of a merge have at least this many customers, the person types
#: the name of the tag that will disappear (a merge cannot be undone).
MERGE_CONFIRM_USAGE = 50


@dataclasses.dataclass
class MergePreview:
    """What a merge would do, shown before it is done."""

    source_id: int
    source_name: str
    source_usage: int
    target_id: int
    target_name: str
    target_usage: int
    both: int  # customers that have both tags
    needs_confirm: bool  # both tags are big: the source's name must be typed


def _merge_figures(conn, source_id: int, target_id: int) -> tuple[int, int, int]:
    """(customers with the source, with the target, with both)."""
    other = TagAssignment.__table__.alias("other")
    counts = dict(
        conn.execute(
            select(TA.tag_id, func.count()).where(TA.tag_id.in_((source_id, target_id))).group_by(TA.tag_id)
        ).all()
    )
    both = conn.execute(
        select(func.count())
        .select_from(TagAssignment.__table__)
        .where(
            TA.tag_id == source_id,
            exists().where(other.c.customer_id == TA.customer_id, other.c.tag_id == target_id),
        )
    ).scalar_one()
    return int(counts.get(source_id, 0)), int(counts.get(target_id, 0)), int(both)


def _needs_confirm(source_usage: int, target_usage: int) -> bool:
    return min(source_usage, target_usage) >= MERGE_CONFIRM_USAGE


def merge_preview(actor: Actor, source_id: int, target_id: int) -> MergePreview:
    """Both tags' customer counts (and the overlap) for the merge dialog."""
    source_id, target_id = parse_id(source_id), parse_id(target_id)
    require(actor, "tag.manage", action="tag.merge_preview", target_type="tag", target_id=source_id)
    if source_id == target_id:
        raise ValidationError.single("target", "tagadmin.merge_same")
    with read_connection() as conn:
        names = dict(conn.execute(select(T.id, T.name).where(T.id.in_((source_id, target_id)))).all())
        if source_id not in names or target_id not in names:
            raise NotFound()
        source_usage, target_usage, both = _merge_figures(conn, source_id, target_id)
    return MergePreview(
        source_id=source_id,
        source_name=names[source_id],
        source_usage=source_usage,
        target_id=target_id,
        target_name=names[target_id],
        target_usage=target_usage,
        both=both,
        needs_confirm=_needs_confirm(source_usage, target_usage),
    )


def merge_tags(actor: Actor, source_id: int, target_id: int, confirm: str = "") -> int:
    """Merge tag ``source`` into ``target``: assignments move (no duplicates; a
    manual assignment wins over a rule one), rules of the source now assign the
    target, the source disappears. Returns how many customers newly got the target.

    When both tags have ``MERGE_CONFIRM_USAGE`` customers or more, ``confirm``
    must be the source tag's name as typed by the person (checked here, not
    only in the dialog)."""
    source_id, target_id = parse_id(source_id), parse_id(target_id)
    require(actor, "tag.manage", action="tag.merge", target_type="tag", target_id=source_id)
    if source_id == target_id:
        raise ValidationError.single("target", "tagadmin.merge_same")
    with write_session() as session:
        source, target = session.get(Tag, source_id), session.get(Tag, target_id)
        if source is None or target is None:
            raise NotFound()
        source_usage, target_usage, _both = _merge_figures(session.connection(), source_id, target_id)
        if _needs_confirm(source_usage, target_usage) and tag_key(str(confirm or "")) != source.name_key:
            raise ValidationError.single(
                "confirm",
                "tagadmin.merge_confirm_mismatch",
                name=source.name,
                source_count=source_usage,
                target_count=target_usage,
            )
        src = TagAssignment.__table__.alias("src")
        dst = TagAssignment.__table__.alias("dst")
        # Customers with both: a manual source assignment makes the target manual.
        both_manual = session.execute(
            update(TagAssignment.__table__)
            .where(
                TA.tag_id == target_id,
                TA.source != SOURCE_MANUAL,
                exists().where(
                    src.c.customer_id == TA.customer_id, src.c.tag_id == source_id, src.c.source == SOURCE_MANUAL
                ),
            )
            .values(source=SOURCE_MANUAL, rule_id=None)
        ).rowcount
        moved = session.execute(
            insert(TagAssignment.__table__).from_select(
                ["customer_id", "tag_id", "source", "rule_id", "assigned_at", "assigned_by_id"],
                select(
                    src.c.customer_id,
                    literal(target_id),
                    src.c.source,
                    src.c.rule_id,
                    src.c.assigned_at,
                    src.c.assigned_by_id,
                ).where(
                    src.c.tag_id == source_id,
                    ~exists().where(dst.c.customer_id == src.c.customer_id, dst.c.tag_id == target_id),
                ),
            )
        ).rowcount
        source_total = session.execute(
            select(func.count()).select_from(TagAssignment.__table__).where(TA.tag_id == source_id)
        ).scalar_one()
        session.execute(delete(TagAssignment.__table__).where(TA.tag_id == source_id))
        rules_moved = session.execute(
            update(TagRule.__table__).where(TagRule.__table__.c.tag_id == source_id).values(tag_id=target_id)
        ).rowcount
        if source.last_assigned_at and (
            target.last_assigned_at is None or as_utc(source.last_assigned_at) > as_utc(target.last_assigned_at)
        ):
            target.last_assigned_at = source.last_assigned_at
            session.add(target)
        source_name = source.name
        session.delete(source)
        audit.record(
            session,
            actor,
            "tag.merge",
            target_type="tag",
            target_id=target_id,
            details={
                "from_id": source_id,
                "from": source_name,
                "into": target.name,
                "source_assignments": source_total,
                "moved": moved,
                "already_had": source_total - moved,
                "made_manual": both_manual,
                "rules_moved": rules_moved,
            },
        )
        customers_changed(session, MANY, TAGS)
    return moved


def delete_tag(actor: Actor, tag_id: int) -> int:
    """Delete a tag, its assignments and its rules; returns the number of affected customers."""
    tag_id = parse_id(tag_id)
    require(actor, "tag.manage", action="tag.delete", target_type="tag", target_id=tag_id)
    with write_session() as session:
        tag = session.get(Tag, tag_id)
        if tag is None:
            raise NotFound()
        affected = session.execute(delete(TagAssignment.__table__).where(TA.tag_id == tag_id)).rowcount
        rules = session.execute(delete(TagRule.__table__).where(TagRule.__table__.c.tag_id == tag_id)).rowcount
        name = tag.name
        session.delete(tag)
        audit.record(
            session,
            actor,
            "tag.delete",
            target_type="tag",
            target_id=tag_id,
            details={"name": name, "customers": affected, "rules_deleted": rules},
        )
        if affected:
            customers_changed(session, MANY, TAGS)
    return affected


# --- hygiene ------------------------------------------------------------------------


@dataclasses.dataclass
class NearDuplicate:
    a_id: int
    a_name: str
    b_id: int
    b_name: str
    reason: str  # "edit_distance" | "pinyin"
    a_usage: int = 0
    b_usage: int = 0


@dataclasses.dataclass
class Hygiene:
    unused: list[TagView]
    stale: list[TagView]
    near_duplicates: list[NearDuplicate]
    idle_days: int


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (tag names are short)."""
    if a == b:
        return 0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edited_characters(a: str, b: str) -> set[str]:
    """The characters an optimal (Levenshtein) alignment of ``a`` and ``b``
    substitutes, inserts or deletes."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            row.append(min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + (ca != cb)))
        rows.append(row)
    changed: set[str] = set()
    i, j = len(a), len(b)
    while i or j:
        if i and j and rows[i][j] == rows[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            if a[i - 1] != b[j - 1]:
                changed |= {a[i - 1], b[j - 1]}
            i, j = i - 1, j - 1
        elif i and rows[i][j] == rows[i - 1][j] + 1:
            changed.add(a[i - 1])
            i -= 1
        else:
            changed.add(b[j - 1])
            j -= 1
    return changed


def _typo_character(char: str) -> bool:
    """A character whose change can be a slip of the keyboard: a Latin letter,
    a space or punctuation. A different Chinese character (金卡 / 银卡), digit
    (2025 / 2026) or symbol makes a different tag."""
    import unicodedata

    if unicodedata.category(char)[0] in ("P", "Z"):
        return True
    return char.isalpha() and "LATIN" in unicodedata.name(char, "")


def _close(a: str, b: str) -> bool:
    """Near-duplicate by spelling: one edit for short names, two for long ones,
    and every edited character one a typo could change (see ``_typo_character``)."""
    shortest = min(len(a), len(b))
    if shortest < 2:
        return False
    limit = 1 if shortest < 6 else 2
    if abs(len(a) - len(b)) > limit or edit_distance(a, b) > limit:
        return False
    return all(_typo_character(char) for char in edited_characters(a, b))


def near_duplicates(names: list[tuple[int, str]], usage: dict[int, int] | None = None) -> list[NearDuplicate]:
    """Pairs of tags that look like the same tag: same pinyin (a homophone typed
    by mistake), or a small edit of letters, spaces or punctuation. Names that
    differ in a Chinese character with another sound, or in a digit, are
    different tags and never proposed."""
    from meiqia_app.services.customers.search_text import pinyin_of

    usage = usage or {}
    keyed = [(tag_id, name, tag_key(name), pinyin_of(name)[0]) for tag_id, name in names]
    pairs = []
    for i, (a_id, a_name, a_key, a_pinyin) in enumerate(keyed):
        for b_id, b_name, b_key, b_pinyin in keyed[i + 1 :]:
            counts = (usage.get(a_id, 0), usage.get(b_id, 0))
            if a_pinyin and a_pinyin == b_pinyin:
                pairs.append(NearDuplicate(a_id, a_name, b_id, b_name, "pinyin", *counts))
            elif _close(a_key, b_key):
                pairs.append(NearDuplicate(a_id, a_name, b_id, b_name, "edit_distance", *counts))
    return pairs


def tag_hygiene(actor: Actor, idle_days: int = 90, now: dt.datetime | None = None) -> Hygiene:
    """Unused tags, tags not assigned in ``idle_days`` days, near-duplicate names."""
    require(actor, "tag.manage", action="tag.hygiene")
    try:
        idle_days = max(1, min(3650, int(idle_days)))
    except (TypeError, ValueError):
        raise ValidationError.single("idle_days", "error.bad_number") from None
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=idle_days)
    views = list_tags(actor)
    with get_engine().connect() as conn:
        last = {row.id: row.last_assigned_at for row in conn.execute(select(T.id, T.last_assigned_at))}
    unused = [v for v in views if v.usage == 0]
    stale = [v for v in views if v.usage > 0 and (last.get(v.id) is None or as_utc(last[v.id]) < cutoff)]
    return Hygiene(
        unused=unused,
        stale=stale,
        near_duplicates=near_duplicates([(v.id, v.name) for v in views], {v.id: v.usage for v in views}),
        idle_days=idle_days,
    )


# --- bulk assignment over a selection -------------------------------------------------


def start_bulk_tag_job(actor: Actor, selection: Selection, tag_id: int, action: str) -> int:
    """Add (``action="add"``) or remove (``"remove"``) one tag on every customer of
    ``selection`` in a background job; returns the job id for ``jobs.job_view``.

    Added assignments are manual (a person chose them). Trashed customers are
    never tagged. One audit entry with the count is written when the job ends.
    """
    tag_id = parse_id(tag_id)
    require(
        actor,
        "tag.assign",
        action=f"tag.bulk_{action if action in BULK_ACTIONS else 'invalid'}",
        target_type="tag",
        target_id=tag_id,
    )
    if action not in BULK_ACTIONS:
        raise ValidationError.single("action", "error.bad_choice")
    if not isinstance(selection, Selection):
        selection = Selection.from_dict(selection)
    check_ticked_in_reach(actor, selection, f"tag.bulk_{action}")
    with read_session() as session:
        tag = session.get(Tag, tag_id)
        if tag is None:
            raise NotFound()
        tag_name = tag.name
    total = selection_count(actor, selection, exact=True)
    job_id = jobs.create_job(
        actor,
        BULK_JOB_KIND,
        {
            "tag_id": tag_id,
            "tag": tag_name,
            "action": action,
            "selection": selection.to_dict(),
            "described": selection.describe(),
        },
        total=total,
    )
    jobs.start_in_background(job_id)
    return job_id


def bulk_tag(actor: Actor, selection: Selection, tag_id: int, action: str) -> BulkResult:
    """The same as the job, run in this thread (CLI, tests, benchmarks)."""
    tag_id = parse_id(tag_id)
    require(actor, "tag.assign", action=f"tag.bulk_{action}", target_type="tag", target_id=tag_id)
    if action not in BULK_ACTIONS:
        raise ValidationError.single("action", "error.bad_choice")
    check_ticked_in_reach(actor, selection, f"tag.bulk_{action}")
    job_id = jobs.create_job(
        actor,
        BULK_JOB_KIND,
        {
            "tag_id": tag_id,
            "action": action,
            "selection": selection.to_dict(),
            "described": selection.describe(),
        },
        total=selection_count(actor, selection, exact=True),
    )
    view = jobs.run_job(job_id)
    return BulkResult.of_job(view)


def _apply_batch(conn, ids: list[int], tag_id: int, action: str, actor: Actor, now: dt.datetime) -> int:
    if action == "add":
        statement = insert(TagAssignment.__table__).from_select(
            ["customer_id", "tag_id", "source", "rule_id", "assigned_at", "assigned_by_id"],
            select(
                C.id,
                literal(tag_id),
                literal(SOURCE_MANUAL),
                literal(None),
                literal(now, TA.assigned_at.type),
                literal(actor.user_id, TA.assigned_by_id.type),
            ).where(C.id.in_(ids), C.status != "trashed", ~exists().where(TA.customer_id == C.id, TA.tag_id == tag_id)),
        )
        return conn.execute(statement).rowcount
    return conn.execute(delete(TagAssignment.__table__).where(TA.tag_id == tag_id, TA.customer_id.in_(ids))).rowcount


def _bulk_worker(ctx: jobs.JobContext) -> dict:
    params = ctx.params
    tag_id, action = int(params["tag_id"]), params["action"]
    selection = Selection.from_dict(params["selection"])
    actor = ctx.actor
    require(actor, "tag.assign", action=f"tag.bulk_{action}", target_type="tag", target_id=tag_id)
    after_id = int(ctx.checkpoint.get("after_id", 0))
    changed = int(ctx.checkpoint.get("changed", 0))
    processed = ctx.processed
    now = utcnow()
    with read_session() as session:
        if session.get(Tag, tag_id) is None:
            raise NotFound()
    for ids in iter_selected_ids(actor, selection, after_id=after_id, batch=BULK_BATCH):
        with write_session() as session:
            batch_changed = _apply_batch(session.connection(), ids, tag_id, action, actor, now)
            if batch_changed:
                customers_changed(session, ids, TAGS)  # once per batch, told after its commit
        changed += batch_changed
        processed += len(ids)
        after_id = ids[-1]
        ctx.progress(processed, {"after_id": after_id, "changed": changed})
    with write_session() as session:
        tag = session.get(Tag, tag_id)
        if tag is not None and action == "add" and changed:
            tag.last_assigned_at = now
            session.add(tag)
        audit.record(
            session,
            actor,
            f"tag.bulk_{action}",
            target_type="tag",
            target_id=tag_id,
            details={
                "tag": tag.name if tag else params.get("tag"),
                "count": changed,
                "selected": processed,
                "selection": params.get("described"),
                "job_id": ctx.job_id,
            },
        )
    return {"changed": changed, "selected": processed}


jobs.register_worker(BULK_JOB_KIND, _bulk_worker)
