"""Realistic support-case mail for the benchmarks, deterministic for a given seed.

Threads of several messages: an engineer's initial response (`[案例号: CAS-12345-ABCDEF ] % 标题 % 初次响应
CMIT:0001234`), customer and engineer replies with `回复:` / `答复:` / `RE:` prefixes and Outlook-style quoted
history under `发件人:` / `发送时间:` (or `From:` / `Sent:`), some replies whose client dropped the case tag
(threaded only by In-Reply-To), out-of-office auto-replies, an occasional `#close` command to the bot, and
attachments of a few KB. Chinese mail comes as GB18030, GBK, UTF-8 and the classic trap — GBK-only characters
labelled gb2312; English mail as UTF-8. Engineers write from @support.example, customers from elsewhere.
A typical message is about 12 KB (text and HTML alternatives, base64, quoted history, attachment).

    python bench/generate.py OUT_MAILDIR [--messages 2000] [--threads 400] [--seed 7]

writes OUT_MAILDIR/new/ (file names sort in arrival order); `generate()` returns the bytes instead.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

BOT = "casebot@support.example"
SHANGHAI = timezone(timedelta(hours=8))
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # a Monday morning in Shanghai

ENGINEERS = [
    ("Li Qi", "liqi"), ("王磊", "wanglei"), ("Zhang Wei", "zhangwei"), ("陈静", "chenjing"),
    ("Liu Yang", "liuyang"), ("赵敏", "zhaomin"), ("Sun Hao", "sunhao"), ("周晓峰", "zhouxf"),
]
SURNAMES = "杨王李张刘陈赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = ["先生", "女士", "工", "经理", "主任"]
RARE_NAMES = ["朱镕基", "王堃", "李喆", "陈昇"]  # GBK-only characters: the gb2312-label trap
EN_CUSTOMERS = ["John Smith", "Maria Garcia", "Ahmed Khan", "Yuki Tanaka", "Emma Brown", "Lars Nilsson"]
CUSTOMER_DOMAINS = [
    "customer.example", "bank-of-example.cn", "example-hospital.org.cn", "metro-example.com.cn",
    "gov-example.cn", "example-energy.com", "example-retail.co.uk", "example-logistics.de",
]
ZH_TITLES = [
    "某单位终端频繁蓝屏", "邮件服务器无法发送外部邮件", "域控制器复制失败", "数据库备份作业超时",
    "虚拟机迁移后网络中断", "打印服务器队列卡死", "VPN 客户端频繁掉线", "存储阵列性能下降",
    "Exchange 日历同步异常", "文件服务器共享权限丢失", "补丁更新后应用程序崩溃", "负载均衡健康检查失败",
]
EN_TITLES = [
    "Terminals crash with a blue screen", "Outbound mail stuck in the queue", "Domain controller replication fails",
    "Nightly database backup times out", "Network lost after VM migration", "Print spooler hangs",
    "VPN client disconnects every hour", "Storage array latency spikes", "Calendar sync errors in Outlook",
]
ZH_SENTENCES = [
    "按今天电话里的约定，把目前的排查情况整理如下，请您查阅。",
    "远程分析了一台随机蓝屏的终端，bugcheck 均为 0x13A（内核模式堆损坏）。",
    "dump 显示触发问题的是第三方软件的驱动进程，与操作系统本身无关。",
    "请用附件中的日志收集工具收集日志，并上传到我们的 SFTP 服务器。",
    "我们已经在测试环境中复现了该问题，正在和研发部门确认修复方案。",
    "建议先在一台终端上卸载该软件，观察两天，看问题是否还会出现。",
    "日志已经上传，第三方厂商今天也在现场，我们先观察两天。",
    "昨晚又有三台终端出现了同样的现象，时间集中在早上八点左右。",
    "请问这个补丁是否可以在生产环境直接安装？是否需要重启服务器？",
    "我们按照您的建议修改了组策略，目前还没有再出现问题，谢谢！",
    "附件是今天早上导出的事件日志和系统信息，请帮忙分析一下。",
    "如果方便的话，明天上午十点我们可以远程会话一起排查。",
    "该问题影响了财务部门的日常工作，请尽快给出处理意见。",
    "根据日志中的错误代码，问题出在存储驱动程序的超时设置上。",
]
EN_SENTENCES = [
    "As agreed on the phone today, here is a summary of what we found so far.",
    "We analysed a memory dump from one of the affected machines: the bugcheck is 0x13A.",
    "The faulting module belongs to a third-party driver, not to the operating system.",
    "Please collect the logs with the attached tool and upload them to our SFTP server.",
    "We reproduced the issue in our lab and are checking the fix with the product team.",
    "Could you uninstall the agent on one machine and watch it for two days?",
    "The logs are uploaded; the vendor's engineer is on site today as well.",
    "Three more machines showed the same symptom last night, all around 8 am.",
    "Can this hotfix be installed in production directly, and does it need a reboot?",
    "We changed the group policy as suggested and have not seen the problem since. Thanks!",
    "Attached are this morning's event logs and the system information export.",
    "If convenient, we could start a remote session tomorrow at 10 am to look together.",
]
ATTACHMENTS = [
    ("system.log", "text/plain"), ("msinfo32.txt", "text/plain"), ("日志.zip", "application/zip"),
    ("screenshot.png", "image/png"), ("事件日志.evtx", "application/octet-stream"), ("config.xml", "text/xml"),
]


@dataclass(frozen=True)
class Mail:
    name: str  # Maildir file name; names sort in arrival order
    raw: bytes
    date: datetime
    thread: int
    kind: str  # initial | reply | reply-untagged | auto-reply | close


@dataclass
class _Thread:
    n: int
    key: str
    token: str
    lang: str
    charset: str  # the label written in the headers
    title: str
    engineer: tuple[str, str]
    customer: tuple[str, str]
    domain: str


def _case_key(rng: random.Random) -> str:
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return f"CAS-{rng.randint(10000, 99999)}-{''.join(rng.choice(alnum) for _ in range(6))}"


def _thread(rng: random.Random, n: int) -> _Thread:
    lang = "zh" if rng.random() < 0.75 else "en"
    if lang == "zh":
        charset = rng.choices(["gb18030", "gbk", "utf-8", "gb2312"], weights=[3, 3, 3, 1])[0]
        name = rng.choice(RARE_NAMES) if charset == "gb2312" and rng.random() < 0.5 else \
            rng.choice(SURNAMES) + rng.choice(GIVEN)
        title = rng.choice(ZH_TITLES) + rng.choice(["", "（紧急）", "，影响业务", f" {rng.randint(2, 9)} 台"])
    else:
        charset = "utf-8"
        name = rng.choice(EN_CUSTOMERS)
        title = rng.choice(EN_TITLES) + rng.choice(["", " (urgent)", " after upgrade", f" on {rng.randint(2, 9)} hosts"])
    domain = rng.choice(CUSTOMER_DOMAINS)
    eng_name, eng_user = rng.choice(ENGINEERS)
    cust_user = f"user{rng.randint(100, 999)}"
    return _Thread(n, _case_key(rng), f"CMIT:{rng.randint(1, 9999999):07d}", lang, charset, title,
                   (eng_name, f"{eng_user}@support.example"), (name, f"{cust_user}@{domain}"), domain)


def _codec(charset: str) -> str:
    # Outlook and Foxmail write GBK/GB18030 bytes whatever the label says: encode with the superset.
    return "gb18030" if charset in ("gb18030", "gbk", "gb2312") else charset


def _header(text: str, charset: str) -> str:
    if text.isascii():
        return text
    # Encoded words written by hand: the label is what the client claims, the bytes are what it wrote.
    words = []
    for i in range(0, len(text), 12):
        chunk = base64.b64encode(text[i:i + 12].encode(_codec(charset), "replace")).decode("ascii")
        words.append(f"=?{charset}?B?{chunk}?=")
    return "\r\n ".join(words)


def _addr(name: str, address: str, charset: str) -> str:
    return f"{_header(name, charset)} <{address}>" if name else address


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")


def _subject(t: _Thread, phase: str) -> str:
    if t.lang == "zh":
        return f"[案例号: {t.key} ] % {t.title} % {phase} {t.token}"
    return f"[Case #: {t.key} ] % {t.title} % {phase} {t.token}"


def _paragraph(rng: random.Random, t: _Thread, n: int) -> str:
    pool = ZH_SENTENCES if t.lang == "zh" else EN_SENTENCES
    return "\n".join(rng.choice(pool) for _ in range(n))


def _quote_block(t: _Thread, prev: dict[str, str]) -> str:
    if t.lang == "zh":
        head = (f"发件人: {prev['from']}\n发送时间: {prev['when_zh']}\n收件人: {prev['to']}\n"
                f"抄送: {BOT}\n主题: {prev['subject']}\n")
    else:
        head = (f"-----Original Message-----\nFrom: {prev['from']}\nSent: {prev['when_en']}\nTo: {prev['to']}\n"
                f"Cc: {BOT}\nSubject: {prev['subject']}\n")
    return head + "\n" + prev["body"]


def _html(text: str) -> str:
    paras = "".join(f"<p class=MsoNormal>{line or '&nbsp;'}</p>\r\n" for line in
                    text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").split("\n"))
    return ("<html><head><meta http-equiv=Content-Type content=\"text/html\"><style>p.MsoNormal{margin:0}"
            "</style></head><body lang=ZH-CN><div class=WordSection1>\r\n" + paras + "</div></body></html>")


def _attachment(rng: random.Random, boundary: str) -> str:
    name, ctype = rng.choice(ATTACHMENTS)
    size = rng.randint(3_000, 8_000)
    if ctype.startswith("text/"):
        lines = [f"2026-03-0{rng.randint(1, 9)} 0{rng.randint(0, 9)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} "
                 f"{rng.choice(['INFO', 'WARN', 'ERROR'])} svc[{rng.randint(100, 9999)}] event {rng.randint(1, 99999)}"
                 for _ in range(size // 60)]
        data = "\n".join(lines).encode("ascii")
    else:
        data = rng.randbytes(size)
    filename = name if name.isascii() else Header(name, "utf-8").encode()
    return (f"--{boundary}\r\nContent-Type: {ctype}; name=\"{filename}\"\r\n"
            f"Content-Description: {filename}\r\nContent-Disposition: attachment; filename=\"{filename}\"; "
            f"size={len(data)}\r\nContent-Transfer-Encoding: base64\r\n\r\n{_b64(data)}")


def _message(rng: random.Random, t: _Thread, *, sender: tuple[str, str], to: list[tuple[str, str]],
             cc: list[str], subject: str, when: datetime, mid: str, text: str, parents: list[str],
             in_reply_to: str | None, attach: bool, extra: list[str] | None = None, html: bool = True) -> bytes:
    cs, codec = t.charset, _codec(t.charset)
    headers = [
        f"From: {_addr(*sender, cs)}",
        "To: " + ", ".join(_addr(n, a, cs) for n, a in to),
        *([f"Cc: {', '.join(cc)}"] if cc else []),
        f"Subject: {_header(subject, cs)}",
        f"Date: {format_datetime(when.astimezone(SHANGHAI))}",
        f"Message-ID: {mid}",
        *([f"In-Reply-To: {in_reply_to}"] if in_reply_to else []),
        *(["References: " + "\r\n ".join(parents)] if parents else []),
        "MIME-Version: 1.0",
        f"X-Mailer: {rng.choice(['Microsoft Outlook 16.0', 'Foxmail 7.2.25', 'Microsoft Outlook 15.0'])}",
        f"Thread-Topic: {_header(t.title, cs)}",
        "Content-Language: " + ("zh-CN" if t.lang == "zh" else "en-US"),
        *(extra or []),
    ]
    plain = (f"--ALT\r\nContent-Type: text/plain; charset=\"{cs}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + _b64(text.replace("\n", "\r\n").encode(codec, "replace")))
    body = plain
    if html:
        body += (f"\r\n--ALT\r\nContent-Type: text/html; charset=\"{cs}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 + _b64(_html(text).encode(codec, "replace")))
    tag = f"{rng.getrandbits(64):016x}"
    alt = f"----=_NextPart_001_{tag}"
    body = body.replace("--ALT", f"--{alt}") + f"\r\n--{alt}--\r\n"
    if attach:
        mixed = f"----=_NextPart_000_{tag}"
        content = (f"Content-Type: multipart/mixed;\r\n\tboundary=\"{mixed}\"\r\n\r\n"
                   f"This is a multi-part message in MIME format.\r\n\r\n--{mixed}\r\n"
                   f"Content-Type: multipart/alternative;\r\n\tboundary=\"{alt}\"\r\n\r\n{body}\r\n"
                   f"{_attachment(rng, mixed)}\r\n--{mixed}--\r\n")
    else:
        content = f"Content-Type: multipart/alternative;\r\n\tboundary=\"{alt}\"\r\n\r\n{body}"
    return ("\r\n".join(headers) + "\r\n" + content).encode("ascii")


def _sizes(rng: random.Random, messages: int, threads: int) -> list[int]:
    if threads < 1 or messages < threads:
        raise ValueError("need at least one message per thread")
    sizes = [1] * threads
    for _ in range(messages - threads):
        # Longer threads attract more mail (a few long-running cases, many short ones).
        i = rng.randrange(threads) if rng.random() < 0.7 else max(rng.randrange(threads), rng.randrange(threads))
        sizes[i] += 1
    return sizes


def _msgid(rng: random.Random, domain: str) -> str:
    if domain == "support.example" or rng.random() < 0.5:
        return f"<{rng.getrandbits(96):024x}@{domain}>"
    return f"<TYZPR03MB{rng.getrandbits(40):010X}{rng.getrandbits(24):06X}@TYZPR03MB.apcprd03.prod.outlook.com>"


def generate(messages: int = 2000, threads: int = 400, seed: int = 7, span_days: float = 2.0,
             start: datetime = START) -> list[Mail]:
    """`messages` mails in `threads` threads, in arrival order (sorted by Date)."""
    rng = random.Random(seed)
    out: list[Mail] = []
    for n, size in enumerate(_sizes(rng, messages, threads)):
        t = _thread(rng, n)
        when = start + timedelta(hours=rng.uniform(0, span_days * 24))
        history: list[dict[str, str]] = []
        refs: list[str] = []
        last_mid: str | None = None
        i = 0
        close_at = size - 1 if size >= 3 and rng.random() < 0.15 else -1
        while i < size:
            customer_turn = i % 2 == 1
            zh = t.lang == "zh"
            if i == 0:
                kind, sender, to = "initial", t.engineer, [t.customer]
                subject = _subject(t, "初次响应" if zh else "Initial Response")
            elif i == close_at:
                kind, sender, to = "close", t.engineer, [("", BOT)]
                subject = "RE: " + _subject(t, "初次响应" if zh else "Initial Response")
            elif customer_turn and history and history[-1]["kind"] != "auto-reply" and rng.random() < 0.12:
                kind, sender, to = "auto-reply", t.customer, [t.engineer]
                subject = ("自动回复: " if zh else "Automatic reply: ") + history[-1]["subject"]
            else:
                sender, other = (t.customer, t.engineer) if customer_turn else (t.engineer, t.customer)
                to = [other]
                prefix = rng.choice(["回复: ", "答复: ", "RE: "]) if zh and customer_turn else "RE: "
                if rng.random() < 0.12:
                    kind, subject = "reply-untagged", prefix + t.title  # the client dropped the case tag
                else:
                    kind, subject = "reply", prefix + _subject(t, "初次响应" if zh else "Initial Response")
            greeting = (f"{t.customer[0]}，您好：" if sender == t.engineer else f"{t.engineer[0]} 工程师您好：") if zh \
                else (f"Dear {t.customer[0]}," if sender == t.engineer else f"Hi {t.engineer[0]},")
            sign = f"\n{sender[0]}\n" + ("技术支持中心 | 电话 400-000-0000\n" if sender == t.engineer else "")
            extra: list[str] = []
            if kind == "auto-reply":
                back = (when + timedelta(days=rng.randint(1, 5))).astimezone(SHANGHAI)
                text = (f"您好，我目前外出，{back.month}月{back.day}日返回，期间邮件可能无法及时回复。" if zh else
                        f"I am out of the office until {back:%d %B}. I will reply when I am back.")
                extra = ["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"]
            elif kind == "close":
                text = ("#close\n问题描述: 用户反馈" + t.title + "\n问题分析: " + rng.choice(ZH_SENTENCES)
                        + "\n问题总结: 经用户确认，本案例暂做归档处理\n") if zh else (
                    "#close\nProblem: " + t.title + "\nAnalysis: " + rng.choice(EN_SENTENCES)
                    + "\nSummary: Confirmed fixed by the customer; closing the case.\n")
            else:
                text = greeting + "\n" + _paragraph(rng, t, rng.randint(5, 12)) + "\n" + sign
                if history:
                    text += "\n" + _quote_block(t, history[-1])[:4000]
            mid = _msgid(rng, sender[1].rpartition("@")[2])
            raw = _message(
                rng, t, sender=sender, to=to, cc=[BOT] if kind not in ("auto-reply", "close") else [],
                subject=subject, when=when, mid=mid, text=text,
                # A client that drops the case tag often drops References too: In-Reply-To only.
                parents=[] if kind in ("initial", "reply-untagged") else refs[-8:], in_reply_to=last_mid,
                attach=kind in ("initial", "reply", "reply-untagged") and rng.random() < 0.5,
                extra=extra, html=kind not in ("auto-reply", "close"),
            )
            out.append(Mail("", raw, when, n, kind))
            local = when.astimezone(SHANGHAI)
            history.append({"from": f"{sender[0]} <{sender[1]}>", "to": ", ".join(f"{a} <{b}>" for a, b in to),
                            "subject": subject, "body": text, "kind": kind,
                            "when_zh": f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}",
                            "when_en": f"{local:%A, %B %d, %Y %I:%M %p}"})
            if kind != "auto-reply":
                refs.append(mid)
                last_mid = mid
            i += 1
            when += timedelta(minutes=1) if i < size and kind == "initial" and rng.random() < 0.1 else \
                timedelta(hours=rng.uniform(0.1, span_days * 3))
    out.sort(key=lambda m: (m.date, m.thread))
    return [Mail(f"{int(m.date.timestamp()):010d}.M{i:06d}P1.bench", m.raw, m.date, m.thread, m.kind)
            for i, m in enumerate(out)]


def last_date(mails: list[Mail]) -> datetime:
    return max(m.date for m in mails)


def write_maildir(path: Path, mails: list[Mail]) -> None:
    """Deliver into path/new (tmp/ and cur/ created too). No fsync: benchmark input, not user mail."""
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for m in mails:
        (path / "new" / m.name).write_bytes(m.raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("maildir", type=Path)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    mails = generate(args.messages, args.threads, args.seed)
    write_maildir(args.maildir, mails)
    sizes = sorted(len(m.raw) for m in mails)
    kinds: dict[str, int] = {}
    for m in mails:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    print(f"wrote {len(mails)} messages in {args.threads} threads to {args.maildir}/new; "
          f"median {sizes[len(sizes) // 2] / 1024:.1f} KB, mean {sum(sizes) / len(sizes) / 1024:.1f} KB; {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
