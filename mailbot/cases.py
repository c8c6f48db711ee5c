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


def open_case(key: str, title: str, subject: str, when: datetime, language: str,
              customers: tuple[str, ...] = ()) -> Case:
    """A new case; `customers` are its first parties (the opener, when a customer may open cases)."""
    return Case(
        key=key,
        title=title,
        subject=subject,
        status=CaseStatus.OPEN,
        language=language,
        opened=when,
        last_activity=when,
        customers=customers,
    )


def _add(items: tuple[str, ...], *new: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*items, *(n for n in new if n)]))


# --- who is a party, and what a customer may see: the one place that decides both --------------------


def is_party(case: Case, address: str) -> bool:
    """A party is a customer an engineer included: someone in To/Cc of an engineer's mail, or `#add`ed.
    Writing into a case (by its key, its thread or a guessable CRM token) does not make anyone a party."""
    return bool(address) and address.lower() in (c.lower() for c in case.customers)


def is_outsider(case: Case, address: str, role: Role) -> bool:
    """A non-engineer who is not a party: their mail is recorded, nothing else (no status change, no
    reopening, no reminders to them)."""
    return role not in (Role.ENGINEER, Role.BOT) and not is_party(case, address)


def reaches_customer(entry: TimelineEntry) -> bool:
    """Whether the customers already received this entry, so that a mail to them may quote or list it:
    an engineer's mail with a customer in To/Cc, a party's own mail, the bot's reminders and closures.
    Never an internal note, a command, a receipt, an outsider's mail, an auto-reply or a bounce."""
    if entry.internal:
        return False
    if entry.role == Role.BOT:
        return entry.kind in (EntryKind.REMINDER, EntryKind.CLOSURE)
    return entry.role in (Role.ENGINEER, Role.CUSTOMER) and entry.kind == EntryKind.MAIL


def include(case: Case, *addresses: str) -> Case:
    """Make addresses parties (they are no longer outsiders)."""
    added = {a.lower() for a in addresses}
    return case.with_(customers=_add(case.customers, *addresses),
                      outsiders=tuple(o for o in case.outsiders if o.lower() not in added))


def exclude(case: Case, *addresses: str) -> Case:
    gone = {a.lower() for a in addresses}
    return case.with_(customers=tuple(c for c in case.customers if c.lower() not in gone))


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

    An engineer's mail to customers makes them parties (To first: the most recent To comes first in
    `customers`, which is the order reminders pick under the recipient cap) and waits on the customer;
    an engineer's mail to no customer is an internal note. A party's real reply → waiting on the engineer
    (and reopens a closed case). An outsider's mail is recorded under role `other` and changes nothing
    else: not the status, not the reminders, not the case's tokens. Auto-replies, bounces and commands
    change no status here.
    """
    if case.has_message(mail.message_id):
        return case
    when = mail_date(mail, now)
    outsider = is_outsider(case, mail.from_addr, role)
    entry = TimelineEntry(
        message_id=mail.message_id,
        date=when,
        from_addr=mail.from_addr,
        role=Role.OTHER if outsider else role,
        kind=kind,
        direction="out" if role == Role.BOT else "in",
        text=mail.new_text[:TEXT_LIMIT],
        subject=mail.subject,
        matched_by=matched_by,
        internal=role == Role.ENGINEER and kind == EntryKind.MAIL and not customers_addressed,
    )
    timeline = tuple(sorted((*case.timeline, entry), key=lambda e: e.date))
    names = dict(case.contact_names)
    # A display name is the sender's own words: an outsider's (or a forged engineer mail's) must not become
    # the name that signs the reminders ("<name> via casebot") or greets the customer.
    if mail.from_name and mail.from_addr and not outsider:
        names.setdefault(mail.from_addr, mail.from_name)
    updated = case.with_(
        timeline=timeline,
        last_activity=max(case.last_activity, when),
        # A guessed token in an outsider's subject must not become a way into the case.
        tracking_tokens=case.tracking_tokens if outsider else _add(case.tracking_tokens, *tokens),
        contact_names=tuple(sorted(names.items())),
    )
    if kind == EntryKind.BOUNCE:
        # Recorded only: whether it marks an address as failed needs the store (is it a real report about
        # a mail the bot sent?), so the store is asked and mailbot.decide.inbound decides (_bounce_effect).
        return updated
    if outsider:
        if kind in (EntryKind.MAIL, EntryKind.COMMAND) and mail.from_addr:
            return updated.with_(outsiders=_add(case.outsiders, mail.from_addr))
        return updated
    if kind != EntryKind.MAIL:
        return updated
    if role == Role.ENGINEER:
        updated = updated.with_(engineers=_add(updated.engineers, mail.from_addr))
        if customers_addressed:
            latest = case.last_engineer_mail is None or when >= case.last_engineer_mail
            updated = include(updated, *customers_addressed)
            if latest:
                # This mail's To and Cc first: when the cap leaves someone out, it is not them.
                updated = updated.with_(customers=_add(customers_addressed, *updated.customers))
            if latest and (case.status != CaseStatus.WAITING_VENDOR):
                updated = updated.with_(
                    status=CaseStatus.WAITING_CUSTOMER,
                    last_engineer_mail=when,
                    closure=None,
                )
    elif role == Role.CUSTOMER:
        # A party's reply: its Cc list is not taken in (one mail once added 202 recipients).
        updated = updated.with_(
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
        updated = closed(updated)
    return updated


def closed(case: Case) -> Case:
    """The case closed: what "closed" means, in one place (no next step is planned for a closed case)."""
    return case.with_(status=CaseStatus.CLOSED, next_action=None)


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
    """The new text of the engineer's last mail to the customer: what the reminder chases (never an
    internal note that happens to carry the same date)."""
    for e in reversed(case.timeline):
        if (e.role == Role.ENGINEER and e.kind == EntryKind.MAIL and e.date == case.last_engineer_mail
                and reaches_customer(e)):
            return e.text
    return ""
