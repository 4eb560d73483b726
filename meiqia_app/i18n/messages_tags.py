"""Messages of the tags & rules feature (TAG-1..5)."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # tag catalogue
    "tagadmin.name_taken": ("已有同名标签“{name}”（不区分大小写和全半角）", "A tag named “{name}” already exists (case and width are ignored)"),
    "tagadmin.merge_same": ("不能把标签合并到它自己", "A tag cannot be merged into itself"),
    "tagadmin.bad_thresholds": ("阈值须满足 0 < 活跃天数 < 流失天数 ≤ 3650", "Thresholds must satisfy 0 < active days < churn days ≤ 3650"),
    # rule validation
    "rule.bad_condition": ("第 {n} 个条件无效", "Condition {n} is not valid"),
    "rule.bad_field": ("第 {n} 个条件：未知字段", "Condition {n}: unknown field"),
    "rule.bad_operator": ("第 {n} 个条件：该字段不支持此运算", "Condition {n}: this operator does not apply to the field"),
    "rule.bad_number": ("第 {n} 个条件：请输入有效数字", "Condition {n}: enter a valid number"),
    "rule.bad_choice": ("第 {n} 个条件：请选择有效的值", "Condition {n}: choose a valid value"),
    "rule.bad_text": ("第 {n} 个条件：请输入 1–32 个字符", "Condition {n}: enter 1–32 characters"),
    "rule.bad_date": ("第 {n} 个条件：日期格式应为 YYYY-MM-DD", "Condition {n}: the date must look like YYYY-MM-DD"),
    "rule.bad_days": ("第 {n} 个条件：天数应为 1–3650", "Condition {n}: days must be 1–3650"),
    "rule.bad_product": ("第 {n} 个条件：请选择商品", "Condition {n}: choose a product"),
    "rule.no_conditions": ("请至少添加一个条件", "Add at least one condition"),
    "rule.too_many": ("条件最多 {max} 个", "At most {max} conditions"),
}
