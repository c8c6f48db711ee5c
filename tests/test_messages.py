"""The command table and the message catalogue: adding a command or a text is one entry, in both languages."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from mailbot.decide.command_specs import ALIASES, SPECS
from mailbot.decide.messages import LANGUAGES, MESSAGES, Message, localized, message, render

_CJK = re.compile(r"^[\u4e00-\u9fff]+$")
_SOURCES = sorted((Path(__file__).parent.parent / "mailbot").rglob("*.py"))


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("id", sorted(MESSAGES))
def test_every_message_has_every_language(id: str) -> None:
    templates = MESSAGES[id]
    assert set(templates) == set(LANGUAGES)
    assert all(t.strip() for t in templates.values())
    # The Chinese may say less than the English (a refusal shows the English beside it), never more: a
    # value the code does not pass would fail only when a Chinese case meets it.
    assert _fields(templates["zh-CN"]) <= _fields(templates["en"])


def test_every_message_id_in_the_code_is_in_the_catalogue_and_every_entry_is_used() -> None:
    code = "\n".join(p.read_text(encoding="utf-8") for p in _SOURCES if p.name != "messages.py")
    made = set(re.findall(r"""\bmessage\(\s*"([\w.]+)\"""", code))
    assert made and made <= set(MESSAGES)
    unused = {i for i in MESSAGES if f'"{i}"' not in code}
    assert not unused


def test_an_unknown_id_fails_where_it_is_made() -> None:
    with pytest.raises(KeyError):
        message("close.sent_twice")


def test_a_refusal_in_chinese_keeps_the_english_beside_it() -> None:
    said = message("command.bad_date", value="2021-13-45")
    assert localized(said, False, "zh-CN") == "日期无效（bad date '2021-13-45': expected YYYY-MM-DD）"
    assert localized(message("reopen.done"), True, "zh-CN") == "案例已重新打开"
    assert localized(said, False, "en") == str(said) == "bad date '2021-13-45': expected YYYY-MM-DD"


def test_a_nested_message_speaks_the_same_language() -> None:
    why = message("held.daily_cap", address="yang@customer.example", cap=3)
    held = message("held.reminder", number=4, at="2021-04-15 09:00", why=why)
    assert render(held, "en") == ("reminder 4 recorded; it goes out at 2021-04-15 09:00 "
                                  "(yang@customer.example already got 3 mails today)")
    assert render(held, "zh-CN") == "第 4 封提醒已记录；因 yang@customer.example 今天已收到 3 封邮件（每日上限），将于 2021-04-15 09:00 发出"
    assert held.replacing("yang@", "li@") == Message("held.reminder", {
        "number": 4, "at": "2021-04-15 09:00", "why": Message("held.daily_cap", {"address": "li@customer.example",
                                                                                  "cap": 3})})


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_command_is_one_entry_in_both_languages(spec) -> None:  # noqa: ANN001
    assert spec.name in spec.english
    assert spec.english and all(a.isascii() and a == a.lower() for a in spec.english)
    assert spec.chinese and all(_CJK.match(a) for a in spec.chinese)
    assert set(spec.help) == set(LANGUAGES)
    assert all(line.startswith("#") and "— " in line for line in spec.help.values())
    assert re.search("[\u4e00-\u9fff]", spec.help["zh-CN"]) and not re.search("[\u4e00-\u9fff]", spec.help["en"])
    assert all(spec.arguments.get(k) for k in spec.arguments)


def test_no_spelling_names_two_commands() -> None:
    spellings = [a for spec in SPECS for a in (*spec.english, *spec.chinese)]
    assert len(spellings) == len(set(spellings)) == len(ALIASES)
    assert len({spec.name for spec in SPECS}) == len(SPECS)
