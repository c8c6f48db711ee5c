"""Splits a reply's own words from the quoted history under it, in Chinese and English mail.

mail-parser-reply handles Outlook's `发件人:` (ASCII colon), `-----Original Message-----` and `On … wrote:`;
it misses the full-width `发件人：`, `-----原始邮件-----`, Foxmail's `--- 原始邮件 ---` and Gmail's `…于…写道：`.
So a small pre-pass of ours cuts at those first, then mail-parser-reply does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import re2
from mailparser_reply import EmailMessage, EmailReplyParser

# Each language adds a dozen regexes per call; with all thirteen the re module's cache thrashes and
# recompiles on every mail (measured: 0.6 ms a mail). Other languages' attribution lines are caught by
# our own pre-pass (`wrote:`, `schrieb`, …).
_LANGUAGES = ["en", "zh", "de"]
_PARSER = EmailReplyParser(languages=_LANGUAGES)

# Each list is one alternation, tried once per line (a generator of `p.match` calls per line cost more than
# all the rest of the scan).
_SEPARATOR_LINE = re.compile("|".join([
    # Outlook zh / Foxmail `--- 原始邮件 ---`; QQ Mail's plain text keeps the `&nbsp;` of its HTML
    # (`------------------&nbsp;原始邮件&nbsp;------------------`); older Outlook zh `-----邮件原件-----`;
    # NetEase Mail Master `---- 回复的原邮件 ----`. The blanks and `&nbsp;` are one class of disjoint
    # alternatives beside the dashes: linear.
    r"^\s*-{2,}(?:\s|&nbsp;)*(?:原始邮件|邮件原件|回复的原邮件|回复的原始邮件)(?:\s|&nbsp;)*-{2,}\s*$",
    r"(?i:^\s*-{2,}(?:\s|&nbsp;)*(?:Original Message|Original|Forwarded message|转发的邮件|原邮件|原始郵件)"
    r"(?:\s|&nbsp;)*-{2,}\s*$)",
    r"^\s*_{10,}\s*$",  # Outlook on the web: a rule of underscores above the header block
]))
# The line that introduces a quote: `On …, X wrote:`, Gmail zh `杨先生 <…> 于2021年4月12日周一 下午5:52写道：`,
# Apple Mail zh `在 2021年4月12日，… 写道：`, German `Am … schrieb …:`, and their cousins.
_ATTRIBUTION = re.compile("|".join([
    r"^.{0,300}写道\s*[:：]\s*$",
    r"(?i:^.{0,300}\b(?:wrote|a écrit|escribió|ha scritto|scrisse|skrev|schreef|napisał|написал|napsal|"
    r"kirjoitti|schrieb)\s*[:：]\s*$)",  # NetEase in English writes `On 4/12/2021 17:52，X<x@y> wrote：`
    r"^\s*Am\s.{0,200}\bschrieb\b.{0,200}:\s*$",
    r"^.{0,300}書きました\s*[:：]?\s*$",
]))
# Gmail wraps a long attribution: `On Mon, Apr 12, 2021 at 5:52 PM Li Qi <` / `liqi@…> wrote:`.
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Am|Le|El|Il|Op|Den|Em|W dniu|在)\s|<\s*$|于|於", re.I)
# An Outlook header block: `发件人:` / `From:` followed within a few lines by a send-time or recipient line.
_HEADER_START = re.compile(r"^\s*[*]{0,2}(?:发件人|寄件者|寄件人|From)\s*[*]{0,2}\s*[:：]", re.I)
_HEADER_NEXT = re.compile(
    r"^\s*[*]{0,2}(?:发送时间|发送日期|寄件日期|日期|时间|收件人|Sent|Date|To)\s*[*]{0,2}\s*[:：]", re.I
)
_RULE = re.compile(r"^\s*[-_=*~]{3,}\s*$")  # a bare separator rule left at the end of the new text


def _attribution_start(lines: list[str], i: int) -> int | None:
    """The first line of an attribution that ends on line i, or None."""
    if not _ATTRIBUTION.match(lines[i]):
        return None
    prev = lines[i - 1] if i > 0 else ""
    if prev.strip() and not prev.startswith(">") and len(prev) <= 200 and _ATTRIBUTION_START.search(prev):
        return i - 1
    return i


def _quoted_to_the_end(lines: list[str]) -> int:
    """The first line from which every line to the end is `>`-quoted or blank (len(lines) when the last line
    is neither). One pass from the end: asking it of each line in turn was quadratic (a body of text, 20,000
    `>` lines and text again took 35 s)."""
    start = len(lines)
    while start > 0 and (lines[start - 1].startswith(">") or not lines[start - 1].strip()):
        start -= 1
    return start


def _in_text(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A per-line pattern for a search over the whole text (re.M): a blank must not span a line break, so
    that a match starts on the line the per-line pattern matches. One search in C instead of four regex calls
    a line in Python (500,000 short lines took 1 s a pass)."""
    return re.compile(pattern.pattern.replace(r"\s", r"[^\S\n]"), pattern.flags | re.M)


