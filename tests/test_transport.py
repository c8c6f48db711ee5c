"""transport: outbox directory, SMTP against a real aiosmtpd server, and the in-memory twin."""

from __future__ import annotations

import email
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import mailbot.storage as storage_mod
from mailbot.config import SmtpSettings
from mailbot.models import EntryKind, OutboundMail
from mailbot.render.compose import make_message_id, recipients, to_bytes
from mailbot.transport.base import PermanentFailure, TemporaryFailure, Transport, TransportError
from mailbot.transport.memory import MemoryTransport
from mailbot.transport.outboxdir import OutboxDirTransport, outbox_file_name
from mailbot.transport.smtp import SmtpTransport

if TYPE_CHECKING:  # imported by pytest as a plugin below, so that its asserts get rewritten too
    from tests.smtp_server import SmtpServer

pytest_plugins = ["tests.smtp_server"]

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
SENDER = "casebot@support.example"
CUSTOMER = "customer@client.example"
ENGINEER = "eng@support.example"


def make_mail(action_id: str = "reminder:CAS-01234-ABCDEF:1", **changes: object) -> OutboundMail:
    mail = OutboundMail(
        action_id=action_id,
        case_key="CAS-01234-ABCDEF",
        kind=EntryKind.REMINDER,
        message_id=make_message_id(action_id, "support.example"),
        subject="回复：初次响应 CAS-01234-ABCDEF",
        from_addr=SENDER,
        from_name="Support Bot",
        to=(CUSTOMER,),
        cc=(ENGINEER,),
        in_reply_to="<parent@client.example>",
        references=("<parent@client.example>",),
        text="您好，请问有进展吗？\n",
        html=None,
    )
    return replace(mail, **changes)  # type: ignore[arg-type]


def send(transport: Transport, mail: OutboundMail | None = None) -> dict[str, tuple[int, str]]:
    """What the service does: send, then settle before it marks the mail sent."""
    mail = mail or make_mail()
    refused = transport.send(to_bytes(mail, NOW), SENDER, recipients(mail), mail.message_id)
    transport.settle()
    return refused


