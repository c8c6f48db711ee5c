"""The rules: what is due for a case, what a command does, when the bot must stay silent — pure.

Nothing here sends, reads a file or asks the clock: it returns SendMail values and updated cases, and the
service carries them out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from mailbot import authres
from mailbot.calendar import BusinessCalendar
from mailbot.cases import exclude, include, is_party, last_reminder_at, reminders_in_cycle
from mailbot.commands import HELP, Command
from mailbot.config import EngineerSettings, FollowupSettings
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
    max_recipients: int = 10  # To+Cc of one reminder or closure ([smtp] max_recipients)
    engineers: EngineerSettings = EngineerSettings((), ())  # never customers (`#add` refuses them)


@dataclass(frozen=True)
class Outcome:
    """What one command did, for the receipt; `action_id` names the mail it asked for (a closure, a
    reminder), so that the receipt can say when that mail really goes out."""

    raw: str
    ok: bool
    message: str
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
    kind: EntryKind  # REMINDER | CLOSURE | RECEIPT
    template: str  # reminder | reminder2 | closure | receipt
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    reminder_number: int = 0
    closure: ClosureFields | None = None
    default_closure: bool = False
    receipt: Receipt | None = None
    in_reply_to: str | None = None  # receipts answer the command mail itself
    left_out: tuple[str, ...] = ()  # customers the recipient cap kept off this mail (noted on the case)


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
    any other such header may have been written by the sender. mailbot.authres reads them by the grammar
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
    shown = shown_address(address)
    why = f"{shown} wrote into the case; write to them, or #add {shown}, to include them"
    return SendMail(
        action_id=f"{case.key}/outsider/{address}", case_key=case.key, kind=EntryKind.RECEIPT,
        template="notice", to=case.engineers,
        # Their subject is their words: shown defanged (no live link in a mail to engineers).
        receipt=Receipt("", False, localize(why, False, case.effective_language), (defang(subject[:200]),),
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
            why = (f"more than {STRANGER_NOTICES_PER_DAY} people who are not customers wrote into the case "
                   f"today; no more notices about them today: see the case's timeline (mailbot case {case.key})")
            kept.append(replace(send, action_id=f"{case.key}/strangers/{day}", in_reply_to=None,
                                receipt=Receipt("", False, localize(why, False, case.effective_language), (),
                                                kind="outsider")))
        else:
            continue
        count += 1
        case = case.with_(notes=(*case.notes, f"{now.isoformat()} {mark} no. {count}"))
    return case, kept


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
        case, ok, message, extra = _apply_one(case, command, mail, now, policy, language)
        results.append(Outcome(command.raw, ok, message, extra[0].action_id if extra else ""))
        sends.extend(extra)
    # The receipt speaks the case's language as the commands left it (`#lang en` is answered in English).
    language = case.effective_language if case is not None else language
    ok = all(r.ok for r in results)
    details = tuple(_outcome_line(r, language) for r in results)
    if any(c.name == "help" for c in commands):
        details += tuple(HELP.get(language, HELP["en"]))
    if any(c.name == "status" for c in commands) and case is not None:
        details += status_card(case, policy)
    receipt = SendMail(
        action_id=receipt_id, case_key=key, kind=EntryKind.RECEIPT, template="receipt",
        to=(mail.from_addr,), in_reply_to=mail.message_id,
        receipt=Receipt(raw, ok, _VERDICT[language == "zh-CN"][ok], details, outcomes=tuple(results)),
    )
    return case, [*sends, receipt]


def _outcome_line(outcome: Outcome, language: str) -> str:
    return f"{outcome.raw}: {localize(outcome.message, outcome.ok, language)}"


def held_message(send: SendMail, until: datetime, why: str, zone: ZoneInfo) -> str:
    """What a receipt says about a closure or reminder that was recorded but waits (the daily cap)."""
    what = ("closure summary recorded, case closed" if send.kind == EntryKind.CLOSURE
            else f"reminder {send.reminder_number} recorded")
    return f"{what}; it goes out at {until.astimezone(zone):%Y-%m-%d %H:%M} ({why})"


def held_receipt(send: SendMail, held: dict[str, str], language: str) -> SendMail:
    """The receipt as it must read once the mails its commands asked for were recorded: a mail that
    waits (`held`: action id → `held_message`) is not called sent."""
    r = send.receipt
    if r is None or not any(o.action_id in held for o in r.outcomes):
        return send
    outcomes = tuple(replace(o, message=held[o.action_id]) if o.action_id in held else o for o in r.outcomes)
    details = (*(_outcome_line(o, language) for o in outcomes), *r.details[len(outcomes):])
    return replace(send, receipt=replace(r, details=details, outcomes=outcomes))


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


def sender_notice(case: Case, mail: InboundMail, reason: str, kind: str, now: datetime, policy: Policy) -> SendMail:
    """A notice to the case's engineers about what a sender tried ("refused": a command they may not
    give; "forged": a mail that claims an engineer and failed authentication). Its id names the sender,
    the case and the local day: the outbox ledger sends each id once, so one notice per day at most."""
    day = now.astimezone(calendar_for(case, policy).zone).date().isoformat()
    sender = mail.from_addr.lower() or "unknown"
    return SendMail(
        action_id=f"{case.key}/{kind}/{sender}/{day}", case_key=case.key, kind=EntryKind.RECEIPT,
        template="notice", to=case.engineers, in_reply_to=mail.message_id,
        receipt=Receipt("", False, localize(reason.replace(mail.from_addr, shown_address(mail.from_addr))
                                            if mail.from_addr else reason, False, case.effective_language),
                        quote_inert(mail.new_text), kind=kind),
    )


_VERDICT = {False: {True: "done", False: "not done"}, True: {True: "已完成", False: "未执行"}}

# Receipts speak the case's language. A refusal keeps the English original beside the Chinese, so that
# the exact reason (a date, a command as written) is never lost in translation.
_ZH = [(re.compile(p), r) for p, r in (
    (r"^the commands are listed below$", "指令列表如下"),
    (r"^no case found.*$", "没有找到案例：请在标题中写上案例号，或在案例邮件的线程中回复"),
    (r"^the case is already closed.*$", "案例已经关闭（如需重开请先发送 #reopen）"),
    (r"^closed; no customer address.*$", "案例已关闭；没有可以发送结案总结的客户地址"),
    (r"^closure summary sent, case closed; (\d+) customer\(s\) left out by the recipient cap .*?: (.*)$",
     r"结案总结已发送，案例已关闭；受收件人上限（[smtp] max_recipients）所限，\1 位客户没有收到：\2"),
    (r"^closure summary sent, case closed$", "结案总结已发送，案例已关闭"),
    (r"^that date is in the past$", "该日期已经过去"),
    (r"^reminders held until (.*)$", r"提醒暂停至 \1"),
    (r"^reminders resumed$", "提醒已恢复"),
    (r"^reminders stopped$", "提醒已停止"),
    (r"^the case is not waiting on a customer.*$", "案例当前不在等待客户，或没有可以联系的客户地址"),
    (r"^reminder (\d+) sent; (\d+) customer\(s\) left out by the recipient cap .*?: (.*)$",
     r"第 \1 封提醒已发送；受收件人上限（[smtp] max_recipients）所限，\2 位客户没有收到：\3"),
    (r"^reminder (\d+) sent$", r"第 \1 封提醒已发送"),
    (r"^status set to (.*)$", r"状态已设为 \1"),
    (r"^phone call attempt logged$", "已记录一次电话联系"),
    (r"^the case is not closed$", "案例并未关闭"),
    (r"^case reopened$", "案例已重新打开"),
    (r"^language set to (.*)$", r"语言已设为 \1"),
    (r"^case card below$", "案例信息如下"),
    (r"^business days and hours now counted in (.*)$", r"工作日和工作时间现按 \1 计算"),
    (r"^unknown command.*$", "未知指令"),
    (r"^too many commands: at most (\d+) in one mail.*$", r"指令过多：一封邮件最多 \1 条，此条及之后的指令未执行"),
    (r"^bad date.*$", "日期无效"),
    (r"^expected.*$", "格式不对"),
    (r"^refused: (.+) is not an engineer$", r"已拒绝：\1 不是工程师"),
    (r"^refused: no DKIM/DMARC pass.*$", "已拒绝：发件人的 DKIM/DMARC 验证未通过"),
    (r"^refused: no Authentication-Results.*$", "已拒绝：收信服务器没有给出发件人验证结果"),
    (r"^mail to (.+) bounced; no more reminders go there$", r"发往 \1 的邮件被退回，此后不再向该地址发送提醒"),
    (r"^could not deliver to (.+?): (.*)$", r"无法投递到 \1：\2"),
    (r"^closure summary recorded, case closed; it goes out at (\S+ \S+) \((\S+) already got (\d+) mails today\)$",
     r"结案总结已记录，案例已关闭；因 \2 今天已收到 \3 封邮件（每日上限），将于 \1 发出"),
    (r"^reminder (\d+) recorded; it goes out at (\S+ \S+) \((\S+) already got (\d+) mails today\)$",
     r"第 \1 封提醒已记录；因 \3 今天已收到 \4 封邮件（每日上限），将于 \2 发出"),
    (r"^mail from (\S+) failed authentication \((.*)\): recorded as an outsider's, nothing done$",
     r"来自 \1 的邮件未通过发件人验证（\2）：仅作为外部人员的邮件记录，未执行任何操作"),
    (r"^out-of-office until (\S+), held at most (\d+) days: reminders held until (\S+ \S+); "
     r"the next reminder moves from (\S+ \S+) to (\S+ \S+)$",
     r"客户自动回复称 \1 返回，最多暂停 \2 天：提醒暂停至 \3；下一封提醒从 \4 推迟到 \5"),
    (r"^out-of-office until (\S+): reminders held until (\S+ \S+); the next reminder moves from (\S+ \S+) "
     r"to (\S+ \S+)$", r"客户自动回复称 \1 返回：提醒暂停至 \2；下一封提醒从 \3 推迟到 \4"),
    (r"^(\S+) wrote into the case; write to them, or #add (\S+), to include them$",
     r"\1 给本案例来信，但不是本案例的客户，收不到案例的任何邮件。如需包括此人，请直接给其写信，或发送 #添加 \2"),
    (r"^more than (\d+) people who are not customers wrote into the case today; .*\(mailbot case (\S+)\)$",
     r"今天已有超过 \1 位非本案例客户的人来信；今天不再逐一通知，详见案例时间线（mailbot case \2）"),
    (r"^(.+) added to the customers$", r"已将 \1 加入本案例的客户"),
    (r"^(.+) already a customer of the case$", r"\1 已经是本案例的客户"),
    (r"^(.+) removed from the customers$", r"已将 \1 从本案例的客户中移除"),
    (r"^(.+): not a customer of the case$", r"\1 不是本案例的客户"),
    (r"^refused: (.+) is an engineer or the bot, never a customer$", r"已拒绝：\1 是工程师或机器人，不能作为客户"),
    (r"^cannot add (.+?): one mail goes to at most (\d+) customer.*$",
     r"无法添加 \1：一封邮件最多发给 \2 位客户（[smtp] max_recipients），请先 #移除 其他客户"),
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
        return (case.with_(closure=command.closure), True,
                "closure summary sent, case closed" + _left_out(send, policy), [send])
    if name == "snooze":
        cal = calendar_for(case, policy)
        if command.snooze_days is not None:
            until = cal.add_business_days(now, command.snooze_days)
        else:
            assert command.snooze_until is not None
            until = cal.first_opening(command.snooze_until)
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
        return case, True, f"reminder {send.reminder_number} sent" + _left_out(send, policy), [send]
    if name == "add":
        return _add_customers(case, command.args, policy)
    if name == "remove":
        absent = [a for a in command.args if not is_party(case, a)]
        if absent:
            return case, False, f"{', '.join(absent)}: not a customer of the case", []
        return exclude(case, *command.args), True, f"{', '.join(command.args)} removed from the customers", []
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


def _left_out(send: SendMail, policy: Policy) -> str:
    if not send.left_out:
        return ""
    return (f"; {len(send.left_out)} customer(s) left out by the recipient cap "
            f"([smtp] max_recipients = {policy.max_recipients}): {', '.join(send.left_out)}")


def _add_customers(case: Case, addresses: tuple[str, ...],
                   policy: Policy) -> tuple[Case, bool, str, list[SendMail]]:
    """`#add`: the engineer includes people; from now on they get the case's reminders and closure."""
    ours = [a for a in addresses if a == policy.bot_address.lower() or a in case.engineers
            or a in policy.engineers.addresses or a.rpartition("@")[2] in policy.engineers.domains]
    if ours:
        return case, False, f"refused: {', '.join(ours)} is an engineer or the bot, never a customer", []
    new = [a for a in addresses if not is_party(case, a) or a in case.failed_addresses]
    if not new:
        return case, True, f"{', '.join(addresses)} already a customer of the case", []
    slots = customer_slots(case, policy)
    live = [c for c in live_customers(case) if c not in new]
    if len(live) + len(new) > slots:
        return case, False, (f"cannot add {', '.join(new)}: one mail goes to at most {slots} customer(s) "
                             f"([smtp] max_recipients = {policy.max_recipients}); #remove someone first"), []
    # An engineer who adds a bounced address again means it works now: reminders go there again.
    updated = include(case, *new).with_(
        failed_addresses=tuple(f for f in case.failed_addresses if f not in new))
    return updated, True, f"{', '.join(new)} added to the customers", []


def status_card(case: Case, policy: Policy) -> tuple[str, ...]:
    zone = calendar_for(case, policy).zone
    nxt = plan_next(case, policy)
    return (
        f"case: {case.key} — {case.title}",
        f"status: {case.status.value}",
        f"customers: {', '.join(case.customers) or '-'}",
        f"engineers: {', '.join(case.engineers) or '-'}",
        *((f"wrote in, not included (#add to include): {', '.join(case.outsiders)}",) if case.outsiders else ()),
        f"reminders sent: {case.reminders_sent}",
        "next: " + (f"{nxt.kind} at {nxt.due.astimezone(zone):%Y-%m-%d %H:%M}" if nxt else "nothing scheduled"),
        f"messages: {len(case.timeline)}",
    )
