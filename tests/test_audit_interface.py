"""INTERFACE.md held to the letter: every command takes --now, --json is JSON alone on stdout, bad arguments
are exit 2 with one line, and the previews and checks cover each mailbox and template INTERFACE.md names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.mailbox.maildir import deliver
from mailbot.store import Store
from tests.conftest import CONFIG

ROOT = Path(__file__).resolve().parents[1]
KEY = "CAS-04027-B7D2Z5"
OPENED = "2021-04-13T01:52:00+08:00"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def mail(sender: str, to: str, subject: str, body: str, when: str | None, mid: str, cc: str | None = None) -> bytes:
    msg = EmailMessage(policy=default)
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    if when is not None:
        msg["Date"] = format_datetime(datetime.fromisoformat(when))
    msg["Message-ID"] = mid
    msg.set_content(body)
    return msg.as_bytes()


def opening(key: str = KEY, bot: str = "casebot@support.example") -> bytes:
    """An engineer's first answer to a customer, the bot in Cc: it opens the case."""
    return mail("Li Qi <liqi@support.example>", "yang@customer.example", f"[{key}] terminal blue screens",
                "Please collect the logs with the attached tool.", OPENED, f"<open-{key}@support.example>", cc=bot)


@pytest.fixture
def with_case(config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    deliver(config.parent / "maildir", opening())
    assert run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-13T02:00:00+08:00")[0] == 0
    return config


# --- --now: every command takes it, so a bad one is a usage error everywhere ---------------------------------


@pytest.mark.parametrize("command", [
    ["case", KEY], ["explain", "mail.eml"], ["requeue"], ["store", "init"], ["store", "dump"],
    ["store", "load", "dump.jsonl"], ["demo"], ["cases"], ["plan"],
])
def test_a_bad_now_is_exit_2_with_one_line_for_every_command(with_case: Path, command: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in (with_case.parent / "state").rglob("*"))
    code, out, err = run(capsys, *command, "--config", str(with_case), "--now", "next tuesday")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "--now 'next tuesday'" in err
    assert sorted(p.name for p in (with_case.parent / "state").rglob("*")) == before  # nothing was done


# --- report: a date a period cannot hold is a bad argument, not an unexpected error --------------------------


@pytest.mark.parametrize("option", [["--since", "0001-01-01"], ["--until", "9999-12-31"]])
def test_report_dates_beyond_the_calendar_are_usage_errors(with_case: Path, option: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "report", "--json", *option, "--config", str(with_case))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and option[1] in err and "unexpected" not in err


# --- explain: read as the bot reads, at --now ---------------------------------------------------------------


def test_explain_reads_command_lines_that_name_their_case_as_the_bot_carries_them_out(
        with_case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A digest reply: its subject names no case, each command line names its own (INTERFACE.md).
    reply = tmp_path / "digest-reply.eml"
    reply.write_bytes(mail("Li Qi <liqi@support.example>", "casebot@support.example", "Re: [mailbot] digest",
                           f"#snooze {KEY} 3d\n#skip CAS-99999-ZZZZZZ\n", "2021-04-14T09:30:00+08:00",
                           "<digest-reply@support.example>"))
    now = "--now", "2021-04-14T09:30:00+08:00"
    code, out, _ = run(capsys, "explain", str(reply), "--json", "--config", str(with_case), *now)
    assert code == 0
    snooze, unknown = json.loads(out)["commands"]
    assert (snooze["command"], snooze["case"], snooze["error"]) == ("snooze", KEY, None)
    assert (unknown["command"], unknown["case"]) == ("skip", "CAS-99999-ZZZZZZ")
    assert "CAS-99999-ZZZZZZ" in unknown["error"]

    # What explain said is what the bot does: the snooze moves the case's next reminder.
    _, before, _ = run(capsys, "case", KEY, "--json", "--config", str(with_case))
    deliver(with_case.parent / "maildir", reply.read_bytes())
    assert run(capsys, "run", "--once", "--config", str(with_case), *now)[0] == 0
    _, after, _ = run(capsys, "case", KEY, "--json", "--config", str(with_case))
    assert json.loads(after)["next_action"]["due"] > json.loads(before)["next_action"]["due"]


def test_explain_acts_as_if_it_were_now(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A mail without a Date is taken as arriving now: --now is that moment, as for every other command.
    undated = tmp_path / "undated.eml"
    undated.write_bytes(mail("Li Qi <liqi@support.example>", "yang@customer.example", f"[{KEY}] blue screens",
                             "Please collect the logs.", None, "<undated@support.example>",
                             cc="casebot@support.example"))
    now = datetime.fromisoformat("2021-04-13T10:00:00+08:00")
    code, out, _ = run(capsys, "explain", str(undated), "--json", "--config", str(config), "--now", now.isoformat())
    assert code == 0
    due = datetime.fromisoformat(json.loads(out)["next_action"]["due"])
    assert now < due < now + timedelta(days=14)
    assert due.utcoffset() == timedelta(hours=8)  # in [bot] timezone, as `case` and `plan` show it


# --- render: as the case's own mailbox sends it; the hours each mail names ------------------------------------


def test_render_previews_a_case_as_its_own_mailbox_sends_it(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG + """
[mailboxes.cn]
path = "maildir-cn"
[mailboxes.en]
path = "maildir-en"
address = "help@support.example"
language = "en"
""", encoding="utf-8")
    deliver(tmp_path / "maildir-en", opening("CAS-11111-ENGLSH", bot="help@support.example"))
    assert run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-13T02:00:00+08:00")[0] == 0
    code, out, _ = run(capsys, "render", "CAS-11111-ENGLSH", "reminder", "--json", "--config", str(config))
    assert code == 0
    assert json.loads(out)["from"] == "help@support.example"
    # ...and what it previews is what it sends.
    assert run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-16T09:00:00+08:00")[0] == 0
    sent = [p.read_text(encoding="utf-8", errors="replace") for p in (tmp_path / "state" / "outbox").glob("*.eml")]
    assert any("CAS-11111-ENGLSH" in text and "help@support.example" in text.split("\n\n")[0] for text in sent)


def test_render_of_a_nudge_and_an_escalation_names_each_ones_hours(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace('state_dir = "state"', 'state_dir = "state"\nlanguage = "en"') + """
[nudge]
after_business_hours = 5
escalate_after_business_hours = 13
leads = ["lead@support.example"]
""", encoding="utf-8")
    deliver(tmp_path / "maildir", opening())
    assert run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-13T02:00:00+08:00")[0] == 0
    subjects = {}
    for template in ("nudge", "escalation"):
        code, out, _ = run(capsys, "render", KEY, template, "--json", "--config", str(config))
        assert code == 0
        subjects[template] = json.loads(out)["subject"]
    assert "5 business hours" in subjects["nudge"]
    assert "13 business hours" in subjects["escalation"]


# --- doctor: every template INTERFACE.md names, `report` included ---------------------------------------------


def test_doctor_fails_on_a_broken_report_template(config: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert "ok   templates" in out
    (templates / "en" / "report.html").write_text("{% if %}", encoding="utf-8")
    config.write_text(CONFIG.replace('path = "maildir"', 'path = "maildir"\n[mailboxes.desk]\npath = "maildir"\n'
                                     f'templates = "{templates}"'), encoding="utf-8")
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1
    assert [line for line in out.splitlines() if line.startswith("FAIL templates")] == [
        next(line for line in out.splitlines() if "report.html" in line)]


# --- run --once --json on PostgreSQL: JSON alone on stdout, even when another instance works the mailbox -------


def test_run_once_json_stays_json_while_another_instance_holds_the_lease(
        tmp_path: Path, pg_store_dsn: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    psycopg = pytest.importorskip("psycopg")
    from mailbot.store.postgresql import lease as leases

    monkeypatch.setenv("MAILBOT_DATABASE_URL", pg_store_dsn)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG + '[store]\nkind = "postgresql"\nlease_seconds = 0.5\n', encoding="utf-8")
    assert run(capsys, "store", "init", "--config", str(config))[0] == 0
    deliver(tmp_path / "maildir", opening())
    with psycopg.connect(pg_store_dsn, autocommit=True) as other:
        held = leases.acquire(other, "default", "other-instance", 60.0)
        assert held is not None
        code, out, err = run(capsys, "run", "--once", "--json", "--config", str(config))
        leases.release(other, held)
    assert code == 0
    report = json.loads(out)
    assert report["ingested"] == 0 and set(report) >= {"ingested", "sent"}
    assert "another instance holds" in err


def test_a_reader_that_goes_away_gets_no_error_message(tmp_path: Path) -> None:
    """`mailbot store dump | head -1`: the rest of the dump has nowhere to go; no "unexpected error" line."""
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    store = Store(tmp_path / "state" / "store")
    for n in range(3000):  # a dump well past what a pipe holds
        store.add_quarantined({"ref": f"new/{n}.eml", "reason": "broken MIME " + "x" * 40})
    store.commit()
    (tmp_path / "state").chmod(0o700)  # as the bot keeps it (else a line about making it private)
    run = subprocess.run(f"{sys.executable} -m mailbot.cli store dump --config config.toml | head -c 10",
                         shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.stdout.startswith('{"')
    assert run.stderr == ""
