"""The report's figures from case timelines in one pass — does chasing work? — pure: the period comes in.

What counts (read from the timeline, the one record of a case's life; mailbot.cases writes it):
- a *real reply* of a customer is an incoming `mail` from a customer (role `customer`): auto-replies,
  bounces and outsiders' mail (role `other`) are not answers;
- an engineer's *mail to the customer* is an engineer's `mail` that is not an internal note; it starts a
  new reminder cycle (mailbot.cases.reminders_in_cycle), so the reminder steps count again from 1;
- a reminder is *answered* when a customer's real reply follows it before the next reminder, the closure
  or the engineer's next mail to the customer (after that, the reply answers someone else);
- a closure is *after silence* when no customer replied in its cycle and no engineer asked for it
  (`#close` is an engineer's command right before it); a case is *reopened* by the first real mail of a
  customer or an engineer to the customer after a closure;
- reply times are business hours (working hours on business days, in the case's zone, from the business
  calendar): a customer's, from the engineer's mail to the customer's reply; an engineer's, from the first
  unanswered customer reply to the engineer's next mail to the customer.
Each event counts in the period its own date falls in (a reminder by when it was sent, a reply time by when
the reply came). The timeline does not record which template a reminder used; decide.policy.reminder picks
it by step (1 → `reminder`, 2+ → `reminder2`), so `by_template` follows the step the same way.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.commands import ALIASES, find_commands
from mailbot.models import Case, EntryKind, Role, TimelineEntry
from mailbot.report.periods import WITHIN_DAYS, BusinessClock, Period, hours_summary, rate

if TYPE_CHECKING:  # the store's package is not imported here: the figures are pure
    from mailbot.store.codec import CaseFacts

# EntryKind.NUDGE and ESCALATION (mail to the engineers and the leads, issue 17), compared by value: a
# timeline from before they existed simply counts 0.
NUDGE_KINDS = frozenset({"nudge"})
ESCALATION_KINDS = frozenset({"escalation"})
_CLOSE_WORDS = tuple(sorted({alias.casefold() for alias, name in ALIASES.items() if name == "close"}))
_HEAD = 2000  # commands are the first lines of a mail (mailbot.decide.commands.find_commands)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class _Bucket:
    sent: int = 0
    answered: int = 0
    within: dict[int, int] = field(default_factory=lambda: dict.fromkeys(WITHIN_DAYS, 0))

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "answer_rate": rate(self.answered, self.sent),
                "answered_within_business_days": {str(n): self.within[n] for n in WITHIN_DAYS}}

    def add(self, other: _Bucket) -> None:
        self.sent += other.sent
        self.answered += other.answered
        for n in WITHIN_DAYS:
            self.within[n] += other.within[n]


@dataclass
class _Engineer:
    cases: set[str] = field(default_factory=set)
    replies: int = 0
    reply_hours: list[float] = field(default_factory=list)
    closures: int = 0

    def add(self, other: _Engineer) -> None:
        self.cases |= other.cases
        self.replies += other.replies
        self.reply_hours += other.reply_hours
        self.closures += other.closures


# The enum members, compared by identity in the loop over every entry (the codec and cases.py make
# members, never plain strings; `is` is what keeps 100,000 cases within the time the report has).
_BOT, _CUSTOMER, _ENGINEER = Role.BOT, Role.CUSTOMER, Role.ENGINEER
_MAIL, _REMINDER, _CLOSURE, _COMMAND = EntryKind.MAIL, EntryKind.REMINDER, EntryKind.CLOSURE, EntryKind.COMMAND
_ENGINEERS_SIDE = NUDGE_KINDS | ESCALATION_KINDS


def template_for_step(step: int) -> str:
    """The template decide.policy.reminder uses for the n-th reminder of a cycle."""
    return "reminder" if step == 1 else "reminder2"


class _Tally:
    """The running counts of one report (one pass over the cases)."""

    def __init__(self, period: Period, calendar: BusinessCalendar) -> None:
        self.period = period
        self.start, self.end = period.start, period.end
        self.calendar = calendar
        self.clocks: dict[str, BusinessClock] = {calendar.zone.key: BusinessClock(calendar)}
        self.opened = self.closed = self.silent = self.reopened = 0
        self.silent_reopened = 0  # silent closures in the period that a later mail reopened
        self.total = _Bucket()
        self.by_step: dict[int, _Bucket] = {}
        self.by_weekday = [_Bucket() for _ in range(7)]
        self.by_hour = [_Bucket() for _ in range(24)]
        self.customer_hours: list[float] = []
        self.engineer_hours: list[float] = []
        self.nudges = self.escalations = 0
        self.engineers: dict[str, _Engineer] = {}

    def clock(self, case: Case | CaseFacts) -> BusinessClock:
        key = case.timezone or self.calendar.zone.key
        clock = self.clocks.get(key)
        if clock is None:
            # The case's own zone (`#timezone`): its customer's working hours, as policy.calendar_for reads
            # them.
            clock = self.clocks[key] = BusinessClock(replace(self.calendar, zone=ZoneInfo(key)))
        return clock

    def inside(self, when: datetime) -> bool:
        return self.start <= when < self.end

    def engineer(self, address: str) -> _Engineer:
        found = self.engineers.get(address)
        if found is None:
            found = self.engineers[address] = _Engineer()
        return found

    def reminder(self, sent: TimelineEntry, step: int, reply: TimelineEntry | None,
                 clock: BusinessClock) -> None:
        when = sent.date
        if not self.start <= when < self.end:
            return
        local = when.astimezone(clock.zone)
        by_step = self.by_step.get(step)
        if by_step is None:
            by_step = self.by_step[step] = _Bucket()
        buckets = (self.total, by_step, self.by_weekday[local.weekday()], self.by_hour[local.hour])
        if reply is None:
            for b in buckets:
                b.sent += 1
            return
        waited = clock.hours_between(when, reply.date)
        # n business days on from the reminder is n whole working days of business time
        # (calendar.add_business_days keeps the time of day): a reminder on Friday 10:00 answered on Monday
        # 09:30, after a weekend or a holiday, is within 1.
        within = [n for n, limit in clock.within_limits if waited <= limit]
        for b in buckets:
            b.sent += 1
            b.answered += 1
            for n in within:
                b.within[n] += 1

    def case(self, case: Case | CaseFacts) -> None:
        start, end = self.start, self.end
        if case.last_activity < start:
            return  # every entry is older than the period (cases.py keeps last_activity at the latest)
        clock = self.clock(case)
        inside = self.inside
        if start <= case.opened < end:
            self.opened += 1
        step = 0
        reminder: TimelineEntry | None = None  # the last reminder, not yet answered
        asked: TimelineEntry | None = None  # the engineer's mail the customer has not answered yet
        waiting: TimelineEntry | None = None  # the first customer reply no engineer has answered yet
        replied_in_cycle = False
        last_engineer = case.engineers[0] if case.engineers else ""
        command: TimelineEntry | None = None  # an engineer's command since the last step: `#close` asks
        closure: tuple[datetime, bool] | None = None  # the last closure (when, silent) until a mail reopens
        # Stable sort: the bot's own entries are appended, incoming ones inserted by date (cases.py).
        for e in sorted(case.timeline, key=_DATE):
            kind, role = e.kind, e.role
            if kind in _ENGINEERS_SIDE:  # mail to engineers or leads: counted only
                if start <= e.date < end:
                    self.nudges += kind in NUDGE_KINDS
                    self.escalations += kind in ESCALATION_KINDS
                continue
            if role is _BOT:
                if kind is _REMINDER:
                    if reminder is not None:
                        self.reminder(reminder, step, None, clock)
                    step += 1
                    reminder = e
                elif kind is _CLOSURE:
                    if reminder is not None:
                        self.reminder(reminder, step, None, clock)
                        reminder = None
                    close_asked_by = _asked_to_close(command)
                    silent = not replied_in_cycle and not close_asked_by
                    if inside(e.date):
                        self.closed += 1
                        self.silent += silent
                        by = close_asked_by or last_engineer
                        if by:
                            self.engineer(by).closures += 1
                            self.engineer(by).cases.add(case.key)
                    closure = (e.date, silent)
                if kind is _REMINDER or kind is _CLOSURE:
                    command = None
                continue
            if role is _CUSTOMER and kind is _MAIL and e.direction == "in":  # a customer's real reply
                if reminder is not None:
                    self.reminder(reminder, step, e, clock)
                    reminder = None
                if asked is not None:
                    if start <= e.date < end:
                        self.customer_hours.append(clock.hours_between(asked.date, e.date))
                    asked = None
                if waiting is None:
                    waiting = e
                replied_in_cycle = True
                self._reopen(closure, e)
                closure = None
            elif role is _ENGINEER and kind is _MAIL and not e.internal:  # an engineer's mail to the customer
                if reminder is not None:
                    self.reminder(reminder, step, None, clock)
                    reminder = None
                step, replied_in_cycle = 0, False
                if start <= e.date < end:
                    who = self.engineer(e.from_addr)
                    who.replies += 1
                    who.cases.add(case.key)
                    if waiting is not None:
                        hours = clock.hours_between(waiting.date, e.date)
                        self.engineer_hours.append(hours)
                        who.reply_hours.append(hours)
                waiting = None
                asked = e
                last_engineer = e.from_addr
                self._reopen(closure, e)
                closure = None
            elif role is _ENGINEER and kind is _COMMAND:
                command = e
                if start <= e.date < end:
                    self.engineer(e.from_addr).cases.add(case.key)
            elif role is _ENGINEER and kind is _MAIL and start <= e.date < end:
                self.engineer(e.from_addr).cases.add(case.key)  # an internal note: work on the case
        if reminder is not None:
            self.reminder(reminder, step, None, clock)

    def add(self, other: _Tally) -> None:
        """Take in the counts of another part of the same report's cases (read apart, in parallel): every
        figure is a sum, a union or a percentile of all the values, so the order of the parts changes none."""
        for name in ("opened", "closed", "silent", "reopened", "silent_reopened", "nudges", "escalations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.total.add(other.total)
        for step, b in other.by_step.items():
            self.by_step.setdefault(step, _Bucket()).add(b)
        for mine, theirs in zip((*self.by_weekday, *self.by_hour), (*other.by_weekday, *other.by_hour),
                                strict=True):
            mine.add(theirs)
        self.customer_hours += other.customer_hours
        self.engineer_hours += other.engineer_hours
        for address, e in other.engineers.items():
            self.engineer(address).add(e)

    def __getstate__(self) -> dict[str, Any]:
        # A part's counts travel between processes; the calendar and its clocks stay where they were made.
        return {k: v for k, v in vars(self).items() if k not in ("calendar", "clocks")}

    def _reopen(self, closure: tuple[datetime, bool] | None, e: TimelineEntry) -> None:
        """A mail after a closure reopens the case: counted when the mail is in the period; a silent
        closure in the period that is reopened (whenever) counts towards the silent-close reopen rate."""
        if closure is None:
            return
        when, silent = closure
        self.reopened += self.inside(e.date)
        self.silent_reopened += silent and self.inside(when)

    def result(self) -> dict[str, Any]:
        p = self.period
        steps = sorted(self.by_step.items())
        templates: dict[str, _Bucket] = {}
        for step, b in steps:
            t = templates.setdefault(template_for_step(step), _Bucket())
            t.sent += b.sent
            t.answered += b.answered
            for n in WITHIN_DAYS:
                t.within[n] += b.within[n]
        return {
            "period": {"since": p.since.isoformat(), "until": p.until.isoformat(), "timezone": p.zone.key},
            "cases": {
                "opened": self.opened, "closed": self.closed, "closed_after_silence": self.silent,
                "reopened": self.reopened, "silent_close_rate": rate(self.silent, self.closed),
                "reopened_after_silent_close": self.silent_reopened,
                "silent_close_reopen_rate": rate(self.silent_reopened, self.silent),
            },
            "reminders": {
                **self.total.as_dict(),
                "by_step": [{"step": s, "template": template_for_step(s), **b.as_dict()} for s, b in steps],
                "by_template": [{"template": t, **b.as_dict()} for t, b in templates.items()],
                "by_weekday": [{"weekday": i, "name": WEEKDAYS[i], **b.as_dict()}
                               for i, b in enumerate(self.by_weekday)],
                "by_hour": [{"hour": h, **b.as_dict()} for h, b in enumerate(self.by_hour)],
            },
            "customer_reply_business_hours": hours_summary(self.customer_hours),
            "engineer_reply_business_hours": hours_summary(self.engineer_hours),
            "nudges": self.nudges,
            "escalations": self.escalations,
            "by_engineer": [
                {"address": address, "cases": len(e.cases), "replies": e.replies,
                 "reply_business_hours": hours_summary(e.reply_hours), "closures": e.closures}
                for address, e in sorted(self.engineers.items())
                if e.cases or e.replies or e.closures
            ],
        }


def _asked_to_close(command: TimelineEntry | None) -> str:
    """The engineer whose command mail asked for the closure that follows it (`#close`), or ""."""
    if command is None:
        return ""
    # Read as the bot read it (mailbot.decide.commands), once a cheap look at the top of the mail finds a
    # spelling of `#close` at all: the full reading costs ~50 µs, and many closures follow a command mail.
    head = unicodedata.normalize("NFKC", command.text[:_HEAD]).casefold()
    if not any(word in head for word in _CLOSE_WORDS):
        return ""
    return command.from_addr if any(c.name == "close" for c in find_commands(command.text)) else ""


_DATE = attrgetter("date")


def tally(cases: Iterable[Case | CaseFacts], period: Period, calendar: BusinessCalendar,
          mailbox: str | None = None) -> _Tally:
    """The counts of the report over `cases` (one pass; cases of other mailboxes are skipped): Case models,
    or what the store's `report_cases` reads of them (the same fields by the same names)."""
    counts = _Tally(period, calendar)
    for case in cases:
        if mailbox is not None and getattr(case, "mailbox", "default") != mailbox:
            continue
        counts.case(case)
    return counts


def report_of(parts: Iterable[_Tally], mailbox: str | None = None) -> dict[str, Any]:
    """The INTERFACE.md report from the counts of one or more parts of the cases (`tally`)."""
    first, *rest = parts
    for part in rest:
        first.add(part)
    data = first.result()
    if mailbox is not None:
        data["mailbox"] = mailbox
    return data


def report(cases: Iterable[Case | CaseFacts], period: Period, calendar: BusinessCalendar,
           mailbox: str | None = None) -> dict[str, Any]:
    """The INTERFACE.md report over `cases` (see `tally`)."""
    return report_of([tally(cases, period, calendar, mailbox)], mailbox)
