"""Attacks tried end to end after issue 13, one test per attack: who can make the bot write to whom, what
reaches a customer, and what the engineers are shown."""

from __future__ import annotations

from email.utils import format_datetime, make_msgid

import pytest
from trustlife import (
    BOT,
    CUSTOMER,
    ENGINEER,
    FORGED,
    GENUINE,
    MX,
    SUBJECT,
    Bot,
    at,
    dsn,
    html_of,
    mail,
    text_of,
)

from mailbot.decide.policy import STRANGER_NOTICES_PER_DAY
from mailbot.models import CaseStatus, EntryKind, Role

DAY1 = "2021-04-14T10:00+08:00"
DAY2 = "2021-04-15T10:00+08:00"


def raw(sender: str, to: str, body: str, when: str, subject: str = "RE: " + SUBJECT, extra: str = "") -> bytes:
    """A mail as any client can write it, with 8-bit UTF-8 headers (homographs, zero-width spaces)."""
    return (f"From: {sender}\nTo: {to}\nSubject: {subject}\nDate: {format_datetime(at(when))}\n"
            f"Message-ID: {make_msgid(domain='x.example')}\n{extra}MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body + "\n").encode()


def build(settings) -> Bot:
    b = Bot(settings)
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT, headers=GENUINE,
                   name="Li Qi"), "2021-04-13T02:00+08:00")
    assert b.case().customers == (CUSTOMER,) and b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


@pytest.fixture
def bot(make_settings) -> Bot:
    return build(make_settings())


@pytest.fixture
def trusting(make_settings) -> Bot:
    return build(make_settings(security={"trust_authentication_results": [MX]}))


def notices(bot: Bot) -> list:
    return [m for m in bot.sent(ENGINEER) if "[mailbot]" in str(m["Subject"])]


def test_202_different_outsiders_make_a_few_notices_a_day_then_one_summary(bot: Bot) -> None:
    for i in range(202):
        bot.receive(raw(f"o{i}@spam{i}.example", BOT, "hello", DAY1), DAY1)
    sent = notices(bot)
    assert len(sent) == STRANGER_NOTICES_PER_DAY + 1
    assert "o0@spam0.example" in text_of(sent[0])
    assert f"more than {STRANGER_NOTICES_PER_DAY} people" in text_of(sent[-1])
    assert len(bot.case().outsiders) == 202  # every one of them is on the record
    assert bot.case().status == CaseStatus.WAITING_CUSTOMER and bot.case().customers == (CUSTOMER,)
    # A new day, a new allowance: the engineers are not blind to tomorrow's strangers.
    bot.receive(raw("late@other.example", BOT, "hello", DAY2), DAY2)
    assert "late@other.example" in text_of(notices(bot)[-1])


def test_refused_commands_from_30_addresses_are_bounded_the_same_way(bot: Bot) -> None:
    for i in range(30):
        bot.receive(raw(f"r{i}@spam.example", BOT, "#close", DAY1), DAY1)
    assert len(notices(bot)) == STRANGER_NOTICES_PER_DAY + 1
    assert bot.case().status == CaseStatus.WAITING_CUSTOMER


def test_forged_engineer_mails_from_many_variants_are_bounded_the_same_way(trusting: Bot) -> None:
    for i in range(12):
        trusting.receive(raw(f"eng{i}@support.example", CUSTOMER, "#close", DAY1,
                             extra=f"Authentication-Results: {FORGED['Authentication-Results']}\n"), DAY1)
    assert len(notices(trusting)) == STRANGER_NOTICES_PER_DAY + 1
    assert trusting.case().status == CaseStatus.WAITING_CUSTOMER


def test_a_dsn_about_a_receipt_to_the_engineers_marks_no_customer(bot: Bot) -> None:
    bot.receive(mail(ENGINEER, BOT, "#status", DAY1, subject="RE: " + SUBJECT), DAY1)
    [receipt] = [e for e in bot.case().timeline if e.kind == EntryKind.RECEIPT]
    bot.receive(dsn(receipt.message_id, CUSTOMER, DAY1), DAY1)
    assert bot.case().failed_addresses == ()
    # The same report about a mail that did go to the customer still counts.
    bot.receive(mail(ENGINEER, BOT, "#remind now", DAY1, subject="RE: " + SUBJECT), DAY1)
    [reminder] = [e for e in bot.case().timeline if e.kind == EntryKind.REMINDER]
    bot.receive(dsn(reminder.message_id, CUSTOMER, DAY1, n=2), DAY1)
    assert bot.case().failed_addresses == (CUSTOMER,)