def smtp_settings(server: SmtpServer | None = None, **changes: object) -> SmtpSettings:
    settings = SmtpSettings(
        kind="smtp",
        host=server.host if server else "127.0.0.1",
        port=server.port if server else 25,
        security="none",
        username="",
        password_env="MAILBOT_SMTP_PASSWORD",
        timeout_seconds=5,
        cc_engineers=True,
        show_engineer_name=True,
        max_per_recipient_per_day=3,
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


def smtp(server: SmtpServer, password: str | None = None, **changes: object) -> SmtpTransport:
    return SmtpTransport(smtp_settings(server, **changes), password, local_hostname="support.example")


# --- SMTP through a real server


def test_smtp_send_delivers_the_composed_bytes(smtp_server: SmtpServer) -> None:
    mail = make_mail()
    assert send(smtp(smtp_server), mail) == {}
    [got] = smtp_server.messages
    assert got.sender == SENDER
    assert got.recipients == (CUSTOMER, ENGINEER)
    msg = email.message_from_bytes(got.raw, policy=policy.default)
    assert msg["Message-ID"] == mail.message_id
    assert msg["Subject"] == "回复：初次响应 CAS-01234-ABCDEF"
    assert msg["Auto-Submitted"] == "auto-generated"


def test_smtp_already_sent_cannot_tell(smtp_server: SmtpServer) -> None:
    assert smtp(smtp_server).already_sent(make_mail().message_id) is None


def test_smtp_login(smtp_server: SmtpServer) -> None:
    smtp_server.require_auth("casebot", "s3cret")
    transport = smtp(smtp_server, "s3cret", username="casebot")
    assert "logged in as casebot" in transport.check()
    assert send(transport) == {}
    assert len(smtp_server.messages) == 1


def test_smtp_wrong_password_is_temporary_with_a_clear_reason(smtp_server: SmtpServer) -> None:
    smtp_server.require_auth("casebot", "s3cret")
    transport = smtp(smtp_server, "wrong", username="casebot")
    with pytest.raises(TemporaryFailure, match="wrong username or password"):
        send(transport)
    with pytest.raises(TransportError, match="wrong username or password"):
        transport.check()
    assert smtp_server.messages == []


def test_smtp_missing_login_is_temporary_not_the_recipients_fault(smtp_server: SmtpServer) -> None:
    smtp_server.require_auth("casebot", "s3cret")
    with pytest.raises(TemporaryFailure, match="wants a login") as err:
        send(smtp(smtp_server))
    assert not isinstance(err.value, PermanentFailure)


def test_check_flags_a_username_without_password(smtp_server: SmtpServer) -> None:
    with pytest.raises(TransportError, match=r"MAILBOT_SMTP_PASSWORD is empty"):
        smtp(smtp_server, None, username="casebot").check()


def test_check_verdict_without_login(smtp_server: SmtpServer) -> None:
    verdict = smtp(smtp_server).check()
    assert f"127.0.0.1:{smtp_server.port}" in verdict
    assert "\n" not in verdict


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("code", [421, 451])
def test_smtp_4xx_is_temporary_and_a_retry_succeeds(smtp_server: SmtpServer, stage: str, code: int) -> None:
    smtp_server.fail_next(code, 1, stage=stage)
    transport = smtp(smtp_server)
    with pytest.raises(TemporaryFailure, match=str(code)):
        send(transport)
    assert smtp_server.messages == []
    assert send(transport) == {}
    assert len(smtp_server.messages) == 1


def test_smtp_fails_the_next_n_transactions(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(451, 2)
    transport = smtp(smtp_server)
    for _ in range(2):
        with pytest.raises(TemporaryFailure):
            send(transport)
    send(transport)
    assert len(smtp_server.messages) == 1


def test_smtp_5xx_to_every_rcpt_is_permanent_for_every_recipient(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(550, stage="RCPT")
    with pytest.raises(PermanentFailure, match="550") as err:
        send(smtp(smtp_server))
    assert set(err.value.recipients) == {CUSTOMER, ENGINEER}
    assert not err.value.about_message
    assert smtp_server.messages == []


@pytest.mark.parametrize(("stage", "code"), [("DATA", 554), ("DATA", 552), ("DATA", 500), ("DATA", 501),
                                             ("MAIL", 553), ("MAIL", 501)])
def test_smtp_5xx_to_mail_from_or_the_data_is_about_the_message_not_its_recipients(
    smtp_server: SmtpServer, stage: str, code: int
) -> None:
    smtp_server.fail_next(code, stage=stage)
    with pytest.raises(PermanentFailure, match=str(code)) as err:
        send(smtp(smtp_server))
    assert err.value.about_message
    assert err.value.recipients == ()  # nobody's address is at fault: none may be marked as failing
    assert smtp_server.messages == []


def test_a_line_over_998_octets_is_refused_by_a_real_server_as_a_fault_of_the_message(
    smtp_server: SmtpServer,
) -> None:
    """What one outsider's 2,000-character Message-ID did to every later mail of its case before compose
    left such ids out: aiosmtpd reads the line after the data and answers 500 (RFC 5321 §4.5.3.1.6)."""
    raw = to_bytes(make_mail(), NOW).replace(b"\r\nReferences: ", b"\r\nReferences: <" + b"x" * 2000 + b"@o.example> ")
    with pytest.raises(PermanentFailure, match="500 Line too long") as err:
        smtp(smtp_server).send(raw, SENDER, [CUSTOMER, ENGINEER], make_mail().message_id)
    assert err.value.about_message and err.value.recipients == ()
    assert smtp_server.messages == []


def test_a_non_ascii_recipient_is_refused_without_a_traceback(smtp_server: SmtpServer) -> None:
    # RFC 6531: such an address needs SMTPUTF8; the others still get the mail.
    refused = smtp(smtp_server).send(to_bytes(make_mail(), NOW), SENDER, ["张三@client.example", CUSTOMER], "<m@x>")
    assert list(refused) == ["张三@client.example"] and refused["张三@client.example"][0] == 553
    [got] = smtp_server.messages
    assert got.recipients == (CUSTOMER,)
    with pytest.raises(PermanentFailure, match="SMTPUTF8") as err:
        smtp(smtp_server).send(to_bytes(make_mail(), NOW), SENDER, ["张三@client.example"], "<m@x>")
    assert err.value.recipients == ("张三@client.example",) and not err.value.about_message


def test_smtp_partial_refusal_counts_as_sent_to_the_others(smtp_server: SmtpServer) -> None:
    smtp_server.refuse(ENGINEER, 550)
    refused = send(smtp(smtp_server))
    assert refused == {ENGINEER: (550, "5.1.1 Mailbox unavailable")}
    [got] = smtp_server.messages
    assert got.recipients == (CUSTOMER,)


def test_smtp_all_recipients_refused_permanently(smtp_server: SmtpServer) -> None:
    smtp_server.refuse(CUSTOMER, 550)
    smtp_server.refuse(ENGINEER, 550)
    with pytest.raises(PermanentFailure) as err:
        send(smtp(smtp_server))
    assert set(err.value.recipients) == {CUSTOMER, ENGINEER}


def test_smtp_all_refused_but_one_only_deferred_is_temporary(smtp_server: SmtpServer) -> None:
    smtp_server.refuse(CUSTOMER, 550)
    smtp_server.refuse(ENGINEER, 450)
    with pytest.raises(TemporaryFailure, match="450"):
        send(smtp(smtp_server))


def test_smtp_server_down_is_temporary_and_recovers(smtp_server: SmtpServer) -> None:
    transport = smtp(smtp_server)
    smtp_server.stop()
    with pytest.raises(TemporaryFailure, match="refused"):
        send(transport)
    with pytest.raises(TransportError, match="refused"):
        transport.check()
    smtp_server.start()
    assert send(transport) == {}
    assert len(smtp_server.messages) == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never greets."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield int(s.getsockname()[1])


def test_smtp_timeout_is_temporary(silent_port: int) -> None:
    settings = smtp_settings(port=silent_port, timeout_seconds=1)
    with pytest.raises(TemporaryFailure, match="did not answer within 1 s"):
        send(SmtpTransport(settings, None, local_hostname="support.example"))


def test_tls_mismatch_ssl_against_a_plain_port(smtp_server: SmtpServer) -> None:
    with pytest.raises(TemporaryFailure, match="TLS handshake") as err:
        smtp(smtp_server, security="ssl").check()
    assert "starttls" in err.value.reason


def test_tls_mismatch_starttls_not_offered(smtp_server: SmtpServer) -> None:
    transport = smtp(smtp_server, security="starttls")
    with pytest.raises(TemporaryFailure, match="does not offer STARTTLS"):
        transport.check()
    with pytest.raises(TemporaryFailure, match="does not offer STARTTLS"):
        send(transport)
    assert smtp_server.messages == []


def test_no_recipients_is_permanent(smtp_server: SmtpServer) -> None:
    with pytest.raises(PermanentFailure, match="no recipients"):
        smtp(smtp_server).send(b"Subject: x\r\n\r\nx\r\n", SENDER, [], "<x@y>")


# --- outbox directory


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_outbox_writes_one_file_atomically(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    transport = OutboxDirTransport(outbox)
    mail = make_mail()
    raw = to_bytes(mail, NOW)
    assert transport.already_sent(mail.message_id) is False
    assert transport.send(raw, SENDER, recipients(mail), mail.message_id) == {}
    name = mail.message_id.strip("<>") + ".eml"
    # Taken, not yet settled: written to a hidden temp file, not there for anyone who reads the folder.
    assert files_in(outbox) == [f".{name}.tmp"] and transport.already_sent(mail.message_id) is False
    transport.settle()
    assert files_in(outbox) == [name]  # no temp file left behind
    assert (outbox / name).read_bytes() == raw
    assert transport.already_sent(mail.message_id) is True
    assert transport.already_sent(make_mail("other").message_id) is False


def test_outbox_same_message_id_never_makes_a_second_file(tmp_path: Path) -> None:
    transport = OutboxDirTransport(tmp_path)
    send(transport)
    send(transport)
    assert len(files_in(tmp_path)) == 1


def test_outbox_file_names_are_safe_and_distinct() -> None:
    names = {outbox_file_name(m) for m in ["<a/b@x>", "<a_b@x>", "<../../etc@x>", "<.hidden@x>", "<a b@x>"]}
    assert len(names) == 5
    for name in names:
        assert "/" not in name and not name.startswith(".") and name.endswith(".eml")
    assert len(outbox_file_name("<" + "x" * 500 + "@y>")) < 120


def test_outbox_write_failure_is_temporary_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    monkeypatch.setattr(storage_mod, "_SYNCFS", None)  # so that fsync is what a batch sync calls
    transport = OutboxDirTransport(tmp_path)
    with pytest.raises(TemporaryFailure, match="No space left"):
        send(transport)
    assert files_in(tmp_path) == []
    assert transport.already_sent(make_mail().message_id) is False


def test_a_batch_of_outbox_mail_appears_at_once_when_settled(tmp_path: Path) -> None:
    transport = OutboxDirTransport(tmp_path)
    mails = [make_mail(f"m{i}") for i in range(20)]
    for mail in mails:
        transport.send(to_bytes(mail, NOW), SENDER, recipients(mail), mail.message_id)
    assert not any(transport.already_sent(m.message_id) for m in mails)
    transport.settle()
    assert all(transport.already_sent(m.message_id) for m in mails)
    assert files_in(tmp_path) == sorted(outbox_file_name(m.message_id) for m in mails)
    transport.settle()  # nothing new: nothing to do
    assert len(files_in(tmp_path)) == 20


def test_outbox_check(tmp_path: Path) -> None:
    transport = OutboxDirTransport(tmp_path / "new")
    assert "writable (0 mails" in transport.check()
    send(transport)
    assert "writable (1 mails" in transport.check()
    assert files_in(tmp_path / "new") == [outbox_file_name(make_mail().message_id)]


def test_outbox_check_on_a_file_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")
    with pytest.raises(TransportError, match="not writable"):
        OutboxDirTransport(blocker).check()
    with pytest.raises(TemporaryFailure):
        send(OutboxDirTransport(blocker))


# --- memory


def test_memory_records_and_answers_already_sent() -> None:
    transport = MemoryTransport()
    mail = make_mail()
    assert send(transport, mail) == {}
    [sent] = transport.sent
    assert sent.recipients == (CUSTOMER, ENGINEER)
    assert sent.message_id == mail.message_id
    assert transport.already_sent(mail.message_id) is True
    assert transport.already_sent("<other@x>") is False
    assert transport.sent_ids == [mail.message_id]
    assert "1 mails" in transport.check()


def test_memory_fails_the_next_n_sends() -> None:
    transport = MemoryTransport()
    transport.fail_next(TemporaryFailure("451 try later"), 2)
    for _ in range(2):
        with pytest.raises(TemporaryFailure, match="451"):
            send(transport)
    send(transport)
    assert transport.attempts == 3
    assert len(transport.sent) == 1


def test_memory_refusals_like_a_server() -> None:
    transport = MemoryTransport()
    transport.refuse[ENGINEER] = (550, "5.1.1 no such user")
    assert send(transport) == {ENGINEER: (550, "5.1.1 no such user")}
    assert transport.sent[0].recipients == (CUSTOMER,)
    transport.refuse[CUSTOMER] = (550, "5.1.1 no such user")
    with pytest.raises(PermanentFailure) as err:
        send(transport, make_mail("second"))
    assert set(err.value.recipients) == {CUSTOMER, ENGINEER}


def test_memory_check_error() -> None:
    transport = MemoryTransport()
    transport.check_error = PermanentFailure("535 bad password")
    with pytest.raises(PermanentFailure, match="535"):
        transport.check()


# --- the service over a real SMTP server: what a failure of the message does to the case (issue 13)


def case_bot(make_settings: Any, server: SmtpServer) -> Any:
    """A fresh process's view of a Maildir + SMTP bot: the store read from disk again."""
    from mailbot.mailbox.maildir import MaildirMailbox
    from mailbot.service import Service
    from mailbot.store import Store
    from mailbot.wiring import make_calendar

    settings = make_settings(bot={"language": "en"},
                             smtp={"kind": "smtp", "host": server.host, "port": server.port, "security": "none",
                                   "username": ""})
    return Service(settings, Store(settings.bot.state_dir / "store"), MaildirMailbox(settings.mailbox.path),
                   SmtpTransport(settings.smtp, None, accepted_log=settings.bot.state_dir / "smtp-accepted.log"),
                   make_calendar(settings))


def test_a_message_refused_at_data_is_failed_and_told_without_marking_the_customer(
    make_settings: Any, smtp_server: SmtpServer
) -> None:
    from mailbot.mailbox.maildir import deliver
    from tests.test_crash import START, engineer_mail, key

    bot = case_bot(make_settings, smtp_server)
    deliver(bot.settings.mailbox.path, engineer_mail(8))
    smtp_server.fail_next(554, stage="DATA")  # "554 5.7.1 Message rejected": the content, not the address
    assert bot.run_once(START).failed == 1
    case = bot.store.get_case(key(8))
    assert case.failed_addresses == ()
    assert case.next_action is not None  # the customer can still be reminded
    assert any("reminder failed" in note and "554" in note for note in case.notes)
    assert bot.run_once(START + timedelta(minutes=1)).sent == 1
    [notice] = smtp_server.messages  # the engineers hear of it, with the server's words
    assert notice.recipients == ("eng1@support.example",)
    assert b"554" in notice.raw


def test_an_outsiders_2000_character_message_id_does_not_stop_the_cases_mail(
    make_settings: Any, smtp_server: SmtpServer
) -> None:
    from mailbot.mailbox.maildir import deliver
    from tests.test_crash import REPLY_DATE, START, engineer_mail, key

    bot = case_bot(make_settings, smtp_server)
    deliver(bot.settings.mailbox.path, engineer_mail(9))
    assert bot.run_once(START).sent == 1  # the first reminder
    huge = "<" + "q" * 1980 + "@outsider.example>"
    deliver(bot.settings.mailbox.path, (
        f"From: Someone Else <someone@elsewhere.example>\r\nTo: casebot@support.example\r\n"
        f"Subject: Re: [Case: {key(9)} ] Printer queue 9 stalls\r\nDate: {REPLY_DATE}\r\n"
        f"Message-ID: {huge}\r\nIn-Reply-To: <eng-9@support.example>\r\n\r\nWhat is this about?\r\n"
    ).encode())
    bot.run_once(START + timedelta(minutes=1))
    case = bot.store.get_case(key(9))
    assert case.outsiders == ("someone@elsewhere.example",)  # it threaded into the case
    reminders = 1
    for day in range(1, 15):  # until the next reminder is due
        bot.run_once(START + timedelta(days=day))
        case = bot.store.get_case(key(9))
        if case.reminders_sent > reminders:
            break
    assert case.reminders_sent == 2, "the second reminder went out"
    assert case.failed_addresses == ()
    to_customer = [m for m in smtp_server.messages if "cust9@customer9.example" in m.recipients]
    assert len(to_customer) == 2
    for mail in smtp_server.messages:  # every mail of the case, the engineers' notice included
        head = mail.raw.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 998  # RFC 5322 §2.1.1
    last = email.message_from_bytes(to_customer[-1].raw, policy=policy.default)
    assert "<eng-9@support.example>" in last["References"]
