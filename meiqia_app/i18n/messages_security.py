"""Messages of the hardening around logins, uploads and imports."""

from __future__ import annotations

ENTRIES: dict[str, tuple[str, str]] = {
    # password strength (zxcvbn): what made the password guessable
    "auth.password_weak": (
        "密码太容易被猜到，请换一个更长、更少见的密码",
        "This password is too easy to guess; choose a longer, less common one",
    ),
    "auth.password_weak_common": (
        "密码太容易被猜到：它是（或接近）一个常用密码",
        "This password is too easy to guess: it is (or is close to) a commonly used password",
    ),
    "auth.password_weak_personal": (
        "密码太容易被猜到：它包含用户名、姓名或产品名称",
        "This password is too easy to guess: it contains the username, the person's name or the product's name",
    ),
    "auth.password_weak_words": (
        "密码太容易被猜到：它主要由常见单词或人名组成",
        "This password is too easy to guess: it is mostly common words or names",
    ),
    "auth.password_weak_repeats": (
        "密码太容易被猜到：它含有重复的字符（如 aaa、abcabc）",
        "This password is too easy to guess: it repeats characters (like aaa or abcabc)",
    ),
    "auth.password_weak_sequence": (
        "密码太容易被猜到：它含有连续的字母或数字（如 abcd、1234）",
        "This password is too easy to guess: it has a run of letters or digits (like abcd or 1234)",
    ),
    "auth.password_weak_keyboard": (
        "密码太容易被猜到：它含有键盘上相邻的按键（如 qwerty）",
        "This password is too easy to guess: it has keys next to each other on the keyboard (like qwerty)",
    ),
    "auth.password_weak_dates": (
        "密码太容易被猜到：它主要由年份或日期组成",
        "This password is too easy to guess: it is mostly years or dates",
    ),
    # logins per client address
    "auth.address_locked": (
        "此网络地址的登录失败次数过多，请 {minutes} 分钟后再试",
        "Too many failed logins from your network address; try again in {minutes} minutes",
    ),
    # replacing the authenticator
    "account.reenrol_verify_hint": (
        "请先输入当前密码，以及当前身份验证器上的验证码（或一个恢复码）。",
        "First enter your current password and a code from your current authenticator (or a recovery code).",
    ),
    "account.current_code": ("当前验证码或恢复码", "Current code or a recovery code"),
    "account.continue": ("继续", "Continue"),
    "account.reenrolled_sessions": (
        "两步验证已更新，其他设备上的 {count} 个会话已结束；请保存新的恢复码",
        "Two-step verification updated and {count} other sessions ended; save your new recovery codes",
    ),
    # imports
    "import.too_many_rows": (
        "文件超过 {max} 行，请拆分后分批导入",
        "The file has more than {max} rows; split it and import the parts one by one",
    ),
    "import.too_many_columns": (
        "文件超过 {max} 列，请删掉不需要的列后再导入",
        "The file has more than {max} columns; remove the columns you do not need and try again",
    ),
    "import.line_too_long": (
        "文件第 {row} 行过长，无法作为 CSV 读取",
        "Line {row} of the file is too long to be read as CSV",
    ),
    "import.xlsx_too_large": (
        "该 XLSX 文件解压后超过 {mb} MB（或压缩比异常），已拒绝读取",
        "This XLSX file unpacks to more than {mb} MB (or is compressed suspiciously well); it was not opened",
    ),
    "import.invalid_characters": (
        "含有不允许的控制字符（如 NUL）",
        "Contains characters that are not allowed (such as NUL)",
    ),
    "import.upload_refused": (
        "上传被拒绝：登录已失效或无导入权限，请刷新页面后重试",
        "The upload was refused: your session ended or you may not import; reload the page and try again",
    ),
}
