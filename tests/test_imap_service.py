"""The whole bot against real servers: Dovecot for the mailbox, aiosmtpd for sending."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.mailbox.imap.mailbox import ImapMailbox
from mailbot.models import CaseStatus
from mailbot.runner import run_forever
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.smtp import SmtpTransport
from mailbot.wiring import make_calendar

pytest_plugins = ["tests.imap_server", "tests.smtp_server"]
pytestmark = pytest.mark.imap

KEY = "CAS-04027-B7D2Z5"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


@pytest.fixture
def settings(make_settings, dovecot, smtp_server, monkeypatch):
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", dovecot.password)
    return make_settings(
        mailbox={"kind": "imap", "host": dovecot.host, "port": dovecot.port, "security": "none",
                 "username": dovecot.user, "poll_seconds": 1, "timeout_seconds": 10},
        smtp={"kind": "smtp", "host": smtp_server.host, "port": smtp_server.port, "security": "none",
              "username": ""},
        followup={"sweep_seconds": 1},
    )


def make_bot(settings) -> Service:
    store = Store(settings.bot.state_dir / "store")
    mailbox = ImapMailbox(settings.mailbox, checkpoints=store)
    return Service(settings, store, mailbox, SmtpTransport(settings.smtp, None), make_calendar(settings),
                   sent_folder=mailbox)


def test_a_case_over_imap_with_reminders_and_a_sent_copy(settings, dovecot, smtp_server, scenario_dir) -> None:
    for name in ("01", "02"):
        dovecot.deliver(next(scenario_dir.glob(f"{name}-*.eml")).read_bytes())
    bot = make_bot(settings)
    report = bot.run_once(at("2021-04-13T02:00+08:00"))
    assert (report.opened, report.threaded) == (1, 2)
    counts = dovecot.counts()
    assert counts["INBOX"] == 0 and counts["Processed"] == 2  # moved after the case was saved, not deleted

    bot.run_once(at("2021-04-16T09:00+08:00"))
    [reminder] = smtp_server.messages
    sent_ids = dovecot.message_ids("Sent")
    assert len(sent_ids) == 1 and sent_ids[0] in reminder.raw.decode()

    dovecot.deliver(next(scenario_dir.glob("03-*.eml")).read_bytes())
    dovecot.deliver(next(scenario_dir.glob("03-*.eml")).read_bytes())  # the CC copy too
    report = bot.run_once(at("2021-04-19T10:15+08:00"))
    assert report.duplicates == 1
    assert bot.store.get_case(KEY).status == CaseStatus.WAITING_ENGINEER
    bot.mailbox.close()


def test_unreadable_mail_goes_to_the_quarantine_folder(settings, dovecot) -> None:
    dovecot.deliver(b"\r\n\r\n")
    bot = make_bot(settings)
    report = bot.run_once(at("2021-04-13T02:00+08:00"))
    assert report.quarantined == 1
    assert dovecot.counts()["Quarantine"] == 1
    assert bot.store.quarantined()[0]["reason"] == "empty message"
    bot.mailbox.close()


def test_the_service_on_idle_picks_up_mail_as_it_arrives(settings, dovecot, scenario_dir) -> None:
    bot = make_bot(settings)
    stop = threading.Event()
    runner = threading.Thread(target=run_forever, args=(bot, settings), kwargs={"stop": stop}, daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # the service is idling now
        dovecot.deliver(next(scenario_dir.glob("01-*.eml")).read_bytes())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and bot.store.get_case(KEY) is None:
            time.sleep(0.05)
        assert bot.store.get_case(KEY) is not None
    finally:
        stop.set()
        runner.join(timeout=15)
    assert not runner.is_alive()


def test_doctor_names_what_is_wrong(settings, dovecot, tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "doctor.toml"
    config.write_text(
        f'[bot]\nstate_dir = "state"\n[mailbox]\nkind = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'security = "none"\nusername = "{dovecot.user}"\n', encoding="utf-8")

    def doctor(password: str) -> tuple[int, list[dict]]:
        env = {"MAILBOT_IMAP_PASSWORD": password, "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-m", "mailbot.cli", "doctor", "--json", "--config", str(config)],
                                capture_output=True, text=True, env=env, timeout=60)
        return result.returncode, json.loads(result.stdout)

    code, checks = doctor(dovecot.password)
    mailbox = next(c for c in checks if c["check"] == "mailbox")
    assert mailbox["ok"], mailbox
    code, checks = doctor("wrong")
    mailbox = next(c for c in checks if c["check"] == "mailbox")
    assert code == 1 and not mailbox["ok"] and "password" in mailbox["detail"].lower()
    dovecot.stop()
    code, checks = doctor(dovecot.password)
    mailbox = next(c for c in checks if c["check"] == "mailbox")
    assert code == 1 and "refused" in mailbox["detail"].lower()
