"""The paper report: report text, the film's QR code and its access code (reportlab, A4).

The hospital's self-service printer prints it; the patient scans the QR code with WeChat and
types the access code. Chinese text uses reportlab's built-in CID font STSong-Light (no font
file needed). The same layout without QR and code is what share visitors get as "the report"
when the reporting system sent JSON only (no original PDF exists then).
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

import segno
from reportlab.graphics.shapes import Drawing, Rect
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cloudfilm.portal.models import Report

FONT = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(FONT))

_TITLE = ParagraphStyle("title", fontName=FONT, fontSize=18, leading=24, alignment=1)
_SUB = ParagraphStyle("sub", fontName=FONT, fontSize=14, leading=20, alignment=1)
_BODY = ParagraphStyle("body", fontName=FONT, fontSize=10.5, leading=16)
_HEAD = ParagraphStyle("head", fontName=FONT, fontSize=12, leading=18, spaceBefore=8)


def qr_svg(link: str) -> str:
    """The link as an SVG QR code (medium error correction survives a creased paper)."""
    return segno.make(link, error="m").svg_inline(scale=4, border=2)


def qr_svg_file(link: str) -> bytes:
    """The same QR code as a standalone SVG file: with its namespace, which an ``<img>`` or
    a browser tab needs (the inline form leaves it out, and then nothing is drawn)."""
    buf = io.BytesIO()
    segno.make(link, error="m").save(buf, kind="svg", scale=4, border=2)
    return buf.getvalue()


def _qr_drawing(link: str, size: float) -> Drawing:
    qr = segno.make(link, error="m")
    matrix = list(qr.matrix_iter(border=2))
    n = len(matrix)
    cell = size / n
    d = Drawing(size, size)
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                d.add(
                    Rect(x * cell, size - (y + 1) * cell, cell, cell, fillColor="black",
                         strokeColor=None)
                )  # fmt: skip
    return d


def _p(text: str, style: ParagraphStyle = _BODY) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def report_pdf(
    report: Report,
    hospital: str,
    *,
    link: str | None = None,
    code: str | None = None,
    index_id: str = "",
) -> bytes:
    """The report as a PDF; with ``link`` and ``code``, the QR block for the patient.
    ``index_id``: the study's imaging index ID, which another hospital finds the exam by."""
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=15 * mm,
        bottomMargin=15 * mm, title="检查报告单", author=hospital,
    )  # fmt: skip
    exam = report.exam_name or report.modality or ""
    story: list[object] = [
        _p(report.hospital or hospital, _TITLE),
        _p(f"{exam}检查报告单", _SUB),
        Spacer(1, 4 * mm),
    ]
    info = [
        ["姓名: " + report.patient_name, "性别: " + report.patient_sex,
         "年龄: " + report.patient_age, "影像号: " + report.patient_id],
        ["科室: " + report.department, "检查号: " + report.exam_number,
         "检查日期: " + report.exam_date, "报告日期: " + report.report_time],
    ]  # fmt: skip
    table = Table([[_p(c) for c in row] for row in info], colWidths=[43 * mm] * 4)
    table.setStyle(TableStyle([("LINEBELOW", (0, -1), (-1, -1), 0.6, "black")]))
    story += [table, _p("检查部位: " + report.body_part, _HEAD)]
    if index_id:
        story.append(_p("影像索引号: " + index_id))
    story += [_p("检查所见:", _HEAD), _p(report.findings or "—")]
    story += [_p("印象:", _HEAD), _p(report.impression or "—"), Spacer(1, 6 * mm)]
    story.append(_p(f"报告医生: {report.reporting_doctor}    审核医生: {report.reviewing_doctor}"))
    if link and code:
        qr = _qr_drawing(link, 32 * mm)
        box = Table(
            [[qr, [_p("云胶片 · 扫码查看影像和报告", _HEAD),
                   _p("用微信或手机相机扫描左侧二维码，输入下面的访问码（或手机号后6位）。"),
                   _p(f"访问码: {code}", ParagraphStyle("code", parent=_HEAD, fontSize=16,
                                                        leading=22))]]],
            colWidths=[38 * mm, 130 * mm],
        )  # fmt: skip
        box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.6, "black"),
                                 ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))  # fmt: skip
        story += [Spacer(1, 8 * mm), box]
    doc.build(story)
    return buf.getvalue()
