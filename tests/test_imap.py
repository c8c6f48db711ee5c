"""ImapMailbox against a real Dovecot 2.3: ingest, flag mode, IDLE, restarts, UIDVALIDITY, races, Sent."""

from __future__ import annotations

import shutil
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailbot.config import MailboxSettings
from mailbot.mailbox.imap.mailbox import (
    PROCESSED_KEYWORD,
    ConnectionLost,
    ImapError,
    ImapMailbox,
    LoginFailed,
    MemoryCheckpoints,
    make_ref,
    parse_ref,
)

if TYPE_CHECKING:
    from tests.imap_server import DovecotServer

pytest_plugins = ["tests.imap_server"]  # the `dovecot` fixture
pytestmark = pytest.mark.imap

MailboxFactory = Callable[..., ImapMailbox]


def mail(n: int, subject: str = "") -> bytes:
    return (
        f"From: Customer <c{n}@customer.example>\r\n"
        f"To: casebot@support.example\r\n"
        f"Subject: {subject or f'Case {n}'}\r\n"
        f"Message-ID: <{n}.test@customer.example>\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0800\r\n"
        f"\r\n"
        f"Body {n}\r\n"
    ).encode()


def mid(n: int) -> str:
    return f"<{n}.test@customer.example>"


def ids_of(fetched: list[Any]) -> list[str]:
    out = []
    for m in fetched:
        line = next(x for x in m.raw.split(b"\r\n") if x.lower().startswith(b"message-id:"))
        out.append(line.split(b":", 1)[1].strip().decode())
    return out


def settings_for(server: DovecotServer, **changes: Any) -> MailboxSettings:
    base = MailboxSettings(
        kind="imap",
        path=Path("unused"),
        host=server.host,
        port=server.port,
        security="none",
        username=server.user,
        password_env="MAILBOT_TEST_IMAP_PASSWORD",
        oauth2_token_command="",
        oauth2_token_file="",
        folder="INBOX",
        processed="move",
        processed_folder="Processed",
        quarantine_folder="Quarantine",
        sent_folder="Sent",
        poll_seconds=1,
        timeout_seconds=5,
    )
    return replace(base, **changes)


@pytest.fixture
def make_mailbox(dovecot: DovecotServer) -> Iterator[MailboxFactory]:
    made: list[ImapMailbox] = []

    def factory(
        checkpoints: MemoryCheckpoints | None = None, secret: str | None = None, **changes: Any
    ) -> ImapMailbox:
        password = dovecot.password if secret is None else secret
        mb = ImapMailbox(
            settings_for(dovecot, **changes),
            lambda: password,
            checkpoints if checkpoints is not None else MemoryCheckpoints(),
            reconnect_max_wait=5,
        )
        made.append(mb)
        return mb

    yield factory
    for mb in made:
        mb.close()


def flags_in(server: DovecotServer, folder: str) -> list[tuple[bytes, ...]]:
    with server.client() as c:
        c.select_folder(folder, readonly=True)
        return [tuple(f) for _uid, f in sorted(c.get_flags(c.search("ALL")).items())]


# --- ingest


