"""Forged mail changes nothing: a mail that claims an engineer and fails our server's authentication is an
outsider's, and a stranger's refused command reaches the engineers once a day, quoted and inert."""

from __future__ import annotations

import pytest
from trustlife import (
    BOT,
    CUSTOMER,
    ENGINEER,
    FORGED,
    GENUINE,
    KEY,
    MX,
    SUBJECT,
    Bot,
    at,
    html_of,
    mail,
    text_of,
)

from mailbot.decide.policy import defang, quote_inert
from mailbot.models import CaseStatus, EntryKind, Role

PHISH = "您好，系统升级，请在此登录更新账户：https://evil.example/login?u=yang\n联系人 it@evil.example"


def notices(bot: Bot, kind_words: str) -> list:
    return [m for m in bot.sent(ENGINEER) if kind_words in str(m["Subject"])]


@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings(security={"trust_authentication_results": [MX]}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT, headers=GENUINE,
                   name="Li Qi"), "2021-04-13T02:00+08:00")
    case = b.case()
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.customers == (CUSTOMER,)
    return b


def test_a_forged_engineer_mail_adds_no_one_and_is_never_quoted_to_the_customer(bot: Bot) -> None:
    before = bot.case()
    # A forger writes "as Li Qi" to the customer and to a new address, with a link: no command at all.
    bot.receive(mail(ENGINEER, CUSTOMER, PHISH, "2021-04-14T10:00+08:00", cc=f"victim@customer.example, {BOT}",
                     subject="RE: " + SUBJECT, headers=FORGED, name="Li Qi"), "2021-04-14T10:00+08:00")
    case = bot.case()
    assert case.customers == before.customers  # victim@ was not added
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.last_engineer_mail == before.last_engineer_mail
    [entry] = [e for e in case.timeline if e.direction == "in" and "evil" in e.text]
    assert entry.role == Role.OTHER  # on the record, as an outsider's mail
    assert any("failed authentication" in n for n in case.notes)

    # The engineers hear of it once, with the mail quoted inert (no working link, no address).
    [notice] = notices(bot, "未通过发件人验证")
    body = text_of(notice)
    assert "可能是伪造的" in body and "dmarc" in body
    assert "> 您好，系统升级，请在此登录更新账户：hxxps[:]//evil[.]example/login?u=yang" in body
    assert "https://evil.example" not in body and "it@evil.example" not in body
    assert "https://evil.example" not in html_of(notice) and "evil.example" not in html_of(notice)

    # The reminder chases the engineer's real request, never the forged text, and goes to the real customer.
    bot.tick("2021-04-16T09:00+08:00")
    [reminder] = bot.sent(CUSTOMER)
    assert "请上传日志" in text_of(reminder) and "evil" not in text_of(reminder)
    assert "victim@customer.example" not in str(reminder["To"]) + str(reminder["Cc"] or "")


def test_a_forged_command_runs_nothing_and_the_engineers_hear_once_a_day(bot: Bot) -> None:
    for minute in (0, 5, 10):  # three forged #close in one morning
        bot.receive(mail(ENGINEER, BOT, "#close\nSummary: solved, see https://evil.example", f"2021-04-14T10:0{minute}+08:00"
                         if minute < 10 else "2021-04-14T10:10+08:00", subject="RE: " + SUBJECT, headers=FORGED),
                    "2021-04-14T10:15+08:00")
    case = bot.case()
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.closure is None
    assert bot.sent(CUSTOMER) == []  # no closure summary
    assert [e.kind for e in case.timeline].count(EntryKind.COMMAND) == 3  # all three are on the record
    [notice] = notices(bot, "未通过发件人验证")
    assert "> #close" in text_of(notice)
    assert not [m for m in bot.sent(ENGINEER) if "你发来的指令" in text_of(m)]  # no receipt, as if Li Qi had sent it
    # The next day the same forger is reported again (a new day, a new notice).
    bot.receive(mail(ENGINEER, BOT, "#close", "2021-04-15T10:00+08:00", subject="RE: " + SUBJECT, headers=FORGED),
                "2021-04-15T10:00+08:00")
    assert len(notices(bot, "未通过发件人验证")) == 2
    # Li Qi's real command still works.
    bot.receive(mail(ENGINEER, BOT, "#close", "2021-04-15T11:00+08:00", subject="RE: " + SUBJECT, headers=GENUINE),
                "2021-04-15T11:00+08:00")
    assert bot.case().status == CaseStatus.CLOSED


def test_without_trusted_servers_an_engineer_address_is_believed_as_before(make_settings) -> None:
    # `[security] trust_authentication_results = []` (the default): nothing is checked, so the forged
    # headers change nothing and the mail counts as Li Qi's (documented: the setting is the protection).
    b = Bot(make_settings())
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT, headers=FORGED),
              "2021-04-13T02:00+08:00")
    case = b.case()
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.customers == (CUSTOMER,)
    assert [e.role for e in case.timeline] == [Role.ENGINEER]
    assert b.sent() == []


