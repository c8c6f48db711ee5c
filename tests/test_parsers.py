"""Parsing a batch on every core (mailbot.parse.pool): the same mails as in-process, in the same order, and
nothing lost when a worker dies, when threads forbid forking, or when the bot itself is killed."""

from __future__ import annotations

import faulthandler
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import base_config

from mailbot import service as service_module
from mailbot.cli import importer
from mailbot.cli import main as cli
from mailbot.config import from_dict
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import parse
from mailbot.parse import pool as pool_module
from mailbot.parse.pool import MIN_BATCH, InlineParser, PoolParser, make_parser, parse_in_batches
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_calendar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from generate import generate  # noqa: E402

MAILS = generate(120, 30, seed=11)
RAWS = [m.raw for m in MAILS]
BROKEN = b"\x00\x01 no headers at all"


@pytest.fixture
def pool():
    # Workers are forked only while this is the process's only thread (mailbot.parse.pool says why): a thread
    # left running by an earlier test would silently turn these tests into in-process ones.
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not others, f"threads left running by earlier tests: {others}"
    parser = PoolParser(2)
    yield parser
    parser.close()
    assert workers_of_this_process() == []


def workers_of_this_process() -> list[multiprocessing.process.BaseProcess]:
    return multiprocessing.active_children()


def test_a_batch_parsed_by_the_workers_equals_the_batch_parsed_here(pool: PoolParser) -> None:
    raws = [*RAWS[:50], BROKEN, *RAWS[50:]]
    results = list(pool.parse_all(raws))
    assert pool.running
    assert results == [parse(r) for r in raws]  # same mails, same order
    assert isinstance(results[50], ParseFailure)


def test_a_small_batch_stays_in_process(pool: PoolParser) -> None:
    results = list(pool.parse_all(RAWS[: MIN_BATCH - 1]))
    assert not pool.running and workers_of_this_process() == []
    assert results == [parse(r) for r in RAWS[: MIN_BATCH - 1]]


@pytest.mark.parametrize("after", [0, 1, 17, 70])
def test_a_worker_killed_mid_batch_loses_no_mail(pool: PoolParser, caplog: pytest.LogCaptureFixture,
                                                 after: int) -> None:
    # concurrent.futures hung here for ever (a reader waiting for the rest of a half-sent result): fail
    # loudly instead of hanging the suite if that ever comes back.
    faulthandler.dump_traceback_later(60, exit=True)
    results = pool.parse_all(RAWS)
    first = [next(results) for _ in range(after)]
    for worker in workers_of_this_process()[:1]:
        os.kill(worker.pid, signal.SIGKILL)
    rest = list(results)
    assert [*first, *rest] == [parse(r) for r in RAWS]
    assert "parse workers stopped" in caplog.text
    # from then on the bot parses in its own process, and says so only once
    caplog.clear()
    assert list(pool.parse_all(RAWS)) == [parse(r) for r in RAWS]
    assert not pool.running and "parse workers stopped" not in caplog.text
    faulthandler.cancel_dump_traceback_later()


def test_a_batch_given_up_half_way_does_not_mix_into_the_next(pool: PoolParser) -> None:
    abandoned = pool.parse_all(RAWS)
    assert [next(abandoned) for _ in range(5)] == [parse(r) for r in RAWS[:5]]
    del abandoned  # the caller failed (a corrupt store, say): its remaining results still arrive, unread
    later = RAWS[40:] + RAWS[:40]
    assert list(pool.parse_all(later)) == [parse(r) for r in later]
    assert pool.running and pool._ready == {} and pool._live == set()


def test_a_long_sequence_parses_in_overlapping_batches(pool: PoolParser) -> None:
    raws = RAWS * 3
    assert list(parse_in_batches(pool, raws, batch=50)) == [parse(r) for r in raws]
    assert pool.running and pool._ready == {} and pool._live == set()


def test_a_worker_killed_while_two_batches_are_out_loses_no_mail(pool: PoolParser) -> None:
    faulthandler.dump_traceback_later(60, exit=True)
    first, second = pool.parse_all(RAWS), pool.parse_all(RAWS[::-1])
    got = [next(first) for _ in range(20)]
    os.kill(workers_of_this_process()[0].pid, signal.SIGKILL)
    got += list(first) + list(second)
    assert got == [parse(r) for r in RAWS + RAWS[::-1]]
    faulthandler.cancel_dump_traceback_later()


def test_no_fork_while_another_thread_runs(pool: PoolParser) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        results = list(pool.parse_all(RAWS))
    finally:
        release.set()
        other.join()
    assert not pool.running and workers_of_this_process() == []
    assert results == [parse(r) for r in RAWS]


def test_a_batch_too_big_to_copy_is_parsed_in_process(pool: PoolParser, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "MAX_BATCH_BYTES", sum(map(len, RAWS)) - 1)
    assert list(pool.parse_all(RAWS)) == [parse(r) for r in RAWS]
    assert not pool.running


def test_a_bug_in_parse_quarantines_one_mail_not_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(raw: bytes) -> InboundMail | ParseFailure:
        if raw is RAWS[3]:
            raise KeyError("boom")
        return parse(raw)

    monkeypatch.setattr(pool_module, "parse", buggy)
    results = list(InlineParser().parse_all(RAWS[:6]))
    assert isinstance(results[3], ParseFailure) and "internal error while parsing: KeyError" in results[3].reason
    assert all(isinstance(r, InboundMail) for i, r in enumerate(results) if i != 3)


def test_parse_workers_setting() -> None:
    assert isinstance(make_parser(1), InlineParser)
    assert isinstance(make_parser(3), PoolParser) and make_parser(3).workers == 3
    auto = make_parser(0)
    assert auto.workers == min(pool_module.cores(), pool_module.MAX_WORKERS)


