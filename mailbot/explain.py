"""`mailbot explain`: how the bot reads one mail, worded from the same decision the service acts on."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mailbot.decide.command_specs import Command
from mailbot.decide.commands import find_commands, named_key, without_key
from mailbot.decide.inbound import (
    Opened,
    Threaded,
)
from mailbot.decide.messages import message
from mailbot.decide.policy import (
    reason_not_to_answer,
)
from mailbot.match import find_tokens, title_of
from mailbot.models import Case, Flag, InboundMail, ParseFailure

if TYPE_CHECKING:
    from mailbot.service import Service


def explain_mail(mail: InboundMail | ParseFailure, service_like: Service,
                 now: datetime | None = None) -> dict[str, Any]:
    """How the bot reads one message, without changing anything (for `mailbot explain`): the same
    `decide_mail` that `apply` follows, on the store as it is now, worded; at `now` (`--now`; default: now)."""
    if isinstance(mail, ParseFailure):
        return {"message_id": None, "subject": None, "from": None, "role": None, "flags": [],
                "case_key": None, "matched_by": None, "commands": [], "quarantine": mail.reason,
                "lands": f"quarantine: {mail.reason}"}
    s = service_like
    found, decision = s.decide(mail, now or datetime.now(UTC))
    role = decision.role
    commands = find_commands(mail.new_text)
    if s.store.seen(mail.message_id) is not None:
        lands = "duplicate: this Message-ID is already recorded, the mail changes nothing"
    elif isinstance(decision.lands, Threaded):
        lands = f"threaded into the existing case {decision.lands.key}"
    elif isinstance(decision.lands, Opened):
        lands = f"opens the new case {decision.lands.key}"
    elif found.key:
        lands = f"unmatched: {decision.lands.reason}"
    else:
        lands = "unmatched: no case key and no known thread (listed by `mailbot cases`)"
    return {
        "lands": lands,
        "message_id": mail.message_id,
        "message_id_synthesized": mail.message_id_synthesized,
        "subject": mail.subject,
        "from": mail.from_addr,
        "from_name": mail.from_name,
        "from_count": mail.from_count,
        "authentication": decision.authentication,  # None: not checked (not an engineer, or no trusted server set)
        "is_dsn": mail.is_dsn,
        "to": list(mail.to),
        "cc": list(mail.cc),
        "date": mail.date.isoformat() if mail.date else None,
        "role": role.value,
        "flags": sorted(f.value for f in mail.flags),
        "flag_reasons": list(mail.flag_reasons),
        "header_problems": list(mail.header_problems),  # repaired or missing headers (no From, no Subject)
        "case_key": found.key,
        "matched_by": found.rule.value if found.rule else None,
        "matched_text": found.detail,
        "title": title_of(mail.subject, found.key, s.settings.cases.tracking_token) if found.key else None,
        "tracking_tokens": list(find_tokens(mail.subject, s.settings.cases.tracking_token)),
        "in_reply_to": list(mail.in_reply_to),
        "references": list(mail.references),
        "commands": [_command(c, found.key, s.settings.cases.patterns, s.store.get_case) for c in commands],
        "would_answer": reason_not_to_answer(mail, role) is None,
        "not_answered_because": reason_not_to_answer(mail, role),
        "attachments": [{"name": a.name, "type": a.content_type, "size": a.size} for a in mail.attachments],
        "text": mail.new_text,
        "bounced_recipients": list(mail.bounced_recipients),
        "is_bounce": Flag.BOUNCE in mail.flags,
        # What the case would plan next once this mail is in: a reminder, a closure, a nudge, an escalation.
        "next_action": None if decision.case is None or decision.case.next_action is None else {
            "kind": decision.case.next_action.kind,
            "due": decision.case.next_action.due.astimezone(s.settings.bot.zone).isoformat()},  # as `case` shows it
    }


def _command(command: Command, found: str | None, patterns: tuple[re.Pattern[str], ...],
             get_case: Callable[[str], Case | None]) -> dict[str, Any]:
    """A command line as the bot carries it out: one that names its case (`#skip CAS-…`, in a digest reply or
    its case's thread) is read without the key, as mailbot.decide.commands does; `case` is the case it names."""
    key = named_key(command, patterns)
    if key is not None and found is not None and key != found:
        error: str | None = str(message("named.other_case", key=key, case=found))
    elif key is not None and found is None and get_case(key) is None:
        error = str(message("named.unknown", key=key))
    else:
        command = without_key(command) if key is not None else command
        error = command.error or None
    return {"command": command.name or None, "raw": command.raw, "error": error, "case": key}