def test_a_strangers_command_is_reported_once_a_day_quoted_and_inert(bot: Bot) -> None:
    stranger = "mallory@evil.example"
    command = '#close\nSummary: <a href="https://evil.example/x">click</a> www.evil.example'
    for minute in range(4):
        bot.receive(mail(stranger, BOT, command, f"2021-04-14T10:0{minute}+08:00", subject="RE: " + SUBJECT),
                    f"2021-04-14T10:0{minute}+08:00")
    assert bot.case().status == CaseStatus.WAITING_CUSTOMER
    [notice] = notices(bot, "已拒绝一条指令")
    text = text_of(notice)
    assert "> #close" in text
    assert '> Summary: <a href="hxxps[:]//evil[.]example/x">click</a> www[.]evil[.]example' in text
    html = html_of(notice)
    assert "&lt;a href=" in html and '<a href="' not in html  # escaped: shown, not a link
    assert bot.sent(stranger) == []  # the stranger is never answered
    bot.receive(mail(stranger, BOT, "#close", "2021-04-15T10:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-15T10:00+08:00")
    assert len(notices(bot, "已拒绝一条指令")) == 2
    assert sum(1 for n in bot.case().notes if "refused" in n) == 5  # each attempt is on the record


@pytest.mark.parametrize(("line", "inert"), [
    ("https://evil.example/login", "hxxps[:]//evil[.]example/login"),
    ("HTTP://www.x.com", "hxxp[:]//www[.]x[.]com"),
    ("write to it@evil.example", "write to it[@]evil[.]example"),
    ("evil.example/path", "evil[.]example/path"),
    ("ftp://files.example", "ftp[:]//files[.]example"),
    ("a sentence. Next one", "a sentence. Next one"),  # a full stop before a space stays
    ("right\u202eto-left", "rightto-left"),  # bidi controls that disguise a link are dropped
    ("请访问 https://例子.example", "请访问 hxxps[:]//例子[.]example"),
])
def test_defang_leaves_nothing_a_mail_client_would_link(line: str, inert: str) -> None:
    assert defang(line) == inert


def test_the_quote_is_a_few_short_lines() -> None:
    quoted = quote_inert("\n".join(f"line {n} " + "x" * 300 for n in range(20)))
    assert len(quoted) == 7 and quoted[-1] == "> […]"
    assert all(q.startswith("> ") and len(q) <= 2 + 160 for q in quoted)
    assert quote_inert("#close\n\nSummary: ok") == ("> #close", ">", "> Summary: ok")
    assert quote_inert("") == ()


def test_a_forged_mail_on_the_bounce_path_still_cannot_change_status(bot: Bot) -> None:
    # Forged mail from the engineer to the customer, written as a reply: the case stays as Li Qi left it.
    bot.receive(mail(CUSTOMER, ENGINEER, "日志已上传。", "2021-04-14T09:00+08:00", subject="RE: " + SUBJECT, cc=BOT),
                "2021-04-14T09:00+08:00")
    assert bot.case().status == CaseStatus.WAITING_ENGINEER
    bot.receive(mail(ENGINEER, CUSTOMER, "问题已解决，请确认。", "2021-04-14T10:00+08:00", cc=BOT, headers=FORGED,
                     subject="RE: " + SUBJECT), "2021-04-14T10:00+08:00")
    case = bot.case()
    assert case.status == CaseStatus.WAITING_ENGINEER and case.next_action is None
    assert case.last_engineer_mail == at("2021-04-13T01:52+08:00")
    assert KEY in str(notices(bot, "未通过发件人验证")[0]["Subject"])


def test_explain_says_what_apply_does_with_a_forged_and_a_genuine_engineer_mail(bot: Bot) -> None:
    from mailbot.explain import explain_mail
    from mailbot.parse import parse

    forged = explain_mail(parse(mail(ENGINEER, CUSTOMER, "#close", "2021-04-14T10:00+08:00", cc=BOT,
                                     subject="RE: " + SUBJECT, headers=FORGED)), bot.service)
    assert forged["role"] == "other" and forged["authentication"].startswith("dmarc failed")
    genuine = explain_mail(parse(mail(ENGINEER, CUSTOMER, "#close", "2021-04-14T10:00+08:00", cc=BOT,
                                      subject="RE: " + SUBJECT, headers=GENUINE)), bot.service)
    assert genuine["role"] == "engineer" and genuine["authentication"] == "pass"
    stranger = explain_mail(parse(mail(CUSTOMER, BOT, "hello", "2021-04-14T10:00+08:00")), bot.service)
    assert stranger["authentication"] is None  # only a mail that claims an engineer is checked