_KILLED_BOT = """
import sys, time
sys.path.insert(0, {bench!r})
from generate import generate
from mailbot.parse.pool import PoolParser
pool = PoolParser(2)
list(pool.parse_all([m.raw for m in generate(40, 10, seed=3)]))
import faulthandler
import json
import multiprocessing
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(60)
"""


_FORGETFUL_BOT = """
import sys
sys.path.insert(0, {bench!r})
from generate import generate
from mailbot.parse.pool import PoolParser
pool = PoolParser(2)
list(pool.parse_all([m.raw for m in generate(40, 10, seed=3)]))
print("parsed", flush=True)
raise SystemExit(3)  # an error path that never reaches close()
"""


def test_a_bot_that_exits_without_closing_its_workers_still_exits() -> None:
    # multiprocessing ends daemon children at exit with SIGTERM, then waits for them: a worker that
    # ignored SIGTERM would hang the bot right there.
    bot = subprocess.run([sys.executable, "-c", _FORGETFUL_BOT.format(bench=str(ROOT / "bench"))],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert bot.returncode == 3 and bot.stdout == "parsed\n" and "Traceback" not in bot.stderr


def test_a_worker_stopped_with_sigterm_is_a_worker_gone(pool: PoolParser) -> None:
    # systemd's stop sends SIGTERM to every process of the service: the workers just end.
    results = pool.parse_all(RAWS)
    first = next(results)
    for worker in workers_of_this_process():
        os.kill(worker.pid, signal.SIGTERM)
    assert [first, *results] == [parse(r) for r in RAWS]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_bot() -> None:
    # They hold copies of the bot's files, its writer lock among them: a survivor would block the restart.
    bot = subprocess.Popen([sys.executable, "-c", _KILLED_BOT.format(bench=str(ROOT / "bench"))],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert bot.stdout is not None
        pids = [int(p) for p in bot.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        bot.kill()
        bot.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        if bot.poll() is None:
            bot.kill()


def _maildir_run(folder: Path, parser: InlineParser | PoolParser) -> dict:
    settings = from_dict(base_config(), folder)
    for n, mail in enumerate(MAILS):
        deliver(settings.mailbox.path, mail.raw, name=f"{n:05d}.bench")
    store = Store(None)
    service = Service(settings, store, MaildirMailbox(settings.mailbox.path), MemoryTransport(),
                      make_calendar(settings), parser=parser)
    try:
        report = service.run_once(datetime(2026, 3, 20, 2, 0, tzinfo=UTC))
    finally:
        service.close()
    cases = {c.key: (c.status, [e.message_id for e in c.timeline]) for c in store.all_cases()}
    return {"report": report.as_dict(), "cases": cases, "unmatched": [u["message_id"] for u in store.unmatched()]}


def test_a_case_file_is_the_same_whoever_parsed_the_mail(tmp_path: Path) -> None:
    inline = _maildir_run(tmp_path / "inline", InlineParser())
    pooled = _maildir_run(tmp_path / "pool", PoolParser(2))
    assert inline["report"]["ingested"] == len(MAILS) and len(inline["cases"]) == 30
    assert pooled == inline


def test_batches_parse_ahead_while_the_last_one_is_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 120 mails in batches of 40: each next batch goes to the workers before the last one is committed.
    monkeypatch.setattr(service_module, "BATCH", 40)
    commits: list[int] = []
    original = Store.commit

    def commit(store: Store) -> None:
        commits.append(len(list(store.active_cases())))
        original(store)

    monkeypatch.setattr(Store, "commit", commit)
    inline = _maildir_run(tmp_path / "inline", InlineParser())
    pooled = _maildir_run(tmp_path / "pool", PoolParser(2))
    assert pooled == inline
    assert len(commits) >= 2 * 3  # three batches a run, each saved on its own


@pytest.mark.parametrize("workers", [1, 2])
def test_an_import_reads_the_same_whoever_parses(tmp_path: Path, workers: int,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # 120 mails in batches of 500 would be one batch: batches of 50 make three, overlapping.
    source = tmp_path / "history"
    source.mkdir()
    for n, mail in enumerate(MAILS):
        (source / f"{n:04d}.eml").write_bytes(mail.raw)
    (tmp_path / "config.toml").write_text(
        f'[bot]\nstate_dir = "state"\nparse_workers = {workers}\n[engineers]\ndomains = ["support.example"]\n'
        '[mailbox]\npath = "maildir"\n', encoding="utf-8")
    config = str(tmp_path / "config.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importer, "COMMIT_EVERY", 50)
        assert cli.main(["import", str(source), "--json", "--config", config, "--now", "2026-03-20T10:00:00+08:00"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["messages"] == 120 and summary["cases_opened"] == 30 and summary["quarantined"] == 0
    assert cli.main(["cases", "--json", "--config", config]) == 0
    cases = json.loads(capsys.readouterr().out)
    assert len(cases) == 30 and sum(len(c["messages"]) for c in cases) == summary["threaded"]


@pytest.mark.parametrize("workers, expected", [(2, "2 parse workers on"), (1, "in the bot's own process")])
def test_doctor_tries_the_parse_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int,
                                        expected: str) -> None:
    (tmp_path / "config.toml").write_text(f'[bot]\nstate_dir = "state"\nparse_workers = {workers}\n', encoding="utf-8")
    cli.main(["doctor", "--json", "--config", str(tmp_path / "config.toml")])
    parsing = next(c for c in json.loads(capsys.readouterr().out) if c["check"] == "parsing")
    assert parsing["ok"] and not parsing.get("warning") and parsing["detail"].startswith(expected), parsing
    assert workers_of_this_process() == []
