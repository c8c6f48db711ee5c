"""Crashes: the real service (`mailbot run` in a subprocess, IMAP on a real Dovecot, SMTP to aiosmtpd in this
process) is killed with SIGKILL at random moments while 500 mails arrive and reminders go out, and restarted
each time. At the end nothing is lost, nothing is doubled, and the store loads. A second test kills a process
that commits to the store in a loop: every commit is all or nothing.

The random points come from MAILBOT_CRASH_SEED (a fresh seed is printed when it is not set) so a failure can
be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from mailbot.models import CaseStatus, EntryKind
from mailbot.store import Store

pytest.register_assert_rewrite("tests.smtp_server")  # imported here before it is loaded as a plugin
from tests.smtp_server import SmtpServer  # noqa: E402

if TYPE_CHECKING:
    from tests.imap_server import DovecotServer

pytest_plugins = ["tests.imap_server"]
pytestmark = pytest.mark.imap

ROOT = Path(__file__).resolve().parents[1]
ZONE = ZoneInfo("Asia/Shanghai")
# Friday 6 March 2026, 10:00 in Shanghai. The engineers wrote on Monday 2 March 09:30: three business days
# later (Thursday 09:30) the first reminder fell due, so every case still waiting on its customer is due at
# once; the second reminder is not due before Wednesday 11 March, far beyond the run.
START = datetime(2026, 3, 6, 10, 0, tzinfo=ZONE)
ENGINEER_DATE = "Mon, 02 Mar 2026 09:30:00 +0800"
REPLY_DATE = "Thu, 05 Mar 2026 08:15:00 +0800"

KILLS = 20
CASES = 300
REPLIES = 60  # cases 0..59: the customer answers (no more reminders once it is read)
CLOSES = 20  # cases 60..79: the engineer writes #close to the bot (closure to the customer, receipt to him)
AUTO = 20  # cases 80..99: the customer's out-of-office (kept, changes nothing, never answered)
DUPLICATES = 40  # cases 100..139: the engineer's mail arrives twice (To and Cc copy)
UNMATCHED = 50  # mail without a case key or a known thread
BROKEN = 10  # not mail at all: quarantined
TOTAL = CASES + REPLIES + CLOSES + AUTO + DUPLICATES + UNMATCHED + BROKEN

CONFIG = """
[bot]
address = "casebot@support.example"
name = "casebot"
state_dir = "state"
language = "en"
[engineers]
domains = ["support.example"]
# Mail about the customers' side only: every mail sent is on a case's timeline (no digest, no nudge).
[nudge]
after_business_hours = 0
escalate_after_business_hours = 0
[digest]
at = ""
[mailbox]
kind = "imap"
host = "{imap_host}"
port = {imap_port}
security = "none"
username = "{imap_user}"
password_env = "MAILBOT_IMAP_PASSWORD"
processed = "move"
poll_seconds = 1
timeout_seconds = 10
[smtp]
kind = "smtp"
host = "{smtp_host}"
port = {smtp_port}
security = "none"
username = ""
timeout_seconds = 10
[followup]
sweep_seconds = 1
"""


# --- the mail ------------------------------------------------------------------------------------------


def key(n: int) -> str:
    return f"CAS-{10000 + n:05d}-K{n:05d}"


def engineer_mail(n: int) -> bytes:
    return (
        f"From: Engineer {n % 7} <eng{n % 7}@support.example>\r\n"
        f"To: Customer {n} <cust{n}@customer{n}.example>\r\n"
        f"Cc: casebot@support.example\r\n"
        f"Subject: [Case: {key(n)} ] Printer queue {n} stalls\r\n"
        f"Date: {ENGINEER_DATE}\r\n"
        f"Message-ID: <eng-{n}@support.example>\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n"
        f"Hello,\r\n\r\nplease send us the spooler log of server {n} and the time the queue stopped.\r\n"
        f"\r\nBest regards\r\nEngineer {n % 7}\r\n"
    ).encode()


def customer_reply(n: int) -> bytes:
    return (
        f"From: Customer {n} <cust{n}@customer{n}.example>\r\n"
        f"To: eng{n % 7}@support.example\r\n"
        f"Cc: casebot@support.example\r\n"
        f"Subject: RE: [Case: {key(n)} ] Printer queue {n} stalls\r\n"
        f"Date: {REPLY_DATE}\r\n"
        f"Message-ID: <reply-{n}@customer{n}.example>\r\n"
        f"In-Reply-To: <eng-{n}@support.example>\r\n"
        f"References: <eng-{n}@support.example>\r\n"
        f"\r\n"
        f"Here is the log you asked for: spooler stopped at 03:12.\r\n"
    ).encode()


def close_command(n: int) -> bytes:
    return (
        f"From: eng{n % 7}@support.example\r\n"
        f"To: casebot@support.example\r\n"
        f"Subject: RE: [Case: {key(n)} ] Printer queue {n} stalls\r\n"
        f"Date: {REPLY_DATE}\r\n"
        f"Message-ID: <close-{n}@support.example>\r\n"
        f"\r\n"
        f"#close\r\nSummary: the spooler service of server {n} was restarted; fixed.\r\n"
    ).encode()


def auto_reply(n: int) -> bytes:
    return (
        f"From: cust{n}@customer{n}.example\r\n"
        f"To: eng{n % 7}@support.example\r\n"
        f"Subject: Automatic reply: [Case: {key(n)} ] Printer queue {n} stalls\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"Date: {REPLY_DATE}\r\n"
        f"Message-ID: <ooo-{n}@customer{n}.example>\r\n"
        f"In-Reply-To: <eng-{n}@support.example>\r\n"
        f"\r\n"
        f"I am out of the office with limited access to email.\r\n"
    ).encode()


def unmatched_mail(n: int) -> bytes:
    return (
        f"From: Someone {n} <someone{n}@elsewhere.example>\r\n"
        f"To: casebot@support.example\r\n"
        f"Subject: Question {n} about licences\r\n"
        f"Date: {REPLY_DATE}\r\n"
        f"Message-ID: <question-{n}@elsewhere.example>\r\n"
        f"\r\n"
        f"How many seats does licence {n} cover?\r\n"
    ).encode()


def broken_mail(n: int) -> bytes:
    return f"broken message {n}: no header at all\r\njust text\r\n".encode()


@dataclass
class Corpus:
    raws: list[bytes] = field(default_factory=list)  # in delivery order
    ids: Counter[str] = field(default_factory=Counter)  # Message-ID → deliveries
    broken: list[bytes] = field(default_factory=list)


def build_corpus(rng: random.Random) -> Corpus:
    """500 mails; every follow-up comes after the engineer mail it answers, anywhere later in the stream."""
    stream: list[bytes] = [engineer_mail(n) for n in range(CASES)]

    def insert_after(raw: bytes, n: int) -> None:
        first = stream.index(engineer_mail(n))
        stream.insert(rng.randint(first + 1, len(stream)), raw)

    for n in range(REPLIES):
        insert_after(customer_reply(n), n)
    for n in range(REPLIES, REPLIES + CLOSES):
        insert_after(close_command(n), n)
    for n in range(REPLIES + CLOSES, REPLIES + CLOSES + AUTO):
        insert_after(auto_reply(n), n)
    start = REPLIES + CLOSES + AUTO
    for n in range(start, start + DUPLICATES):
        insert_after(engineer_mail(n), n)
    for n in range(UNMATCHED):
        stream.insert(rng.randint(0, len(stream)), unmatched_mail(n))
    corpus = Corpus(broken=[broken_mail(n) for n in range(BROKEN)])
    for raw in corpus.broken:
        stream.insert(rng.randint(0, len(stream)), raw)
    corpus.raws = stream
    for raw in stream:
        if (mid := message_id(raw)) is not None:
            corpus.ids[mid] += 1
    assert len(stream) == TOTAL == 500
    return corpus


def message_id(raw: bytes) -> str | None:
    value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    return str(value).strip() if value else None


# --- the servers and the service ---------------------------------------------------------------------


class TimedSmtpServer(SmtpServer):
    """Remembers when each mail was accepted and whether the client went on to say QUIT, to tell which crash
    window a duplicate came from."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[tuple[float, str, Any]] = []  # (time, Message-ID, session)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            raw = self.messages[-1].raw
            self.accepted.append((time.monotonic(), message_id(raw) or "?", session))
        return reply

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        session.mailbot_quit = True
        return "221 Bye"


