"""The rules: what is due for a case, when the bot must stay silent, what to tell the engineers — pure.

Nothing here sends, reads a file or asks the clock: it returns SendMail values and updated cases, and the
service carries them out. What each engineer command does is in mailbot.command_specs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from mailbot.cases import last_reminder_at, reminders_in_cycle
from mailbot.config import EngineerSettings, FollowupSettings, NudgeSettings
from mailbot.decide import authres
from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.messages import Message, localized, message
from mailbot.models import (
    Case,
    CaseStatus,
    ClosureFields,
    DigestInfo,
    EntryKind,
    Flag,
    InboundMail,
    NextAction,
    NudgeInfo,
    Role,
)

# The mails that reach customers (and count against their daily cap); every other kind goes to our own people.
TO_CUSTOMERS = frozenset({EntryKind.REMINDER, EntryKind.CLOSURE})


@dataclass(frozen=True)
class Policy:
    followup: FollowupSettings
    calendar: BusinessCalendar
    bot_address: str
    cc_engineers: bool
    trusted_authserv_ids: tuple[str, ...] = ()
    max_recipients: int = 10  # To+Cc of one reminder or closure ([smtp] max_recipients)
    engineers: EngineerSettings = EngineerSettings((), ())  # never customers (`#add` refuses them)
    # What a mail does on arrival (mailbot.decide.inbound): who may open a case ([cases] opened_by), the language
    # of a new case ([bot] language), the CRM token pattern, the bot's zone (an out-of-office's dates).
    opened_by: str = "engineer"
    language: str = "zh-CN"
    tracking_token: re.Pattern[str] | None = None
    zone: ZoneInfo | None = None  # None: the calendar's
    daily_cap: int = 3  # reminders and closures per recipient per local day ([smtp] max_per_recipient_per_day)
    nudge: NudgeSettings = NudgeSettings(0, 0, ())  # [nudge]; off unless configured (mailbot.decide.nudge)
    # The engineers' side's rules (mailbot.decide.nudge: `plan_nudge`, `nudges_due`), given by whoever builds
    # the policy (service.make_policy): nudge.py builds on this module, so this module cannot import it.
    plan_nudge: Callable[[Case, Policy], NextAction | None] | None = None
    nudges_due: Callable[[Case, datetime, Policy], list[SendMail]] | None = None
    case_patterns: tuple[re.Pattern[str], ...] = ()  # [cases] patterns: a command line may name its case
    mailbox: str = "default"  # the mailbox this policy works: the cases it opens belong to it
    # The addresses of the deployment's other mailboxes ([mailboxes.NAME] address): the bot too, never a party.
    sibling_addresses: frozenset[str] = frozenset()

    @cached_property  # asked for each address of each mail (a frozen dataclass keeps it in its __dict__)
    def bot_addresses(self) -> frozenset[str]:
        """Every address that is the bot (lower case): its own and its other mailboxes'."""
        return self.sibling_addresses | {self.bot_address.lower()}


@dataclass(frozen=True)
class Outcome:
    """What one command did, for the receipt; `action_id` names the mail it asked for (a closure, a
    reminder), so that the receipt can say when that mail really goes out."""

    raw: str
    ok: bool
    message: Message
    action_id: str = ""


@dataclass(frozen=True)
class Receipt:
    command: str
    ok: bool
    message: str
    details: tuple[str, ...] = ()
    # "command": the answer to an engineer's own command (template `receipt`). A notice to the case's
    # engineers about something else (template `notice`): "refused" (someone else's command), "forged"
    # (a mail claiming an engineer failed authentication), "bounce" (a customer's address bounced),
    # "undeliverable" (the server refused a mail for good), "ooo" (an out-of-office moved a reminder far),
    # "outsider" (someone who is not a party wrote into the case; `outsider_notice`).
    # For "refused" and "forged", `details` are the sender's words as inert quoted lines (`quote_inert`).
    kind: str = "command"
    outcomes: tuple[Outcome, ...] = ()  # a receipt's first len(outcomes) details, one per command


@dataclass(frozen=True)
class SendMail:
    """A mail to render and send. `action_id` is deterministic: deciding twice yields the same id."""

    action_id: str
    case_key: str
    kind: EntryKind  # REMINDER | CLOSURE | RECEIPT | NUDGE | ESCALATION | DIGEST
    template: str  # reminder | reminder2 | closure | receipt | notice | nudge | escalation | digest
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    reminder_number: int = 0
    closure: ClosureFields | None = None
    default_closure: bool = False
    receipt: Receipt | None = None
    in_reply_to: str | None = None  # receipts answer the command mail itself
    left_out: tuple[str, ...] = ()  # customers the recipient cap kept off this mail (noted on the case)
    nudge: NudgeInfo | None = None  # a nudge or an escalation: the replies that wait
    digest: DigestInfo | None = None  # an engineer's daily digest