def test_ingest_moves_to_processed_and_deletes_nothing(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    for n in (1, 2, 3):
        dovecot.deliver(mail(n))
    cps = MemoryCheckpoints()
    mb = make_mailbox(cps)

    fetched = mb.fetch_new()
    assert ids_of(fetched) == [mid(1), mid(2), mid(3)]
    folder, uidvalidity, uid = parse_ref(fetched[0].ref)
    assert folder == "INBOX" and uid == 1 and fetched[0].ref == make_ref("INBOX", uidvalidity, 1)
    assert all(b"\\Seen" not in f for f in flags_in(dovecot, "INBOX"))  # BODY.PEEK leaves mail unread

    mb.mark_processed([m.ref for m in fetched])
    assert mb.fetch_new() == []
    counts = dovecot.counts()
    assert counts.get("INBOX") == 0 and counts.get("Processed") == 3
    assert sum(counts.values()) == 3
    assert dovecot.message_ids("Processed") == [mid(1), mid(2), mid(3)]
    assert cps.get_checkpoint(mb.checkpoint_key) == {
        "folder": "INBOX",
        "uidvalidity": uidvalidity,
        "last_uid": 3,
    }

    # Later mail only; a restarted bot with the same checkpoint store starts after UID 3.
    dovecot.deliver(mail(4))
    again = make_mailbox(cps)
    assert ids_of(again.fetch_new()) == [mid(4)]


def test_limit_and_checkpoint_never_skip_unhandled_mail(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    for n in range(1, 6):
        dovecot.deliver(mail(n))
    cps = MemoryCheckpoints()
    mb = make_mailbox(cps, processed="flag")
    first = mb.fetch_new(limit=3)
    assert ids_of(first) == [mid(1), mid(2), mid(3)]
    # Handled out of order: the checkpoint may not pass UID 1 while it is still pending.
    mb.mark_processed([first[1].ref, first[2].ref])
    assert cps.get_checkpoint(mb.checkpoint_key)["last_uid"] == 0  # type: ignore[index]
    mb.mark_processed([first[0].ref])
    assert cps.get_checkpoint(mb.checkpoint_key)["last_uid"] == 3  # type: ignore[index]
    assert ids_of(mb.fetch_new()) == [mid(4), mid(5)]
    assert mb.fetch_new(limit=0) == []


def test_the_next_batch_is_read_while_the_last_is_still_pending(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    # The service reads batch 2 (skipping batch 1's refs) before batch 1 is saved and marked.
    for n in range(1, 6):
        dovecot.deliver(mail(n))
    cps = MemoryCheckpoints()
    mb = make_mailbox(cps)
    first = mb.fetch_new(limit=2)
    second = mb.fetch_new(limit=2, skip={m.ref for m in first})
    assert ids_of(first) == [mid(1), mid(2)] and ids_of(second) == [mid(3), mid(4)]
    mb.mark_processed([m.ref for m in first])
    assert cps.get_checkpoint(mb.checkpoint_key)["last_uid"] == 2  # type: ignore[index]  # not past 3 and 4
    assert ids_of(mb.fetch_new(skip={m.ref for m in second})) == [mid(5)]
    mb.mark_processed([m.ref for m in second])
    assert ids_of(mb.fetch_new()) == [mid(5)]


def test_flag_mode_keeps_mail_in_place_and_skips_flagged(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    dovecot.deliver(mail(1))
    dovecot.deliver(mail(2))
    mb = make_mailbox(processed="flag")
    fetched = mb.fetch_new()
    mb.mark_processed([m.ref for m in fetched])
    assert mb.fetch_new() == []
    assert dovecot.counts() == {"INBOX": 2}
    assert all(PROCESSED_KEYWORD.encode() in f for f in flags_in(dovecot, "INBOX"))
    with dovecot.client() as c:  # even unflagged, mail at or below the checkpoint is done
        c.select_folder("INBOX")
        c.remove_flags([2], [PROCESSED_KEYWORD])
    assert mb.fetch_new() == []  # although `UID 3:*` matches UID 2, the highest

    # A bot that lost its checkpoint goes by the keyword: flagged 1 is skipped, unflagged 2 and new 3 not.
    dovecot.deliver(mail(3))
    fresh = make_mailbox(processed="flag")
    assert ids_of(fresh.fetch_new()) == [mid(2), mid(3)]


def test_quarantine_creates_the_folder(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    dovecot.deliver(mail(1))
    dovecot.deliver(mail(2))
    mb = make_mailbox(processed="flag")
    bad, good = mb.fetch_new()
    assert "Quarantine" not in dovecot.counts()
    mb.quarantine(bad.ref, "cannot parse")
    mb.mark_processed([good.ref])
    assert dovecot.counts() == {"INBOX": 1, "Quarantine": 1}
    assert dovecot.message_ids("Quarantine") == [mid(1)]
    assert mb.fetch_new() == []
    with dovecot.client() as c:
        assert any(name == "Quarantine" for _f, _s, name in c.list_sub_folders())  # visible to people


def test_thousand_messages_fetched_exactly_once(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    dovecot.deliver_many(mail(n) for n in range(1000))
    mb = make_mailbox()
    fetched = mb.fetch_new()
    ids = ids_of(fetched)
    assert len(ids) == 1000 and set(ids) == {mid(n) for n in range(1000)}
    mb.mark_processed([m.ref for m in fetched])
    assert mb.fetch_new() == []
    assert dovecot.counts() == {"INBOX": 0, "Processed": 1000}


# --- servers without MOVE / UIDPLUS


def test_without_move_copies_and_expunges_only_its_own(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    dovecot.extra_config = "imap_capability = IMAP4rev1 LITERAL+ IDLE UIDPLUS"
    dovecot.restart()
    dovecot.deliver(mail(1))
    dovecot.deliver(mail(2))
    other_uid = dovecot.deliver(mail(99))
    with dovecot.client() as c:  # someone else's pending deletion must survive our expunge
        c.select_folder("INBOX")
        c.add_flags([other_uid], [b"\\Deleted"])
    mb = make_mailbox()
    fetched = mb.fetch_new()
    assert ids_of(fetched) == [mid(1), mid(2)]
    mb.mark_processed([m.ref for m in fetched])
    assert dovecot.message_ids("Processed") == [mid(1), mid(2)]
    assert dovecot.message_ids("INBOX") == [mid(99)]
    assert mb.fetch_new() == []


def test_without_move_or_uidplus_copies_and_flags(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    dovecot.extra_config = "imap_capability = IMAP4rev1 LITERAL+ IDLE"
    dovecot.restart()
    dovecot.deliver(mail(1))
    mb = make_mailbox()
    mb.mark_processed([m.ref for m in mb.fetch_new()])
    assert dovecot.counts() == {"INBOX": 1, "Processed": 1}
    assert PROCESSED_KEYWORD.encode() in flags_in(dovecot, "INBOX")[0]
    assert make_mailbox().fetch_new() == []  # even without a checkpoint


# --- waiting for mail


def deliver_later(server: DovecotServer, delay: float, raw: bytes) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), server.deliver(raw)), daemon=True)
    t.start()
    return t


def test_idle_notices_new_mail_quickly(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    mb = make_mailbox()
    assert mb.fetch_new() == []
    t0 = time.monotonic()
    assert mb.wait_for_mail(0.3) is False  # nothing came
    assert time.monotonic() - t0 < 2

    t = deliver_later(dovecot, 0.3, mail(1))
    t0 = time.monotonic()
    assert mb.wait_for_mail(10) is True
    assert time.monotonic() - t0 < 2.5
    t.join()
    assert ids_of(mb.fetch_new()) == [mid(1)]


def test_idle_stop_event_and_renewal(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    mb = make_mailbox()
    mb.fetch_new()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    assert mb.wait_for_mail(30, stop) is False
    assert time.monotonic() - t0 < 2

    mb.idle_renew_seconds = 0.2  # several DONE/IDLE rounds before the mail comes
    t = deliver_later(dovecot, 1.0, mail(1))
    t0 = time.monotonic()
    assert mb.wait_for_mail(10) is True
    assert time.monotonic() - t0 < 3
    t.join()
    assert ids_of(mb.fetch_new()) == [mid(1)]


def test_mail_arriving_just_before_idle_is_noticed(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    mb = make_mailbox()
    mb.fetch_new()
    dovecot.deliver(mail(1))  # after the last SEARCH, before IDLE starts
    t0 = time.monotonic()
    assert mb.wait_for_mail(10) is True
    assert time.monotonic() - t0 < 2


def test_polls_when_server_has_no_idle(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    dovecot.extra_config = "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE"
    dovecot.restart()
    mb = make_mailbox(poll_seconds=1)
    mb.fetch_new()
    t0 = time.monotonic()
    assert mb.wait_for_mail(30) is True  # "time to look", after poll_seconds
    assert 0.9 < time.monotonic() - t0 < 3
    stop = threading.Event()
    stop.set()
    assert mb.wait_for_mail(30, stop) is False


def test_dovecot_restart_during_idle_loses_nothing(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    dovecot.deliver(mail(1))
    dovecot.deliver(mail(2))
    mb = make_mailbox()
    assert len(mb.fetch_new()) == 2  # fetched, not yet marked when the server goes away

    def restart_and_deliver() -> None:
        time.sleep(0.3)
        dovecot.restart()
        dovecot.deliver(mail(3))

    t = threading.Thread(target=restart_and_deliver, daemon=True)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost):
        mb.wait_for_mail(20)
    assert time.monotonic() - t0 < 5
    t.join()

    fetched = mb.fetch_new()  # reconnects by itself
    assert ids_of(fetched) == [mid(1), mid(2), mid(3)]
    mb.mark_processed([m.ref for m in fetched])
    assert dovecot.counts() == {"INBOX": 0, "Processed": 3}


def test_restart_between_calls_is_transparent(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    dovecot.deliver(mail(1))
    mb = make_mailbox()
    fetched = mb.fetch_new()
    dovecot.restart()
    mb.mark_processed([m.ref for m in fetched])  # the dead link is noticed, reconnected, retried
    dovecot.restart()
    dovecot.deliver(mail(2))
    assert ids_of(mb.fetch_new()) == [mid(2)]
    assert dovecot.counts() == {"INBOX": 1, "Processed": 1}


def test_reconnect_backs_off_until_the_server_is_back(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    mb = make_mailbox()
    mb.connect()
    dovecot.stop()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="could not reconnect"):
        mb.reconnect(max_wait=1.0)
    assert 0.9 < time.monotonic() - t0 < 3

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="stopped"):
        mb.reconnect(max_wait=60, stop=stop)  # shutting down does not wait for the server
    assert time.monotonic() - t0 < 2

    threading.Timer(1.0, dovecot.start).start()
    mb.reconnect(max_wait=15)
    dovecot.deliver(mail(1))
    assert ids_of(mb.fetch_new()) == [mid(1)]


def test_wrong_password_is_not_retried(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    mb = make_mailbox(secret="wrong")
    t0 = time.monotonic()
    with pytest.raises(LoginFailed, match="rejected"):
        mb.fetch_new()
    assert time.monotonic() - t0 < 2


# --- UIDVALIDITY


def test_uidvalidity_change_folder_recreated(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    for n in (1, 2, 3):
        dovecot.deliver(mail(n), folder="Support")
    cps = MemoryCheckpoints()
    mb = make_mailbox(cps, folder="Support")
    first = mb.fetch_new()
    old_validity = parse_ref(first[0].ref)[1]
    mb.mark_processed([m.ref for m in first])

    # A migration recreates the folder and restores the old mail, plus one new message.
    with dovecot.client() as c:
        c.delete_folder("Support")
        c.create_folder("Support")
    for n in (1, 2, 3, 4):
        dovecot.deliver(mail(n), folder="Support")

    again = mb.fetch_new()
    assert ids_of(again) == [mid(1), mid(2), mid(3), mid(4)]  # dedup by Message-ID is the service's job
    assert {parse_ref(m.ref)[1] for m in again} != {old_validity}
    stale = first[0].ref
    mb.mark_processed([stale])  # a ref of the old UIDVALIDITY names nothing now: ignored
    assert dovecot.counts()["Support"] == 4
    mb.mark_processed([m.ref for m in again])
    assert dovecot.counts()["Support"] == 0 and dovecot.counts()["Processed"] == 7


def test_uidvalidity_change_inbox_rebuilt_while_stopped(
    dovecot: DovecotServer, make_mailbox: MailboxFactory
) -> None:
    dovecot.deliver(mail(1))
    dovecot.deliver(mail(2))
    cps = MemoryCheckpoints()
    mb = make_mailbox(cps)
    mb.mark_processed([m.ref for m in mb.fetch_new()])
    old = cps.get_checkpoint(mb.checkpoint_key)
    assert old is not None and old["last_uid"] == 2
    mb.close()

    dovecot.stop()
    home = dovecot.mail_dir / dovecot.user
    # INBOX loses its UID list and indexes: Dovecot must pick a new UIDVALIDITY ...
    for f in home.iterdir():
        if f.name == "dovecot-uidlist" or f.name.startswith(("dovecot.index", "dovecot.list.index")):
            f.unlink()
    for sub in ("new", "cur"):  # ... and a restore puts the processed mail back
        for f in (home / ".Processed" / sub).iterdir():
            shutil.copy2(f, home / "new" / f.name)
    dovecot.fix_ownership()
    dovecot.start()
    dovecot.deliver(mail(3))  # gets a low UID in the new numbering, below the old checkpoint

    fetched = mb.fetch_new()
    assert sorted(ids_of(fetched)) == [mid(1), mid(2), mid(3)]
    new = cps.get_checkpoint(mb.checkpoint_key)
    assert new is not None and new["uidvalidity"] != old["uidvalidity"]


# --- other clients


def test_other_client_moves_mail_between_search_and_fetch(
    dovecot: DovecotServer, make_mailbox: MailboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in (1, 2, 3):
        dovecot.deliver(mail(n))
    other = dovecot.client(dovecot.other_user, dovecot.other_password)
    other.create_folder("Human")
    other.select_folder("INBOX")
    original = IMAPClient.search

    def search_then_race(self: IMAPClient, criteria: Any = "ALL", charset: Any = None) -> Any:
        found = original(self, criteria, charset)
        if self is not other and PROCESSED_KEYWORD in (criteria if isinstance(criteria, list) else []):
            other.move([2], "Human")  # a colleague takes message 2 right after our SEARCH
        return found

    monkeypatch.setattr(IMAPClient, "search", search_then_race)
    mb = make_mailbox()
    fetched = mb.fetch_new()
    monkeypatch.undo()
    other.logout()
    mb.mark_processed([m.ref for m in fetched])
    counts = dovecot.counts()
    assert counts["Human"] == 1 and counts["INBOX"] == 0 and counts["Processed"] == 2
    assert sum(counts.values()) == 3  # nothing lost, nothing duplicated
    assert mb.fetch_new() == []


def test_servers_that_answer_no_for_vanished_mail(
    dovecot: DovecotServer, make_mailbox: MailboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot quietly skips vanished UIDs; other servers answer NO [EXPUNGEISSUED] for the whole set."""
    for n in (1, 2, 3):
        dovecot.deliver(mail(n))
    other = dovecot.client(dovecot.other_user, dovecot.other_password)
    other.create_folder("Human")
    other.select_folder("INBOX")
    search = IMAPClient.search

    def search_then_race(self: IMAPClient, criteria: Any = "ALL", charset: Any = None) -> Any:
        found = search(self, criteria, charset)
        if self is not other and PROCESSED_KEYWORD in (criteria if isinstance(criteria, list) else []):
            other.move([2], "Human")
        return found

    def strict(original: Callable[..., Any]) -> Callable[..., Any]:
        def command(self: IMAPClient, messages: Any, *args: Any, **kwargs: Any) -> Any:
            if self is not other and 2 in list(messages):
                raise IMAPClientError("UID command failed: NO [EXPUNGEISSUED] Some messages were expunged")
            return original(self, messages, *args, **kwargs)

        return command

    monkeypatch.setattr(IMAPClient, "search", search_then_race)
    monkeypatch.setattr(IMAPClient, "fetch", strict(IMAPClient.fetch))
    monkeypatch.setattr(IMAPClient, "move", strict(IMAPClient.move))
    mb = make_mailbox()
    fetched = mb.fetch_new()  # SEARCH saw UID 2, FETCH of 1:3 gets NO, the retry fetches 1 and 3
    assert ids_of(fetched) == [mid(1), mid(3)]
    uidvalidity = parse_ref(fetched[0].ref)[1]
    mb.mark_processed([m.ref for m in fetched] + [make_ref("INBOX", uidvalidity, 2)])
    monkeypatch.undo()
    other.logout()
    assert dovecot.counts() == {"INBOX": 0, "Human": 1, "Processed": 2}


@pytest.mark.parametrize("processed", ["move", "flag"])
def test_other_client_moves_mail_between_fetch_and_mark(
    dovecot: DovecotServer, make_mailbox: MailboxFactory, processed: str
) -> None:
    for n in (1, 2, 3, 4):
        dovecot.deliver(mail(n))
    mb = make_mailbox(processed=processed)
    fetched = mb.fetch_new()
    assert len(fetched) == 4
    with dovecot.client(dovecot.other_user, dovecot.other_password) as other:
        other.create_folder("Human")
        other.select_folder("INBOX")
        other.move([1, 3], "Human")
    mb.mark_processed([m.ref for m in fetched])  # two of these are gone: no error
    mb.quarantine(fetched[0].ref, "gone already")  # also fine
    counts = dovecot.counts()
    assert counts["Human"] == 2
    assert sum(counts.values()) == 4
    assert dovecot.message_ids("Human") == [mid(1), mid(3)]
    assert mb.fetch_new() == []


# --- the Sent folder


def test_append_sent_and_sent_contains(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    mb = make_mailbox()
    assert mb.sent_contains("<r1@support.example>") is False  # no Sent folder yet
    raw = (
        b"From: casebot@support.example\r\nTo: c@customer.example\r\nSubject: Re: Case\r\n"
        b"Message-ID: <r1@support.example>\r\n\r\nThanks\r\n"
    )
    mb.append_sent(raw)
    assert dovecot.counts()["Sent"] == 1
    assert b"\\Seen" in flags_in(dovecot, "Sent")[0]
    assert mb.sent_contains("<r1@support.example>") is True
    assert mb.sent_contains("r1@support.example") is True
    assert mb.sent_contains("<1@support.example>") is False  # a substring is not a match
    assert mb.sent_contains("<r2@support.example>") is False
    assert mb.sent_contains('<we"ird (id)@x>') is False


# --- check() for doctor


def test_check_good_login(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    dovecot.deliver(mail(1))
    verdict = make_mailbox().check()
    assert verdict.startswith("ok:") and "INBOX has 1 messages" in verdict and "IDLE" in verdict
    assert "\n" not in verdict


def test_check_wrong_password(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    with pytest.raises(LoginFailed) as e:
        make_mailbox(secret="nope").check()
    assert "rejected" in e.value.reason and "password" in e.value.reason


def test_check_connection_refused(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    mb = make_mailbox()
    dovecot.stop()
    with pytest.raises(ImapError, match="connection refused"):
        mb.check()


def test_check_unknown_folder(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    with pytest.raises(ImapError, match=r"folder 'Support' does not exist .*INBOX"):
        make_mailbox(folder="Support").check()
    with pytest.raises(ImapError, match="does not exist"):
        make_mailbox(folder="Support").fetch_new()


def test_check_tls_mismatch(dovecot: DovecotServer, make_mailbox: MailboxFactory) -> None:
    with pytest.raises(ImapError, match="TLS handshake"):
        make_mailbox(security="ssl").check()
    with pytest.raises(ImapError, match="does not offer STARTTLS"):
        make_mailbox(security="starttls").check()


def test_tls_and_starttls_work(dovecot: DovecotServer) -> None:
    dovecot.enable_tls()
    assert dovecot.tls_port is not None and dovecot.ca_file is not None
    trusted = ssl.create_default_context(cafile=str(dovecot.ca_file))
    for security, port in (("ssl", dovecot.tls_port), ("starttls", dovecot.port)):
        mb = ImapMailbox(
            settings_for(dovecot, security=security, port=port), lambda: dovecot.password, ssl_context=trusted
        )
        assert mb.check().startswith("ok:")
        mb.close()
    untrusted = ImapMailbox(
        settings_for(dovecot, security="ssl", port=dovecot.tls_port), lambda: dovecot.password
    )
    with pytest.raises(ImapError, match="not trusted"):
        untrusted.check()
    plain_to_tls = ImapMailbox(
        settings_for(dovecot, security="none", port=dovecot.tls_port, timeout_seconds=1),
        lambda: dovecot.password,
    )
    with pytest.raises(ImapError, match="security = 'ssl'"):
        plain_to_tls.check()


# --- credentials


def test_oauth2_token_from_command_and_file(dovecot: DovecotServer, tmp_path: Path) -> None:
    # Dovecot 2.3 checks an XOAUTH2 token like a password against its passdb: "secret" logs in.
    command = f"{sys.executable} -c \"print('{dovecot.password}')\""
    mb = ImapMailbox(settings_for(dovecot, oauth2_token_command=command))
    assert mb.check().startswith("ok:")
    token_file = tmp_path / "token"
    token_file.write_text(dovecot.password + "\n", encoding="utf-8")
    assert ImapMailbox(settings_for(dovecot, oauth2_token_file=str(token_file))).check().startswith("ok:")
    failing = f"{sys.executable} -c \"import sys; sys.exit('no refresh token')\""
    with pytest.raises(ImapError, match="oauth2_token_command exited with 1: no refresh token"):
        ImapMailbox(settings_for(dovecot, oauth2_token_command=failing)).check()
    with pytest.raises(ImapError, match="cannot read oauth2_token_file"):
        ImapMailbox(settings_for(dovecot, oauth2_token_file=str(tmp_path / "missing"))).check()


def test_password_from_environment(dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILBOT_TEST_IMAP_PASSWORD", raising=False)
    with pytest.raises(ImapError, match="MAILBOT_TEST_IMAP_PASSWORD"):
        ImapMailbox(settings_for(dovecot)).check()
    monkeypatch.setenv("MAILBOT_TEST_IMAP_PASSWORD", dovecot.password)
    assert ImapMailbox(settings_for(dovecot)).check().startswith("ok:")


def test_refs_round_trip() -> None:
    assert parse_ref(make_ref("Support/Cases", 7, 42)) == ("Support/Cases", 7, 42)
    with pytest.raises(ValueError):
        parse_ref("INBOX/42")
