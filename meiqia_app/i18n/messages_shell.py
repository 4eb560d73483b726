"""Messages of the app shell: navigation groups, the menu drawer, the "no access" page."""

ENTRIES: dict[str, tuple[str, str]] = {
    "nav.group.customers": ("客户", "Customers"),
    "nav.group.tags": ("标签", "Tags"),
    "nav.group.reports": ("报告", "Reports"),
    "nav.group.export": ("导出", "Export"),
    "nav.group.data": ("数据维护", "Data care"),
    "nav.group.system": ("系统", "System"),
    "nav.archive": ("归档与回收站", "Archive & trash"),
    "nav.open_menu": ("打开导航菜单", "Open the navigation menu"),
    "nav.close_menu": ("关闭导航菜单", "Close the navigation menu"),
    "access.denied_title": ("没有访问权限", "No access"),
    "access.denied_text": (
        "你的角色不能打开此页面。如需使用，请联系管理员。",
        "Your role may not open this page. Ask an administrator if you need it.",
    ),
    "label.date_field": ("按哪个日期筛选", "Which date to filter on"),
    "label.date_range": ("日期范围", "Date range"),
    "label.sort_direction": ("排序方向", "Sort direction"),
    "label.choose_file": ("选择要导入的文件", "Choose the file to import"),
    "access.go_home": ("返回首页", "Back to the home page"),
}
