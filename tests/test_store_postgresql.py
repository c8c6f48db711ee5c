"""The PostgreSQL engine on a real private cluster: its schema and migrations, one transaction per batch, the
sweep's index, hostile text, and the engine-neutral dump that moves a files store to PostgreSQL and back."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailbot.cli.views import case_json
from mailbot.models import CaseStatus
from mailbot.storage import StoreCorrupt
from mailbot.store import Store
from mailbot.store.dump import dump, dump_lines, load, parse_lines
from mailbot.store.secret import ensure_message_id_secret, message_id_secret
from tests.test_store_port import KEY, OTHER, T0, a_case

psycopg = pytest.importorskip("psycopg")
from mailbot.store.postgresql import SCHEMA_VERSION, PostgresStore, init_schema  # noqa: E402
from mailbot.store.postgresql.schema import MIGRATIONS  # noqa: E402

pytestmark = pytest.mark.postgresql


@pytest.fixture
def store(pg_store_dsn: str) -> Any:
    s = PostgresStore(pg_store_dsn)
    yield s
    s.close()


def other_connection(dsn: str) -> Any:
    return psycopg.connect(dsn, autocommit=True)


def test_schema_init_twice_changes_nothing_and_every_migration_is_recorded(pg_store_dsn: str) -> None:
    with psycopg.connect(pg_store_dsn) as conn:
        assert init_schema(conn) == [v for v, _, _ in MIGRATIONS]
        assert init_schema(conn) == []
        rows = conn.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    assert rows == [(v, d) for v, d, _ in MIGRATIONS] and rows[-1][0] == SCHEMA_VERSION


def test_instances_starting_together_build_the_schema_once(pg_store_dsn: str) -> None:
    applied: list[list[int]] = []

    def start() -> None:
        with psycopg.connect(pg_store_dsn) as conn:
            applied.append(init_schema(conn))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied, key=len) == [[], [], [], [v for v, _, _ in MIGRATIONS]]


def test_a_database_newer_than_this_mailbot_is_refused_untouched(pg_store_dsn: str) -> None:
    PostgresStore(pg_store_dsn).close()
    with other_connection(pg_store_dsn) as conn:
        conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, 'from the future')",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreCorrupt, match="upgrade mailbot"):
        PostgresStore(pg_store_dsn)
    with pytest.raises(StoreCorrupt, match="store init"):
        PostgresStore(pg_store_dsn, init=False)


def test_a_batch_is_invisible_to_others_until_commit_and_lost_on_rollback(store: PostgresStore, pg_store_dsn: str) -> None:
    store.put_case(a_case(due=T0))
    store.remember(f"<{KEY}-1@support.example>", KEY)
    assert store.get_case(KEY) == a_case(due=T0)  # this store sees its own batch at once
    with other_connection(pg_store_dsn) as peer:
        assert peer.execute("SELECT count(*) FROM cases").fetchone() == (0,)
        store.rollback()
        assert store.get_case(KEY) is None and store.seen(f"<{KEY}-1@support.example>") is None
        store.put_case(a_case(due=T0))
        store.remember(f"<{KEY}-1@support.example>", KEY)
        assert store.commit() == 3  # the case, its token, its Message-ID
        assert peer.execute("SELECT key, status, next_kind FROM cases").fetchall() == [
            (KEY, "waiting_customer", "reminder")]
        store.put_case(a_case(due=T0))  # the same case again: no row changes
        assert store.commit() == 0
        store.put_case(a_case(OTHER, tokens=()))
        store.close()  # a connection that goes away loses its open batch
        assert peer.execute("SELECT key FROM cases").fetchall() == [(KEY,)]


def test_a_checkpoint_is_durable_while_the_batch_is_still_open(store: PostgresStore, pg_store_dsn: str) -> None:
    store.put_case(a_case())
    store.set_checkpoint("imap:default:INBOX", {"uidvalidity": 7, "last_uid": 42})
    with other_connection(pg_store_dsn) as peer:
        assert peer.execute("SELECT doc FROM checkpoints WHERE key LIKE 'imap:%'").fetchall() == [
            ({"uidvalidity": 7, "last_uid": 42},)]
        assert peer.execute("SELECT count(*) FROM cases").fetchone() == (0,)


def test_a_failing_fence_rolls_the_batch_back(store: PostgresStore) -> None:
    def fence(conn: Any) -> None:
        raise RuntimeError("lease lost")

    store.fence = fence
    store.put_case(a_case())
    with pytest.raises(RuntimeError, match="lease lost"):
        store.commit()
    store.fence = None
    assert store.get_case(KEY) is None


def test_the_sweep_query_uses_the_partial_due_index(store: PostgresStore) -> None:
    for n in range(300):
        due = T0 + timedelta(hours=n) if n % 3 == 0 else None
        status = CaseStatus.CLOSED if n % 3 == 1 else CaseStatus.WAITING_CUSTOMER
        store.put_case(a_case(f"CAS-{n:05d}-AAAAAA", due=due, status=status, tokens=()))
    store.commit()
    assert store.due_case_keys(T0 + timedelta(hours=9)) == [f"CAS-{n:05d}-AAAAAA" for n in (0, 3, 6, 9)]
    store.conn.execute("ANALYZE cases")
    store.conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in store.conn.execute(
        "EXPLAIN SELECT key FROM cases WHERE mailbox = 'default' AND next_due IS NOT NULL AND next_due <= %s "
        "ORDER BY next_due, key", (T0,)))
    assert "cases_due" in plan


def test_each_mailbox_sweeps_only_its_own_cases(pg_store_dsn: str) -> None:
    sales, support = PostgresStore(pg_store_dsn, mailbox="sales"), PostgresStore(pg_store_dsn, mailbox="support")
    sales.put_case(a_case(KEY, due=T0).with_(mailbox="sales"))
    sales.commit()
    support.put_case(a_case(OTHER, due=T0, tokens=()).with_(mailbox="support"))
    # Threaded by a mail that came in by the other mailbox: the case keeps its own.
    support.put_case(replace(a_case(KEY, due=T0), title="edited by the other instance", mailbox="sales"))
    support.commit()
    assert sales.due_case_keys(T0) == [KEY] and support.due_case_keys(T0) == [OTHER]
    everyone = PostgresStore(pg_store_dsn, mailbox=None)
    assert everyone.due_case_keys(T0) == [KEY, OTHER]
    for s in (sales, support, everyone):
        s.close()


def test_hostile_text_that_postgresql_refuses_comes_back_unchanged(store: PostgresStore) -> None:
    odd = "NUL \x00, undecodable \udce9\udc80, private \ue000 and \ue0000"
    case = replace(a_case(), title=odd)
    store.put_case(case)
    store.outbox_record({"action_id": "a/1", "case": KEY, "recorded": "1", "raw": "Subject: \udce9\r\n"})
    store.outbox_update("a/1", error=odd)
    store.add_unmatched({"message_id": "<odd@x>", "subject": odd})
    store.commit()
    assert store.get_case(KEY) == case
    assert store.outbox_entry("a/1") == {"action_id": "a/1", "case": KEY, "recorded": "1",
                                         "raw": "Subject: \udce9\r\n", "status": "pending", "error": odd}
    assert store.unmatched() == [{"message_id": "<odd@x>", "subject": odd}]


def fill(store: Any) -> None:
    """A store with something of every kind a dump carries."""
    store.put_case(a_case(KEY, due=T0 + timedelta(days=1), tokens=("CMIT:1", "CMIT:2")))
    store.put_case(a_case(OTHER, status=CaseStatus.CLOSED, tokens=("CMIT:3",)))
    store.put_case(a_case("CAS-00003-CCCCCC", tokens=("CMIT:2",)))  # took CMIT:2 over
    store.remember(f"<{KEY}-1@support.example>", KEY)
    store.remember("<spam@x>", "", "unmatched")
    store.add_unmatched({"message_id": "<spam@x>", "subject": "hello", "date": T0.isoformat()})
    store.add_quarantined({"ref": "new/1.eml", "reason": "broken MIME"})
    store.outbox_record({"action_id": f"{KEY}/reminder/1", "case": KEY, "recorded": "2", "raw": "R1\udce9",
                         "not_before": "2026-03-03T01:00"})
    store.outbox_record({"action_id": f"{OTHER}/closure", "case": OTHER, "recorded": "1", "raw": "C"})
    store.outbox_finish(f"{OTHER}/closure", "sent", sent_at="2026-03-02T02:00")
    store.outbox_record({"action_id": f"{OTHER}/receipt", "case": OTHER, "recorded": "1", "raw": "F"})
    store.outbox_finish(f"{OTHER}/receipt", "failed", error="550")
    for hours in (0, 5):
        store.note_send("yang@customer.example", T0 + timedelta(hours=hours))
    store.set_checkpoint("imap:default:INBOX", {"uidvalidity": 7, "last_uid": 42})
    store.commit()


def records(store: Any) -> list[str]:
    return sorted(dump_lines(store))


def test_a_files_store_moves_to_postgresql_and_back_unchanged(tmp_path: Path, store: PostgresStore) -> None:
    files = Store(tmp_path / "files")
    fill(files)
    ensure_message_id_secret(files)  # as `mailbot run` made it; the database made its own at its migration
    assert message_id_secret(store) not in ("", message_id_secret(files))
    lines = list(dump_lines(files))
    assert load(store, parse_lines(lines)) > 0  # tokens come with their cases: their own records change nothing
    assert load(store, parse_lines(lines)) == 0  # loading twice changes nothing
    zone = files.get_case(KEY).timeline[0].date.tzinfo or UTC
    def listed(s: Any) -> list[dict[str, Any]]:  # as `cases --json` prints them (engines list in their own order)
        return sorted((case_json(c, zone) for c in s.all_cases()), key=lambda c: c["key"])

    assert listed(store) == listed(files) and len(listed(store)) == 3
    assert records(store) == records(files)  # the files store's secret came along: its mail keeps its ids
    assert store.case_for_token("CMIT:2") == "CAS-00003-CCCCCC" and store.due_case_keys(T0 + timedelta(days=1)) == [KEY]
    assert [e["action_id"] for e in store.outbox_held(KEY)] == [f"{KEY}/reminder/1"]
    back = Store(tmp_path / "back")
    assert load(back, dump(store)) > 0 and load(back, dump(store)) == 0
    assert records(Store(tmp_path / "back")) == records(files)


def test_a_dump_of_another_format_is_refused_with_one_line(store: PostgresStore) -> None:
    from mailbot.store.dump import DumpError

    with pytest.raises(DumpError, match="line 1: not JSON"):
        load(store, parse_lines(["{nope\n"]))
    with pytest.raises(DumpError, match="record 1: a dump of format 'other'"):
        load(store, [{"kind": "dump", "format": "other", "version": 1}])
    with pytest.raises(DumpError, match="unknown kind 'table'"):
        load(store, [{"kind": "table"}])
    assert store.counts() == {"active": 0, "closed": 0, "unmatched": 0, "quarantined": 0, "pending": 0}


def test_the_first_mailbox_adopts_the_cases_of_a_mailbox_no_longer_configured(pg_store_dsn: str) -> None:
    old = PostgresStore(pg_store_dsn, mailbox="retired")
    old.put_case(a_case(KEY, due=T0).with_(mailbox="retired"))
    old.outbox_record({"action_id": f"{KEY}/reminder/1", "case": KEY, "recorded": "1", "raw": "x"})
    old.commit()
    old.close()
    first, second = PostgresStore(pg_store_dsn, mailbox="sales"), PostgresStore(pg_store_dsn, mailbox="support")
    for store, name in ((first, "sales"), (second, "support")):
        store.outbox_of, store.outbox_unowned = name, store is first
    first.configured = ("sales", "support")
    assert first.due_case_keys(T0) == [KEY] and second.due_case_keys(T0) == []
    assert [e["action_id"] for e in first.outbox_pending()] == [f"{KEY}/reminder/1"]
    assert second.outbox_pending() == []
    for s in (first, second):
        s.close()
