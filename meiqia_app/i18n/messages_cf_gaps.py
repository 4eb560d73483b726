"""Messages of the custom field gaps closed after issue 23: the export sorted by a custom field,
required custom fields in an import's mapping, segment groups in report files, and the open
API's custom field filters."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # report files: the segment grouped by a custom field
    "report.cf_groups_sheet": ("按{field}分组", "By {field}"),
    "report.cf_groups_share": ("占比", "Share"),
}
