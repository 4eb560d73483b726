"""Per-customer data-portability export (EXP-7): everything about one customer
as JSON plus an XLSX with one sheet per section, in a zip (AES-256 when a
password is given). Stored as an ``export_job`` of kind "portability" so it
is listed in the history and downloaded through the same single-use token.

Sensitive values are masked for roles without customer.view_sensitive, like
every other read. Small by nature, so it is built synchronously.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import select

from meiqia_app.config import get_settings
from meiqia_app.db import read_session, write_session
from meiqia_app.models import BehaviorEvent, Conversation, ExportJob, Message, Note, Order, Tag, TagAssignment
from meiqia_app.models.customer import STATUS_TRASHED
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess
from meiqia_app.services.errors import NotFound, PermissionDenied
from meiqia_app.services.exports import protect as protection
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import utcnow

if TYPE_CHECKING:  # the export service is imported when used (see export_customer)
    from meiqia_app.services.exports.info import ExportInfo

HIDDEN = {"name_pinyin", "name_initials", "version", "updated_by_id"}


def _plain(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _record(model, access: CustomerAccess) -> dict:
    data = {}
    for key, value in model.model_dump().items():
        if key in HIDDEN:
            continue
        if key == "total_spent_cents":
            key, value = "total_spent", round((value or 0) / 100, 2)
        data[key] = _plain(access.mask(key, value))
    return data


def collect(actor: Actor, customer_id: int) -> dict:
    """Everything about one customer, masked for this actor: the JSON document the file holds as-is."""
    require(actor, "customer.view", action="export.portability", target_type="customer", target_id=customer_id)
    access = CustomerAccess(actor)
    with read_session() as session:
        customer = access.load(session, customer_id, action="export.portability")
        # Not of the trash (even for those who may see it), nor of an erased customer.
        if customer.status == STATUS_TRASHED or customer.erased_at is not None:
            raise NotFound()
        conversations = session.exec(
            select(Conversation).where(Conversation.customer_id == customer.id).order_by(Conversation.started_at)
        ).all()
        ids = [c.id for c in conversations]
        messages = (
            session.exec(
                select(Message)
                .where(Message.conversation_id.in_(ids))
                .order_by(Message.conversation_id, Message.sent_at)
            ).all()
            if ids
            else []
        )
        tags = session.exec(
            select(Tag.name)
            .join(TagAssignment, TagAssignment.tag_id == Tag.id)
            .where(TagAssignment.customer_id == customer.id)
        ).all()

        def rows(model, order):
            return [
                _record(r, access)
                for r in session.exec(select(model).where(model.customer_id == customer.id).order_by(order)).all()
            ]

        profile = _record(customer, access)
        try:
            profile["custom_attributes"] = json.loads(customer.custom_attributes or "{}")
        except ValueError:
            pass
        return {
            "customer": profile,
            "tags": list(tags),
            "orders": rows(Order, Order.created_at),
            "conversations": [_record(c, access) for c in conversations],
            "messages": [_record(m, access) for m in messages],
            "events": rows(BehaviorEvent, BehaviorEvent.occurred_at),
            "notes": rows(Note, Note.created_at),
            "exported_at": utcnow().isoformat(),
            "exported_by": actor.username,
        }


def _xlsx(path: Path, data: dict) -> None:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def safe(value):
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
            if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                value = "'" + value
        return value

    book = Workbook()
    sheet = book.active
    sheet.title = "customer"
    for key, value in data["customer"].items():
        sheet.append([key, safe(value)])
    sheet.append(["tags", safe("、".join(data["tags"]))])
    for section in ("orders", "conversations", "messages", "events", "notes"):
        rows = data[section]
        page = book.create_sheet(section)
        if rows:
            keys = list(rows[0])
            page.append(keys)
            for row in rows:
                page.append([safe(row.get(k)) for k in keys])
    book.save(path)


def needs_approval(actor: Actor) -> bool:
    """Whether the actor's export policy wants approval for a one-row export (then no direct portability export)."""
    policy = actor.export_policy
    return bool(policy.approval_required and (policy.approval_over_rows == 0 or 1 > policy.approval_over_rows))


def export_customer(actor: Actor, customer_id: int, password: str = "") -> ExportInfo:
    """Build the zip now; returns the export's DTO (download it with a token)."""
    from meiqia_app.services.exports.info import export_dto

    require(actor, "export.request", action="export.portability", target_type="customer", target_id=customer_id)
    if needs_approval(actor):
        # One customer's whole record is an export of one row: a role whose policy wants
        # approval for that goes through the export wizard, not around it.
        audit.record_refusal(
            actor,
            "export.portability",
            target_type="customer",
            target_id=str(customer_id),
            details={"reason": "approval_required"},
        )
        raise PermissionDenied("export.error.portability_needs_approval")
    if actor.can("customer.view_sensitive") and not password:
        # Contact details in clear: the same rule as a bulk export with sensitive fields.
        from meiqia_app.services.errors import ValidationError

        raise ValidationError.single("password", "export.error.password_required")
    if password:
        protection.validate_password(password)
    from meiqia_app.services.cleanup import retention

    data = collect(actor, customer_id)
    directory = get_settings().exports_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"portability-{int(customer_id)}-{secrets.token_hex(8)}"
    json_path, xlsx_path = directory / f".{stem}.json", directory / f".{stem}.xlsx"
    final = directory / f"{stem}.zip"
    try:
        json_path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        _xlsx(xlsx_path, data)
        if password:
            import pyzipper

            with pyzipper.AESZipFile(
                final, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
            ) as archive:
                archive.setpassword(password.encode("utf-8"))
                archive.setencryption(pyzipper.WZ_AES, nbits=256)
                archive.write(json_path, "customer.json")
                archive.write(xlsx_path, "customer.xlsx")
        else:
            with zipfile.ZipFile(final, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(json_path, "customer.json")
                archive.write(xlsx_path, "customer.xlsx")
    finally:
        json_path.unlink(missing_ok=True)
        xlsx_path.unlink(missing_ok=True)
    digest = hashlib.sha256(final.read_bytes()).hexdigest()
    now = utcnow()
    with write_session() as session:
        job = ExportJob(
            requested_by_id=actor.user_id,
            requested_by_name=actor.username,
            status="done",
            kind="portability",
            purpose="service",
            scope=json.dumps(
                {"text": f"customer #{int(customer_id)}", "selection": {"kind": "ids", "ids": [int(customer_id)]}}
            ),
            fields=json.dumps(["*"]),
            format="zip",
            protected=bool(password),
            row_estimate=1,
            row_count=1,
            progress_done=1,
            file_name=final.name,
            file_size=final.stat().st_size,
            file_sha256=digest,
            started_at=now,
            finished_at=now,
            expires_at=now + dt.timedelta(hours=retention.export_ttl_hours()),
        )
        session.add(job)
        session.flush()
        audit.record(
            session,
            actor,
            "export.portability",
            target_type="customer",
            target_id=int(customer_id),
            details={
                "export_id": job.id,
                "protected": bool(password),
                "sha256": digest,
                "sections": {k: len(v) for k, v in data.items() if isinstance(v, list)},
            },
        )
        return export_dto(job)
