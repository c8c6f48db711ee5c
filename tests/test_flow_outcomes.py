"""What one fetched mail comes to (typed: processed or quarantined, with the reason), a receipt to a command
that found no case (recorded on no case, its Message-ID still derived from the decision), and how often a
command mail writes its case."""

from __future__ import annotations

import email
from email.policy import default

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, Bot, at, mail, text_of

from mailbot.mailbox.base import FetchedMail
from mailbot.models import CaseStatus, ParseFailure
from mailbot.outcomes import CycleReport, Processed, Quarantined
from mailbot.parse import parse
from mailbot.render.compose import make_message_id
from mailbot.render.templates import NO_CASE

OPENED = "2021-04-13T02:00+08:00"
LATER = "2021-04-14T10:00+08:00"


@pytest.fixture
def bot(make_settings) -> Bot:
    b = Bot(make_settings())
    b.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), OPENED)
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


def test_an_unreadable_mail_comes_to_quarantine_with_the_parsers_reason(bot: Bot) -> None:
    report = CycleReport()
    outcome = bot.service.handle_parsed(FetchedMail("m1", b"junk"), ParseFailure("no headers at all"), at(LATER),
                                        report)
    assert outcome == Quarantined("no headers at all")
    assert report.quarantined == 1
    assert [(q["ref"], q["reason"]) for q in bot.store.quarantined()] == [("m1", "no headers at all")]


def test_a_reason_with_colons_reaches_the_mailbox_whole(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser's reason is carried as it is (it used to travel inside a "quarantine:<reason>" string).
    reason = "header Date: bad value: 'yesterday'"
    monkeypatch.setattr(bot.service.parser, "parse_fn", lambda raw: ParseFailure(reason))
    bot.receive(b"Subject: x\n\nbody", LATER)
    [(_, why)] = bot.box.quarantined.values()
    assert why == reason


def test_a_mail_and_its_duplicate_are_both_processed(bot: Bot) -> None:
    raw = mail(CUSTOMER, ENGINEER, "日志已上传。", LATER, cc=BOT)
    parsed = parse(raw)
    first, again = CycleReport(), CycleReport()
    assert bot.service.handle_parsed(FetchedMail("a", raw), parsed, at(LATER), first) == Processed()
    assert bot.service.handle_parsed(FetchedMail("b", raw), parsed, at(LATER), again) == Processed()
    assert (first.threaded, first.duplicates) == (1, 0)
    assert (again.threaded, again.duplicates) == (0, 1)


def test_a_bug_while_applying_quarantines_that_mail_only(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    apply = bot.service.apply

    def choke_on_one(m, now, report):
        if "trigger" in m.new_text:
            raise RuntimeError("boom")
        apply(m, now, report)

    monkeypatch.setattr(bot.service, "apply", choke_on_one)
    bot.box.deliver(mail(CUSTOMER, ENGINEER, "trigger", LATER, cc=BOT))
    bot.box.deliver(mail(CUSTOMER, ENGINEER, "日志已上传。", LATER, cc=BOT))
    report = bot.service.run_once(at(LATER))
    assert report.quarantined == 1 and report.threaded == 1
    [(raw, why)] = bot.box.quarantined.values()
    assert b"trigger" in raw and why == "internal error RuntimeError: boom"
    assert len(bot.box.processed) == 2  # the opening mail and the good reply


def test_a_command_without_a_case_is_answered_and_recorded_on_no_case(bot: Bot) -> None:
    raw = mail(ENGINEER, BOT, "#close", LATER, subject="Re: about nothing")
    message_id = email.message_from_bytes(raw, policy=default)["Message-ID"]
    cases_before = [c.key for c in bot.store.active_cases()]
    bot.receive(raw, LATER)
    [receipt] = bot.sent(ENGINEER)
    # The Message-ID comes from the decision (the receipt to this mail), as before: exactly-once holds.
    domain = BOT.rpartition("@")[2]
    assert receipt["Message-ID"] == make_message_id(f"receipt/{message_id}", domain)
    # Where a case's key and title would be: none, and the mail's own subject (the bot speaks zh-CN here).
    assert f"{NO_CASE}（about nothing）" in text_of(receipt)
    entry = bot.store.outbox_entry(f"receipt/{message_id}")
    assert entry is not None and entry["case"] == NO_CASE and entry["message_id"] == receipt["Message-ID"]
    assert bot.store.get_case(NO_CASE) is None
    assert [c.key for c in bot.store.active_cases()] == cases_before
    seen = bot.store.seen(receipt["Message-ID"])
    assert seen is not None and seen.get("case") == "" and seen.get("place") == "out"


def test_a_close_command_writes_its_case_once(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[CaseStatus] = []
    put_case = bot.store.put_case

    def counting(case):
        writes.append(case.status)
        put_case(case)

    monkeypatch.setattr(bot.store, "put_case", counting)
    bot.receive(mail(ENGINEER, CUSTOMER, "#close", LATER, cc=BOT), LATER)
    assert bot.case().status == CaseStatus.CLOSED
    assert len(bot.sent(CUSTOMER)) == 1 and len(bot.sent(ENGINEER)) == 1  # the closure and the receipt
    # The case is saved once, closed, with the closure and the receipt on its timeline.
    assert writes == [CaseStatus.CLOSED]
    assert {e.kind.value for e in bot.case().timeline if e.direction == "out"} >= {"closure", "receipt"}
