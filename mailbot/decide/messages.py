"""What the bot says to engineers (command results, notices): one id, one template per language — pure.

Code builds `Message(id, params)` values; they are rendered in the receipt's language only at the end, so a
reworded English text cannot silently lose its Chinese (a test checks that every id has both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LANGUAGES = ("en", "zh-CN")

_CAP = "([smtp] max_recipients = {cap})"  # the setting's name is the same in both languages

MESSAGES: dict[str, dict[str, str]] = {
    # --- the verdict line of a receipt ---
    "receipt.done": {"en": "done", "zh-CN": "已完成"},
    "receipt.not_done": {"en": "not done", "zh-CN": "未执行"},
    # --- finding commands ---
    "command.unknown": {"en": "unknown command #{word}", "zh-CN": "未知指令"},
    "command.too_many": {
        "en": "too many commands: at most {limit} in one mail; this one and those after it were not carried out",
        "zh-CN": "指令过多：一封邮件最多 {limit} 条，此条及之后的指令未执行"},
    "command.expected": {"en": "expected {usage}", "zh-CN": "格式不对"},
    "command.bad_date": {"en": "bad date {value!r}: expected YYYY-MM-DD", "zh-CN": "日期无效"},
    "command.no_case": {
        "en": "no case found: put the case number in the subject or reply in its thread",
        "zh-CN": "没有找到案例：请在标题中写上案例号，或在案例邮件的线程中回复"},
    # --- what each command did ---
    "help.listed": {"en": "the commands are listed below", "zh-CN": "指令列表如下"},
    "close.already_closed": {"en": "the case is already closed (use #reopen first)",
                             "zh-CN": "案例已经关闭（如需重开请先发送 #reopen）"},
    "close.no_customer": {"en": "closed; no customer address to send the summary to",
                          "zh-CN": "案例已关闭；没有可以发送结案总结的客户地址"},
    "close.sent": {"en": "closure summary sent, case closed", "zh-CN": "结案总结已发送，案例已关闭"},
    "close.sent_left_out": {
        "en": "closure summary sent, case closed; {count} customer(s) left out by the recipient cap "
              + _CAP + ": {addresses}",
        "zh-CN": "结案总结已发送，案例已关闭；受收件人上限（[smtp] max_recipients）所限，{count} 位客户没有收到：{addresses}"},
    "snooze.past": {"en": "that date is in the past", "zh-CN": "该日期已经过去"},
    "snooze.held_until": {"en": "reminders held until {until}", "zh-CN": "提醒暂停至 {until}"},
    "followup.on": {"en": "reminders resumed", "zh-CN": "提醒已恢复"},
    "followup.off": {"en": "reminders stopped", "zh-CN": "提醒已停止"},
    "remind.not_waiting": {"en": "the case is not waiting on a customer we can reach",
                           "zh-CN": "案例当前不在等待客户，或没有可以联系的客户地址"},
    "remind.sent": {"en": "reminder {number} sent", "zh-CN": "第 {number} 封提醒已发送"},
    "remind.sent_left_out": {
        "en": "reminder {number} sent; {count} customer(s) left out by the recipient cap " + _CAP + ": {addresses}",
        "zh-CN": "第 {number} 封提醒已发送；受收件人上限（[smtp] max_recipients）所限，{count} 位客户没有收到：{addresses}"},
    "waiting.set": {"en": "status set to {status}", "zh-CN": "状态已设为 {status}"},
    "skip.done": {"en": "{what} due {due} will not be sent; the next mail of the case is planned for {next}",
                  "zh-CN": "原定 {due} 发出的{what}不再发送；本案例的下一封邮件计划于 {next} 发出"},
    "skip.reminder": {"en": "reminder {number}", "zh-CN": "第 {number} 封提醒"},
    "skip.closure": {"en": "the closure summary", "zh-CN": "结案总结"},
    "skip.nothing": {"en": "nothing is scheduled for the customer: nothing to skip",
                     "zh-CN": "本案例没有计划发给客户的邮件，无需跳过"},
    # --- a command line that names its case (a digest reply, a mail whose subject names no case) ---
    "named.no_key": {
        "en": "no case named: write the case number after the command (#skip CAS-…), or put it in the subject",
        "zh-CN": "没有指明案例：请在指令后写上案例号（如 #跳过 CAS-…），或在标题中写上案例号"},
    "named.unknown": {"en": "no case {key}", "zh-CN": "没有案例 {key}"},
    "named.other_case": {
        "en": "names case {key}, but this mail is about case {case}: send it in a mail whose subject names no case",
        "zh-CN": "指令指明的是案例 {key}，而本邮件属于案例 {case}：请在标题不含案例号的邮件中发送"},
    "called.logged": {"en": "phone call attempt logged", "zh-CN": "已记录一次电话联系"},
    "reopen.not_closed": {"en": "the case is not closed", "zh-CN": "案例并未关闭"},
    "reopen.done": {"en": "case reopened", "zh-CN": "案例已重新打开"},
    "lang.set": {"en": "language set to {language}", "zh-CN": "语言已设为 {language}"},
    "status.card": {"en": "case card below", "zh-CN": "案例信息如下"},
    "timezone.set": {"en": "business days and hours now counted in {zone}", "zh-CN": "工作日和工作时间现按 {zone} 计算"},
    "add.done": {"en": "{addresses} added to the customers", "zh-CN": "已将 {addresses} 加入本案例的客户"},
    "add.already": {"en": "{addresses} already a customer of the case", "zh-CN": "{addresses} 已经是本案例的客户"},
    "add.ours": {"en": "refused: {addresses} is an engineer or the bot, never a customer",
                 "zh-CN": "已拒绝：{addresses} 是工程师或机器人，不能作为客户"},
    "add.over_cap": {
        "en": "cannot add {addresses}: one mail goes to at most {slots} customer(s) " + _CAP + "; #remove someone first",
        "zh-CN": "无法添加 {addresses}：一封邮件最多发给 {slots} 位客户（[smtp] max_recipients），请先 #移除 其他客户"},
    "remove.done": {"en": "{addresses} removed from the customers", "zh-CN": "已将 {addresses} 从本案例的客户中移除"},
    "remove.absent": {"en": "{addresses}: not a customer of the case", "zh-CN": "{addresses} 不是本案例的客户"},
    # --- a mail the daily cap holds (the receipt must not call it sent) ---
    "held.closure": {"en": "closure summary recorded, case closed; it goes out at {at} ({why})",
                     "zh-CN": "结案总结已记录，案例已关闭；因 {why}，将于 {at} 发出"},
    "held.reminder": {"en": "reminder {number} recorded; it goes out at {at} ({why})",
                      "zh-CN": "第 {number} 封提醒已记录；因 {why}，将于 {at} 发出"},
    "held.daily_cap": {"en": "{address} already got {cap} mails today", "zh-CN": "{address} 今天已收到 {cap} 封邮件（每日上限）"},
    # A reason read back from the outbox ledger, where it was stored as its English text.
    "text": {"en": "{text}", "zh-CN": "{text}"},
    # --- notices to the case's engineers ---
    "refused.not_engineer": {"en": "refused: {sender} is not an engineer", "zh-CN": "已拒绝：{sender} 不是工程师"},
    "refused.unauthenticated": {"en": "refused: {why}", "zh-CN": "已拒绝：发件人验证未通过"},
    "forged": {"en": "mail from {sender} failed authentication ({why}): recorded as an outsider's, nothing done",
               "zh-CN": "来自 {sender} 的邮件未通过发件人验证（{why}）：仅作为外部人员的邮件记录，未执行任何操作"},
    "outsider": {"en": "{address} wrote into the case; write to them, or #add {address}, to include them",
                 "zh-CN": "{address} 给本案例来信，但不是本案例的客户，收不到案例的任何邮件。如需包括此人，"
                          "请直接给其写信，或发送 #添加 {address}"},
    "strangers.summary": {
        "en": "more than {limit} people who are not customers wrote into the case today; no more notices about "
              "them today: see the case's timeline (mailbot case {key})",
        "zh-CN": "今天已有超过 {limit} 位非本案例客户的人来信；今天不再逐一通知，详见案例时间线（mailbot case {key}）"},
    "bounce": {"en": "mail to {addresses} bounced; no more reminders go there",
               "zh-CN": "发往 {addresses} 的邮件被退回，此后不再向该地址发送提醒"},
    "undeliverable": {"en": "could not deliver to {addresses}: {reason}", "zh-CN": "无法投递到 {addresses}：{reason}"},
    "ooo.held": {
        "en": "out-of-office until {back}: reminders held until {until}; the next reminder moves from {before} "
              "to {after}",
        "zh-CN": "客户自动回复称 {back} 返回：提醒暂停至 {until}；下一封提醒从 {before} 推迟到 {after}"},
    "ooo.held_capped": {
        "en": "out-of-office until {back}, held at most {limit} days: reminders held until {until}; the next "
              "reminder moves from {before} to {after}",
        "zh-CN": "客户自动回复称 {back} 返回，最多暂停 {limit} 天：提醒暂停至 {until}；下一封提醒从 {before} 推迟到 {after}"},
}


@dataclass(frozen=True)
class Message:
    """A text to say, not yet in any language: an id of MESSAGES and the values its templates name (a value
    may itself be a Message, rendered in the same language). `str()` is the English, for logs and notes."""

    id: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return render(self, "en")

    def replacing(self, old: str, new: str) -> Message:
        """The same message with `old` replaced by `new` in every text value (an address shown escaped)."""
        def swap(v: Any) -> Any:
            return v.replace(old, new) if isinstance(v, str) else v.replacing(old, new) if isinstance(v, Message) else v
        return Message(self.id, {k: swap(v) for k, v in self.params.items()})


def message(id: str, **params: Any) -> Message:
    if id not in MESSAGES:
        raise KeyError(f"no message {id!r} in mailbot.messages.MESSAGES")
    return Message(id, params)


def render(msg: Message, language: str) -> str:
    templates = MESSAGES[msg.id]
    values = {k: render(v, language) if isinstance(v, Message) else v for k, v in msg.params.items()}
    return templates.get(language, templates["en"]).format(**values)


def localized(msg: Message, ok: bool, language: str) -> str:
    """The text in the receipt's language. A refusal in Chinese keeps the English beside it, so that the
    exact reason (a date, a command as written) is never lost in translation."""
    english = render(msg, "en")
    if language != "zh-CN":
        return english
    chinese = render(msg, "zh-CN")
    return chinese if ok else f"{chinese}（{english}）"
