"""Each business day, each engineer with open cases gets one digest: what waits on them, what the bot sends in
their name today, what closes soon, what is bounced or on hold; and a reply to it can veto (`#skip CAS-…`)."""

from __future__ import annotations

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, FORGED, KEY, MX, SUBJECT, Bot, at, html_of, mail, text_of

from mailbot.models import CaseStatus

COLLEAGUE = "wang@support.example"
KEY2 = "CAS-04031-Q8M2K1"
SUBJECT2 = f"[案例号: {KEY2} ] % 打印机无法连接 %"


def digests(bot: Bot, to: str = ENGINEER, day: str = "") -> list:
    return [m for m in bot.sent(to) if ("案例摘要" in m["Subject"] or "Your cases on" in m["Subject"])
            and day in m["Subject"]]


def reminders(bot: Bot) -> list:
    return [m for m in bot.sent(CUSTOMER) if m["Subject"].startswith("回复:")]


@pytest.fixture
def bot(make_settings) -> Bot:
    """Li Qi asks the customer for logs on Tuesday at 14:00: the first reminder is due Friday 14:00. (The bot
    starts then, after nine: Tuesday's digest goes out at once.)"""
    b = Bot(make_settings(digest={"at": "09:00"}, nudge={"after_business_hours": 4}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T14:00+08:00", cc=BOT), "2021-04-13T14:00+08:00")
    assert b.case().next_action.due == at("2021-04-16T14:00+08:00")
    return b


def test_each_business_day_at_nine_one_digest_lists_what_goes_out_today(bot: Bot) -> None:
    bot.tick("2021-04-16T08:59+08:00")
    assert digests(bot, day="2021-04-16") == []
    bot.tick("2021-04-16T09:00+08:00")
    bot.tick("2021-04-16T09:30+08:00")
    [digest] = digests(bot, day="2021-04-16")
    assert digest["To"] == ENGINEER and digest["Auto-Submitted"] == "auto-generated"
    body = text_of(digest)
    assert f"14:00  {KEY}  第 1 封提醒，发给 {CUSTOMER}" in body
    assert f"#跳过 {KEY}" in body and "回复本邮件" in body  # it says how to veto
    html = html_of(digest)
    assert "<table" in html and 'style="' in html and "<style" not in html and "http" not in html  # inline only
    assert bot.sent(CUSTOMER) == []  # the reminder itself goes at 14:00
    bot.tick("2021-04-17T09:00+08:00")  # Saturday: no digest
    bot.tick("2021-04-18T09:00+08:00")
    assert digests(bot, day="2021-04-17") == digests(bot, day="2021-04-18") == []


def test_sections_waiting_oldest_first_closing_soon_and_on_hold(bot: Bot) -> None:
    # A second case waits on Li Qi since Monday; the first one has had both reminders and closes soon.
    bot.receive(mail(ENGINEER, CUSTOMER, "请确认打印机型号。", "2021-04-12T10:00+08:00", subject=SUBJECT2, cc=BOT),
                "2021-04-12T10:00+08:00")
    bot.receive(mail(CUSTOMER, ENGINEER, "型号是 M404。", "2021-04-12T11:00+08:00", subject="答复: " + SUBJECT2,
                     cc=BOT), "2021-04-12T11:00+08:00")
    for when in ("2021-04-16T14:00+08:00", "2021-04-21T14:00+08:00"):  # reminders 1 and 2
        bot.tick(when)
    assert len(reminders(bot)) == 2
    bot.tick("2021-04-22T09:00+08:00")
    [digest] = [d for d in digests(bot) if "2021-04-22" in d["Subject"]]
    body = text_of(digest)
    waiting = body.split("等待您处理")[1].split("今天机器人")[0]
    assert KEY2 in waiting and "自 2021-04-12 11:00 起" in waiting
    closing = body.split("即将关闭")[1].split("退信或暂停中")[0]
    assert KEY in closing and "2021-04-23 14:00" in closing
    assert "2 个未关闭的案例" in body


def test_an_engineer_with_no_open_case_gets_nothing(bot: Bot) -> None:
    bot.receive(mail(COLLEAGUE, CUSTOMER, "请确认打印机型号。", "2021-04-13T10:00+08:00", subject=SUBJECT2, cc=BOT),
                "2021-04-13T10:00+08:00")
    bot.tick("2021-04-14T09:00+08:00")
    assert len(digests(bot, COLLEAGUE, "2021-04-14")) == 1  # while Wang's case is open
    bot.receive(mail(COLLEAGUE, BOT, "#close", "2021-04-14T10:00+08:00", subject="RE: " + SUBJECT2),
                "2021-04-14T10:00+08:00")
    bot.tick("2021-04-15T09:00+08:00")
    assert len(digests(bot, ENGINEER, "2021-04-15")) == 1
    assert digests(bot, COLLEAGUE, "2021-04-15") == []


def test_a_digest_missed_while_down_goes_out_when_back_that_day_and_not_after_hours(bot: Bot) -> None:
    bot.tick("2021-04-15T11:20+08:00")  # down at nine, back before noon: sent now, once
    bot.tick("2021-04-15T11:21+08:00")
    assert len(digests(bot, day="2021-04-15")) == 1
    bot.tick("2021-04-16T18:30+08:00")  # back after closing: Friday's digest is not sent at night
    assert digests(bot, day="2021-04-16") == []
    bot.tick("2021-04-19T09:00+08:00")  # Monday's is
    assert len(digests(bot, day="2021-04-19")) == 1


def test_a_digest_and_a_nudge_due_at_the_same_moment_both_go_once(bot: Bot) -> None:
    bot.receive(mail(CUSTOMER, ENGINEER, "日志已上传。", "2021-04-14T17:00+08:00", subject="答复: " + SUBJECT, cc=BOT),
                "2021-04-14T17:00+08:00")
    assert bot.case().next_action.due == at("2021-04-15T12:00+08:00")  # one hour Wednesday, three Thursday
    bot.tick("2021-04-15T12:00+08:00")  # down in the morning: digest and nudge fall due together
    bot.tick("2021-04-15T12:01+08:00")
    [digest] = digests(bot, day="2021-04-15")
    nudges = [m for m in bot.sent(ENGINEER) if "客户已等待答复" in m["Subject"]]
    assert len(nudges) == 1
    assert KEY in text_of(digest).split("等待您处理")[1].split("今天机器人")[0]


def veto(bot: Bot, text: str, when: str, sender: str = ENGINEER, headers: dict[str, str] | None = None,
         deliver_only: bool = False) -> None:
    digest = digests(bot)[-1] if digests(bot) else None
    raw = mail(sender, BOT, text, when, subject="Re: " + (str(digest["Subject"]) if digest else "today"),
               in_reply_to=digest["Message-ID"] if digest else None, headers=headers)
    if deliver_only:
        bot.box.deliver(raw)
    else:
        bot.receive(raw, when)


def test_skip_in_a_digest_reply_vetoes_the_next_mail_and_the_plan_moves_on(bot: Bot) -> None:
    bot.tick("2021-04-16T09:00+08:00")
    veto(bot, f"#skip {KEY}", "2021-04-16T09:30+08:00")
    [receipt] = [m for m in bot.sent(ENGINEER) if m["Subject"].startswith("[mailbot] #skip")]
    assert "已完成" in receipt["Subject"]
    assert KEY in text_of(receipt) and "2021-04-16 14:00" in text_of(receipt)
    assert bot.case().next_action.kind == "reminder"
    assert bot.case().next_action.due == at("2021-04-21T14:00+08:00")  # one interval on
    bot.tick("2021-04-16T14:00+08:00")
    assert reminders(bot) == []
    bot.tick("2021-04-21T14:00+08:00")
    assert len(reminders(bot)) == 1


def test_a_veto_of_a_mail_already_due_that_arrived_while_down(bot: Bot) -> None:
    bot.tick("2021-04-16T09:00+08:00")
    # The reminder falls due at 14:00 while the bot is down; the veto came at 13:50; the bot is back at 14:30.
    veto(bot, f"#跳过 {KEY}", "2021-04-16T13:50+08:00", deliver_only=True)
    bot.tick("2021-04-16T14:30+08:00")
    assert reminders(bot) == []
    assert bot.case().next_action.due > at("2021-04-16T14:30+08:00")


def test_skip_cancels_a_reminder_the_daily_cap_holds(make_settings) -> None:
    b = Bot(make_settings(digest={"at": "09:00"}, smtp={"max_per_recipient_per_day": 1}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T14:00+08:00", cc=BOT), "2021-04-13T14:00+08:00")
    b.tick("2021-04-16T14:00+08:00")  # reminder 1: the customer's one mail today
    b.receive(mail(ENGINEER, BOT, "#remind now", "2021-04-16T15:00+08:00", subject="RE: " + SUBJECT),
              "2021-04-16T15:00+08:00")  # reminder 2 is recorded, held for Monday's opening
    assert len(reminders(b)) == 1
    veto(b, f"#skip {KEY}", "2021-04-16T16:00+08:00")
    b.tick("2021-04-19T09:00+08:00")
    assert len(reminders(b)) == 1  # the held reminder did not go out
    assert b.case().reminders_sent == 1


def test_several_cases_one_receipt_with_what_was_refused(bot: Bot) -> None:
    bot.receive(mail(ENGINEER, CUSTOMER, "请确认打印机型号。", "2021-04-13T10:00+08:00", subject=SUBJECT2, cc=BOT),
                "2021-04-13T10:00+08:00")
    bot.tick("2021-04-15T09:00+08:00")
    veto(bot, f"#snooze {KEY} 3d\n#followup {KEY2} off\n#skip CAS-99999-ZZZZZZ\n#close {KEY2}\nSummary: 已解决",
         "2021-04-15T10:00+08:00")
    [receipt] = [m for m in bot.sent(ENGINEER) if m["Subject"].startswith("[mailbot] #snooze")]
    body = text_of(receipt)
    assert "未执行" in receipt["Subject"]  # one line was refused
    assert "没有案例 CAS-99999-ZZZZZZ" in body and "提醒暂停至" in body and "提醒已停止" in body
    assert bot.case().snoozed_until is not None
    second = bot.store.get_case(KEY2)
    assert second.status == CaseStatus.CLOSED and not second.followup_enabled
    [closure] = [m for m in bot.sent(CUSTOMER) if SUBJECT2.split("%")[1].strip() in str(m["Subject"])]
    assert "已解决" in text_of(closure)


@pytest.mark.parametrize(("sender", "headers"), [(CUSTOMER, None), (ENGINEER, FORGED)])
def test_a_veto_from_anyone_but_an_engineer_is_refused_without_an_answer(make_settings, sender: str,
                                                                         headers: dict[str, str] | None) -> None:
    b = Bot(make_settings(digest={"at": "09:00"}, security={"trust_authentication_results": [MX]}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T14:00+08:00", cc=BOT,
                   headers={"Authentication-Results": f"{MX}; dkim=pass header.d=support.example"}),
              "2021-04-13T14:00+08:00")
    before = b.case().next_action
    sent = len(b.smtp.sent)
    veto(b, f"#skip {KEY}\n#close {KEY}", "2021-04-14T10:00+08:00", sender=sender, headers=headers)
    assert b.case().next_action == before and b.case().status == CaseStatus.WAITING_CUSTOMER
    # Nothing to the sender, nothing to anyone (but the day's digest, which the cycle sends anyway).
    assert [m["Subject"] for m in b.sent()[sent:] if "案例摘要" not in m["Subject"]] == []
    assert [m for m in b.sent() if m["Subject"].startswith("[mailbot] #")] == []  # no receipt to anyone
    b.tick("2021-04-16T14:00+08:00")
    assert len(reminders(b)) == 1


def test_an_english_digest_when_the_bot_speaks_english(make_settings) -> None:
    b = Bot(make_settings(bot={"language": "en"}, digest={"at": "08:30"}))
    b.receive(mail(ENGINEER, CUSTOMER, "Please upload the logs.", "2021-04-13T14:00+08:00", cc=BOT),
              "2021-04-13T14:00+08:00")
    b.tick("2021-04-14T08:30+08:00")  # before opening: the configured time is the time
    [digest] = digests(b, day="2021-04-14")
    assert "Your cases on 2021-04-14" in digest["Subject"]
    assert f"#skip {KEY}" in text_of(digest) and "reminder 1" not in text_of(digest)


def test_a_close_by_digest_reply_that_the_daily_cap_holds_says_when_it_goes_not_that_it_went(make_settings) -> None:
    b = Bot(make_settings(digest={"at": "09:00"}, smtp={"max_per_recipient_per_day": 1}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T14:00+08:00", cc=BOT), "2021-04-13T14:00+08:00")
    b.tick("2021-04-16T14:00+08:00")  # reminder 1: the customer's one mail today
    veto(b, f"#close {KEY}\nSummary: 已解决", "2021-04-16T15:00+08:00")
    [receipt] = [m for m in b.sent(ENGINEER) if m["Subject"].startswith("[mailbot] #close")]
    assert "将于 2021-04-19 09:00 发出" in text_of(receipt)  # held for Monday's opening, and it says so
    assert b.case().status == CaseStatus.CLOSED
    assert [m for m in b.sent(CUSTOMER) if "已解决" in text_of(m)] == []
    b.tick("2021-04-19T09:00+08:00")
    assert len([m for m in b.sent(CUSTOMER) if "已解决" in text_of(m)]) == 1
