"""Audit of "nothing lost, nothing doubled": each test follows one case's mail through the real code paths
into a window that the earlier reliability tests did not cover (docs/reliability.md lists those)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from imapclient import IMAPClient

from mailbot.mailbox.imap.mailbox import ImapMailbox, MemoryCheckpoints
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import EntryKind
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.base import TemporaryFailure
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_calendar
from tests.test_imap import mail, mid, settings_for

if TYPE_CHECKING:
    from tests.imap_server import DovecotServer

pytest_plugins = ["tests.imap_server"]  # the `dovecot` fixture

KEY = "CAS-04027-B7D2Z5"
CUSTOMER = "yang@customer.example"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def scenario_mail(scenario_dir: Path, prefix: str) -> bytes:
    return next(scenario_dir.glob(f"{prefix}-*.eml")).read_bytes()


def bot(settings, transport) -> Service:
    """A fresh process over the state on disk."""
    return Service(settings, Store(settings.bot.state_dir / "store"), MaildirMailbox(settings.mailbox.path),
                   transport, make_calendar(settings))


def maildir_files(root: Path) -> dict[str, bytes]:
    """Every mail file anywhere in the Maildir (inbox and sub-folders), by path: what the mailbox holds."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.parent.name in ("new", "cur")}


# --- the Maildir never overwrites one mail with another -------------------------------------------------


def test_two_unreadable_mails_dropped_in_under_the_same_name_are_both_kept_in_quarantine(make_settings) -> None:
    """Someone copies `ticket.eml` into new/ by hand; it is not mail and goes to quarantine. A week later a
    different `ticket.eml` arrives the same way. Quarantine is the only copy of such a mail: the second must
    not replace the first, and `requeue` brings both back."""
    settings = make_settings()
    root = settings.mailbox.path
    first, second = b"first broken upload, no headers at all\n", b"second, different broken upload\n"
    deliver(root, first, name="ticket.eml")
    bot(settings, MemoryTransport()).run_once(at("2021-04-13T02:00+08:00"))
    deliver(root, second, name="ticket.eml")
    bot(settings, MemoryTransport()).run_once(at("2021-04-20T02:00+08:00"))

    kept = sorted(maildir_files(root).values())
    assert kept == sorted([first, second])
    assert not any((root / "new").iterdir())

    box = MaildirMailbox(root, settings.mailbox.quarantine_folder)
    assert box.requeue("ticket.eml")
    assert sorted(p.read_bytes() for p in (root / "new").iterdir()) == sorted([first, second])


def test_a_mail_processed_under_a_name_already_in_cur_does_not_replace_the_older_one(make_settings,
                                                                                        scenario_dir) -> None:
    """The engineer's first mail is dropped into new/ as `mail`, processed into cur/. The customer's reply is
    later dropped in under the same name: after it is processed, the Maildir still holds both originals."""
    settings = make_settings()
    root = settings.mailbox.path
    opening, reply = scenario_mail(scenario_dir, "01"), scenario_mail(scenario_dir, "03")
    deliver(root, opening, name="mail")
    bot(settings, MemoryTransport()).run_once(at("2021-04-13T02:00+08:00"))
    deliver(root, reply, name="mail")
    service = bot(settings, MemoryTransport())
    service.run_once(at("2021-04-19T11:00+08:00"))

    assert sorted(maildir_files(root).values()) == sorted([opening, reply])
    assert {e.message_id for e in service.store.get_case(KEY).timeline} >= {
        "<initial-04027@support.example>", "<reply-1@customer.example>"}


# --- the outbox: a mail waiting to be retried meets the customer's answer ---------------------------------


def reminder_waiting_for_a_retry(make_settings, scenario_dir) -> tuple[Any, Service, MemoryTransport]:
    """Li Qi's initial response is in; the first reminder falls due on Friday 09:00 and meets a 451."""
    settings = make_settings()
    transport = MemoryTransport()
    deliver(settings.mailbox.path, scenario_mail(scenario_dir, "01"))
    service = bot(settings, transport)
    service.run_once(at("2021-04-13T02:00+08:00"))
    transport.fail_next(TemporaryFailure("451 try again later"))
    report = service.run_once(at("2021-04-16T09:00+08:00"))
    assert report.deferred == 1 and transport.sent == []
    return settings, service, transport


