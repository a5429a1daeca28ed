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
    "console.nav_fixity": ("完整性校验", "Fixity"),
    "console.nav_retention": ("保存期限", "Retention"),
    # administration
    "console.pick_hospital": ("医院", "Hospital"),
    "console.show": ("查看", "Show"),
    "console.pick_first": ("请先选择一家医院。", "Pick a hospital first."),
    "console.active": ("启用", "Active"),
    "console.disabled": ("已停用", "Disabled"),
    "console.revoked": ("已撤销", "Revoked"),
    "console.none": ("暂无", "None yet"),
    "console.username": ("用户名", "Username"),
    "console.display_name": ("姓名", "Name"),
    "console.phone": ("手机号", "Phone"),
    "console.role": ("角色", "Role"),
    "console.state": ("状态", "State"),
    "console.actions": ("操作", "Actions"),
    "console.totp_short": ("两步验证", "2-step"),
    "console.on": ("已开启", "On"),
    "console.off": ("未开启", "Off"),
    "console.must_change_short": ("待改密码", "Must change password"),
    "console.reset_password": ("重置密码", "Reset password"),
    "console.blank_makes_one": ("留空则自动生成", "Leave blank to generate one"),
    "console.disable": ("停用", "Disable"),
    "console.enable": ("启用", "Enable"),
    "console.totp_enable": ("开启两步验证", "Turn on 2-step"),
    "console.totp_new": ("重新绑定两步验证", "New 2-step secret"),
    "console.totp_for": ("{username} 的两步验证", "Two-step verification of {username}"),
    "console.totp_qr": ("两步验证二维码", "Two-step verification QR code"),
    "console.totp_manual": (
        "请用身份验证器应用扫描二维码，或手动输入密钥：",
        "Scan the QR code with an authenticator app, or type the key:",
    ),
    "console.shown_once": ("仅显示这一次。", "Shown this once only."),
    "console.add_user": ("添加用户", "Add a user"),
    "console.add": ("添加", "Add"),
    "console.initial_password": ("初始密码", "Initial password"),
    "console.change_at_login": (
        "该用户首次登录时须设置自己的密码。",
        "The user must set their own password at the first login.",
    ),
    "console.user_added": ("已添加用户 {username}。", "User {username} added."),
    "console.password_reset_for": (
        "已重置 {username} 的密码，其登录已全部退出。",
        "The password of {username} was reset; their sessions have ended.",
    ),
    "console.bad_role": ("请选择角色。", "Choose a role."),
    "console.err_self": ("不能停用自己的账号。", "You cannot disable your own account."),
    "console.done_user_added": ("已添加。", "Added."),
    "console.done_disabled": ("已停用，其登录已全部退出。", "Disabled; their sessions have ended."),
    "console.done_enabled": ("已启用。", "Enabled."),
    "console.host": ("主机地址", "Host"),
    "console.any_host": ("任意地址", "any address"),
    "console.services": ("服务", "Services"),
    "console.description": ("说明", "Description"),
    "console.ae_title": ("AE 名称", "AE title"),
    "console.add_ae": ("登记 AE", "Register an AE title"),
    "console.done_ae_added": ("已登记。", "Registered."),
    "console.done_ae_disabled": ("已停用。", "Disabled."),
    "console.token_name": ("名称（用途）", "Name (who uses it)"),
    "console.token_name_hint": ("例如：报告系统", "e.g. the reporting system"),
    "console.scopes": ("权限", "Scopes"),
    "console.scope_read": ("读取影像", "read images"),
    "console.scope_write": ("上传影像与报告", "store images and reports"),
    "console.scope_film": ("发放云胶片", "issue films"),
    "console.created": ("创建时间", "Created"),
    "console.revoke": ("撤销", "Revoke"),
    "console.add_token": ("创建令牌", "Create a token"),
    "console.token_made": ("已创建令牌“{name}”：", "Token \u201c{name}\u201d created:"),
    "console.token_once": (
        "请立即复制保存：令牌只显示这一次，服务器只保存其摘要。",
        "Copy it now: it is shown this once, the server keeps only its hash.",
    ),
    "console.done_token_revoked": (
        "已撤销：一秒内在所有服务器上失效。",
        "Revoked: it stops on every server within a second.",
    ),
    "console.code": ("代码", "Code"),
    "console.code_hint": (
        "字母、数字、- 或 _；是存储路径的一部分，创建后不能修改。",
        "Letters, digits, - or _; part of the storage keys, never changed later.",
    ),
    "console.hospital_name": ("名称", "Name"),
    "console.name_latin": ("英文名称", "Latin name"),
    "console.region": ("行政区划代码", "Region code"),
    "console.sms_signature": ("短信签名", "SMS signature"),
    "console.add_hospital": ("添加医院", "Add a hospital"),
    "console.done_hospital_added": ("已添加医院。", "Hospital added."),
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
