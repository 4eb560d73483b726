"""Messages of the tags & rules feature (TAG-1..5)."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    "tagadmin.name_taken": ("已有同名标签“{name}”（不区分大小写和全半角）", "A tag named “{name}” already exists (case and width are ignored)"),
    "tagadmin.merge_same": ("不能把标签合并到它自己", "A tag cannot be merged into itself"),
}
