"""A private PostgreSQL cluster on 127.0.0.1 for store tests: initdb/pg_ctl in a temp dir, trust auth.

The `pg_dsn` (session) and `pg_store_dsn` (a fresh database per test) fixtures in `tests/conftest.py` use it.
As root the cluster runs as the `postgres` OS user (the server refuses root). Without PostgreSQL the tests
are skipped, unless MAILBOT_REQUIRE_POSTGRES=1 (as in `make test` and CI), where they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

_START_TIMEOUT = 30.0


def unavailable(reason: str) -> None:
    if os.environ.get("MAILBOT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"MAILBOT_REQUIRE_POSTGRES=1 but {reason} (run scripts/ensure-postgres.sh)", pytrace=False)
    pytest.skip(reason)


def pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster: its data directory, port and log live under `root`, removed by `stop()`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            # The server refuses to run as root: everything runs as the postgres OS user, who owns the dir.
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else ["su-c"]
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def _command(self, *args: str) -> list[str]:
        if self._as == ["su-c"]:  # no runuser: su runs one shell command line as postgres
            return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(args)]
        return [*self._as, *args]

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._command(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        # fsync off: a test cluster is thrown away, durability across an OS crash is not what is tested here.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", str(int(_START_TIMEOUT)), "start")
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._accepts():
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not listen on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._command(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                         "-w", "stop"), capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        """A fresh, empty database from template0; returns its DSN."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn_for(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