# --- who may be answered (RFC 3834 §2: never answer automatic mail) --------------------------------


def reason_not_to_answer(mail: InboundMail, role: Role) -> str | None:
    """Why the bot must not send anything in answer to this mail, or None when it may."""
    if role == Role.BOT:
        return "mail from the bot itself"
    if Flag.BOUNCE in mail.flags:
        return "a bounce (RFC 3464)"
    if Flag.AUTO_REPLY in mail.flags:
        return "an automatic reply (RFC 3834)"
    if Flag.LIST in mail.flags:
        return "mailing-list or bulk mail"
    # A null Return-Path (RFC 5321 §4.5.5) and mailer-daemon/postmaster senders are read once, by the parser
    # (`parse.flags`): they arrive here as BOUNCE or AUTO_REPLY.
    if not mail.from_addr:
        return "no sender address"
    return None


def authentication_failed(mail: InboundMail, trusted: tuple[str, ...]) -> str | None:
    """RFC 8601: only Authentication-Results added by our own receiving server (its authserv-id) count;
    any other such header may have been written by the sender. mailbot.decide.authres reads them by the grammar
    and asks for a DKIM or DMARC pass aligned with the one From domain. No trusted server configured:
    nothing to check (None)."""
    if not trusted:
        return None
    if mail.from_count != 1:
        return f"no DKIM/DMARC pass: {mail.from_count} From addresses, not one"
    return authres.verdict(mail.authentication_results, trusted, mail.from_addr.rpartition("@")[2])


# --- reminders and closure ------------------------------------------------------------------------


def calendar_for(case: Case | None, policy: Policy) -> BusinessCalendar:
    """Business days and hours in the case's timezone (default: the bot's)."""
    zone = policy.calendar.zone if case is None else case.zone(policy.calendar.zone)
    return policy.calendar if zone.key == policy.calendar.zone.key else replace(policy.calendar, zone=zone)


def live_customers(case: Case) -> tuple[str, ...]:
    return tuple(c for c in case.customers if c not in case.failed_addresses)


def plan_next(case: Case, policy: Policy) -> NextAction | None:
    """The next reminder or closure for a case waiting on its customer, or the next nudge or escalation for
    one waiting on its engineer (mailbot.decide.nudge); None when nothing is due. The two never overlap
    (they wait on different people), so one planned action per case serves both."""
    if case.status == CaseStatus.WAITING_ENGINEER:
        return policy.plan_nudge(case, policy) if policy.plan_nudge is not None else None
    f = policy.followup
    if (
        case.status != CaseStatus.WAITING_CUSTOMER
        or not case.followup_enabled
        or case.last_engineer_mail is None
        or not live_customers(case)
    ):
        return None
    cal = calendar_for(case, policy)
    sent = reminders_in_cycle(case)
    previous = last_reminder_at(case)
    if sent < f.max_reminders:
        base, days, kind = (previous, f.every_business_days, "reminder") if sent and previous else (
            case.last_engineer_mail, f.first_after_business_days, "reminder")
    else:
        base, days, kind = previous or case.last_engineer_mail, f.close_after_business_days, "closure"
    due = cal.add_business_days(base, days)
    if case.snoozed_until is not None and due < case.snoozed_until:
        due = cal.into_working_hours(case.snoozed_until)
    return NextAction(kind, due)


def replan_from(case: Case, now: datetime, policy: Policy) -> Case | None:
    """For imported history: a follow-up that fell due in the past is not sent; it starts counting again
    from `now`. Returns the re-planned case, or None when nothing was overdue."""
    action = plan_next(case, policy)
    if action is not None and action.due <= now and action.kind in ("nudge", "escalation"):
        # A reply in the imported history that nobody answered there: no nudge about the past. The hold
        # counts as the engineers' acknowledgement (mailbot.decide.nudge); the customer's next reply clears it.
        held = case.with_(snoozed_until=now)
        return held.with_(next_action=plan_next(held, policy))
    if case.status != CaseStatus.WAITING_CUSTOMER or action is None or action.due > now:
        return None
    hold = calendar_for(case, policy).add_business_days(now, policy.followup.first_after_business_days)
    held = case.with_(snoozed_until=hold)
    return held.with_(next_action=plan_next(held, policy))


