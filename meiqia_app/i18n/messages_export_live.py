"""Messages of the export wizard following a request through approval, and of the approvals list."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    "export.pending_live": (
        "已提交，等待审批。批准后此页会自动更新并提供下载；也可以离开此页面，稍后在导出记录中查看。",
        "Submitted, pending approval. This page updates by itself once it is decided and offers the download; "
        "you may also leave and find it in your export history later.",
    ),
    "export.approved_by": ("已由 {approver} 批准", "Approved by {approver}"),
    "export.rejected_by": ("已被 {approver} 拒绝", "Rejected by {approver}"),
    "export.decision_comment": ("审批意见：{comment}", "Comment: {comment}"),
    "export.approved_needs_password": (
        "请再次输入文件密码以开始导出（密码不会被保存）。",
        "Enter the file password again to start the export (it is never stored).",
    ),
}
