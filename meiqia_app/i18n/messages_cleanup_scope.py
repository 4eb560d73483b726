"""Messages of cleanup on ticked customers out of reach (issue 21: ids are scope-checked)."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    "cleanup.report.skipped": (
        "跳过 {count} 个所选客户：未找到（不存在或不在您的数据范围内），未作任何更改",
        "{count} selected customers skipped: not found (missing or outside your data scope), nothing changed",
    ),
}
