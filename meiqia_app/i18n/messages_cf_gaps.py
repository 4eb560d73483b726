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
    # the open API's custom field filters (GET /customers?cf.<key>=…)
    "api.cf_param_value": ("参数值无效", "The parameter's value is not valid"),
    "api.cf_param_unknown": (
        "未知参数：应为 cf.<key>、cf.<key>.min、cf.<key>.max 或 cf.<key>.empty",
        "Unknown parameter: expected cf.<key>, cf.<key>.min, cf.<key>.max or cf.<key>.empty",
    ),
    "api.cf_param_unknown_field": (
        "没有键为“{name}”的自定义字段（或已停用）",
        "No custom field has the key “{name}” (or it was retired)",
    ),
    "api.cf_param_too_many": (
        "自定义字段参数过多（最多 {max} 个）",
        "Too many custom field parameters (at most {max})",
    ),
    "api.cf_param_too_many_fields": (
        "最多按 {max} 个自定义字段筛选",
        "Filter by at most {max} custom fields",
    ),
    "api.cf_param_once": ("此参数只能出现一次", "This parameter may be given only once"),
    "api.cf_param_not_for_type": ("此字段类型不支持该参数", "This field's type does not take this parameter"),
    "api.cf_param_option": ("没有此选项；可用的选项：{options}", "No such option; the options are: {options}"),
    "api.cf_param_boolean": ("应为 true 或 false", "Expected true or false"),
    "api.cf_param_combined": (
        "同一字段的等于、范围和是否为空条件不能同时使用",
        "Equals, range and empty filters on the same field cannot be combined",
    ),
}
