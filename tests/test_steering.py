"""Engineers steer cases by mail; nobody else can; the bot never spams and never leaks."""

from __future__ import annotations

import email
import logging
from datetime import UTC, datetime
from email.policy import default

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, KEY, SUBJECT, at, mail

from mailbot.mailbox.memory import MemoryMailbox
from mailbot.models import CaseStatus, EntryKind
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_calendar


class Bot:
    def __init__(self, settings) -> None:
        self.box = MemoryMailbox()
        self.smtp = MemoryTransport()
        self.store = Store(None)
        self.service = Service(settings, self.store, self.box, self.smtp, make_calendar(settings))

    def receive(self, raw: bytes, when: str):
        self.box.deliver(raw)
        return self.service.run_once(at(when))

    def case(self):
        return self.store.get_case(KEY)

    def sent(self, to: str | None = None) -> list[email.message.EmailMessage]:
        out = [email.message_from_bytes(m.raw, policy=default) for m in self.smtp.sent]
        return [m for m in out if to is None or to in str(m["To"])]


@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings())
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。\n密码：Xk93-fake-Pw77", "2021-04-13T01:52+08:00", cc=BOT),
              "2021-04-13T02:00+08:00")
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


def command(bot: Bot, text: str, when: str = "2021-04-14T10:00+08:00", sender: str = ENGINEER,
            headers: dict[str, str] | None = None) -> None:
    bot.receive(mail(sender, BOT, text, when, subject="RE: " + SUBJECT, headers=headers), when)


@pytest.mark.parametrize("text", ["#close\nProblem: blue screens\nAnalysis: inode driver\nSummary: fixed by vendor",
                                  "#关闭\n问题描述：频繁蓝屏\n问题分析：inode 驱动\n问题总结：厂商已修复"])
def test_close_in_both_languages_sends_the_summary_and_a_receipt(bot: Bot, text: str) -> None:
    command(bot, text)
    assert bot.case().status == CaseStatus.CLOSED
    [closure] = bot.sent(CUSTOMER)
    assert closure["Cc"] == ENGINEER
    body = closure.get_body(("plain",)).get_content()
    for field in text.splitlines()[1:]:
        assert field.split(":" if ":" in field else "：", 1)[1].strip() in body
    [receipt] = bot.sent(ENGINEER)
    assert receipt["Auto-Submitted"] == "auto-replied"
    assert text.splitlines()[0] not in body  # the command mail is not forwarded


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("#snooze 5d", lambda c: c.next_action.due >= at("2021-04-21T09:00+08:00")),
        ("#暂停 until 2021-05-10", lambda c: c.next_action.due == at("2021-05-10T09:00+08:00")),
        ("#followup off", lambda c: c.next_action is None and not c.followup_enabled),
        ("#跟进 off", lambda c: c.next_action is None),
        ("#waiting vendor", lambda c: c.status == CaseStatus.WAITING_VENDOR and c.next_action is None),
        ("#等待 engineer", lambda c: c.status == CaseStatus.WAITING_ENGINEER),
        ("#等待 客户", lambda c: c.status == CaseStatus.WAITING_CUSTOMER and c.next_action is not None),
        ("#等待 厂商", lambda c: c.status == CaseStatus.WAITING_VENDOR and c.next_action is None),
        ("#语言 英文", lambda c: c.effective_language == "en"),
        ("#跟进 关闭", lambda c: c.next_action is None and not c.followup_enabled),
        ("#called", lambda c: c.phone_call_logged),
        ("#已致电", lambda c: c.phone_call_logged),
        ("#lang en", lambda c: c.effective_language == "en"),
        ("#语言 zh-CN", lambda c: c.effective_language == "zh-CN"),
        ("#STATUS", lambda c: c.status == CaseStatus.WAITING_CUSTOMER),
        ("#帮助", lambda c: True),
    ],
)
def test_each_command_changes_the_case_and_answers_the_engineer(bot: Bot, text: str, check) -> None:
    command(bot, text)
    assert check(bot.case())
    [receipt] = bot.sent(ENGINEER)
    assert bot.sent(CUSTOMER) == []
    assert text.split()[0].lower() in receipt.get_body(("plain",)).get_content().lower()


