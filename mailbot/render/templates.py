"""Jinja templates → OutboundMail: a proper reply in the case's thread, in the case's language."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from mailbot.cases import last_request, open_case, reaches_customer
from mailbot.decide.policy import TO_CUSTOMERS, SendMail
from mailbot.models import Case, EntryKind, OutboundMail
from mailbot.render.compose import make_message_id
from mailbot.text import local_time, one_line

TEMPLATE_NAMES = ("reminder", "reminder2", "closure", "receipt", "notice", "nudge", "escalation", "digest")
LANGUAGES = ("zh-CN", "en")
REPLY_PREFIX = {"zh-CN": "回复: ", "en": "Re: "}
# An out-of-office is not a message anyone answers: thread under the last real one.
_THREAD_KINDS = (EntryKind.MAIL, EntryKind.REMINDER, EntryKind.CLOSURE)
NO_CASE = "-"  # the case a receipt to a command that found none shows (and the outbox ledger records)


class TemplateProblem(Exception):
    """A template that is missing or fails to render: a clear one-line reason."""


def environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        # Only the HTML part is escaped; subjects and plain text must stay as written (LIBRARIES.md).
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Identity:
    address: str
    name: str
    zone: ZoneInfo
    message_id_secret: str = ""  # the installation's (mailbot.store.secret): its Message-IDs cannot be guessed

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


_GREETINGS = ("您好", "你好")
_SIGN_OFFS = ("best", "regards", "kind regards", "thanks", "thank you", "谢谢", "祝好", "此致")


def quote_lines(text: str, engineer_name: str, limit: int = 10) -> tuple[list[str], bool]:
    """The engineer's last request, ready to quote in a reminder: the substance, not the greeting or the
    signature; at most `limit` lines. Returns (lines, whether lines were left out)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and len(lines[0]) <= 40 and (lines[0].rstrip("：:，,！!。 ").endswith(_GREETINGS)
                                          or lines[0].lower().startswith(("dear ", "hi ", "hello"))):
        lines = lines[1:]
    if lines and engineer_name and lines[-1] == engineer_name:
        lines = lines[:-1]
    if lines and len(lines[-1]) <= 20 and lines[-1].lower().startswith(_SIGN_OFFS):
        lines = lines[:-1]
    return lines[:limit], len(lines) > limit  # the templates cut long lines, with their own ellipsis


def no_newlines(value: str) -> str:
    """Header fields must not carry CR/LF: a rendered value must never add a header (injection)."""
    return re.sub(r"[\r\n]+", " ", value).strip()


def context(case: Case, send: SendMail, me: Identity, now: datetime, business_days_silent: int) -> dict[str, Any]:
    first_customer = case.customers[0] if case.customers else ""
    engineer = case.engineers[0] if case.engineers else ""
    receipt = send.receipt
    closure = send.closure or case.closure
    zone = case.zone(me.zone)  # dates as the customer reads them
    request = last_request(case)
    quote, truncated = quote_lines(request, case.name_of(engineer))
    return {
        "case": SimpleNamespace(
            key=case.key,
            title=case.title,
            subject=case.subject,
            status=case.status.value,
            language=case.effective_language,
            customers=list(case.customers),
            engineers=list(case.engineers),
            tracking_tokens=list(case.tracking_tokens),
            reminders_sent=case.reminders_sent,
            opened=local_time(case.opened, zone),
        ),
        "customer_name": case.name_of(first_customer),
        "engineer_name": case.name_of(engineer),
        # Whom this mail greets: a receipt goes to the engineer who sent the command, not always the case's.
        "recipient_name": case.name_of(send.to[0]) if send.to else "",
        "bot_name": me.name,
        "reminder_number": send.reminder_number,
        "phone_call_logged": case.phone_call_logged,
        "days_silent": business_days_silent,
        "last_request": request,
        "request_quote": quote,
        "request_quote_truncated": truncated,
        "closure": SimpleNamespace(
            problem=closure.problem if closure else "",
            analysis=closure.analysis if closure else "",
            summary=closure.summary if closure else "",
            default_used=send.default_closure,
        ),
        "timeline": [
            SimpleNamespace(
                date=local_time(e.date, zone), role=e.role.value, kind=e.kind.value,
                direction=e.direction, sender=e.from_addr, text=one_line(e.text, 120),
            )
            # Only what the customers already received: no internal note, command, receipt, outsider's mail,
            # auto-reply or bounce may reach them through a closure (cases.reaches_customer decides).
            for e in case.timeline
            if reaches_customer(e)
        ],
        "receipt": SimpleNamespace(
            command=receipt.command if receipt else "",
            ok=receipt.ok if receipt else True,
            message=receipt.message if receipt else "",
            details=list(receipt.details) if receipt else [],
            kind=receipt.kind if receipt else "",
        ),
        "now": local_time(now, zone, "%Y-%m-%d"),
        "nudge": _nudge(send),
        "digest": _digest(send, local_time(now, zone, "%Y-%m-%d")),
    }


