"""Splits a reply's own words from the quoted history under it, in Chinese and English mail.

mail-parser-reply handles Outlook's `发件人:` (ASCII colon), `-----Original Message-----` and `On … wrote:`;
it misses the full-width `发件人：`, `-----原始邮件-----`, Foxmail's `--- 原始邮件 ---` and Gmail's `…于…写道：`.
So a small pre-pass of ours cuts at those first, then mail-parser-reply does the rest.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser

_LANGUAGES = ["en", "zh", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs", "ja", "ko"]
_PARSER = EmailReplyParser(languages=_LANGUAGES)

_SEPARATOR_LINES = [
    re.compile(r"^\s*-{2,}\s*原始邮件\s*-{2,}\s*$"),  # Outlook zh / Foxmail `--- 原始邮件 ---`
    re.compile(r"^\s*-{2,}\s*(?:Original Message|Forwarded message|转发的邮件|原邮件)\s*-{2,}\s*$", re.I),
    re.compile(r"^\s*_{10,}\s*$"),  # Outlook on the web: a rule of underscores above the header block
    re.compile(r"^.{0,200}于.{0,120}写道\s*[:：]\s*$"),  # Gmail zh: `杨先生 <…> 于2021年4月12日周一 写道：`
    re.compile(r"^.{0,200}\bwrote\s*:\s*$", re.I),  # `On …, X wrote:` on one line
    re.compile(r"^\s*在\s*.{0,120}[，,]\s*.{0,120}写道\s*[:：]\s*$"),  # Apple Mail zh
]
# An Outlook header block: `发件人:` / `From:` followed within a few lines by a send-time or recipient line.
_HEADER_START = re.compile(r"^\s*[*]{0,2}(?:发件人|寄件者|From)\s*[*]{0,2}\s*[:：]", re.I)
_HEADER_NEXT = re.compile(
    r"^\s*[*]{0,2}(?:发送时间|发送日期|寄件日期|日期|时间|收件人|Sent|Date|To)\s*[*]{0,2}\s*[:：]", re.I
)


def _first_history_line(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if any(p.match(line) for p in _SEPARATOR_LINES):
            return i
        if _HEADER_START.match(line) and any(_HEADER_NEXT.match(n) for n in lines[i + 1 : i + 5]):
            return i
        if line.startswith(">") and i > 0 and all(x.startswith(">") or not x.strip() for x in lines[i:]):
            return i
    return None


def split_reply(text: str) -> tuple[str, str]:
    """Return (new text, quoted history). Never raises; when in doubt, keeps the text as new."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    cut = _first_history_line(lines)
    head = "\n".join(lines[:cut]) if cut is not None else text
    history = "\n".join(lines[cut:]) if cut is not None else ""
    try:
        latest = _PARSER.parse_reply(text=head)
    except Exception:  # a third-party regex engine on hostile input: keep our own cut
        latest = None
    if latest is not None and latest.strip() and len(latest.strip()) < len(head.strip()):
        rest = head[len(latest) :] if head.startswith(latest) else ""
        history = (rest + "\n" + history).strip("\n") if rest else history
        head = latest
    return head.strip(), history.strip()


# Outlook/Gmail/Apple HTML put the quoted message in a recognisable block; cut the HTML there.
_HTML_HISTORY = re.compile(
    r"<div[^>]+id=[\"']?(?:divRplyFwdMsg|appendonsend|mail-editor-reference-message-container)"
    r"|<hr[^>]+id=[\"']?stopSpelling"
    r"|<div[^>]+class=[\"']?(?:gmail_quote|gmail_attr|moz-cite-prefix|yahoo_quoted|OutlookMessageHeader)"
    r"|<blockquote[^>]+type=[\"']?cite"
    r"|<div[^>]+style=[\"'][^\"']*border-top:\s*solid\s+#(?:E1E1E1|B5C4DF)",
    re.I,
)


def cut_html_history(html: str) -> str:
    m = _HTML_HISTORY.search(html)
    return html[: m.start()] if m else html
