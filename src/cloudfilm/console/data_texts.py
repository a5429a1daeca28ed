"""Texts of the console's data pages (worklist, film desk, statistics, audit), Chinese first.

Keys start with ``console_`` (the shell's and the admin pages' start with ``console.``), so the
two tables can never clash in ``templating.add_texts``.
"""

from __future__ import annotations

from cloudfilm.http.templating import add_texts

TEXTS: dict[str, tuple[str, str]] = {
    # search forms, shared
    "console_search": ("查询", "Search"),
    "console_reset": ("清空", "Clear"),
    "console_from": ("开始日期", "From"),
    "console_to": ("结束日期", "To"),
    "console_all": ("全部", "All"),
    "console_all_hospitals": ("全部医院", "All hospitals"),
    "console_hospital": ("医院", "Hospital"),
    "console_prev": ("上一页", "Previous"),
    "console_next": ("下一页", "Next"),
    "console_page": ("第 {n} 页", "Page {n}"),
    "console_none_found": ("没有符合条件的记录。", "Nothing matches."),
    "console_bad_term": ("查询条件有误：{detail}", "A search term is not right: {detail}"),
    # worklist
    "console_wl_name": ("姓名", "Name"),
    "console_wl_name_hint": ("汉字或拼音，如 王 或 wang", "Chinese or pinyin, e.g. 王 or wang"),
    "console_wl_pid": ("患者ID", "Patient ID"),
    "console_wl_acc": ("检查号", "Accession"),
    "console_wl_modality": ("设备类型", "Modality"),
    "console_wl_date": ("检查日期", "Study date"),
    "console_wl_sex_age": ("性别/年龄", "Sex/age"),
    "console_wl_desc": ("检查描述", "Description"),
    "console_wl_counts": ("序列/图像", "Series/images"),
    "console_wl_state": ("报告/胶片", "Report/film"),
    "console_wl_open": ("阅片", "View"),
    "console_wl_desk": ("胶片", "Film"),
    "console_wl_report": ("有报告", "Report"),
    "console_wl_no_report": ("无报告", "No report"),
    "console_wl_film": ("已发胶片", "Film issued"),
    "console_wl_actions": ("操作", "Actions"),
    "console_sex_M": ("男", "M"),
    "console_sex_F": ("女", "F"),
    "console_sex_O": ("其他", "O"),
    "console_age_Y": ("{n}岁", "{n} y"),
    "console_age_M": ("{n}个月", "{n} mo"),
    "console_age_W": ("{n}周", "{n} wk"),
    "console_age_D": ("{n}天", "{n} d"),
    # film desk
    "console_desk_find": (
        "请在工作列表中找到检查，点击“胶片”进入胶片窗口。",
        "Find the study in the worklist and choose “Film” to open its film desk.",
    ),
    "console_desk_study": ("检查", "Study"),
    "console_desk_film": ("云胶片", "Cloud film"),
    "console_desk_no_report": (
        "该检查还没有报告：报告到达后才能生成云胶片。",
        "This study has no report yet: its film is issued with the report.",
    ),
    "console_desk_no_film": ("该检查尚未生成云胶片。", "No film has been issued for this study."),
    "console_desk_issue": ("生成云胶片", "Issue the film"),
    "console_desk_issued_at": ("生成时间", "Issued"),
    "console_desk_sms_at": ("短信发送", "SMS sent"),
    "console_desk_sms_none": ("未发送", "not sent"),
    "console_desk_generation": ("第 {n} 版链接", "link version {n}"),
    "console_desk_print": ("打印报告（含二维码和取片码）", "Print the report (QR and access code)"),
    "console_desk_qr": ("云胶片二维码", "Film QR code"),
    "console_desk_reissue": ("重新生成取片码", "Reissue link and code"),
    "console_desk_reissue_hint": (
        "旧的链接、二维码和取片码将立即失效，请重新打印交给患者。",
        "The old link, QR code and access code stop working at once: print again for the patient.",
    ),
    "console_desk_reissued": (
        "已重新生成：旧的链接和取片码已失效，请重新打印。",
        "Reissued: the old link and code no longer work. Print the report again.",
    ),
    "console_desk_issued": ("云胶片已生成。", "The film is issued."),
    "console_desk_share": (
        "代患者分享（面对面核实身份后）",
        "Share for the patient (verified in person)",
    ),
    "console_desk_share_hint": (
        "仅在当面核实患者身份并取得同意后使用。分享记录将以您的姓名登记：{name}。",
        "Only after verifying the patient in person and with their consent. The share is "
        "recorded under your name: {name}.",
    ),
    "console_desk_days": ("有效天数", "Valid for (days)"),
    "console_desk_code": ("附加提取码（可选，4-8 位数字）", "Extra code (optional, 4-8 digits)"),
    "console_desk_download": ("允许下载原始影像", "Allow downloading the originals"),
    "console_desk_label": ("备注（如接收医院）", "Label (e.g. the receiving hospital)"),
    "console_desk_make_share": ("创建分享", "Create the share"),
    "console_desk_share_made": (
        "分享已创建。链接和二维码只显示这一次，请现在交给患者或医生。",
        "Share created. The link and QR code are shown only now: give them to the patient or "
        "the doctor.",
    ),
    "console_desk_share_link": ("分享链接", "Share link"),
    "console_desk_shares": ("该胶片的分享", "Shares of this film"),
    "console_desk_expires": ("到期", "Expires"),
    "console_desk_assisted": ("代为授权", "Assisted by"),
    "console_desk_state_active": ("有效", "active"),
    "console_desk_state_revoked": ("已撤销", "revoked"),
    "console_desk_state_expired": ("已过期", "expired"),
    "console_desk_not_found": ("未找到该检查。", "No such study."),
    "console_desk_bad_days": ("有效天数应为 1 到 365 天。", "Days: 1 to 365."),
    # statistics
    "console_st_range": ("统计区间", "Range"),
    "console_st_region": ("地区代码", "Region code"),
    "console_st_region_hint": ("如 320000（江苏）、320100（南京）", "e.g. 320000, 320100"),
    "console_st_group": ("分组", "Group by"),
    "console_st_by_hospital": ("按医院", "Hospital"),
    "console_st_by_region": ("按地区", "Region"),
    "console_st_totals": ("合计", "Totals"),
    "console_st_days": ("每日趋势", "Daily activity"),
    "console_st_modalities": ("按设备类型", "By modality"),
    "console_st_groups": ("按机构", "By organisation"),
    "console_st_day": ("日期", "Date"),
    "console_st_note": (
        "按北京时间统计归档收到影像的日期；查看次数为每位访客每天每个检查计一次。",
        "Days are Beijing calendar days of receipt; a view is one visitor, one study, one day.",
    ),
    "console_m_studies": ("检查数", "Studies"),
    "console_m_instances": ("图像数", "Images"),
    "console_m_bytes": ("存储量", "Storage"),
    "console_m_films": ("胶片", "Films"),
    "console_m_views": ("查看", "Views"),
    "console_m_shares": ("分享", "Shares"),
    "console_m_sms": ("短信", "SMS"),
    # audit
    "console_au_since": ("开始时间", "Since"),
    "console_au_until": ("结束时间", "Until"),
    "console_au_principal": ("操作者", "Who"),
    "console_au_principal_hint": ("如 user:wang、patient:*", "e.g. user:wang, patient:*"),
    "console_au_study": ("检查 UID", "Study UID"),
    "console_au_action": ("操作", "Action"),
    "console_au_outcome": ("结果", "Outcome"),
    "console_au_allow": ("允许", "allowed"),
    "console_au_deny": ("拒绝", "denied"),
    "console_au_time": ("时间", "Time"),
    "console_au_detail": ("说明", "Detail"),
    "console_au_client": ("来源地址", "Client"),
    "console_au_newest": ("最新", "Newest"),
    "console_au_older": ("更早", "Older"),
}

add_texts(TEXTS)


def size_text(n: int) -> str:
    """Bytes as people read them (1.5 GB), binary units like the charts'."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"