_SEPARATOR_IN_TEXT = _in_text(_SEPARATOR_LINE)
_ATTRIBUTION_IN_TEXT = _in_text(_ATTRIBUTION)
_HEADER_START_IN_TEXT = _in_text(_HEADER_START)
_HEADER_NEXT_IN_TEXT = _in_text(_HEADER_NEXT)


def _line_numbers(text: str, matches: Iterator[re.Match[str]]) -> Iterator[int]:
    """The line number of each match (in order), counting line breaks once from one match to the next."""
    line, pos = 0, 0
    for m in matches:
        line += text.count("\n", pos, m.start())
        pos = m.start()
        yield line


# Which lines the searches below need to look at, found by what each rule cannot match without: the
# searches themselves try every alternative at every line start (the attribution's `^.{0,300}` backtracks
# over each line), two thirds of split_reply's time. tests/test_parse_fast_paths.py runs every corpus and
# benchmark mail both ways.
_LINE_ENDS_IN_COLON = re.compile(r"[:：][^\S\n]*$", re.M)  # alternatives 1-3 of _ATTRIBUTION end so


def _may_hold_separator(text: str) -> bool:
    """False when _SEPARATOR_LINE matches no line: each alternative needs `--` or ten `_`."""
    return "--" in text or "_" * 10 in text


def _attribution_candidates(text: str) -> Iterator[int]:
    """Line numbers, in order, of every line _ATTRIBUTION may match (and maybe more): one that ends in a
    colon, or all of them when `書きました` (whose colon is optional) is in the text."""
    if "書きました" in text:
        return _line_numbers(text, _ATTRIBUTION_IN_TEXT.finditer(text))
    return _line_numbers(text, _LINE_ENDS_IN_COLON.finditer(text))


_HEADER_TRIES = 8


def _first_history_line(lines: list[str]) -> int | None:
    """The first line of the quoted history: a separator, an attribution (with the line it wraps from), an
    Outlook header block, or `>` quoting that runs to the end. Each rule is one search over the text; the
    earliest line found wins."""
    text = "\n".join(lines)
    found: list[int] = []
    if _may_hold_separator(text) and (m := _SEPARATOR_IN_TEXT.search(text)) is not None:
        found.append(text.count("\n", 0, m.start()))
    for i in _attribution_candidates(text):  # the first line that is an attribution
        if (start := _attribution_start(lines, i)) is not None:
            found.append(start)
            break
    header_next: set[int] | None = None
    for k, i in enumerate(_line_numbers(text, _HEADER_START_IN_TEXT.finditer(text))):
        if k < _HEADER_TRIES:  # the next four lines asked one by one (a real header block ends the loop)
            hit = any(_HEADER_NEXT.match(lines[n]) for n in range(i + 1, min(i + 5, len(lines))))
        else:  # a run of `From:` lines: every send-time line found in one search
            if header_next is None:
                header_next = set(_line_numbers(text, _HEADER_NEXT_IN_TEXT.finditer(text)))
            hit = any(n in header_next for n in range(i + 1, i + 5))
        if hit:
            found.append(i)
            break
    quoted = next((i for i in range(max(1, _quoted_to_the_end(lines)), len(lines)) if lines[i].startswith(">")), None)
    return min([*found, quoted] if quoted is not None else found, default=None)


def _quote_above(lines: list[str]) -> int:
    """Bottom-posting (`X wrote:` / `> …` first, the answer under it): how many lines the quote above the
    answer takes, or 0 when the text does not start with a `>`-quoted block."""
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    if start == len(lines):
        return 0
    k = start
    for i in range(start, min(start + 2, len(lines))):
        if _attribution_start(lines, i) == start:
            k = i + 1
            break
    end = k
    while end < len(lines) and (lines[end].startswith(">") or not lines[end].strip()):
        end += 1
    quoted = any(line.startswith(">") for line in lines[k:end])
    if not quoted or end == len(lines):
        return 0  # an attribution over unquoted history, or nothing but quote: no answer under it
    return end


