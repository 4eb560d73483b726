"""Messages of the custom field gaps closed after issue 23: the export sorted by a custom field,
required custom fields in an import's mapping, segment groups in report files, and the open
API's custom field filters."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # report files: the segment grouped by a custom field
    "report.cf_groups_sheet": ("按{field}分组", "By {field}"),
    "report.cf_groups_share": ("占比", "Share"),
    # exports sorted by a custom field
    "export.error.cf_sort": (
        "无法按此字段排序：它已停用、删除，或不是可排序的类型",
        "The export cannot be sorted by this field: it was retired or deleted, or its type cannot be sorted",
    ),
    # import: required custom fields
    "import.cf_required_unmapped": (
        "必填的自定义字段“{fields}”没有对应的列：请为它选择一列，否则导入的客户会缺少此字段",
        "The required custom field “{fields}” has no column: choose one for it, or the imported "
        "customers would lack it",
    ),
    "import.cf_required_hint": (
        "必填字段尚未选择列：{fields}",
        "Required fields without a column: {fields}",
    ),
}
