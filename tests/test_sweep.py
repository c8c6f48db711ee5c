"""decide_due: what the reminder sweep does for one due case, decided with no store — and the sweep saves each
case it touches once."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import base_config
from trustlife import BOT, CUSTOMER, ENGINEER, Bot, mail

from mailbot.config import from_dict
from mailbot.decide.inbound import Facts, decide_mail
from mailbot.decide.policy import Policy
from mailbot.decide.sweep import DueFacts, decide_due
from mailbot.models import Case, CaseMatch, CaseStatus, EntryKind, InboundMail, MatchRule
from mailbot.service import make_policy
from mailbot.wiring import make_calendar

KEY = "CAS-04027-B7D2Z5"
TUESDAY = datetime.fromisoformat("2021-04-13T10:00+08:00")


def policy() -> Policy:
    settings = from_dict(base_config(), Path(__file__).parent)  # paths only named: nothing here reads a file
    return make_policy(settings, make_calendar(settings))


def waiting_case(p: Policy) -> Case:
    """An engineer asked the customer for a log: the case waits on the customer, a reminder planned."""
    asked = InboundMail(message_id="<m0@mail.example>", subject=f"[{KEY}] Printer offline", from_addr=ENGINEER,
                        from_name="", to=(CUSTOMER,), cc=(BOT,), date=TUESDAY, in_reply_to=(), references=(),
                        new_text="Please send the printer's log.")
    case = decide_mail(None, asked, CaseMatch(KEY, MatchRule.SUBJECT, KEY), Facts(), p, TUESDAY).case
    assert case is not None and case.status == CaseStatus.WAITING_CUSTOMER and case.next_action is not None
    return case


P = policy()
CASE = waiting_case(P)
assert CASE.next_action is not None
DUE = CASE.next_action.due


@pytest.mark.parametrize(("now", "facts", "sent", "deferred", "logged"), [
    # Not due yet: nothing goes out, the plan stands.
    (DUE - timedelta(minutes=1), DueFacts(), [], 0, []),
    # Due: the reminder goes to the customer.
    (DUE, DueFacts(), [(EntryKind.REMINDER, (CUSTOMER,))], 0, []),
    # The customer had their daily share already: the reminder waits for a later sweep, and the log says why.
    (DUE, DueFacts(sent_today={CUSTOMER: P.daily_cap}), [], 1, ["reminder deferred"]),
    # One under the cap still goes.
    (DUE, DueFacts(sent_today={CUSTOMER: P.daily_cap - 1}), [(EntryKind.REMINDER, (CUSTOMER,))], 0, []),
    # Someone else's count does not hold this customer's mail.
    (DUE, DueFacts(sent_today={ENGINEER: 99}), [(EntryKind.REMINDER, (CUSTOMER,))], 0, []),
])
def test_what_the_sweep_does_for_a_waiting_case(now: datetime, facts: DueFacts, sent: list, deferred: int,
                                                logged: list[str]) -> None:
    d = decide_due(CASE, facts, P, now)
    assert [(s.kind, s.to) for s in d.sends] == sent
    assert d.deferred == deferred
    assert [e.text.split(":")[0] for e in d.events] == logged
    assert d.case.next_action == CASE.next_action  # nothing recorded yet: the plan is the same
    assert len(d.due) == (now >= DUE)


def test_a_mail_the_ledger_holds_goes_on_even_over_the_cap() -> None:
    # A crash between recording the reminder and saving the case: it was counted when it was recorded.
    first = decide_due(CASE, DueFacts(), P, DUE)
    [reminder] = first.sends
    again = decide_due(CASE, DueFacts(sent_today={CUSTOMER: P.daily_cap}, known_actions=frozenset({reminder.action_id})),
                       P, DUE)
    assert again.sends == first.sends and again.deferred == 0


def test_a_closed_case_has_nothing_due() -> None:
    d = decide_due(CASE.with_(status=CaseStatus.CLOSED), DueFacts(), P, DUE + timedelta(days=30))
    assert d.sends == () and d.due == ()


def test_the_sweep_writes_a_due_case_once(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = Bot(make_settings())
    bot.receive(mail(ENGINEER, CUSTOMER, "请上传日志。", "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    due = bot.case().next_action
    assert due is not None and due.kind == "reminder"
    writes: list[int] = []
    put_case = bot.store.put_case

    def counting(case: Case) -> None:
        writes.append(case.reminders_sent)
        put_case(case)

    monkeypatch.setattr(bot.store, "put_case", counting)
    report = bot.service.send_due(due.due)
    assert report.sent == 1 and len(bot.sent(CUSTOMER)) == 1
    # Saved once, with the reminder on its timeline and the next step planned after it.
    assert writes == [1]
    after = bot.case()
    assert after.next_action is not None and after.next_action.due > due.due
    assert [e.kind for e in after.timeline if e.direction == "out"] == [EntryKind.REMINDER]
