"""Reminders and closures through a real SMTP server, and the outbox's crash windows: never lost, never
doubled."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import CaseStatus
from mailbot.service import Service
from mailbot.storage import BufferedAtomicStorage
from mailbot.store import Store
from mailbot.transport.base import Refused, TemporaryFailure
from mailbot.transport.memory import MemoryTransport
from mailbot.transport.outboxdir import OutboxDirTransport
from mailbot.transport.smtp import SmtpTransport
from mailbot.wiring import make_calendar

pytest_plugins = ["tests.smtp_server"]

KEY = "CAS-04027-B7D2Z5"


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, nothing catches it."""


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def first_mail(scenario_dir: Path) -> bytes:
    return next(scenario_dir.glob("01-*.eml")).read_bytes()


def service(settings, transport, sent_folder=None) -> Service:
    """A fresh process: a new Store read from disk, as after a restart."""
    return Service(settings, Store(settings.bot.state_dir / "store"), MaildirMailbox(settings.mailbox.path),
                   transport, make_calendar(settings), sent_folder=sent_folder)


@pytest.fixture
def smtp_bot(make_settings, scenario_dir, smtp_server) -> tuple:
    """The bot sending through the real aiosmtpd server, with the scenario's first mail waiting."""
    settings = make_settings(smtp={"kind": "smtp", "host": smtp_server.host, "port": smtp_server.port,
                                   "security": "none", "username": ""})
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    return settings, service(settings, SmtpTransport(settings.smtp, None))


def test_reminders_arrive_at_a_real_smtp_server_on_business_days(smtp_bot, smtp_server) -> None:
    settings, bot = smtp_bot
    for when in ("2021-04-13T02:00+08:00", "2021-04-15T17:00+08:00"):
        bot.run_once(at(when))
    assert smtp_server.messages == []
    bot.run_once(at("2021-04-16T09:00+08:00"))
    bot.run_once(at("2021-04-16T09:30+08:00"))
    [reminder] = smtp_server.messages
    assert set(reminder.recipients) == {"yang@customer.example", "liqi@support.example"}
    assert reminder.sender == "casebot@support.example"
    assert b"Auto-Submitted: auto-generated" in reminder.raw
    bot.run_once(at("2021-04-21T09:00+08:00"))
    bot.run_once(at("2021-04-23T09:00+08:00"))
    assert len(smtp_server.messages) == 3
    assert bot.store.get_case(KEY).status == CaseStatus.CLOSED


def test_temporary_smtp_failures_are_retried_later_and_nothing_is_lost(smtp_bot, smtp_server) -> None:
    settings, bot = smtp_bot
    bot.run_once(at("2021-04-13T02:00+08:00"))
    smtp_server.fail_next(451, n=1)
    report = bot.run_once(at("2021-04-16T09:00+08:00"))
    assert report.deferred == 1 and smtp_server.messages == []
    bot.run_once(at("2021-04-16T09:00:30+08:00"))  # before the back-off: not yet
    assert smtp_server.messages == []
    smtp_server.stop()  # the server is down for a while
    bot.run_once(at("2021-04-16T09:02+08:00"))
    assert bot.store.outbox_pending()  # still recorded, not lost
    smtp_server.start()
    bot.run_once(at("2021-04-16T10:30+08:00"))
    assert len(smtp_server.messages) == 1
    assert bot.store.outbox_pending() == []


def test_a_permanent_failure_stops_reminders_to_that_address_and_tells_the_engineer(smtp_bot, smtp_server) -> None:
    settings, bot = smtp_bot
    bot.run_once(at("2021-04-13T02:00+08:00"))
    smtp_server.refuse("yang@customer.example", 550)
    bot.run_once(at("2021-04-16T09:00+08:00"))
    case = bot.store.get_case(KEY)
    assert case.failed_addresses == ("yang@customer.example",)
    assert case.next_action is None  # no customer left to remind
    notices = [m for m in smtp_server.messages if m.recipients == ("liqi@support.example",)]
    assert len(notices) == 1 and b"yang@customer.example" in notices[0].raw
    bot.run_once(at("2021-04-21T09:00+08:00"))
    assert len([m for m in smtp_server.messages if "yang@customer.example" in m.recipients]) == 0


