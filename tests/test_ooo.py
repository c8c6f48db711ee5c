"""return_date(): the day an out-of-office reply says its sender is back, so reminders can wait — and, in a
case's life, how long such a reply may hold them and when the engineers hear of it."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, SUBJECT, Bot, at, mail, text_of

from mailbot.config import from_dict
from mailbot.decide.ooo import return_date
from mailbot.wiring import make_calendar

SENT = date(2021, 4, 13)  # the scenario's auto-reply: Tue 13 April 2021 in Shanghai

CASES = [
    # Chinese
    ("您好，我目前外出，4月14日返回，期间邮件可能无法及时回复。", date(2021, 4, 14)),
    ("我将于2021年5月6日回到办公室", date(2021, 5, 6)),
    ("4月20日回来", date(2021, 4, 20)),
    ("4月20号上班", date(2021, 4, 20)),
    ("5月1日至5月5日休假", date(2021, 5, 5)),  # a range: its end
    ("我于4月10日至4月14日休假，期间请联系李四", date(2021, 4, 14)),  # a range that began before the mail
    ("4月10日-4月16日出差", date(2021, 4, 16)),
    ("4月30日之前无法回复邮件", date(2021, 4, 30)),
    # A yearless date up to half a year back is taken as past (an out-of-office left on: the sender is
    # back, hold nothing); further back it is next year's. Holding reminders for months by mistake
    # would stall a case silently; one reminder too many only meets another auto-reply.
    ("1月5日返回", date(2021, 1, 5)),
    ("10月5日返回", date(2021, 10, 5)),
    ("会议定在4月20日", None),  # a date without a cue about being away
    # English
    ("I am out of the office until Friday 14 May 2021.", date(2021, 5, 14)),
    ("I am out of the office until 14 April.", date(2021, 4, 14)),
    ("Back on 2021-05-14", date(2021, 5, 14)),
    ("I will be back on May 3rd", date(2021, 5, 3)),
    ("Returning Monday, May 17", date(2021, 5, 17)),
    ("Away until 3 January", date(2021, 1, 3)),
    ("Away until 3 September", date(2021, 9, 3)),
    ("I'm out until Apr 2", date(2021, 4, 2)),  # recently past (an OOO left on): not a year later
    ("back in the office on 20 April 2021", date(2021, 4, 20)),
    ("out until 31 February", None),  # no such day
    ("back on 2021-02-30", None),
    # none
    ("I am away from my desk.", None),
    ("Thank you for your email.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_return_date(text: str, expected: date | None) -> None:
    assert return_date(text, SENT) == expected


def test_year_end_rolls_over() -> None:
    assert return_date("back on 3 January", date(2021, 12, 28)) == date(2022, 1, 3)
    assert return_date("1月3日返回", date(2021, 12, 28)) == date(2022, 1, 3)


# A date the calendar cannot use is no return date: `back on 9999-12-31` raised OverflowError further on
# (next workday, opening hour in the case's zone) and the auto-reply was quarantined as an internal error.
FAR = [
    ("Back on 9999-12-31", None),
    ("I am out of the office until 31 December 9999.", None),
    ("我将于9999年12月31日回到办公室", None),
    ("back on 0001-01-01", None),
    ("Back on 2023-04-13", None),  # two years on: a typo, not a leave to wait for
    ("Back on 2022-05-14", date(2022, 5, 14)),  # a year's leave is still one
    ("Back on 9999-12-31, or else on 2021-05-14", date(2021, 5, 14)),  # the usable date is taken
]


@pytest.mark.parametrize(("text", "expected"), FAR)
def test_a_date_the_calendar_cannot_use_is_no_return_date(text: str, expected: date | None) -> None:
    assert return_date(text, SENT) == expected


@pytest.mark.parametrize("sent", [date(1, 1, 1), date(9999, 12, 31), date(9999, 12, 30)])
@pytest.mark.parametrize("text", ["back on 3 January", "1月3日返回", "Back on 9999-12-31", "back on 0001-01-02"])
def test_no_date_raises_and_every_answer_is_usable_by_the_calendar(text: str, sent: date) -> None:
    back = return_date(text, sent)
    if back is not None:  # what a case does with it (mailbot.inbound._hold_for_out_of_office)
        cal = make_calendar(from_dict({}, Path(".")))
        cal.into_working_hours(datetime.combine(cal.next_workday(back), time(0, 0), tzinfo=cal.zone))


# --- in a case's life: how long an out-of-office may hold the reminders, and who is told -----------------


def _case_waiting(settings) -> Bot:
    b = Bot(settings)
    # Li Qi asks on Tue 13 Apr 2021: the first reminder is due Fri 16 Apr 09:00.
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    assert b.case().next_action.due == at("2021-04-16T09:00+08:00")
    return b


def _out_of_office(bot: Bot, text: str, when: str = "2021-04-13T02:10+08:00") -> None:
    bot.receive(mail(CUSTOMER, ENGINEER, text, when, subject="自动回复: " + SUBJECT,
                     headers={"Auto-Submitted": "auto-replied"}), when)


def test_a_far_return_date_holds_at_most_a_month_and_the_engineers_are_told_once(make_settings) -> None:
    bot = _case_waiting(make_settings())
    _out_of_office(bot, "您好，我外派中，2021年12月1日返回。")
    # Not until December: 30 days after the reply (Thu 13 May), from the next business day's opening.
    assert bot.case().next_action.due == at("2021-05-14T09:00+08:00")
    [notice] = bot.sent(ENGINEER)
    body = text_of(notice)
    assert "2021-12-01" in body and "最多暂停 30 天" in body and "2021-05-14 09:00" in body
    assert "2021-04-16 09:00" in body  # where the reminder was before
    _out_of_office(bot, "您好，我外派中，2021年12月1日返回。", when="2021-04-14T09:00+08:00")  # it answers again
    assert len(bot.sent(ENGINEER)) == 1
    assert bot.sent(CUSTOMER) == []


def test_the_bound_is_configurable(make_settings) -> None:
    bot = _case_waiting(make_settings(followup={"max_out_of_office_days": 10}))
    _out_of_office(bot, "I am out of the office until 1 June 2021.")
    # 10 days after Tue 13 Apr is Fri 23 Apr; the next business day is Sun 25 Apr, a make-up workday in 2021.
    assert bot.case().next_action.due == at("2021-04-25T09:00+08:00")


def test_a_hold_of_a_few_days_is_not_worth_a_notice(make_settings) -> None:
    bot = _case_waiting(make_settings())
    _out_of_office(bot, "我休假中，4月19日返回。")  # back Mon 19 Apr: the reminder moves to Tue 20 Apr
    assert bot.case().next_action.due == at("2021-04-20T09:00+08:00")
    assert bot.sent() == []


def test_an_engineers_longer_snooze_is_not_shortened_by_an_out_of_office(make_settings) -> None:
    bot = _case_waiting(make_settings())
    bot.receive(mail(ENGINEER, BOT, "#snooze until 2021-05-20", "2021-04-13T03:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-13T03:00+08:00")
    _out_of_office(bot, "我休假中，4月19日返回。", when="2021-04-13T04:00+08:00")
    assert bot.case().next_action.due == at("2021-05-20T09:00+08:00")
