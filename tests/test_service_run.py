"""`mailbot run` as a process: it picks up new mail, sends what is due, refuses a twin, and stops cleanly
on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailbot.mailbox.maildir import deliver
from tests.conftest import CONFIG as MINIMAL_CONFIG

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from generate import generate  # noqa: E402

# The minimal config, polling and sweeping every second (the [mailbox] table is the last one in it).
CONFIG = MINIMAL_CONFIG + 'poll_seconds = 1\n[followup]\nsweep_seconds = 1\n'


def mailbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_the_service_ingests_sends_and_stops_on_sigterm(tmp_path: Path, scenario_dir: Path) -> None:
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    # --now puts the service's clock on the morning the first reminder is due.
    service = subprocess.Popen(
        [sys.executable, "-m", "mailbot.cli", "run", "--config", "config.toml", "--now", "2021-04-16T09:00:00+08:00"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "maildir" / "new").is_dir())
        twin = mailbot("run", "--once", "--config", "config.toml", cwd=tmp_path)
        assert twin.returncode == 1 and "already running" in twin.stderr
        deliver(tmp_path / "maildir", next(scenario_dir.glob("01-*.eml")).read_bytes())

        def reminded() -> bool:
            out = mailbot("cases", "--json", "--config", "config.toml", cwd=tmp_path)  # works beside the service
            cases = json.loads(out.stdout or "[]")
            return bool(cases) and cases[0]["reminders_sent"] == 1

        assert wait_for(reminded), service.stderr.read() if service.poll() is not None else "no reminder"
        assert len(list((tmp_path / "state" / "outbox").glob("*.eml"))) == 1
        started = time.monotonic()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if service.poll() is None:
            service.kill()
    log = service.stderr.read()
    assert "Traceback" not in log
    assert "mailbot stopped" in log


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_backlog_is_parsed_by_workers_that_stop_with_the_service(tmp_path: Path) -> None:
    # The bot was down; 200 mails wait. The service forks its parse workers before its scheduler thread,
    # ingests the backlog with them, and takes them along when it stops.
    (tmp_path / "config.toml").write_text(CONFIG.replace("[bot]", "[bot]\nparse_workers = 2"), encoding="utf-8")
    mails = generate(200, 40, seed=5)
    for n, mail in enumerate(mails):
        deliver(tmp_path / "maildir", mail.raw, name=f"{n:05d}.backlog")
    service = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "run", "--config", "config.toml"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: not list((tmp_path / "maildir" / "new").iterdir()), timeout=60)
        workers = _children(service.pid)
        assert len(workers) == 2
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
    finally:
        if service.poll() is None:
            service.kill()
    log = service.stderr.read()
    assert "2 parse workers started" in log and "Traceback" not in log
    assert wait_for(lambda: all(_gone(w) for w in workers), timeout=10)
    out = mailbot("cases", "--json", "--config", "config.toml", cwd=tmp_path)
    assert len(json.loads(out.stdout)) == 40
    assert len(list((tmp_path / "maildir" / "cur").iterdir())) == 200
