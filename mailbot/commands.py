"""Engineer commands found at the top of a mail's new text (`#close`, `#暂停 3d`, …) — pure parsing."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailbot.models import ClosureFields

# Canonical name ← spellings (English and Chinese), matched case-insensitively after NFKC.
ALIASES: dict[str, str] = {
    "close": "close", "关闭": "close", "结案": "close", "關閉": "close", "結案": "close",
    "snooze": "snooze", "暂停": "snooze", "暫停": "snooze",
    "followup": "followup", "follow-up": "followup", "跟进": "followup", "跟進": "followup",
    "remind": "remind", "提醒": "remind",
    "waiting": "waiting", "等待": "waiting",
    "called": "called", "已致电": "called", "致电": "called", "已致電": "called",
    "reopen": "reopen", "重开": "reopen", "重新打开": "reopen", "重開": "reopen",
    "lang": "lang", "language": "lang", "语言": "lang", "語言": "lang",
    "status": "status", "状态": "status", "狀態": "status",
    "help": "help", "帮助": "help", "幫助": "help",
    "timezone": "timezone", "tz": "timezone", "时区": "timezone", "時區": "timezone",
    "add": "add", "添加": "add", "加入": "add", "增加": "add",
    "remove": "remove", "移除": "remove", "删除": "remove", "刪除": "remove", "去掉": "remove",
}

HELP = {
    "en": [
        "#close (then optional lines Problem: / Analysis: / Summary:) — send the closure summary and close",
        "#snooze 3d | #snooze until 2021-05-10 — hold reminders",
        "#followup off | #followup on — stop or resume reminders for this case",
        "#remind now — send the next reminder at once",
        "#waiting customer | engineer | vendor — who the case is waiting on",
        "#called — log a phone call attempt (reminders may then say we could not reach the customer)",
        "#reopen — reopen a closed case",
        "#lang en | zh-CN — language of the mail to the customer",
        "#timezone Europe/Berlin — count business days and hours in the customer's time zone",
        "#add ADDRESS — include someone: they get the case's reminders and closure from now on",
        "#remove ADDRESS — stop sending the case's reminders and closure to someone",
        "#status — reply with the case card",
        "#help — this list",
    ],
    "zh-CN": [
        "#关闭（下一行起可写 问题描述: / 问题分析: / 问题总结:）— 发送结案总结并关闭案例",
        "#暂停 3d | #暂停 until 2021-05-10 — 暂停提醒",
        "#跟进 off | #跟进 on — 停止或恢复本案例的提醒",
        "#提醒 now — 立即发送下一封提醒",
        "#等待 客户 | 工程师 | 厂商 (customer | engineer | vendor) — 案例正在等待哪一方",
        "#已致电 — 记录一次电话联系（此后提醒中可说明电话未能联系上客户）",
        "#重开 — 重新打开已关闭的案例",
        "#语言 中文 | 英文 (zh-CN | en) — 发给客户的邮件语言",
        "#时区 Europe/Berlin — 按客户所在时区计算工作日和工作时间",
        "#添加 地址 — 把某人加入本案例的客户：此后的提醒和结案总结都会发给他",
        "#移除 地址 — 不再向某人发送本案例的提醒和结案总结",
        "#状态 — 回复案例卡片",
        "#帮助 — 本列表",
    ],
}

_FIELDS = {
    "problem": re.compile(r"^\s*(?:问题描述|問題描述|problem(?: description)?|description)\s*[:：]\s*(.*)$", re.I),
    "analysis": re.compile(r"^\s*(?:问题分析|問題分析|analysis)\s*[:：]\s*(.*)$", re.I),
    "summary": re.compile(r"^\s*(?:问题总结|問題總結|summary|resolution)\s*[:：]\s*(.*)$", re.I),
}
# `#` and a word that does not start with a digit: `#1 priority` and `#2021` are prose, not commands.
_COMMAND_LINE = re.compile(r"^\s*[#＃]\s*([^\s\d]\S*)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Command:
    name: str  # canonical name, or "" when unknown
    raw: str  # the line as written
    args: tuple[str, ...] = ()
    error: str = ""  # why it cannot be carried out (unknown command, bad argument)
    closure: ClosureFields | None = None
    snooze_days: int | None = None
    snooze_until: date | None = None


# Chinese spellings of the arguments, to their canonical English (`#等待 客户`, `#语言 英文`, `#跟进 关闭`).
_ARGUMENTS = {
    "waiting": {"客户": "customer", "客戶": "customer", "用户": "customer", "工程师": "engineer",
                "工程師": "engineer", "我方": "engineer", "厂商": "vendor", "廠商": "vendor", "供应商": "vendor",
                "供應商": "vendor", "第三方": "vendor"},
    "lang": {"英文": "en", "英语": "en", "英語": "en", "中文": "zh-CN", "简体中文": "zh-CN", "汉语": "zh-CN",
             "漢語": "zh-CN"},
    "followup": {"打开": "on", "开启": "on", "关闭": "off"},
    "remind": {"现在": "now", "马上": "now"},
}


def _parse_args(name: str, raw: str, args: tuple[str, ...]) -> Command:
    if name in _ARGUMENTS and len(args) == 1:
        args = (_ARGUMENTS[name].get(args[0], args[0]),)
    lowered = tuple(a.lower() for a in args)
    if name == "snooze":
        if len(lowered) == 1 and (m := re.fullmatch(r"(\d{1,3})\s*(?:d|day|days|天)?", lowered[0])):
            return Command(name, raw, args, snooze_days=int(m.group(1)))
        if len(lowered) == 2 and lowered[0] in ("until", "至", "到"):
            try:
                return Command(name, raw, args, snooze_until=date.fromisoformat(lowered[1]))
            except ValueError:
                return Command(name, raw, args, error=f"bad date {args[1]!r}: expected YYYY-MM-DD")
        return Command(name, raw, args, error="expected '#snooze 3d' or '#snooze until YYYY-MM-DD'")
    if name == "followup" and lowered not in (("on",), ("off",), ("开",), ("关",)):
        return Command(name, raw, args, error="expected '#followup on' or '#followup off'")
    if name == "remind" and lowered not in ((), ("now",), ("立即",)):
        return Command(name, raw, args, error="expected '#remind now'")
    if name == "waiting" and (len(lowered) != 1 or lowered[0] not in ("customer", "engineer", "vendor")):
        return Command(name, raw, args, error="expected '#waiting customer', 'engineer' or 'vendor'")
    if name == "lang" and (len(args) != 1 or args[0].lower() not in ("en", "zh-cn", "zh")):
        return Command(name, raw, args, error="expected '#lang en' or '#lang zh-CN'")
    if name == "timezone" and (len(args) != 1 or not _is_zone(args[0])):
        return Command(name, raw, args, error="expected an IANA time zone, e.g. '#timezone Europe/Berlin'")
    if name in ("add", "remove"):
        return _addresses(name, raw, args)
    return Command(name, raw, args)


# One address as people paste it: `a@b.example`, `<a@b.example>`, `a@b.example,` — bounded, no spaces.
_ADDRESS = re.compile(r"[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,255}\.[A-Za-z0-9-]{2,63}")
MAX_ADDRESSES = 20  # per command line


def _addresses(name: str, raw: str, args: tuple[str, ...]) -> Command:
    """`#add a@x.example, <b@y.example>`: the addresses, lower-cased; any word that is not one is an error
    (nothing half-done)."""
    words = [w for a in args for w in re.split(r"[,;，；]", a) if w.strip("<> ")]
    found = [w.strip("<> ").lower() for w in words]
    bad = [w for w, f in zip(words, found, strict=True) if not _ADDRESS.fullmatch(f)]
    if not found or bad or len(found) > MAX_ADDRESSES:
        why = f"not an address: {bad[0]!r}" if bad else f"at most {MAX_ADDRESSES} addresses" if found else "no address"
        return Command(name, raw, args, error=f"expected '#{name} name@example.com' ({why})")
    return Command(name, raw, tuple(dict.fromkeys(found)))


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `America` is a folder of tzdata, not a zone
        return False
    return "/" in name or name == "UTC"


def _value(line: str) -> str:
    """A field's value as written: after the first colon, half- or full-width (no NFKC here, which would
    turn the Chinese `，` in a closure summary the customer reads into `,`)."""
    return re.split(r"[:：]", line, maxsplit=1)[1].strip() if re.search(r"[:：]", line) else ""


# A mail carries a handful of commands; 100,000 `#snooze 3d` lines once took 7 s to find and carry out (and
# made a receipt of 100,000 lines). The first MAX_COMMANDS run; the next one is answered with one error line
# and nothing after it is read.
MAX_COMMANDS = 20
TOO_MANY = f"too many commands: at most {MAX_COMMANDS} in one mail; this one and those after it were not carried out"


def find_commands(new_text: str) -> list[Command]:
    """Commands are `#word` lines at the top of the new text, before anything else the engineer wrote.
    `#close` may be followed by Problem/Analysis/Summary lines (full- or half-width colons); a field runs
    on over the lines under it until a blank line. The first line of prose ends the commands: a `#reopen`
    further down (in a signature, in pasted text) is not a command. At most MAX_COMMANDS are read: one
    more is returned as a "too many commands" error, and the rest of the text is not looked at.

    Command words and labels are matched after NFKC (`＃ＣＬＯＳＥ`, `问题描述：`); values keep their text."""
    # Blank lines and blanks at the top hold no command (the pattern and `raw` strip them anyway).
    lines = new_text.replace("\r", "").lstrip().split("\n")

    def folded(n: int) -> str:  # only the lines looked at are normalized, not a megabyte of text after them
        return unicodedata.normalize("NFKC", lines[n])

    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        m = _COMMAND_LINE.match(folded(i))
        if not m:
            break
        raw = lines[i].strip()
        if len(commands) == MAX_COMMANDS:
            commands.append(Command("", raw, tuple(m.group(2).split()), error=TOO_MANY))
            break
        word = m.group(1).lower()
        args = tuple(m.group(2).split())
        name = ALIASES.get(word, "")
        i += 1
        if not name:
            commands.append(Command("", raw, args, error=f"unknown command #{m.group(1)}"))
            continue
        command = _parse_args(name, raw, args)
        if name == "close":
            values: dict[str, list[str]] = {}
            current: str | None = None
            prose = False
            while i < len(lines) and not _COMMAND_LINE.match(line := folded(i)):
                text = lines[i]
                field = next((k for k, p in _FIELDS.items() if p.match(line)), None)
                if field:
                    current = field
                    values[current] = [_value(text)]
                elif not text.strip():
                    current = None
                elif current:
                    values[current].append(text.strip())
                else:
                    prose = True
                    break
                i += 1
            command = Command(
                "close", raw, args,
                closure=ClosureFields(**{k: "\n".join(v).strip() for k, v in values.items()}),
            )
            if prose:
                commands.append(command)
                break
        commands.append(command)
    return commands
