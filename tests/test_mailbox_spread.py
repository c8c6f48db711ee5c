"""Four support mailboxes over several `mailbot run` instances on one PostgreSQL database: each mailbox is
worked by exactly one live instance, two instances share them 2 + 2, a killed instance's mailboxes pass to
the survivor once it stops being live, and a new instance takes its share without anybody restarting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailbot.mailbox.maildir import deliver
from tests.instances import start_instance
from tests.trustlife import mail

psycopg = pytest.importorskip("psycopg")

from mailbot.store.postgresql.engine import PostgresStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAILBOXES = ("m1", "m2", "m3", "m4")


def instance_config(name: str) -> str:
    desks = "".join(f'[mailboxes.{m}]\npath = "{m}"\npoll_seconds = 1\naddress = "support-{m}@support.example"\n'
                    for m in MAILBOXES)
    return f"""
[bot]
address = "casebot@support.example"
state_dir = "state-{name}"
instance_name = "{name}"
parse_workers = 1
[engineers]
domains = ["support.example"]
{desks}
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
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def holders(dsn: str) -> dict[str, str]:
    """mailbox → the instance holding its lease now (by the database's clock)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT mailbox, holder FROM leases WHERE expires > now()").fetchall())


def spread(dsn: str) -> Counter[str]:
    return Counter(holders(dsn).values())


def test_four_mailboxes_are_shared_by_the_live_instances(tmp_path: Path, pg_store_dsn: str) -> None:
    dsn = pg_store_dsn
    PostgresStore(dsn, init=True).close()  # the schema, as `mailbot store init` makes it
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        # Alone, the first instance works every mailbox.
        procs["a"] = start(tmp_path, "a", dsn)
        until(lambda: spread(dsn) == Counter({"a": 4}))

        # A second instance takes its share, handed over by the first without a restart: 2 + 2.
        procs["b"] = start(tmp_path, "b", dsn)
        until(lambda: spread(dsn) == Counter({"a": 2, "b": 2}))
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "mailbot.cli", "status", "--json", "--config", "a.toml"], cwd=tmp_path,
            capture_output=True, text=True, check=True,
            env={**os.environ, "MAILBOT_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}).stdout)
        assert {i["name"]: len(i["mailboxes"]) for i in status["instances"]} == {"a": 2, "b": 2}
        assert sorted(m["name"] for m in status["mailboxes"] if m["leader"]) == list(MAILBOXES)

        # Mail in every mailbox: each opens its case in its own mailbox, whichever instance works it.
        for n, m in enumerate(MAILBOXES):
            deliver(tmp_path / m, mail("liqi@support.example", f"cust{n}@customer.example", "Logs, please.",
                                       "2021-04-15T10:00:00+08:00", subject=f"[Case: CAS-0000{n}-SPREAD ] % disk %",
                                       cc=f"support-{m}@support.example"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            def opened() -> dict[str, str]:
                rows = conn.execute("SELECT key, mailbox FROM cases").fetchall()
                return dict(rows) if len(rows) == len(MAILBOXES) else {}
            cases = until(opened)
        assert cases == {f"CAS-0000{n}-SPREAD": m for n, m in enumerate(MAILBOXES)}

        # The first instance dies without a word: its two mailboxes pass to the survivor once "a" is no longer
        # live (its fair share grows to all four) — and never to two holders at once.
        before = holders(dsn)
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(timeout=10)
        seen: list[dict[str, str]] = []

        def survivor_holds_all() -> bool:
            seen.append(holders(dsn))
            return spread(dsn) == Counter({"b": 4})

        until(survivor_holds_all)
        taken = {m for m, h in before.items() if h == "a"}
        assert len(taken) == 2
        # In between, "b" kept its own two all along, and "a"'s went from "a" (until its leases lapsed) to "b".
        assert all(h.get(m) == "b" for h in seen for m in set(MAILBOXES) - taken)
        assert all(h.get(m) in (None, "a", "b") for h in seen for m in taken)

        # A new instance takes its share from the survivor, which keeps running.
        procs["c"] = start(tmp_path, "c", dsn)
        until(lambda: spread(dsn) == Counter({"b": 2, "c": 2}))
        assert procs["b"].poll() is None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=30) for name, proc in procs.items()}
    assert codes == {"a": -signal.SIGKILL, "b": 0, "c": 0}
    assert holders(dsn) == {}  # a clean stop releases every lease at once


def test_each_instance_sends_the_pending_mail_of_the_mailboxes_it_holds(pg_store_dsn: str) -> None:
    from tests.test_store_port import KEY, OTHER, a_case

    first, second = PostgresStore(pg_store_dsn, mailbox="m1"), PostgresStore(pg_store_dsn, mailbox="m2")
    first.outbox_of, first.outbox_unowned = "m1", True  # as wiring.make_services sets them: m1 comes first
    second.outbox_of, second.outbox_unowned = "m2", False
    first.put_case(a_case(KEY).with_(mailbox="m1"))
    first.put_case(a_case(OTHER, tokens=()).with_(mailbox="m2"))
    for action, case in (("a-m1", KEY), ("a-m2", OTHER), ("a-none", "-")):
        first.outbox_record({"action_id": action, "case": case, "kind": "reminder", "message_id": f"<{action}@x>",
                             "recipients": ["c@customer.example"], "raw": "", "recorded": "2021-04-15T10:00:00"})
    first.commit()
    assert [e["action_id"] for e in first.outbox_pending()] == ["a-m1", "a-none"]  # mail outside a case: m1's
    assert [e["action_id"] for e in second.outbox_pending()] == ["a-m2"]
    everyone = PostgresStore(pg_store_dsn, mailbox="m1")  # one mailbox: every pending mail, as it always was
    assert [e["action_id"] for e in everyone.outbox_pending()] == ["a-m1", "a-m2", "a-none"]
    for s in (first, second, everyone):
        s.close()


def test_one_cycle_asks_for_every_mailbox_lease_at_once(tmp_path: Path, pg_store_dsn: str) -> None:
    """`run --once` over four mailboxes while another instance holds two: the free two are worked at once, and a
    lease given up while they ran is taken and worked in the same wait — not after waiting on each held
    mailbox in turn. The one still held is named, its mail left for its holder."""
    from mailbot.store.postgresql import lease as leases

    dsn = pg_store_dsn
    PostgresStore(dsn, init=True).close()
    (tmp_path / "once.toml").write_text(instance_config("once").replace("lease_seconds = 1", "lease_seconds = 3"),
                                        encoding="utf-8")
    for n, m in enumerate(MAILBOXES):
        deliver(tmp_path / m, mail("liqi@support.example", f"cust{n}@customer.example", "Logs, please.",
                                   "2021-04-15T10:00:00+08:00", subject=f"[Case: CAS-0000{n}-ONCE00 ] % disk %",
                                   cc=f"support-{m}@support.example"))
    with psycopg.connect(dsn, autocommit=True) as other:
        held = {m: leases.acquire(other, m, "other", 60.0) for m in ("m1", "m2")}
        assert all(held.values())
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailbot.cli", "run", "--once", "--json", "--config", "once.toml",
             "--now", "2021-04-15T10:10:00+08:00"], cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "MAILBOT_DATABASE_URL": dsn,
                                                     "PYTHONPATH": str(ROOT)})
        until(lambda: other.execute("SELECT count(*) FROM cases").fetchone()[0] >= 1)  # a free mailbox worked
        leases.release(other, held["m1"])  # m1's holder stops: the waiting cycle takes m1 too
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        cases = dict(other.execute("SELECT key, mailbox FROM cases").fetchall())
    assert cases == {f"CAS-0000{n}-ONCE00": m for n, m in enumerate(MAILBOXES) if m != "m2"}
    # --json: stdout is the JSON alone (INTERFACE.md); the note on the held mailbox goes to stderr.
    assert "another instance holds the lease of mailbox m2: nothing done there (see `mailbot status`)" in err
    assert json.loads(out)["ingested"] == 3
    assert holders(dsn) == {"m2": "other"}  # the cycle gave back every lease it took
    with psycopg.connect(dsn, autocommit=True) as conn:  # and noted its ingest for `mailbot status`, as `run` does
        noted = dict(conn.execute("SELECT mailbox, last_ingest IS NOT NULL FROM leases").fetchall())
    assert noted == {"m1": True, "m2": False, "m3": True, "m4": True}
