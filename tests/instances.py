"""Bot instances as separate `mailbot run` processes on one PostgreSQL database, for the several-instance tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_instance(workdir: Path, name: str, dsn: str, config: str) -> subprocess.Popen[str]:
    """`mailbot run --config NAME.toml` in `workdir` with `config`, its output in NAME.log."""
    (workdir / f"{name}.toml").write_text(config, encoding="utf-8")
    log = open(workdir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115  # closed with the process
    return subprocess.Popen([sys.executable, "-m", "mailbot.cli", "run", "--config", f"{name}.toml"], cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILBOT_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)})