@pytest.fixture
def smtp() -> Any:
    server = TimedSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Bot:
    """`mailbot run` as a separate process, with its clock set to START plus the time since the test began."""

    def __init__(self, folder: Path, dovecot: DovecotServer, started: float) -> None:
        self.folder = folder
        self.started = started
        self.log = folder / "service.log"
        self.env = {**os.environ, "MAILBOT_IMAP_PASSWORD": dovecot.password, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen[bytes] | None = None

    def now(self) -> str:
        return (START + timedelta(seconds=time.monotonic() - self.started)).isoformat()

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            log.write(f"=== start {' '.join(extra)} at {self.now()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbot.cli", "run", "--config", "config.toml", "--now", self.now(), *extra],
                cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        return self.proc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        with open(self.log, "ab") as log:
            log.write(b"=== SIGKILL\n")


def pending_outbox(store_root: Path) -> int:
    """Mail recorded but not confirmed sent, as a reader beside the running service sees it (-1: ask again,
    a file was replaced while we read)."""
    try:
        return len(Store(store_root).outbox_pending())
    except Exception:
        return -1


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


# --- the test ------------------------------------------------------------------------------------------


def test_sigkill_20_times_while_500_mails_arrive_loses_and_doubles_nothing(
    tmp_path: Path, dovecot: DovecotServer, smtp: TimedSmtpServer
) -> None:
    seed = int(os.environ.get("MAILBOT_CRASH_SEED") or random.randrange(1 << 30))
    print(f"MAILBOT_CRASH_SEED={seed}")
    rng = random.Random(seed)
    corpus = build_corpus(rng)
    (tmp_path / "config.toml").write_text(CONFIG.format(
        imap_host=dovecot.host, imap_port=dovecot.port, imap_user=dovecot.user,
        smtp_host=smtp.host, smtp_port=smtp.port), encoding="utf-8")
    started = time.monotonic()
    bot = Bot(tmp_path, dovecot, started)
    store_root = tmp_path / "state" / "store"

    # The mail arrives in 20 bursts of 25 while the bot is killed and restarted.
    def deliver() -> None:
        for i in range(0, TOTAL, 25):
            dovecot.deliver_many(corpus.raws[i : i + 25])
            time.sleep(rng_delivery.uniform(0.6, 1.4))

    rng_delivery = random.Random(seed + 1)
    delivery = threading.Thread(target=deliver, daemon=True)
    delivery.start()
    kills: list[float] = []
    for _ in range(KILLS):
        bot.start()
        time.sleep(rng.uniform(0.3, 3.0))
        assert bot.proc is not None and bot.proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
        kills.append(time.monotonic())
        bot.kill()
    delivery.join(timeout=60)
    assert not delivery.is_alive()
    killed_at = time.monotonic() - started

    # A last, clean run: until the inbox is empty and nothing waits in the outbox, then SIGTERM.
    proc = bot.start()

    def settled() -> bool:
        counts = dovecot.counts()
        return counts.get("INBOX", 0) == 0 and pending_outbox(store_root) == 0 and not (
            store_root / "journal.json").exists()

    wait_until(settled, 60, "the inbox to empty and the outbox to drain")
    # The sweep runs beside the ingest (every second): on a busy machine the reminders the last mails made
    # due can still be on their way. Settled means quiet: nothing sent for three sweeps and nothing pending.
    deadline = time.monotonic() + 90
    while True:
        sent_before = len(smtp.messages)
        time.sleep(3.0)
        if (len(smtp.messages) == sent_before and settled()) or time.monotonic() > deadline:
            break
    time.sleep(2.5)  # two more sweeps: nothing else may go out
    assert len(smtp.messages) == sent_before
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    once = bot.start("--once", "--json")
    out, _ = once.communicate(timeout=60)
    assert once.returncode == 0
    report = json.loads(out)
    assert (report["ingested"], report["quarantined"], report["sent"]) == (0, 0, 0), report
    elapsed = time.monotonic() - started
    log = bot.log.read_text(encoding="utf-8", errors="replace")

    # --- every mail is in exactly one place on the server, none deleted
    counts = dovecot.counts()
    assert counts.get("INBOX", 0) == 0
    assert counts.get("Processed", 0) + counts.get("Quarantine", 0) == TOTAL, counts
    assert counts.get("Quarantine", 0) == BROKEN, counts
    processed_ids = Counter(dovecot.message_ids("Processed"))
    assert processed_ids == corpus.ids
    with dovecot.client() as c:
        c.select_folder("Quarantine", readonly=True)
        bodies = sorted(v[b"BODY[]"] for v in c.fetch(c.search("ALL"), ["BODY.PEEK[]"]).values())
    assert bodies == sorted(corpus.broken)

    # --- the store loads, and records every mail exactly once
    store = Store(store_root)
    assert not (store_root / "journal.json").exists()
    cases = {c.key: c for c in store.all_cases()}
    assert len(cases) == CASES
    inbound = Counter(e.message_id for c in cases.values() for e in c.timeline if e.direction == "in")
    unmatched = Counter(u["message_id"] for u in store.unmatched())
    recorded = inbound + unmatched
    assert set(recorded) == set(corpus.ids)
    assert max(recorded.values()) == 1, [m for m, n in recorded.items() if n > 1]
    assert all(store.seen(mid) is not None for mid in corpus.ids)
    assert len(store.quarantined()) == BROKEN
    assert store.outbox_pending() == []

    # --- every mail the bot sent arrived exactly once, and is the one the store recorded
    smtp_ids = Counter(message_id(m.raw) for m in smtp.messages)
    doubled = {mid: n for mid, n in smtp_ids.items() if n > 1}
    unavoidable = unavoidable_duplicates(doubled, smtp, tmp_path / "state" / "smtp-accepted.log")
    if set(unavoidable) != set(doubled) or any(n > 2 for n in doubled.values()):
        raise AssertionError(f"sent more than once: {doubled}\n{explain_duplicates(doubled, smtp, kills)}")
    ledger = {d["message_id"]: d for d in store.outbox_entries()}
    assert set(smtp_ids) == {mid for mid, d in ledger.items() if d["status"] == "sent"}
    outbound = {e.message_id: (c.key, e.kind) for c in cases.values() for e in c.timeline if e.direction == "out"}
    assert set(outbound) == set(smtp_ids)
    per_case: dict[str, Counter[EntryKind]] = {k: Counter() for k in cases}
    for case_key, kind in outbound.values():
        per_case[case_key][kind] += 1
    waiting = [c for c in cases.values() if c.status == CaseStatus.WAITING_CUSTOMER]
    assert len(waiting) == CASES - REPLIES - CLOSES
    for case in waiting:  # every due reminder went out, exactly once
        assert case.reminders_sent == 1, case.key
        assert per_case[case.key] == Counter({EntryKind.REMINDER: 1}), (case.key, per_case[case.key])
    closed = [c for c in cases.values() if c.status == CaseStatus.CLOSED]
    assert sorted(c.key for c in closed) == sorted(key(n) for n in range(REPLIES, REPLIES + CLOSES))
    for case in closed:
        assert per_case[case.key][EntryKind.CLOSURE] == 1 and per_case[case.key][EntryKind.RECEIPT] == 1
        assert per_case[case.key][EntryKind.REMINDER] <= 1
    for n in range(REPLIES):  # answered: at most the one reminder that went out before the answer was read
        assert cases[key(n)].status == CaseStatus.WAITING_ENGINEER
        assert per_case[key(n)][EntryKind.REMINDER] <= 1 and sum(per_case[key(n)].values()) == per_case[key(n)][
            EntryKind.REMINDER]
    for case_key, kinds in per_case.items():  # auto-replies, duplicates and unmatched mail are never answered
        assert kinds[EntryKind.RECEIPT] == (1 if case_key in {c.key for c in closed} else 0)
    sent_folder = Counter(dovecot.message_ids("Sent"))
    assert max(sent_folder.values(), default=1) == 1
    assert set(sent_folder) == set(smtp_ids)  # a copy of each, even when the crash came before the copy

    assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]
    accepted_at = sorted(t for t, _, _ in smtp.accepted)
    while_sending = sum(any(0 <= k - t <= 0.5 for t in accepted_at) for k in kills)
    print(f"crash test: {KILLS} SIGKILLs ({while_sending} while mail was going out) in {killed_at:.0f} s, "
          f"{TOTAL} mails, {len(cases)} cases, "
          f"{len(smtp_ids)} distinct mails sent ({sum(per_case[c.key][EntryKind.REMINDER] for c in cases.values())}"
          f" reminders), duplicates {len(doubled)}{' (each proven in the RFC 1047 window)' if doubled else ''}, found "
          f"already sent after a crash: {log.count('was already sent')}, total {elapsed:.0f} s")


