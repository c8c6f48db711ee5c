"""find_commands(): the `#word` lines an engineer writes at the top of a mail to the bot."""

from __future__ import annotations

from datetime import date

import pytest

from mailbot.decide.commands import ALIASES, HELP, Command, find_commands
from mailbot.models import ClosureFields

# Every spelling, in English and Chinese (Simplified and Traditional), case-insensitive, `#` or `＃`.
SPELLINGS = [
    ("#close", "close"), ("#CLOSE", "close"), ("#Close", "close"), ("＃close", "close"), ("＃ＣＬＯＳＥ", "close"),
    ("#关闭", "close"), ("#结案", "close"), ("#關閉", "close"), ("＃关闭", "close"), ("# close", "close"),
    ("#snooze 3d", "snooze"), ("#暂停 3d", "snooze"), ("#暫停 3d", "snooze"), ("#SNOOZE 3D", "snooze"),
    ("#followup off", "followup"), ("#follow-up on", "followup"), ("#跟进 关", "followup"), ("#跟進 开", "followup"),
    ("#remind now", "remind"), ("#remind", "remind"), ("#提醒 立即", "remind"),
    ("#waiting customer", "waiting"), ("#等待 vendor", "waiting"), ("#Waiting ENGINEER", "waiting"),
    ("#called", "called"), ("#已致电", "called"), ("#致电", "called"), ("#已致電", "called"),
    ("#reopen", "reopen"), ("#重开", "reopen"), ("#重新打开", "reopen"), ("#重開", "reopen"),
    ("#lang en", "lang"), ("#language zh-CN", "lang"), ("#语言 zh", "lang"), ("#語言 EN", "lang"),
    ("#status", "status"), ("#状态", "status"), ("#狀態", "status"),
    ("#help", "help"), ("#帮助", "help"), ("#幫助", "help"),
    ("#skip", "skip"), ("#跳过", "skip"), ("#跳過", "skip"),
]


@pytest.mark.parametrize(("line", "name"), SPELLINGS)
def test_every_spelling(line: str, name: str) -> None:
    [command] = find_commands(line)
    assert (command.name, command.error) == (name, "")


def test_every_alias_is_a_known_command_and_has_help() -> None:
    names = set(ALIASES.values())
    assert names == {"close", "snooze", "followup", "remind", "waiting", "called", "reopen", "lang", "status", "help",
                     "timezone", "add", "remove", "skip"}
    for lang in ("en", "zh-CN"):
        assert len(HELP[lang]) == len(names)


ARGS = [
    ("#snooze 3d", {"snooze_days": 3}),
    ("#snooze 3", {"snooze_days": 3}),
    ("#snooze 10 days", {"error": "expected '#snooze 3d' or '#snooze until YYYY-MM-DD'"}),
    ("#snooze 5days", {"snooze_days": 5}),
    ("#暂停 3天", {"snooze_days": 3}),
    ("#snooze ３ｄ", {"snooze_days": 3}),  # full-width digits
    ("#snooze until 2021-05-10", {"snooze_until": date(2021, 5, 10)}),
    ("#暂停 至 2021-05-10", {"snooze_until": date(2021, 5, 10)}),
    ("#snooze UNTIL 2021-05-10", {"snooze_until": date(2021, 5, 10)}),
    ("#snooze until 2021-13-10", {"error": "bad date '2021-13-10': expected YYYY-MM-DD"}),
    ("#snooze until 10/05/2021", {"error": "bad date '10/05/2021': expected YYYY-MM-DD"}),
    ("#snooze until", {"error": "expected '#snooze 3d' or '#snooze until YYYY-MM-DD'"}),
    ("#snooze", {"error": "expected '#snooze 3d' or '#snooze until YYYY-MM-DD'"}),
    ("#snooze soon", {"error": "expected '#snooze 3d' or '#snooze until YYYY-MM-DD'"}),
    ("#snooze 1000d", {"error": "expected '#snooze 3d' or '#snooze until YYYY-MM-DD'"}),
    ("#followup OFF", {"args": ("OFF",)}),
    ("#followup", {"error": "expected '#followup on' or '#followup off'"}),
    ("#followup maybe", {"error": "expected '#followup on' or '#followup off'"}),
    ("#timezone America", {"error": "expected an IANA time zone, e.g. '#timezone Europe/Berlin'"}),  # a tzdata folder
    ("#timezone Etc", {"error": "expected an IANA time zone, e.g. '#timezone Europe/Berlin'"}),
    ("#等待 客户", {"args": ("customer",)}),
    ("#语言 英文", {"args": ("en",)}),
    ("#remind later", {"error": "expected '#remind now'"}),
    ("#waiting boss", {"error": "expected '#waiting customer', 'engineer' or 'vendor'"}),
    ("#waiting", {"error": "expected '#waiting customer', 'engineer' or 'vendor'"}),
    ("#lang fr", {"error": "expected '#lang en' or '#lang zh-CN'"}),
    ("#lang", {"error": "expected '#lang en' or '#lang zh-CN'"}),
    ("#lang ZH-cn", {"args": ("ZH-cn",)}),
]


