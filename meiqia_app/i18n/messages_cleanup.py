"""Messages of the cleanup feature: cleanup wizard, archive/trash, erasure, backups."""

ENTRIES: dict[str, tuple[str, str]] = {
    # --- backups -----------------------------------------------------------------------
    "backup.failed": ("备份失败：{reason}", "Backup failed: {reason}"),
    "backup.corrupt": ("备份文件未通过检查，已拒绝恢复：{problem}", "The backup file failed its check and was not restored: {problem}"),
    "backup.confirm_mismatch": ("请输入备份文件名以确认", "Type the backup's file name to confirm"),
}
