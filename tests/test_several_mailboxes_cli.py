"""Two Maildir desks through the command line: `mailbot doctor` checks each and names it, and one long-running
`mailbot run` (files store) works both, shows in `mailbot status` which mailboxes it holds, and stops on
SIGTERM with exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.mailbox.maildir import deliver
from tests.trustlife import mail

ROOT = Path(__file__).resolve().parents[1]

TWO_DESKS = """
[bot]
address = "casebot@support.example"
state_dir = "state"
[engineers]
domains = ["support.example"]
[mailboxes.cn]
path = "cn"
poll_seconds = 1
address = "support-cn@support.example"
language = "zh-CN"
[mailboxes.en]
path = "en"
poll_seconds = 1
address = "support-en@support.example"
language = "en"
[followup]
sweep_seconds = 1
"""


@pytest.fixture
def two_desks(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(TWO_DESKS, encoding="utf-8")
    return path


def test_doctor_checks_each_mailbox_and_names_it(two_desks: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for m in ("cn", "en"):
        for sub in ("new", "cur", "tmp"):
            (tmp_path / m / sub).mkdir(parents=True)
    (tmp_path / "en" / "new").rmdir()
    (tmp_path / "en" / "new").write_text("not a folder", encoding="utf-8")  # the English desk is broken
    code = main(["doctor", "--json", "--config", str(two_desks)])
    results = json.loads(capsys.readouterr().out)
    boxes = {r["mailbox"]: r for r in results if r["check"] == "mailbox"}
    assert set(boxes) == {"cn", "en"}
    assert boxes["cn"]["ok"] and not boxes["en"]["ok"] and "is a file" in boxes["en"]["detail"]
    assert {r["mailbox"] for r in results if r["check"] == "templates"} == {"cn", "en"}
    assert code == 1

    main(["doctor", "--config", str(two_desks)])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ok   mailbox (cn): ") for line in lines)
    assert any(line.startswith("FAIL mailbox (en): ") for line in lines)
    assert sum(line.split(":")[0].endswith("store") for line in lines) == 1  # the shared checks: once


def test_one_run_works_both_desks_shows_them_in_status_and_stops_on_sigterm(two_desks: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "run", "--config", str(two_desks)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example", "请上传日志。",
                                      "2021-04-15T10:00:00+08:00", subject="[案例号: CAS-04027-B7D2Z5 ] % 蓝屏 %",
                                      cc="support-cn@support.example"))
        deliver(tmp_path / "en", mail("ann@support.example", "bob@customer.example", "Please upload the logs.",
                                      "2021-04-15T10:05:00+08:00", subject="[Case: CAS-05111-Q9W8E7 ] % Reboots %",
                                      cc="support-en@support.example"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(not list((tmp_path / m / "cur").glob("*")) for m in ("cn", "en")):
            time.sleep(0.1)
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "mailbot.cli", "status", "--json", "--config", str(two_desks)],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    [instance] = status["instances"]
    assert instance["mailboxes"] == ["cn", "en"]
    assert {m["name"]: m["leader"] for m in status["mailboxes"]} == {"cn": instance["name"], "en": instance["name"]}
    cases = json.loads(subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "cases", "--json", "--config", str(two_desks)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout)
    assert {c["key"]: c["mailbox"] for c in cases} == {"CAS-04027-B7D2Z5": "cn", "CAS-05111-Q9W8E7": "en"}
    assert "2 mailboxes (cn: maildir, en: maildir)" in err and "mailbot stopped" in err
