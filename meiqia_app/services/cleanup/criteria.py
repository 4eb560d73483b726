"""Which customers a cleanup works on (invalid contact values, stale or inactive customers: criteria and their SQL) and which actions it may take."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from sqlalchemy import and_, exists, false, or_, select
from sqlalchemy.orm import aliased

from meiqia_app.models import Customer, ErasureRequest
from meiqia_app.models.customer import STATUS_TRASHED
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.customers.listing import all_conditions, scoped_query
from meiqia_app.services.customers.selection import Selection, selection_conditions, ticked_out_of_reach
from meiqia_app.services.customers.validation import normalize_email, normalize_phone
from meiqia_app.services.errors import ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import utcnow

C = Customer.__table__.c
INACTIVE_MONTHS = (6, 12, 24)
SCOPES = ("active", "archived", "all")  # "all" = active + archived (never the trash)
MATCH_MODES = ("any", "all")
REASONS = ("inactive", "no_contact", "invalid_contact", "erasure_pending", "duplicate", "view")
ACTIONS = ("tag", "archive", "trash", "erase")
# What each action needs beyond cleanup.run.
ACTION_PERMISSIONS = {
    "tag": "tag.assign",
    "archive": "customer.archive",
    "trash": "customer.delete",
    "erase": "customer.erase",
}


# --- criteria ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Criteria:
    inactive_months: int = 0  # 0: not used
    no_contact: bool = False
    invalid_contact: bool = False
    erasure_pending: bool = False
    duplicates: bool = False
    view_id: int = 0  # 0: no saved view
    match: str = "any"  # any | all of the chosen criteria
    scope: str = "active"
    # A bulk action from the customer list: its Selection (a filter or ticked ids) as a dict.
    selection: dict | None = None

    @classmethod
    def from_dict(cls, data) -> Criteria:
        if not isinstance(data, dict):
            raise ValidationError.single("criteria", "error.bad_choice")
        try:
            months = int(data.get("inactive_months") or 0)
            view_id = int(data.get("view_id") or 0)
        except (TypeError, ValueError):
            raise ValidationError.single("criteria", "error.bad_choice") from None
        if months and months not in INACTIVE_MONTHS:
            raise ValidationError.single("inactive_months", "error.bad_choice")
        if view_id < 0:
            raise ValidationError.single("view_id", "error.bad_choice")
        match = data.get("match") or "any"
        scope = data.get("scope") or "active"
        if match not in MATCH_MODES or scope not in SCOPES:
            raise ValidationError.single("criteria", "error.bad_choice")
        selection = None
        if data.get("selection") is not None:
            selection = Selection.from_dict(data["selection"]).to_dict()  # validated, normalised
        criteria = cls(
            inactive_months=months,
            no_contact=data.get("no_contact") is True,
            invalid_contact=data.get("invalid_contact") is True,
            erasure_pending=data.get("erasure_pending") is True,
            duplicates=data.get("duplicates") is True,
            view_id=view_id,
            match=match,
            scope=scope,
            selection=selection,
        )
        if not criteria.chosen():
            raise ValidationError.single("criteria", "cleanup.no_criteria")
        return criteria

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def chosen(self) -> list[str]:
        names = []
        if self.inactive_months:
            names.append("inactive")
        for name in ("no_contact", "invalid_contact", "erasure_pending"):
            if getattr(self, name):
                names.append(name)
        if self.duplicates:
            names.append("duplicate")
        if self.view_id:
            names.append("view")
        if self.selection:
            names.append("selection")
        return names

    @property
    def list_selection_only(self) -> bool:
        """Only the customer list's selection: the list's own bulk action, not the cleanup wizard."""
        return self.chosen() == ["selection"]


def _months_ago(now: dt.datetime, months: int) -> dt.datetime:
    year, month = divmod(now.month - 1 - months, 12)
    year += now.year
    month += 1
    day = min(
        now.day,
        [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][
            month - 1
        ],
    )
    return now.replace(year=year, month=month, day=day)


@functools.lru_cache(maxsize=65536)
def _phone_ok(value: str) -> bool:
    try:
        return normalize_phone(value) == value
    except ValueError:
        return False


@functools.lru_cache(maxsize=65536)
def _email_ok(value: str) -> bool:
    if "@" not in value:
        return False
    try:
        normalize_email(value)
        return True
    except ValueError:
        return False


def invalid_values(conn, column) -> list[str]:
    """Distinct stored values of phone/e-mail the validators reject (read from the column's index)."""
    check = _phone_ok if column.name == "phone" else _email_ok
    bad = []
    statement = select(column).where(column.is_not(None), column != "").group_by(column)
    for (value,) in conn.execute(statement):
        if not check(value):
            bad.append(value)
    return bad


def reason_conditions(conn, actor: Actor, criteria: Criteria, now: dt.datetime | None = None) -> dict[str, object]:
    """One SQL condition per chosen criterion (the reason a row matched)."""
    now = now or utcnow()
    conditions: dict[str, object] = {}
    if criteria.inactive_months:
        # last_active_at is the latest of registration, login, chat, order and
        # event (the seed, imports and activity writers keep it so), so "no
        # login, chat or order since the cutoff" is one range of the
        # (status, last_active_at, id) index: ~0.1 s at 1,000,000 customers,
        # where checking the three sources row by row took 4 s.
        # tests/unit/test_cleanup_services.py checks the two agree on the seed.
        conditions["inactive"] = C.last_active_at < _months_ago(now, criteria.inactive_months)
    if criteria.no_contact:
        conditions["no_contact"] = and_(or_(C.phone.is_(None), C.phone == ""), or_(C.email.is_(None), C.email == ""))
    bad_phones: list[str] | None = None
    if criteria.invalid_contact or criteria.duplicates:
        bad_phones = invalid_values(conn, C.phone)
    if criteria.invalid_contact:
        bad_emails = invalid_values(conn, C.email)
        parts = ([C.phone.in_(bad_phones)] if bad_phones else []) + ([C.email.in_(bad_emails)] if bad_emails else [])
        conditions["invalid_contact"] = or_(*parts) if parts else false()
    if criteria.erasure_pending:
        er = ErasureRequest.__table__.c
        conditions["erasure_pending"] = exists().where(er.customer_id == C.id, er.status == "pending")
    if criteria.duplicates:
        # A later copy of an earlier customer (the earliest of a group stays), as the
        # duplicate finder groups them: same valid phone, same e-mail, same name in the same city.
        other = aliased(Customer.__table__)
        alive = and_(other.c.id < C.id, other.c.status != STATUS_TRASHED)
        phone_dup = and_(C.phone.is_not(None), C.phone != "", exists().where(other.c.phone == C.phone, alive))
        if bad_phones:
            phone_dup = and_(phone_dup, C.phone.not_in(bad_phones))
        conditions["duplicate"] = or_(
            phone_dup,
            and_(C.email.is_not(None), C.email != "", exists().where(other.c.email == C.email, alive)),
            and_(
                C.city.is_not(None), C.city != "", exists().where(other.c.name == C.name, other.c.city == C.city, alive)
            ),
        )
    if criteria.selection:
        conditions["selection"] = and_(*selection_conditions(conn, Selection.from_dict(criteria.selection), actor))
    if criteria.view_id:
        from meiqia_app.services.customers.saved_views import load_view

        query = dataclasses.replace(load_view(actor, criteria.view_id), status="all")
        conditions["view"] = and_(
            *all_conditions(conn, CustomerAccess(actor), scoped_query(actor, query, action="cleanup.run"))
        )
    return conditions


def criteria_conditions(conn, actor: Actor, criteria: Criteria, now: dt.datetime | None = None):
    """(full WHERE condition, per-reason conditions)."""
    reasons = reason_conditions(conn, actor, criteria, now)
    combined = (and_ if criteria.match == "all" else or_)(*reasons.values())
    # criteria.scope is one of SCOPES ("all": active and archived), within the actor's reach.
    return and_(*CustomerAccess(actor).status_conditions(criteria.scope), combined), reasons


def check_action(actor: Actor, action: str, verb: str, criteria: Criteria | None = None) -> None:
    if action not in ACTIONS:
        raise ValidationError.single("action", "error.bad_choice")
    # Archiving or trashing the rows a person selected on the list needs only that
    # permission (CUST-1 bulk actions); the cleanup criteria need cleanup.run too.
    if not (criteria is not None and criteria.list_selection_only and action in ("archive", "trash", "tag")):
        require(actor, "cleanup.run", action=f"cleanup.{verb}", target_type="customer")
    require(actor, ACTION_PERMISSIONS[action], action=f"cleanup.{verb}", target_type="customer")


def skip_unreachable_ticked(actor: Actor, criteria: Criteria, action: str) -> tuple[int, ...]:
    """Ticked ids of the criteria's selection that name no customer the actor reaches
    (missing or out of scope alike): the cleanup leaves them alone (its SQL is cut to the
    reach anyway) and says how many; each call audits them as one refusal under
    ``action`` (CustomerAccess.not_found: a crafted id list, since the list shows only
    customers in reach). () without ticked ids."""
    if not criteria.selection:
        return ()
    access = CustomerAccess(actor)
    unreachable = ticked_out_of_reach(access, Selection.from_dict(criteria.selection))
    if unreachable:
        access.not_found(unreachable, action)  # audited; the rest of the selection goes on
    return tuple(unreachable)
