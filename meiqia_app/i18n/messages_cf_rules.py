"""Messages of custom fields in tag rules, report segments, the duplicate merge and the timeline (issue 23)."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # tag rules
    "rule.cf_field_gone": (
        "第 {n} 个条件使用的自定义字段“{fields}”已停用或删除：请修改此规则",
        "Condition {n} uses the custom field “{fields}”, which was retired or deleted: edit this rule",
    ),
    "rule.cf_bad_value": ("第 {n} 个条件：“{field}”的值无效", "Condition {n}: the value of “{field}” is not valid"),
    "rule.cf_bad_range": (
        "第 {n} 个条件：请输入范围，如 10,20（一侧可留空）",
        "Condition {n}: enter a range such as 10,20 (one side may be empty)",
    ),
    "rule.cf_flag": (
        "使用了已停用或删除的字段：{fields}（不会运行，请修改）",
        "Uses a retired or deleted field: {fields} (not run until edited)",
    ),
    "rule.cf_gone_suffix": ("（已停用或删除）", " (retired or deleted)"),
    "rule.cf_group": ("自定义字段", "Custom fields"),
    "rule.op.contains": ("包含", "contains"),
    "rule.op.between": ("介于", "between"),
    "rule.op.empty": ("为空", "is empty"),
    "rule.op.not_empty": ("不为空", "is not empty"),
    "rule.cf_placeholder_range": ("如 10,20", "e.g. 10,20"),
    # report segments
    "report.cf_empty": ("（空）", "(empty)"),
    "report.cf_group_by": ("按自定义字段分组", "Group by custom field"),
    "report.cf_group_none": ("不分组", "No grouping"),
    "report.cf_filter_field": ("自定义字段", "Custom field"),
    "report.cf_filter_value": ("值", "Value"),
    "report.cf_not_groupable": (
        "只能按单选、多选或是/否字段分组",
        "Only single-select, multi-select and yes/no fields can group a segment",
    ),
    # duplicate merge
    "merge.cf_union": ("合并所有选项", "All options of both"),
    "merge.cf_masked_kept": (
        "敏感字段（您无权查看）：保留主记录的值",
        "Sensitive field (you may not see it): the kept record's value stays",
    ),
    "dup.cf_masked_choice": (
        "您无权查看这些敏感字段，不能选择其值：{fields}",
        "You may not see these sensitive fields, so you cannot choose their values: {fields}",
    ),
    # timeline
    "timeline.field_changed": ("字段变更", "Field changed"),
    "timeline.field_changed_line": ("{field}：{old} → {new}", "{field}: {old} → {new}"),
    "timeline.field_deleted_note": ("（字段已删除）", " (field deleted)"),
    "timeline.empty_value": ("（空）", "(empty)"),
    "timeline.text_changed": ("（已修改，文本不留存）", "(changed; the text is not kept)"),
    "timeline.kind.field": ("字段变更", "Field changes"),
}
