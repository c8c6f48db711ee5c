"""return_date(): the day an out-of-office reply says its sender is back, so reminders can wait."""

from __future__ import annotations

from datetime import date

import pytest

from mailbot.ooo import return_date

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
