"""What one mail does, decided in one pure function: it opens, threads or stays unmatched; the case as it
becomes; the mails to send, the held mail to cancel and the lines to log (`decide_mail`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbot.cases import entry_kind, is_outsider, is_party, language_of, mail_date, open_case, record_inbound
from mailbot.decide.command_specs import Command
from mailbot.decide.commands import apply_commands, apply_named, find_commands, named_key
from mailbot.decide.messages import Message, localized, message
from mailbot.decide.ooo import return_date
from mailbot.decide.policy import (
    Policy,
    Receipt,
    SendMail,
    authentication_failed,
    bound_stranger_notices,
    calendar_for,
    note_cap,
    outsider_notice,
    plan_next,
    sender_notice,
)
from mailbot.decide.roles import role_of, sender_role
from mailbot.match import find_tokens, strip_prefixes, title_of
from mailbot.models import Case, CaseMatch, CaseStatus, EntryKind, InboundMail, Role

# --- what the store knows, asked before deciding --------------------------------------------------


@dataclass(frozen=True)
class HeldMail:
    """An outbox entry of the case that waits for a later opening (held by the daily cap)."""

    action_id: str
    message_id: str
    kind: str  # an EntryKind value, as the ledger holds it


@dataclass(frozen=True)
class Facts:
    """What the store knows that the decision needs; the service gathers it before deciding."""

    # (Message-ID, case key) of the bot's own outgoing mail among the ids a bounce returns (`returned_ids`).
    outgoing: tuple[tuple[str, str], ...] = ()
    # Action ids the outbox ledger already holds, among those a first decision asked about (`Decision.asked`).
    known_actions: frozenset[str] = frozenset()
    # The case's held mail, oldest first; none when importing history (nothing was held then).
    held: tuple[HeldMail, ...] = ()
    # A mail whose subject names no case: the cases its command lines name (`#skip CAS-…`), as the store has
    # them, and their held mail (`commands.named_keys` says which to load).
    named: Mapping[str, Case] = field(default_factory=dict)
    named_held: Mapping[str, tuple[HeldMail, ...]] = field(default_factory=dict)


def returned_ids(mail: InboundMail) -> tuple[str, ...]:
    """The Message-IDs a delivery report is about: the returned message's own comes first; In-Reply-To
    and References follow, and may name a mail of the bot's that this report is not about."""
    return mail.bounced_message_ids[:1]


# --- what the mail comes to -----------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """The mail opened this case (and is its first entry)."""

    key: str
    title: str


@dataclass(frozen=True)
class Threaded:
    """The mail joined this existing case."""

    key: str


@dataclass(frozen=True)
class Unmatched:
    """No case takes the mail: it is listed as unmatched, for this reason."""

    reason: str


Landing = Opened | Threaded | Unmatched


@dataclass(frozen=True)
class Event:
    """A line for the log (the service masks it)."""

    key: str | None
    text: str
    level: int = logging.INFO


@dataclass(frozen=True)
class Cancellation:
    """A held outbox entry to take off the ledger: it must not go out after what this mail says."""

    action_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    lands: Landing
    case: Case | None  # the case as the mail leaves it, before its sends are recorded; None when unmatched
    role: Role  # the sender's, after a forged engineer mail is downgraded
    sends: tuple[SendMail, ...] = ()
    cancellations: tuple[Cancellation, ...] = ()
    events: tuple[Event, ...] = ()
    # RFC 8601: "pass", why an engineer's mail failed, or None when not checked (not an engineer, or no
    # trusted server set).
    authentication: str | None = None
    # The action ids this decision took for new (not in `Facts.known_actions`); if the ledger holds any,
    # decide again with them known: a notice sent before does not count against today's bound.
    asked: tuple[str, ...] = ()
    # Other cases the mail's command lines changed (a digest reply: `#skip CAS-…`), with their next step.
    named: tuple[Case, ...] = ()


def unmatched_reason(key: str | None, automatic: bool) -> str:
    if not key:
        return "no case key and no known thread"
    if automatic:
        return "automatic mail for an unknown case"
    return (f"case key {key} is not in use, and only an engineer's mail opens a case "
            '([cases] opened_by = "engineer")')


