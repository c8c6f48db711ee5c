"""What the reminder sweep does for one due case, decided in one pure function: the mails that go out now,
those the daily cap defers, the case with its next step and the lines to log (`decide_due`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from mailbot.decide.inbound import Event
from mailbot.decide.messages import Message, message
from mailbot.decide.policy import TO_CUSTOMERS, Policy, SendMail, calendar_for, due_now, plan_next
from mailbot.models import Case, CaseStatus


@dataclass(frozen=True)
class DueFacts:
    """What the store knows that the sweep needs; the service gathers it before deciding."""

    # Mails recorded for each recipient on the bot's local day of `now` (a held mail counts on its own day).
    sent_today: Mapping[str, int] = field(default_factory=dict)
    # Action ids the outbox ledger already holds (recorded before a crash): they are not counted again.
    known_actions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DueDecision:
    case: Case  # with its next step planned; once the sends are on its timeline, `planned` plans again
    sends: tuple[SendMail, ...] = ()  # to record now
    events: tuple[Event, ...] = ()
    deferred: int = 0  # mails over today's cap: not recorded, decided again by a later sweep
    # Every mail due now, before the cap: the facts to gather are about these (decide again knowing them).
    due: tuple[SendMail, ...] = ()


def planned(case: Case, policy: Policy) -> Case:
    """The case with its next reminder or closure planned from the case as it is (a closed case has none)."""
    return case if case.status == CaseStatus.CLOSED else case.with_(next_action=plan_next(case, policy))


def over_cap(send: SendMail, sent_today: Mapping[str, int], cap: int) -> Message | None:
    """Why `send` must wait: a recipient already had `cap` mails today. Mail to our own people (a receipt, a
    nudge, a digest) never waits."""
    if send.kind not in TO_CUSTOMERS:
        return None
    for address in send.to:
        if sent_today.get(address, 0) >= cap:
            return message("held.daily_cap", address=address, cap=cap)
    return None


def decide_due(case: Case, facts: DueFacts, policy: Policy, now: datetime) -> DueDecision:
    """Everything the sweep does for one case at `now`. A mail the ledger already holds goes on (it is
    recorded on the case again: the crash came between ledger and case); a new one needs a recipient and
    room under the daily cap, or it waits for a later sweep."""
    due = tuple(due_now(case, now, policy))
    sends: list[SendMail] = []
    events: list[Event] = []
    deferred = 0
    for send in due:
        if send.action_id not in facts.known_actions:
            if not send.to:
                events.append(Event(case.key, f"{send.kind.value} not sent: no recipient left"))
                continue
            if why := over_cap(send, facts.sent_today, policy.daily_cap):
                deferred += 1
                events.append(Event(case.key, f"{send.kind.value} deferred: {why}"))
                continue
        sends.append(send)
    return DueDecision(planned(case, policy), tuple(sends), tuple(events), deferred, due)


def silent_business_days(case: Case, policy: Policy, now: datetime) -> int:
    """Business days since the engineer's last mail, up to `now` (a reminder says how long it has been)."""
    if case.last_engineer_mail is None:
        return 0
    cal = calendar_for(case, policy)
    day = case.last_engineer_mail.astimezone(cal.zone).date()
    end = now.astimezone(cal.zone).date()
    n = 0
    while day < end and n < 365:
        day = cal.next_workday(day)
        n += day <= end
    return n


def release_time(case: Case, send: SendMail, now: datetime, policy: Policy, cap: int, counting_zone: tzinfo,
                 sent_on: Callable[[str, date], int]) -> datetime:
    """When a mail held over today's cap may go: the first opening of a later business day (in the case's
    hours) on which no recipient has reached the cap yet. `sent_on(address, day)` counts the mail recorded
    for an address on a day of `counting_zone` (the bot's, where the cap is counted)."""
    cal = calendar_for(case, policy)
    day = now.astimezone(cal.zone).date()
    release = now
    for _ in range(60):  # bounded: a cap of 1 and a held mail a day for two months is not a real case
        release = cal.first_opening(day + timedelta(days=1))
        day = release.astimezone(cal.zone).date()
        counting_day = release.astimezone(counting_zone).date()
        if all(sent_on(address, counting_day) < cap for address in send.to):
            break
    return release
