"""A customer's consents (marketing messages, analytics): recording that the
customer gave or withdrew one (退订, "unsubscribe").

The customer row keeps the current answer and when it was given
(``consent_<kind>`` / ``consent_<kind>_at``). Every change is an audit entry
(``customer.consent``: who, when, which consent, before and after), and the
customer's timeline shows those entries (services/customers/timeline.py, kind
"consent"), so the history of a customer's answers is the audit log's, which
nobody can edit. A change bumps the customer's version like a profile edit:
an edit form opened before it was read on the old answer.
"""

from __future__ import annotations

from sqlalchemy import update

from meiqia_app.db import write_session
from meiqia_app.models import Customer
from meiqia_app.services.audit import log as audit
from meiqia_app.services.customers.access import CustomerAccess, parse_id
from meiqia_app.services.customers.changes import CONSENT, customers_changed
from meiqia_app.services.errors import Conflict, ValidationError
from meiqia_app.services.identity.rbac import Actor, require
from meiqia_app.timeutil import format_local, utcnow

CONSENT_KINDS = ("marketing", "analytics")
AUDIT_ACTION = "customer.consent"


def _granted(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1", 1, "yes", "on"):
        return True
    if value in ("false", "0", 0, "no", "off", ""):
        return False
    raise ValidationError.single("granted", "error.bad_choice")


def set_consent(actor: Actor, customer_id: int, kind: str, granted: object) -> bool:
    """Record the customer's answer for one consent; returns whether anything changed.

    Setting the answer the customer already has changes nothing and writes no entry.
    """
    require(actor, "customer.edit", action=AUDIT_ACTION, target_type="customer", target_id=customer_id)
    if kind not in CONSENT_KINDS:
        raise ValidationError.single("consent", "error.bad_choice")
    granted = _granted(granted)
    customer_id = parse_id(customer_id)
    flag, stamp = f"consent_{kind}", f"consent_{kind}_at"
    with write_session() as session:
        customer = CustomerAccess(actor).load(session, customer_id, for_write=True, action=AUDIT_ACTION)
        before = bool(getattr(customer, flag))
        if before == granted:
            return False
        now = utcnow()
        version = customer.version
        result = session.execute(
            update(Customer)
            .where(Customer.id == customer_id, Customer.version == version)
            .values(
                **{flag: granted, stamp: now},
                version=Customer.version + 1,
                updated_at=now,
                updated_by_id=actor.user_id,
                updated_by_name=actor.display_name or actor.username,
            )
        )
        if result.rowcount != 1:
            session.rollback()
            fresh = CustomerAccess(actor).load(session, customer_id)
            raise Conflict(by=fresh.updated_by_name or "?", at=format_local(fresh.updated_at))
        audit.record(
            session,
            actor,
            AUDIT_ACTION,
            target_type="customer",
            target_id=customer_id,
            details={
                "consent": kind,
                "granted": granted,
                "changes": {flag: [before, granted]},
                "by": (actor.display_name or actor.username)[:64],
                "version": version + 1,
            },
        )
        customers_changed(session, [customer_id], CONSENT)  # the list filters on marketing consent
    return True


__all__ = ["AUDIT_ACTION", "CONSENT_KINDS", "set_consent"]