def test_a_reminder_waiting_for_a_retry_is_not_sent_after_the_customer_answered(make_settings,
                                                                                 scenario_dir) -> None:
    """The first reminder falls due on Friday 09:00; the mail server answers 451 and the reminder waits for its
    retry a minute later. In that minute the customer's reply is read. The retry must not remind a customer
    who has just answered (a held reminder is cancelled for the same reason)."""
    settings, service, transport = reminder_waiting_for_a_retry(make_settings, scenario_dir)

    deliver(settings.mailbox.path, scenario_mail(scenario_dir, "03"))
    service.run_once(at("2021-04-16T09:00:30+08:00"))  # before the retry: the reply is read
    service.run_once(at("2021-04-16T09:05+08:00"))  # the retry is due

    reminders = [m for m in transport.sent if CUSTOMER in m.recipients]
    assert reminders == []
    case = service.store.get_case(KEY)
    assert not any(e.kind == EntryKind.REMINDER for e in case.timeline)
    assert service.store.outbox_pending() == []


def test_a_reminder_waiting_for_a_retry_is_not_sent_after_the_engineer_closed_the_case(make_settings,
                                                                                        scenario_dir) -> None:
    """The first reminder meets a 451 and waits a minute. Meanwhile the engineer's `#close` is read: the
    customer gets the closure; the reminder must not follow it."""
    settings, service, transport = reminder_waiting_for_a_retry(make_settings, scenario_dir)

    deliver(settings.mailbox.path, scenario_mail(scenario_dir, "04"))
    service.run_once(at("2021-04-16T09:00:30+08:00"))
    service.run_once(at("2021-04-16T09:05+08:00"))

    to_customer = [m for m in transport.sent if CUSTOMER in m.recipients]
    kinds = [e.kind for e in service.store.get_case(KEY).timeline if e.direction == "out"]
    assert len(to_customer) == 1 and EntryKind.CLOSURE in kinds and EntryKind.REMINDER not in kinds
    assert service.store.outbox_pending() == []


def test_a_reminder_waiting_for_a_retry_is_not_sent_after_a_close_in_a_digest_reply(make_settings,
                                                                                      scenario_dir) -> None:
    """As above, but the engineer closes the case from a mail whose subject names no case (a digest reply:
    `#close KEY` on its own line)."""
    settings, service, transport = reminder_waiting_for_a_retry(make_settings, scenario_dir)

    deliver(settings.mailbox.path, (
        "From: Li Qi <liqi@support.example>\nTo: casebot@support.example\nSubject: Re: today\n"
        "Date: Fri, 16 Apr 2021 01:00:20 +0000\nMessage-ID: <digest-reply@support.example>\n"
        f"Content-Type: text/plain; charset=utf-8\n\n#close {KEY}\nSummary: driver updated\n").encode())
    service.run_once(at("2021-04-16T09:00:30+08:00"))
    service.run_once(at("2021-04-16T09:05+08:00"))

    kinds = [e.kind for e in service.store.get_case(KEY).timeline if e.direction == "out"]
    assert EntryKind.CLOSURE in kinds and EntryKind.REMINDER not in kinds
    assert len([m for m in transport.sent if CUSTOMER in m.recipients]) == 1
    assert service.store.outbox_pending() == []


# --- the same mail twice: recognised as one ---------------------------------------------------------------


def without_message_id(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\n\n")
    return b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"message-id:")) + sep + body


def test_a_reply_without_message_id_delivered_to_two_addresses_is_recorded_once(make_settings,
                                                                                scenario_dir) -> None:
    """The customer's mail program sends no Message-ID; the reply went To the engineer and Cc the bot's
    alias, and the server delivers both copies to the bot's mailbox, each with its own Delivered-To line on
    top. The case must record the reply once, as it does for a mail with a Message-ID."""
    settings = make_settings()
    deliver(settings.mailbox.path, scenario_mail(scenario_dir, "01"))
    service = bot(settings, MemoryTransport())
    service.run_once(at("2021-04-13T02:00+08:00"))
    reply = without_message_id(scenario_mail(scenario_dir, "03"))
    for alias in (b"casebot@support.example", b"support@support.example"):
        deliver(settings.mailbox.path, b"Delivered-To: " + alias + b"\n" + reply)
    service.run_once(at("2021-04-19T11:00+08:00"))

    customer_mails = [e for e in service.store.get_case(KEY).timeline if e.direction == "in" and e.role.value
                      == "customer"]
    assert len(customer_mails) == 1


