"""When a customer waits on us: one nudge to the case's engineers per reply, one mail to the leads — pure.

A customer's real reply (not an auto-reply, not a bounce) that no engineer answered for `[nudge]
after_business_hours` (working hours on business days, in the case's zone) → a nudge to the case's engineers;
still unanswered after `escalate_after_business_hours` → one escalation to the leads, the engineers in Cc.
An engineer's mail to the customer, `#waiting …` or `#snooze` answers every reply before it (stops the clock).

Both are planned as the case's `next_action` (kind "nudge" | "escalation"): they exist only while the case
waits on its engineer, reminders only while it waits on its customer, so one due time per case serves both
and the sweep finds them in the same due index. Each is on the case's timeline once sent (EntryKind.NUDGE /
ESCALATION, role bot): that is how "once" is known, and the action id names the reply, so that the outbox
ledger sends it once even across a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.commands import find_commands
from mailbot.decide.policy import Policy, SendMail, calendar_for
from mailbot.models import (
    Case,
    CaseStatus,
    EntryKind,
    NextAction,
    NudgeInfo,
    Role,
    TimelineEntry,
    WaitingReply,
)

QUOTED_REPLIES = 3  # a nudge quotes the latest replies that wait, at most this many
QUOTE_CHARS = 1500  # of each reply's text
_STOPS_THE_CLOCK = ("waiting", "snooze")


@dataclass(frozen=True)
class Step:
    """A nudge or an escalation that is owed: when, and the replies it is about (oldest first)."""

    kind: str  # "nudge" | "escalation"
    due: datetime  # aware, UTC
    replies: tuple[TimelineEntry, ...]

    @property
    def action_suffix(self) -> str:
        # One nudge per reply (the first one it covers), one escalation per wait (its oldest reply).
        return f"{self.kind}/{self.replies[0].message_id}"


def _answers(entry: TimelineEntry) -> bool:
    """Whether an engineer's entry answers the replies before it: a mail to the customer (not an internal
    note), or a `#waiting …` / `#snooze` that was carried out (an authenticated engineer's command)."""
    if entry.role != Role.ENGINEER:
        return False
    if entry.kind == EntryKind.MAIL:
        return not entry.internal
    if entry.kind == EntryKind.COMMAND:
        return any(c.name in _STOPS_THE_CLOCK and c.problem is None for c in find_commands(entry.text))
    return False


def unanswered(case: Case) -> tuple[TimelineEntry, ...]:
    """The customers' real replies since the engineers last answered, oldest first; none unless the case
    waits on its engineer (`#waiting vendor`, `#waiting customer` and closing stop the clock too)."""
    if case.status != CaseStatus.WAITING_ENGINEER or (case.snoozed_until is not None):
        # A customer's reply clears a hold, so a hold on a case that waits on us was set after the last
        # reply: an engineer's `#snooze` (from the case's thread or a digest reply) answered it.
        return ()
    waiting: list[TimelineEntry] = []
    # Newest first, up to the last answer: commands further back are never parsed again.
    for e in sorted(case.timeline, key=lambda e: e.date, reverse=True):
        if _answers(e):
            break
        if e.role == Role.CUSTOMER and e.kind == EntryKind.MAIL and e.direction == "in":
            waiting.append(e)
    return tuple(reversed(waiting))


def _last_sent(case: Case, kind: EntryKind) -> datetime | None:
    return max((e.date for e in case.timeline if e.kind == kind and e.direction == "out"), default=None)


def steps(case: Case, policy: Policy) -> list[Step]:
    """The nudge and the escalation this case still owes, soonest first."""
    settings = policy.nudge
    if not (settings.after_business_hours or settings.escalate_after_business_hours):
        return []
    replies = unanswered(case)
    if not replies:
        return []
    cal = calendar_for(case, policy)
    owed: list[Step] = []
    if settings.after_business_hours and case.engineers:
        nudged = _last_sent(case, EntryKind.NUDGE)
        new = tuple(r for r in replies if nudged is None or r.date > nudged)
        if new:
            owed.append(Step("nudge", cal.add_business_hours(new[0].date, settings.after_business_hours), new))
    if settings.escalate_after_business_hours and settings.leads:
        escalated = _last_sent(case, EntryKind.ESCALATION)
        if escalated is None or escalated < replies[0].date:
            due = cal.add_business_hours(replies[0].date, settings.escalate_after_business_hours)
            owed.append(Step("escalation", due, replies))
    return sorted(owed, key=lambda s: (s.due, s.kind))


def plan_nudge(case: Case, policy: Policy) -> NextAction | None:
    """The next nudge or escalation of a case that waits on its engineer (`policy.plan_next` asks)."""
    owed = steps(case, policy)
    return NextAction(owed[0].kind, owed[0].due) if owed else None


def nudges_due(case: Case, now: datetime, policy: Policy) -> list[SendMail]:
    """The nudge and escalation due at `now`, decided on the case as it is now: an answer that arrived
    while the bot was down (ingested before the sweep) leaves nothing owed. After downtime they go out in
    working hours only, like every scheduled mail."""
    cal = calendar_for(case, policy)
    due = [s for s in steps(case, policy) if s.due <= now]
    if not due or not cal.in_working_hours(now):
        return []
    return [_mail(case, s, now, cal, policy) for s in due]


def _mail(case: Case, step: Step, now: datetime, cal: BusinessCalendar, policy: Policy) -> SendMail:
    waited = int(cal.business_hours_between(step.replies[0].date, now))
    info = NudgeInfo(
        since=f"{step.replies[0].date.astimezone(cal.zone):%Y-%m-%d %H:%M}",
        business_hours=waited,
        replies=tuple(WaitingReply(r.from_addr, f"{r.date.astimezone(cal.zone):%Y-%m-%d %H:%M}",
                                   r.text[:QUOTE_CHARS]) for r in step.replies[-QUOTED_REPLIES:]),
        engineers=case.engineers,
    )
    # Threaded under the customer's latest reply: in the engineer's client it sits with the mail it is about.
    latest = step.replies[-1].message_id
    if step.kind == "nudge":
        return SendMail(action_id=f"{case.key}/{step.action_suffix}", case_key=case.key, kind=EntryKind.NUDGE,
                        template="nudge", to=case.engineers, in_reply_to=latest, nudge=info)
    leads = tuple(a for a in policy.nudge.leads)
    cc = tuple(e for e in case.engineers if e not in leads)
    return SendMail(action_id=f"{case.key}/{step.action_suffix}", case_key=case.key, kind=EntryKind.ESCALATION,
                    template="escalation", to=leads, cc=cc, in_reply_to=latest, nudge=info)