def test_after_remind_now_the_plan_counts_from_that_reminder(bot: Bot) -> None:
    # Reminder 1 on Fri 16 Apr 09:00 (silence), reminder 2 at once by `#remind now` on Fri 10:00: the last
    # one allowed, so the closure is next, 2 business days later — and the case file says so too.
    bot.service.run_once(at("2021-04-16T09:00+08:00"))
    command(bot, "#remind now", when="2021-04-16T10:00+08:00")
    case = bot.case()
    assert case.reminders_sent == 2
    assert (case.next_action.kind, case.next_action.due) == ("closure", at("2021-04-20T10:00+08:00"))
    assert bot.store.due_case_keys(at("2021-04-20T10:00+08:00")) == [KEY]
    bot.service.run_once(at("2021-04-20T10:30+08:00"))
    assert bot.case().status == CaseStatus.CLOSED


def test_an_overdue_reminder_waits_for_working_hours_after_downtime(bot: Bot) -> None:
    # Reminder due Fri 16 Apr 09:00; the bot comes back on Friday night and on Saturday (a day off in 2021):
    # the customer hears nothing then, and gets the reminder at Monday's opening.
    for night in ("2021-04-16T20:00+08:00", "2021-04-17T11:00+08:00", "2021-04-19T08:59+08:00"):
        bot.service.run_once(at(night))
        assert bot.sent(CUSTOMER) == [], night
    bot.service.run_once(at("2021-04-19T09:00+08:00"))
    assert len(bot.sent(CUSTOMER)) == 1 and bot.case().reminders_sent == 1


def test_remind_now_sends_at_once_and_reopen_after_close(bot: Bot) -> None:
    command(bot, "#remind now")
    assert len(bot.sent(CUSTOMER)) == 1 and bot.case().reminders_sent == 1
    command(bot, "#close", when="2021-04-14T11:00+08:00")
    assert bot.case().status == CaseStatus.CLOSED
    command(bot, "#reopen", when="2021-04-14T12:00+08:00")
    assert bot.case().status == CaseStatus.OPEN


@pytest.mark.parametrize(("text", "why"), [
    ("#frobnicate", "unknown command"),
    ("#snooze until 2021-13-45", "bad date"),
    ("#waiting nobody", "expected '#waiting customer'"),
])
def test_a_bad_command_is_answered_with_the_reason_and_changes_nothing(bot: Bot, text: str, why: str) -> None:
    before = bot.case()
    command(bot, text)
    [receipt] = bot.sent(ENGINEER)
    assert why in receipt.get_body(("plain",)).get_content()
    assert bot.case().status == before.status and bot.case().next_action == before.next_action


def test_a_command_without_a_case_says_so(bot: Bot) -> None:
    bot.receive(mail(ENGINEER, BOT, "#close", "2021-04-14T10:00+08:00", subject="about nothing"),
                "2021-04-14T10:00+08:00")
    [receipt] = bot.sent(ENGINEER)
    assert "no case found" in receipt.get_body(("plain",)).get_content()


def test_a_customer_cannot_close_the_case(bot: Bot) -> None:
    bot.receive(mail(CUSTOMER, BOT, "#close\nSummary: done", "2021-04-14T10:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-14T10:00+08:00")
    case = bot.case()
    assert case.status != CaseStatus.CLOSED
    assert any("refused" in n for n in case.notes)
    assert bot.sent(CUSTOMER) == []  # never answer the sender of a refused command
    [notice] = bot.sent(ENGINEER)
    text = notice.get_body(("plain",)).get_content()
    # A notice about someone else's command, in the case's language, not "the command you sent":
    assert "发件人无权操作本案例" in text and "已拒绝：yang@customer.example 不是工程师" in text
    assert "not an engineer" in text  # the exact English reason stays beside the Chinese
    assert "你发来的指令" not in text and notice["Subject"] == "[mailbot] CAS-04027-B7D2Z5：已拒绝一条指令"


def test_lang_en_is_answered_in_english(bot: Bot) -> None:
    command(bot, "#lang en")
    [receipt] = bot.sent(ENGINEER)
    text = receipt.get_body(("plain",)).get_content()
    assert text.startswith("Hi,") and "#lang en: language set to en" in text and "Note:     done" in text
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in text.replace(bot.case().title, ""))