def _nudge(send: SendMail) -> SimpleNamespace:
    """`nudge` and `escalation`: the replies that wait; empty in every other template."""
    n = send.nudge
    return SimpleNamespace(
        since=n.since if n else "", business_hours=n.business_hours if n else 0,
        replies=[SimpleNamespace(sender=r.sender, date=r.date, lines=r.text.strip().splitlines())
                 for r in (n.replies if n else ())],
        engineers=list(n.engineers) if n else [],
    )


def _digest(send: SendMail, today: str) -> SimpleNamespace:
    """`digest`: one list of rows per section (each row: key, title, when, detail); empty elsewhere."""
    d = send.digest
    rows = d.rows if d else ()
    sections = {what: [r for r in rows if r.what == what] for what in ("waiting", "today", "closing", "held")}
    return SimpleNamespace(day=d.day if d else today, engineer=d.engineer if d else "",
                           open_cases=d.open_cases if d else 0, **sections)


def outside_case(title: str, subject: str, language: str, now: datetime) -> Case:
    """What a receipt to a command that found no case shows in the case's place: no key, the mail's own
    subject as the title. Only the templates read it; it is never stored nor recorded on."""
    return open_case(NO_CASE, title, subject, now, language)


def render_parts(env: jinja2.Environment, language: str, name: str, ctx: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of one template; a language without the template falls back to en/."""
    out = []
    for suffix in ("subject.txt", "txt", "html"):
        try:
            template = env.select_template([f"{language}/{name}.{suffix}", f"en/{name}.{suffix}"])
            out.append(template.render(ctx))
        except jinja2.TemplateNotFound:
            raise TemplateProblem(f"template {language}/{name}.{suffix} not found") from None
        except jinja2.TemplateError as e:
            raise TemplateProblem(f"template {language}/{name}.{suffix}: {e}") from None
    return no_newlines(out[0]), out[1].strip() + "\n", out[2]


def _thread(case: Case, reply_to: str | None) -> tuple[str | None, tuple[str, ...]]:
    ids = [e.message_id for e in case.timeline if e.kind in _THREAD_KINDS and not e.message_id.endswith(".invalid>")]
    if reply_to:
        return reply_to, (*[i for i in ids if i != reply_to][-10:], reply_to)
    if not ids:
        return None, ()
    # RFC 5322 §3.6.4: References = parent's chain + parent; we keep the first and the latest ids.
    chain = ids if len(ids) <= 12 else [ids[0], *ids[-11:]]
    return ids[-1], tuple(chain)


def with_reply_prefix(subject: str, language: str) -> str:
    prefix = REPLY_PREFIX.get(language, "Re: ")
    return subject if subject.lower().startswith(prefix.lower()) else prefix + subject


def outbound(
    env: jinja2.Environment, case: Case, send: SendMail, me: Identity, now: datetime,
    show_engineer_name: bool, business_days_silent: int = 0,
) -> OutboundMail:
    language = case.effective_language
    ctx = context(case, send, me, now, business_days_silent)
    subject, text, html = render_parts(env, language, send.template, ctx)
    if send.kind in TO_CUSTOMERS:
        subject = with_reply_prefix(subject, language)
    in_reply_to, references = _thread(case, send.in_reply_to)
    engineer_name = ctx["engineer_name"]
    # "Li Qi via casebot" on what goes to the customer; receipts and notices to engineers come from the bot.
    speaks_for_engineer = show_engineer_name and engineer_name and send.kind in TO_CUSTOMERS
    from_name = f"{engineer_name} via {me.name}" if speaks_for_engineer else me.name
    return OutboundMail(
        action_id=send.action_id,
        case_key=case.key,
        kind=send.kind,
        message_id=make_message_id(send.action_id, me.domain, me.message_id_secret),
        subject=no_newlines(subject),
        from_addr=me.address,
        from_name=no_newlines(from_name),
        to=send.to,
        cc=send.cc,
        in_reply_to=in_reply_to,
        references=references,
        text=text,
        html=html,
        # RFC 3834 §5: receipts answer a mail (auto-replied); reminders are generated (auto-generated).
        auto_submitted="auto-replied" if send.kind == EntryKind.RECEIPT else "auto-generated",
    )

