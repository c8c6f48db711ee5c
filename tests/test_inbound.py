"""decide_mail: a case's life in values — what each mail does, decided with no store, no mailbox, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import base_config

from mailbot.cases import record_outbound
from mailbot.config import from_dict
from mailbot.decide.inbound import Decision, Facts, HeldMail, Opened, Threaded, Unmatched, decide_mail
from mailbot.decide.policy import Policy
from mailbot.models import Case, CaseMatch, CaseStatus, EntryKind, Flag, InboundMail, MatchRule, Role
from mailbot.service import make_policy
from mailbot.wiring import make_calendar

KEY = "CAS-04027-B7D2Z5"
SUBJECT = f"[{KEY}] Printer offline"
ENGINEER = "liqi@support.example"
CUSTOMER = "wang@customer.example"
STRANGER = "zhao@elsewhere.example"
TUESDAY = datetime.fromisoformat("2021-04-13T10:00+08:00")
BY_SUBJECT = CaseMatch(KEY, MatchRule.SUBJECT, KEY)
NOTHING_KNOWN = Facts()  # a store that holds nothing about the mail


def policy(**cases: object) -> Policy:
    raw = base_config()
    raw["cases"] = dict(cases)
    settings = from_dict(raw, Path(__file__).parent)  # paths only named: nothing here reads a file
    return make_policy(settings, make_calendar(settings))


def mail(sender: str, to: tuple[str, ...], text: str, n: int, **extra: object) -> InboundMail:
    return InboundMail(message_id=f"<m{n}@mail.example>", subject=SUBJECT, from_addr=sender, from_name="",
                       to=to, cc=(), date=TUESDAY + timedelta(hours=n), in_reply_to=(), references=(),
                       new_text=text, **extra)  # type: ignore[arg-type]


def decide(case: Case | None, inbound: InboundMail, facts: Facts = NOTHING_KNOWN, found: CaseMatch = BY_SUBJECT,
           p: Policy | None = None) -> Decision:
    return decide_mail(case, inbound, found, facts, p or policy(), inbound.date or TUESDAY)


def opened_by_engineer() -> Case:
    first = decide(None, mail(ENGINEER, (CUSTOMER,), "Please send the printer's log.", 0))
    assert first.case is not None
    return first.case


def test_an_engineers_mail_opens_the_case_and_plans_a_reminder() -> None:
    d = decide(None, mail(ENGINEER, (CUSTOMER,), "Please send the printer's log.", 0))
    assert d.lands == Opened(KEY, "Printer offline")
    assert d.case is not None and d.role == Role.ENGINEER
    assert d.case.status == CaseStatus.WAITING_CUSTOMER
    assert d.case.customers == (CUSTOMER,) and d.case.engineers == (ENGINEER,)
    assert d.case.next_action is not None and d.case.next_action.kind == "reminder"
    assert d.sends == () and d.cancellations == ()
    assert [e.text for e in d.events][0] == "opened case: Printer offline"


@pytest.mark.parametrize(("opened_by", "lands"), [("engineer", Unmatched), ("anyone", Opened)])
def test_who_may_open_a_case_with_an_unused_key(opened_by: str, lands: type) -> None:
    d = decide(None, mail(CUSTOMER, (ENGINEER,), "Our printer is offline.", 0), p=policy(opened_by=opened_by))
    assert isinstance(d.lands, lands)
    if lands is Unmatched:
        assert d.case is None and "only an engineer's mail opens a case" in d.lands.reason
    else:
        assert d.case is not None and d.case.customers == (CUSTOMER,)


def test_mail_with_no_key_and_no_thread_is_unmatched() -> None:
    d = decide(None, mail(CUSTOMER, (ENGINEER,), "hello", 0), found=CaseMatch(None, None))
    assert d.lands == Unmatched("no case key and no known thread") and d.case is None and d.sends == ()


def test_a_customers_reply_waits_on_the_engineer_and_cancels_a_held_reminder() -> None:
    case = record_outbound(opened_by_engineer(), EntryKind.REMINDER, "<r1@bot>", "reminder", SUBJECT,
                           "casebot@support.example", TUESDAY + timedelta(days=3))
    reply = mail(CUSTOMER, (ENGINEER,), "Here is the log.", 1)
    plain = decide(case, reply)
    assert plain.lands == Threaded(KEY) and plain.case is not None
    assert plain.case.status == CaseStatus.WAITING_ENGINEER and plain.cancellations == ()
    assert plain.case.reminders_sent == 1
    held = decide(case, reply, Facts(held=(HeldMail(f"{KEY}/reminder/1", "<r1@bot>", "reminder"),)))
    assert [c.action_id for c in held.cancellations] == [f"{KEY}/reminder/1"]
    assert held.case is not None and held.case.reminders_sent == 0
    assert not held.case.has_message("<r1@bot>")


def test_a_bounce_counts_only_when_the_store_says_the_bot_sent_the_returned_mail() -> None:
    case = record_outbound(opened_by_engineer(), EntryKind.REMINDER, "<r1@bot>", "reminder", SUBJECT,
                           "casebot@support.example", TUESDAY + timedelta(days=3))
    bounce = mail("mailer-daemon@customer.example", ("casebot@support.example",), "undeliverable", 2,
                  flags=frozenset({Flag.BOUNCE}), is_dsn=True, bounced_message_ids=("<r1@bot>",),
                  bounced_recipients=(CUSTOMER,))
    found = CaseMatch(KEY, MatchRule.BOUNCED_HEADERS, "<r1@bot>")
    unproven = decide(case, bounce, found=found)
    assert unproven.case is not None and unproven.case.failed_addresses == () and unproven.sends == ()
    assert any("not about a mail this bot sent for the case" in e.text for e in unproven.events)
    proven = decide(case, bounce, Facts(outgoing=(("<r1@bot>", KEY),)), found=found)
    assert proven.case is not None and proven.case.failed_addresses == (CUSTOMER,)
    assert [(s.to, s.receipt and s.receipt.kind) for s in proven.sends] == [((ENGINEER,), "bounce")]
    other_case = decide(case, bounce, Facts(outgoing=(("<r1@bot>", "CAS-99999-ZZZZZZ"),)), found=found)
    assert other_case.case is not None and other_case.case.failed_addresses == ()


def test_a_stranger_is_recorded_and_the_engineers_hear_once() -> None:
    case = opened_by_engineer()
    d = decide(case, mail(STRANGER, (ENGINEER,), "me too", 1))
    assert d.case is not None and STRANGER in d.case.outsiders
    assert [s.action_id for s in d.sends] == [f"{KEY}/outsider/{STRANGER}"]
    assert d.asked == (f"{KEY}/outsider/{STRANGER}",)  # the service asks the ledger about these


def test_the_daily_bound_on_stranger_notices_spares_a_notice_the_ledger_already_holds() -> None:
    case = opened_by_engineer()
    sent = []
    for n in range(1, 8):  # seven strangers in a day: five notices, one summary, then silence
        d = decide(case, mail(f"s{n}@elsewhere.example", (ENGINEER,), "me too", n))
        assert d.case is not None
        case = d.case
        sent.append([s.action_id.split("/")[1] for s in d.sends])
    assert sent == [["outsider"]] * 5 + [["strangers"], []]
    # s1 now gives a command: refused, and over today's bound — unless the ledger already holds that very
    # notice (sent earlier today), which then is no new one.
    command = mail("s1@elsewhere.example", (ENGINEER,), "#close", 8)
    refused = f"{KEY}/refused/s1@elsewhere.example/2021-04-13"
    assert decide(case, command).sends == () and decide(case, command).asked == (refused,)
    again = decide(case, command, Facts(known_actions=frozenset({refused})))
    assert [s.action_id for s in again.sends] == [refused]


def test_a_close_command_asks_for_the_closure_and_a_receipt() -> None:
    case = opened_by_engineer()
    d = decide(case, mail(ENGINEER, (CUSTOMER,), "#close", 1))
    assert d.lands == Threaded(KEY)
    kinds = [s.kind for s in d.sends]
    assert kinds == [EntryKind.CLOSURE, EntryKind.RECEIPT]
    assert d.sends[0].to == (CUSTOMER,) and d.sends[1].to == (ENGINEER,)


def test_a_forged_engineer_mail_is_an_outsiders_and_runs_nothing() -> None:
    trusting = replace(policy(), trusted_authserv_ids=("mx.support.example",))
    case = opened_by_engineer()
    d = decide(case, mail(ENGINEER, (CUSTOMER,), "#close", 1), p=trusting)
    assert d.role == Role.OTHER and d.authentication not in (None, "pass")
    assert d.case is not None and d.case.status == CaseStatus.WAITING_CUSTOMER
    assert [s.receipt and s.receipt.kind for s in d.sends] == ["forged"]
