"""`mailbot store init | dump | load` and `mailbot status`, as an operator runs them: a backup of the files
engine, moving a deployment to PostgreSQL and back, and what a mistake looks like (one line, exit code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from mailbot.models import CaseStatus
from mailbot.store import Store
from tests.conftest import CONFIG
from tests.test_store_port import KEY, OTHER, T0, a_case

ROOT = Path(__file__).resolve().parent.parent


def mailbot(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot.cli", *args, "--config", str(cwd / "config.toml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def deployment(folder: Path, store: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(CONFIG.replace('state_dir = "state"', f'state_dir = "{folder / "state"}"')
                                        .replace('path = "maildir"', f'path = "{folder / "maildir"}"') + store,
                                        encoding="utf-8")
    return folder


def with_history(folder: Path) -> Path:
    store = Store(folder / "state" / "store")
    store.put_case(a_case(KEY, due=T0 + timedelta(days=2)))
    store.put_case(a_case(OTHER, status=CaseStatus.CLOSED, tokens=("CMIT:0009999",)))
    store.remember(f"<{KEY}-1@support.example>", KEY)
    store.add_quarantined({"ref": "new/1.eml", "reason": "broken MIME"})
    store.outbox_record({"action_id": f"{KEY}/reminder/1", "case": KEY, "recorded": "2026-03-02", "raw": "x"})
    store.outbox_finish(f"{KEY}/reminder/1", "sent")
    store.commit()
    return folder


def cases_json(folder: Path, env: dict[str, str] | None = None) -> object:
    result = mailbot(folder, "cases", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_dump_loaded_into_a_new_files_store_shows_the_same_cases_and_loading_again_changes_nothing(
        tmp_path: Path) -> None:
    old = with_history(deployment(tmp_path / "old"))
    dumped = mailbot(old, "store", "dump", str(tmp_path / "backup.jsonl"))
    assert dumped.returncode == 0, dumped.stderr
    lines = (tmp_path / "backup.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "dump" and all(line.strip() for line in lines)
    new = deployment(tmp_path / "new")
    first = mailbot(new, "store", "load", str(tmp_path / "backup.jsonl"))
    again = mailbot(new, "store", "load", str(tmp_path / "backup.jsonl"))
    assert first.returncode == 0 and "0 records changed" not in first.stdout
    assert again.returncode == 0 and "0 records changed (already loaded)" in again.stdout
    assert cases_json(new) == cases_json(old) and len(cases_json(new)) == 2  # type: ignore[arg-type]
    restored = Store(new / "state" / "store")
    assert restored.case_for_message(f"<{KEY}-1@support.example>") == KEY
    assert [q["ref"] for q in restored.quarantined()] == ["new/1.eml"]
    assert (restored.outbox_entry(f"{KEY}/reminder/1") or {}).get("status") == "sent"


def test_a_damaged_dump_is_refused_in_one_line_naming_the_record(tmp_path: Path) -> None:
    folder = deployment(tmp_path / "d")
    (tmp_path / "bad.jsonl").write_text('{"kind": "dump", "format": "mailbot-store", "version": 1}\n{"kind": "case"\n')
    result = mailbot(folder, "store", "load", str(tmp_path / "bad.jsonl"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "2" in result.stderr
    missing = mailbot(folder, "store", "load", str(tmp_path / "nothing.jsonl"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_status_of_a_files_deployment_names_its_one_mailbox_and_no_running_leader(tmp_path: Path) -> None:
    folder = with_history(deployment(tmp_path / "s"))
    result = mailbot(folder, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"instances", "mailboxes"}
    assert [m["name"] for m in report["mailboxes"]] == ["default"] and report["mailboxes"][0]["leader"] is None
    assert set(report["mailboxes"][0]) >= {"name", "leader", "lease_until", "last_ingest", "backlog", "unsent"}


POSTGRES = '\n[store]\nkind = "postgresql"\ndsn_env = "MAILBOT_TEST_DB"\n'


def test_postgresql_without_its_url_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    folder = deployment(tmp_path / "pg", POSTGRES)
    result = mailbot(folder, "cases", env={"MAILBOT_TEST_DB": ""})
    assert result.returncode == 1 and "MAILBOT_TEST_DB" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgresql
def test_a_deployment_moves_from_files_to_postgresql_and_back_with_the_same_cases(
        tmp_path: Path, pg_store_dsn: str) -> None:
    files = with_history(deployment(tmp_path / "files"))
    pg = deployment(tmp_path / "pg", POSTGRES)
    env = {"MAILBOT_TEST_DB": pg_store_dsn}
    assert mailbot(pg, "store", "init", env=env).returncode == 0
    assert mailbot(pg, "store", "init", env=env).returncode == 0  # idempotent
    assert mailbot(files, "store", "dump", str(tmp_path / "files.jsonl")).returncode == 0
    loaded = mailbot(pg, "store", "load", str(tmp_path / "files.jsonl"), env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert "(already loaded)" in mailbot(pg, "store", "load", str(tmp_path / "files.jsonl"), env=env).stdout
    assert cases_json(pg, env) == cases_json(files)
    assert mailbot(pg, "store", "dump", str(tmp_path / "pg.jsonl"), env=env).returncode == 0
    back = deployment(tmp_path / "back")
    assert mailbot(back, "store", "load", str(tmp_path / "pg.jsonl")).returncode == 0
    assert cases_json(back) == cases_json(files)
