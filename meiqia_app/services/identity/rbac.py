"""Who may do what (RBAC-1..5): permissions, built-in roles, the acting user.

Our policy object: every service resolves an :class:`Actor` and calls
:func:`require` before touching data. A refusal is written to the audit log
in its own transaction (the caller's transaction is about to roll back) and
raised as :class:`PermissionDenied`.
"""

from __future__ import annotations

import dataclasses
import json

PERMISSIONS: tuple[str, ...] = (
    "customer.view",
    "customer.view_sensitive",
    "customer.create",
    "customer.edit",
    "customer.delete",
    "customer.archive",
    "customer.import",
    "customer.merge",
    "customer.erase",
    # Take an unowned customer from the pool (公海) (services/customers/ownership.py).
    "customer.claim",
    # Assign, transfer and release anybody's customers (services/customers/ownership.py).
    "customer.assign",
    "note.manage_any",
    # Delete other people's saved views (services/customers/saved_views.py).
    "view.manage_any",
    "tag.assign",
    "tag.manage",
    "rule.manage",
    "cleanup.run",
    "export.request",
    "export.approve",
    # See, repeat, cancel and download everybody's exports, not only one's own.
    "export.view_all",
    "report.view",
    "audit.view",
    "user.manage",
    "role.manage",
    "backup.manage",
    "settings.manage",
    # Define, change, retire and delete custom fields (/admin/fields, services/custom_fields/).
    "field.manage",
    # Follow and cancel everybody's background jobs, not only one's own (services/platform/jobs.py).
    "job.view_all",
    # The open API (services/integrations/api_keys.py, webhooks.py, ingest.py).
    "apikey.manage",
    "webhook.manage",
    "event.ingest",
)

ADMIN_ROLE = "admin"

BUILTIN_ROLES: dict[str, dict] = {
    "admin": {
        "label_zh": "管理员",
        "label_en": "Administrator",
        "permissions": PERMISSIONS,
        "data_scope": "all",
    },
    "manager": {
        "label_zh": "经理",
        "label_en": "Manager",
        "permissions": (
            "customer.view",
            "customer.view_sensitive",
            "customer.create",
            "customer.edit",
            "customer.archive",
            "customer.import",
            "customer.merge",
            "customer.claim",
            "customer.assign",
            "tag.assign",
            "tag.manage",
            "rule.manage",
            "export.request",
            "export.approve",
            "report.view",
        ),
        "data_scope": "all",
    },
    "data_analyst": {
        "label_zh": "数据分析师",
        "label_en": "Data analyst",
        "permissions": ("customer.view", "export.request", "report.view"),
        "data_scope": "all",
    },
    "senior_agent": {
        "label_zh": "高级客服",
        "label_en": "Senior agent",
        # View-only on customer data, sensitive fields included (seed 001).
        "permissions": ("customer.view", "customer.view_sensitive"),
        "data_scope": "team",
    },
    "agent": {
        "label_zh": "客服",
        "label_en": "Agent",
        "permissions": ("customer.view", "customer.create", "customer.edit", "tag.assign", "customer.claim"),
        "data_scope": "team_pool",
    },
}


@dataclasses.dataclass(frozen=True)
class ExportPolicy:
    """What a role may export (RBAC-4); enforced by the export service."""

    allowed_fields: tuple[str, ...] | None = None  # None: every exportable field
    max_rows: int = 0  # 0: no limit
    window_days: int = 0  # 0: any time; else the scope must lie within the last N days
    allowed_tag_ids: tuple[int, ...] | None = None  # None: any customers; else only these tags
    bulk_allowed: bool = True  # exports of "all customers" / more than one page of rows
    approval_required: bool = False
    approval_over_rows: int = 0  # with approval_required: only above this many rows (0: always)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> ExportPolicy:
        data = json.loads(raw or "{}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("allowed_fields", "allowed_tag_ids"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


DEFAULT_EXPORT_POLICIES: dict[str, ExportPolicy] = {
    "admin": ExportPolicy(),
    "manager": ExportPolicy(max_rows=200_000),
    "data_analyst": ExportPolicy(
        allowed_fields=None,  # resolved below: everything except the sensitive fields
        max_rows=50_000,
        window_days=366,
        approval_required=True,
        approval_over_rows=10_000,
    ),
    "senior_agent": ExportPolicy(max_rows=0, bulk_allowed=False, approval_required=True),
    "agent": ExportPolicy(max_rows=0, bulk_allowed=False, approval_required=True),
}


@dataclasses.dataclass(frozen=True)
class Actor:
    """The user on whose behalf a service runs, resolved from the session each time."""

    user_id: int | None
    username: str
    display_name: str
    role_name: str
    permissions: frozenset[str]
    export_policy: ExportPolicy = ExportPolicy()
    session_id: int | None = None
    client_ip: str = ""
    # Set when the actor is an API key (services/integrations/api_keys.py): no user, not the system.
    api_key_id: int | None = None
    # The role's data scope (models.auth.DATA_SCOPES) and the user's team with its
    # members' ids (read with the session): services/customers/access.py applies them.
    data_scope: str = "all"
    team_id: int | None = None
    team_member_ids: tuple[int, ...] = ()

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def is_system(self) -> bool:
        return self.user_id is None and self.api_key_id is None

    @property
    def is_api_key(self) -> bool:
        return self.api_key_id is not None


SYSTEM_ACTOR = Actor(
    user_id=None,
    username="system",
    display_name="系统",
    role_name=ADMIN_ROLE,
    permissions=frozenset(PERMISSIONS),
)


def require(actor: Actor, permission: str, *, action: str, target_type: str = "", target_id: object = "") -> None:
    """Raise PermissionDenied (and audit the refusal) unless the actor has the permission."""
    if permission in actor.permissions:
        return
    from meiqia_app.services.audit import log as audit  # audit imports rbac types; import late

    audit.record_refusal(
        actor,
        action,
        target_type=target_type,
        target_id=str(target_id or ""),
        details={"missing_permission": permission},
    )
    from meiqia_app.services.errors import PermissionDenied

    raise PermissionDenied(permission=permission)


def record_page_refusal(actor: Actor, path: str, missing: tuple[str, ...] | list[str]) -> None:
    """Audit that a role opened a page it may not use (the page then shows "no access" and loads nothing)."""
    from meiqia_app.services.audit import log as audit

    audit.record_refusal(
        actor,
        "page.open",
        target_type="page",
        target_id=str(path)[:64],
        details={"missing_permission": ",".join(sorted(missing))},
    )


def refuse(
    actor: Actor, action: str, reason_key: str, *, target_type: str = "", target_id: object = "", **details
) -> None:
    """Audit and raise a refusal that is not about a missing permission (e.g. a policy limit)."""
    from meiqia_app.services.audit import log as audit
    from meiqia_app.services.errors import PermissionDenied

    audit.record_refusal(
        actor,
        action,
        target_type=target_type,
        target_id=str(target_id or ""),
        details={"reason": reason_key, **details},
    )
    raise PermissionDenied(reason_key, **details)


def validate_permissions(permissions: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [p for p in permissions if p not in PERMISSIONS]
    if unknown:
        from meiqia_app.services.errors import ValidationError

        raise ValidationError.single("permissions", "error.unknown_permission", names=", ".join(unknown))
    return [p for p in PERMISSIONS if p in set(permissions)]
