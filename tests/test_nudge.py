"""When a customer waits on us: a nudge to the engineers after a few business hours, one escalation to the
leads after more; an answer, `#waiting …` or `#snooze` stops the clock; never a word to the customer."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, SUBJECT, Bot, at, html_of, mail, text_of

from mailbot.decide.calendar import BusinessCalendar
from mailbot.models import CaseStatus, EntryKind

SH = ZoneInfo("Asia/Shanghai")
CN = BusinessCalendar(zone=SH, opening=time(9), closing=time(18))
LEAD = "lead@support.example"
COLLEAGUE = "wang@support.example"


def sh(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=SH)


# --- business hours: the clock the nudges run on ---------------------------------------------------

@pytest.mark.parametrize(
    ("start", "hours", "expected", "why"),
    [
        ("2021-04-14T10:00", 4, "2021-04-14T14:00", "inside one working day"),
        ("2021-04-14T17:59", 4, "2021-04-15T12:59", "a reply at 17:59: one minute today, the rest tomorrow"),
        ("2021-04-14T14:00", 4, "2021-04-15T09:00", "a count that ends at closing lands on the next opening"),
        ("2021-04-14T20:30", 4, "2021-04-15T13:00", "a reply at night counts from the next opening"),
        ("2021-04-14T07:00", 2, "2021-04-14T11:00", "a reply before opening counts from the opening"),
        ("2021-04-16T16:00", 4, "2021-04-19T11:00", "Friday afternoon: the weekend adds nothing"),
        ("2021-04-30T16:00", 4, "2021-05-06T11:00", "over the Labour Day holiday (1-5 May 2021)"),
        ("2021-05-07T16:00", 4, "2021-05-08T11:00", "Saturday 8 May 2021 is a make-up workday"),
        ("2021-04-24T12:00", 2, "2021-04-25T11:00", "a Saturday reply, Sunday 25 April is a make-up workday"),
        ("2021-04-14T10:00", 16, "2021-04-15T17:00", "two working days of eight hours less one"),
    ],
)
def test_add_business_hours(start: str, hours: int, expected: str, why: str) -> None:
    assert CN.add_business_hours(sh(start), hours) == sh(expected), why
    # The inverse: between the reply and the nudge, exactly that many business hours.
    assert CN.business_hours_between(sh(start), sh(expected)) == pytest.approx(hours), why


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2021-04-14T17:59", "2021-04-14T23:00", 1 / 60),
        ("2021-04-16T18:00", "2021-04-19T08:59", 0),  # a whole weekend, outside working hours
        ("2021-04-30T17:00", "2021-05-06T10:00", 2),  # Friday's last hour, Thursday's first
        ("2021-04-14T12:00", "2021-04-14T11:00", 0),  # end before start
    ],
)
def test_business_hours_between(start: str, end: str, hours: float) -> None:
    assert CN.business_hours_between(sh(start), sh(end)) == pytest.approx(hours)


# --- a case's life -----------------------------------------------------------------------------------

@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings(nudge={"after_business_hours": 4, "escalate_after_business_hours": 16, "leads": [LEAD]}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


def reply(bot: Bot, when: str, text: str = "日志已上传，请查看。\n服务器密码：Xk93-fake-Pw77") -> None:
    bot.receive(mail(CUSTOMER, ENGINEER, text, when, subject="答复: " + SUBJECT, cc=BOT), when)


def nudges(bot: Bot) -> list:
    return [m for m in bot.sent(ENGINEER) if "客户已等待答复" in m["Subject"] or "waited" in m["Subject"]]


def escalations(bot: Bot) -> list:
    return bot.sent(LEAD)


def test_an_unanswered_reply_nudges_the_engineers_once_after_four_business_hours(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    assert bot.case().next_action.kind == "nudge"
    assert bot.case().next_action.due == at("2021-04-14T14:00+08:00")
    bot.tick("2021-04-14T13:59+08:00")
    assert nudges(bot) == []
    bot.tick("2021-04-14T14:00+08:00")
    [nudge] = nudges(bot)
    assert nudge["To"] == ENGINEER and nudge["Cc"] is None
    assert nudge["Auto-Submitted"] == "auto-generated"
    assert nudge["In-Reply-To"] is not None  # threaded under the customer's reply
    body = text_of(nudge)
    assert "4 个工作小时" in body and CUSTOMER in body and "日志已上传" in body
    assert "#等待 厂商" in body and "#暂停" in body  # the commands that help
    assert "Xk93-fake-Pw77" not in body and "Xk93-fake-Pw77" not in html_of(nudge)  # masked like everywhere
    assert bot.sent(CUSTOMER) == []  # never to a customer
    [entry] = [e for e in bot.case().timeline if e.kind == EntryKind.NUDGE]
    assert entry.direction == "out" and entry.role.value == "bot"
    for later in ("2021-04-14T15:00+08:00", "2021-04-15T10:00+08:00"):
        bot.tick(later)
    assert len(nudges(bot)) == 1  # one nudge per customer reply


def test_a_reply_at_17_59_is_nudged_the_next_morning(bot: Bot) -> None:
    reply(bot, "2021-04-14T17:59+08:00")
    bot.tick("2021-04-15T12:58+08:00")
    assert nudges(bot) == []
    bot.tick("2021-04-15T12:59+08:00")
    assert len(nudges(bot)) == 1


def test_a_friday_reply_waits_over_the_weekend_and_the_holiday(bot: Bot) -> None:
    reply(bot, "2021-04-30T16:00+08:00")  # the Friday before the Labour Day break
    for quiet in ("2021-05-01T10:00+08:00", "2021-05-04T16:00+08:00", "2021-05-06T10:59+08:00"):
        bot.tick(quiet)
    assert nudges(bot) == []
    bot.tick("2021-05-06T11:00+08:00")
    assert len(nudges(bot)) == 1


def test_still_unanswered_goes_to_the_leads_once_with_the_engineers_in_cc(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    bot.tick("2021-04-14T14:00+08:00")
    assert bot.case().next_action.kind == "escalation"
    assert bot.case().next_action.due == at("2021-04-15T17:00+08:00")
    bot.tick("2021-04-15T16:59+08:00")
    assert escalations(bot) == []
    bot.tick("2021-04-15T17:00+08:00")
    [escalation] = escalations(bot)
    assert escalation["To"] == LEAD and escalation["Cc"] == ENGINEER
    assert "16 个工作小时" in text_of(escalation) and "日志已上传" in text_of(escalation)
    for later in ("2021-04-16T10:00+08:00", "2021-04-19T10:00+08:00"):
        bot.tick(later)
    assert len(escalations(bot)) == 1 and len(nudges(bot)) == 1
    assert bot.case().next_action is None  # nothing more is owed for this wait
    assert bot.sent(CUSTOMER) == []


@pytest.mark.parametrize(
    ("answer", "sender", "to"),
    [
        ("杨先生您好，日志已收到，我们正在分析。", ENGINEER, CUSTOMER),  # an answer to the customer
        ("#waiting vendor", ENGINEER, BOT),
        ("#暂停 3d", ENGINEER, BOT),
        ("#等待 工程师", ENGINEER, BOT),  # acknowledged: the engineer says it is theirs
    ],
)
def test_an_answer_or_a_command_stops_the_clock(bot: Bot, answer: str, sender: str, to: str) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    bot.receive(mail(sender, to, answer, "2021-04-14T12:00+08:00", subject="RE: " + SUBJECT, cc=BOT),
                "2021-04-14T12:00+08:00")
    for later in ("2021-04-14T14:00+08:00", "2021-04-15T17:00+08:00", "2021-04-16T17:00+08:00"):
        bot.tick(later)
    assert nudges(bot) == [] and escalations(bot) == []
    assert bot.case().next_action is None or bot.case().next_action.kind not in ("nudge", "escalation")


def test_an_internal_note_does_not_stop_the_clock(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    bot.receive(mail(ENGINEER, COLLEAGUE, "wang, can you look at this one?", "2021-04-14T11:00+08:00",
                     subject="RE: " + SUBJECT, cc=BOT), "2021-04-14T11:00+08:00")
    bot.tick("2021-04-14T14:00+08:00")
    assert len(nudges(bot)) == 1


def test_a_second_reply_after_the_nudge_gets_its_own_nudge_and_one_before_it_does_not(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00", "第一封")
    reply(bot, "2021-04-14T11:00+08:00", "第二封：还有一个问题")  # before the nudge: covered by it
    bot.tick("2021-04-14T14:00+08:00")
    [first] = nudges(bot)
    assert "第一封" in text_of(first) and "第二封" in text_of(first)
    reply(bot, "2021-04-14T15:00+08:00", "第三封")
    bot.tick("2021-04-15T09:59+08:00")
    assert len(nudges(bot)) == 1
    bot.tick("2021-04-15T10:00+08:00")
    assert len(nudges(bot)) == 2 and "第三封" in text_of(nudges(bot)[1])


def test_a_nudge_whose_slot_passed_while_down_goes_out_once_in_working_hours(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    bot.tick("2021-04-14T22:00+08:00")  # back at night: not now
    assert nudges(bot) == []
    bot.tick("2021-04-15T09:00+08:00")
    bot.tick("2021-04-15T09:01+08:00")
    assert len(nudges(bot)) == 1


def test_an_answer_that_arrived_while_down_cancels_the_nudge(bot: Bot) -> None:
    reply(bot, "2021-04-14T10:00+08:00")
    # The bot is down from 10:01; the engineer answers at 12:00; the bot comes back at 15:00, after the slot.
    bot.box.deliver(mail(ENGINEER, CUSTOMER, "日志已收到。", "2021-04-14T12:00+08:00", subject="RE: " + SUBJECT,
                         cc=BOT))
    bot.tick("2021-04-14T15:00+08:00")
    assert nudges(bot) == []
    assert bot.case().status == CaseStatus.WAITING_CUSTOMER
    assert bot.case().next_action.kind == "reminder"


@pytest.mark.parametrize("headers", [{"Auto-Submitted": "auto-replied"}, {"Precedence": "bulk"}])
def test_no_nudge_for_an_auto_reply(bot: Bot, headers: dict[str, str]) -> None:
    bot.receive(mail(CUSTOMER, ENGINEER, "我目前外出，下周返回。", "2021-04-14T10:00+08:00",
                     subject="自动回复: " + SUBJECT, headers=headers), "2021-04-14T10:00+08:00")
    for later in ("2021-04-14T14:00+08:00", "2021-04-15T17:00+08:00"):
        bot.tick(later)
    assert nudges(bot) == [] and escalations(bot) == []
    assert bot.case().status == CaseStatus.WAITING_CUSTOMER


def test_no_nudge_for_an_outsider(bot: Bot) -> None:
    bot.receive(mail("someone@elsewhere.example", ENGINEER, "我也遇到这个问题", "2021-04-14T10:00+08:00",
                     subject="RE: " + SUBJECT), "2021-04-14T10:00+08:00")
    bot.tick("2021-04-14T14:00+08:00")
    assert nudges(bot) == []


def test_the_plan_shows_the_next_nudge(bot: Bot, capsys: pytest.CaptureFixture[str]) -> None:
    from mailbot.cli import views
    reply(bot, "2021-04-14T10:00+08:00")
    views.print_case(bot.case(), SH)
    assert "nudge at 2021-04-14 14:00" in capsys.readouterr().out


def test_an_english_case_is_nudged_in_english_and_the_ids_are_stable(bot: Bot, make_settings) -> None:
    bot.receive(mail(ENGINEER, BOT, "#lang en", "2021-04-13T09:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-13T09:00+08:00")
    reply(bot, "2021-04-14T10:00+08:00", "The logs are uploaded.")
    bot.tick("2021-04-14T14:00+08:00")
    [nudge] = nudges(bot)
    assert "waited 4 business hours" in nudge["Subject"] and "#waiting vendor" in text_of(nudge)
    # Deciding again (a crash before the send was marked) yields the same mail: the outbox sends it once.
    sent = len(bot.smtp.sent)
    bot.tick("2021-04-14T14:00+08:00")
    assert len(bot.smtp.sent) == sent


def test_nudges_off_sends_nothing(make_settings) -> None:
    b = Bot(make_settings())  # the tests' base config turns the engineers' side off
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    b.receive(mail(CUSTOMER, ENGINEER, "好的", "2021-04-14T10:00+08:00", subject="答复: " + SUBJECT, cc=BOT),
              "2021-04-14T10:00+08:00")
    assert b.case().next_action is None
    b.tick("2021-04-16T10:00+08:00")
    assert b.sent(ENGINEER) == []
