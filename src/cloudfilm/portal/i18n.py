"""Page texts: Simplified Chinese first, English on request (``/p/lang/en`` sets a cookie).

The lookup (``t``, ``lang_of``, the cookie) is shared with every page family in
``cloudfilm.http.templating``; this table is the patient pages' part of it.
"""

from __future__ import annotations

from cloudfilm.http.templating import LANG_COOKIE, add_texts, lang_of, t

__all__ = ["LANG_COOKIE", "TEXTS", "lang_of", "t"]

TEXTS: dict[str, tuple[str, str]] = {
    "app": ("云胶片", "Cloud film"),
    "switch": ("English", "中文"),
    "verify_title": ("查看您的云胶片", "View your cloud film"),
    "verify_help": (
        "请输入纸质报告上的 6 位访问码，或登记的手机号后 6 位。",
        "Enter the 6-digit access code printed on your report, or the last 6 digits of your "
        "phone number.",
    ),
    "code": ("访问码 / 手机号后6位", "Access code / last 6 phone digits"),
    "verify": ("验证", "Verify"),
    "bad_link": ("链接无效或已失效。", "This link is not valid (any more)."),
    "films": ("我的云胶片", "My cloud films"),
    "no_films": ("这里还没有云胶片。", "No cloud films here yet."),
    "basic": ("基本信息", "Exam"),
    "hospital": ("医院", "Hospital"),
    "patient": ("姓名", "Name"),
    "exam": ("检查项目", "Exam"),
    "date": ("检查日期", "Exam date"),
    "body_part": ("检查部位", "Body part"),
    "findings": ("影像所见", "Findings"),
    "impression": ("印象", "Impression"),
    "doctors": ("报告医生 / 审核医生", "Reported / reviewed by"),
    "images": ("影像", "Images"),
    "index_id": ("影像索引号", "Imaging index ID"),
    "n_images": ("{series} 个序列，{instances} 幅图像", "{series} series, {instances} images"),
    "view_report": ("查看原始报告", "Original report"),
    "view_images": ("查看影像", "View images"),
    "download_zip": ("下载原始影像 (DICOM)", "Download originals (DICOM)"),
    "download_jpeg": ("下载关键图像 (JPEG)", "Download key images (JPEG)"),
    "share": ("分享给医生", "Share with a doctor"),
    "history": ("访问记录", "Access history"),
    "logout": ("退出", "Log out"),
    "no_report": ("报告尚未发布。", "The report is not published yet."),
    "corrected": ("此报告已更正（第 {v} 版）。", "This report was corrected (version {v})."),
    "disclaimer": (
        "本页内容仅供参考，诊断以医院纸质报告为准。",
        "For information only; the hospital's signed report is authoritative.",
    ),
    "shared_view": ("医生查看（分享）", "Shared with you"),
    "new_share": ("新建分享", "New share"),
    "which_films": ("分享哪些检查", "Films to share"),
    "expiry": ("有效期", "Valid for"),
    "d1": ("1 天", "1 day"),
    "d7": ("7 天", "7 days"),
    "d30": ("30 天", "30 days"),
    "custom": ("自定义（天）", "Custom (days)"),
    "extra_code": ("附加访问码（可选，4-8 位数字）", "Extra code (optional, 4-8 digits)"),
    "allow_download": ("允许下载原始影像", "Allow downloading the originals"),
    "label": ("备注（如：医生姓名）", "Note (e.g. the doctor's name)"),
    "create_share": ("生成分享链接", "Create share link"),
    "your_shares": ("我的分享", "My shares"),
    "no_shares": ("还没有分享。", "No shares yet."),
    "revoke": ("撤销", "Revoke"),
    "copy": ("复制链接", "Copy link"),
    "state_active": ("有效", "active"),
    "state_revoked": ("已撤销", "revoked"),
    "state_expired": ("已过期", "expired"),
    "expires": ("到期", "expires"),
    "view_only": ("仅查看", "view only"),
    "can_download": ("可下载", "download allowed"),
    "assisted": ("医院代为授权：{who}", "Created at the hospital by {who}"),
    "when": ("时间（北京时间）", "When (China time)"),
    "who": ("访问者", "Who"),
    "what": ("操作", "What"),
    "times": ("{n} 次", "{n}×"),
    "denied": ("被拒绝", "refused"),
    "no_history": ("还没有访问记录。", "No accesses yet."),
    "share_code_title": ("请输入分享访问码", "Enter the share's code"),
    "open_share": ("查看", "Open"),
    "opening": ("正在打开…", "Opening…"),
    "login_title": ("用手机号查看全部云胶片", "All my films by phone number"),
    "phone": ("手机号", "Phone number"),
    "send_code": ("发送验证码", "Send code"),
    "sms_code": ("短信验证码", "SMS code"),
    "login": ("登录", "Log in"),
    "need_login": (
        "请通过短信或纸质报告上的链接打开云胶片。",
        "Open your cloud film from the SMS or the link on your paper report.",
    ),
    "back": ("返回", "Back"),
    "error": ("无法访问", "Not available"),
    "denied_page": ("您没有权限查看此内容。", "You may not see this."),
}


add_texts(TEXTS)