def unavoidable_duplicates(doubled: dict[str, int], smtp: TimedSmtpServer, accepted_log: Path) -> list[str]:
    """The duplicates SMTP itself makes unavoidable (RFC 1047): the bot had sent the final dot and was
    killed before it read the 250 and noted it in its accepted log. The server's evidence: the session that
    took the first copy never said QUIT (the bot says QUIT only after noting the 250), and the log lacks it."""
    try:
        noted = Counter(line.strip() for line in accepted_log.read_text(encoding="ascii").splitlines())
    except FileNotFoundError:
        noted = Counter()
    out = []
    for mid, n in doubled.items():
        first_session = min((t, s) for t, m, s in smtp.accepted if m == mid)[1]
        if noted[mid] < n and not getattr(first_session, "mailbot_quit", False):
            out.append(mid)
    return out


def explain_duplicates(doubled: dict[str, int], smtp: TimedSmtpServer, kills: list[float]) -> str:
    lines = []
    for mid in doubled:
        copies = sorted((t, getattr(s, "mailbot_quit", False)) for t, m, s in smtp.accepted if m == mid)
        first = copies[0][0]
        near = [round((k - first) * 1000, 1) for k in kills if abs(k - first) < 2]
        lines.append(f"{mid}: accepted at {[round(t - first, 3) for t, _ in copies]} s, QUIT after each: "
                     f"{[q for _, q in copies]}; SIGKILLs at {near} ms from the first acceptance")
    return "\n".join(lines)