def decide_mail(case: Case | None, mail: InboundMail, found: CaseMatch, facts: Facts, policy: Policy,
                now: datetime) -> Decision:
    """Everything one new mail does. `case` is the stored case `found.key` names (None if none)."""
    role = sender_role(mail, policy.engineers, policy.bot_addresses)
    # With [security] trust_authentication_results set, a mail that claims an engineer must prove it
    # (RFC 8601, our own server's verdict), with or without a command: one that fails is an outsider's
    # — it runs no command, adds no recipient, is never quoted to a customer — and the engineers are told.
    authentication = None
    if role == Role.ENGINEER and policy.trusted_authserv_ids:
        authentication = authentication_failed(mail, policy.trusted_authserv_ids) or "pass"
    forged = authentication if authentication != "pass" else None
    if forged:
        role = Role.OTHER
    commands = find_commands(mail.new_text) if role != Role.BOT else []
    kind = entry_kind(mail, bool(commands))
    automatic = bool(mail.flags)
    events: list[Event] = []
    lands: Landing | None = None
    # `[cases] opened_by = "engineer"`: nobody else can squat an unused key (and set its title).
    may_open = role == Role.ENGINEER or policy.opened_by == "anyone"
    if found.key and case is None and not automatic and may_open:
        title = title_of(mail.subject, found.key, policy.tracking_token)
        # A customer who may open a case is its first party; nobody on their Cc is.
        case = open_case(found.key, title, strip_prefixes(mail.subject), mail_date(mail, now),
                         policy.language, (mail.from_addr,) if role == Role.CUSTOMER else ())
        case = case.with_(mailbox=policy.mailbox)  # a case belongs to the mailbox that opened it
        lands = Opened(found.key, title)
        events.append(Event(found.key, f"opened case: {title}"))
    if case is None:
        return _unmatched(mail, role, commands, unmatched_reason(found.key, automatic), authentication,
                          policy, now, facts)
    outsiders_before = case.outsiders
    customers = tuple(a for a in (*mail.to, *mail.cc)
                      if role_of(a, policy.engineers, policy.bot_addresses) == Role.CUSTOMER)
    before = case.status
    case = record_inbound(case, mail, role, kind, customers, find_tokens(mail.subject, policy.tracking_token),
                          now, found.rule.value if found.rule else "")
    # The thread's recent human mail decides; the whole history would be re-read on every mail.
    case = case.with_(language=language_of([e.subject + "\n" + e.text for e in case.timeline[-12:]
                                            if e.role in (Role.ENGINEER, Role.CUSTOMER)]))
    sends: list[SendMail] = []
    cancellations: list[Cancellation] = []
    if forged:
        case, sends = _forged(case, mail, forged, now, policy, events)
    elif commands:
        updated, sends = apply_commands(case, mail, role, commands, now, policy, case.effective_language)
        case = updated or case
        cancellations.extend(_cancel_skipped(case, facts.held, events))
        case = _cancel_on_closure(case, facts.held, sends, now, cancellations, events)
    if (role == Role.CUSTOMER and kind == EntryKind.MAIL and is_outsider(case, mail.from_addr, role)
            and mail.from_addr not in outsiders_before):
        # Someone new wrote in (by key, thread or a guessed CRM token): recorded, no status change, and
        # the engineers hear of it once; the writer gets nothing until an engineer includes them.
        events.append(Event(case.key, f"{mail.from_addr} wrote in and is not a party: recorded only"))
        sends.extend(n for n in [outsider_notice(case, mail.from_addr, mail.subject)] if n is not None)
    # Senders are free: notices about strangers are bounded per case and day, then one summary.
    asked = tuple(s.action_id for s in sends if s.action_id not in facts.known_actions)
    case, sends = bound_stranger_notices(case, sends, set(facts.known_actions), now, policy)
    case = note_cap(case, policy, now)
    if (kind == EntryKind.AUTO_REPLY and role == Role.CUSTOMER and is_party(case, mail.from_addr)
            and case.status == CaseStatus.WAITING_CUSTOMER):
        case, ooo_notices = _hold_for_out_of_office(case, mail, now, policy, events)
        sends.extend(ooo_notices)
    if kind == EntryKind.BOUNCE:
        failed, no_effect = _bounce_effect(case, mail, facts)
        if failed:
            case = case.with_(failed_addresses=tuple(dict.fromkeys((*case.failed_addresses, *failed))))
            sends.extend(_bounce_notices(case, mail, failed))
        else:
            events.append(Event(case.key, f"bounce {mail.message_id} recorded, without effect: {no_effect}"))
    if kind == EntryKind.MAIL and role == Role.CUSTOMER:
        case = _cancel_held(case, mail, facts, now, cancellations, events)
    if case.status != CaseStatus.CLOSED:
        case = case.with_(next_action=plan_next(case, policy))
    how = found.rule.value if found.rule else "new"
    events.append(Event(case.key, f"{kind.value} from {mail.from_addr or '?'} ({role.value}) by {how}; "
                                  f"status {before.value} → {case.status.value}"))
    return Decision(lands or Threaded(case.key), case, role, tuple(sends), tuple(cancellations), tuple(events),
                    authentication, asked)


