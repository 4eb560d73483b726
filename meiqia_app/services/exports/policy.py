"""The role's export policy (RBAC-4) applied to one request: which fields may be
chosen, how many rows, which time window, bulk or not, and whether a person
with export.approve must approve first. Gives every reason, not just the first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from meiqia_app.config import get_settings
from meiqia_app.services.custom_fields.field_types import key_of
from meiqia_app.services.customers.access import CustomerAccess, is_sensitive
from meiqia_app.services.customers.selection import KIND_IDS
from meiqia_app.services.exports.fields import export_fields
from meiqia_app.services.exports.rows import ExportSpec
from meiqia_app.services.identity.rbac import Actor
from meiqia_app.timeutil import today_local

#: Without bulk export a request may cover at most one list page of rows.
BULK_ROWS = 50


@dataclasses.dataclass(frozen=True)
class PolicyResult:
    reasons: tuple[tuple[str, dict], ...]  # (message key, params) of each refusal reason
    needs_approval: bool

    @property
    def allowed(self) -> bool:
        return not self.reasons

    def reason_keys(self) -> list[str]:
        return [key for key, _ in self.reasons]


#: A sensitive custom field follows the export rules of phone and e-mail: a role's list of
#: allowed fields lets it through when it lets either of them through (or names it).
SENSITIVE_LIKE = ("phone", "email")


def field_allowed(allowed: tuple[str, ...] | None, field: str) -> bool:
    """Whether a role's list of allowed fields (None: every field) lets ``field`` through.

    The list names built-in fields; custom fields come and go, so a non-sensitive one is
    allowed, and a sensitive one when the list allows phone or e-mail (or names it)."""
    if allowed is None or field in allowed:
        return True
    if key_of(field) is None:
        return False
    return not is_sensitive(field) or any(f in allowed for f in SENSITIVE_LIKE)


def field_availability(actor: Actor) -> dict[str, str]:
    """field → "" when the actor may export it, else the reason key (shown in the picker);
    the built-in fields, then the active custom fields ("cf.<key>")."""
    allowed = actor.export_policy.allowed_fields
    return {f: "" if field_allowed(allowed, f) else "export.reason.field_policy" for f in export_fields()}


def masked_fields(actor: Actor) -> set[str]:
    """Sensitive fields this actor exports masked (no customer.view_sensitive), custom ones included."""
    return set(CustomerAccess(actor).masked_fields(export_fields()))


def evaluate(actor: Actor, spec: ExportSpec, fmt: str, row_count: int) -> PolicyResult:
    policy = actor.export_policy
    reasons: list[tuple[str, dict]] = []
    if not actor.can("export.request"):
        reasons.append(("export.reason.no_permission", {}))
    refused = [f for f in spec.fields if not field_allowed(policy.allowed_fields, f)]
    if refused:
        reasons.append(("export.reason.fields", {"fields": ", ".join(refused)}))
    if policy.max_rows and row_count > policy.max_rows:
        reasons.append(("export.reason.max_rows", {"count": row_count, "limit": policy.max_rows}))
    pdf_cap = get_settings().export_pdf_max_rows
    if fmt == "pdf" and row_count > pdf_cap:
        reasons.append(("export.reason.pdf_rows", {"count": row_count, "limit": pdf_cap}))
    selection = spec.selection
    if not policy.bulk_allowed:
        whole_list = selection.kind != KIND_IDS and not selection.query.has_filters()
        if whole_list or row_count > BULK_ROWS:
            reasons.append(("export.reason.bulk", {"limit": BULK_ROWS}))
    if policy.window_days:
        earliest = today_local() - dt.timedelta(days=policy.window_days)
        if selection.kind == KIND_IDS:
            inside = True  # ticked rows were seen on a page: the window applies to filters
        else:
            query = selection.query
            starts = [value for value in (query.registered_from, query.active_from, query.purchase_from) if value]
            inside = any(dt.date.fromisoformat(value) >= earliest for value in starts)
        if not inside:
            reasons.append(("export.reason.window", {"days": policy.window_days}))
    needs_approval = bool(
        policy.approval_required and (policy.approval_over_rows == 0 or row_count > policy.approval_over_rows)
    )
    return PolicyResult(reasons=tuple(reasons), needs_approval=needs_approval)
