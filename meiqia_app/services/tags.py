"""The tag catalogue as the list page's filter needs it (TAG issue extends this)."""

from __future__ import annotations

import dataclasses

from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import Tag
from meiqia_app.services.rbac import Actor, require


@dataclasses.dataclass
class TagOption:
    id: int
    name: str
    color: str


def list_tag_options(actor: Actor) -> list[TagOption]:
    require(actor, "customer.view", action="tag.list")
    with read_session() as session:
        return [TagOption(tag.id, tag.name, tag.color) for tag in session.exec(select(Tag).order_by(Tag.group, Tag.name))]
