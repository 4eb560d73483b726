"""Messages of the customer pages' fixes: duplicate warning on create, read-only
archived / trashed customers, consent recording, the "last changed" line."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # new customer: duplicates (services/customers/duplicates/check)
    "customer.duplicate": (
        "已有客户使用相同的电话、邮箱或外部 ID",
        "A customer with the same phone, e-mail or external id already exists",
    ),
    "customer.duplicate_warning": (
        "可能重复：已有客户使用相同的信息。可以打开已有客户，或仍然保存。",
        "Possible duplicate: an existing customer has the same details. Open the existing customer, or save anyway.",
    ),
    "customer.duplicate_of": (
        "{field}与已有客户 {name}（#{id}）相同",
        "{field} matches existing customer {name} (#{id})",
    ),
    # the same, for a customer outside the person's data scope: no name, no id, no link
    "customer.duplicate_hidden.phone": (
        "一位你无权查看的客户已使用此电话",
        "A customer you cannot see already has this phone",
    ),
    "customer.duplicate_hidden.email": (
        "一位你无权查看的客户已使用此邮箱",
        "A customer you cannot see already has this e-mail",
    ),
    "customer.duplicate_hidden.external_id": (
        "一位你无权查看的客户已使用此外部 ID",
        "A customer you cannot see already has this external id",
    ),
    "customer.open_existing": ("打开已有客户", "Open the existing customer"),
    "customer.save_anyway": ("仍然保存", "Save anyway"),
    # read-only customers
    "customer.read_only": (
        "该客户已归档或在回收站中，恢复后才能修改",
        "This customer is archived or in the trash: restore it before changing anything",
    ),
    "customer.read_only_archived": (
        "该客户已归档，只能查看。在“数据清理”中恢复后才能修改。",
        "This customer is archived and read-only. Restore it on the cleanup page to change it.",
    ),
    "customer.read_only_trashed": (
        "该客户在回收站中，只能查看。在“数据清理”中恢复后才能修改。",
        "This customer is in the trash and read-only. Restore it on the cleanup page to change it.",
    ),
    # who changed the profile last
    "customer.created_by_system": (
        "由系统导入或初始化创建于 {at}，之后无人修改",
        "Created by import / seed at {at}; nobody has changed it since",
    ),
    # consent (services/customers/consent)
    "customer.withdrawn_at": ("已退订 · {at}", "Withdrawn {at}"),
    "consent.grant": ("记录同意", "Record consent"),
    "consent.withdraw": ("记录退订", "Record unsubscribe"),
    "consent.recorded_granted": ("已记录：客户同意{consent}", "Recorded: the customer consents to {consent}"),
    "consent.recorded_withdrawn": ("已记录：客户退订{consent}", "Recorded: the customer withdrew {consent}"),
    "timeline.kind.consent": ("授权变更", "Consent changes"),
    "timeline.consent_granted": ("客户同意{consent}", "Consent given: {consent}"),
    "timeline.consent_withdrawn": ("客户退订{consent}", "Consent withdrawn: {consent}"),
    "timeline.consent_by": ("由 {by} 记录", "Recorded by {by}"),
    # per-customer export
    "export.error.portability_needs_approval": (
        "你的角色导出客户数据需要审批：请在“数据导出”向导中选择这位客户并提交申请",
        "Your role needs approval to export customer data: choose this customer in the export wizard and submit a request",
    ),
    "export.portability.ready": (
        "文件已开始下载，也可以在“导出记录”中再次下载",
        "The file is downloading; it is also in the export history",
    ),
}
