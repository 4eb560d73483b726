"""Teams (小组): a name, a lead, members (user.manage).

A user is in one team or none (``app_user.team_id``). A customer's team is its
owner's team, so moving a user to another team moves their customers with
them; nothing else is stored. A lead is always a member (setting a lead puts
them in the team; leaving the team ends the lead role). Roles whose data scope
is a team scope (services/customers/access.py) see their team's customers.
"""

from __future__ import annotations

import dataclasses
import unicodedata

from sqlalchemy import func, update
from sqlmodel import Session, select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import Team, User
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import parse_id
from meiqia_app.services.customers.changes import MANY, TEAM, customers_changed
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity.rbac import Actor, require

MAX_NAME = 64


@dataclasses.dataclass(frozen=True)
class TeamMember:
    id: int
    name: str


@dataclasses.dataclass(frozen=True)
class TeamView:
    id: int
    name: str
    lead_id: int | None
    lead_name: str
    members: tuple[TeamMember, ...]


def clean_name(name: object) -> str:
    name = unicodedata.normalize("NFKC", str(name or "")).strip()
    if not name:
        raise ValidationError.single("name", "error.required")
    if len(name) > MAX_NAME:
        raise ValidationError.single("name", "error.too_long", max=MAX_NAME)
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValidationError.single("name", "error.bad_choice")
    return name


def _taken(session: Session, name: str, except_id: int | None = None) -> bool:
    statement = select(Team.id).where(func.lower(Team.name) == name.lower())
    if except_id is not None:
        statement = statement.where(Team.id != except_id)
    return session.exec(statement).first() is not None


def _team(session: Session, team_id: object) -> Team:
    team = session.get(Team, parse_id(team_id))
    if team is None:
        raise NotFound()
    return team


def _user(session: Session, user_id: object) -> User:
    user = session.get(User, parse_id(user_id))
    if user is None:
        raise NotFound()
    return user


def list_teams(actor: Actor) -> list[TeamView]:
    require(actor, "user.manage", action="team.list")
    with read_session() as session:
        teams = session.exec(select(Team).order_by(Team.name)).all()
        users = session.exec(select(User).where(User.team_id.is_not(None)).order_by(User.username)).all()
        names = {u.id: u.display_name or u.username for u in users}
        lead_ids = [t.lead_user_id for t in teams if t.lead_user_id and t.lead_user_id not in names]
        if lead_ids:
            for u in session.exec(select(User).where(User.id.in_(lead_ids))).all():
                names[u.id] = u.display_name or u.username
        return [
            TeamView(
                id=t.id,
                name=t.name,
                lead_id=t.lead_user_id,
                lead_name=names.get(t.lead_user_id, "") if t.lead_user_id else "",
                members=tuple(TeamMember(u.id, names[u.id]) for u in users if u.team_id == t.id),
            )
            for t in teams
        ]


def team_id_by_name(session: Session, name: str) -> int:
    """For the CLI: the team called ``name`` (letter case aside)."""
    found = session.exec(select(Team.id).where(func.lower(Team.name) == clean_name(name).lower())).first()
    if found is None:
        raise ValidationError.single("team", "team.unknown", name=name)
    return found


def create_team_record(session: Session, name: str) -> Team:
    """No permission check: the CLI, and create_team below."""
    name = clean_name(name)
    if _taken(session, name):
        raise ValidationError.single("name", "team.name_taken", name=name)
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team


def create_team(actor: Actor, name: str, lead_user_id: object = None) -> TeamView:
    require(actor, "user.manage", action="team.create")
    with write_session() as session:
        team = create_team_record(session, name)
        audit.record(session, actor, "team.create", target_type="team", target_id=team.id, details={"name": team.name})
        team_id = team.id
    if lead_user_id not in (None, ""):
        set_lead(actor, team_id, lead_user_id)
    return next(t for t in list_teams(actor) if t.id == team_id)


def rename_team(actor: Actor, team_id: object, name: str) -> None:
    require(actor, "user.manage", action="team.rename", target_type="team", target_id=team_id)
    with write_session() as session:
        team = _team(session, team_id)
        name = clean_name(name)
        if _taken(session, name, except_id=team.id):
            raise ValidationError.single("name", "team.name_taken", name=name)
        if name == team.name:
            return
        old, team.name = team.name, name
        session.add(team)
        audit.record(
            session, actor, "team.rename", target_type="team", target_id=team.id, details={"old": old, "name": name}
        )


def delete_team(actor: Actor, team_id: object) -> None:
    """The team's members leave it (their customers keep their owners, now without team)."""
    require(actor, "user.manage", action="team.delete", target_type="team", target_id=team_id)
    with write_session() as session:
        team = _team(session, team_id)
        members = session.execute(update(User).where(User.team_id == team.id).values(team_id=None)).rowcount
        name = team.name
        session.delete(team)
        audit.record(
            session,
            actor,
            "team.delete",
            target_type="team",
            target_id=team_id,
            details={"name": name, "members": members},
        )
        customers_changed(session, MANY, TEAM)  # the members' customers are in no team now


def set_lead(actor: Actor, team_id: object, user_id: object) -> None:
    """Make ``user_id`` the team's lead (they join the team); None / "": no lead."""
    require(actor, "user.manage", action="team.set_lead", target_type="team", target_id=team_id)
    moved = False
    with write_session() as session:
        team = _team(session, team_id)
        lead = None if user_id in (None, "") else _user(session, user_id)
        if lead is not None and lead.team_id != team.id:
            _leave_lead(session, lead)
            lead.team_id = team.id
            session.add(lead)
            moved = True
        team.lead_user_id = lead.id if lead else None
        session.add(team)
        audit.record(
            session,
            actor,
            "team.set_lead",
            target_type="team",
            target_id=team.id,
            details={"name": team.name, "lead_id": team.lead_user_id},
        )
        if moved:
            customers_changed(session, MANY, TEAM)  # the lead's customers moved with them


def _leave_lead(session: Session, user: User) -> None:
    """A user leaving their team stops leading it."""
    if user.team_id is None:
        return
    old = session.get(Team, user.team_id)
    if old is not None and old.lead_user_id == user.id:
        old.lead_user_id = None
        session.add(old)


def set_user_team(actor: Actor, user_id: object, team_id: object) -> None:
    """Put a user in a team (None / "": in no team). Their customers move with them."""
    require(actor, "user.manage", action="user.set_team", target_type="user", target_id=user_id)
    with write_session() as session:
        user = _user(session, user_id)
        team = None if team_id in (None, "", 0, "0") else _team(session, team_id)
        new_id = team.id if team else None
        if user.team_id == new_id:
            return
        _leave_lead(session, user)
        user.team_id = new_id
        session.add(user)
        audit.record(
            session,
            actor,
            "user.set_team",
            target_type="user",
            target_id=user.id,
            details={"team_id": new_id, "team": team.name if team else ""},
        )
        customers_changed(session, MANY, TEAM)  # their customers move with them
