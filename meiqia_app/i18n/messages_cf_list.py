"""Messages of custom fields on the customer list (issue 23): columns, filter chips, the sort,
saved views, bulk edit."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # the list
    "cf_list.deleted_field": ("已删除的字段", "a deleted field"),
    "cf_list.ignored": (
        "以下字段已停用或删除，相关筛选和排序已忽略：{fields}",
        "These fields were retired or deleted; their filters and sort were ignored: {fields}",
    ),
    "cf_list.custom_columns": ("自定义字段", "Custom fields"),
    "cf_list.filter_open": ("按自定义字段筛选", "Filter by a custom field"),
    "cf_list.filter_title": ("自定义字段筛选", "Custom field filter"),
    "cf_list.field": ("字段", "Field"),
    "cf_list.operator": ("条件", "Condition"),
    "cf_list.value": ("值", "Value"),
    "cf_list.from": ("从", "From"),
    "cf_list.to": ("到", "To"),
    "cf_list.choose_field": ("请选择字段", "Choose a field"),
    "cf_list.no_fields": ("没有可筛选的自定义字段", "No custom field to filter by"),
    "cf_list.op.equals": ("等于", "equals"),
    "cf_list.op.any_of": ("任一", "any of"),
    "cf_list.op.range": ("范围", "between"),
    "cf_list.op.empty": ("为空", "is empty"),
    "cf_list.op.not_empty": ("不为空", "is not empty"),
    "cf_list.chip_empty": ("{field}：为空", "{field}: empty"),
    "cf_list.chip_not_empty": ("{field}：不为空", "{field}: not empty"),
    "cf_list.chip_value": ("{field}：{value}", "{field}: {value}"),
    "cf_list.chip_range": ("{field}：{low} ~ {high}", "{field}: {low} to {high}"),
    "cf_list.sensitive_refused": (
        "你看到的该字段是打码的，不能按它筛选、排序或批量修改",
        "You see this field masked: you cannot filter, sort or bulk edit by it",
    ),
    # bulk edit
    "bulk_edit.open": ("批量修改字段", "Set a field"),
    "bulk_edit.title": ("批量修改字段", "Set one field on the selected customers"),
    "bulk_edit.field": ("要修改的字段", "Field to set"),
    "bulk_edit.value": ("新值（留空即清空）", "New value (empty clears it)"),
    "bulk_edit.builtin": ("基本字段", "Built-in fields"),
    "bulk_edit.check": ("下一步", "Next"),
    "bulk_edit.explained": (
        "将把 {count} 位客户的「{field}」设为上面填写的值。此操作会记录在审计日志中。",
        "“{field}” will be set to the value above on {count} customers. This is recorded in the audit log.",
    ),
    "bulk_edit.stop": ("停止", "Stop"),
    "bulk_edit.done": ("已修改 {count} 位客户", "{count} customers changed"),
    "bulk_edit.stopped": (
        "已停止，已修改的客户保持修改后的值",
        "Stopped; the customers already changed keep the new value",
    ),
    "bulk_edit.cleared": ("（空）", "(empty)"),
    "bulk_edit.text_value": ("（文本）", "(text)"),
    "bulk_edit.field.source": ("来源渠道", "Source"),
    "bulk_edit.field.gender": ("性别", "Gender"),
    "bulk_edit.field.province": ("省份", "Province"),
    "bulk_edit.field.city": ("城市", "City"),
    "bulk_edit.field.company": ("公司", "Company"),
    "cf_list.bulk_interrupted": (
        "批量修改被中断（敏感值不会保存），请重新执行",
        "The bulk edit was interrupted (a sensitive value is never stored): run it again",
    ),
    # audit
    "audit.act.customer.bulk_edit": ("批量修改客户字段", "setting a field on customers in bulk"),
    "audit.say.customer.bulk_edit": (
        "{actor} 把 {count} 位客户的「{field}」设为「{value}」",
        "{actor} set “{field}” to “{value}” on {count} customers",
    ),
}
