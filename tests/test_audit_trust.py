"""Attacks tried end to end after the trust work (issue 13) and its red team, one test per hole found: a forged
mail that signs the company's reminders, a Message-ID that freezes a case's follow-up, a command line that
stalls the bot, and an out-of-office taken for the customer's reply."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, FORGED, GENUINE, KEY, MX, SUBJECT, Bot, at, mail, text_of

from mailbot.models import CaseStatus, EntryKind
from mailbot.render.compose import make_message_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hostile  # noqa: E402

OPENED = "2021-04-13T01:52+08:00"
DAY1 = "2021-04-14T10:00+08:00"


def opened(settings) -> Bot:
    """Li Qi writes to the customer from a client that sends no display name (`From: liqi@support.example`)."""
    b = Bot(settings)
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", OPENED, cc=BOT, headers=GENUINE), "2021-04-13T02:00+08:00")
    assert b.case().customers == (CUSTOMER,) and b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


def follow_up(b: Bot, days: range = range(14, 31)) -> None:
    """The service's sweep over the next weeks, three times a working day."""
    for day in days:
        for hour in ("09:30", "13:00", "17:00"):
            b.tick(f"2021-04-{day:02d}T{hour}+08:00")


def test_a_forged_engineer_mail_does_not_sign_the_reminders_the_customer_gets(make_settings) -> None:
    """A forger writes as Li Qi (our server says DMARC fails) with a display name of their choosing. The mail
    is refused and reported; its display name must not become Li Qi's name in what the customer receives
    ("<name> via casebot" in From, the signature under the reminder)."""
    b = opened(make_settings(security={"trust_authentication_results": [MX]}))
    lure = "李工 账户已变更 请汇款至新账户"
    b.receive(mail(ENGINEER, CUSTOMER, "您好", DAY1, headers=FORGED, name=lure, subject="RE: " + SUBJECT), DAY1)
    assert b.case().status == CaseStatus.WAITING_CUSTOMER  # refused, as before
    b.receive(mail(ENGINEER, BOT, "#remind now", DAY1, headers=GENUINE, subject="RE: " + SUBJECT), DAY1)
    [reminder] = b.sent(CUSTOMER)
    assert "汇款" not in str(reminder["From"]) and "汇款" not in text_of(reminder)
    # Li Qi's own name, once Li Qi writes with one, is what signs.
    b.receive(mail(ENGINEER, CUSTOMER, "日志已收到，谢谢。", "2021-04-15T10:00+08:00", headers=GENUINE, name="Li Qi",
                   subject="RE: " + SUBJECT), "2021-04-15T10:00+08:00")
    assert b.case().name_of(ENGINEER) == "Li Qi"


def test_an_outsider_cannot_take_the_message_id_of_the_next_reminder_and_freeze_the_case(make_settings) -> None:
    """The bot's Message-IDs follow from the case key and the date of the engineer's mail, which everyone on
    the thread has seen. An outsider who sends a mail under the id of the coming reminder first must not
    make the reminder go unrecorded: the case still gets its second reminder and its closure."""
    b = opened(make_settings())
    first_reminder = f"{KEY}/reminder/1/{b.case().last_engineer_mail.isoformat()}/due"
    taken = make_message_id(first_reminder, "support.example")
    squat = (f"From: mallory@evil.example\nTo: {BOT}\nSubject: RE: {SUBJECT}\nMessage-ID: {taken}\n"
             "Date: Tue, 13 Apr 2021 12:00:00 +0800\n\nhello\n").encode()
    b.receive(squat, "2021-04-13T12:00+08:00")
    assert "mallory@evil.example" in b.case().outsiders  # still recorded, as any outsider's mail
    follow_up(b)
    case = b.case()
    sent = [e.kind for e in case.timeline if e.direction == "out" and e.kind != EntryKind.RECEIPT]
    assert sent == [EntryKind.REMINDER, EntryKind.REMINDER, EntryKind.CLOSURE]
    assert case.status == CaseStatus.CLOSED and len(b.sent(CUSTOMER)) == 3


def _blank_run_command(kb: int) -> bytes:
    """A customer's reply whose first line is a command word, an argument, a long run of blanks, a word."""
    return mail(CUSTOMER, BOT, "#snooze a" + " " * (kb * 1024) + "b", DAY1, subject="RE: " + SUBJECT)


def test_a_command_line_with_a_long_run_of_blanks_takes_linear_time(tmp_path: Path) -> None:
    """`#snooze a<80,000 blanks>b` took 71 s a mail (find_commands' line pattern backtracked over the blanks),
    and it runs outside the parse timeout. n and 4n KB: linear ≈ 4×, quadratic ≈ 16×."""
    s = hostile.settings(tmp_path)
    small, large = (hostile.measure(s, _blank_run_command(kb), repeat=3) for kb in (8, 32))
    ratio = large / max(small, 1e-3)
    assert ratio < 8, f"8 KB {small:.3f} s, 32 KB {large:.3f} s (×{ratio:.1f})"


@pytest.mark.parametrize("subject", ["【自动回复】外出", "[自动回复] 休假中", "[Auto-Reply] Out of office",
                                     "（自动回复）RE: 案例"])
def test_a_bracketed_out_of_office_is_no_reply_from_the_customer(make_settings, subject: str) -> None:
    """Chinese mail systems put the auto-reply mark in brackets. Without Auto-Submitted, such an out-of-office
    was read as the customer's real reply: the case waited on the engineer and its reminders stopped."""
    b = opened(make_settings())
    b.receive(mail(CUSTOMER, BOT, "我在休假，4月26日返回。", DAY1, subject=f"{subject} {KEY}"), DAY1)
    case = b.case()
    [entry] = [e for e in case.timeline if e.from_addr == CUSTOMER]
    assert entry.kind == EntryKind.AUTO_REPLY
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.next_action is not None
    assert case.snoozed_until is not None and case.snoozed_until >= at("2021-04-26T00:00+08:00")
