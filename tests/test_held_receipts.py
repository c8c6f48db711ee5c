"""Receipts tell the truth: when the daily cap holds back what a command asked for, the receipt says when it
goes out (not "sent"), and it really goes out then — unless the customer answers first."""

from __future__ import annotations

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, SUBJECT, Bot, at, mail, text_of

from mailbot.models import CaseStatus


@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings())  # [smtp] max_per_recipient_per_day = 3
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    return b


def command(bot: Bot, text: str, when: str) -> str:
    """Li Qi's command; returns the text of the receipt it got."""
    before = len(bot.sent(ENGINEER))
    bot.receive(mail(ENGINEER, BOT, text, when, subject="RE: " + SUBJECT), when)
    receipts = [m for m in bot.sent(ENGINEER)[before:] if "[mailbot] #" in str(m["Subject"])]
    assert len(receipts) == 1
    return text_of(receipts[0])


def three_reminders_today(bot: Bot) -> None:
    for minute in range(3):
        receipt = command(bot, "#remind now", f"2021-04-14T10:0{minute}+08:00")
        assert f"第 {minute + 1} 封提醒已发送" in receipt or f"reminder {minute + 1} sent" in receipt
    assert len(bot.sent(CUSTOMER)) == 3


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_a_closure_over_the_daily_cap_is_promised_for_tomorrow_and_sent_then(bot: Bot, language: str) -> None:
    if language == "en":
        command(bot, "#lang en", "2021-04-14T09:00+08:00")
    three_reminders_today(bot)
    receipt = command(bot, "#close\nSummary: fixed by the vendor driver", "2021-04-14T10:05+08:00")
    if language == "zh-CN":
        assert "结案总结已记录，案例已关闭；因 yang@customer.example 今天已收到 3 封邮件（每日上限），将于 2021-04-15 09:00 发出" in receipt
        assert "已发送" not in receipt
    else:
        assert ("closure summary recorded, case closed; it goes out at 2021-04-15 09:00 "
                "(yang@customer.example already got 3 mails today)") in receipt
        assert "sent" not in receipt
    assert bot.case().status == CaseStatus.CLOSED
    bot.tick("2021-04-14T17:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 3  # nothing more today
    bot.tick("2021-04-15T09:00+08:00")
    [*_, closure] = bot.sent(CUSTOMER)
    assert len(bot.sent(CUSTOMER)) == 4
    assert "fixed by the vendor driver" in text_of(closure)
    bot.tick("2021-04-16T09:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 4  # once


def test_a_held_reminder_goes_out_the_next_morning_and_the_plan_counts_from_there(bot: Bot) -> None:
    three_reminders_today(bot)
    receipt = command(bot, "#remind now", "2021-04-14T10:05+08:00")
    assert "第 4 封提醒已记录" in receipt and "将于 2021-04-15 09:00 发出" in receipt
    bot.tick("2021-04-15T08:59+08:00")
    assert len(bot.sent(CUSTOMER)) == 3
    bot.tick("2021-04-15T09:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 4
    # The last reminder went out on Thu 15 Apr 09:00: the closure follows two business days later.
    assert bot.case().next_action.kind == "closure"
    assert bot.case().next_action.due == at("2021-04-19T09:00+08:00")


def test_the_customer_answering_first_cancels_a_held_reminder(bot: Bot) -> None:
    three_reminders_today(bot)
    command(bot, "#remind now", "2021-04-14T10:05+08:00")
    bot.receive(mail(CUSTOMER, ENGINEER, "日志已上传。", "2021-04-14T15:00+08:00", subject="RE: " + SUBJECT, cc=BOT),
                "2021-04-14T15:00+08:00")
    bot.tick("2021-04-15T09:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 3  # the fourth never went out
    case = bot.case()
    assert case.status == CaseStatus.WAITING_ENGINEER and case.reminders_sent == 3
    assert any("cancelled" in n for n in case.notes)


def test_a_command_in_working_hours_under_the_cap_is_sent_at_once_and_says_so(bot: Bot) -> None:
    receipt = command(bot, "#close", "2021-04-14T22:30+08:00")  # at night: still at once (README)
    assert "结案总结已发送，案例已关闭" in receipt
    assert len(bot.sent(CUSTOMER)) == 1