def plain_reply(body: str) -> bytes:
    return (f"From: Yang <yang@customer.example>\nTo: casebot@support.example\n"
            f"Subject: Re: [案例号: {KEY} ] % 某单位终端频繁蓝屏 %\nDate: Mon, 19 Apr 2021 02:10:00 +0000\n"
            f"Message-ID: <fixed@customer.example>\nIn-Reply-To: <initial-04027@support.example>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n").encode()


def test_a_different_mail_reusing_a_message_id_is_not_taken_for_a_copy(make_settings, scenario_dir) -> None:
    """The customer's ticket tool stamps every mail with the same Message-ID. The first reply says the logs
    are uploaded; the second, a day later, that the screen went blue again. Both are the customer's words
    and must reach the case (a true copy — the same bytes again — is still recorded once)."""
    settings = make_settings()
    deliver(settings.mailbox.path, scenario_mail(scenario_dir, "01"))
    service = bot(settings, MemoryTransport())
    service.run_once(at("2021-04-13T02:00+08:00"))
    deliver(settings.mailbox.path, plain_reply("Logs uploaded."))
    service.run_once(at("2021-04-19T11:00+08:00"))
    deliver(settings.mailbox.path, plain_reply("Logs uploaded."))  # a true copy
    deliver(settings.mailbox.path, plain_reply("Blue screen again this morning."))
    service.run_once(at("2021-04-20T11:00+08:00"))

    texts = [e.text for e in service.store.get_case(KEY).timeline if e.role.value == "customer"]
    assert len(texts) == 2 and any("Blue screen again" in t for t in texts)


# --- IMAP: a message the server left out of a FETCH answer --------------------------------------------------


@pytest.mark.imap
def test_a_mail_missing_from_one_fetch_answer_is_taken_at_the_next_fetch(dovecot: DovecotServer,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Three customers write. The server's answer to the first FETCH leaves out message 2's body (it
    could not read it at that moment: a busy or broken store; Dovecot itself answers so only for mail
    that is gone). Mail 1 and 3 are handled and the checkpoint saved; mail 2, still in INBOX, must come at
    the next fetch, also after a restart from that checkpoint — not stay there unread for ever."""
    for n in (1, 2, 3):
        dovecot.deliver(mail(n))
    fetch = IMAPClient.fetch
    hiccups = []

    def hiccup(self: IMAPClient, messages: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        answer = fetch(self, messages, data, *args, **kwargs)
        if not hiccups and "BODY.PEEK[]" in list(data):
            hiccups.append(messages)
            answer = {uid: d for uid, d in answer.items() if uid != sorted(answer)[1]}
        return answer

    monkeypatch.setattr(IMAPClient, "fetch", hiccup)
    checkpoints = MemoryCheckpoints()

    def make_mailbox(checkpoints: MemoryCheckpoints) -> ImapMailbox:  # a process, with its saved checkpoint
        return ImapMailbox(settings_for(dovecot), lambda: dovecot.password, checkpoints, reconnect_max_wait=5)

    box = make_mailbox(checkpoints)
    first = box.fetch_new()
    assert [m.raw for m in first] == [mail(1), mail(3)]
    box.mark_processed([m.ref for m in first])

    assert [m.raw for m in box.fetch_new()] == [mail(2)]
    restarted = make_mailbox(checkpoints)
    again = restarted.fetch_new()
    assert [m.raw for m in again] == [mail(2)]
    restarted.mark_processed([m.ref for m in again])
    assert dovecot.message_ids("Processed") == [mid(1), mid(3), mid(2)]
    box.close()
    restarted.close()


def test_the_id_of_an_id_less_mail_ignores_only_what_each_delivery_adds_on_top() -> None:
    from mailbot.parse.mail import synthetic_id

    mail_ = b"From: yang@customer.example\nSubject: logs\n\nuploaded\n"
    copies = [b"Delivered-To: casebot@support.example\nReceived: from a\n\tby mx1; Mon, 19 Apr 2021\n" + mail_,
              b"Return-Path: <yang@customer.example>\nX-Original-To: support@support.example\n"
              b"Received: from b by mx2\n" + mail_, mail_]
    assert len({synthetic_id(c) for c in copies}) == 1
    assert synthetic_id(mail_.replace(b"uploaded", b"not yet")) != synthetic_id(mail_)
    # A trace field below the sender's own fields is the mail's own: kept in the hash.
    assert synthetic_id(mail_.replace(b"Subject", b"Received: x\nSubject")) != synthetic_id(mail_)