@pytest.mark.parametrize(("line", "expected"), ARGS)
def test_arguments(line: str, expected: dict[str, object]) -> None:
    [command] = find_commands(line)
    for field, value in expected.items():
        assert getattr(command, field) == value
    if "error" not in expected:
        assert command.error == ""


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("#foo", "unknown command #foo"),
        ("#closed", "unknown command #closed"),
        ("#关闭案例", "unknown command #关闭案例"),
        ("#Foo bar baz", "unknown command #Foo"),
    ],
)
def test_unknown_commands_are_reported(line: str, error: str) -> None:
    [command] = find_commands(line)
    assert (command.name, command.error) == ("", error)
    assert command.raw == line


CLOSE = [
    ("Chinese labels, ASCII colons",
     "#close\n问题描述: 用户反馈频繁蓝屏\n问题分析: 第三方软件 inode 导致\n问题总结: 已归档",
     ClosureFields("用户反馈频繁蓝屏", "第三方软件 inode 导致", "已归档")),
    ("full-width colons and ＃", "＃关闭\n问题描述：甲\n问题分析：乙\n问题总结：丙", ClosureFields("甲", "乙", "丙")),
    ("English labels, any case", "#CLOSE\nProblem: disk full\nANALYSIS: logs\nsummary: cleaned up",
     ClosureFields("disk full", "logs", "cleaned up")),
    ("English synonyms", "#close\nDescription: a\nAnalysis: b\nResolution: c", ClosureFields("a", "b", "c")),
    ("Traditional labels", "#結案\n問題描述：甲\n問題分析：乙\n問題總結：丙", ClosureFields("甲", "乙", "丙")),
    ("multi-line fields", "#close\n问题描述:\n  第一行\n  第二行\n问题分析: 一\n二\n问题总结: 完",
     ClosureFields("第一行\n第二行", "一\n二", "完")),
    ("Chinese punctuation in values is kept (no NFKC on values)", "#close\n问题描述: 蓝屏，需要紧急处理（已确认）",
     ClosureFields("蓝屏，需要紧急处理（已确认）")),
    ("missing fields stay empty", "#close\n问题总结: 完", ClosureFields(summary="完")),
    ("no fields", "#close", ClosureFields()),
    ("blank line between fields", "#close\n问题描述: a\n\n问题分析: b", ClosureFields("a", "b")),
    ("prose after the fields is not part of them",
     "#close\n问题描述: a\n\n(给机器人的指令，客户不会收到这封邮件)", ClosureFields("a")),
    ("a colon in a value", "#close\n问题分析: 错误码: 0x13A", ClosureFields(analysis="错误码: 0x13A")),
]


@pytest.mark.parametrize(("case", "text", "closure"), CLOSE, ids=[c[0] for c in CLOSE])
def test_close_fields(case: str, text: str, closure: ClosureFields) -> None:
    [command] = find_commands(text)
    assert command.name == "close"
    assert command.closure == closure


TOP = [
    ("commands after blank lines at the top", "\n\n#status\n", ["status"]),
    ("several commands in a row", "#snooze 3d\n#lang en\n\n#status", ["snooze", "lang", "status"]),
    ("a command after prose is not a command", "Hello team,\n#close", []),
    ("prose ends the commands", "#status\nplease see below\n#close", ["status"]),
    ("a #reopen under a close block's prose is not a command",
     "#close\n问题描述: a\n\nRegards, Li Qi\n#reopen", ["close"]),
    ("a #status right after the fields still counts", "#close\n问题描述: a\n\n#status", ["close", "status"]),
    ("prose directly under #close ends everything", "#close\nRegards, Li\n#status", ["close"]),
    ("`#1` is prose, not a command", "#1 priority is the printer\n#close", []),
    ("a number sign inside a line", "Ticket #close please", []),
    ("empty text", "", []),
    ("CRLF line ends", "#status\r\n#help\r\n", ["status", "help"]),
]


@pytest.mark.parametrize(("case", "text", "names"), TOP, ids=[t[0] for t in TOP])
def test_commands_only_at_the_top(case: str, text: str, names: list[str]) -> None:
    assert [c.name for c in find_commands(text)] == names


def test_raw_line_and_args_are_kept() -> None:
    [command] = find_commands("  #Snooze until 2021-05-10  ")
    assert command == Command("snooze", "#Snooze until 2021-05-10", ("until", "2021-05-10"),
                              snooze_until=date(2021, 5, 10))