def customer_slots(case: Case, policy: Policy) -> int:
    """How many customers one mail may go To under the cap: the engineers keep their Cc when they can,
    and at least one customer is always addressed."""
    engineers = [e for e in case.engineers if e not in live_customers(case)] if policy.cc_engineers else []
    return max(1, policy.max_recipients - len(engineers))


def _recipients(case: Case, policy: Policy) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(To, Cc, left out): never more than `max_recipients` addresses. `customers` is kept in priority
    order (the engineers' most recent To first), so the cut is deterministic and spares them."""
    customers = live_customers(case)
    slots = customer_slots(case, policy)
    to, left_out = customers[:slots], customers[slots:]
    engineers = tuple(e for e in case.engineers if e not in customers) if policy.cc_engineers else ()
    return to, engineers[: max(0, policy.max_recipients - len(to))], left_out


def _cycle(case: Case) -> str:
    # One reminder cycle per engineer mail: a new engineer mail starts the count again.
    return case.last_engineer_mail.isoformat() if case.last_engineer_mail else "none"


def reminder(case: Case, policy: Policy, reason: str = "due") -> SendMail:
    number = reminders_in_cycle(case) + 1
    to, cc, left_out = _recipients(case, policy)
    return SendMail(
        action_id=f"{case.key}/reminder/{number}/{_cycle(case)}/{reason}",
        case_key=case.key,
        kind=EntryKind.REMINDER,
        template="reminder" if number == 1 else "reminder2",
        to=to,
        cc=cc,
        reminder_number=number,
        left_out=left_out,
    )


def closure(case: Case, policy: Policy, fields: ClosureFields | None, action_suffix: str) -> SendMail:
    to, cc, left_out = _recipients(case, policy)
    return SendMail(
        action_id=f"{case.key}/closure/{action_suffix}",
        case_key=case.key,
        kind=EntryKind.CLOSURE,
        template="closure",
        to=to,
        cc=cc,
        closure=fields or ClosureFields(),
        default_closure=fields is None or not (fields.problem or fields.analysis or fields.summary),
        left_out=left_out,
    )


def note_cap(case: Case, policy: Policy, now: datetime) -> Case:
    """When the case has more customers than one mail may carry, say on the case who is left out of its
    reminders and closure (once per change, not on every mail)."""
    _, _, left_out = _recipients(case, policy)
    if not left_out:
        return case
    note = (f"recipient cap ([smtp] max_recipients = {policy.max_recipients}): reminders and the closure "
            f"leave out {', '.join(left_out)}")
    previous = [n for n in case.notes if "recipient cap ([smtp] max_recipients" in n]
    if previous and previous[-1].endswith(note):
        return case
    return case.with_(notes=(*case.notes, f"{now.isoformat()} {note}"))


def shown_address(address: str) -> str:
    """An address as a notice shows it: anything beyond printable ASCII as a `\\uXXXX` escape, so that
    `yang@cust\\u043emer.example` (Cyrillic о) or an address ending in a zero-width space never reads
    as the customer's or an engineer's own address (an engineer must not `#add` a look-alike)."""
    return "".join(c if " " < c < "\x7f" else f"\\u{ord(c):04x}" for c in address)


def outsider_notice(case: Case, address: str, subject: str) -> SendMail | None:
    """ONE notice to the case's engineers when someone who is not a party writes into the case (by its
    key, its thread or its CRM token): they get nothing from the bot until an engineer includes them.
    The action id names the address, so a second mail from them sends nothing new."""
    if not case.engineers or not address:
        return None
    why = message("outsider", address=shown_address(address))
    return SendMail(
        action_id=f"{case.key}/outsider/{address}", case_key=case.key, kind=EntryKind.RECEIPT,
        template="notice", to=case.engineers,
        # Their subject is their words: shown defanged (no live link in a mail to engineers).
        receipt=Receipt("", False, localized(why, False, case.effective_language), (defang(subject[:200]),),
                        kind="outsider"),
    )


# Notices about strangers (someone new wrote in, a refused command, a forged engineer mail) are one per
# sender, but senders are free: 202 addresses made 202 notices. Per case and local day at most this many,
# then one summary; the rest is on the case's timeline, outsiders list and notes.
STRANGER_NOTICES_PER_DAY = 5
_STRANGER_KINDS = ("outsider", "refused", "forged")


def bound_stranger_notices(case: Case, sends: list[SendMail], known: set[str], now: datetime,
                           policy: Policy) -> tuple[Case, list[SendMail]]:
    """Keep at most STRANGER_NOTICES_PER_DAY new notices about strangers per case and day, then one
    summary; the notes of the case count them (`known`: action ids the outbox already holds — a notice
    sent before is not a new one)."""
    day = now.astimezone(calendar_for(case, policy).zone).date().isoformat()
    mark = f"notice to the engineers ({day}):"
    count = sum(1 for n in case.notes if mark in n)
    kept: list[SendMail] = []
    for send in sends:
        r = send.receipt
        if r is None or r.kind not in _STRANGER_KINDS or send.action_id in known:
            kept.append(send)
            continue
        if count < STRANGER_NOTICES_PER_DAY:
            kept.append(send)
        elif count == STRANGER_NOTICES_PER_DAY:
            why = message("strangers.summary", limit=STRANGER_NOTICES_PER_DAY, key=case.key)
            kept.append(replace(send, action_id=f"{case.key}/strangers/{day}", in_reply_to=None,
                                receipt=Receipt("", False, localized(why, False, case.effective_language), (),
                                                kind="outsider")))
        else:
            continue
        count += 1
        case = case.with_(notes=(*case.notes, f"{now.isoformat()} {mark} no. {count}"))
    return case, kept


def due_now(case: Case, now: datetime, policy: Policy) -> list[SendMail]:
    """What must go out for this case at `now`: the next step of its follow-up (one mail), or the nudge and
    escalation whose time has come."""
    if case.status == CaseStatus.WAITING_ENGINEER:
        return policy.nudges_due(case, now, policy) if policy.nudges_due is not None else []
    action = plan_next(case, policy)
    if action is None or action.due > now:
        return []
    # Overdue after downtime: a customer gets follow-ups only in working hours on a business day, so a
    # bot that comes back on Sunday night waits for Monday's opening.
    if not calendar_for(case, policy).in_working_hours(now):
        return []
    if action.kind == "reminder":
        return [reminder(case, policy)]
    return [closure(case, policy, None, f"auto/{_cycle(case)}")]


# A notice quotes what an outsider wrote so the engineers can judge it, but nothing in it may work as a
# link or an address in their mail client: a forged mail's text is exactly where phishing would sit.
QUOTE_LINES = 6
QUOTE_WIDTH = 160
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")  # bidi and zero-width controls
_SCHEME = re.compile(r"(?i)\bh(?:tt|xx)p(s?)")
_DOT = re.compile(r"(?<=[^\W_])\.(?=[^\W_])")  # a dot between letters or digits: host names, file names


def defang(line: str) -> str:
    """`https://evil.example/x` → `hxxps[:]//evil[.]example/x`, `a@b.example` → `a[@]b[.]example`: the
    usual defanged form, which no mail client turns into a link."""
    line = _INVISIBLE.sub("", line)
    line = _SCHEME.sub(lambda m: "hxxp" + m.group(1), line)
    return _DOT.sub("[.]", line.replace("://", "[:]//").replace("@", "[@]"))


def quote_inert(text: str, lines: int = QUOTE_LINES, width: int = QUOTE_WIDTH) -> tuple[str, ...]:
    """The first lines of a text as `> ` quoted, defanged lines, each cut to `width` characters."""
    rows = [r.rstrip() for r in text.strip("\n").splitlines()[: lines + 1]]
    shown = [r if len(r) <= width else r[: width - 1] + "…" for r in rows[:lines]]
    quoted = tuple(("> " + defang(r)) if r else ">" for r in shown)
    return (*quoted, "> […]") if len(rows) > lines else quoted


def sender_notice(case: Case, mail: InboundMail, reason: Message, kind: str, now: datetime,
                  policy: Policy) -> SendMail:
    """A notice to the case's engineers about what a sender tried ("refused": a command they may not
    give; "forged": a mail that claims an engineer and failed authentication). Its id names the sender,
    the case and the local day: the outbox ledger sends each id once, so one notice per day at most."""
    day = now.astimezone(calendar_for(case, policy).zone).date().isoformat()
    sender = mail.from_addr.lower() or "unknown"
    return SendMail(
        action_id=f"{case.key}/{kind}/{sender}/{day}", case_key=case.key, kind=EntryKind.RECEIPT,
        template="notice", to=case.engineers, in_reply_to=mail.message_id,
        receipt=Receipt("", False, localized(reason.replacing(mail.from_addr, shown_address(mail.from_addr))
                                             if mail.from_addr else reason, False, case.effective_language),
                        quote_inert(mail.new_text), kind=kind),
    )
