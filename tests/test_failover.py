"""Two bot instances on one PostgreSQL database and one Maildir: one works the mailbox, the other waits; when
the worker is SIGKILLed the other takes over, and every mail ends up recorded exactly once."""

from __future__ import annotations

import email
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailbot.mailbox.maildir import deliver
from tests.instances import start_instance

psycopg = pytest.importorskip("psycopg")

from mailbot.store.postgresql.engine import PostgresStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from generate import generate  # noqa: E402


def instance_config(name: str) -> str:
    return f"""
[bot]
address = "casebot@support.example"
state_dir = "state-{name}"
instance_name = "{name}"
parse_workers = 1
[engineers]
domains = ["support.example"]
[mailbox]
path = "maildir"
poll_seconds = 1
[followup]
sweep_seconds = 1
[store]
kind = "postgresql"
lease_seconds = 1
"""


def start(tmp_path: Path, name: str, dsn: str) -> subprocess.Popen[str]:
    return start_instance(tmp_path, name, dsn, instance_config(name))


def until(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    return None


def holder(conn: Any) -> tuple[str, int] | None:
    row = conn.execute("SELECT holder, fence FROM leases WHERE mailbox = 'default' AND expires > now()").fetchone()
    return None if row is None else (row[0], int(row[1]))


def test_the_standby_takes_over_from_a_killed_leader_and_each_mail_is_recorded_once(tmp_path: Path,
                                                                                     pg_store_dsn: str) -> None:
    mails = [m.raw for m in generate(messages=120, threads=20, seed=11)]
    ids = [email.message_from_bytes(raw)["Message-ID"].strip() for raw in mails]
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    PostgresStore(pg_store_dsn).close()  # the schema, once, before the two race to create it
    workers = {name: start(tmp_path, name, pg_store_dsn) for name in ("a", "b")}
    reader = PostgresStore(pg_store_dsn, init=False)
    observer = psycopg.connect(pg_store_dsn, autocommit=True)
    try:
        first = until(lambda: holder(observer))
        assert first is not None, (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
        leader, standby = first[0], "b" if first[0] == "a" else "a"

        def recorded() -> int:
            reader.rollback()  # a fresh snapshot
            return sum(reader.seen(i) is not None for i in ids)

        for raw in mails[:60]:
            deliver(maildir, raw)
        assert until(lambda: recorded() > 0)
        for raw in mails[60:]:  # the second half arrives as the leader dies, in the middle of its work
            deliver(maildir, raw)
        workers[leader].send_signal(signal.SIGKILL)
        workers[leader].wait(timeout=10)

        second = until(lambda: (h := holder(observer)) and h[0] == standby and h)
        assert second is not None, (tmp_path / f"{standby}.log").read_text()
        assert second[1] > first[1]  # the new holder's fence is higher: the dead one's writes would be refused
        assert until(lambda: recorded() == len(ids) and not any((maildir / "new").iterdir()))

        reader.rollback()
        on_timelines = Counter(e.message_id for c in reader.all_cases() for e in c.timeline)
        unmatched = Counter(u["message_id"] for u in reader.unmatched())
        twice = [i for i in ids if on_timelines[i] + unmatched[i] > 1]
        assert twice == [], "recorded twice"
        assert sum(1 for i in ids if on_timelines[i] + unmatched[i] == 1) > len(ids) // 2  # not a vacuous check
        assert len(list((maildir / "cur").iterdir())) == len(ids)  # each mail marked done in the mailbox

        workers[standby].send_signal(signal.SIGTERM)
        assert workers[standby].wait(timeout=15) == 0
        assert holder(observer) is None  # a clean stop releases the lease at once
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        observer.close()
        reader.close()
    log = (tmp_path / f"{standby}.log").read_text()
    assert "Traceback" not in log
    assert f"{standby} holds the lease on mailbox default" in log


def test_a_lost_database_stops_the_instance_until_it_holds_the_lease_again(
        tmp_path: Path, pg_server: Any, pg_store_dsn: str, make_settings: Callable[..., Any],
        caplog: pytest.LogCaptureFixture) -> None:
    from mailbot.leases import LeaseKeeper, connect_dsn
    from mailbot.runner import run_forever
    from mailbot.status import status
    from mailbot.wiring import make_service

    settings = make_settings(bot={"parse_workers": 1, "instance_name": "solo"}, mailbox={"poll_seconds": 1},
                             followup={"sweep_seconds": 1}, store={"kind": "postgresql", "lease_seconds": 1})
    mails = [m.raw for m in generate(messages=2, threads=1, seed=5)]
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    store = PostgresStore(pg_store_dsn)
    service = make_service(settings, store)
    keeper = LeaseKeeper(connect_dsn(pg_store_dsn, 1.0), "solo", 1.0, "test-host", os.getpid())
    stop = threading.Event()
    runner = threading.Thread(target=run_forever, args=(service, settings), kwargs={"stop": stop, "keeper": keeper})
    name = pg_store_dsn.rsplit("/", 1)[1]
    admin = psycopg.connect(pg_server.dsn, autocommit=True)
    caplog.set_level(logging.INFO, logger="mailbot")
    runner.start()
    try:
        deliver(maildir, mails[0])
        assert until(lambda: len(list((maildir / "cur").iterdir())) == 1)
        with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
            assert until(lambda: status(conn, datetime.now(UTC), 1.0)["mailboxes"][0]["last_ingest"])
            shown = status(conn, datetime.now(UTC), 1.0)
        assert shown["instances"][0]["name"] == "solo" and shown["instances"][0]["mailboxes"] == ["default"]
        assert shown["mailboxes"][0]["leader"] == "solo"

        # The database goes away: no connection is accepted, the open ones are cut.
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        assert until(lambda: "lost the database" in caplog.text)
        deliver(maildir, mails[1])
        time.sleep(3)  # three leases: the instance keeps trying to reconnect, it does not act
        assert len(list((maildir / "new").iterdir())) == 1

        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert until(lambda: len(list((maildir / "cur").iterdir())) == 2)  # back, under the lease again
        assert "reached the database again" in caplog.text
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        stop.set()
        runner.join(timeout=30)
        service.close()
        store.close()
        admin.close()
    assert not runner.is_alive()
    assert caplog.text.count("lost the database") == 1  # one line for the outage, not one per retry


def test_a_single_cycle_runs_only_under_the_lease(tmp_path: Path, pg_store_dsn: str,
                                                  make_settings: Callable[..., Any]) -> None:
    from mailbot.leases import LeaseKeeper, connect_dsn
    from mailbot.runner import run_once_leased
    from mailbot.store.postgresql import lease as leases
    from mailbot.wiring import make_service

    settings = make_settings(bot={"parse_workers": 1}, store={"kind": "postgresql", "lease_seconds": 1})
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    deliver(maildir, generate(messages=1, threads=1, seed=3)[0].raw)
    store = PostgresStore(pg_store_dsn)
    service = make_service(settings, store)
    other = psycopg.connect(pg_store_dsn, autocommit=True)
    try:
        held = leases.acquire(other, "default", "other", 30.0)
        assert held is not None
        keeper = LeaseKeeper(connect_dsn(pg_store_dsn, 1.0), "once", 1.0, "test-host", os.getpid())
        assert run_once_leased(service, settings, datetime.now(UTC), keeper) is None  # the other one works it
        assert len(list((maildir / "new").iterdir())) == 1

        leases.release(other, held)
        keeper = LeaseKeeper(connect_dsn(pg_store_dsn, 1.0), "once", 1.0, "test-host", os.getpid())
        report = run_once_leased(service, settings, datetime.now(UTC), keeper)
        assert report is not None and report.ingested == 1
        assert holder(other) is None  # released after the cycle
    finally:
        service.close()
        store.close()
        other.close()
