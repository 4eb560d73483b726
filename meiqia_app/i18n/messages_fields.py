"""Messages of custom fields (自定义字段, issue 23)."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    "perm.field.manage": ("管理自定义字段", "Manage custom fields"),
}
