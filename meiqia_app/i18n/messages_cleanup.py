"""Messages of the cleanup feature: cleanup wizard, archive/trash, erasure, backups."""

ENTRIES: dict[str, tuple[str, str]] = {
    # --- backups -----------------------------------------------------------------------
    "backup.failed": ("备份失败：{reason}", "Backup failed: {reason}"),
    "backup.corrupt": ("备份文件未通过检查，已拒绝恢复：{problem}", "The backup file failed its check and was not restored: {problem}"),
    "backup.confirm_mismatch": ("请输入备份文件名以确认", "Type the backup's file name to confirm"),
    # --- cleanup services ----------------------------------------------------------------
    "cleanup.no_criteria": ("请至少选择一个条件", "Choose at least one criterion"),
    "cleanup.tag_required": ("请选择要添加的标签", "Choose the tag to add"),
    "cleanup.confirm_mismatch": ("请输入数量 {count} 以确认", "Type the count {count} to confirm"),
    "cleanup.nothing_matches": ("没有符合条件的客户", "No customer matches"),
    "cleanup.erasure.already_erased": ("该客户的个人数据已删除", "This customer's personal data is already erased"),
    "cleanup.erasure.already_requested": ("已有待执行的删除申请", "An erasure request is already pending"),
}
