"""Mail built to be slow, through the whole path a mail takes: parse, then match, commands, redaction,
language, out-of-office date and apply on a bot over the in-memory twins. Linear code keeps the time per KB
flat; a quadratic step shows as a time that quadruples when the size doubles.

    .venv/bin/python bench/hostile.py [--sizes 64,256,1024] [--shape NAME] [--json] [--profile FILE.prof]

Each shape is a function of its size in KB. The first five are the ones an audit found quadratic before
2026-12-02 (mail-parser-reply on long whitespace runs, html.parser on unclosed comments and tags, the
References duplicate check); the rest came with issue 13 (a body of `>` lines, redaction runs, a subject
of `[`) and the audit that followed it. `tests/test_hostile.py` runs every shape at n and 4n and fails on a
superlinear ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbot.config import Settings, from_dict  # noqa: E402
from mailbot.mailbox.base import FetchedMail  # noqa: E402
from mailbot.mailbox.memory import MemoryMailbox  # noqa: E402
from mailbot.models import InboundMail, ParseFailure  # noqa: E402
from mailbot.parse import parse  # noqa: E402
from mailbot.service import CycleReport, Service  # noqa: E402
from mailbot.store import Store  # noqa: E402
from mailbot.transport.memory import MemoryTransport  # noqa: E402
from mailbot.wiring import make_calendar  # noqa: E402

KEY = "CAS-04027-B7D2Z5"
SUBJECT = f"RE: [案例号: {KEY} ] % 终端频繁蓝屏 % 初次响应 CMIT:0001247"
ENGINEER = "liqi@support.example"
CUSTOMER = "yang@customer.example"
NOW = datetime(2026, 4, 13, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai
SENT = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)


def _head(subject: str = SUBJECT, extra: str = "") -> str:
    # The customer's auto-reply to a case that waits on them: it takes every step of the path, the
    # out-of-office return date among them (commands are looked for in every mail but the bot's own).
    return (f"From: Yang <{CUSTOMER}>\r\nTo: casebot@support.example\r\nCc: {ENGINEER}\r\n"
            f"Subject: {subject}\r\nDate: {format_datetime(NOW)}\r\nMessage-ID: <hostile@customer.example>\r\n"
            f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n{extra}")


def text_mail(body: str, subject: str = SUBJECT, extra: str = "") -> bytes:
    return (_head(subject, extra) + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


def html_mail(body: str) -> bytes:
    return (_head() + "Content-Type: text/html; charset=utf-8\r\n\r\n" + body).encode()


def _n(kb: int, unit: str) -> int:
    """How many repeats of `unit` make `kb` KB."""
    return max(1, kb * 1024 // len(unit.encode()))


def _many_parts(kb: int) -> bytes:
    part = "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (_head() + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * _n(kb, part) + "--b--\r\n").encode()


RECEIVED = "Received: from h.example ([203.0.113.9]) by mx.example; Mon, 13 Apr 2026 10:00:00 +0800\r\n"

SHAPES: dict[str, Callable[[int], bytes]] = {
    # the audit of 2026-12-02
    "spaces in one line": lambda kb: text_mail("mysql" + " " * (kb * 1024) + "x"),
    "blank lines": lambda kb: text_mail("a" + "\n" * (kb * 1024) + "b"),
    "unclosed <!-- in HTML": lambda kb: html_mail("<!--" * _n(kb, "<!--")),
    "unclosed <a in HTML": lambda kb: html_mail("<a " * _n(kb, "<a ")),
    "References of many ids": lambda kb: text_mail("body", extra="References: " + " ".join(
        f"<id{n}@example.test>" for n in range(_n(kb, "<id00000@example.test> "))) + "\r\n"),
    # issue 13
    "lines of >": lambda kb: text_mail(">\n" * _n(kb, ">\n")),
    "lines of > between text": lambda kb: text_mail("a\n" + ">\n" * _n(kb, ">\n") + "b"),
    "mysql  run (redaction)": lambda kb: text_mail("mysql " * _n(kb, "mysql ")),
    "-eyJ run (redaction)": lambda kb: text_mail("-eyJ" + "a" * (kb * 1024)),
    "-eyJ repeated (redaction)": lambda kb: text_mail("-eyJ" * _n(kb, "-eyJ")),
    "subject: key and [": lambda kb: text_mail("body", subject=f"[案例号: {KEY} ] " + "[" * (kb * 1024)),
    # found with issue 13's audit
    "subject: [ only": lambda kb: text_mail("body", subject="[" * (kb * 1024)),
    "subject: 【 and prefixes": lambda kb: text_mail("body", subject="RE: " * _n(kb, "RE: ") + "【" * 8),
    "> and text alternating": lambda kb: text_mail("> q\na\n" * _n(kb, "> q\na\n")),
    "From:/Sent: lines": lambda kb: text_mail("From: x\n" * _n(kb, "From: x\n")),
    "On … lines": lambda kb: text_mail("On Monday\n" * _n(kb, "On Monday\n")),
    "# command lines": lambda kb: text_mail("#snooze 3d\n" * _n(kb, "#snooze 3d\n")),
    "# command, blanks, a word": lambda kb: text_mail("#snooze a" + " " * (kb * 1024) + "b"),  # 71 s till 12-03
    "until / back on (ooo)": lambda kb: text_mail("back on until " * _n(kb, "back on until ")),
    "digits and 月 (ooo)": lambda kb: text_mail("1 月 " * _n(kb, "1 月 ")),
    "2021-04-1 run (ooo)": lambda kb: text_mail("2021-04-1" * _n(kb, "2021-04-1")),
    "HTML <div without >": lambda kb: html_mail("<p>x</p><div " * _n(kb, "<p>x</p><div ")),  # 2.6× till 12-03
    "HTML <div style=' open": lambda kb: html_mail("<p>x</p>" + "<div style='" * _n(kb, "<div style='")),
    "HTML unclosed quote, then >": lambda kb: html_mail("<a b='" * _n(kb, "<a b='") + ">"),
    "HTML unclosed </ and <!": lambda kb: html_mail("</a <!x <?y " * _n(kb, "</a <!x <?y ") + ">"),
    "HTML many tags": lambda kb: html_mail("<div><b>x</b></div>" * _n(kb, "<div><b>x</b></div>")),
    "one long line of words": lambda kb: text_mail("word " * _n(kb, "word ")),
    "To: many addresses": lambda kb: text_mail("body", extra="To: " + ", ".join(
        f"u{n}@customer.example" for n in range(_n(kb, "u0000@customer.example, "))) + "\r\n"),
    "subject: many encoded words": lambda kb: text_mail("body", subject=" ".join(
        ["=?utf-8?b?5Lit5paH?="] * _n(kb, "=?utf-8?b?5Lit5paH?= "))),
    "many header lines": lambda kb: text_mail("body", extra="".join(
        f"X-H{n}: v\r\n" for n in range(_n(kb, "X-H0000: v\r\n")))),
    "many MIME parts": _many_parts,
    # found while fixing issue 13's: the stdlib's encoded-word pattern rescans a line for `?=`, and the
    # bounds on MIME parts and headers must hold whatever the spelling
    "subject: unclosed encoded words": lambda kb: text_mail("body", subject="=?utf-8?q?a " * _n(kb, "=?utf-8?q?a ")),
    "filename: unclosed encoded words": lambda kb: text_mail("body", extra="Content-Disposition: attachment; "
                                                             'filename="' + "=?utf-8?q?a " * _n(kb, "=?utf-8?q?a ") + '"\r\n'),
    "many MIME parts, boundary*0": lambda kb: _many_parts(kb).replace(b'boundary="b"', b'boundary*0="b"', 1),
    "many Received headers": lambda kb: text_mail("body", extra=RECEIVED * _n(kb, RECEIVED)),
    "GBK bytes labelled utf-8": lambda kb: (_head() + "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    + "中文".encode("gbk") * (kb * 256),
}


def settings(workdir: Path) -> Settings:
    return from_dict({
        "bot": {"address": "casebot@support.example", "name": "casebot", "state_dir": "state", "parse_workers": 1},
        "engineers": {"domains": ["support.example"]},
        "mailbox": {"kind": "maildir", "path": "maildir"},
    }, workdir)


def opening_mail() -> bytes:
    """The engineer's first mail to the customer: opens the case, which then waits on the customer."""
    return (f"From: Li Qi <{ENGINEER}>\r\nTo: {CUSTOMER}\r\nSubject: [案例号: {KEY} ] % 终端频繁蓝屏 %\r\n"
            f"Date: {format_datetime(SENT)}\r\nMessage-ID: <open@support.example>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n您好，请问问题是否已解决？\r\n").encode()


