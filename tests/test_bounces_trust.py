"""A bounce stops a customer's reminders only when it is a real delivery report (RFC 3464) about a mail the
bot sent for the case; anything that merely looks like one is recorded and changes nothing."""

from __future__ import annotations

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, SUBJECT, Bot, dsn, mail, text_of

from mailbot.models import EntryKind


@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings())
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    return b


def bounces(bot: Bot) -> int:
    return [e.kind for e in bot.case().timeline].count(EntryKind.BOUNCE)


def test_a_plain_mail_with_x_failed_recipients_does_not_stop_the_reminders(bot: Bot) -> None:
    # Anyone can write a "bounce": a MAILER-DAEMON From, an X-Failed-Recipients header, the case's subject.
    fake = mail("mailer-daemon@evil.example", BOT, "Delivery failed.", "2021-04-14T10:00+08:00",
                subject="Undeliverable: RE: " + SUBJECT, headers={"X-Failed-Recipients": CUSTOMER})
    bot.receive(fake, "2021-04-14T10:00+08:00")
    assert bounces(bot) == 1  # on the record
    assert bot.case().failed_addresses == () and bot.case().next_action is not None
    assert bot.sent() == []  # and nobody is told anything happened
    bot.tick("2021-04-16T09:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 1  # the customer's reminder goes out as planned


def test_a_real_report_about_the_bots_reminder_marks_the_customer_and_tells_the_engineers(bot: Bot) -> None:
    bot.tick("2021-04-16T09:00+08:00")
    [reminder] = bot.sent(CUSTOMER)
    bot.receive(dsn(reminder["Message-ID"], CUSTOMER, "2021-04-16T09:05+08:00"), "2021-04-16T09:05+08:00")
    case = bot.case()
    assert case.failed_addresses == (CUSTOMER,) and case.next_action is None
    [notice] = bot.sent(ENGINEER)
    assert "发往 yang@customer.example 的邮件被退回" in text_of(notice)
    bot.tick("2021-04-21T10:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 1  # nothing more to the dead address


@pytest.mark.parametrize("about", ["a mail the bot never sent", "the engineer's own mail"])
def test_a_real_report_about_a_mail_the_bot_never_sent_changes_nothing(bot: Bot, about: str) -> None:
    returned = ("<never-sent-by-the-bot@support.example>" if about == "a mail the bot never sent"
                else bot.case().timeline[0].message_id)
    bot.receive(dsn(returned, CUSTOMER, "2021-04-14T10:00+08:00"), "2021-04-14T10:00+08:00")
    assert bounces(bot) == 1
    assert bot.case().failed_addresses == ()
    assert bot.sent() == []
    bot.tick("2021-04-16T09:00+08:00")
    assert len(bot.sent(CUSTOMER)) == 1


def test_a_report_never_marks_someone_who_is_not_the_cases_customer(bot: Bot) -> None:
    bot.tick("2021-04-16T09:00+08:00")
    [reminder] = bot.sent(CUSTOMER)
    bot.receive(dsn(reminder["Message-ID"], ENGINEER, "2021-04-16T09:05+08:00"), "2021-04-16T09:05+08:00")
    assert bot.case().failed_addresses == ()
    assert bot.sent(ENGINEER) == []
