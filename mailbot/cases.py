"""State transitions of a case when a mail arrives or leaves — pure: the clock comes in as `now`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from mailbot.models import (
    Case,
    CaseStatus,
    EntryKind,
    Flag,
    InboundMail,
    Role,
    TimelineEntry,
)

TEXT_LIMIT = 4000  # a timeline keeps the mail's own words, not whole attachments pasted inline
# Counting by deleting everything else: the same counts as len(findall(...)) at half the cost.
_NOT_CJK = re.compile(r"[^\u3400-\u9fff\uf900-\ufaff]+")
_NOT_LATIN = re.compile(r"[^A-Za-z]+")


def language_of(texts: list[str]) -> str:
    """zh-CN when the thread is mostly CJK: a Chinese character carries about a word, so compare it
    with Latin letters at a discount."""
    cjk = sum(len(_NOT_CJK.sub("", t)) for t in texts)
    latin = sum(len(_NOT_LATIN.sub("", t)) for t in texts)
    return "zh-CN" if cjk and cjk * 4 >= latin else "en"


def entry_kind(mail: InboundMail, has_command: bool) -> EntryKind:
    if Flag.BOUNCE in mail.flags:
        return EntryKind.BOUNCE
    if Flag.AUTO_REPLY in mail.flags or Flag.LIST in mail.flags:
        return EntryKind.AUTO_REPLY
    return EntryKind.COMMAND if has_command else EntryKind.MAIL


def mail_date(mail: InboundMail, now: datetime) -> datetime:
    """The Date header, unless missing or more than a day in the future (a wrong clock): then now."""
    if mail.date is None or mail.date > now + timedelta(days=1):
        return now
    return mail.date


def open_case(key: str, title: str, subject: str, when: datetime, language: str) -> Case:
    return Case(
        key=key,
        title=title,
        subject=subject,
        status=CaseStatus.OPEN,
        language=language,
        opened=when,
        last_activity=when,
    )


def _add(items: tuple[str, ...], *new: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*items, *(n for n in new if n)]))


def record_inbound(
    case: Case,
    mail: InboundMail,
    role: Role,
    kind: EntryKind,
    customers_addressed: tuple[str, ...],
    tokens: tuple[str, ...],
    now: datetime,
    matched_by: str = "",
) -> Case:
    """Add a received mail to the case and move its status.

    An engineer's mail to a customer → waiting on the customer; a customer's real reply → waiting on the
    engineer (and reopens a closed case); auto-replies, bounces and commands change no status here.
    """
    if case.has_message(mail.message_id):
        return case
    when = mail_date(mail, now)
    entry = TimelineEntry(
        message_id=mail.message_id,
        date=when,
        from_addr=mail.from_addr,
        role=role,
        kind=kind,
        direction="out" if role == Role.BOT else "in",
        text=mail.new_text[:TEXT_LIMIT],
        subject=mail.subject,
        matched_by=matched_by,
    )
    timeline = tuple(sorted((*case.timeline, entry), key=lambda e: e.date))
    names = dict(case.contact_names)
    if mail.from_name and mail.from_addr:
        names.setdefault(mail.from_addr, mail.from_name)
    updated = case.with_(
        timeline=timeline,
        last_activity=max(case.last_activity, when),
        tracking_tokens=_add(case.tracking_tokens, *tokens),
        contact_names=tuple(sorted(names.items())),
    )
    if kind == EntryKind.BOUNCE:
        return updated.with_(failed_addresses=_add(case.failed_addresses, *mail.bounced_recipients))
    if kind != EntryKind.MAIL:
        return updated
    if role == Role.ENGINEER:
        updated = updated.with_(engineers=_add(updated.engineers, mail.from_addr))
        if customers_addressed:
            latest = case.last_engineer_mail is None or when >= case.last_engineer_mail
            updated = updated.with_(customers=_add(updated.customers, *customers_addressed))
            if latest and (case.status != CaseStatus.WAITING_VENDOR):
                updated = updated.with_(
                    status=CaseStatus.WAITING_CUSTOMER,
                    last_engineer_mail=when,
                    closure=None,
                )
    elif role == Role.CUSTOMER:
        updated = updated.with_(
            customers=_add(updated.customers, mail.from_addr, *customers_addressed),
            status=CaseStatus.WAITING_ENGINEER,
            next_action=None,
            snoozed_until=None,
            closure=None,
        )
    return updated


def record_outbound(case: Case, kind: EntryKind, message_id: str, text: str, subject: str,
                    sender: str, when: datetime) -> Case:
    """Add a mail the bot sent; a reminder counts, a closure closes the case."""
    if case.has_message(message_id):
        return case
    entry = TimelineEntry(message_id, when, sender, Role.BOT, kind, "out", text[:TEXT_LIMIT], subject)
    updated = case.with_(timeline=(*case.timeline, entry), last_activity=max(case.last_activity, when))
    if kind == EntryKind.REMINDER:
        updated = updated.with_(reminders_sent=case.reminders_sent + 1)
    elif kind == EntryKind.CLOSURE:
        updated = updated.with_(status=CaseStatus.CLOSED, next_action=None)
    return updated


def reminders_in_cycle(case: Case) -> int:
    """Reminders since the engineer's last mail to the customer: each engineer mail starts a new cycle
    (`reminders_sent` counts them all, for people)."""
    return sum(1 for e in case.timeline if e.kind == EntryKind.REMINDER and e.direction == "out"
               and (case.last_engineer_mail is None or e.date >= case.last_engineer_mail))


def last_reminder_at(case: Case) -> datetime | None:
    dates = [e.date for e in case.timeline if e.kind == EntryKind.REMINDER and e.direction == "out"]
    if case.last_engineer_mail is not None:
        dates = [d for d in dates if d >= case.last_engineer_mail]
    return max(dates, default=None)


def last_request(case: Case) -> str:
    """The new text of the engineer's last mail to the customer: what the reminder chases."""
    for e in reversed(case.timeline):
        if e.role == Role.ENGINEER and e.kind == EntryKind.MAIL and e.date == case.last_engineer_mail:
            return e.text
    return ""
