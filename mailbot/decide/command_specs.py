"""Every engineer command as one entry: spellings in both languages, argument parser, help, effect — pure.

Adding a command is adding one CommandSpec to SPECS (and its result texts to mailbot.decide.messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailbot.cases import closed, exclude, include, is_party, reminders_in_cycle
from mailbot.decide.messages import Message, message
from mailbot.decide.policy import (
    Policy,
    SendMail,
    calendar_for,
    closure,
    customer_slots,
    live_customers,
    plan_next,
    reminder,
)
from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, InboundMail


@dataclass(frozen=True)
class Command:
    name: str  # canonical name, or "" when unknown
    raw: str  # the line as written
    args: tuple[str, ...] = ()
    problem: Message | None = None  # why it cannot be carried out (unknown command, bad argument)
    closure: ClosureFields | None = None
    snooze_days: int | None = None
    snooze_until: date | None = None

    @property
    def error(self) -> str:
        """The problem in English ("" when none)."""
        return str(self.problem) if self.problem else ""


# (the case as the command leaves it, whether it was carried out, what to say, the mails it asks for)
Result = tuple[Case, bool, Message, list[SendMail]]
Effect = Callable[[Case, Command, InboundMail, datetime, Policy], Result]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    english: tuple[str, ...]  # spellings, matched case-insensitively after NFKC
    chinese: tuple[str, ...]  # Simplified and Traditional
    help: Mapping[str, str]  # language → the line `#help` shows
    effect: Effect
    parse: Callable[[str, str, tuple[str, ...]], Command] = lambda name, raw, args: Command(name, raw, args)
    arguments: Mapping[str, str] = field(default_factory=dict)  # Chinese spelling of an argument → English
    without_case: Message | None = None  # carried out without a case (`#help`); else "no case found"
    details: Callable[[Case | None, Policy, str], tuple[str, ...]] | None = None  # lines under the receipt


def expected(name: str, raw: str, args: tuple[str, ...], usage: str) -> Command:
    return Command(name, raw, args, problem=message("command.expected", usage=usage))


# --- argument parsers ------------------------------------------------------------------------------


def _snooze(name: str, raw: str, args: tuple[str, ...]) -> Command:
    lowered = tuple(a.lower() for a in args)
    if len(lowered) == 1 and (m := re.fullmatch(r"(\d{1,3})\s*(?:d|day|days|天)?", lowered[0])):
        return Command(name, raw, args, snooze_days=int(m.group(1)))
    if len(lowered) == 2 and lowered[0] in ("until", "至", "到"):
        try:
            return Command(name, raw, args, snooze_until=date.fromisoformat(lowered[1]))
        except ValueError:
            return Command(name, raw, args, problem=message("command.bad_date", value=args[1]))
    return expected(name, raw, args, "'#snooze 3d' or '#snooze until YYYY-MM-DD'")


def _one_of(usage: str, *accepted: tuple[str, ...]) -> Callable[[str, str, tuple[str, ...]], Command]:
    """A parser that takes exactly one of `accepted` argument lists (lower-cased)."""
    def parse(name: str, raw: str, args: tuple[str, ...]) -> Command:
        if tuple(a.lower() for a in args) not in accepted:
            return expected(name, raw, args, usage)
        return Command(name, raw, args)
    return parse


def _timezone(name: str, raw: str, args: tuple[str, ...]) -> Command:
    if len(args) != 1 or not _is_zone(args[0]):
        return expected(name, raw, args, "an IANA time zone, e.g. '#timezone Europe/Berlin'")
    return Command(name, raw, args)


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `America` is a folder of tzdata, not a zone
        return False
    return "/" in name or name == "UTC"


# One address as people paste it: `a@b.example`, `<a@b.example>`, `a@b.example,` — bounded, no spaces.
_ADDRESS = re.compile(r"[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,255}\.[A-Za-z0-9-]{2,63}")
MAX_ADDRESSES = 20  # per command line


def _addresses(name: str, raw: str, args: tuple[str, ...]) -> Command:
    """`#add a@x.example, <b@y.example>`: the addresses, lower-cased; any word that is not one is an error
    (nothing half-done)."""
    words = [w for a in args for w in re.split(r"[,;，；]", a) if w.strip("<> ")]
    found = [w.strip("<> ").lower() for w in words]
    bad = [w for w, f in zip(words, found, strict=True) if not _ADDRESS.fullmatch(f)]
    if not found or bad or len(found) > MAX_ADDRESSES:
        why = f"not an address: {bad[0]!r}" if bad else f"at most {MAX_ADDRESSES} addresses" if found else "no address"
        return expected(name, raw, args, f"'#{name} name@example.com' ({why})")
    return Command(name, raw, tuple(dict.fromkeys(found)))


# --- effects ---------------------------------------------------------------------------------------


def _left_out(plain: str, left_out: str, send: SendMail, policy: Policy, **params: object) -> Message:
    if not send.left_out:
        return message(plain, **params)
    return message(left_out, **params, count=len(send.left_out), cap=policy.max_recipients,
                   addresses=", ".join(send.left_out))


def _close(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    if case.status == CaseStatus.CLOSED:
        return case, False, message("close.already_closed"), []
    if not live_customers(case):
        return closed(case).with_(closure=command.closure), True, message("close.no_customer"), []
    send = closure(case, policy, command.closure, f"cmd/{mail.message_id}")
    return case.with_(closure=command.closure), True, _left_out("close.sent", "close.sent_left_out", send, policy), [send]


def _snooze_effect(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    cal = calendar_for(case, policy)
    if command.snooze_days is not None:
        until = cal.add_business_days(now, command.snooze_days)
    else:
        assert command.snooze_until is not None
        until = cal.first_opening(command.snooze_until)
    if until <= now:
        return case, False, message("snooze.past"), []
    shown = until.astimezone(cal.zone).strftime("%Y-%m-%d %H:%M")
    return case.with_(snoozed_until=until), True, message("snooze.held_until", until=shown), []


def _followup(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    on = command.args[0].lower() in ("on", "开")
    return case.with_(followup_enabled=on), True, message("followup.on" if on else "followup.off"), []


def _remind(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    if case.status != CaseStatus.WAITING_CUSTOMER or not live_customers(case):
        return case, False, message("remind.not_waiting"), []
    send = reminder(case, policy, reason=f"cmd/{mail.message_id}")
    said = _left_out("remind.sent", "remind.sent_left_out", send, policy, number=send.reminder_number)
    return case, True, said, [send]


def _waiting(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    target = {"customer": CaseStatus.WAITING_CUSTOMER, "engineer": CaseStatus.WAITING_ENGINEER,
              "vendor": CaseStatus.WAITING_VENDOR}[command.args[0].lower()]
    updated = case.with_(status=target)
    if target == CaseStatus.WAITING_CUSTOMER and case.last_engineer_mail is None:
        updated = updated.with_(last_engineer_mail=now)
    return updated, True, message("waiting.set", status=target.value), []


def _skip(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    """`#skip`: the case's next scheduled mail to the customer is not sent, and the plan moves on by one step's
    interval from when it was due (a reminder: every_business_days; the closure: close_after_business_days),
    the same as if it had gone out unanswered — without telling the customer anything. A reminder the daily
    cap holds for a later opening (on the timeline, dated when it goes out) is that next mail: it is taken
    off the timeline here, and mailbot.decide.inbound cancels its outbox entry."""
    if case.status == CaseStatus.CLOSED:
        return case, False, message("skip.nothing"), []
    cal = calendar_for(case, policy)
    held = [e for e in case.timeline if e.kind == EntryKind.REMINDER and e.direction == "out" and e.date > now]
    if held:
        due, kind, number = held[0].date, "reminder", reminders_in_cycle(case)
        case = case.with_(timeline=tuple(e for e in case.timeline if e is not held[0]),
                          reminders_sent=max(0, case.reminders_sent - 1))
    else:
        action = plan_next(case, policy)
        if action is None or action.kind not in ("reminder", "closure"):
            return case, False, message("skip.nothing"), []
        due, kind, number = action.due, action.kind, reminders_in_cycle(case) + 1
    f = policy.followup
    until = cal.add_business_days(max(due, now), f.every_business_days if kind == "reminder" else
                                  f.close_after_business_days)
    skipped = case.with_(snoozed_until=max(until, case.snoozed_until or until))
    after = plan_next(skipped, policy)
    zone = cal.zone
    what = message("skip.reminder", number=number) if kind == "reminder" else message("skip.closure")
    return skipped, True, message("skip.done", what=what, due=f"{due.astimezone(zone):%Y-%m-%d %H:%M}",
                                  next=f"{after.due.astimezone(zone):%Y-%m-%d %H:%M}" if after else "-"), []


def _called(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    return case.with_(phone_call_logged=True), True, message("called.logged"), []


def _reopen(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    if case.status != CaseStatus.CLOSED:
        return case, False, message("reopen.not_closed"), []
    return case.with_(status=CaseStatus.OPEN, closure=None), True, message("reopen.done"), []


def _lang(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    lang = "en" if command.args[0].lower() == "en" else "zh-CN"
    return case.with_(language_override=lang), True, message("lang.set", language=lang), []


def _timezone_effect(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    zone = command.args[0]
    return case.with_(timezone=zone), True, message("timezone.set", zone=zone), []


def _add(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    """`#add`: the engineer includes people; from now on they get the case's reminders and closure."""
    addresses = command.args
    ours = [a for a in addresses if a in policy.bot_addresses or a in case.engineers
            or a in policy.engineers.addresses or a.rpartition("@")[2] in policy.engineers.domains]
    if ours:
        return case, False, message("add.ours", addresses=", ".join(ours)), []
    new = [a for a in addresses if not is_party(case, a) or a in case.failed_addresses]
    if not new:
        return case, True, message("add.already", addresses=", ".join(addresses)), []
    slots = customer_slots(case, policy)
    live = [c for c in live_customers(case) if c not in new]
    if len(live) + len(new) > slots:
        return case, False, message("add.over_cap", addresses=", ".join(new), slots=slots,
                                    cap=policy.max_recipients), []
    # An engineer who adds a bounced address again means it works now: reminders go there again.
    updated = include(case, *new).with_(
        failed_addresses=tuple(f for f in case.failed_addresses if f not in new))
    return updated, True, message("add.done", addresses=", ".join(new)), []


