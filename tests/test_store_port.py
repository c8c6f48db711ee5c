"""One suite for the store port, run on every engine: a case's life as the store sees it must not depend on
where the store keeps it. `reopen` gives what a second look (a restart, another instance) sees after commit;
`crash` throws away what was not committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, NextAction, Role, TimelineEntry
from mailbot.store import Store
from mailbot.store.memory import MemoryStore
from mailbot.store.port import StorePort

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
KEY = "CAS-04027-B7D2Z5"
OTHER = "CAS-04028-C8E3A6"


def a_case(key: str = KEY, due: datetime | None = None, status: CaseStatus = CaseStatus.WAITING_CUSTOMER,
           tokens: tuple[str, ...] = ("CMIT:0001247",)) -> Case:
    timeline = (
        TimelineEntry(f"<{key}-1@support.example>", T0, "liqi@support.example", Role.ENGINEER, EntryKind.MAIL,
                      "in", "请收集日志并上传。", f"[案例号: {key} ] % 终端蓝屏 %"),
    )
    return Case(
        key=key, title="终端蓝屏", subject=f"[案例号: {key} ] % 终端蓝屏 %", status=status, language="zh-CN",
        opened=T0, last_activity=T0, tracking_tokens=tokens, customers=("yang@customer.example",),
        engineers=("liqi@support.example",), contact_names=(("yang@customer.example", "杨先生"),),
        timeline=timeline, next_action=None if due is None else NextAction("reminder", due), last_engineer_mail=T0,
        closure=ClosureFields("蓝屏", "驱动", "已更新") if status == CaseStatus.CLOSED else None,
    )


@dataclass
class Engine:
    store: StorePort
    reopen: Callable[[], StorePort]  # a fresh look at what was committed
    crash: Callable[[], StorePort]  # a fresh look after losing the uncommitted batch


def _files(tmp_path: Path) -> Engine:
    root = tmp_path / "store"
    return Engine(Store(root), lambda: Store(root), lambda: Store(root))


def _memory() -> Engine:
    store = MemoryStore()

    def crash() -> StorePort:
        store.rollback()
        return store

    return Engine(store, lambda: store, crash)


ENGINES: dict[str, Callable[..., Engine]] = {"files": _files, "memory": lambda tmp_path: _memory()}


def _postgresql_engine(request: pytest.FixtureRequest) -> Engine:
    from mailbot.store.postgresql import PostgresStore  # needs psycopg; only asked for with a cluster

    dsn = request.getfixturevalue("pg_store_dsn")
    first = PostgresStore(dsn)
    request.addfinalizer(first.close)

    def fresh() -> StorePort:
        store = PostgresStore(dsn)
        request.addfinalizer(store.close)
        return store

    def crash() -> StorePort:
        first.close()  # a connection that goes away rolls its open transaction back
        return fresh()

    return Engine(first, fresh, crash)


def _engine_params() -> Iterator[object]:
    yield "files"
    yield "memory"
    try:
        import mailbot.store.postgresql  # noqa: F401
    except ImportError:
        return
    yield pytest.param("postgresql", marks=pytest.mark.postgresql)


@pytest.fixture(params=list(_engine_params()))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "postgresql":
        return _postgresql_engine(request)
    return ENGINES[request.param](tmp_path)


def test_every_engine_serves_the_whole_port(engine: Engine) -> None:
    assert isinstance(engine.store, StorePort)


def test_an_opened_case_is_found_by_key_token_and_message_after_commit(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case())
    store.remember(f"<{KEY}-1@support.example>", KEY)
    assert store.get_case(KEY) == a_case()  # the batch sees its own writes at once
    store.commit()
    again = engine.reopen()
    assert again.get_case(KEY) == a_case()
    assert again.case_for_token("CMIT:0001247") == KEY
    assert again.case_for_message(f"<{KEY}-1@support.example>") == KEY
    assert again.seen(f"<{KEY}-1@support.example>") == {"case": KEY, "place": "case"}
    assert again.get_case(OTHER) is None and again.case_for_message("<nobody@x>") is None


def test_a_crash_before_commit_loses_the_whole_batch_and_nothing_else(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case())
    store.commit()
    store.put_case(replace(a_case(), title="changed"))
    store.put_case(a_case(OTHER, tokens=()))
    store.remember("<new@customer.example>", OTHER)
    store.outbox_record({"action_id": f"{KEY}/reminder/1", "case": KEY, "recorded": "1"})
    after = engine.crash()
    assert after.get_case(KEY) == a_case()
    assert after.get_case(OTHER) is None and after.seen("<new@customer.example>") is None
    assert after.outbox_entry(f"{KEY}/reminder/1") is None


def test_the_sweep_reads_only_open_cases_that_are_due_soonest_first(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case(KEY, due=T0 + timedelta(days=2)))
    store.put_case(a_case(OTHER, due=T0 + timedelta(days=1), tokens=()))
    store.put_case(a_case("CAS-00001-AAAAAA", due=T0 + timedelta(days=1), status=CaseStatus.CLOSED, tokens=()))
    store.commit()
    store = engine.reopen()
    assert store.due_case_keys(T0) == []
    assert store.due_case_keys(T0 + timedelta(days=1)) == [OTHER]
    assert store.due_case_keys(T0 + timedelta(days=3)) == [OTHER, KEY]
    assert [c.key for c in store.active_cases()] and {c.key for c in store.active_cases()} == {KEY, OTHER}
    assert [c.key for c in store.all_cases()][-1] == "CAS-00001-AAAAAA"  # closed ones after the open ones


def test_a_closed_case_leaves_the_sweep_and_keeps_its_history(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case(due=T0))
    store.commit()
    store.put_case(a_case(status=CaseStatus.CLOSED))
    store.commit()
    store = engine.reopen()
    assert store.due_case_keys(T0 + timedelta(days=30)) == []
    assert [c.key for c in store.active_cases()] == []
    closed = store.get_case(KEY)
    assert closed is not None and closed.status == CaseStatus.CLOSED and closed.closure is not None
    assert store.counts()["closed"] == 1 and store.counts()["active"] == 0


def test_a_token_points_to_the_case_that_gained_it_last(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case(KEY, tokens=("CMIT:1",)))
    store.put_case(a_case(OTHER, tokens=("CMIT:1",)))
    store.put_case(a_case(KEY, tokens=("CMIT:1",)))  # KEY had it already: it does not take it back
    store.commit()
    assert engine.reopen().case_for_token("CMIT:1") == OTHER


def test_an_outgoing_mail_is_pending_until_sent_and_a_sent_one_keeps_no_bytes(engine: Engine) -> None:
    store = engine.store
    action = f"{KEY}/reminder/1"
    store.outbox_record({"action_id": action, "case": KEY, "recorded": "2026-03-02T01:00", "raw": "bytes"})
    store.outbox_record({"action_id": f"{KEY}/closure", "case": KEY, "recorded": "2026-03-02T00:00",
                         "not_before": "2026-03-03T01:00", "raw": "later"})
    store.outbox_update(action, attempts=1)
    store.commit()
    store = engine.reopen()
    assert [e["action_id"] for e in store.outbox_pending()] == [f"{KEY}/closure", action]  # oldest first
    assert [e["action_id"] for e in store.outbox_held(KEY)] == [f"{KEY}/closure"]
    assert store.outbox_held(OTHER) == []
    assert store.outbox_entry(action) == {"action_id": action, "case": KEY, "recorded": "2026-03-02T01:00",
                                          "raw": "bytes", "status": "pending", "attempts": 1}
    store.outbox_finish(action, "sent", sent_at="2026-03-02T01:01")
    store.outbox_finish(f"{KEY}/closure", "failed", error="550 no such user")
    store.outbox_finish("unknown/action", "sent")  # ignored
    store.outbox_update(action, attempts=2)  # a finished entry is not changed any more
    store.commit()
    store = engine.reopen()
    sent = store.outbox_entry(action)
    assert sent is not None and sent["status"] == "sent" and "raw" not in sent and sent["attempts"] == 1
    failed = store.outbox_entry(f"{KEY}/closure")
    assert failed is not None and failed["status"] == "failed" and failed["raw"] == "later"
    assert store.outbox_pending() == [] and store.outbox_entry("unknown/action") is None
    assert sorted(e["action_id"] for e in store.outbox_entries()) == sorted([action, f"{KEY}/closure"])


def test_the_daily_cap_counts_sends_per_recipient_since_a_time(engine: Engine) -> None:
    store = engine.store
    for hours in (0, 1, 25):
        store.note_send("yang@customer.example", T0 + timedelta(hours=hours))
    store.commit()
    store = engine.reopen()
    assert store.sends_since("yang@customer.example", T0 + timedelta(hours=1)) == 2
    assert store.sends_since("yang@customer.example", T0 + timedelta(days=2)) == 0
    assert store.sends_since("other@customer.example", T0) == 0


def test_unmatched_and_quarantined_mail_are_kept_until_requeued(engine: Engine) -> None:
    store = engine.store
    store.add_unmatched({"message_id": "<a@x>", "subject": "no case here"})
    store.add_quarantined({"ref": "new/1.eml", "reason": "broken MIME"})
    store.add_quarantined({"ref": "new/2.eml", "reason": "too big"})
    store.commit()
    store = engine.reopen()
    assert store.unmatched() == [{"message_id": "<a@x>", "subject": "no case here"}]
    assert sorted(q["ref"] for q in store.quarantined()) == ["new/1.eml", "new/2.eml"]
    assert store.remove_quarantined("new/1.eml") and not store.remove_quarantined("new/9.eml")
    store.commit()
    assert [q["ref"] for q in engine.reopen().quarantined()] == ["new/2.eml"]
    assert engine.reopen().counts()["quarantined"] == 1 and engine.reopen().counts()["unmatched"] == 1


def test_a_checkpoint_is_durable_at_once_even_when_the_batch_is_lost(engine: Engine) -> None:
    store = engine.store
    store.put_case(a_case())
    store.set_checkpoint("imap:INBOX", {"uidvalidity": 7, "last_uid": 42})
    after = engine.crash()
    assert after.get_checkpoint("imap:INBOX") == {"uidvalidity": 7, "last_uid": 42}
    assert after.get_checkpoint("imap:Other") is None
    assert after.get_case(KEY) is None


def test_looking_ahead_changes_no_answer(engine: Engine) -> None:
    """`prefetch` is a hint: what seen, case_for_message and outbox_held say after it is what they said
    before, and writes of the same batch show in them."""
    store = engine.store
    store.put_case(a_case())
    store.remember("<old@customer.example>", KEY)
    store.outbox_record({"action_id": f"{KEY}/closure", "case": KEY, "recorded": "1", "not_before": "2026-03-03"})
    store.commit()
    store = engine.reopen()
    store.prefetch(["<old@customer.example>", "<new@customer.example>", "<reply@customer.example>"],
                   [KEY, OTHER])
    assert store.get_case(KEY) == a_case() and store.get_case(OTHER) is None
    assert store.seen("<old@customer.example>") == {"case": KEY, "place": "case"}
    assert store.seen("<new@customer.example>") is None and store.case_for_message("<new@customer.example>") is None
    assert store.case_for_message("<old@customer.example>") == KEY
    assert [e["action_id"] for e in store.outbox_held(KEY)] == [f"{KEY}/closure"]
    assert store.outbox_held(OTHER) == []
    store.remember("<new@customer.example>", OTHER)  # the To and the Cc copy: the second is a duplicate
    store.outbox_record({"action_id": f"{OTHER}/closure", "case": OTHER, "recorded": "2", "not_before": "2026-03-04"})
    assert store.seen("<new@customer.example>") == {"case": OTHER, "place": "case"}
    assert store.case_for_message("<new@customer.example>") == OTHER
    assert [e["action_id"] for e in store.outbox_held(OTHER)] == [f"{OTHER}/closure"]
    store.put_case(a_case(OTHER, tokens=()))  # a case opened in the batch: read ahead as absent, now there
    assert store.get_case(OTHER) == a_case(OTHER, tokens=())
    store.commit()
    assert engine.reopen().seen("<new@customer.example>") == {"case": OTHER, "place": "case"}


def test_bulk_reads_answer_what_one_read_a_key_answers(engine: Engine) -> None:
    """A load reads a chunk of records at once; over several commits (the files engine keeps each commit's ids
    as a run, a newer run overriding an older one) the answers are the one-key reads' answers."""
    store = engine.store
    store.put_case(a_case())
    store.remember("<first@customer.example>", KEY)
    store.remember("<moved@customer.example>", KEY)
    store.outbox_record({"action_id": f"{KEY}/r1", "case": KEY, "recorded": "1"})
    store.commit()
    store.put_case(a_case(OTHER, tokens=("CMIT:0001248",)))
    store.remember("<moved@customer.example>", OTHER, place="case")
    store.remember("<spam@elsewhere.example>", "", place="unmatched")
    store.outbox_finish(f"{KEY}/r1", "sent")
    store.outbox_record({"action_id": f"{OTHER}/r1", "case": OTHER, "recorded": "2"})
    store.commit()
    store = engine.reopen()
    ids = ["<first@customer.example>", "<moved@customer.example>", "<spam@elsewhere.example>", "<none@x.example>"]
    tokens = ["CMIT:0001247", "CMIT:0001248", "CMIT:9999999"]
    actions = [f"{KEY}/r1", f"{OTHER}/r1", f"{KEY}/r9"]
    keys = [KEY, OTHER, "CAS-00000-NOPE00"]
    expected = (
        {k: store.get_case(k) for k in keys if store.get_case(k) is not None},
        {m: store.seen(m) for m in ids if store.seen(m) is not None},
        {t: store.case_for_token(t) for t in tokens if store.case_for_token(t) is not None},
        {a: store.outbox_entry(a) for a in actions if store.outbox_entry(a) is not None},
    )
    assert expected[1]["<moved@customer.example>"] == {"case": OTHER, "place": "case"}
    assert expected[3][f"{KEY}/r1"]["status"] == "sent" and len(expected[0]) == 2
    fresh = engine.reopen()  # nothing cached by the one-key reads
    assert (fresh.get_cases(keys), fresh.seen_many(ids), fresh.cases_for_tokens(tokens),
            fresh.outbox_entries_for(actions)) == expected
    fresh.remember("<none@x.example>", KEY)  # a write of the batch shows in a bulk read after it
    assert fresh.seen_many(["<none@x.example>"]) == {"<none@x.example>": {"case": KEY, "place": "case"}}


def test_a_message_id_keeps_the_digest_of_its_mail_and_a_dump_carries_it(engine: Engine) -> None:
    from mailbot.store.dump import dump, load
    from mailbot.store.memory import MemoryStore

    store = engine.store
    store.put_case(a_case())
    store.remember("<reply@customer.example>", KEY, digest="0f3a9c")
    store.remember("<out@support.example>", KEY, "out")  # the bot's own mail: no digest
    store.commit()
    again = engine.reopen()
    assert again.seen("<reply@customer.example>") == {"case": KEY, "place": "case", "digest": "0f3a9c"}
    assert again.seen("<out@support.example>") == {"case": KEY, "place": "out"}
    assert again.seen_many(["<reply@customer.example>"])["<reply@customer.example>"]["digest"] == "0f3a9c"
    copy = MemoryStore()
    assert load(copy, dump(again)) > 0 and load(copy, dump(again)) == 0
    assert copy.seen("<reply@customer.example>") == {"case": KEY, "place": "case", "digest": "0f3a9c"}