def _unmatched(mail: InboundMail, role: Role, commands: list[Command], reason: str, authentication: str | None,
               policy: Policy, now: datetime, facts: Facts) -> Decision:
    sends: list[SendMail] = []
    events = [Event(None, f"unmatched {mail.message_id} from {mail.from_addr or '?'}: {reason}")]
    named: list[Case] = []
    cancellations: list[Cancellation] = []
    naming = any(named_key(c, policy.case_patterns) for c in commands)
    if naming and role != Role.ENGINEER:
        # A veto is an engineer's: anyone else's is refused without an answer (never answer a stranger).
        events.append(Event(None, f"commands naming cases from {mail.from_addr or '?'} ({role.value}) refused: "
                                  "not an engineer", logging.WARNING))
    elif naming:
        # A digest reply (or any mail whose subject names no case): each line acts on the case it names.
        changed, sends = apply_named(facts.named, mail, role, commands, now, policy, policy.language)
        for key, case in changed.items():
            cancellations.extend(_cancel_skipped(case, facts.named_held.get(key, ()), events))
            case = _cancel_on_closure(case, facts.named_held.get(key, ()), sends, now, cancellations, events)
            planned = case if case.status == CaseStatus.CLOSED else case.with_(next_action=plan_next(case, policy))
            named.append(planned.with_(notes=(*planned.notes, f"{now.isoformat()} {mail.from_addr}: "
                                                               f"{'; '.join(c.raw for c in commands)[:300]}")))
            events.append(Event(key, f"commands from {mail.from_addr} ({mail.message_id}) carried out"))
    elif commands and role == Role.ENGINEER:
        # No case: the receipt answers the engineer all the same (it says the case was not found).
        _, sends = apply_commands(None, mail, role, commands, now, policy, policy.language)
    return Decision(Unmatched(reason), None, role, tuple(sends), tuple(cancellations), tuple(events),
                    authentication=authentication, named=tuple(named))


def _cancel_skipped(case: Case, held: tuple[HeldMail, ...], events: list[Event]) -> list[Cancellation]:
    """A held reminder that a command (`#skip`) took off the case's timeline: its outbox entry must not go out."""
    on_timeline = {e.message_id for e in case.timeline}
    gone = [h for h in held if h.kind == EntryKind.REMINDER.value and h.message_id not in on_timeline]
    for h in gone:
        events.append(Event(case.key, f"held {h.kind} {h.message_id} cancelled: skipped by an engineer"))
    return [Cancellation(h.action_id, "skipped by an engineer (#skip)") for h in gone]


def _forged(case: Case, mail: InboundMail, why: str, now: datetime, policy: Policy,
            events: list[Event]) -> tuple[Case, list[SendMail]]:
    """A mail that claims an engineer and failed authentication: noted on the case, and one notice a
    day per sender tells the case's engineers (it quotes the mail inert: no link survives)."""
    sender = mail.from_addr or "an unknown sender"
    events.append(Event(case.key, f"mail {mail.message_id} claims {sender} but failed authentication: {why}",
                        logging.WARNING))
    case = case.with_(notes=(*case.notes, f"{now.isoformat()} refused: mail from {sender} failed "
                                          f"authentication ({why})"))
    if not case.engineers:
        return case, []
    reason = message("forged", sender=sender, why=why)
    return case, [sender_notice(case, mail, reason, "forged", now, policy)]


def _hold_for_out_of_office(case: Case, mail: InboundMail, now: datetime, policy: Policy,
                            events: list[Event]) -> tuple[Case, list[SendMail]]:
    """Hold reminders until the customer is back — at most `max_out_of_office_days` after the reply
    (a typo, `back on 2031-04-14`, must not silence a case for years), and never shorter than a hold an
    engineer set. When that moves the next reminder by more than a week, the engineers are told once."""
    sent = mail_date(mail, now).astimezone(policy.zone or policy.calendar.zone).date()
    back = return_date(mail.new_text, sent)
    if back is None:
        return case, []
    limit = policy.followup.max_out_of_office_days
    capped = back > sent + timedelta(days=limit)
    cal = calendar_for(case, policy)
    until = cal.first_opening(cal.next_workday(min(back, sent + timedelta(days=limit))))
    if case.snoozed_until is not None and case.snoozed_until >= until:
        return case, []  # an engineer's own hold (`#snooze`) is longer: it stands
    local = f"{until.astimezone(cal.zone):%Y-%m-%d %H:%M}"
    events.append(Event(case.key, f"out-of-office until {back}: reminders held until {local}"
                                  + (f" (at most {limit} days)" if capped else "")))
    before = plan_next(case, policy)
    held = case.with_(snoozed_until=until)
    after = plan_next(held, policy)
    if before is None or after is None or after.due - before.due <= timedelta(days=7) or not case.engineers:
        return held, []
    why = message("ooo.held_capped" if capped else "ooo.held", back=back, limit=limit, until=local,
                  before=f"{before.due.astimezone(cal.zone):%Y-%m-%d %H:%M}",
                  after=f"{after.due.astimezone(cal.zone):%Y-%m-%d %H:%M}")
    return held, [_notice(case, f"ooo/{until.astimezone(cal.zone).date().isoformat()}", why, mail.subject, "ooo")]


