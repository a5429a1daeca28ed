"""The console's texts, Chinese first (registered with the shared ``templating.add_texts``).

Keys start with ``console.`` so they never clash with another page family's. The accounts
modules raise errors in English (the command line's language); :func:`user_error` gives the
commonest ones in Chinese too.
"""

from __future__ import annotations

from cloudfilm.http.templating import add_texts

TEXTS: dict[str, tuple[str, str]] = {
    "console.app": ("医院工作台", "Hospital console"),
    "console.platform": ("云胶片平台", "Cloudfilm platform"),
    # login
    "console.login_title": ("登录医院工作台", "Log in to the hospital console"),
    "console.login_name": ("用户名或手机号", "Username or phone number"),
    "console.password": ("密码", "Password"),
    "console.login": ("登录", "Log in"),
    "console.bad_login": ("用户名或密码不正确。", "Wrong username or password."),
    "console.locked": (
        "尝试次数过多，已暂时锁定。请 {minutes} 分钟后再试，或联系管理员。",
        "Too many attempts: locked. Try again in {minutes} minute(s), or ask your administrator.",
    ),
    "console.form_expired": (
        "登录页面已过期，请重新输入。",
        "The login page expired; please enter your details again.",
    ),
    "console.totp_title": ("两步验证", "Two-step verification"),
    "console.totp_help": (
        "请输入身份验证器应用中显示的 6 位动态码。",
        "Enter the 6-digit code your authenticator app shows.",
    ),
    "console.totp_code": ("动态码", "Code"),
    "console.verify": ("验证", "Verify"),
    "console.bad_totp": ("动态码不正确，请重试。", "That code is not right; try again."),
    "console.logout": ("退出", "Log out"),
    # password
    "console.change_password": ("修改密码", "Change password"),
    "console.must_change": (
        "首次登录或密码已被重置：请先设置新密码。",
        "First login or your password was reset: set a new password first.",
    ),
    "console.current_password": ("当前密码", "Current password"),
    "console.new_password": ("新密码", "New password"),
    "console.repeat_password": ("再次输入新密码", "New password again"),
    "console.password_hint": (
        "至少 10 个字符，不要与其他网站相同。",
        "At least 10 characters; not one you use elsewhere.",
    ),
    "console.save": ("保存", "Save"),
    "console.bad_current": ("当前密码不正确。", "The current password is not right."),
    "console.pw_mismatch": ("两次输入的新密码不一致。", "The two new passwords differ."),
    "console.pw_same": ("新密码不能与当前密码相同。", "The new password must differ."),
    # errors
    "console.err_title": ("无法完成", "Not possible"),
    "console.err_role": ("您的角色不能使用此页面。", "Your role cannot use this page."),
    "console.err_csrf": (
        "页面已过期或请求来源不明，请刷新页面后重试。",
        "The page expired or the request came from elsewhere; reload the page and try again.",
    ),
    "console.err_hospital": (
        "您只能管理本院的数据。",
        "You can manage your own hospital's data only.",
    ),
    "console.err_not_found": ("未找到。", "Not found."),
    "console.back": ("返回", "Back"),
    # nav
    "console.nav_work": ("工作", "Work"),
    "console.nav_admin": ("管理", "Administration"),
    "console.nav_worklist": ("工作列表", "Worklist"),
    "console.nav_desk": ("胶片窗口", "Film desk"),
    "console.nav_stats": ("统计", "Statistics"),
    "console.nav_audit": ("审计", "Audit"),
    "console.nav_users": ("用户", "Users"),
    "console.nav_aes": ("AE", "AE titles"),
    "console.nav_tokens": ("令牌", "Tokens"),
    "console.nav_hospitals": ("医院", "Hospitals"),
}

USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("password too short", "密码太短：至少 10 个字符。"),
    ("password too simple", "密码过于简单。"),
    ("username:", "用户名：2-64 个字母、数字或 . _ @ -。"),
    ("phone:", "手机号：11 位大陆手机号码。"),
    ("username or phone number already used", "用户名或手机号已被使用。"),
    ("operators belong to no hospital", "平台运维不属于任何医院；其他角色必须属于一家医院。"),
    ("role:", "角色无效。"),
)


def user_error(lang: str, exc: Exception) -> str:
    """An accounts error (English) in the page's language."""
    text = str(exc)
    if lang == "en":
        return text
    for start, zh in USER_ERRORS:
        if text.startswith(start):
            return zh
    return f"无法保存：{text}"


add_texts(TEXTS)