# --- the window between the SMTP server's 250 and the ledger mark -------------------------------------------


class MemorySentFolder:
    def __init__(self, crash_on_append: bool) -> None:
        self.ids: list[str] = []
        self.crash_on_append = crash_on_append

    def append_sent(self, raw: bytes) -> None:
        if self.crash_on_append:
            self.crash_on_append = False
            raise Crash
        self.ids.append(message_id(raw) or "?")

    def sent_contains(self, mid: str) -> bool:
        return mid in self.ids


@pytest.mark.parametrize("where", ["before the Sent copy", "before the ledger mark", "no Sent folder"])
def test_a_crash_right_after_the_smtp_server_accepted_a_mail_does_not_send_it_twice(
    make_settings: Any, smtp: TimedSmtpServer, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The window the SIGKILL test found (a duplicate when the kill came a few ms after the 250, before the
    Sent copy): the transport now notes the acceptance before QUIT, and the restart finds it there."""
    from mailbot.mailbox.maildir import MaildirMailbox, deliver
    from mailbot.service import Service
    from mailbot.transport.smtp import SmtpTransport
    from mailbot.wiring import make_calendar

    settings = make_settings(bot={"language": "en"}, smtp={
        "kind": "smtp", "host": smtp.host, "port": smtp.port, "security": "none", "username": ""})
    deliver(settings.mailbox.path, engineer_mail(1))
    sent_folder = None if where == "no Sent folder" else MemorySentFolder(where == "before the Sent copy")

    def bot() -> Service:  # a new process: everything read from disk again
        transport = SmtpTransport(settings.smtp, None, accepted_log=settings.bot.state_dir / "smtp-accepted.log")
        return Service(settings, Store(settings.bot.state_dir / "store"), MaildirMailbox(settings.mailbox.path),
                       transport, make_calendar(settings), sent_folder=sent_folder)

    first = bot()
    if where != "before the Sent copy":
        def crash(*args: Any, **kwargs: Any) -> None:
            raise Crash

        first.store.outbox_finish = crash  # type: ignore[method-assign]
    try:
        report = first.run_once(START)
    except Crash:
        pass
    else:
        raise AssertionError(f"no crash: {report} {caplog.text}")
    assert len(smtp.messages) == 1  # the server has it; the bot died before writing that down
    restarted = bot()
    restarted.run_once(START + timedelta(minutes=1))
    restarted.run_once(START + timedelta(hours=2))
    assert len(smtp.messages) == 1
    assert restarted.store.outbox_pending() == []
    assert restarted.store.get_case(key(1)).reminders_sent == 1
    if sent_folder is not None:  # and the Sent folder gets its copy after all
        assert sent_folder.ids == [message_id(smtp.messages[0].raw)]


# --- a crash in the middle of a store write ---------------------------------------------------------------


def test_sigkill_in_the_middle_of_store_commits_leaves_a_loadable_store_holding_whole_commits(
    tmp_path: Path,
) -> None:
    """A worker commits in a loop (every table in each commit); it is killed 30 times at random moments.
    After each kill the store opens, holds exactly one whole commit (never half of one), and holds at least
    every commit the worker had seen return."""
    from tests.crash_worker import IDS_PER_ITERATION, expected_state, mid

    seed = int(os.environ.get("MAILBOT_CRASH_SEED") or random.randrange(1 << 30))
    print(f"MAILBOT_CRASH_SEED={seed}")
    rng = random.Random(seed)
    root = tmp_path / "store"
    acknowledged = held = -1
    replays = unacknowledged = kills = 0
    # At least 30 kills and 30 commits: on a loaded machine a kill can land before the worker's first commit,
    # so kill on (at most 90 times) until the store has moved on 30 commits.
    while kills < 30 or (held < 30 and kills < 90):
        kills += 1
        worker = subprocess.Popen([sys.executable, str(ROOT / "tests" / "crash_worker.py"), str(root)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        assert worker.stdout is not None
        ready = worker.stdout.readline().decode()
        assert ready.split()[:2] == ["ready", str(held + 1)], ready + worker.stderr.read().decode()
        time.sleep(rng.uniform(0.01, 0.3))
        worker.send_signal(signal.SIGKILL)
        out, err = worker.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()
        lines = [int(x) for x in out.split()]
        acknowledged = lines[-1] if lines else held  # nothing printed: the state found last time
        replays += (root / "journal.json").exists()  # killed between the journal and the end of the commit
        held = expected_state(Store(root))["iteration"]  # opens, and holds one whole commit
        assert acknowledged <= held <= acknowledged + 1
        unacknowledged += held == acknowledged + 1  # killed after a commit returned, before it was printed
    store = Store(root)
    assert held >= 30
    assert all(store.seen(mid(j, k)) is not None for j in range(held + 1) for k in range(IDS_PER_ITERATION))
    store.commit()  # a replayed journal is written and removed
    assert not (root / "journal.json").exists()
    print(f"store crash test: {kills} SIGKILLs, {held + 1} commits; {replays} kills left a journal to replay, "
          f"{unacknowledged} came between a commit and its acknowledgement")


class Crash(BaseException):
    """Stands for the power going: nothing after it runs."""


@pytest.mark.parametrize("operation", ["replace", "unlink", "fsync"])
def test_a_crash_after_any_file_operation_of_a_commit_leaves_one_whole_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """Deterministic twin of the SIGKILL test: the k-th rename (or unlink, or fsync) of a commit is the last
    thing that happens, for every k; the store that is then opened holds the commit before or the commit
    itself, whole."""
    from tests.crash_worker import expected_state, step

    root = tmp_path / "store"
    base = Store(root)
    for i in range(12):  # history, so that the next commits fold and merge id runs too
        step(base, i)
        base.commit()
    real = getattr(os, operation)
    k = 0
    while True:
        k += 1
        calls = 0
        snapshot = tmp_path / f"snap{k}"
        subprocess.run(["cp", "-a", str(root), str(snapshot)], check=True)

        def crashing(*args: Any, at: int = k, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == at:
                raise Crash
            return real(*args, **kwargs)

        store = Store(snapshot)
        before = expected_state(store)["iteration"]
        step(store, before + 1)
        monkeypatch.setattr(os, operation, crashing)
        try:
            store.commit()
            crashed = False
        except Crash:
            crashed = True
        finally:
            monkeypatch.setattr(os, operation, real)
        after = expected_state(Store(snapshot))["iteration"]
        assert after in (before, before + 1)
        if not crashed:
            assert after == before + 1
            break
        subprocess.run(["rm", "-rf", str(snapshot)], check=True)
    print(f"crash after each of the {k - 1} {operation} calls of a commit: one whole commit every time")
    assert k > 2  # the commit did go through several such operations


# --- SIGKILL while a sweep sends through the outbox folder (the embedded default) --------------------------


# The same bot and engineers as CONFIG, on the embedded default: a Maildir in, the outbox folder out.
OUTBOX_CONFIG = CONFIG[:CONFIG.index("[mailbox]")] + """[mailbox]
kind = "maildir"
path = "maildir"
[smtp]
kind = "outbox"
"""


def test_sigkill_during_a_sweep_through_the_outbox_folder_sends_each_reminder_once(tmp_path: Path) -> None:
    """`mailbot run --once` on the embedded default sends 200 reminders (the outbox folder stages a batch and
    publishes it at once) and is killed at random moments, then restarted; at the end each case has exactly
    one reminder file, complete, recorded as sent, and nothing is left half-written."""
    from mailbot.mailbox.maildir import deliver

    seed = int(os.environ.get("MAILBOT_CRASH_SEED") or random.randrange(1 << 30))
    print(f"MAILBOT_CRASH_SEED={seed}")
    rng = random.Random(seed)
    (tmp_path / "config.toml").write_text(OUTBOX_CONFIG, encoding="utf-8")
    cases = 200
    for n in range(cases):
        deliver(tmp_path / "maildir", engineer_mail(n))

    def bot(now: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "mailbot.cli", "run", "--once", "--config", "config.toml",
                                 "--now", now], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)

    first = bot("2026-03-02T10:00:00+08:00")  # the engineers' mail: 200 cases wait on their customers
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    due = "2026-03-06T10:00:00+08:00"  # three business days later: every first reminder is due
    outbox = tmp_path / "state" / "outbox"
    # How long a whole run takes here (on a copy), so that the kills fall inside one, start-up included.
    import shutil

    rehearsal = tmp_path.parent / f"{tmp_path.name}-rehearsal"
    shutil.copytree(tmp_path, rehearsal)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "run", "--once", "--config", "config.toml",
                             "--now", due], cwd=rehearsal, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait(timeout=120)
    whole_run = time.monotonic() - started
    shutil.rmtree(rehearsal)
    killed = 0
    for _ in range(8):
        proc = bot(due)
        time.sleep(rng.uniform(0.3, 1.0) * whole_run)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
    for now in (due, "2026-03-06T10:05:00+08:00"):  # a clean finish, then a sweep that finds nothing new
        proc = bot(now)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and b"Traceback" not in err, err.decode()
    print(f"{killed} kills landed (a whole run takes {whole_run:.2f} s)")

    files = sorted(outbox.iterdir())
    assert all(p.suffix == ".eml" and not p.name.startswith(".") for p in files), [p.name for p in files]
    actions = Counter()
    store = Store(tmp_path / "state" / "store")
    sent = {e["message_id"]: e for e in store.outbox_entries() if e["status"] == "sent"}
    for path in files:
        raw = path.read_bytes()
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        actions[str(headers["X-Mailbot-Action"]).split("/")[0]] += 1
        assert message_id(raw) in sent and raw.rstrip().endswith(b"--")  # whole: the closing MIME boundary
    assert actions == Counter({key(n): 1 for n in range(cases)})
    assert store.outbox_pending() == [] and len(sent) == cases
    assert all(store.get_case(key(n)).reminders_sent == 1 for n in range(cases))
