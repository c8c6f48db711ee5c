"""The state folder is private: after `mailbot run`, every file under it is 0600 and every folder 0700 (issue 13).

It holds the store (customers' mail, addresses, notes), the outbox's .eml files and the quarantine records;
nothing there may be readable by the group or by others, whatever umask the shell that started mailbot had.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.mailbox.maildir import deliver
from tests.test_crash import START, engineer_mail, key


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual login umask (022: files 0644, folders 0755), as the shell that starts mailbot may have."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Relative path → permission bits of every file and folder under `root` (the root itself as '.')."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def run_once(config: Path, capsys: pytest.CaptureFixture[str], now: str = START.isoformat()) -> str:
    code = main(["run", "--once", "--config", str(config), "--now", now])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


@pytest.mark.usefixtures("open_umask")
def test_after_a_run_every_file_in_the_state_is_0600_and_every_folder_0700(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = config.parent / "maildir"
    deliver(maildir, engineer_mail(1))  # a case whose reminder is due at START: an outbox .eml
    deliver(maildir, b"\r\n\r\n")  # an empty message: quarantined
    run_once(config, capsys)
    state = config.parent / "state"
    found = modes(state)
    # The run did make what the issue names: the store, a mail in the outbox, a quarantine record.
    assert any(name.startswith("outbox/") and name.endswith(".eml") for name in found)
    assert any("quarantine" in name for name in found)
    assert any(name.startswith("store/") for name in found)
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (state / name).is_dir() else 0o600)}
    assert loose == {}
    # The folders the bot makes in the Maildir for quarantined mail are private too.
    made = [p for p in maildir.rglob("*") if p.is_dir() and "Quarantine" in str(p)]
    assert made and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made)
    assert os.umask(0o022) == 0o022  # main() gave the caller's umask back


@pytest.mark.usefixtures("open_umask")
def test_a_state_folder_left_open_by_an_older_version_is_made_private_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deliver(config.parent / "maildir", engineer_mail(2))
    run_once(config, capsys)
    state = config.parent / "state"
    # What an older mailbot (no umask of its own) left behind under a 022 umask.
    for path in (state, *state.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    err = run_once(config, capsys, (START.replace(hour=11)).isoformat())
    assert err.count("made private") == 1 and str(state) in err
    assert all(mode & 0o077 == 0 for mode in modes(state).values())
    # Once private, it stays quiet: nothing to tighten, nothing logged.
    assert "made private" not in run_once(config, capsys, (START.replace(hour=12)).isoformat())
    code = main(["case", key(2), "--config", str(config)])
    assert code == 0 and "made private" not in capsys.readouterr().err
