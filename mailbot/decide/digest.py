"""Each business day, one mail per engineer with open cases: what waits on them, what the bot sends in their
name today, what closes soon, what is bounced or on hold — and how to veto it by reply. Pure.

The digest of a day is due from `[digest] at` (local time, the bot's zone) until the day's closing: a bot
that was down at nine sends it when it comes back that day, and not after hours (tomorrow's replaces it).
Its action id names the engineer and the day, so the outbox ledger sends it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

from mailbot.cases import reminders_in_cycle
from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.nudge import unanswered
from mailbot.decide.policy import Policy, SendMail, calendar_for, live_customers, plan_next
from mailbot.models import Case, CaseStatus, DigestInfo, DigestRow, EntryKind

CLOSING_SOON_BUSINESS_DAYS = 3  # "closes soon": the automatic closure falls within this many business days
NO_CASE = "-"  # the case a mail about no single case names in the outbox ledger (render.templates.NO_CASE)


def digest_day(now: datetime, cal: BusinessCalendar, at: time) -> date | None:
    """The local day whose digest is due at `now`, or None: on a business day, from `at` until closing (or
    until midnight when `at` is at or after closing)."""
    local = now.astimezone(cal.zone)
    if not cal.is_workday(local.date()) or local.time() < at:
        return None
    if at < cal.closing <= local.time():
        return None  # the slot passed while the bot was down and the working day is over
    return local.date()


def action_id(engineer: str, day: date) -> str:
    return f"digest/{engineer.lower()}/{day.isoformat()}"


def _local(instant: datetime, cal: BusinessCalendar, clock_only: bool = False) -> str:
    return f"{instant.astimezone(cal.zone):{'%H:%M' if clock_only else '%Y-%m-%d %H:%M'}}"


def rows_for(case: Case, day: date, now: datetime, cal: BusinessCalendar, policy: Policy) -> list[DigestRow]:
    """What one open case contributes to its engineers' digest (each row names its section in `what`)."""
    rows: list[DigestRow] = []
    end_of_day = datetime.combine(day + timedelta(days=1), time(0), tzinfo=cal.zone)
    held = case.snoozed_until is not None and case.snoozed_until > now
    if case.status == CaseStatus.WAITING_ENGINEER and not held:
        replies = unanswered(case)
        since = replies[0].date if replies else case.last_activity
        hours = int(calendar_for(case, policy).business_hours_between(since, now))
        rows.append(DigestRow(case.key, case.title, "waiting", _local(since, cal), hours=hours))
    action = plan_next(case, policy)
    if case.status == CaseStatus.WAITING_CUSTOMER and action is not None:
        if action.due < end_of_day:
            number = reminders_in_cycle(case) + 1 if action.kind == "reminder" else 0
            rows.append(DigestRow(case.key, case.title, "today", _local(max(action.due, now), cal, clock_only=True),
                                  mail=action.kind, number=number, to=", ".join(live_customers(case)[:3])))
        elif action.kind == "closure" and action.due <= cal.add_business_days(now, CLOSING_SOON_BUSINESS_DAYS):
            rows.append(DigestRow(case.key, case.title, "closing", _local(action.due, cal)))
    if case.failed_addresses or case.status == CaseStatus.WAITING_VENDOR or not case.followup_enabled or held:
        rows.append(DigestRow(
            case.key, case.title, "held", bounced=", ".join(case.failed_addresses[:3]),
            vendor=case.status == CaseStatus.WAITING_VENDOR, followup_off=not case.followup_enabled,
            held_until=_local(case.snoozed_until, cal) if held and case.snoozed_until is not None else ""))
    return rows


def _order(r: DigestRow) -> tuple[int, str, str]:
    # Sections in the order the mail shows them; within one, by time (waiting: oldest first) then key.
    return (("waiting", "today", "closing", "held").index(r.what), r.when, r.key)


def digests(cases: Iterable[Case], day: date, now: datetime, cal: BusinessCalendar, policy: Policy) -> list[SendMail]:
    """One digest per engineer of an open case, in [bot] language; an engineer with no open case gets none."""
    per: dict[str, list[DigestRow]] = {}
    counts: dict[str, int] = {}
    for case in cases:
        if case.status == CaseStatus.CLOSED or not case.engineers:
            continue
        rows = rows_for(case, day, now, cal, policy)
        for engineer in dict.fromkeys(e.lower() for e in case.engineers):
            per.setdefault(engineer, []).extend(rows)
            counts[engineer] = counts.get(engineer, 0) + 1
    return [
        SendMail(action_id=action_id(engineer, day), case_key=NO_CASE, kind=EntryKind.DIGEST, template="digest",
                 to=(engineer,),
                 digest=DigestInfo(day.isoformat(), engineer, counts[engineer], tuple(sorted(rows, key=_order))))
        for engineer, rows in sorted(per.items())
    ]
