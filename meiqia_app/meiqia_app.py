"""The Reflex application: theme, pages, the event guard and the session routes."""

from __future__ import annotations

import reflex as rx

from meiqia_app import log_redaction
from meiqia_app.components.layout import gated_page
from meiqia_app.pages.account import account_page
from meiqia_app.pages.admin_fields import admin_fields_page
from meiqia_app.pages.admin_roles import admin_roles_page
from meiqia_app.pages.admin_users import admin_users_page
from meiqia_app.pages.api_keys import api_keys_page
from meiqia_app.pages.audit_log import audit_page
from meiqia_app.pages.backups import backups_page
from meiqia_app.pages.cleanup import archive_page, cleanup_page
from meiqia_app.pages.customer_detail import customer_detail_page
from meiqia_app.pages.customer_import import import_page
from meiqia_app.pages.customers import customers_page
from meiqia_app.pages.dashboard import dashboard_page
from meiqia_app.pages.duplicates import duplicates_page
from meiqia_app.pages.export import export_approvals_page, export_history_page, export_page
from meiqia_app.pages.login import login_page
from meiqia_app.pages.reports import reports_page
from meiqia_app.pages.retention import retention_page
from meiqia_app.pages.tags_admin import tags_admin_page
from meiqia_app.pages.webhooks import webhooks_page
from meiqia_app.services.customers.changes import register_subscribers
from meiqia_app.services.platform import startup
from meiqia_app.state import privacy
from meiqia_app.state.account import AccountState
from meiqia_app.state.admin_fields import AdminFieldsState
from meiqia_app.state.admin_roles import AdminRolesState
from meiqia_app.state.admin_users import AdminUsersState
from meiqia_app.state.api_keys import ApiKeysState
from meiqia_app.state.audit_log import AuditLogState
from meiqia_app.state.backups import BackupsState
from meiqia_app.state.base import AppState, declare_page
from meiqia_app.state.cleanup import ArchiveState, CleanupState
from meiqia_app.state.customer_detail import CustomerDetailState
from meiqia_app.state.customer_import import CustomerImportState
from meiqia_app.state.customer_list import CustomerListState
from meiqia_app.state.duplicates import DuplicatesState
from meiqia_app.state.export import ExportApprovalsState, ExportHistoryState, ExportWizardState
from meiqia_app.state.login import LoginState
from meiqia_app.state.reports import DashboardState, ReportsState
from meiqia_app.state.retention import RetentionState
from meiqia_app.state.tags_admin import TagsAdminState
from meiqia_app.state.webhooks import WebhooksState
from meiqia_app.web import upload_request
from meiqia_app.web.api import app as open_api
from meiqia_app.web.event_guard import LoginRequiredMiddleware
from meiqia_app.web.session_routes import session_api
from meiqia_app.web.upload_guard import upload_guard

log_redaction.install()  # no cookie or token reaches a log, from any library (meiqia_app/log_redaction.py)
register_subscribers()  # who hears "customers changed": services/customers/change_subscribers.py

app = rx.App(
    stylesheets=["/app.css"],
    # The default language; the layout keeps <html lang> in step with the switch (components/layout.py).
    html_lang="zh-CN",
    head_components=[rx.el.meta(name="robots", content="noindex")],
    # Our HTTP routes in front of Reflex's; the upload guard wraps both and checks
    # /_upload's session cookie, permission and size before its body is read; and
    # an upload's handler sees the upload request's own headers (web/upload_request.py).
    # The open API (/api/v1, its docs at /api/docs) sits in front of it all (web/api/).
    api_transformer=[session_api(), upload_guard, upload_request.capture_upload_headers, open_api.mount],
)
app.add_middleware(LoginRequiredMiddleware())
# Tab states stored without credentials, in private files (meiqia_app/state/privacy.py).
privacy.register_root_state_scrubber()
privacy.make_state_storage_private(app)
app.register_lifespan_task(upload_request.attach_upload_headers)  # once Reflex's event processor exists
# At start: the nightly tasks are registered, what a dead process left is taken over,
# the scheduler and webhook loops start, the report aggregates are warmed (services/platform/startup.py).
app.register_lifespan_task(startup.start_background_work)

app.add_page(login_page, route="/login", title="登录 · 美洽客户管理", on_load=LoginState.on_load)


# The two pages agents live on load with ONE event each (which resolves the
# session, sets the user and, on the detail page, chains the timeline after
# it): several on_load events of one tab run at once and queue on the tab's
# state lock; with Redis state some waited out the whole lock expiry (10 s).
# Their on_load checks the page's permission itself (AppState._page_refused).
def _agent_page(page, route: str, title: str, on_load, needs: tuple[str, ...]) -> None:
    declare_page(route, needs)
    app.add_page(gated_page(page, needs), route=route, title=f"{title} · 美洽客户管理", on_load=on_load)


_agent_page(customers_page, "/customers", "客户", CustomerListState.on_load, ("customer.view",))
_agent_page(
    customer_detail_page, "/customers/[customer_id]", "客户详情", CustomerDetailState.on_load, ("customer.view",)
)


def _protected(page, route: str, title: str, state_on_load, needs: tuple[str, ...] = ()) -> None:
    """Every protected page checks the session, then the permissions it needs,
    before its own on_load runs (AppState.check_login chains it); without them
    it shows "no access" (components/layout.py) and loads nothing."""
    declare_page(route, needs, state_on_load)
    app.add_page(gated_page(page, needs), route=route, title=f"{title} · 美洽客户管理", on_load=AppState.check_login)


_protected(dashboard_page, "/", "概览", DashboardState.on_load)
_protected(import_page, "/import", "导入客户", CustomerImportState.on_load, ("customer.import",))
_protected(duplicates_page, "/duplicates", "重复客户", DuplicatesState.on_load, ("customer.merge",))
_protected(reports_page, "/reports", "数据报告", ReportsState.on_load, ("report.view",))
_protected(audit_page, "/audit", "审计日志", AuditLogState.on_load, ("audit.view",))
_protected(admin_users_page, "/admin/users", "用户管理", AdminUsersState.on_load, ("user.manage",))
_protected(admin_roles_page, "/admin/roles", "角色权限", AdminRolesState.on_load, ("role.manage",))
_protected(admin_fields_page, "/admin/fields", "自定义字段", AdminFieldsState.on_load, ("field.manage",))
_protected(account_page, "/account", "我的账户", AccountState.on_load)
_protected(tags_admin_page, "/tags", "标签与规则", TagsAdminState.on_load, ("tag.manage",))
_protected(export_page, "/export", "数据导出", ExportWizardState.on_load, ("export.request",))
_protected(export_history_page, "/exports", "导出记录", ExportHistoryState.on_load, ("export.request",))
_protected(export_approvals_page, "/exports/approvals", "导出审批", ExportApprovalsState.on_load, ("export.approve",))
_protected(cleanup_page, "/cleanup", "数据清理", CleanupState.on_load, ("cleanup.run",))
_protected(archive_page, "/cleanup/archive", "归档与回收站", ArchiveState.on_load, ("customer.archive",))
_protected(backups_page, "/admin/backups", "备份恢复", BackupsState.on_load, ("backup.manage",))
_protected(retention_page, "/admin/retention", "数据保留", RetentionState.on_load, ("settings.manage",))
_protected(api_keys_page, "/admin/api-keys", "API 密钥", ApiKeysState.on_load, ("apikey.manage",))
_protected(webhooks_page, "/admin/webhooks", "Webhook", WebhooksState.on_load, ("webhook.manage",))