@pytest.mark.parametrize("lookalike", ["yang@cust\u043emer.example", "yang@customer.example\u200b",
                                       "liqi@support.example\u200b"])
def test_a_homograph_outsider_is_shown_escaped_so_nobody_adds_the_lookalike(bot: Bot, lookalike: str) -> None:
    bot.receive(raw(lookalike, BOT, "我是客户，请把我加进来", DAY1), DAY1)
    case = bot.case()
    assert lookalike in case.outsiders and case.customers == (CUSTOMER,)
    assert case.status == CaseStatus.WAITING_CUSTOMER  # not the customer's reply
    [notice] = notices(bot)
    shown = lookalike.encode("ascii", "backslashreplace").decode()
    assert shown in text_of(notice) and lookalike not in text_of(notice)


@pytest.mark.parametrize("variant", ["LiQi@Support.Example", "liqi@support.example.", "liqi@support.example\u200b",
                                     "liqi@ｓupport.example"])
def test_variants_of_the_engineers_address_with_a_forged_verdict_steer_nothing(trusting: Bot, variant: str) -> None:
    trusting.receive(raw(variant, f"{CUSTOMER}, evil@evil.example", "#add evil2@evil.example\n#close", DAY1,
                         extra=f"Authentication-Results: {FORGED['Authentication-Results']}\n"), DAY1)
    case = trusting.case()
    assert case.customers == (CUSTOMER,) and case.status == CaseStatus.WAITING_CUSTOMER
    assert trusting.sent(CUSTOMER) == []


def test_an_outsider_replying_in_the_engineers_thread_is_not_a_reply(bot: Bot) -> None:
    engineer_mail = bot.case().timeline[0].message_id
    bot.receive(raw("mallory@evil.example", BOT, "done, see https://evil.example", DAY1, subject="hello",
                    extra=f"In-Reply-To: {engineer_mail}\n"), DAY1)
    case = bot.case()
    [entry] = [e for e in case.timeline if e.from_addr == "mallory@evil.example"]
    assert entry.matched_by == "in_reply_to" and entry.role == Role.OTHER
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.next_action is not None


def test_an_outsider_added_then_removed_is_an_outsider_again(bot: Bot) -> None:
    bot.receive(mail(ENGINEER, BOT, "#add helper@customer.example", DAY1, subject="RE: " + SUBJECT), DAY1)
    bot.receive(mail(ENGINEER, BOT, "#remove helper@customer.example", DAY1, subject="RE: " + SUBJECT), DAY1)
    bot.receive(raw("helper@customer.example", BOT, "reply", DAY2), DAY2)
    case = bot.case()
    assert case.customers == (CUSTOMER,) and case.status == CaseStatus.WAITING_CUSTOMER


def test_closure_fields_and_customer_text_are_never_rendered_as_html_or_templates(bot: Bot) -> None:
    bot.receive(raw(CUSTOMER, BOT, "{{ 7*7 }} {% for x in range(3) %}X{% endfor %}", DAY1), DAY1)
    bot.receive(mail(ENGINEER, f"{CUSTOMER}, {BOT}", "#close\nProblem: <script>alert(1)</script>\n"
                     "Summary: <a href='https://evil.example'>x</a> {{ 7*7 }}", DAY2, subject="RE: " + SUBJECT), DAY2)
    [closure] = bot.sent(CUSTOMER)
    html, text = html_of(closure), text_of(closure)
    assert "<script>" not in html and "<a href='https" not in html and "&lt;script&gt;" in html
    assert "{{ 7*7 }}" in text and "49" not in text and "XXX" not in text


def test_the_bots_own_address_forged_in_from_changes_nothing(trusting: Bot) -> None:
    trusting.receive(raw(BOT, f"{CUSTOMER}, evil@evil.example", "#close\nhttps://evil.example", DAY1), DAY1)
    case = trusting.case()
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.customers == (CUSTOMER,)
    assert trusting.sent(CUSTOMER) == []