def bot(s: Settings) -> Service:
    """A bot over the in-memory twins with the case already open and waiting on the customer."""
    service = Service(s, Store(None), MemoryMailbox(), MemoryTransport(), make_calendar(s))
    opened = parse(opening_mail())
    assert isinstance(opened, InboundMail)
    service.handle_parsed(FetchedMail("open", opening_mail()), opened, SENT, CycleReport())
    return service


def as_engineer(raw: bytes) -> bytes:
    """The same mail from the engineer, to a bot that has no case yet: it opens the case (its title is cut
    from the subject) and its commands are carried out."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    head = head.replace(f"From: Yang <{CUSTOMER}>".encode(), f"From: Li Qi <{ENGINEER}>".encode(), 1)
    head = head.replace(f"Cc: {ENGINEER}".encode(), f"Cc: {CUSTOMER}".encode(), 1)
    return head.replace(b"Auto-Submitted: auto-replied\r\n", b"", 1) + sep + body


def handle(s: Settings, raw: bytes, both: bool = True) -> tuple[float, float, InboundMail | ParseFailure]:
    """Seconds in parse() and in the rest of the path (match, commands, language, out-of-office, apply),
    for the mail as the customer's auto-reply to their open case and (`both`) as the engineer's opening
    mail."""
    parse_s = apply_s = 0.0
    mail: InboundMail | ParseFailure = ParseFailure("")
    variants = [(bot(s), raw)]
    if both:
        variants.append((Service(s, Store(None), MemoryMailbox(), MemoryTransport(), make_calendar(s)), as_engineer(raw)))
    for service, variant in variants:
        start = time.perf_counter()
        mail = parse(variant)
        parsed = time.perf_counter()
        service.handle_parsed(FetchedMail("hostile", variant), mail, NOW, CycleReport())
        parse_s, apply_s = parse_s + parsed - start, apply_s + time.perf_counter() - parsed
    return parse_s, apply_s, mail


def measure(s: Settings, raw: bytes, repeat: int = 1) -> float:
    """Best of `repeat` seconds for the whole path (both variants of handle())."""
    return min(sum(handle(s, raw)[:2]) for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    import tempfile

    logging.getLogger("mailbot").setLevel(logging.CRITICAL)  # the hostile mail's warnings are not measured

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,256,1024", help="KB, comma-separated")
    ap.add_argument("--shape", action="append", help="only shapes whose name contains this (repeatable)")
    ap.add_argument("--skip-after", type=float, default=20.0,
                    help="seconds: larger sizes of a shape that took this long are skipped")
    ap.add_argument("--profile", metavar="FILE.prof", help="write a cProfile of the largest size of each shape")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    shapes = {k: v for k, v in SHAPES.items() if not args.shape or any(p in k for p in args.shape)}
    s = settings(Path(tempfile.mkdtemp(prefix="mailbot-hostile-")))
    results: dict[str, dict[int, dict[str, float] | None]] = {}
    profiler = cProfile.Profile() if args.profile else None
    for name, make in shapes.items():
        results[name] = {}
        slow = False
        for kb in sizes:
            if slow:
                results[name][kb] = None
                continue
            raw = make(kb)
            if profiler is not None and kb == sizes[-1]:
                profiler.enable()
            p, a, mail = handle(s, raw)
            if profiler is not None:
                profiler.disable()
            results[name][kb] = {"parse": p, "apply": a, "bytes": len(raw),
                                 "quarantined": float(isinstance(mail, ParseFailure))}
            slow = p + a > args.skip_after
        if not args.json:
            if len(results) == 1:
                print("hostile mail: seconds for the whole path (parse + apply, both variants) by size\n"
                      f"  {'shape':<30}" + "".join(f"{str(kb) + ' KB':>10}" for kb in sizes))
            # `q`: the mail was quarantined (a bound said no), not read through
            cells = "".join(f"{'skipped' if r is None else format(r['parse'] + r['apply'], '.3f') + ' q' * bool(r['quarantined']):>10}"
                            for r in results[name].values())
            print(f"  {name:<30}{cells}", flush=True)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
