"""Messages of custom fields in exports and imports (issue 23)."""

ENTRIES: dict[str, tuple[str, str]] = {
    "export.group.cf": ("自定义字段", "Custom fields"),
    "export.group.cf_ungrouped": ("未分组", "No group"),
    "export.error.fields_gone": (
        "所选的自定义字段已被删除，请重新选择字段",
        "The custom fields chosen have been deleted; choose the fields again",
    ),
    "export.skipped_fields": (
        "以下自定义字段已被删除或停用，本次导出不含它们：{fields}",
        "These custom fields were deleted or retired and are left out of this export: {fields}",
    ),
    "import.cf_sensitive_refused": (
        "你的角色不能导入敏感的自定义字段（需要查看敏感信息的权限）",
        "Your role cannot import sensitive custom fields (it needs the permission to see sensitive data)",
    ),
    "import.cf_create_options_refused": (
        "只有可以管理字段的用户才能在导入时新建选项",
        "Only people who may manage fields can create options during an import",
    ),
    "import.create_options": ("导入时新建缺少的选项（单选/多选字段）", "Create missing options (select fields)"),
    "import.new_options": ("将新建的选项 · {field}：{labels}", "Options to create · {field}: {labels}"),
    "import.group.cf": ("自定义字段", "Custom fields"),
}
