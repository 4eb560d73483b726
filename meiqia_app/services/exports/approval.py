"""Approval of export requests (nobody approves their own), starting an approved protected
export with its password, requesting an export again, cancelling one."""

from __future__ import annotations

import json

from sqlmodel import select

from meiqia_app.db import read_session, write_session
from meiqia_app.models import ExportJob
from meiqia_app.services.audit import log as audit
from meiqia_app.services.errors import Conflict, NotFound
from meiqia_app.services.exports import custom_sort
from meiqia_app.services.exports import protect as protection
from meiqia_app.services.exports.info import CANCELLABLE, ExportInfo, audit_details, export_dto
from meiqia_app.services.exports.request import request_export
from meiqia_app.services.exports.run import start_export
from meiqia_app.services.identity.rbac import Actor, refuse, require
from meiqia_app.timeutil import utcnow

# --- approval -------------------------------------------------------------------------------------


def list_pending(actor: Actor) -> list[ExportInfo]:
    require(actor, "export.approve", action="export.approvals")
    with read_session() as session:
        jobs = session.exec(
            select(ExportJob).where(ExportJob.status == "pending_approval").order_by(ExportJob.created_at)
        ).all()
        return [export_dto(job) for job in jobs]


def decide(actor: Actor, export_id: int, approve: bool, comment: str = "") -> ExportInfo:
    """Approve or reject a pending request. Nobody approves their own request."""
    require(actor, "export.approve", action="export.approve", target_type="export", target_id=export_id)
    comment = (comment or "").strip()[:500]
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None:
            raise NotFound()
        own = job.requested_by_id == actor.user_id
    if own:
        refuse(actor, "export.approve", "export.reason.own_request", target_type="export", target_id=export_id)
    start_after = False
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job.status != "pending_approval":
            raise Conflict("export.error.not_pending")
        job.approver_id = actor.user_id
        job.approver_name = actor.username
        job.decided_at = utcnow()
        job.decision_comment = comment
        if approve:
            # A protected export waits for its requester to give the password again
            # (it is never stored); an unprotected one starts now.
            job.status = "approved" if job.protected else "queued"
            start_after = not job.protected
        else:
            job.status = "rejected"
            job.finished_at = utcnow()
        session.add(job)
        audit.record(
            session,
            actor,
            "export.approve" if approve else "export.reject",
            target_type="export",
            target_id=job.id,
            details=audit_details(job, comment=comment, requester=job.requested_by_name, rows=job.row_estimate),
        )
        view = export_dto(job)
    if start_after:
        start_export(view.id, "")
    return view


def start_approved(actor: Actor, export_id: int, password: str) -> ExportInfo:
    """The requester starts an approved protected export, giving its password again."""
    require(actor, "export.request", action="export.run", target_type="export", target_id=export_id)
    protection.validate_password(password)
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None or job.requested_by_id != actor.user_id:
            raise NotFound()
        if job.status != "approved":
            raise Conflict("export.error.not_pending")
        job.status = "queued"
        job.heartbeat_at = utcnow()  # queued now, not when it was requested: no other worker takes it for dead
        session.add(job)
        view = export_dto(job)
    start_export(view.id, password)
    return view


def rerun_export(actor: Actor, export_id: int, password: str = "", lang: str = "zh", start: bool = True) -> ExportInfo:
    """Request the same export again (EXP-8): same scope, fields, sort and format,
    checked against the policy as it is now, with a fresh count."""
    with read_session() as session:
        job = session.get(ExportJob, int(export_id))
        if (
            job is None
            or job.kind != "customers"
            or not (actor.can("export.view_all") or job.requested_by_id == actor.user_id)
        ):
            raise NotFound()
        scope = json.loads(job.scope or "{}")
        sort = json.loads(job.sort or "{}")
        data = {
            "scope": {"kind": "view", "view_id": scope["view_id"]}
            if scope.get("view_id")
            else scope.get("selection") or {},
            "fields": json.loads(job.fields or "[]"),
            "format": job.format,
            "purpose": job.purpose,
            # a custom field gone since: by id, as the fields gone are left out
            "sort_field": custom_sort.present_sort(sort.get("field") or "id"),
            "sort_dir": sort.get("direction") or "asc",
        }
    return request_export(actor, data, password=password, lang=lang, start=start)


def cancel_export(actor: Actor, export_id: int) -> ExportInfo:
    with write_session() as session:
        job = session.get(ExportJob, int(export_id))
        if job is None or not (actor.can("export.view_all") or job.requested_by_id == actor.user_id):
            raise NotFound()
        if job.status not in CANCELLABLE:
            raise Conflict("export.error.not_cancellable")
        job.cancel_requested = True
        if job.status != "running":
            job.status = "cancelled"
            job.finished_at = utcnow()
            audit.record(
                session, actor, "export.cancel", target_type="export", target_id=job.id, details=audit_details(job)
            )
        session.add(job)
        return export_dto(job)