class CrashOnce:
    """A transport that crashes the process once — before or after handing the mail over."""

    def __init__(self, inner, after_send: bool) -> None:
        self.inner = inner
        self.after_send = after_send
        self.crashed = False

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        if not self.crashed and not self.after_send:
            self.crashed = True
            raise Crash
        refused = self.inner.send(raw, sender, recipients, message_id)
        if not self.crashed:
            self.crashed = True
            raise Crash
        return refused

    def check(self) -> str:
        return "crashing"

    def already_sent(self, message_id: str) -> bool | None:
        return self.inner.already_sent(message_id)

    def settle(self) -> None:
        self.inner.settle()


@pytest.mark.parametrize("after_send", [False, True], ids=["crash-between-record-and-send",
                                                           "crash-between-send-and-mark"])
def test_outbox_crash_windows_with_the_outbox_folder(make_settings, scenario_dir, after_send: bool) -> None:
    settings = make_settings()
    outbox = settings.bot.state_dir / "outbox"
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    service(settings, OutboxDirTransport(outbox)).run_once(at("2021-04-13T02:00+08:00"))
    with pytest.raises(Crash):
        service(settings, CrashOnce(OutboxDirTransport(outbox), after_send)).run_once(at("2021-04-16T09:00+08:00"))
    restarted = service(settings, OutboxDirTransport(outbox))
    restarted.run_once(at("2021-04-16T09:05+08:00"))
    restarted.run_once(at("2021-04-16T10:00+08:00"))
    assert len(list(outbox.glob("*.eml"))) == 1
    assert restarted.store.get_case(KEY).reminders_sent == 1
    assert restarted.store.outbox_pending() == []


class BlindTransport(MemoryTransport):
    """Like SMTP: cannot tell afterwards whether a mail went out."""

    def already_sent(self, message_id: str) -> bool | None:
        return None


class MemorySentFolder:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def append_sent(self, raw: bytes) -> None:
        from email import message_from_bytes

        self.ids.append(str(message_from_bytes(raw)["Message-ID"]))

    def sent_contains(self, message_id: str) -> bool:
        return message_id in self.ids


def test_after_a_crash_the_sent_folder_tells_that_the_mail_went_out(make_settings, scenario_dir) -> None:
    settings = make_settings()
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    smtp, sent_folder = BlindTransport(), MemorySentFolder()
    service(settings, smtp, sent_folder).run_once(at("2021-04-13T02:00+08:00"))

    bot = service(settings, smtp, sent_folder)

    def crash_before_mark(*args, **kwargs):
        raise Crash

    bot.store.outbox_finish = crash_before_mark  # type: ignore[method-assign]
    with pytest.raises(Crash):
        bot.run_once(at("2021-04-16T09:00+08:00"))
    assert len(smtp.sent) == 1 and len(sent_folder.ids) == 1
    restarted = service(settings, smtp, sent_folder)
    restarted.run_once(at("2021-04-16T09:05+08:00"))
    assert len(smtp.sent) == 1  # found in Sent: not sent again
    assert restarted.store.outbox_pending() == []


def test_a_crash_in_the_middle_of_a_commit_neither_loses_nor_doubles(make_settings, scenario_dir,
                                                                    monkeypatch) -> None:
    settings = make_settings()
    smtp = BlindTransport()  # cannot tell afterwards: only the ledger prevents a second reminder
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    service(settings, smtp).run_once(at("2021-04-13T02:00+08:00"))
    real_flush = BufferedAtomicStorage.flush

    def flush_until_the_cases(self: BufferedAtomicStorage) -> bool:
        # The ledger is written, then the power goes before the case shard is.
        if self.path is not None and self.path.parent.name == "active" and self.dirty:
            raise Crash
        return real_flush(self)

    monkeypatch.setattr(BufferedAtomicStorage, "flush", flush_until_the_cases)
    with pytest.raises(Crash):
        service(settings, smtp).run_once(at("2021-04-16T09:00+08:00"))
    monkeypatch.setattr(BufferedAtomicStorage, "flush", real_flush)
    restarted = service(settings, smtp)
    restarted.run_once(at("2021-04-16T09:05+08:00"))
    restarted.run_once(at("2021-04-16T11:00+08:00"))
    assert len(smtp.sent) == 1
    assert restarted.store.get_case(KEY).reminders_sent == 1


