"""Shared fixtures: settings for a throw-away state folder, and where ../shared lives."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import Settings, from_dict

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the checkout (CI has it there); MAILBOT_SHARED overrides; None when absent."""
    env = os.environ.get("MAILBOT_SHARED")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture
def scenario_dir() -> Path:
    shared = shared_dir()
    if shared is None or not (shared / "scenario").is_dir():
        pytest.skip("../shared/scenario is not present")
    return shared / "scenario"


def base_config() -> dict[str, Any]:
    return {
        "bot": {"address": "casebot@support.example", "name": "casebot", "state_dir": "state"},
        "engineers": {"addresses": ["liqi@support.example"], "domains": ["support.example"]},
        "mailbox": {"kind": "maildir", "path": "maildir"},
        # The engineers' side (nudges, digests: issue 17) is on by default; these tests tell the customer's
        # side of a case's life, so it is off here and tests/test_nudge.py, test_digest.py turn it on.
        "nudge": {"after_business_hours": 0, "escalate_after_business_hours": 0},
        "digest": {"at": ""},
    }


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**sections: dict[str, Any]) -> Settings:
        raw = base_config()
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return from_dict(raw, tmp_path)

    return build


# The smallest config.toml the CLI runs on: the embedded default (a Maildir in, the outbox folder out).
CONFIG = """
[bot]
address = "casebot@support.example"
state_dir = "state"
[engineers]
domains = ["support.example"]
[mailbox]
path = "maildir"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


# PostgreSQL (tests/pg_server.py): one private cluster per session; each test that asks gets its own database.
@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    from tests.pg_server import PostgresServer, pg_bindir, unavailable

    bindir = pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL (initdb/pg_ctl) is not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed")
    server = PostgresServer(bindir)
    try:
        server.start()
    except (RuntimeError, OSError, KeyError) as exc:
        server.stop()
        unavailable(f"the private PostgreSQL cluster did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_dsn(pg_server: Any) -> str:
    """The session cluster's maintenance database (`postgres`): create databases from here, do not fill it."""
    return str(pg_server.dsn)


@pytest.fixture
def pg_store_dsn(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database for this test alone (dropped after it)."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)
