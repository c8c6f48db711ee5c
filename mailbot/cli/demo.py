"""`mailbot demo`: a support case's life on the embedded default (a temp Maildir and an outbox folder)."""

from __future__ import annotations

import email
import shutil
import tempfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime
from pathlib import Path

from mailbot.cli import views
from mailbot.config import from_dict
from mailbot.mailbox.maildir import deliver
from mailbot.wiring import make_service, open_store

KEY = "CAS-04027-B7D2Z5"
SUBJECT = f"[案例号: {KEY} ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"
ENGINEER = ("Li Qi", "liqi@support.example")
CUSTOMER = ("杨先生", "yang@customer.example")
BOT = "casebot@support.example"


def _mail(sender: tuple[str, str], to: list[tuple[str, str]], subject: str, when: datetime, mid: str, body: str,
          cc: str | None = BOT, reply_to: str | None = None, extra: dict[str, str] | None = None,
          charset: str = "utf-8") -> bytes:
    msg = EmailMessage(policy=default)
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = ", ".join(f"{n} <{a}>" for n, a in to)
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = mid
    if reply_to:
        msg["In-Reply-To"] = reply_to
        msg["References"] = reply_to
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content(body, charset=charset)
    return msg.as_bytes()


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


INITIAL = """杨先生，您好：
按今天电话里的约定，把目前的排查情况整理如下，请您查阅：
1，单位内数十台终端出现蓝屏（含 Win7），约占 1000 余台终端的 10%。
2，远程分析了一台随机蓝屏的终端：bugcheck 均为 0x13A（内核模式堆损坏）。
下一步：请用附件中的日志收集工具收集日志，并上传到下面的 SFTP：
   地址：sftp://upload.support.example:22222
   账户名：case04027
   密码：Xk93-fake-Pw77
如有问题请随时联系我。
Li Qi
"""

CLOSE = """#close
问题描述: 用户反馈操作系统频繁蓝屏，需要紧急处理
问题分析: 蓝屏由第三方软件 inode 的兼容性导致，与操作系统无关
问题总结: 经用户确认，本案例暂做归档处理
"""


def story() -> list[tuple[str, datetime, list[bytes]]]:
    """(what happens, when the bot wakes up, mails that arrived before)."""
    initial = _mail(ENGINEER, [CUSTOMER], SUBJECT, _at("2021-04-13T01:52:59+08:00"), "<initial-04027@support.example>",
                    INITIAL, charset="gb18030")
    ooo = _mail(CUSTOMER, [ENGINEER], "自动回复: " + SUBJECT, _at("2021-04-13T01:53:30+08:00"), "<ooo-1@customer.example>",
                "您好，我目前外出，4月14日返回，期间邮件可能无法及时回复。", cc=None,
                reply_to="<initial-04027@support.example>", extra={"Auto-Submitted": "auto-replied"})
    reply = _mail(CUSTOMER, [ENGINEER], "答复: " + SUBJECT, _at("2021-04-22T10:10:00+08:00"), "<reply-1@customer.example>",
                  "Li 工程师您好：\n日志已经上传，第三方厂商今天也在现场，我们先观察两天。\n谢谢！\n杨\n\n"
                  "发件人: Li Qi <liqi@support.example>\n发送时间: 2021年4月13日 1:52\n主题: " + SUBJECT + "\n\n"
                  + INITIAL, reply_to="<initial-04027@support.example>")
    close = _mail(ENGINEER, [("", BOT)], "RE: " + SUBJECT, _at("2021-04-23T11:00:00+08:00"), "<close-04027@support.example>",
                  CLOSE, cc=None, reply_to="<reply-1@customer.example>")
    return [
        ("Tue 13 Apr 02:00 — engineer Li Qi answers the customer (CC the bot); an out-of-office comes back",
         _at("2021-04-13T02:00:00+08:00"), [initial, ooo]),
        ("Fri 16 Apr 09:00 — Li Qi's daily digest lists what goes out in his name; three business days of "
         "silence: first reminder",
         _at("2021-04-16T09:00:00+08:00"), []),
        ("Wed 21 Apr 09:00 — still silent: the firmer second reminder",
         _at("2021-04-21T09:00:00+08:00"), []),
        ("Thu 22 Apr 10:15 — the customer replies (quoted history is cut off); reminders stop",
         _at("2021-04-22T10:15:00+08:00"), [reply]),
        ("Thu 22 Apr 14:10 — nobody has answered the customer for four business hours: a nudge to Li Qi",
         _at("2021-04-22T14:10:00+08:00"), []),
        ("Fri 23 Apr 11:05 — Li Qi tells the bot `#close` with the summary: closure sent, receipt to Li Qi",
         _at("2021-04-23T11:05:00+08:00"), [close]),
    ]