def _trim(lines: list[str]) -> str:
    """Drop blank lines and bare separator rules at both ends; keep each line's own indentation. By index:
    dropping a line at a time by slicing copied the list each time (80,000 lines of one space: 26 s)."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and (not lines[end - 1].strip() or _RULE.match(lines[end - 1])):
        end -= 1
    return "\n".join(line.rstrip() for line in lines[start:end])


_LONG_SPACE = re.compile(r"[ \t\u3000\xa0]{200,}")
_MANY_BLANK_LINES = 50
# mail-parser-reply only looks for where the quoted history starts; our own scan (above) has already cut at
# every form we know. It costs 5 µs a character at best and is superlinear on some shapes (`Sent from my
# iPhone` lines: 64 KB 0.05 s, 256 KB 0.5 s), so it sees the first 32 KB of the reply's own text: a form
# only it knows, further down than that, leaves the rest as new text (when in doubt, keep).
LIBRARY_CHARS = 32 * 1024


def _for_the_library(lines: list[str]) -> tuple[list[str], list[int]]:
    """What mail-parser-reply is shown, and where each of its lines came from. Its regexes take quadratic
    time on long runs of whitespace (measured: 20,000 blank lines 20 s, 20,000 spaces 1.8 s), which anyone
    can send: a run of more than 50 blank lines is shortened to 50, a run of 200 spaces or more to eight;
    and it sees at most LIBRARY_CHARS. Ordinary mail is shown as it is."""
    shown: list[str] = []
    origin: list[int] = []
    blanks = 0
    room = LIBRARY_CHARS
    for i, line in enumerate(lines):
        if room <= 0:
            break
        blanks = blanks + 1 if not line.strip() else 0
        if blanks > _MANY_BLANK_LINES:
            continue
        line = _LONG_SPACE.sub(" " * 8, line[: room + 200])[:room]  # the slice keeps a huge line's sub short
        shown.append(line)
        origin.append(i)
        room -= len(line) + 1
    return shown, origin


# mail-parser-reply's latest reply is its normalised text (each line stripped) up to the first match of its
# header pattern. Every branch of that pattern for en, zh and de needs one of these: `On … wrote:`, `…写道：`
# and `Am … schrieb …:` at a line end, `-----Original Message-----`, an Outlook field name and its colon
# (`From:`, `发件人:`, `Betreff:` …). Same flags as the library's, so the same letters match (re.I's `ſ`, `K`).
_LIBRARY_HEADER_HINT = re.compile(
    r"(?<=wrote):$|写道：$|schrieb\s|-----|:(?:"
    r"(?<=to:)|(?<=an:)|(?<=cc:)|(?<=von:)|(?<=from:)|(?<=sent:)|(?<=date:)|(?<=datum:)|(?<=subject:)"
    r"|(?<=betreff:)|(?<=gesendet:)|(?<=organisation:)|(?<=organization:)"
    r"|(?<=发件人:)|(?<=收件人:)|(?<=主题:)|(?<=抄送:)|(?<=组织:)|(?<=发送时间:))",
    re.M | re.I,
)


def _may_find_header(normalised: str) -> bool:
    """False when mail-parser-reply's header pattern cannot match its normalised text."""
    return _LIBRARY_HEADER_HINT.search(normalised) is not None


def _latest_reply(seen: str) -> str | None:
    """`_PARSER.parse_reply(seen)`. With no header to find, the library answers its whole normalised text,
    after running a disclaimer and a signature pattern whose results that answer does not use (most mail:
    our own scan has cut the history off already); that answer is given here without them."""
    message = EmailMessage(text=seen, languages=_PARSER.languages)
    if not _may_find_header(message.text):
        return message.text.strip()
    return message.read().latest_reply


def split_reply(text: str) -> tuple[str, str]:
    """Return (new text, quoted history). Never raises; when in doubt, keeps the text as new."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    above: list[str] = []
    for _ in range(20):  # interleaved quote/answer blocks: a bound, not a recursion
        n = _quote_above(lines)
        if not n:
            break
        above += lines[:n]
        lines = lines[n:]
    cut = _first_history_line(lines)
    head_lines = lines[:cut] if cut is not None else lines
    history = lines[cut:] if cut is not None else []
    head = "\n".join(head_lines).strip("\n")
    ours = head.split("\n")
    shown, origin = _for_the_library(ours)
    seen = "\n".join(shown)
    try:
        latest = _latest_reply(seen)
    except Exception:  # a third-party regex engine on hostile input: keep our own cut
        latest = None
    if latest is not None and latest.strip() and len(latest.strip()) < len(seen.strip()):
        # mail-parser-reply strips every line; map its cut back onto our lines to keep indentation
        # (pasted logs and command output).
        theirs = latest.split("\n")
        if len(theirs) <= len(shown) and all(a.strip() == b.strip() for a, b in zip(theirs, shown, strict=False)):
            cut = origin[len(theirs)] if len(theirs) < len(origin) else len(ours)
            head, rest = "\n".join(ours[:cut]), ours[cut:]
        else:
            head, rest = latest, []
        if any(line.strip() for line in rest):
            history = rest + history
    return _trim(head.split("\n")), _trim(above + history)


# Outlook/Gmail/Apple HTML put the quoted message in a recognisable block; cut the HTML there.
# On RE2 (linear time): with Python's `re`, each `<div` retried `[^>]+` to the end of an unclosed tag, and
# `<div style='` × 5,000 took 49 s.
_HTML_HISTORY = re2.compile(
    r"(?i)<div[^>]+id=[\"']?(?:divRplyFwdMsg|appendonsend|mail-editor-reference-message-container)"
    r"|<hr[^>]+id=[\"']?stopSpelling"
    r"|<div[^>]+class=[\"']?(?:gmail_quote|gmail_attr|moz-cite-prefix|yahoo_quoted|OutlookMessageHeader)"
    r"|<blockquote[^>]+type=[\"']?cite"
    r"|<div[^>]+style=[\"'][^\"']*border-top:\s*solid\s+#(?:E1E1E1|B5C4DF)"
)


def cut_html_history(html: str) -> str:
    m = _HTML_HISTORY.search(html)
    return html[: m.start()] if m else html
