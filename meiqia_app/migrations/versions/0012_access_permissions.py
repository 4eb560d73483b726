"""Ownership by permission, not by role name

What the admin role could do because of its name is now a permission (issue 21):

- ``export.view_all``: see, repeat, cancel and download everybody's exports;
- ``job.view_all``: follow and cancel everybody's background jobs;
- ``view.manage_any``: delete other people's saved views.

The roles named admin get all three (roles an admin edited keep their edits
otherwise); no other role had the behaviour, so none gets them.

Revision ID: 0012_access_permissions
Revises: 0011_open_api
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_access_permissions"
down_revision: str | None = "0011_open_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_ADMIN_PERMISSIONS = ("export.view_all", "job.view_all", "view.manage_any")


def upgrade() -> None:
    bind = op.get_bind()
    for role_id, permissions in bind.execute(sa.text("SELECT id, permissions FROM role WHERE name = 'admin'")).all():
        granted = json.loads(permissions or "[]")
        added = [p for p in NEW_ADMIN_PERMISSIONS if p not in granted]
        if added:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(granted + added), "id": role_id},
            )


def downgrade() -> None:
    bind = op.get_bind()
    for role_id, permissions in bind.execute(sa.text("SELECT id, permissions FROM role")).all():
        granted = json.loads(permissions or "[]")
        kept = [p for p in granted if p not in NEW_ADMIN_PERMISSIONS]
        if kept != granted:
            bind.execute(
                sa.text("UPDATE role SET permissions = :permissions WHERE id = :id"),
                {"permissions": json.dumps(kept), "id": role_id},
            )
