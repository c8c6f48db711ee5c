"""The rules: what is due for a case, what a command does, when the bot must stay silent — pure.

Nothing here sends, reads a file or asks the clock: it returns SendMail values and updated cases, and the
service carries them out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from mailbot.calendar import BusinessCalendar
from mailbot.cases import last_reminder_at, reminders_in_cycle
from mailbot.commands import HELP, Command
from mailbot.config import FollowupSettings
from mailbot.models import (
    Case,
    CaseStatus,
    ClosureFields,
    EntryKind,
    Flag,
    InboundMail,
    NextAction,
    Role,
)


@dataclass(frozen=True)
class Policy:
    followup: FollowupSettings
    calendar: BusinessCalendar
    bot_address: str
    cc_engineers: bool
    trusted_authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Receipt:
    command: str
    ok: bool
    message: str
    details: tuple[str, ...] = ()
    # "command": the answer to an engineer's own command (template `receipt`). A notice to the case's
    # engineers about something else (template `notice`): "refused" (someone else's command), "bounce"
    # (a customer's address bounced), "undeliverable" (the server refused a mail for good).
    kind: str = "command"


@dataclass(frozen=True)
class SendMail:
    """A mail to render and send. `action_id` is deterministic: deciding twice yields the same id."""

    action_id: str
    case_key: str
    kind: EntryKind  # REMINDER | CLOSURE | RECEIPT
    template: str  # reminder | reminder2 | closure | receipt
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    reminder_number: int = 0
    closure: ClosureFields | None = None
    default_closure: bool = False
    receipt: Receipt | None = None
    in_reply_to: str | None = None  # receipts answer the command mail itself


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
    if mail.return_path is not None and mail.return_path.strip() in ("", "<>"):
        return "null return path (RFC 5321 §4.5.5)"
    if mail.from_addr.split("@")[0].lower() in ("mailer-daemon", "postmaster"):
        return "mail from a mail system"
    if not mail.from_addr:
        return "no sender address"
    return None


def authentication_failed(mail: InboundMail, trusted: tuple[str, ...]) -> str | None:
    """RFC 8601: only Authentication-Results added by our own receiving server (its authserv-id) count;
    any other such header may have been written by the sender."""
    if not trusted:
        return None
    for header in mail.authentication_results:
        authserv = header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""
        if authserv not in {t.lower() for t in trusted}:
            continue
        lowered = header.lower()
        for method in ("dmarc", "dkim"):
            if f"{method}=fail" in lowered or f"{method}=permerror" in lowered:
                return f"{method} failed according to {authserv}"
        if "dmarc=pass" in lowered or "dkim=pass" in lowered:
            return None
        return f"no DKIM/DMARC pass according to {authserv}"
    return "no Authentication-Results from the trusted server"


# --- reminders and closure ------------------------------------------------------------------------


def calendar_for(case: Case | None, policy: Policy) -> BusinessCalendar:
    """Business days and hours in the case's timezone (default: the bot's)."""
    if case is None or not case.timezone or case.timezone == policy.calendar.zone.key:
        return policy.calendar
    return replace(policy.calendar, zone=ZoneInfo(case.timezone))


def live_customers(case: Case) -> tuple[str, ...]:
    return tuple(c for c in case.customers if c not in case.failed_addresses)


def plan_next(case: Case, policy: Policy) -> NextAction | None:
    """The next reminder or closure for a case waiting on its customer; None when nothing is due."""
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
    if case.status != CaseStatus.WAITING_CUSTOMER or action is None or action.due > now:
        return None
    hold = calendar_for(case, policy).add_business_days(now, policy.followup.first_after_business_days)
    held = case.with_(snoozed_until=hold)
    return held.with_(next_action=plan_next(held, policy))


def _recipients(case: Case, policy: Policy) -> tuple[tuple[str, ...], tuple[str, ...]]:
    to = live_customers(case)
    cc = tuple(e for e in case.engineers if e not in to) if policy.cc_engineers else ()
    return to, cc


def _cycle(case: Case) -> str:
    # One reminder cycle per engineer mail: a new engineer mail starts the count again.
    return case.last_engineer_mail.isoformat() if case.last_engineer_mail else "none"


def reminder(case: Case, policy: Policy, reason: str = "due") -> SendMail:
    number = reminders_in_cycle(case) + 1
    to, cc = _recipients(case, policy)
    return SendMail(
        action_id=f"{case.key}/reminder/{number}/{_cycle(case)}/{reason}",
        case_key=case.key,
        kind=EntryKind.REMINDER,
        template="reminder" if number == 1 else "reminder2",
        to=to,
        cc=cc,
        reminder_number=number,
    )


def closure(case: Case, policy: Policy, fields: ClosureFields | None, action_suffix: str) -> SendMail:
    to, cc = _recipients(case, policy)
    return SendMail(
        action_id=f"{case.key}/closure/{action_suffix}",
        case_key=case.key,
        kind=EntryKind.CLOSURE,
        template="closure",
        to=to,
        cc=cc,
        closure=fields or ClosureFields(),
        default_closure=fields is None or not (fields.problem or fields.analysis or fields.summary),
    )


def due_now(case: Case, now: datetime, policy: Policy) -> list[SendMail]:
    """What must go out for this case at `now` (at most one mail: the next step of its follow-up)."""
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


# --- engineer commands -----------------------------------------------------------------------------


def _local_opening(day: date, cal: BusinessCalendar) -> datetime:
    return cal.into_working_hours(datetime.combine(day, time(0, 0), tzinfo=cal.zone))


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
            f"refused: {mail.from_addr or 'an unknown sender'} is not an engineer"
            if role != Role.ENGINEER
            else f"refused: {why}"
        )
        # Report to the case's engineers, never answer the sender: they are not one of us.
        if case is None or not case.engineers:
            return case, []
        noted = case.with_(notes=(*case.notes, f"{now.isoformat()} {reason} ({raw})"))
        notice = SendMail(
            action_id=receipt_id, case_key=key, kind=EntryKind.RECEIPT, template="notice",
            to=case.engineers, in_reply_to=mail.message_id,
            receipt=Receipt(raw, False, localize(reason, False, case.effective_language), kind="refused"),
        )
        return noted, [notice]
    if reason_not_to_answer(mail, role):
        return case, []
    sends: list[SendMail] = []
    results: list[tuple[bool, str, str]] = []
    for command in commands:
        case, ok, message, extra = _apply_one(case, command, mail, now, policy, language)
        results.append((ok, command.raw, message))
        sends.extend(extra)
    # The receipt speaks the case's language as the commands left it (`#lang en` is answered in English).
    language = case.effective_language if case is not None else language
    ok = all(r[0] for r in results)
    details = tuple(f"{raw}: {localize(message, done, language)}" for done, raw, message in results)
    if any(c.name == "help" for c in commands):
        details += tuple(HELP.get(language, HELP["en"]))
    if any(c.name == "status" for c in commands) and case is not None:
        details += status_card(case, policy)
    receipt = SendMail(
        action_id=receipt_id, case_key=key, kind=EntryKind.RECEIPT, template="receipt",
        to=(mail.from_addr,), receipt=Receipt(raw, ok, _VERDICT[language == "zh-CN"][ok], details),
        in_reply_to=mail.message_id,
    )
    return case, [*sends, receipt]


_VERDICT = {False: {True: "done", False: "not done"}, True: {True: "已完成", False: "未执行"}}

# Receipts speak the case's language. A refusal keeps the English original beside the Chinese, so that
# the exact reason (a date, a command as written) is never lost in translation.
_ZH = [(re.compile(p), r) for p, r in (
    (r"^the commands are listed below$", "指令列表如下"),
    (r"^no case found.*$", "没有找到案例：请在标题中写上案例号，或在案例邮件的线程中回复"),
    (r"^the case is already closed.*$", "案例已经关闭（如需重开请先发送 #reopen）"),
    (r"^closed; no customer address.*$", "案例已关闭；没有可以发送结案总结的客户地址"),
    (r"^closure summary sent, case closed$", "结案总结已发送，案例已关闭"),
    (r"^that date is in the past$", "该日期已经过去"),
    (r"^reminders held until (.*)$", r"提醒暂停至 \1"),
    (r"^reminders resumed$", "提醒已恢复"),
    (r"^reminders stopped$", "提醒已停止"),
    (r"^the case is not waiting on a customer.*$", "案例当前不在等待客户，或没有可以联系的客户地址"),
    (r"^reminder (\d+) sent$", r"第 \1 封提醒已发送"),
    (r"^status set to (.*)$", r"状态已设为 \1"),
    (r"^phone call attempt logged$", "已记录一次电话联系"),
    (r"^the case is not closed$", "案例并未关闭"),
    (r"^case reopened$", "案例已重新打开"),
    (r"^language set to (.*)$", r"语言已设为 \1"),
    (r"^case card below$", "案例信息如下"),
    (r"^business days and hours now counted in (.*)$", r"工作日和工作时间现按 \1 计算"),
    (r"^unknown command.*$", "未知指令"),
    (r"^bad date.*$", "日期无效"),
    (r"^expected.*$", "格式不对"),
    (r"^refused: (.+) is not an engineer$", r"已拒绝：\1 不是工程师"),
    (r"^refused: no DKIM/DMARC pass.*$", "已拒绝：发件人的 DKIM/DMARC 验证未通过"),
    (r"^refused: no Authentication-Results.*$", "已拒绝：收信服务器没有给出发件人验证结果"),
    (r"^mail to (.+) bounced; no more reminders go there$", r"发往 \1 的邮件被退回，此后不再向该地址发送提醒"),
    (r"^could not deliver to (.+?): (.*)$", r"无法投递到 \1：\2"),
)]


def localize(message: str, ok: bool, language: str) -> str:
    if language != "zh-CN":
        return message
    for pattern, replacement in _ZH:
        if pattern.match(message):
            chinese = pattern.sub(replacement, message)
            return chinese if ok else f"{chinese}（{message}）"
    return message


def _apply_one(
    case: Case | None, command: Command, mail: InboundMail, now: datetime, policy: Policy, language: str
) -> tuple[Case | None, bool, str, list[SendMail]]:
    if command.error:
        return case, False, command.error, []
    if command.name == "help":
        return case, True, "the commands are listed below", []
    if case is None:
        return case, False, "no case found: put the case number in the subject or reply in its thread", []
    name = command.name
    if name == "close":
        if case.status == CaseStatus.CLOSED:
            return case, False, "the case is already closed (use #reopen first)", []
        if not live_customers(case):
            closed = case.with_(status=CaseStatus.CLOSED, next_action=None, closure=command.closure)
            return closed, True, "closed; no customer address to send the summary to", []
        send = closure(case, policy, command.closure, f"cmd/{mail.message_id}")
        return case.with_(closure=command.closure), True, "closure summary sent, case closed", [send]
    if name == "snooze":
        cal = calendar_for(case, policy)
        if command.snooze_days is not None:
            until = cal.add_business_days(now, command.snooze_days)
        else:
            assert command.snooze_until is not None
            until = _local_opening(command.snooze_until, cal)
        if until <= now:
            return case, False, "that date is in the past", []
        shown = until.astimezone(cal.zone).strftime("%Y-%m-%d %H:%M")
        return case.with_(snoozed_until=until), True, f"reminders held until {shown}", []
    if name == "followup":
        on = command.args[0].lower() in ("on", "开")
        return case.with_(followup_enabled=on), True, "reminders resumed" if on else "reminders stopped", []
    if name == "remind":
        if case.status != CaseStatus.WAITING_CUSTOMER or not live_customers(case):
            return case, False, "the case is not waiting on a customer we can reach", []
        send = reminder(case, policy, reason=f"cmd/{mail.message_id}")
        return case, True, f"reminder {send.reminder_number} sent", [send]
    if name == "waiting":
        target = {"customer": CaseStatus.WAITING_CUSTOMER, "engineer": CaseStatus.WAITING_ENGINEER,
                  "vendor": CaseStatus.WAITING_VENDOR}[command.args[0].lower()]
        updated = case.with_(status=target)
        if target == CaseStatus.WAITING_CUSTOMER and case.last_engineer_mail is None:
            updated = updated.with_(last_engineer_mail=now)
        return updated, True, f"status set to {target.value}", []
    if name == "called":
        return case.with_(phone_call_logged=True), True, "phone call attempt logged", []
    if name == "reopen":
        if case.status != CaseStatus.CLOSED:
            return case, False, "the case is not closed", []
        return case.with_(status=CaseStatus.OPEN, closure=None), True, "case reopened", []
    if name == "lang":
        lang = "en" if command.args[0].lower() == "en" else "zh-CN"
        return case.with_(language_override=lang), True, f"language set to {lang}", []
    if name == "status":
        return case, True, "case card below", []
    if name == "timezone":
        zone = command.args[0]
        return case.with_(timezone=zone), True, f"business days and hours now counted in {zone}", []
    return case, False, f"unknown command {command.raw}", []


def status_card(case: Case, policy: Policy) -> tuple[str, ...]:
    zone = calendar_for(case, policy).zone
    nxt = plan_next(case, policy)
    return (
        f"case: {case.key} — {case.title}",
        f"status: {case.status.value}",
        f"customers: {', '.join(case.customers) or '-'}",
        f"engineers: {', '.join(case.engineers) or '-'}",
        f"reminders sent: {case.reminders_sent}",
        "next: " + (f"{nxt.kind} at {nxt.due.astimezone(zone):%Y-%m-%d %H:%M}" if nxt else "nothing scheduled"),
        f"messages: {len(case.timeline)}",
    )