def test_a_forged_engineer_command_with_failed_dkim_is_refused(make_settings) -> None:
    b = Bot(make_settings(security={"trust_authentication_results": ["mx.support.example"]}))
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT,
                   headers={"Authentication-Results": "mx.support.example; dkim=pass header.d=support.example; "
                                                      "dmarc=pass header.from=support.example"}),
              "2021-04-13T02:00+08:00")
    forged = {"Authentication-Results": "mx.support.example; spf=fail; dkim=fail; dmarc=fail"}
    command(b, "#close", headers=forged)
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    assert any("dmarc failed" in n or "dkim failed" in n for n in b.case().notes)
    # A header written by the sender (another authserv-id) proves nothing either way.
    command(b, "#close", when="2021-04-14T11:00+08:00",
            headers={"Authentication-Results": "evil.example; dkim=pass; dmarc=pass"})
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    command(b, "#close", when="2021-04-14T12:00+08:00",
            headers={"Authentication-Results": "mx.support.example; dkim=pass header.d=support.example; "
                                               "dmarc=pass header.from=support.example"})
    assert b.case().status == CaseStatus.CLOSED


def autoresponder(incoming: email.message.EmailMessage, me: str, marked: bool) -> bytes:
    """A real vacation responder: answers everything it gets (optionally with RFC 3834 headers)."""
    headers = {"Auto-Submitted": "auto-replied"} if marked else {}
    return mail(me, str(incoming["From"]).split("<")[-1].rstrip(">"), "I am out of the office.",
                "2021-04-14T10:01+08:00", subject="Automatic reply: " + str(incoming["Subject"]),
                headers=headers, in_reply_to=str(incoming["Message-ID"]))


@pytest.mark.parametrize("marked", [True, False], ids=["rfc3834-responder", "subject-only-responder"])
def test_two_bots_answering_each_other_stop_after_one_message(bot: Bot, marked: bool) -> None:
    command(bot, "#status")
    for round_ in range(5):  # the engineer's responder answers whatever the bot sends
        last = bot.smtp.sent[-1]
        reply = autoresponder(email.message_from_bytes(last.raw, policy=default), ENGINEER, marked)
        bot.receive(reply, f"2021-04-14T10:0{round_ + 2}+08:00")
    assert len(bot.sent(ENGINEER)) == 1


@pytest.mark.parametrize("headers", [{"Precedence": "bulk"}, {"List-Id": "<cases.lists.example>"},
                                     {"Auto-Submitted": "auto-generated"}])
def test_no_answer_to_lists_bulk_or_automatic_mail(bot: Bot, headers: dict[str, str]) -> None:
    command(bot, "#status", headers=headers)
    assert bot.sent() == []


def test_mail_from_the_bot_itself_is_never_answered(bot: Bot) -> None:
    bot.receive(mail(BOT, BOT, "#status", "2021-04-14T10:00+08:00", subject="RE: " + SUBJECT), "2021-04-14T10:00+08:00")
    assert bot.sent() == []


def test_a_bounce_marks_the_address_and_tells_the_engineers_once(bot: Bot) -> None:
    bot.service.run_once(at("2021-04-16T09:00+08:00"))
    [reminder] = bot.sent(CUSTOMER)
    dsn = (
        "From: MAILER-DAEMON@mx.customer.example\nTo: casebot@support.example\n"
        "Subject: Undelivered Mail Returned to Sender\nDate: Fri, 16 Apr 2021 01:05:00 +0000\n"
        "Message-ID: <dsn-1@mx.customer.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nmailbox unknown\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example\n\n"
        "Final-Recipient: rfc822; yang@customer.example\nAction: failed\nStatus: 5.1.1\n\n"
        f"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: {reminder['Message-ID']}\n"
        "Subject: (the subject line was rewritten by the gateway)\n\n--b--\n"
    ).encode()
    for minute in (10, 20):  # the same bounce twice (two copies): one notice
        bot.receive(dsn.replace(b"dsn-1", f"dsn-{minute}".encode()), f"2021-04-16T09:{minute}+08:00")
    case = bot.case()
    assert case.failed_addresses == (CUSTOMER,)
    assert [e.kind for e in case.timeline].count(EntryKind.BOUNCE) == 2
    assert case.next_action is None
    [notice] = bot.sent(ENGINEER)
    text = notice.get_body(("plain",)).get_content()
    assert "发给客户的邮件被退回" in text and "发往 yang@customer.example 的邮件被退回" in text
    assert "你发来的指令" not in text
    assert len(bot.sent(CUSTOMER)) == 1  # nothing more to the dead address


