"""Mailbox leases on a real PostgreSQL: one holder at a time by the database's clock, a higher fence for each
new holder, a stale holder's batch refused whole, and the holder's local deadline ahead of the database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mailbot.models import Case, CaseStatus

psycopg = pytest.importorskip("psycopg")

from mailbot.store.postgresql import lease as leases  # noqa: E402
from mailbot.store.postgresql.engine import PostgresStore  # noqa: E402
from mailbot.store.postgresql.lease import Fence, LeaseLost  # noqa: E402
from mailbot.store.postgresql.schema import init_schema  # noqa: E402

BOX = "default"


@pytest.fixture
def connect(pg_store_dsn: str) -> Iterator[Callable[[], Any]]:
    """Autocommit connections to a fresh database with the store's schema; closed after the test."""
    opened: list[Any] = []
    with psycopg.connect(pg_store_dsn) as conn:
        init_schema(conn)

    def make() -> Any:
        conn = psycopg.connect(pg_store_dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def expired_by_database(conn: Any) -> bool:
    row = conn.execute("SELECT expires <= now() FROM leases WHERE mailbox = %s", (BOX,)).fetchone()
    return bool(row and row[0])


def test_a_lease_is_held_renewed_and_taken_over_only_after_it_lapses_by_the_database_clock(connect) -> None:
    a_conn, b_conn, observer = connect(), connect(), connect()
    first = leases.acquire(a_conn, BOX, "a", 1.0)
    assert first is not None and first.holder == "a"
    assert leases.acquire(b_conn, BOX, "b", 1.0) is None  # held: the standby gets nothing
    assert leases.acquire(a_conn, BOX, "a", 1.0) is None  # not even a second process under the same name

    before = first.expires
    renewed = leases.renew(a_conn, first)
    assert renewed is not None and renewed > before  # counted from the database's now, which moved on

    assert until(lambda: expired_by_database(observer))
    second = leases.acquire(b_conn, BOX, "b", 1.0)
    assert second is not None and second.fence > first.fence  # a new holder, a higher fence
    assert leases.renew(a_conn, first) is None  # the old holder cannot renew what it lost
    assert not first.valid()  # and stops acting at once


def test_a_standby_cannot_take_a_lease_its_holder_keeps_renewing(connect) -> None:
    a_conn, b_conn, observer = connect(), connect(), connect()
    held = leases.acquire(a_conn, BOX, "a", 1.0)
    assert held is not None
    attempts = 0
    end = time.monotonic() + 2.5  # well past the lease's length: only renewals keep it
    while time.monotonic() < end:
        leases.renew(a_conn, held)
        for _ in range(3):  # three tries between renewals (the holder renews every third of the lease)
            assert leases.acquire(b_conn, BOX, "b", 1.0) is None
            attempts += 1
            time.sleep(0.1)
    assert attempts >= 15
    assert until(lambda: expired_by_database(observer))  # the holder goes silent
    taken = leases.acquire(b_conn, BOX, "b", 1.0)
    assert taken is not None and taken.fence == held.fence + 1


def test_a_released_lease_is_free_at_once(connect) -> None:
    a_conn, b_conn = connect(), connect()
    held = leases.acquire(a_conn, BOX, "a", 30.0)
    assert held is not None
    assert leases.release(a_conn, held)
    taken = leases.acquire(b_conn, BOX, "b", 30.0)
    assert taken is not None and taken.fence > held.fence
    assert not leases.release(a_conn, held)  # releasing what another holds changes nothing
    assert leases.renew(b_conn, taken) is not None


def test_a_lease_is_takeable_only_when_free_and_asking_never_waits_for_the_holders_batch(connect) -> None:
    a_conn, b_conn = connect(), connect()
    assert leases.takeable(b_conn, BOX)  # never taken
    held = leases.acquire(a_conn, BOX, "a", 1.0)
    assert held is not None and not leases.takeable(b_conn, BOX)
    # The holder's commit holds the lease row (its fence check) until COMMIT: the question is a plain read,
    # answered at once — an acquire would wait for the row, and give up after its lock timeout.
    with a_conn.transaction():
        leases.check_fence(a_conn, BOX, held.fence)
        assert not leases.takeable(b_conn, BOX)
    time.sleep(1.2)
    assert leases.takeable(b_conn, BOX)  # lapsed by the database's clock
    taken = leases.acquire(b_conn, BOX, "b", 30.0)
    assert taken is not None and not leases.takeable(a_conn, BOX)
    assert leases.release(b_conn, taken) and leases.takeable(a_conn, BOX)


def test_the_holder_stops_acting_before_the_database_lets_another_take_over(connect) -> None:
    a_conn, observer = connect(), connect()
    held = leases.acquire(a_conn, BOX, "a", 3.0)
    assert held is not None and held.valid()
    assert until(lambda: not held.valid())
    # The local deadline passed first: the database still counts the lease as held at that moment.
    assert not expired_by_database(observer)


def a_case(key: str) -> Case:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    return Case(key=key, title="Terminals crash", subject="Terminals crash", status=CaseStatus.OPEN,
                language="en", opened=now, last_activity=now)


def test_a_commit_under_a_lost_lease_raises_and_writes_nothing(connect, pg_store_dsn: str) -> None:
    a_conn, b_conn, observer = connect(), connect(), connect()
    held = leases.acquire(a_conn, BOX, "a", 1.0)
    assert held is not None
    store = PostgresStore(pg_store_dsn)
    try:
        store.fence = Fence(BOX, held.fence)
        store.put_case(a_case("CAS-00001-AAAAAA"))
        store.remember("<one@customer.example>", "CAS-00001-AAAAAA")
        store.commit()  # held: the batch lands

        assert until(lambda: expired_by_database(observer))
        store.put_case(a_case("CAS-00002-BBBBBB"))
        store.remember("<two@customer.example>", "CAS-00002-BBBBBB")
        with pytest.raises(LeaseLost, match="expired"):  # lapsed, not yet taken: still refused
            store.commit()

        taken = leases.acquire(b_conn, BOX, "b", 30.0)
        assert taken is not None
        store.put_case(a_case("CAS-00003-CCCCCC"))
        store.remember("<three@customer.example>", "CAS-00003-CCCCCC")
        with pytest.raises(LeaseLost, match="another instance"):
            store.commit()
        store.fence = Fence(BOX, 0)  # never issued: nothing commits before a lease is held
        store.put_case(a_case("CAS-00004-DDDDDD"))
        with pytest.raises(LeaseLost):
            store.commit()
    finally:
        store.close()
    keys = [r[0] for r in observer.execute("SELECT key FROM cases ORDER BY key").fetchall()]
    ids = [r[0] for r in observer.execute("SELECT key FROM message_ids").fetchall()]
    assert keys == ["CAS-00001-AAAAAA"]
    assert len(ids) == 1


def test_a_takeover_waits_for_the_old_holders_batch_in_flight(connect, pg_store_dsn: str) -> None:
    """The fence check locks the lease row: a takeover that starts while the old holder commits lands after
    that batch, so the new holder reads everything the old one wrote."""
    a_conn, b_conn, observer = connect(), connect(), connect()
    held = leases.acquire(a_conn, BOX, "a", 1.0)
    assert held is not None
    raced: list[str] = []

    def check_then_race(conn: Any) -> None:
        Fence(BOX, held.fence)(conn)  # checked: the row is now locked until this transaction ends
        assert until(lambda: expired_by_database(observer))
        with pytest.raises(psycopg.errors.LockNotAvailable):  # the standby cannot take it over mid-commit
            leases.acquire(b_conn, BOX, "b", 1.0)
        raced.append("refused")

    store = PostgresStore(pg_store_dsn)
    try:
        store.fence = check_then_race
        store.put_case(a_case("CAS-00001-AAAAAA"))
        store.commit()
    finally:
        store.close()
    assert raced == ["refused"]
    taken = leases.acquire(b_conn, BOX, "b", 1.0)
    assert taken is not None
    assert observer.execute("SELECT count(*) FROM cases").fetchone()[0] == 1


def test_the_accepted_log_is_shared_so_a_takeover_knows_what_the_old_leaders_server_took(connect,
                                                                                        pg_store_dsn: str) -> None:
    from mailbot.store.postgresql.accepted import SharedAcceptedLog

    old_leader, new_leader = SharedAcceptedLog(pg_store_dsn), SharedAcceptedLog(pg_store_dsn)
    try:
        assert "<r1@support.example>" not in new_leader
        old_leader.add("<r1@support.example>")  # the server's 250, just before the old leader died
        old_leader.add("<r1@support.example>")  # noted twice (a retry): still one fact
        assert "<r1@support.example>" in new_leader
        assert "<r2@support.example>" not in new_leader
    finally:
        old_leader.close()
        new_leader.close()
    assert connect().execute("SELECT count(*) FROM smtp_accepted").fetchone()[0] == 1
