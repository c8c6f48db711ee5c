"""`mailbot status`: who runs and who holds each mailbox, from the files store on this host and from the
PostgreSQL database (judged by the database's clock), in INTERFACE.md's JSON shape and as text."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailbot.cases import open_case
from mailbot.models import NextAction
from mailbot.status import note_run, render, status, status_command
from mailbot.store import Store

NOW = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
INSTANCE_KEYS = {"name", "host", "pid", "started", "last_seen", "mailboxes"}
MAILBOX_KEYS = {"name", "leader", "lease_until", "last_ingest", "backlog", "unsent"}


def due_case(key: str, due: datetime) -> Any:
    return open_case(key, "Terminals crash", "Terminals crash", NOW - timedelta(days=7), "en").with_(
        next_action=NextAction(due=due, kind="reminder"))


def test_the_files_store_shows_this_host_and_a_leader_only_while_its_run_is_alive(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.put_case(due_case("CAS-00001-AAAAAA", NOW - timedelta(hours=1)))
    store.put_case(due_case("CAS-00002-BBBBBB", NOW + timedelta(days=1)))
    store.commit()
    idle = status(store, NOW)
    assert idle["mailboxes"] == [{"name": "default", "leader": None, "lease_until": None, "last_ingest": None,
                                  "backlog": 1, "unsent": 0}]
    assert idle["instances"][0]["mailboxes"] == [] and idle["instances"][0]["last_seen"] is None

    note_run(store, "mail-a")  # what `mailbot run` does at its start; this test's process is the live run
    running = status(store, NOW)
    assert running["mailboxes"][0]["leader"] == "mail-a"
    assert running["instances"][0]["pid"] == os.getpid() and running["instances"][0]["mailboxes"] == ["default"]

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = store.get_checkpoint("run:instance")
    store.set_checkpoint("run:instance", {**record, "pid": int(gone.stdout)})  # a run that has ended
    assert status(store, NOW)["mailboxes"][0]["leader"] is None


def test_status_json_has_the_interface_shape(make_settings: Callable[..., Any]) -> None:
    out = io.StringIO()
    assert status_command(make_settings(), True, out, now=NOW) == 0
    report = json.loads(out.getvalue())
    assert set(report) == {"instances", "mailboxes"}
    assert all(set(i) == INSTANCE_KEYS for i in report["instances"])
    assert all(set(m) == MAILBOX_KEYS for m in report["mailboxes"])
    text = io.StringIO()
    status_command(make_settings(), False, text, now=NOW)
    assert text.getvalue() == render(report) + "\n" and "default  no leader" in text.getvalue()


def test_the_database_shows_live_instances_and_each_mailbox_leader(pg_store_dsn: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    from mailbot.store.postgresql import lease as leases
    from mailbot.store.postgresql.engine import PostgresStore

    store = PostgresStore(pg_store_dsn)
    store.put_case(due_case("CAS-00001-AAAAAA", NOW - timedelta(hours=1)))
    store.outbox_record({"action_id": "a1", "case": "CAS-00001-AAAAAA", "kind": "reminder", "message_id": "<a1@x>",
                         "recipients": ["c@customer.example"], "sender": "casebot@support.example", "subject": "s",
                         "text": "t", "raw": "x", "recorded": NOW.isoformat(), "attempts": 0})
    store.commit()
    store.close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        leases.register(conn, "mail-a", "host-a", 101)
        leases.register(conn, "mail-b", "host-b", 202)
        held = leases.acquire(conn, "default", "mail-a", 30.0)
        assert held is not None
        leases.note_ingest(conn, held)
        conn.execute("UPDATE instances SET last_seen = now() - interval '1 hour' WHERE name = 'mail-b'")
        report = status(conn, NOW, lease_seconds=30.0)
        assert [i["name"] for i in report["instances"]] == ["mail-a"]  # mail-b has gone silent
        assert report["instances"][0]["mailboxes"] == ["default"]
        [box] = report["mailboxes"]
        assert box["leader"] == "mail-a" and box["lease_until"] and box["last_ingest"]
        assert (box["backlog"], box["unsent"]) == (1, 1)

        leases.release(conn, held)
        [box] = status(conn, NOW, lease_seconds=30.0)["mailboxes"]
        assert box["leader"] is None and box["lease_until"] is None
    assert "led by" not in render({"instances": [], "mailboxes": [box]})
