"""Notes on a customer (CUST-5): add, edit own, delete own; note.manage_any
(admins) edits and deletes anybody's.

Every change is audited with references, never the text: the audit log can
never be erased, and a note is free text about a person (it may name them,
quote their phone number...). An entry holds the note and customer ids, the
author and a keyed hash and length of the text (audit.text_ref) before and
after, so one can tell that and when a text changed, and check a given text
against it, but not read it. A deleted note is gone (backups aside). A
refusal to touch someone else's note is audited too. Notes do not bump the customer's ``version``: writing a note
while a colleague edits the profile must not turn their save into a conflict.
"""

from __future__ import annotations

from meiqia_app.db import read_session, write_session
from meiqia_app.models import Note
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.timeline import may_change_note
from meiqia_app.services.errors import NotFound, ValidationError
from meiqia_app.services.identity import rbac
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import utcnow

MAX_NOTE_LENGTH = 2000


def clean_text(text: object) -> str:
    """Trimmed note text; required and at most MAX_NOTE_LENGTH characters."""
    value = str(text or "").replace("\r\n", "\n").strip()
    if not value:
        raise ValidationError.single("text", "error.required")
    if len(value) > MAX_NOTE_LENGTH:
        raise ValidationError.single("text", "error.too_long", max=MAX_NOTE_LENGTH)
    return value


def _check_note(actor: Actor, note_id: int, action: str) -> None:
    """Refuse a note the actor may not change, before the write.

    A missing note and a note on a customer out of the actor's reach are the
    same NotFound, audited alike (CustomerAccess.record_customer): a crafted
    note id must not tell whether somebody else's customer has that note.
    Within reach, someone else's note without note.manage_any is refused
    (audited). Read in its own short session: a refusal is written in a
    transaction of its own, which must not wait behind a write transaction of
    ours. A note's author and customer never change, so checking before the
    write is safe.
    """
    with read_session() as session:
        note = session.get(Note, note_id)
        CustomerAccess(actor).record_customer(
            session.connection(), "note", note_id, None if note is None else note.customer_id, action
        )
        author_id = note.author_id
    if not may_change_note(actor, author_id):
        rbac.refuse(
            actor, action, "note.not_own", target_type="note", target_id=note_id, missing_permission="note.manage_any"
        )


def _require_note_access(actor: Actor, action: str, note_id: object) -> None:
    """customer.edit (for own notes) or note.manage_any (for anybody's) before the note is read."""
    if not actor.can("note.manage_any"):
        require(actor, "customer.edit", action=action, target_type="note", target_id=note_id)


def add_note(actor: Actor, customer_id: int, text: str) -> int:
    """Write a note on the customer; returns its id."""
    require(actor, "customer.edit", action="note.create", target_type="customer", target_id=customer_id)
    customer_id = parse_id(customer_id)
    body = clean_text(text)
    with write_session() as session:
        CustomerAccess(actor).load(session, customer_id, for_write=True, action="note.create")
        now = utcnow()
        note = Note(
            customer_id=customer_id,
            author_id=actor.user_id,
            author_name=(actor.display_name or actor.username)[:64],
            body=body,
            created_at=now,
            updated_at=now,
        )
        session.add(note)
        session.flush()
        audit.record(
            session,
            actor,
            "note.create",
            target_type="note",
            target_id=note.id,
            details={"customer_id": customer_id, "text": audit.text_ref(body)},
        )
        return note.id


def edit_note(actor: Actor, note_id: int, text: str) -> None:
    """Change a note's text (own notes; anybody's with note.manage_any)."""
    _require_note_access(actor, "note.update", note_id)
    note_id = parse_id(note_id)
    _check_note(actor, note_id, "note.update")
    body = clean_text(text)
    with write_session() as session:
        note = session.get(Note, note_id)
        if note is None:
            raise NotFound()
        CustomerAccess(actor).load(session, note.customer_id, for_write=True, action="note.update")
        if note.body == body:
            return
        old = note.body
        note.body = body
        note.updated_at = utcnow()
        session.add(note)
        audit.record(
            session,
            actor,
            "note.update",
            target_type="note",
            target_id=note.id,
            details={
                "customer_id": note.customer_id,
                "author_id": note.author_id,
                "text_before": audit.text_ref(old),
                "text": audit.text_ref(body),
            },
        )


def delete_note(actor: Actor, note_id: int) -> None:
    """Delete a note (own notes; anybody's with note.manage_any); the audit entry keeps a hash of its text."""
    _require_note_access(actor, "note.delete", note_id)
    note_id = parse_id(note_id)
    _check_note(actor, note_id, "note.delete")
    with write_session() as session:
        note = session.get(Note, note_id)
        if note is None:
            raise NotFound()
        CustomerAccess(actor).load(session, note.customer_id, for_write=True, action="note.delete")
        details = {
            "customer_id": note.customer_id,
            "author_id": note.author_id,
            "author": note.author_name,
            "created_at": note.created_at.isoformat(),
            "text": audit.text_ref(note.body),
        }
        session.delete(note)
        audit.record(session, actor, "note.delete", target_type="note", target_id=note_id, details=details)
