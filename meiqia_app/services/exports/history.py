"""The list of exports a user sees (their own, or everyone's with export.view_all)."""

from __future__ import annotations

from sqlmodel import select

from meiqia_app.db import read_session
from meiqia_app.models import ExportJob
from meiqia_app.services.exports.files import purge_expired, reap_interrupted
from meiqia_app.services.exports.info import ExportInfo, export_dto
from meiqia_app.services.identity.rbac import Actor, require


def list_exports(actor: Actor, limit: int = 100) -> list[ExportInfo]:
    """The actor's own exports, newest first (everyone's with export.view_all)."""
    require(actor, "export.request", action="export.history")
    reap_interrupted()
    purge_expired()  # also deletes the files the exports just reaped left
    with read_session() as session:
        statement = select(ExportJob).order_by(ExportJob.id.desc()).limit(limit)
        if not actor.can("export.view_all"):
            statement = statement.where(ExportJob.requested_by_id == actor.user_id)
        return [export_dto(job) for job in session.exec(statement).all()]
