"""A case's life for the trust tests: a bot over the in-memory twins, and mail as people (and forgers) write it."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, make_msgid

from mailbot.mailbox.memory import MemoryMailbox
from mailbot.models import Case
from mailbot.service import CycleReport, Service
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_calendar

KEY = "CAS-04027-B7D2Z5"
SUBJECT = f"[案例号: {KEY} ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"
ENGINEER = "liqi@support.example"
CUSTOMER = "yang@customer.example"
BOT = "casebot@support.example"
MX = "mx.support.example"  # our receiving server's authserv-id
# What our server writes for a genuine mail from support.example, and for one that only claims it.
GENUINE = {"Authentication-Results": f"{MX}; dkim=pass header.d=support.example; dmarc=pass header.from=support.example"}
FORGED = {"Authentication-Results": f"{MX}; spf=fail smtp.mailfrom=evil.example; dkim=none; dmarc=fail header.from=support.example"}


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def mail(sender: str, to: str, body: str, when: str, subject: str = SUBJECT, cc: str | None = None,
         headers: dict[str, str] | None = None, name: str | None = None, in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage(policy=default)
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at(when))
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes()


def dsn(returned_message_id: str, failed: str, when: str, n: int = 1) -> bytes:
    """A real delivery status report (RFC 3464) from the customer's server about one returned mail."""
    return (
        "From: MAILER-DAEMON@mx.customer.example\nTo: casebot@support.example\n"
        f"Subject: Undelivered Mail Returned to Sender\nDate: {format_datetime(at(when))}\n"
        f"Message-ID: <dsn-{n}@mx.customer.example>\nMIME-Version: 1.0\nReturn-Path: <>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nmailbox unknown\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example\n\n"
        f"Final-Recipient: rfc822; {failed}\nAction: failed\nStatus: 5.1.1\n\n"
        f"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: {returned_message_id}\n"
        f"Subject: RE: {KEY}\n\n--b--\n"
    ).encode()


class Bot:
    def __init__(self, settings) -> None:
        self.box = MemoryMailbox()
        self.smtp = MemoryTransport()
        self.store = Store(None)
        self.service = Service(settings, self.store, self.box, self.smtp, make_calendar(settings))

    def receive(self, raw: bytes, when: str) -> CycleReport:
        self.box.deliver(raw)
        return self.service.run_once(at(when))

    def tick(self, when: str) -> CycleReport:
        return self.service.run_once(at(when))

    def case(self) -> Case:
        case = self.store.get_case(KEY)
        assert case is not None
        return case

    def sent(self, to: str | None = None) -> list[email.message.EmailMessage]:
        out = [email.message_from_bytes(m.raw, policy=default) for m in self.smtp.sent]
        return [m for m in out if to is None or to in str(m["To"])]


def text_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()


def html_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("html",)).get_content()