def test_outbox_mail_is_marked_sent_only_once_it_is_on_disk(make_settings, scenario_dir, monkeypatch) -> None:
    """The outbox folder makes a batch durable at once (settle) before the ledger says sent; a disk that
    fails that sync leaves the reminder pending, and the next try writes it (once)."""
    import mailbot.transport.outboxdir as transport_mod

    settings = make_settings()
    outbox = settings.bot.state_dir / "outbox"
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    service(settings, OutboxDirTransport(outbox)).run_once(at("2021-04-13T02:00+08:00"))
    real_sync = transport_mod.sync_files

    def full_disk(paths) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transport_mod, "sync_files", full_disk)
    bot = service(settings, OutboxDirTransport(outbox))
    report = bot.run_once(at("2021-04-16T09:00+08:00"))
    assert report.sent == 0 and report.deferred == 1
    assert list(outbox.iterdir()) == []  # neither the mail nor its temp file
    [pending] = bot.store.outbox_pending()
    assert pending["attempts"] == 1 and "No space left" in pending["last_error"]
    assert service(settings, OutboxDirTransport(outbox)).store.outbox_pending() == [pending]  # committed so
    monkeypatch.setattr(transport_mod, "sync_files", real_sync)
    report = bot.run_once(at("2021-04-16T09:30+08:00"))
    assert report.sent == 1 and len(list(outbox.glob("*.eml"))) == 1
    assert bot.store.outbox_pending() == [] and bot.store.get_case(KEY).reminders_sent == 1
    assert bot.run_once(at("2021-04-16T10:30+08:00")).sent == 0


def test_a_full_disk_keeps_the_mail_for_later(make_settings, scenario_dir, monkeypatch) -> None:
    settings = make_settings()
    deliver(settings.mailbox.path, first_mail(scenario_dir))
    transport = MemoryTransport()
    bot = service(settings, transport)
    bot.run_once(at("2021-04-13T02:00+08:00"))
    transport.fail_next(TemporaryFailure("cannot write: No space left on device"), n=1)
    bot.run_once(at("2021-04-16T09:00+08:00"))
    assert transport.sent == [] and len(bot.store.outbox_pending()) == 1
    bot.run_once(at("2021-04-16T09:30+08:00"))
    assert len(transport.sent) == 1


class BreaksOnTheSecondMail(BlindTransport):
    """Takes the first mail, then fails in a way nobody planned for (a bug, a broken library)."""

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        if len(self.sent) == 1:
            raise RuntimeError("unexpected")
        return super().send(raw, sender, recipients, message_id)


def test_an_error_in_the_middle_of_a_batch_keeps_what_was_already_sent(make_settings) -> None:
    settings = make_settings()
    transport = BreaksOnTheSecondMail()
    bot = service(settings, transport)
    for n in (1, 2):
        bot.store.outbox_record({"action_id": f"-/notice/{n}", "case": "-", "kind": "receipt",
                                 "message_id": f"<n{n}@bot>", "recipients": ["liqi@support.example"],
                                 "sender": "casebot@support.example", "subject": "s", "text": "t",
                                 "raw": f"Subject: {n}\r\n\r\nx\r\n", "recorded": f"2021-04-16T09:0{n}:00+08:00",
                                 "attempts": 0})
    bot.store.commit()
    with pytest.raises(RuntimeError):
        bot.flush_outbox(at("2021-04-16T09:10+08:00"))
    # The first mail went out: it is marked sent (and committed), so no later try sends it again, even
    # through a transport that cannot tell.
    assert bot.store.outbox_entry("-/notice/1")["status"] == "sent"
    assert service(settings, transport).store.outbox_entry("-/notice/1")["status"] == "sent"
    transport.__class__ = BlindTransport  # the bug is fixed
    service(settings, transport).flush_outbox(at("2021-04-16T09:20+08:00"))
    assert transport.sent_ids == ["<n1@bot>", "<n2@bot>"]