def run_demo(keep: bool = False) -> int:
    out = views.console()
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-demo-"))
    try:
        settings = from_dict({
            # Two mails a cycle: parsed in the demo's own process, no workers to fork.
            "bot": {"address": BOT, "name": "casebot", "state_dir": "state", "parse_workers": 1},
            "engineers": {"domains": ["support.example"]},
            "mailbox": {"kind": "maildir", "path": "maildir"},
            # The engineers' side at its defaults: a nudge after 4 business hours, a digest at 09:00.
            "nudge": {"after_business_hours": 4}, "digest": {"at": "09:00"},
        }, workdir)
        store = open_store(settings, working=True)  # the demo's bot is its store's one writer
        outbox = settings.bot.state_dir / "outbox"  # where the configured outbox transport writes
        service = make_service(settings, store)  # the Maildir and the outbox folder, as `mailbot run` wires them
        zone = settings.bot.zone
        out.rule("[bold]mailbot demo[/bold] — one support case, start to finish")
        out.print(f"Working in {workdir} (Maildir {settings.mailbox.path.name}/, outbox state/outbox/).", markup=False)
        seen: set[str] = set()
        digests_shown = 0
        for what, now, mails in story():
            out.print()
            out.rule(what, align="left")
            for raw in mails:
                deliver(settings.mailbox.path, raw)
            report = service.run_once(now)
            out.print(f"bot cycle at {now.astimezone(zone):%Y-%m-%d %H:%M}: ingested {report.ingested}, "
                      f"opened {report.opened}, sent {report.sent}", markup=False)
            for path in sorted(outbox.glob("*.eml")) if outbox.exists() else []:
                if path.name in seen:
                    continue
                seen.add(path.name)
                msg = email.message_from_bytes(path.read_bytes(), policy=default)
                body = msg.get_body(("plain",))
                text = body.get_content() if body is not None else ""
                out.print(f"  ✉ sent to {msg['To']}{' cc ' + str(msg['Cc']) if msg['Cc'] else ''}", markup=False)
                out.print(f"    Subject: {msg['Subject']}", markup=False)
                if "案例摘要" in str(msg["Subject"]):  # every business day brings one: the first is shown whole
                    digests_shown += 1
                    if digests_shown > 1:
                        continue
                    text = "\n".join(line for line in text.splitlines() if line.strip())
                for line in text.strip().splitlines()[:14]:
                    out.print(f"    │ {line}", markup=False)
                out.print("    │ …", markup=False)
            case = store.get_case(KEY)
            if case is not None:
                nxt = "nothing scheduled" if case.next_action is None else \
                    f"{case.next_action.kind} on {case.next_action.due.astimezone(zone):%a %d %b %H:%M}"
                out.print(f"  case {case.key}: status [bold]{case.status.value}[/bold], reminders sent "
                          f"{case.reminders_sent}, next: {nxt}")
        out.print()
        out.rule("the case file", align="left")
        case = store.get_case(KEY)
        if case is not None:
            views.print_case(case, zone)
        secret_found = any(b"Xk93-fake-Pw77" in p.read_bytes() for p in settings.bot.state_dir.rglob("*") if p.is_file())
        out.print(f"\nThe SFTP password pasted in the first mail appears in the bot's store or outbox: "
                  f"{'YES (bug!)' if secret_found else 'no (masked)'}", markup=False)
        out.print("Try it yourself: see README.md ('Quick start') and `mailbot --help`.", markup=False)
        return 1 if secret_found else 0
    finally:
        if keep:
            out.print(f"(kept {workdir})", markup=False)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
