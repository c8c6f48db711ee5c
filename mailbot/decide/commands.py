"""Engineer commands: found at the top of a mail's new text (`#close`, `#暂停 3d`, …) and carried out — pure."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from mailbot.decide.command_specs import ALIASES, BY_NAME, HELP, Command, parse
from mailbot.decide.messages import Message, localized, message, render
from mailbot.decide.policy import (
    Outcome,
    Policy,
    Receipt,
    SendMail,
    authentication_failed,
    reason_not_to_answer,
    sender_notice,
)
from mailbot.match import find_key
from mailbot.models import Case, ClosureFields, EntryKind, InboundMail, Role

__all__ = ["ALIASES", "HELP", "MAX_COMMANDS", "Command", "apply_commands", "apply_named", "find_commands",
           "held_message", "held_receipt", "named_key", "named_keys", "without_key"]

_FIELDS = {
    "problem": re.compile(r"^\s*(?:问题描述|問題描述|problem(?: description)?|description)\s*[:：]\s*(.*)$", re.I),
    "analysis": re.compile(r"^\s*(?:问题分析|問題分析|analysis)\s*[:：]\s*(.*)$", re.I),
    "summary": re.compile(r"^\s*(?:问题总结|問題總結|summary|resolution)\s*[:：]\s*(.*)$", re.I),
}
# `#` and a word that does not start with a digit: `#1 priority` and `#2021` are prose, not commands. The
# arguments are the rest of the line, split by the caller: a lazy `(.*?)\s*$` tried the trailing blanks at
# every position, and `#snooze a<80,000 blanks>b` took 71 s a mail (quadratic).
_COMMAND_LINE = re.compile(r"^\s*[#＃]\s*([^\s\d]\S*)(.*)$")


def _value(line: str) -> str:
    """A field's value as written: after the first colon, half- or full-width (no NFKC here, which would
    turn the Chinese `，` in a closure summary the customer reads into `,`)."""
    return re.split(r"[:：]", line, maxsplit=1)[1].strip() if re.search(r"[:：]", line) else ""


# A mail carries a handful of commands; 100,000 `#snooze 3d` lines once took 7 s to find and carry out (and
# made a receipt of 100,000 lines). The first MAX_COMMANDS run; the next one is answered with one error line
# and nothing after it is read.
MAX_COMMANDS = 20


def find_commands(new_text: str) -> list[Command]:
    """Commands are `#word` lines at the top of the new text, before anything else the engineer wrote.
    `#close` may be followed by Problem/Analysis/Summary lines (full- or half-width colons); a field runs
    on over the lines under it until a blank line. The first line of prose ends the commands: a `#reopen`
    further down (in a signature, in pasted text) is not a command. At most MAX_COMMANDS are read: one
    more is returned as a "too many commands" error, and the rest of the text is not looked at.

    Command words and labels are matched after NFKC (`＃ＣＬＯＳＥ`, `问题描述：`); values keep their text."""
    # Blank lines and blanks at the top hold no command (the pattern and `raw` strip them anyway).
    lines = new_text.replace("\r", "").lstrip().split("\n")

    def folded(n: int) -> str:  # only the lines looked at are normalized, not a megabyte of text after them
        return unicodedata.normalize("NFKC", lines[n])

    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        m = _COMMAND_LINE.match(folded(i))
        if not m:
            break
        raw = lines[i].strip()
        if len(commands) == MAX_COMMANDS:
            commands.append(Command("", raw, tuple(m.group(2).split()), problem=message("command.too_many", limit=MAX_COMMANDS)))
            break
        word = m.group(1).lower()
        args = tuple(m.group(2).split())
        name = ALIASES.get(word, "")
        i += 1
        if not name:
            commands.append(Command("", raw, args, problem=message("command.unknown", word=m.group(1))))
            continue
        command = parse(name, raw, args)
        if name == "close":
            values: dict[str, list[str]] = {}
            current: str | None = None
            prose = False
            while i < len(lines) and not _COMMAND_LINE.match(line := folded(i)):
                text = lines[i]
                field = next((k for k, p in _FIELDS.items() if p.match(line)), None)
                if field:
                    current = field
                    values[current] = [_value(text)]
                elif not text.strip():
                    current = None
                elif current:
                    values[current].append(text.strip())
                else:
                    prose = True
                    break
                i += 1
            command = Command(
                "close", raw, args,
                closure=ClosureFields(**{k: "\n".join(v).strip() for k, v in values.items()}),
            )
            if prose:
                commands.append(command)
                break
        commands.append(command)
    return commands


# --- carrying them out -----------------------------------------------------------------------------


def apply_commands(
    case: Case | None,
    mail: InboundMail,
    role: Role,
    commands: list[Command],
    now: datetime,
    policy: Policy,
    language: str,
) -> tuple[Case | None, list[SendMail]]:
    """Carry out the commands of one mail on its case. Returns the new case and the mails to send:
    the closure (for #close), a reminder (for #remind now) and one receipt to the engineer."""
    if not commands:
        return case, []
    raw = "; ".join(c.raw for c in commands)
    receipt_id = f"receipt/{mail.message_id}"
    key = case.key if case else ""
    if role != Role.ENGINEER or (why := authentication_failed(mail, policy.trusted_authserv_ids)):
        reason = (
            message("refused.not_engineer", sender=mail.from_addr or "an unknown sender")
            if role != Role.ENGINEER
            else message("refused.unauthenticated", why=why)
        )
        # Report to the case's engineers, never answer the sender: they are not one of us. At most one
        # notice per sender, case and day (the id says so; the outbox ledger sends an id once), so that
        # a stranger cannot make the bot mail the engineers once per mail they send.
        if case is None or not case.engineers:
            return case, []
        noted = case.with_(notes=(*case.notes, f"{now.isoformat()} {reason} ({raw})"))
        return noted, [sender_notice(case, mail, reason, "refused", now, policy)]
    if reason_not_to_answer(mail, role):
        return case, []
    sends: list[SendMail] = []
    results: list[Outcome] = []
    for command in commands:
        case, ok, said, extra = _carry_out(case, command, mail, now, policy)
        results.append(Outcome(command.raw, ok, said, extra[0].action_id if extra else ""))
        sends.extend(extra)
    # The receipt speaks the case's language as the commands left it (`#lang en` is answered in English).
    language = case.effective_language if case is not None else language
    ok = all(r.ok for r in results)
    details = tuple(_outcome_line(r, language) for r in results)
    # Lines under the results (the help list, the case card), once per command named, in the order asked.
    for name in dict.fromkeys(c.name for c in commands):
        if name and (show := BY_NAME[name].details) is not None:
            details += show(case, policy, language)
    receipt = SendMail(
        action_id=receipt_id, case_key=key, kind=EntryKind.RECEIPT, template="receipt",
        to=(mail.from_addr,), in_reply_to=mail.message_id,
        receipt=Receipt(raw, ok, render(message("receipt.done" if ok else "receipt.not_done"), language), details,
                        outcomes=tuple(results)),
    )
    return case, [*sends, receipt]


def _carry_out(case: Case | None, command: Command, mail: InboundMail, now: datetime,
               policy: Policy) -> tuple[Case | None, bool, Message, list[SendMail]]:
    if case is not None and (key := named_key(command, policy.case_patterns)):
        # `#skip CAS-…` in the case's own thread means that case; naming another one here is a slip.
        if key != case.key:
            return case, False, message("named.other_case", key=key, case=case.key), []
        command = without_key(command)
    if command.problem is not None:
        return case, False, command.problem, []
    spec = BY_NAME[command.name]
    if case is None:
        return (case, True, spec.without_case, []) if spec.without_case else (case, False, NO_CASE, [])
    return spec.effect(case, command, mail, now, policy)


NO_CASE = message("command.no_case")


# --- command lines that name their case (a digest reply, any mail whose subject names no case) ----------


def named_key(command: Command, patterns: tuple[re.Pattern[str], ...]) -> str | None:
    """The case key a command's first argument is (`#skip CAS-04027-B7D2Z5`), or None."""
    if not command.name or not command.args or not patterns:
        return None
    word = command.args[0][:64]  # a key is short: a pasted megabyte is not searched
    key = find_key(word, patterns)
    return key if key is not None and len(key) == len(word) else None


def named_keys(text: str, patterns: tuple[re.Pattern[str], ...]) -> tuple[str, ...]:
    """The cases a mail's command lines name, for the service to load before deciding (at most MAX_COMMANDS)."""
    return tuple(dict.fromkeys(k for c in find_commands(text) if (k := named_key(c, patterns))))


def without_key(command: Command) -> Command:
    """The command as if written in its case's thread: the key taken off its arguments (a `#close` keeps
    its fields)."""
    parsed = parse(command.name, command.raw, command.args[1:])
    return replace(parsed, closure=command.closure) if command.name == "close" else parsed


def apply_named(cases: Mapping[str, Case], mail: InboundMail, role: Role, commands: list[Command], now: datetime,
                policy: Policy, language: str) -> tuple[dict[str, Case], list[SendMail]]:
    """Carry out command lines that name their case, each on its case (`cases`: those the store has, by key).
    Only an authenticated engineer's commands run; anyone else gets no answer (never answer a stranger).
    Returns the cases the commands changed, by key, and the mails: closures, then one receipt that lists
    what was done per case and why anything was refused."""
    if role != Role.ENGINEER or authentication_failed(mail, policy.trusted_authserv_ids) or \
            reason_not_to_answer(mail, role):
        return {}, []
    changed: dict[str, Case] = {}
    sends: list[SendMail] = []
    results: list[Outcome] = []
    for command in commands:
        key = named_key(command, policy.case_patterns)
        if key is None:
            spec = BY_NAME.get(command.name)
            if command.problem is not None or spec is None:
                said = command.problem or message("named.no_key")
                results.append(Outcome(command.raw, False, said))
            elif spec.without_case is not None:
                results.append(Outcome(command.raw, True, spec.without_case))
            else:
                results.append(Outcome(command.raw, False, message("named.no_key")))
            continue
        case = changed.get(key) or cases.get(key)
        if case is None:
            results.append(Outcome(command.raw, False, message("named.unknown", key=key)))
            continue
        updated, ok, said, extra = _carry_out(case, command, mail, now, policy)
        if updated is not None and updated is not case:
            changed[key] = updated
        results.append(Outcome(command.raw, ok, said, extra[0].action_id if extra else ""))
        sends.extend(extra)
    ok = all(r.ok for r in results)
    details = tuple(_outcome_line(r, language) for r in results)
    for name in dict.fromkeys(c.name for c in commands):
        if name and (show := BY_NAME[name].details) is not None:
            details += show(None, policy, language)
    raw = "; ".join(c.raw for c in commands)
    receipt = SendMail(
        action_id=f"receipt/{mail.message_id}", case_key="", kind=EntryKind.RECEIPT, template="receipt",
        to=(mail.from_addr,), in_reply_to=mail.message_id,
        receipt=Receipt(raw, ok, render(message("receipt.done" if ok else "receipt.not_done"), language), details,
                        outcomes=tuple(results)),
    )
    return changed, [*sends, receipt]


def _outcome_line(outcome: Outcome, language: str) -> str:
    return f"{outcome.raw}: {localized(outcome.message, outcome.ok, language)}"


def held_message(send: SendMail, until: datetime, why: Message | str, zone: ZoneInfo) -> Message:
    """What a receipt says about a closure or reminder that was recorded but waits (the daily cap). `why`
    is a str when read back from the outbox ledger."""
    reason = why if isinstance(why, Message) else message("text", text=why)
    at = f"{until.astimezone(zone):%Y-%m-%d %H:%M}"
    if send.kind == EntryKind.CLOSURE:
        return message("held.closure", at=at, why=reason)
    return message("held.reminder", number=send.reminder_number, at=at, why=reason)


def held_receipt(send: SendMail, held: dict[str, Message], language: str) -> SendMail:
    """The receipt as it must read once the mails its commands asked for were recorded: a mail that
    waits (`held`: action id → `held_message`) is not called sent."""
    r = send.receipt
    if r is None or not any(o.action_id in held for o in r.outcomes):
        return send
    outcomes = tuple(replace(o, message=held[o.action_id]) if o.action_id in held else o for o in r.outcomes)
    details = (*(_outcome_line(o, language) for o in outcomes), *r.details[len(outcomes):])
    return replace(send, receipt=replace(r, details=details, outcomes=outcomes))
