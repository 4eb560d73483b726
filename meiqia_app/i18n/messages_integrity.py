"""Messages of audit integrity (MACs, anchors), restores that keep erasures, and mentions review."""

ENTRIES: dict[str, tuple[str, str]] = {
    # --- verify-audit problems -----------------------------------------------------------------
    "audit.problem.missing": ("缺少记录", "an entry is missing"),
    "audit.problem.broken_link": ("链接断开", "the link to the previous entry is broken"),
    "audit.problem.altered": ("内容被修改", "the entry was altered"),
    "audit.problem.forged": ("MAC 不符，记录被改写或伪造", "its MAC does not verify: rewritten or forged"),
    "audit.problem.anchor_mismatch": ("与锚点记录的哈希不符", "its hash differs from the anchored one"),
    "audit.problem.truncated": ("日志被截短（少于链头或锚点）", "the log was cut short (before the head or an anchor)"),
    "audit.problem.head_missing": ("链头丢失", "the chain head is missing"),
    "audit.problem.head_forged": ("链头 MAC 不符", "the chain head's MAC does not verify"),
    "audit.problem.upgrade_point": ("MAC 起始点丢失或被改动", "the MAC upgrade point is missing or was changed"),
    "audit.problem.anchor_forged": ("锚点文件中有无法验证的行", "a line of the anchor file does not verify"),
    # --- anchors on /audit ----------------------------------------------------------------------
    "audit.anchor.title": ("链头锚点", "Chain anchors"),
    "audit.anchor.hint": (
        "每天、每次备份和恢复后，日志的最新记录编号与哈希会写入数据库之外的锚点文件"
        "（备份目录下的 audit-anchors.log）。请把最新一行抄下或发送到别处保存；"
        "之后可用 verify-audit --pin 编号:哈希 核对。",
        "Daily, and after every backup and restore, the newest entry's id and hash are written to an anchor "
        "file outside the database (audit-anchors.log in the backups directory). Write the newest one down "
        "or send it elsewhere; check it later with verify-audit --pin ID:HASH.",
    ),
    "audit.anchor.none": ("尚无锚点", "No anchor yet"),
    "audit.anchor.col.time": ("时间", "Time"),
    "audit.anchor.col.entry": ("记录编号", "Entry id"),
    "audit.anchor.col.hash": ("哈希", "Hash"),
    "audit.anchor.col.reason": ("原因", "Why"),
    "audit.anchor.col.check": ("校验", "Check"),
    "audit.anchor.reason.nightly": ("每日", "Daily"),
    "audit.anchor.reason.backup": ("备份后", "After a backup"),
    "audit.anchor.reason.restore": ("恢复后", "After a restore"),
    "audit.anchor.reason.manual": ("手动", "Manual"),
    "audit.anchor.valid": ("有效", "Valid"),
    "audit.anchor.invalid": ("无效", "Invalid"),
    # --- mentions review in the erasure --------------------------------------------------------
    "cleanup.mentions.title": ("其他客户记录中的提及", "Mentions in other customers' records"),
    "cleanup.mentions.hint": (
        "以下其他客户的备注和聊天消息包含待删除客户的姓名、电话或邮箱。勾选的记录会在删除时把这些内容替换为"
        "“[已删除]”；未勾选的保持原样，并列在执行报告中。",
        "These notes and chat messages of other customers contain the name, phone or e-mail of a customer "
        "being erased. In the ticked ones those values are replaced by “[已删除]” with the erasure; the others "
        "stay as they are and are listed in the report.",
    ),
    "cleanup.mentions.none": (
        "其他客户的备注和聊天消息中没有提及这些客户",
        "No other customer's note or chat message mentions them",
    ),
    "cleanup.mentions.not_searched": (
        "客户超过 {max} 位，未查找其他记录中的提及；如需审查，请分批删除",
        "More than {max} customers: other records were not searched for mentions; erase in smaller groups to review them",
    ),
    "cleanup.mentions.select_all": ("全选", "Select all"),
    "cleanup.mentions.select_none": ("全不选", "Select none"),
    "cleanup.mentions.selected": ("已选 {count} 条，将被遮盖", "{count} selected to redact"),
    "cleanup.mentions.redact_this": ("遮盖此记录中的提及", "Redact the mention in this record"),
    "cleanup.mentions.col.redact": ("遮盖", "Redact"),
    "cleanup.mentions.col.record": ("记录", "Record"),
    "cleanup.mentions.col.customer": ("所属客户", "Customer"),
    "cleanup.mentions.col.names": ("提及的客户", "Mentions"),
    "cleanup.mentions.col.fields": ("内容", "Values"),
    "cleanup.mentions.col.text": ("上下文", "Context"),
    "cleanup.mentions.kind.note": ("备注", "Note"),
    "cleanup.mentions.kind.message": ("聊天消息", "Chat message"),
    "cleanup.mentions.field.name": ("姓名", "name"),
    "cleanup.mentions.field.phone": ("电话", "phone"),
    "cleanup.mentions.field.email": ("邮箱", "e-mail"),
    "cleanup.report.mentions": (
        "其他客户的记录中找到 {found} 处提及，已遮盖 {redacted} 处",
        "Mentions in other customers' records: {found} found, {redacted} redacted",
    ),
    "cleanup.report.mentions_redacted": ("已遮盖：{refs}", "Redacted: {refs}"),
    "cleanup.report.mentions_kept": ("未遮盖（请人工查看）：{refs}", "Left as they were (review them): {refs}"),
    "cleanup.report.mentions_not_searched": (
        "客户超过 {max} 位，未查找其他记录中的提及",
        "More than {max} customers: other records were not searched for mentions",
    ),
}
