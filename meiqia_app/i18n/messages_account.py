"""Messages of /account: new recovery codes and one's own sessions."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # new recovery codes
    "account.regen": ("生成新恢复码", "Generate new recovery codes"),
    "account.regen_hint": (
        "请输入当前密码和身份验证器上的验证码。新恢复码只显示一次，之前的恢复码（包括未用过的）会立即失效。",
        "Enter your current password and the code from your authenticator. The new codes are shown once; "
        "every earlier recovery code (used or not) stops working at once.",
    ),
    "account.authenticator_code": ("身份验证器上的验证码", "Code from your authenticator"),
    "account.regen_submit": ("生成", "Generate"),
    "account.recovery_renewed": (
        "已生成新的恢复码，旧恢复码已失效",
        "New recovery codes generated; the old ones no longer work",
    ),
    "account.no_recovery_left": (
        "您已没有可用的恢复码：手机丢失时将无法登录。请生成新的恢复码并妥善保存。",
        "You have no recovery codes left: losing your phone would lock you out. Generate new ones and keep them safe.",
    ),
    "account.needs_authenticator_code": (
        "请输入身份验证器上的 6 位验证码（恢复码不能用于此操作）",
        "Enter the 6-digit code from your authenticator (a recovery code does not work here)",
    ),
    # sessions
    "account.sessions_hint": (
        "以下是您当前登录的浏览器。不认识的会话请立即退出并修改密码。",
        "These browsers are logged in as you. Sign out any you do not recognise and change your password.",
    ),
    "account.unknown_device": ("未知设备", "Unknown device"),
    "account.this_session": ("当前会话", "This session"),
    "account.session_ip": ("IP 地址", "IP address"),
    "account.session_started": ("登录于", "Signed in"),
    "account.session_last_seen": ("最近活动", "Last active"),
    "account.sign_out_session": ("退出此会话", "Sign out this session"),
    "account.session_signed_out": ("该会话已退出", "That session is signed out"),
    "account.confirm_sign_out_current": (
        "这是您正在使用的会话，退出后需要重新登录。确定退出吗？",
        "This is the session you are using; you will have to log in again. Sign it out?",
    ),
    "account.confirm_current_session": (
        "这是您正在使用的会话，请确认后再退出",
        "This is the session you are using; confirm before signing it out",
    ),
}