def test_an_out_of_office_with_a_return_date_holds_the_reminders(bot: Bot) -> None:
    ooo = mail(CUSTOMER, ENGINEER, "您好，我休假中，4月26日返回。", "2021-04-13T02:10+08:00",
               subject="自动回复: " + SUBJECT, headers={"Auto-Submitted": "auto-replied"})
    bot.receive(ooo, "2021-04-13T02:15+08:00")
    # Back on Mon 26 Apr: held until the next business day after it, Tue 27 Apr at opening.
    assert bot.case().next_action.due == at("2021-04-27T09:00+08:00")
    bot.service.run_once(at("2021-04-16T09:00+08:00"))
    assert bot.sent(CUSTOMER) == []
    # The hold moved the reminder by more than a week (16 → 27 April): the engineers are told, once.
    [notice] = bot.sent(ENGINEER)
    assert "2021-04-27 09:00" in notice.get_body(("plain",)).get_content()


def test_an_out_of_office_without_a_date_changes_nothing(bot: Bot) -> None:
    before = bot.case().next_action
    bot.receive(mail(CUSTOMER, ENGINEER, "I am away.", "2021-04-13T02:10+08:00", subject="Out of Office: x " + KEY),
                "2021-04-13T02:15+08:00")
    assert bot.case().next_action == before


def test_mails_per_recipient_per_day_are_capped(bot: Bot) -> None:
    for minute in range(5):
        command(bot, "#remind now", when=f"2021-04-14T10:0{minute}+08:00")
    assert len(bot.sent(CUSTOMER)) == 3  # max_per_recipient_per_day


def test_credentials_are_masked_in_store_logs_and_outbox(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailbot")
    command(bot, "#close\nSummary: the new admin password: Hunter2-secret is set")
    everything = [repr(bot.case())] + [m.raw.decode("ascii", "replace") for m in bot.smtp.sent] + [caplog.text]
    for blob in everything:
        assert "Xk93-fake-Pw77" not in blob and "Hunter2-secret" not in blob
    body = bot.sent(CUSTOMER)[0].get_body(("plain",)).get_content()
    assert "password: ******" in body


def test_timezone_moves_business_hours_to_the_customer(bot: Bot) -> None:
    command(bot, "#timezone Europe/Berlin")
    case = bot.case()
    assert case.timezone == "Europe/Berlin"
    # The engineer's mail: Mon 12 Apr 19:52 in Berlin (after closing) → counted from Tue 13 → Fri 16 09:00 Berlin.
    assert case.next_action.due == datetime(2021, 4, 16, 7, 0, tzinfo=UTC)
    command(bot, "#时区 Mars/Olympus", when="2021-04-14T11:00+08:00")
    assert "IANA time zone" in bot.sent(ENGINEER)[-1].get_body(("plain",)).get_content()
    assert bot.case().timezone == "Europe/Berlin"


def test_receipts_speak_the_case_language_and_keep_the_exact_reason(bot: Bot) -> None:
    command(bot, "#snooze until 2021-13-45")
    body = bot.sent(ENGINEER)[-1].get_body(("plain",)).get_content()
    assert "日期无效" in body and "bad date '2021-13-45'" in body
    command(bot, "#lang en", when="2021-04-14T11:00+08:00")
    command(bot, "#called", when="2021-04-14T12:00+08:00")
    body = bot.sent(ENGINEER)[-1].get_body(("plain",)).get_content()
    assert "phone call attempt logged" in body


def test_a_password_in_a_subject_is_masked_too(bot: Bot) -> None:
    bot.receive(mail(CUSTOMER, ENGINEER, "done", "2021-04-14T10:00+08:00", cc=BOT,
                     subject=f"RE: {SUBJECT} password: Hunter2-secret"), "2021-04-14T10:05+08:00")
    assert "Hunter2-secret" not in repr(bot.case())
