"""What the several-instance benches share (bench/failover.py, bench/mailboxes.py): the config of one
instance on PostgreSQL, its worker processes (started, SIGKILLed, stopped), and a mail's Message-ID."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

NOW = "2026-03-05T10:00:00+08:00"  # a Thursday morning in Shanghai: a business day, inside working hours


def message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.compat32)["Message-ID"] or "").strip()


def instance_config(name: str, mailboxes: str, smtp_port: int, lease: float) -> str:
    """One instance's config.toml: its own state folder and name, the given mailbox table(s), a local SMTP
    sink, sweeps every second, PostgreSQL with `lease` seconds."""
    return f"""
[bot]
address = "casebot@support.example"
name = "casebot"
state_dir = "state-{name}"
instance_name = "{name}"
parse_workers = 1
[engineers]
domains = ["support.example"]
{mailboxes}
[smtp]
kind = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
max_per_recipient_per_day = 1000
[followup]
sweep_seconds = 1
[store]
kind = "postgresql"
lease_seconds = {lease}
"""


class Instances:
    """The worker processes, by name, each `command + [NAME.toml, "--now", NOW]` in `work` (logs in NAME.log);
    a killed one is started again as a fresh process."""

    def __init__(self, work: Path, dsn: str, command: Sequence[str], env: dict[str, str]) -> None:
        self.work, self.dsn, self.command, self.env = work, dsn, list(command), env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.work / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*self.command, f"{name}.toml", "--now", NOW], cwd=self.work, stdout=log, stderr=subprocess.STDOUT,
            env={**self.env, "MAILBOT_DATABASE_URL": self.dsn}, start_new_session=True)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its children, at once
        proc.wait()

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM to every live one; their exit codes (None: had to be killed after 30 s)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = None
        return codes
