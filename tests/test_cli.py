"""The `mailbot` command as users script it: output shapes, exit codes, and no tracebacks."""

from __future__ import annotations

import json
import mailbox
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.mailbox.maildir import deliver
from tests.conftest import CONFIG

ROOT = Path(__file__).resolve().parents[1]




def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def with_case(config: Path, scenario_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    for name in ("01", "02"):
        deliver(config.parent / "maildir", next(scenario_dir.glob(f"{name}-*.eml")).read_bytes())
    code, _, _ = run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-13T02:00:00+08:00")
    assert code == 0
    return config


def test_case_json_has_the_interface_shape(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "case", "cas-04027-b7d2z5", "--json", "--config", str(with_case))
    assert code == 0
    case = json.loads(out)
    assert case["key"] == "CAS-04027-B7D2Z5"
    assert case["title"] == "某单位终端频繁蓝屏"
    assert case["status"] == "waiting_customer"
    assert case["customers"] == ["yang@customer.example"]
    assert case["engineers"] == ["liqi@support.example"]
    assert case["tracking_tokens"] == ["CMIT:0001247"]
    assert case["language"] == "zh-CN"
    assert case["reminders_sent"] == 0
    assert case["next_action"] == {"kind": "reminder", "due": "2021-04-16T09:00:00+08:00"}
    assert [(m["role"], m["kind"], m["direction"]) for m in case["messages"]] == [
        ("engineer", "mail", "in"), ("customer", "auto_reply", "in")]
    assert set(case["messages"][0]) >= {"message_id", "date", "from", "role", "kind", "direction", "text"}
    assert [m["matched_by"] for m in case["messages"]] == ["subject", "subject"]
    assert "Xk93-fake-Pw77" not in out


def test_the_common_options_go_before_or_after_the_command(with_case: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    after = run(capsys, "plan", "--json", "--config", str(with_case), "--now", "2021-04-16T10:00:00+08:00")
    before = run(capsys, "--json", "--config", str(with_case), "--now", "2021-04-16T10:00:00+08:00", "plan")
    assert after[0] == 0 and before == after
    assert json.loads(before[1])[0]["case"] == "CAS-04027-B7D2Z5"
    # Given in both places, the command's own copy wins; given before only, the command keeps it.
    code, _, err = run(capsys, "--config", str(with_case), "cases", "--config", str(with_case.parent / "none.toml"))
    assert code == 2 and "none.toml" in err
    code, out, _ = run(capsys, "--config", str(with_case), "cases", "--status", "waiting_customer")
    assert code == 0 and "CAS-04027-B7D2Z5" in out


def test_cases_and_plan_json(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cases", "--json", "--config", str(with_case))
    assert code == 0 and [c["key"] for c in json.loads(out)] == ["CAS-04027-B7D2Z5"]
    # INTERFACE.md: each item of `cases --json` is a case as `case KEY --json` prints it, messages included
    _, one, _ = run(capsys, "case", "CAS-04027-B7D2Z5", "--json", "--config", str(with_case))
    assert json.loads(out) == [json.loads(one)]
    code, out, _ = run(capsys, "cases", "--status", "closed", "--json", "--config", str(with_case))
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "plan", "--json", "--config", str(with_case))
    assert json.loads(out) == [{"case": "CAS-04027-B7D2Z5", "kind": "reminder", "due": "2021-04-16T09:00:00+08:00"}]


def test_human_views_show_the_case(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cases", "--config", str(with_case))
    assert code == 0 and "CAS-04027-B7D2Z5" in out and "某单位终端频繁蓝屏" in out
    code, out, _ = run(capsys, "case", "CAS-04027-B7D2Z5", "--config", str(with_case))
    assert code == 0 and "timeline" in out and "auto_reply" in out
    code, out, _ = run(capsys, "plan", "--config", str(with_case))
    assert code == 0 and "reminder" in out


def test_render_previews_each_template(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for template in ("reminder", "reminder2", "closure", "receipt", "nudge", "escalation", "digest"):
        code, out, err = run(capsys, "render", "CAS-04027-B7D2Z5", template, "--json", "--config", str(with_case))
        assert code == 0, err
        mail = json.loads(out)
        assert "\n" not in mail["subject"] and mail["text"].strip()
    code, _, err = run(capsys, "render", "CAS-04027-B7D2Z5", "nonsense", "--config", str(with_case))
    assert code == 2 and "unknown template" in err


def test_explain_says_why(config: Path, scenario_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", str(next(scenario_dir.glob("02-*.eml"))), "--json", "--config", str(config))
    assert code == 0
    data = json.loads(out)
    assert data["case_key"] == "CAS-04027-B7D2Z5" and data["matched_by"] == "subject"
    assert data["flags"] == ["auto_reply"] and data["role"] == "customer"
    assert data["commands"] == []
    assert data["lands"] == "unmatched: automatic mail for an unknown case"  # the store is empty
    code, out, _ = run(capsys, "explain", str(next(scenario_dir.glob("04-*.eml"))), "--json", "--config", str(config))
    assert [c["command"] for c in json.loads(out)["commands"]] == ["close"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["case", "CAS-99999-ZZZZZZ"], 1, "no case CAS-99999-ZZZZZZ"),
        (["explain", "/nonexistent.eml"], 1, "cannot read /nonexistent.eml"),
        (["import", "/nonexistent"], 1, "no such file or folder"),
        (["run", "--once", "--now", "yesterday"], 2, "--now 'yesterday'"),
        (["run", "--once", "--now", "2021-04-15T10:00:00"], 2, "expected an offset"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_the_right_exit_code(config: Path, capsys: pytest.CaptureFixture[str],
                                                           argv: list[str], code: int, message: str) -> None:
    got, _, err = run(capsys, *argv, "--config", str(config))
    assert got == code
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[followup]\nmax_reminders = -1\n", encoding="utf-8")
    code, _, err = run(capsys, "cases", "--config", str(bad))
    assert code == 2 and "[followup] max_reminders" in err
    code, _, err = run(capsys, "cases", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "config file not found" in err


def test_a_corrupt_store_refuses_to_start_and_keeps_the_file(with_case: Path, capsys) -> None:
    shard = next((with_case.parent / "state" / "store" / "active").glob("*.json"))
    shard.write_text("{ not json", encoding="utf-8")
    code, _, err = run(capsys, "run", "--once", "--config", str(with_case))
    assert code == 1 and "not valid JSON" in err
    assert shard.read_text(encoding="utf-8") == "{ not json"
    assert list(shard.parent.glob(shard.name + ".corrupt-*"))


def test_a_second_writer_is_refused(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from filelock import FileLock

    with FileLock(str(with_case.parent / "state" / "mailbot.lock")):
        code, _, err = run(capsys, "run", "--once", "--config", str(with_case))
    assert code == 1 and "already running" in err
    code, _, _ = run(capsys, "cases", "--config", str(with_case))  # readers still work
    assert code == 0


def test_import_of_an_mbox_twice_changes_nothing_the_second_time(config: Path, scenario_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    box_path = config.parent / "history.mbox"
    box = mailbox.mbox(str(box_path))
    for eml in sorted(scenario_dir.glob("*.eml")):
        box.add(eml.read_bytes())
    box.close()
    code, out, _ = run(capsys, "import", str(box_path), "--json", "--config", str(config),
                       "--now", "2021-05-01T10:00:00+08:00")
    assert code == 0
    first = json.loads(out)
    assert first == {"messages": 4, "cases_opened": 1, "threaded": 4, "unmatched": 0, "quarantined": 0,
                     "duplicates": 0, "replanned": 0, "sent": 0}
    store_files = {p: p.read_bytes() for p in (config.parent / "state" / "store").rglob("*.json")}
    code, out, _ = run(capsys, "import", str(box_path), "--json", "--config", str(config),
                       "--now", "2021-05-01T10:00:00+08:00")
    assert json.loads(out)["duplicates"] == 4
    assert {p: p.read_bytes() for p in (config.parent / "state" / "store").rglob("*.json")} == store_files
    code, out, _ = run(capsys, "case", "CAS-04027-B7D2Z5", "--json", "--config", str(config))
    assert json.loads(out)["status"] == "closed"  # the past #close applies, but nothing was sent
    assert not (config.parent / "state" / "outbox").exists() or not list((config.parent / "state" / "outbox").iterdir())


def test_the_console_script_never_shows_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mailbot.cli", "cases", "--config", str(tmp_path / "none.toml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("mailbot: config:")


def test_demo_shows_a_case_life() -> None:
    result = subprocess.run([sys.executable, "-m", "mailbot.cli", "demo"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for expected in ("CAS-04027-B7D2Z5", "waiting_customer", "waiting_engineer", "closed", "no (masked)"):
        assert expected in result.stdout


@pytest.mark.parametrize("layout", ["maildir", "eml-folder"])
def test_import_reads_a_maildir_and_a_folder_of_eml(config: Path, scenario_dir: Path, layout: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    source = config.parent / "history"
    for eml in sorted(scenario_dir.glob("0[123]-*.eml")):
        if layout == "maildir":
            deliver(source, eml.read_bytes())
        else:
            source.mkdir(exist_ok=True)
            (source / eml.name).write_bytes(eml.read_bytes())
    code, out, _ = run(capsys, "import", str(source), "--json", "--config", str(config),
                       "--now", "2021-04-19T12:00:00+08:00")
    assert code == 0 and json.loads(out)["threaded"] == 3
    code, out, _ = run(capsys, "case", "CAS-04027-B7D2Z5", "--json", "--config", str(config))
    assert json.loads(out)["status"] == "waiting_engineer"


def test_import_replans_overdue_follow_ups_from_now(config: Path, scenario_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = config.parent / "history"
    deliver(source, next(scenario_dir.glob("01-*.eml")).read_bytes())
    code, out, _ = run(capsys, "import", str(source), "--json", "--config", str(config),
                       "--now", "2021-06-01T10:00:00+08:00")
    assert json.loads(out)["replanned"] == 1
    code, out, _ = run(capsys, "plan", "--json", "--config", str(config))
    # Nothing is sent for the past: the first reminder counts three business days from the import.
    assert json.loads(out) == [{"case": "CAS-04027-B7D2Z5", "kind": "reminder", "due": "2021-06-04T10:00:00+08:00"}]


def test_cases_filters(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def keys(*extra: str) -> list[str]:
        code, out, _ = run(capsys, "cases", "--json", "--config", str(with_case), *extra)
        assert code == 0
        return [c["key"] for c in json.loads(out)]

    assert keys("--engineer", "liqi@support.example") == ["CAS-04027-B7D2Z5"]
    assert keys("--engineer", "someone@support.example") == []
    assert keys("--overdue", "--now", "2021-04-15T09:00:00+08:00") == []
    assert keys("--overdue", "--now", "2021-04-16T09:00:00+08:00") == ["CAS-04027-B7D2Z5"]


def test_logs_are_one_line_per_event_with_the_case_key_and_optionally_json(tmp_path: Path, scenario_dir: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace('state_dir = "state"', 'state_dir = "state"\nlog_json = true'), encoding="utf-8")
    deliver(tmp_path / "maildir", next(scenario_dir.glob("01-*.eml")).read_bytes())
    result = subprocess.run([sys.executable, "-m", "mailbot.cli", "run", "--once", "--config", str(config),
                             "--now", "2021-04-13T02:00:00+08:00"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    opened = [e for e in events if "opened case" in e["message"]]
    assert opened and opened[0]["message"].startswith("CAS-04027-B7D2Z5 ")
    assert all({"time", "level", "message"} <= set(e) for e in events)


def test_tables_align_chinese_text_by_display_width(with_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.cells import cell_len

    code, out, _ = run(capsys, "cases", "--config", str(with_case))
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert any("某单位终端频繁蓝屏" in line for line in table)
    assert len({cell_len(line) for line in table}) == 1  # every row as wide as the frame


def test_cases_lists_unmatched_and_quarantined_mail(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deliver(config.parent / "maildir", b"\r\n\r\n")
    deliver(config.parent / "maildir", b"From: someone@else.example\r\nSubject: hello\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n")
    code, _, _ = run(capsys, "run", "--once", "--config", str(config), "--now", "2021-04-13T02:00:00+08:00")
    code, out, _ = run(capsys, "cases", "--config", str(config))
    assert code == 0
    assert "1 unmatched" in out and "no case key and no known thread" in out
    assert "1 quarantined" in out and "empty message" in out
    code, out, _ = run(capsys, "requeue", "--config", str(config))
    assert code == 0 and "requeued 1 of 1" in out
    assert len(list((config.parent / "maildir" / "new").iterdir())) == 1
    code, out, _ = run(capsys, "cases", "--config", str(config))
    assert "quarantined" not in out  # taken off the list; the next run decides again


def test_explain_says_where_a_mail_would_land_given_the_store(with_case: Path, scenario_dir: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    def lands(name: str) -> str:
        code, out, _ = run(capsys, "explain", str(next(scenario_dir.glob(f"{name}-*.eml"))), "--json",
                           "--config", str(with_case))
        assert code == 0
        return json.loads(out)["lands"]

    assert lands("01").startswith("duplicate")
    assert lands("03") == "threaded into the existing case CAS-04027-B7D2Z5"
    code, out, _ = run(capsys, "explain", str(next(scenario_dir.glob("03-*.eml"))), "--config", str(with_case))
    assert "lands in" in out and "threaded into the existing case" in out


@pytest.mark.parametrize("now", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "9999-06-01T00:00:00+00:00"])
def test_a_now_beyond_the_calendar_is_a_usage_error(config: Path, now: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["plan"], ["run", "--once"]):
        code, _, err = run(capsys, *command, "--config", str(config), "--now", now)
        assert code == 2 and "expected a year from 1970 to 9000" in err and len(err.strip().splitlines()) == 1


def test_doctor_json_reports_a_bad_config_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('[bot]\ntimezone = ""\n', encoding="utf-8")
    code, out, _ = run(capsys, "doctor", "--json", "--config", str(tmp_path / "bad.toml"))
    assert code == 2 and json.loads(out)[0]["check"] == "config" and not json.loads(out)[0]["ok"]


@pytest.mark.parametrize("blocker", ["maildir", "maildir/new"])
def test_a_maildir_part_that_is_a_file_is_one_line(config: Path, blocker: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = config.parent / blocker
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("not a folder")
    code, _, err = run(capsys, "run", "--once", "--config", str(config))
    assert code == 1 and f"{target} is a file, not a folder" in err and "unexpected" not in err
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert "is a file, not a folder" in out


def test_requeue_takes_exact_names(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quarantine = config.parent / "maildir" / ".Quarantine" / "cur"
    quarantine.mkdir(parents=True)
    for name in ("m174", "m187"):
        (quarantine / f"{name}:2,").write_bytes(b"broken")
    for wrong in ("m1", "m1*", ""):
        code, out, _ = run(capsys, "requeue", wrong, "--config", str(config))
        assert code == 0 and "requeued 0 of 1" in out
    code, out, _ = run(capsys, "requeue", "m174", "--config", str(config))
    assert code == 0 and "requeued 1 of 1" in out
    assert (config.parent / "maildir" / "new" / "m174").read_bytes() == b"broken"
    assert [p.name for p in quarantine.iterdir()] == ["m187:2,"]


def test_run_once_with_the_imap_server_down_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # One cycle (from cron, say) gives up after twice the socket timeout instead of retrying for minutes.
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "c.toml").write_text(
        f'[bot]\nstate_dir = "state"\n[mailbox]\nkind = "imap"\nport = {port}\nsecurity = "none"\n'
        'username = "bot"\ntimeout_seconds = 1\n', encoding="utf-8")
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", "x")
    code, _, err = run(capsys, "run", "--once", "--config", str(tmp_path / "c.toml"))
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("mailbot: could not reconnect") and "within 2 s" in last
    assert "unexpected" not in err and "Traceback" not in err


def test_doctor_on_a_fresh_setup_warns_that_run_creates_the_maildir(config: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A state the bot fixes itself (`mailbot run` creates the Maildir) is a warning, not a failure.
    code, out, _ = run(capsys, "doctor", "--json", "--config", str(config))
    mailbox = next(c for c in json.loads(out) if c["check"] == "mailbox")
    assert mailbox["ok"] and mailbox.get("warning") and "`mailbot run` creates it" in mailbox["detail"]
    run(capsys, "run", "--once", "--config", str(config))
    code, out, _ = run(capsys, "doctor", "--json", "--config", str(config))
    mailbox = next(c for c in json.loads(out) if c["check"] == "mailbox")
    assert mailbox["ok"] and not mailbox.get("warning") and "0 new" in mailbox["detail"]


def test_import_records_an_unreadable_mail_in_the_quarantine_once(config: Path, scenario_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    source = config.parent / "history"
    source.mkdir()
    (source / "empty.eml").write_bytes(b"")
    (source / "blank.eml").write_bytes(b"\r\n\r\n")
    (source / "01.eml").write_bytes(next(scenario_dir.glob("01-*.eml")).read_bytes())
    code, out, _ = run(capsys, "import", str(source), "--json", "--config", str(config),
                       "--now", "2021-04-19T12:00:00+08:00")
    assert code == 0 and json.loads(out)["quarantined"] == 2
    code, out, _ = run(capsys, "doctor", "--json", "--config", str(config))
    store = next(c for c in json.loads(out) if c["check"] == "store")
    # Once each, under the import's own ref: `requeue` is never pointed at a Maildir file that is not there.
    assert "2 quarantined" in store["detail"]


def test_a_bug_on_one_mail_quarantines_it_and_the_import_goes_on(config: Path, scenario_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As in `run`: an unexpected error on one mail of a long history must not stop the import of the rest."""
    from mailbot.service import Service

    source = config.parent / "history"
    source.mkdir()
    for eml in sorted(scenario_dir.glob("0[13]-*.eml")):
        (source / eml.name).write_bytes(eml.read_bytes())
    real_apply = Service.apply

    def apply(self, mail, now, report):  # the customer's reply meets a bug
        if "客户" in mail.new_text or mail.from_addr.endswith("customer.example"):
            raise RuntimeError("a bug")
        return real_apply(self, mail, now, report)

    monkeypatch.setattr(Service, "apply", apply)
    code, out, _ = run(capsys, "import", str(source), "--json", "--config", str(config),
                       "--now", "2021-04-19T12:00:00+08:00")
    assert code == 0
    assert (json.loads(out)["quarantined"], json.loads(out)["threaded"]) == (1, 1)