def _notice(case: Case, suffix: str, why: Message, subject: str, kind: str) -> SendMail:
    """A notice to the case's engineers about the mail with this subject."""
    return SendMail(
        action_id=f"{case.key}/{suffix}", case_key=case.key, kind=EntryKind.RECEIPT, template="notice",
        to=case.engineers,
        receipt=Receipt("", False, localized(why, False, case.effective_language), (subject,), kind=kind),
    )


def _bounce_effect(case: Case, mail: InboundMail, facts: Facts) -> tuple[tuple[str, ...], str]:
    """The customers a bounce proves unreachable, or () and why it proves nothing. Anyone can send a
    mail that looks like a bounce (`X-Failed-Recipients`, a MAILER-DAEMON From): only a real delivery
    report (RFC 3464) about a mail this bot sent for this case counts, and only for that case's
    customers (the bot's mail of a case goes to its customers; an engineer is never marked)."""
    if not mail.is_dsn:
        return (), "not a delivery status report (RFC 3464)"
    returned = returned_ids(mail)
    ours = {mid for mid, key in facts.outgoing if key == case.key}
    if not ours.intersection(returned):
        return (), "not about a mail this bot sent for the case"
    # Only a reminder or closure went to the customers: a report about a receipt or a notice (mail to
    # the engineers) proves nothing about a customer's address.
    to_customers = {e.message_id for e in case.timeline
                    if e.direction == "out" and e.kind in (EntryKind.REMINDER, EntryKind.CLOSURE)}
    if not to_customers.intersection(returned):
        return (), "about a mail the bot sent to the engineers, not to the customers"
    customers = {c.lower() for c in case.customers}
    failed = tuple(a for a in mail.bounced_recipients if a.lower() in customers)
    return failed, "" if failed else "names none of the case's customers"


def _bounce_notices(case: Case, mail: InboundMail, failed: tuple[str, ...]) -> list[SendMail]:
    if not case.engineers or not failed:
        return []
    why = message("bounce", addresses=", ".join(failed))
    return [_notice(case, f"bounce/{','.join(sorted(failed))}", why, mail.subject, "bounce")]


def _cancel_held(case: Case, mail: InboundMail, facts: Facts, now: datetime, cancellations: list[Cancellation],
                 events: list[Event]) -> Case:
    """A customer of the case replied: a reminder or closure that waits for a later opening (held by the
    daily cap) must not go out after it. Taken off the ledger and off the timeline."""
    if not any(e.message_id == mail.message_id and e.role == Role.CUSTOMER for e in case.timeline):
        return case
    return _take_back(case, facts.held, (EntryKind.REMINDER.value, EntryKind.CLOSURE.value), now, cancellations,
                      events, f"the customer replied first ({mail.message_id})", "the customer replied")


def _take_back(case: Case, held: tuple[HeldMail, ...], kinds: tuple[str, ...], now: datetime,
               cancellations: list[Cancellation], events: list[Event], reason: str, why: str) -> Case:
    """Cancel the case's held mail of these kinds (a daily-cap hold, or a retry after a 4xx): off the ledger
    and off the timeline, as if it had never been decided."""
    for h in held:
        if h.kind not in kinds:
            continue
        cancellations.append(Cancellation(h.action_id, reason))
        case = case.with_(timeline=tuple(e for e in case.timeline if e.message_id != h.message_id),
                          reminders_sent=case.reminders_sent - (h.kind == EntryKind.REMINDER.value),
                          notes=(*case.notes, f"{now.isoformat()} held {h.kind} cancelled: {why} before it went out"))
        events.append(Event(case.key, f"held {h.kind} {h.message_id} cancelled: {why}"))
    return case


def _cancel_on_closure(case: Case, held: tuple[HeldMail, ...], sends: list[SendMail], now: datetime,
                       cancellations: list[Cancellation], events: list[Event]) -> Case:
    """An engineer closed the case (`#close`: its closure is among `sends`): a reminder still waiting (the
    daily cap, a retry after a 4xx) must not follow the closure."""
    if case.status != CaseStatus.CLOSED and not any(
            s.kind == EntryKind.CLOSURE and s.case_key == case.key for s in sends):
        return case
    return _take_back(case, held, (EntryKind.REMINDER.value,), now, cancellations, events,
                      "the case was closed first", "the case was closed")