def _remove(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    absent = [a for a in command.args if not is_party(case, a)]
    if absent:
        return case, False, message("remove.absent", addresses=", ".join(absent)), []
    return exclude(case, *command.args), True, message("remove.done", addresses=", ".join(command.args)), []


def _status(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    return case, True, message("status.card"), []


def _help(case: Case, command: Command, mail: InboundMail, now: datetime, policy: Policy) -> Result:
    return case, True, message("help.listed"), []


def status_card(case: Case | None, policy: Policy, language: str) -> tuple[str, ...]:
    if case is None:
        return ()
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


def help_lines(case: Case | None, policy: Policy, language: str) -> tuple[str, ...]:
    return tuple(spec.help.get(language, spec.help["en"]) for spec in SPECS)


# In the order `#help` lists them.
SPECS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "close", ("close",), ("关闭", "结案", "關閉", "結案"), effect=_close, help={
            "en": "#close (then optional lines Problem: / Analysis: / Summary:) — send the closure summary and close",
            "zh-CN": "#关闭（下一行起可写 问题描述: / 问题分析: / 问题总结:）— 发送结案总结并关闭案例"}),
    CommandSpec(
        "snooze", ("snooze",), ("暂停", "暫停"), effect=_snooze_effect, parse=_snooze, help={
            "en": "#snooze 3d | #snooze until 2021-05-10 — hold reminders",
            "zh-CN": "#暂停 3d | #暂停 until 2021-05-10 — 暂停提醒"}),
    CommandSpec(
        "followup", ("followup", "follow-up"), ("跟进", "跟進"), effect=_followup,
        parse=_one_of("'#followup on' or '#followup off'", ("on",), ("off",), ("开",), ("关",)),
        arguments={"打开": "on", "开启": "on", "关闭": "off"}, help={
            "en": "#followup off | #followup on — stop or resume reminders for this case",
            "zh-CN": "#跟进 off | #跟进 on — 停止或恢复本案例的提醒"}),
    CommandSpec(
        "remind", ("remind",), ("提醒",), effect=_remind,
        parse=_one_of("'#remind now'", (), ("now",), ("立即",)), arguments={"现在": "now", "马上": "now"}, help={
            "en": "#remind now — send the next reminder at once",
            "zh-CN": "#提醒 now — 立即发送下一封提醒"}),
    CommandSpec(
        "waiting", ("waiting",), ("等待",), effect=_waiting,
        parse=_one_of("'#waiting customer', 'engineer' or 'vendor'", ("customer",), ("engineer",), ("vendor",)),
        arguments={"客户": "customer", "客戶": "customer", "用户": "customer", "工程师": "engineer",
                   "工程師": "engineer", "我方": "engineer", "厂商": "vendor", "廠商": "vendor", "供应商": "vendor",
                   "供應商": "vendor", "第三方": "vendor"}, help={
            "en": "#waiting customer | engineer | vendor — who the case is waiting on",
            "zh-CN": "#等待 客户 | 工程师 | 厂商 (customer | engineer | vendor) — 案例正在等待哪一方"}),
    CommandSpec(
        "skip", ("skip",), ("跳过", "跳過"), effect=_skip, parse=_one_of("'#skip' (in a digest reply: '#skip CAS-…')", ()),
        help={"en": "#skip — do not send the case's next scheduled mail; the plan moves on",
              "zh-CN": "#跳过 — 不发送本案例下一封计划中的邮件，计划顺延"}),
    CommandSpec(
        "called", ("called",), ("已致电", "致电", "已致電"), effect=_called, help={
            "en": "#called — log a phone call attempt (reminders may then say we could not reach the customer)",
            "zh-CN": "#已致电 — 记录一次电话联系（此后提醒中可说明电话未能联系上客户）"}),
    CommandSpec(
        "reopen", ("reopen",), ("重开", "重新打开", "重開"), effect=_reopen, help={
            "en": "#reopen — reopen a closed case",
            "zh-CN": "#重开 — 重新打开已关闭的案例"}),
    CommandSpec(
        "lang", ("lang", "language"), ("语言", "語言"), effect=_lang,
        parse=_one_of("'#lang en' or '#lang zh-CN'", ("en",), ("zh-cn",), ("zh",)),
        arguments={"英文": "en", "英语": "en", "英語": "en", "中文": "zh-CN", "简体中文": "zh-CN", "汉语": "zh-CN",
                   "漢語": "zh-CN"}, help={
            "en": "#lang en | zh-CN — language of the mail to the customer",
            "zh-CN": "#语言 中文 | 英文 (zh-CN | en) — 发给客户的邮件语言"}),
    CommandSpec(
        "timezone", ("timezone", "tz"), ("时区", "時區"), effect=_timezone_effect, parse=_timezone, help={
            "en": "#timezone Europe/Berlin — count business days and hours in the customer's time zone",
            "zh-CN": "#时区 Europe/Berlin — 按客户所在时区计算工作日和工作时间"}),
    CommandSpec(
        "add", ("add",), ("添加", "加入", "增加"), effect=_add, parse=_addresses, help={
            "en": "#add ADDRESS — include someone: they get the case's reminders and closure from now on",
            "zh-CN": "#添加 地址 — 把某人加入本案例的客户：此后的提醒和结案总结都会发给他"}),
    CommandSpec(
        "remove", ("remove",), ("移除", "删除", "刪除", "去掉"), effect=_remove, parse=_addresses, help={
            "en": "#remove ADDRESS — stop sending the case's reminders and closure to someone",
            "zh-CN": "#移除 地址 — 不再向某人发送本案例的提醒和结案总结"}),
    CommandSpec(
        "status", ("status",), ("状态", "狀態"), effect=_status, details=status_card, help={
            "en": "#status — reply with the case card",
            "zh-CN": "#状态 — 回复案例卡片"}),
    CommandSpec(
        "help", ("help",), ("帮助", "幫助"), effect=_help, without_case=message("help.listed"), details=help_lines,
        help={"en": "#help — this list", "zh-CN": "#帮助 — 本列表"}),
)

BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in SPECS}
# Canonical name ← every spelling.
ALIASES: dict[str, str] = {alias: spec.name for spec in SPECS for alias in (*spec.english, *spec.chinese)}
HELP: dict[str, list[str]] = {lang: [spec.help[lang] for spec in SPECS] for lang in ("en", "zh-CN")}


def parse(name: str, raw: str, args: tuple[str, ...]) -> Command:
    """A known command's arguments: Chinese spellings to English (`#等待 客户`), then its own parser."""
    spec = BY_NAME[name]
    if spec.arguments and len(args) == 1:
        args = (spec.arguments.get(args[0], args[0]),)
    return spec.parse(name, raw, args)
