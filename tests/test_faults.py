"""Faults around the service: the IMAP link cut or the server restarted in the middle of a fetch or of IDLE,
a silently dead link, SMTP answering 421/451/550 at every stage or hanging up mid-DATA, a full disk while
saving, and a corrupt state file. Whatever happens: no mail lost, none recorded or sent twice, and a clear
word about it.

(Adapter-level IMAP restarts are in test_imap.py; SMTP 451-at-RCPT, a server that is down, 550-at-RCPT and the
outbox crash windows in test_followup.py.)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mailbot.cli import main as cli
from mailbot.mailbox.imap.mailbox import ConnectionLost, ImapMailbox
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import EntryKind
from mailbot.runner import run_forever
from mailbot.service import Service
from mailbot.storage import StoreWriteError
from mailbot.store import Store
from mailbot.transport.smtp import SmtpTransport
from mailbot.wiring import make_calendar

pytest.register_assert_rewrite("tests.smtp_server")  # imported here before it is loaded as a plugin
from tests.smtp_server import SmtpServer  # noqa: E402
from tests.test_crash import START, engineer_mail, key, message_id  # noqa: E402

if TYPE_CHECKING:
    from tests.imap_server import DovecotServer

pytest_plugins = ["tests.imap_server"]

ROOT = Path(__file__).resolve().parents[1]


def bulky(n: int) -> bytes:
    """An engineer mail of about 12 KB, so that a FETCH of a hundred of them takes a while on the wire."""
    return engineer_mail(n).replace(b"\r\nBest regards", b"\r\n" + b"spooler trace line ........\r\n" * 400
                                    + b"Best regards")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- a TCP proxy that cuts, pauses or blackholes the IMAP link -----------------------------------------------


class Proxy:
    """127.0.0.1:port → the server. `cut_after(n, times)`: the next `times` connections are cut once the server
    has sent them `n` bytes (after calling `at_cut`, e.g. to restart the server while the data is held).
    `cut_all()` hangs up every connection; `blackhole()` silently stops forwarding on the open ones (a NAT
    that forgot them); new connections always work."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.links: list[dict[str, Any]] = []
        self.cut_bytes = 0
        self.cuts_left = 0
        self.at_cut: Callable[[], None] | None = None
        self.cuts = 0
        self.closed = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def cut_after(self, n: int, times: int = 1, at_cut: Callable[[], None] | None = None) -> None:
        with self.lock:
            self.cut_bytes, self.cuts_left, self.at_cut = n, times, at_cut

    def cut_all(self) -> None:
        with self.lock:
            links = list(self.links)
        for link in links:
            self._close(link)

    def blackhole(self) -> None:
        with self.lock:
            for link in self.links:
                link["dead"] = True

    def close(self) -> None:
        self.closed = True
        # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux), and a thread
        # left behind would keep later tests from forking parse workers.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.acceptor.join(timeout=5)
        self.cut_all()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                link = {"client": client, "server": server, "dead": False, "down": 0,
                        "cut_at": self.cut_bytes if self.cuts_left > 0 else None}
                if self.cuts_left > 0:
                    self.cuts_left -= 1
                self.links.append(link)
            threading.Thread(target=self._pump, args=(link, server, client, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, client, server, False), daemon=True).start()

    def _pump(self, link: dict[str, Any], src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if link["dead"]:
                    continue  # swallowed: neither side hears anything any more
                if downstream and link["cut_at"] is not None and link["down"] + len(data) >= link["cut_at"]:
                    keep = link["cut_at"] - link["down"]
                    dst.sendall(data[:keep])
                    self.cuts += 1
                    if self.at_cut is not None:
                        self.at_cut()
                    break
                dst.sendall(data)
                if downstream:
                    link["down"] += len(data)
        except OSError:
            pass
        self._close(link)

    def _close(self, link: dict[str, Any]) -> None:
        with self.lock:
            if link in self.links:
                self.links.remove(link)
        for s in (link["client"], link["server"]):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def proxy(dovecot: DovecotServer) -> Iterator[Proxy]:
    p = Proxy(dovecot.host, dovecot.port)
    yield p
    p.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = HangingUpSmtpServer()
    server.start()
    yield server
    server.stop()


class HangingUpSmtpServer(SmtpServer):
    """Can also hang up in the middle of the next DATA (after the message was transferred, before the reply)."""

    hang_up_next = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hang_up_next:
            self.hang_up_next -= 1
            server.transport.close()
            return "451 4.3.0 never seen by the client"
        return await super().handle_DATA(server, session, envelope)


def imap_settings(make_settings: Any, port: int, smtp: SmtpServer | None = None, **mailbox: Any) -> Any:
    return make_settings(
        bot={"language": "en"},
        mailbox={"kind": "imap", "host": "127.0.0.1", "port": port, "security": "none",
                 "username": "casebot@support.example", "poll_seconds": 1, "timeout_seconds": 5, **mailbox},
        smtp={"kind": "smtp", "host": "127.0.0.1", "port": smtp.port if smtp else 1, "security": "none",
              "username": ""},
        followup={"sweep_seconds": 1},
    )


def imap_bot(settings: Any, stop: threading.Event | None = None) -> Service:
    store = Store(settings.bot.state_dir / "store")
    mailbox = ImapMailbox(settings.mailbox, checkpoints=store, reconnect_max_wait=15, stop=stop)
    transport = SmtpTransport(settings.smtp, None, accepted_log=settings.bot.state_dir / "smtp-accepted.log")
    return Service(settings, store, mailbox, transport, make_calendar(settings), sent_folder=mailbox)


def assert_each_recorded_once(store: Store, expected: Counter[str]) -> None:
    inbound = Counter(e.message_id for c in store.all_cases() for e in c.timeline if e.direction == "in")
    assert inbound == Counter(set(expected))


# --- IMAP: link cut or server restarted mid-fetch and mid-IDLE --------------------------------------------


@pytest.mark.imap
def test_the_link_cut_twice_in_the_middle_of_a_fetch_loses_nothing(
    make_settings: Any, dovecot: DovecotServer, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    dovecot.deliver_many(bulky(n) for n in range(150))
    bot = imap_bot(imap_settings(make_settings, proxy.port))
    # Cut both the connection and the one transparent retry, ~600 KB into the FETCH of 1.8 MB: the cycle fails.
    proxy.cut_after(600_000, times=2)
    with pytest.raises(ConnectionLost):
        bot.run_once(START)
    assert proxy.cuts == 2
    assert dovecot.counts()["INBOX"] == 150  # nothing handled, nothing lost
    report = bot.run_once(START)  # the next cycle (the runner retries): everything, once
    assert report.opened == 150 and report.duplicates == 0
    counts = dovecot.counts()
    assert counts["INBOX"] == 0 and counts["Processed"] == 150
    assert_each_recorded_once(bot.store, Counter(f"<eng-{n}@support.example>" for n in range(150)))
    bot.mailbox.close()


@pytest.mark.imap
def test_the_server_restarted_in_the_middle_of_a_fetch_loses_nothing(
    make_settings: Any, dovecot: DovecotServer, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    dovecot.deliver_many(bulky(n) for n in range(120))
    bot = imap_bot(imap_settings(make_settings, proxy.port))
    # Half of the FETCH has come through when Dovecot restarts; the adapter reconnects and fetches again.
    proxy.cut_after(700_000, times=1, at_cut=dovecot.restart)
    report = bot.run_once(START)
    assert proxy.cuts == 1
    assert report.opened == 120 and report.duplicates == 0
    counts = dovecot.counts()
    assert counts["INBOX"] == 0 and counts["Processed"] == 120
    assert_each_recorded_once(bot.store, Counter(f"<eng-{n}@support.example>" for n in range(120)))
    bot.mailbox.close()


@pytest.mark.imap
@pytest.mark.parametrize("fault", ["link cut", "server restart", "silently dead link"])
def test_the_running_service_survives_faults_during_idle(
    make_settings: Any, dovecot: DovecotServer, proxy: Proxy, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """`run_forever` idling on the proxy; the fault strikes; mail that arrives meanwhile is handled once, and so
    is the reminder the sweep sends for it (a copy in Sent, over the same server)."""
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    settings = imap_settings(make_settings, proxy.port, smtp, timeout_seconds=2)
    stop = threading.Event()
    bot = imap_bot(settings, stop)
    runner = threading.Thread(target=run_forever, args=(bot, settings),
                              kwargs={"stop": stop, "fixed_now": START}, daemon=True)
    runner.start()
    try:
        dovecot.deliver(engineer_mail(1))
        wait_for(lambda: dovecot.counts().get("Processed", 0) == 1, 15, "the first mail")
        time.sleep(0.5)  # idling again
        if fault == "link cut":
            proxy.cut_all()
        elif fault == "server restart":
            dovecot.restart()
        else:
            proxy.blackhole()  # no RST, no FIN: only the IDLE renewal's timeout can tell
        dovecot.deliver(engineer_mail(2))
        dovecot.deliver(engineer_mail(3))
        wait_for(lambda: dovecot.counts().get("Processed", 0) == 3, 30, "the mail sent during the fault")
        wait_for(lambda: len(smtp.messages) >= 3, 15, "the three reminders")
        time.sleep(1.5)  # another sweep: nothing more goes out
    finally:
        stop.set()
        runner.join(timeout=20)
    assert not runner.is_alive()
    assert dovecot.counts()["INBOX"] == 0
    sent = Counter(message_id(m.raw) for m in smtp.messages)
    assert len(sent) == 3 and set(sent.values()) == {1}
    assert Counter(dovecot.message_ids("Sent")) == sent
    store = Store(settings.bot.state_dir / "store")
    assert_each_recorded_once(store, Counter(f"<eng-{n}@support.example>" for n in (1, 2, 3)))
    assert all(store.get_case(key(n)).reminders_sent == 1 for n in (1, 2, 3))


# --- SMTP: 421/451 at every stage, a hang-up mid-DATA, 550 for the message -------------------------------


def maildir_bot(settings: Any) -> Service:
    """A fresh process's view: the store read from disk again."""
    return Service(settings, Store(settings.bot.state_dir / "store"), MaildirMailbox(settings.mailbox.path),
                   SmtpTransport(settings.smtp, None, accepted_log=settings.bot.state_dir / "smtp-accepted.log"),
                   make_calendar(settings))


def smtp_settings(make_settings: Any, smtp: SmtpServer) -> Any:
    return make_settings(bot={"language": "en"},
                         smtp={"kind": "smtp", "host": smtp.host, "port": smtp.port, "security": "none",
                               "username": ""})


def minutes(m: float) -> Any:
    from datetime import timedelta

    return START + timedelta(minutes=m)


def test_temporary_smtp_failures_at_every_stage_are_retried_with_backoff_and_sent_once(
    make_settings: Any, smtp: HangingUpSmtpServer
) -> None:
    settings = smtp_settings(make_settings, smtp)
    deliver(settings.mailbox.path, engineer_mail(7))
    bot = maildir_bot(settings)
    smtp.fail_next(421, stage="MAIL")  # "service shutting down"
    assert bot.run_once(START).deferred == 1
    entry = bot.store.outbox_pending()[0]
    assert entry["attempts"] == 1 and "421" in entry["last_error"]
    assert bot.run_once(minutes(0.5)).deferred == 0 and smtp.messages == []  # not before the back-off (1 min)
    smtp.fail_next(451, stage="DATA")  # the whole message went over the wire, then "try again later"
    assert bot.run_once(minutes(1)).deferred == 1
    smtp.hang_up_next = 1  # the connection drops before the reply to DATA
    assert bot.run_once(minutes(6)).deferred == 1  # 5 min later
    assert smtp.messages == []
    assert bot.run_once(minutes(20)).sent == 0  # not yet: 15 min after the last try
    assert bot.run_once(minutes(21)).sent == 1  # and then the server takes it
    assert bot.run_once(minutes(80)).sent == 0
    [mail] = smtp.messages
    assert set(mail.recipients) == {"cust7@customer7.example", "eng0@support.example"}
    assert bot.store.outbox_pending() == []
    ledger = bot.store.outbox_entry(entry["action_id"])
    assert ledger is not None and ledger["status"] == "sent" and ledger["attempts"] == 4
    assert maildir_bot(settings).store.get_case(key(7)).reminders_sent == 1


def test_550_for_the_whole_message_is_recorded_and_the_engineer_is_told_once(
    make_settings: Any, smtp: SmtpServer
) -> None:
    settings = smtp_settings(make_settings, smtp)
    deliver(settings.mailbox.path, engineer_mail(8))
    bot = maildir_bot(settings)
    smtp.fail_next(550, stage="RCPT")  # every recipient refused (a 5xx at DATA is the message's, test_transport.py)
    report = bot.run_once(START)
    assert report.failed == 1
    case = bot.store.get_case(key(8))
    assert "cust8@customer8.example" in case.failed_addresses
    assert case.next_action is None  # nobody left to remind
    assert any("reminder failed" in note and "550" in note for note in case.notes)
    assert smtp.messages == []
    assert bot.run_once(minutes(1)).sent == 1  # the notice, recorded with the failure, goes in the next cycle
    [notice] = smtp.messages  # to the engineer only, saying what happened
    assert notice.recipients == ("eng1@support.example",)
    assert b"cust8@customer8.example" in notice.raw
    entry = bot.store.outbox_entry(f"{key(8)}/reminder/1/{case.last_engineer_mail.isoformat()}/due")
    assert entry is not None and entry["status"] == "failed" and "550" in entry["error"]
    for later in (minutes(60), minutes(60 * 24 * 6)):
        assert maildir_bot(settings).run_once(later).sent == 0  # no retry, no second notice, no reminder
    assert len(smtp.messages) == 1
    assert [e.kind for e in bot.store.get_case(key(8)).timeline].count(EntryKind.RECEIPT) == 1


# --- disk full while saving --------------------------------------------------------------------------------


class DiskFull:
    """os.write and os.fsync fail with ENOSPC for files under `under` while `full` is set — what a full disk
    does (ext4 reports delayed-allocation failures at fsync)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, under: Path, only: str = "") -> None:
        self.under = str(under.resolve())
        self.only = only
        self.full = True
        self.hits = 0
        real_write, real_fsync = os.write, os.fsync

        def write(fd: int, data: Any) -> int:
            self._check(fd)
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            self._check(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        import mailbot.storage as storage

        monkeypatch.setattr(storage, "_SYNCFS", None)  # syncfs would not see a simulated full disk

    def _check(self, fd: int) -> None:
        if not self.full:
            return
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if path.startswith(self.under) and self.only in path:
            self.hits += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """cli.main() points the "mailbot" logger at this test's stderr: put it back afterwards."""
    logger = logging.getLogger("mailbot")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@contextlib.contextmanager
def recorded_logs() -> Iterator[list[logging.LogRecord]]:
    """The "mailbot" log records (the CLI's setup_logging stops them from reaching caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("mailbot")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def store_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_disk_stops_the_cycle_with_a_clear_error_and_the_mail_waits_in_new(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[bot]\nstate_dir = "state"\nlanguage = "en"\n[engineers]\ndomains = ["support.example"]\n'
                      '[mailbox]\npath = "maildir"\n', encoding="utf-8")
    maildir = tmp_path / "maildir"
    deliver(maildir, engineer_mail(1))
    assert cli.main(["run", "--once", "--config", str(config), "--now", "2026-03-02T10:00:00+08:00"]) == 0
    store_root = tmp_path / "state" / "store"
    before = store_files(store_root)
    deliver(maildir, engineer_mail(2))
    capsys.readouterr()

    disk = DiskFull(monkeypatch, tmp_path / "state")
    code = cli.main(["run", "--once", "--config", str(config), "--now", "2026-03-02T10:05:00+08:00"])
    err = capsys.readouterr().err
    assert code == 1 and disk.hits
    last = err.strip().splitlines()[-1]  # before it, the log lines of the cycle
    assert last.startswith("mailbot: cannot save the state (") and str(store_root) in last
    assert "No space left on device" in last and "nothing was changed on disk" in last and "Traceback" not in err
    assert len(os.listdir(maildir / "new")) == 1  # the new mail stays for the next run
    assert store_files(store_root) == before  # nothing half-written, no temp file left behind
    assert {c.key for c in Store(store_root).all_cases()} == {key(1)}  # and the store loads

    disk.full = False
    assert cli.main(["run", "--once", "--config", str(config), "--now", "2026-03-02T10:10:00+08:00"]) == 0
    assert os.listdir(maildir / "new") == []
    store = Store(store_root)
    assert {c.key for c in store.all_cases()} == {key(1), key(2)}
    assert_each_recorded_once(store, Counter({"<eng-1@support.example>": 1, "<eng-2@support.example>": 1}))


def test_a_full_disk_never_lets_a_mail_out_before_its_record_is_saved(
    make_settings: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = smtp_settings(make_settings, smtp)
    deliver(settings.mailbox.path, engineer_mail(4))
    maildir_bot(settings).run_once(minutes(-60 * 24 * 4))  # Monday: the case opens, nothing is due
    bot = maildir_bot(settings)
    disk = DiskFull(monkeypatch, settings.bot.state_dir)
    with pytest.raises(StoreWriteError):
        bot.run_once(START)
    assert smtp.messages == [] and disk.hits
    assert Store(settings.bot.state_dir / "store").outbox_pending() == []  # the failed commit left nothing
    disk.full = False
    assert bot.run_once(minutes(1)).sent == 1  # the same process, once there is room again
    assert maildir_bot(settings).run_once(minutes(2)).sent == 0
    assert len(smtp.messages) == 1


@pytest.mark.imap
def test_a_full_disk_in_the_running_service_is_reported_and_retried_and_loses_nothing(
    make_settings: Any, dovecot: DovecotServer, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    settings = imap_settings(make_settings, dovecot.port, smtp)
    stop = threading.Event()
    bot = imap_bot(settings, stop)
    disk = DiskFull(monkeypatch, settings.bot.state_dir)
    dovecot.deliver(engineer_mail(5))
    runner = threading.Thread(target=run_forever, args=(bot, settings),
                              kwargs={"stop": stop, "fixed_now": START}, daemon=True)
    with recorded_logs() as records:
        runner.start()
        try:
            wait_for(lambda: disk.hits >= 2, 10, "the service to hit the full disk")
            time.sleep(1.0)
            assert dovecot.counts()["INBOX"] == 1 and smtp.messages == []  # waits, untouched
            disk.full = False
            wait_for(lambda: dovecot.counts().get("Processed", 0) == 1, 20, "the mail, once there is room")
            wait_for(lambda: len(smtp.messages) == 1, 10, "the reminder")
        finally:
            stop.set()
            runner.join(timeout=20)
    assert not runner.is_alive()
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert errors and all("No space left on device" in m and "nothing was changed on disk" in m for m in errors)
    assert not any("mailbox problem" in r.getMessage() or r.exc_info for r in records)
    store = Store(settings.bot.state_dir / "store")
    assert_each_recorded_once(store, Counter({"<eng-5@support.example>": 1}))
    assert store.get_case(key(5)).reminders_sent == 1


@pytest.mark.imap
def test_a_full_disk_when_saving_the_imap_checkpoint_is_not_taken_for_a_lost_connection(
    make_settings: Any, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    settings = imap_settings(make_settings, dovecot.port)
    bot = imap_bot(settings)
    bot.run_once(START)  # the first checkpoint (folder, UIDVALIDITY) is written
    dovecot.deliver(engineer_mail(6))
    disk = DiskFull(monkeypatch, settings.bot.state_dir, only="checkpoints.json")
    with pytest.raises(StoreWriteError, match="No space left on device"):
        bot.run_once(START)  # the case was saved and the mail moved; only the checkpoint could not be written
    assert disk.hits and bot.store.get_case(key(6)) is not None
    disk.full = False
    report = bot.run_once(minutes(1))
    assert report.ingested == 0 and report.duplicates == 0
    counts = dovecot.counts()
    assert counts["INBOX"] == 0 and counts["Processed"] == 1
    assert_each_recorded_once(Store(settings.bot.state_dir / "store"), Counter({"<eng-6@support.example>": 1}))
    bot.mailbox.close()


# --- a corrupt state file -----------------------------------------------------------------------------------


SERVICE_CONFIG = ('[bot]\nstate_dir = "state"\nlanguage = "en"\n[engineers]\ndomains = ["support.example"]\n'
                  '[mailbox]\npath = "maildir"\npoll_seconds = 1\n[followup]\nsweep_seconds = 1\n')


@pytest.fixture
def with_history(tmp_path: Path) -> Path:
    """A state folder with three open cases, made by the real command."""
    (tmp_path / "config.toml").write_text(SERVICE_CONFIG, encoding="utf-8")
    for n in range(3):
        deliver(tmp_path / "maildir", engineer_mail(n))
    assert cli.main(["run", "--once", "--config", str(tmp_path / "config.toml"),
                     "--now", "2026-03-02T10:00:00+08:00"]) == 0
    return tmp_path


def service(folder: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot.cli", "run", "--config", "config.toml", *args],
                          cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("victim", ["journal.json", "ids/runs.json", "layout.json", "due", "active"])
def test_a_corrupt_state_file_stops_the_service_with_a_clear_message_and_is_never_overwritten(
    with_history: Path, victim: str
) -> None:
    """Read at start (journal, id index, layout: nothing is written at all) or only when first needed (the
    due index at the first sweep, a case shard when its case is read): either way `mailbot run` exits 1 with
    one line naming the file and its copy, never writes that file, and a second start keeps the one copy."""
    store_root = with_history / "state" / "store"
    lazy = victim in ("due", "active")
    path = next(p for p in sorted((store_root / victim).glob("*.json"))) if lazy else store_root / victim
    garbage = b'{"_default": {"1": {"_k": "x", "trunc'
    path.write_bytes(garbage)
    deliver(with_history / "maildir", engineer_mail(9))  # new mail must wait, or be recorded: never lost
    before = store_files(store_root)
    for attempt in (1, 2):
        result = service(with_history, "--now", "2026-03-06T10:00:00+08:00")
        assert result.returncode == 1, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("mailbot: ") and str(path) in last and "is not valid JSON" in last
        assert ".corrupt-" in last and "will not overwrite it" in last
        assert "Traceback" not in result.stderr
        assert path.read_bytes() == garbage
        copies = list(path.parent.glob(path.name + ".corrupt-*"))
        assert len(copies) == 1 and copies[0].read_bytes() == garbage  # one copy, even after a restart
        if not lazy:
            now = {k: v for k, v in store_files(store_root).items() if ".corrupt-" not in k}
            assert now == before, f"attempt {attempt} wrote to the store"
            assert len(os.listdir(with_history / "maildir" / "new")) == 1
    if lazy:  # the mail may have been taken before the damage was seen: then it is recorded
        waiting = len(os.listdir(with_history / "maildir" / "new")) == 1
        assert waiting == (Store(store_root).seen("<eng-9@support.example>") is None)
