"""Messages of the retention policies page (/admin/retention) and service."""

ENTRIES: dict[str, tuple[str, str]] = {
    "nav.retention": ("数据保留", "Retention"),
    "retention.intro": (
        "保留策略按期限自动清理不再需要的数据。每项策略可单独启用、设置期限、预览下次运行会处理的内容，或立即运行；每次运行和每次修改都会记入审计日志。",
        "Retention policies clear out data that is no longer needed. Each policy can be switched on or off, "
        "given its period, previewed (what the next run would touch) or run now; every run and every change "
        "is written to the audit log.",
    ),
    "retention.nightly_at": ("已启用的策略每晚 {time} 自动运行。", "Enabled policies run every night at {time}."),
    "retention.nightly_off": (
        "每晚自动运行已关闭（调度设置 schedule.retention）。",
        "The nightly run is switched off (schedule setting schedule.retention).",
    ),
    # --- the policies -----------------------------------------------------------------------------
    "retention.policy.trash_purge": ("清空回收站", "Purge the trash"),
    "retention.hint.trash_purge": (
        "永久删除在回收站中超过期限的客户及其全部记录；删除前自动备份。",
        "Deletes customers that have been in the trash longer than the period, with all their records, "
        "for good; a backup is taken first.",
    ),
    "retention.preview.trash_purge": (
        "下次运行将从回收站永久删除 {count} 位客户。",
        "The next run would purge {count} customers from the trash.",
    ),
    "retention.policy.customer_archive": ("归档不活跃客户", "Archive inactive customers"),
    "retention.hint.customer_archive": (
        "将超过期限没有登录、咨询、订单或行为记录的客户移入归档（可随时恢复）。",
        "Moves customers with no login, chat, order or event for the period to the archive (restorable at any time).",
    ),
    "retention.preview.customer_archive": (
        "下次运行将归档 {count} 位客户。",
        "The next run would archive {count} customers.",
    ),
    "retention.policy.pool_return": ("长期未联系的客户退回公海", "Return silent customers to the pool"),
    "retention.hint.pool_return": (
        "负责人超过期限没有联系（无咨询、订单、登录或行为记录）的客户自动释放到公海，其他同事可以认领。"
        "每位客户的时间线会记录退回公海；已删除个人数据的客户不变。",
        "Customers with no contact (no chat, order, login or event) for the period leave their owner and go "
        "back to the pool, where colleagues can claim them. Each customer's timeline shows the return; "
        "customers whose personal data was erased keep their owner.",
    ),
    "retention.preview.pool_return": (
        "下次运行将把 {count} 位客户退回公海。",
        "The next run would return {count} customers to the pool.",
    ),
    "retention.policy.export_files": ("删除导出文件", "Delete export files"),
    "retention.hint.export_files": (
        "导出文件在期限后删除，下载链接也在期限后失效。关闭后文件保留在服务器上（例如需保全时），但链接仍会失效。",
        "Export files are deleted after the period, and their download links end then. Switched off, the files "
        "stay on the server (e.g. on hold) but the links still end.",
    ),
    "retention.preview.export_files": (
        "下次运行将删除 {count} 个导出文件（{size}）。",
        "The next run would delete {count} export files ({size}).",
    ),
    "retention.policy.finished_jobs": ("删除已结束的任务记录", "Delete finished jobs"),
    "retention.hint.finished_jobs": (
        "删除超过期限的已完成、失败或已取消的后台任务记录（审计日志不受影响）。",
        "Deletes the records of background jobs that finished, failed or were cancelled before the period "
        "(the audit log keeps its entries).",
    ),
    "retention.policy.webhook_deliveries": ("删除 Webhook 发送记录", "Delete webhook delivery logs"),
    "retention.hint.webhook_deliveries": (
        "删除超过期限的已成功或已失败的 Webhook 发送记录（待发送的不受影响）。",
        "Deletes the log lines of webhook deliveries that succeeded or failed before the period "
        "(deliveries still waiting to be sent are kept).",
    ),
    "retention.preview.webhook_deliveries": (
        "下次运行将删除 {count} 条 Webhook 发送记录。",
        "The next run would delete {count} webhook delivery records.",
    ),
    "retention.preview.finished_jobs": (
        "下次运行将删除 {count} 条任务记录。",
        "The next run would delete {count} job records.",
    ),
    "retention.policy.import_files": ("删除导入上传文件", "Delete import uploads"),
    "retention.hint.import_files": (
        "删除超过期限的导入上传文件和错误报告。",
        "Deletes uploaded import files and their error reports older than the period.",
    ),
    "retention.preview.import_files": (
        "下次运行将删除 {count} 个导入文件（{size}）。",
        "The next run would delete {count} import files ({size}).",
    ),
    "retention.policy.backups": ("删除旧备份", "Delete old backups"),
    "retention.hint.backups": (
        "删除超过期限的备份，但始终保留最新的若干份。每次备份后也会按此策略清理。",
        "Deletes backups older than the period but always keeps the newest ones. Also applied after each backup.",
    ),
    "retention.preview.backups": (
        "下次运行将删除 {count} 个备份（{size}）。",
        "The next run would delete {count} backups ({size}).",
    ),
    "retention.keep.backups": ("至少保留最新的备份数", "Always keep the newest (backups)"),
    # --- controls -------------------------------------------------------------------------------
    "retention.enabled": ("启用", "Enabled"),
    "retention.value.hours": ("期限（小时）", "Period (hours)"),
    "retention.value.days": ("期限（天）", "Period (days)"),
    "retention.value.months": ("期限（月）", "Period (months)"),
    "retention.range": ("{min}–{max}", "{min}–{max}"),
    "retention.run_now": ("立即运行", "Run now"),
    "retention.preview_refresh": ("刷新预览", "Refresh preview"),
    "retention.sample": ("例如：", "For example:"),
    "retention.off": ("已关闭：每晚运行会跳过此策略。", "Off: the nightly run skips this policy."),
    "retention.preview_button": ("预览", "Preview"),
    "retention.preview_unsaved": (
        "这是按输入的期限预览的结果，尚未保存。",
        "Previewed with the period typed above; not saved yet.",
    ),
    "retention.not_allowed": (
        "你的角色缺少此策略所需的权限，无法修改、预览或运行。",
        "Your role lacks a permission this policy needs: no change, preview or run.",
    ),
    "retention.last_run": ("上次运行：{time}，{by}，{status}", "Last run: {time}, {by}, {status}"),
    "retention.never_run": ("尚未运行过。", "Not run yet."),
    "retention.progress": ("已处理 {done} / {total}", "{done} of {total} done"),
    "retention.saved": ("策略已保存", "Policy saved"),
    "retention.unchanged": ("没有修改", "Nothing changed"),
    "retention.confirm_title": ("立即运行：{policy}", "Run now: {policy}"),
    "retention.confirm_irreversible": ("删除后无法恢复。", "This cannot be undone."),
    "retention.confirm_typed_label": ("输入数量 {count} 以确认", "Type the count {count} to confirm"),
    "retention.run_started": ("已开始运行：{policy}", "Started: {policy}"),
    "retention.run_finished": ("{policy}：{status}。{summary}", "{policy}: {status}. {summary}"),
    # --- counts in a run's result ------------------------------------------------------------------
    "retention.separator": ("，", ", "),
    "retention.count.customers": ("客户 {count} 位", "{count} customers"),
    "retention.count.rows": ("关联记录 {count} 条", "{count} related rows"),
    "retention.count.files": ("文件 {count} 个", "{count} files"),
    "retention.count.bytes": ("共 {count}", "{count} in all"),
    "retention.count.jobs": ("任务记录 {count} 条", "{count} job records"),
    "retention.count.deliveries": ("Webhook 发送记录 {count} 条", "{count} webhook delivery records"),
    "retention.count.backups": ("备份 {count} 个", "{count} backups"),
    "retention.count.backup": ("删除前备份 {count}", "backup first: {count}"),
    # --- elsewhere --------------------------------------------------------------------------------
    "retention.trash_hint_off": (
        "回收站不会自动清空（数据保留中的“清空回收站”策略已关闭）。清空回收站前会自动备份。请输入数量以确认。",
        'The trash is not purged automatically (the "Purge the trash" retention policy is off). '
        "An automatic backup is taken before emptying the trash. Type the count to confirm.",
    ),
    # --- errors ------------------------------------------------------------------------------------
    "retention.bad_number": ("请输入 {min} 到 {max} 之间的整数", "Enter a whole number from {min} to {max}"),
    "retention.disabled": ("请先启用并保存此策略", "Switch this policy on and save it first"),
    "retention.already_running": ("此策略正在运行", "This policy is running already"),
    "retention.nothing_to_do": ("没有需要处理的内容", "Nothing to do"),
    "retention.confirm_mismatch": ("请输入数量 {count} 以确认", "Type the count {count} to confirm"),
}
