"""The store, on disk and as its in-memory twin: the same behaviour, plus what only the disk can show —
reopening, atomic commits, corrupt files kept, crashes mid-write, and a layout where a write stays small."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tinydb import TinyDB

import mailbot.storage as storage_mod
import mailbot.store.files as store_mod
import mailbot.store.files.runs as runs_mod
import mailbot.store.files.tables as tables_mod
from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, NextAction, Role, TimelineEntry
from mailbot.store import Store, StoreCorrupt

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def case(key: str, status: CaseStatus = CaseStatus.WAITING_CUSTOMER, due: datetime | None = None,
         entries: int = 2, tokens: tuple[str, ...] = (), text: str = "请收集日志并上传。") -> Case:
    timeline = tuple(
        TimelineEntry(f"<{key}-{i}@support.example>", T0 + timedelta(hours=i), "liqi@support.example",
                      Role.ENGINEER if i % 2 == 0 else Role.CUSTOMER, EntryKind.MAIL, "in", f"{text} {i}",
                      f"[案例号: {key} ] % 标题 %")
        for i in range(entries))
    return Case(
        key=key, title="终端蓝屏", subject=f"[案例号: {key} ] % 终端蓝屏 %", status=status, language="zh-CN",
        opened=T0, last_activity=T0 + timedelta(hours=entries), tracking_tokens=tokens,
        customers=("yang@customer.example",), engineers=("liqi@support.example",),
        contact_names=(("yang@customer.example", "杨先生"),), timeline=timeline,
        next_action=None if due is None else NextAction("reminder", due),
        last_engineer_mail=T0, closure=ClosureFields("p", "a", "s") if status == CaseStatus.CLOSED else None,
    )


def key(n: int) -> str:
    return f"CAS-{n:05d}-ABC{n % 1000:03d}"


@pytest.fixture(params=["memory", "disk"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "store"


def reopen(store: Store) -> Store:
    """After a commit: a fresh store from disk (the twin stays the same object: it has no disk)."""
    return store if store.root is None else Store(store.root)


def files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


# --- the same behaviour on disk and in memory ----------------------------------------------------------


def test_cases_live_in_the_active_or_the_closed_partition(root: Path | None) -> None:
    store = Store(root)
    assert store.get_case(key(1)) is None
    open_case = case(key(1), tokens=("CMIT:0000001",))
    store.put_case(open_case)
    store.put_case(case(key(2), CaseStatus.CLOSED))
    assert store.get_case(key(1)) == open_case
    store.commit()
    store = reopen(store)
    assert store.get_case(key(1)) == open_case
    assert store.get_case(key(2)).status == CaseStatus.CLOSED
    assert [c.key for c in store.active_cases()] == [key(1)]
    assert sorted(c.key for c in store.all_cases()) == [key(1), key(2)]
    assert store.counts()["active"] == 1 and store.counts()["closed"] == 1
    # Closing moves a case to the closed partition; a customer's late reply reopens it.
    store.put_case(open_case.with_(status=CaseStatus.CLOSED, next_action=None))
    store.commit()
    store = reopen(store)
    assert list(store.active_cases()) == [] and store.get_case(key(1)).status == CaseStatus.CLOSED
    store.put_case(open_case.with_(status=CaseStatus.WAITING_ENGINEER))
    store.commit()
    store = reopen(store)
    assert [c.key for c in store.active_cases()] == [key(1)]
    assert store.get_case(key(1)).status == CaseStatus.WAITING_ENGINEER
    assert store.counts()["closed"] == 1


def test_the_due_index_lists_open_cases_whose_next_action_is_due_soonest_first(root: Path | None) -> None:
    store = Store(root)
    store.put_case(case(key(1), due=T0 + timedelta(days=3)))
    store.put_case(case(key(2), due=T0 + timedelta(days=1)))
    store.put_case(case(key(3), due=T0 + timedelta(days=9)))
    store.put_case(case(key(4)))  # nothing planned
    store.put_case(case(key(5), CaseStatus.CLOSED, due=T0))  # closed cases are never due
    store.commit()
    store = reopen(store)
    now = T0 + timedelta(days=5)
    assert store.due_case_keys(now) == [key(2), key(1)]
    # Any offset: instants are compared, not strings.
    assert store.due_case_keys(now.astimezone(datetime.now().astimezone().tzinfo)) == [key(2), key(1)]
    store.put_case(store.get_case(key(2)).with_(next_action=None))
    store.put_case(store.get_case(key(1)).with_(status=CaseStatus.CLOSED))
    store.commit()
    assert reopen(store).due_case_keys(now) == []


def test_the_message_index_threads_and_deduplicates(root: Path | None) -> None:
    store = Store(root)
    store.put_case(case(key(1), tokens=("CMIT:0000001",)))
    store.remember("<a@x>", key(1))
    store.remember("<b@x>", "", "unmatched")
    assert store.seen("<a@x>") == {"case": key(1), "place": "case"}
    store.commit()
    store = reopen(store)
    assert store.case_for_message("<a@x>") == key(1)
    assert store.case_for_message("<b@x>") is None  # recorded, but not in a case
    assert store.seen("<b@x>") == {"case": "", "place": "unmatched"}
    assert store.seen("<never@x>") is None and store.case_for_message("<never@x>") is None
    assert store.case_for_token("CMIT:0000001") == key(1)
    assert store.case_for_token("CMIT:9999999") is None
    # A token that moves to another case follows it.
    store.put_case(case(key(2), tokens=("CMIT:0000001",)))
    store.commit()
    assert reopen(store).case_for_token("CMIT:0000001") == key(2)


def test_unmatched_and_quarantined_mail(root: Path | None) -> None:
    store = Store(root)
    store.add_unmatched({"message_id": "<u@x>", "subject": "hello", "reason": "no case key"})
    store.add_quarantined({"ref": "1.M1.host", "reason": "no mail headers found", "size": 3})
    store.commit()
    store = reopen(store)
    assert store.unmatched() == [{"message_id": "<u@x>", "subject": "hello", "reason": "no case key"}]
    assert store.quarantined() == [{"ref": "1.M1.host", "reason": "no mail headers found", "size": 3}]
    assert store.remove_quarantined("1.M1.host")  # `mailbot requeue`
    assert not store.remove_quarantined("1.M1.host")  # already gone
    store.commit()
    assert reopen(store).quarantined() == []
    assert reopen(store).counts()["unmatched"] == 1


def test_the_outbox_ledger_records_then_finishes(root: Path | None) -> None:
    store = Store(root)
    entry = {"action_id": f"{key(1)}/reminder/1", "case": key(1), "message_id": "<r1@bot>", "raw": "RAW",
             "text": "提醒", "subject": "s", "recorded": T0.isoformat(), "attempts": 0}
    store.outbox_record(entry)
    store.outbox_record({**entry, "action_id": "early", "recorded": (T0 - timedelta(hours=1)).isoformat()})
    store.commit()
    store = reopen(store)
    assert [e["action_id"] for e in store.outbox_pending()] == ["early", f"{key(1)}/reminder/1"]
    assert store.outbox_entry(f"{key(1)}/reminder/1")["status"] == "pending"
    store.outbox_update(f"{key(1)}/reminder/1", attempts=1)
    store.commit()
    store = reopen(store)
    assert store.outbox_entry(f"{key(1)}/reminder/1")["attempts"] == 1
    store.outbox_finish(f"{key(1)}/reminder/1", "sent", sent=T0.isoformat())
    store.outbox_finish("early", "failed", error="550 no such user")
    store.commit()
    store = reopen(store)
    assert store.outbox_pending() == []
    sent = store.outbox_entry(f"{key(1)}/reminder/1")
    assert sent["status"] == "sent" and sent["attempts"] == 1 and "raw" not in sent and sent["text"] == "提醒"
    failed = store.outbox_entry("early")
    assert failed["status"] == "failed" and failed["raw"] == "RAW"  # kept: it may be sent again by hand
    store.outbox_update("early", attempts=5)  # only pending entries are updated
    assert store.outbox_entry("early")["attempts"] == 0
    store.outbox_finish("unknown", "sent")
    assert store.outbox_entry("unknown") is None
    assert store.counts()["pending"] == 0


def test_the_daily_cap_counts_recent_sends(root: Path | None) -> None:
    store = Store(root)
    for hours in (1, 20, 30):
        store.note_send("yang@customer.example", T0 + timedelta(hours=hours))
    store.commit()
    store = reopen(store)
    assert store.sends_since("yang@customer.example", T0 + timedelta(hours=10)) == 2
    assert store.sends_since("other@customer.example", T0) == 0


def test_checkpoints_are_written_at_once(root: Path | None) -> None:
    store = Store(root)
    assert store.get_checkpoint("imap:INBOX") is None
    store.set_checkpoint("imap:INBOX", {"folder": "INBOX", "uidvalidity": 7, "last_uid": 42})
    again = reopen(store)  # no commit needed
    assert again.get_checkpoint("imap:INBOX") == {"folder": "INBOX", "uidvalidity": 7, "last_uid": 42}


# --- only the disk ------------------------------------------------------------------------------------


def test_nothing_is_persisted_without_commit(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.put_case(case(key(1)))
    store.remember("<a@x>", key(1))
    store.outbox_record({"action_id": "a", "case": key(1), "recorded": T0.isoformat()})
    store.add_unmatched({"message_id": "<u@x>"})
    assert not root.exists()
    store.commit()
    store.put_case(case(key(2)))
    store.remember("<b@x>", key(2))
    fresh = Store(root)
    assert fresh.get_case(key(1)) is not None and fresh.get_case(key(2)) is None
    assert fresh.seen("<b@x>") is None
    assert not (root / "journal.json").exists()


def test_a_commit_without_changes_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.put_case(case(key(1)))
    store.commit()
    before = files(tmp_path / "store")
    store.put_case(case(key(1)))  # the same case again
    store.remember(f"<{key(1)}-0@support.example>", key(1))
    store.remember(f"<{key(1)}-0@support.example>", key(1))
    store.commit()
    store.commit()
    # The id is new (1 run), the case is unchanged: only the index was written.
    changed = {p for p, stat in files(tmp_path / "store").items() if before.get(p) != stat}
    assert changed and all(p.startswith("ids/") for p in changed)
    before = files(tmp_path / "store")
    store.remember(f"<{key(1)}-0@support.example>", key(1))
    assert store.commit() == 0
    assert files(tmp_path / "store") == before


def test_shards_are_plain_tinydb_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.put_case(case(key(1)))
    store.remember("<a@x>", key(1))
    store.commit()
    shard = next((tmp_path / "store" / "active").glob("*.json"))
    with TinyDB(shard, access_mode="r") as db:
        [doc] = db.all()
    assert doc["key"] == key(1) and doc["_k"] == key(1) and doc.doc_id == 1
    parts = [p for p in (tmp_path / "store" / "ids").glob("r*.json") if ".fp." not in p.name]
    ids = {}
    for part in parts:
        with TinyDB(part, access_mode="r") as db:
            ids.update({d["_k"]: d for d in db.all()})
    assert ids["<a@x>"]["case"] == key(1) and ids["case:" + key(1)]["place"] == "active"


def test_a_corrupt_shard_is_kept_and_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.put_case(case(key(1)))
    store.commit()
    shard = next((root / "active").glob("*.json"))
    shard.write_bytes(b'{"_default": {"1": {"key": "CAS-')  # a torn write by some other tool
    store = Store(root)  # shards are read lazily: the damage shows when the case is needed
    with pytest.raises(StoreCorrupt) as caught:
        store.get_case(key(1))
    message = str(caught.value)
    assert str(shard) in message and "not valid JSON" in message and "will not overwrite" in message
    [copy] = shard.parent.glob(shard.name + ".corrupt-*")
    assert str(copy) in message and copy.read_bytes() == shard.read_bytes()
    # Once a file was found corrupt, the store refuses to write anything at all.
    store.put_case(case(key(2)))
    with pytest.raises(StoreCorrupt, match="not writing anything"):
        store.commit()
    assert shard.read_bytes() == b'{"_default": {"1": {"key": "CAS-'
    assert Store(root).get_case(key(2)) is None


@pytest.mark.parametrize("damage", [b"", b"[1, 2]", b"\xff\xfe not utf-8", b'{"_default": []}'])
def test_every_kind_of_damage_is_reported(tmp_path: Path, damage: bytes) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.put_case(case(key(1)))
    store.commit()
    (root / "checkpoints.json").write_bytes(damage)
    with pytest.raises(StoreCorrupt, match="checkpoints.json is not valid JSON"):
        Store(root).get_checkpoint("imap:INBOX")
    (root / "journal.json").write_bytes(b"{")
    with pytest.raises(StoreCorrupt, match="journal.json"):
        Store(root)


def test_a_store_of_another_layout_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.put_case(case(key(1)))
    store.commit()
    layout = json.loads((root / "layout.json").read_text())
    layout["_default"]["1"]["version"] = 99
    (root / "layout.json").write_text(json.dumps(layout))
    with pytest.raises(StoreCorrupt, match="layout 99"):
        Store(root)
    old = tmp_path / "old"
    (old / "active").mkdir(parents=True)
    (old / "active" / "000.json").write_text('{"_default": {}}')
    with pytest.raises(StoreCorrupt, match="older mailbot"):
        Store(old)


def _batch_with_three_cases(root: Path) -> Store:
    store = Store(root)
    for n in (1, 2, 3):
        store.put_case(case(key(n), tokens=(f"CMIT:000000{n}",)))
        store.remember(f"<m{n}@x>", key(n))
    store.commit()
    store = Store(root)
    for n in (1, 2, 3):
        store.put_case(store.get_case(key(n)).with_(notes=("second version",), status=CaseStatus.CLOSED))
        store.remember(f"<second-{n}@x>", key(n))
    store.outbox_record({"action_id": "x", "case": key(1), "recorded": T0.isoformat()})
    return store


def _state(root: Path) -> tuple:
    s = Store(root)
    return (tuple(s.get_case(key(n)).notes for n in (1, 2, 3)),
            tuple(s.get_case(key(n)).status for n in (1, 2, 3)),
            tuple(s.seen(f"<second-{n}@x>") is not None for n in (1, 2, 3)),
            s.outbox_entry("x") is not None, [c.key for c in s.active_cases()])


OLD = (((), (), ()), (CaseStatus.WAITING_CUSTOMER,) * 3, (False,) * 3, False, sorted([key(1), key(2), key(3)]))
NEW = ((("second version",),) * 3, (CaseStatus.CLOSED,) * 3, (True,) * 3, True, [])


class PowerCut(BaseException):
    """Stands for a crash: nothing after it runs, and the process's memory is gone."""


@pytest.mark.parametrize("failing", ["fsync", "syncfs"])
def test_a_crash_before_the_journal_is_in_place_keeps_the_old_state(tmp_path: Path, monkeypatch, failing) -> None:
    root = tmp_path / "store"
    store = _batch_with_three_cases(root)

    def cut(*args: object) -> None:
        raise PowerCut

    if failing == "fsync":
        monkeypatch.setattr(storage_mod, "SYNCFS_FROM", 10**9)  # small batches: fsync file by file
        monkeypatch.setattr(os, "fsync", cut)
    else:
        monkeypatch.setattr(storage_mod, "SYNCFS_FROM", 1)
        monkeypatch.setattr(storage_mod, "_SYNCFS", lambda fd: (_ for _ in ()).throw(PowerCut()))
    with pytest.raises(PowerCut):
        store.commit()
    monkeypatch.undo()
    ordered = [sorted(x) if isinstance(x, list) else x for x in _state(root)]
    assert ordered == list(OLD)
    assert not list(root.rglob(".*.tmp"))  # temp files of the failed batch are cleaned up


@pytest.mark.parametrize("survivors", [0, 1, 3, 6])
def test_a_crash_among_the_renames_is_all_or_nothing(tmp_path: Path, monkeypatch, survivors: int) -> None:
    """os.replace fails after `survivors` renames: before the journal's own rename the old state stays;
    after it, reopening replays the journal and the whole commit is there — never a mix."""
    root = tmp_path / "store"
    store = _batch_with_three_cases(root)
    real_replace = os.replace
    done = []

    def replace(src: object, dst: object) -> None:
        if len(done) == survivors:
            raise PowerCut
        done.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PowerCut):
        store.commit()
    monkeypatch.undo()
    journal_in_place = (root / "journal.json").exists()
    assert journal_in_place == (survivors > 0)  # the journal is renamed first
    state = [sorted(x) if isinstance(x, list) else x for x in _state(root)]
    assert state == list(NEW if journal_in_place else OLD)
    # The next commit finishes the replayed one and removes the journal.
    again = Store(root)
    again.remember("<later@x>", key(1))
    again.commit()
    assert not (root / "journal.json").exists()
    assert [sorted(x) if isinstance(x, list) else x for x in _state(root)] == list(NEW if journal_in_place else OLD)


def test_a_crash_while_renaming_a_case_shard_is_replayed(tmp_path: Path, monkeypatch) -> None:
    """The hook tests/test_followup.py uses: the power goes as the active shard is renamed."""
    root = tmp_path / "store"
    store = _batch_with_three_cases(root)
    real_flush = storage_mod.BufferedAtomicStorage.flush

    def flush(self: storage_mod.BufferedAtomicStorage) -> bool:
        if self.path is not None and self.path.parent.name == "closed" and self.dirty:
            raise PowerCut
        return real_flush(self)

    monkeypatch.setattr(storage_mod.BufferedAtomicStorage, "flush", flush)
    with pytest.raises(PowerCut):
        store.commit()
    monkeypatch.undo()
    assert [sorted(x) if isinstance(x, list) else x for x in _state(root)] == list(NEW)


def test_a_single_file_commit_needs_no_journal(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.outbox_record({"action_id": "a", "case": key(1), "recorded": T0.isoformat(), "attempts": 0})
    store.commit()
    store.outbox_update("a", attempts=1)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(PowerCut()))
    with pytest.raises(PowerCut):
        store.commit()
    monkeypatch.undo()
    assert not (root / "journal.json").exists()
    assert Store(root).outbox_entry("a")["attempts"] == 0
    store.commit()
    assert Store(root).outbox_entry("a")["attempts"] == 1


def test_the_id_index_stays_a_few_runs_and_finds_everything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runs_mod, "RUN_PART", 16)  # many part files per run
    monkeypatch.setattr(runs_mod, "FOLD_LIMIT", 40)  # bigger runs take the streaming merge
    root = tmp_path / "store"
    store = Store(root)
    for batch in range(60):
        for i in range(5):
            store.remember(f"<{batch}-{i}@x>", key(batch))
        store.put_case(case(key(batch), tokens=("CMIT:0000001",)))  # the token moves to the newest case
        store.commit()
        assert store.index_stats()["runs"] <= 12
    fresh = Store(root)
    assert all(fresh.case_for_message(f"<{b}-{i}@x>") == key(b) for b in range(60) for i in range(5))
    assert fresh.case_for_token("CMIT:0000001") == key(59)
    assert fresh.get_case(key(0)) is not None and fresh.get_case(key(60)) is None
    names = {p.name[:7] for p in (root / "ids").glob("r[0-9]*.json")}
    manifest = json.loads((root / "ids" / "runs.json").read_text(encoding="utf-8"))  # TinyDB format
    listed = {int(doc["_k"]) for table in manifest.values() for doc in table.values()}
    assert len(listed) == fresh.index_stats()["runs"]
    assert names == {f"r{n:06d}" for n in listed}  # merged-away runs are deleted
    # 300 ids, 60 `case:` entries, one token; an overwritten token lives on in an older run until merged.
    stats = fresh.index_stats()
    assert 361 <= stats["ids"] <= 361 + stats["runs"]
    assert stats["runs"] >= 2  # so that the bulk read below must pick the newest of several runs
    # The bulk read of a load answers as the one-key reads (the token from its newest run) and reads each part
    # file of each run at most once.
    bulk = Store(root)
    reads: list[str] = []
    real_read = bulk.health.read
    monkeypatch.setattr(bulk.health, "read", lambda path: reads.append(path.name) or real_read(path))
    ids = [f"<{b}-{i}@x>" for b in range(61) for i in range(5)]
    assert bulk.seen_many(ids) == {m: {"case": key(int(m[1:].split("-")[0])), "place": "case"} for m in ids[:300]}
    assert reads and len(reads) == len(set(reads))
    assert bulk.cases_for_tokens(["CMIT:0000001", "CMIT:0000002"]) == {"CMIT:0000001": key(59)}


def test_a_commit_after_a_long_history_writes_a_few_small_files(tmp_path: Path, monkeypatch) -> None:
    """The layout's promise: a write costs what it changes, not what the store holds."""
    monkeypatch.setattr(tables_mod, "_CACHE_BYTES", {k: 64 << 10 for k in tables_mod._CACHE_BYTES})  # evict a lot
    root = tmp_path / "store"
    store = Store(root)
    for n in range(3000):
        store.put_case(case(key(n), CaseStatus.CLOSED, entries=4, tokens=(f"CMIT:{n:07d}",),
                            text="日志已经上传，第三方厂商今天也在现场，我们先观察两天。" * 4))
        for i in range(5):
            store.remember(f"<{n}-{i}@history.example>", key(n))
    for n in range(3000, 3040):
        store.put_case(case(key(n), due=T0 + timedelta(days=n - 3000)))
    store.commit()
    before = files(root)
    total = sum(size for _, _, size in before.values())
    assert total > 3_000_000

    # One mail to an open case: its Message-ID recorded, the case updated (nothing else).
    store = Store(root)
    updated = store.get_case(key(3007))
    store.put_case(updated.with_(notes=("customer called",), next_action=NextAction("reminder", T0)))
    store.remember("<new@customer.example>", key(3007))
    store.commit()
    after = files(root)
    changed = {p: after[p] for p in after if before.get(p) != after[p]}
    removed = set(before) - set(after)
    written = sum(size for _, _, size in changed.values())
    assert not removed
    assert len(changed) <= 6, sorted(changed)  # the case's shard, its due shard, one small id run
    assert written < total / 100, (written, total)
    assert all(size < 64_000 for _, _, size in changed.values()), changed
    assert not any(p.startswith("closed/") for p in changed)
    assert Store(root).case_for_message("<new@customer.example>") == key(3007)
    assert Store(root).case_for_message("<1234-3@history.example>") == key(1234)
    assert Store(root).get_case(key(2999)).status == CaseStatus.CLOSED

    # A mail to a case closed long ago reopens it: only its closed shard joins the list.
    before = after
    store = Store(root)
    store.put_case(store.get_case(key(42)).with_(status=CaseStatus.WAITING_ENGINEER))
    store.commit()
    after = files(root)
    changed = {p: after[p] for p in after if before.get(p) != after[p]}
    assert len(changed) <= 6 and sum(s for _, _, s in changed.values()) < total / 100, sorted(changed)
    assert sum(p.startswith("closed/") for p in changed) == 1
    assert [c.key for c in Store(root).active_cases() if c.key == key(42)] == [key(42)]


def _stored(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    store = Store(root)
    store.put_case(case(key(1)))
    store.remember("<a@x>", key(1))
    store.commit()
    return root


def test_a_document_without_its_key_is_damage_not_an_empty_file(tmp_path: Path) -> None:
    # Valid JSON, but not what mailbot wrote: skipping the document would lose it at the next commit.
    root = _stored(tmp_path)
    manifest = root / "ids" / "runs.json"
    manifest.write_text('{"_default": {"1": {"x": "y"}}}', encoding="utf-8")
    with pytest.raises(StoreCorrupt, match="runs.json holds a document without its key") as caught:
        Store(root)
    assert list(manifest.parent.glob("runs.json.corrupt-*")) and "will not overwrite" in str(caught.value)


@pytest.mark.parametrize("change", [
    lambda d: d.pop("status"),
    lambda d: d.update(status="bogus"),
    lambda d: d.update(opened="garbage"),
])
def test_a_case_document_with_a_mangled_field_names_its_file(tmp_path: Path, change) -> None:
    root = _stored(tmp_path)
    [shard] = [p for p in (root / "active").glob("*.json")]
    data = json.loads(shard.read_text(encoding="utf-8"))
    change(next(iter(data["_default"].values())))
    shard.write_text(json.dumps(data), encoding="utf-8")
    store = Store(root)
    with pytest.raises(StoreCorrupt) as caught:
        store.get_case(key(1))
    assert str(shard) in str(caught.value) and f"case {key(1)}" in str(caught.value)
    with pytest.raises(StoreCorrupt):
        list(Store(root).all_cases())
    store.put_case(case(key(2)))
    with pytest.raises(StoreCorrupt, match="not writing anything"):
        store.commit()


def test_a_layout_with_bad_shard_counts_is_named(tmp_path: Path) -> None:
    root = _stored(tmp_path)
    layout = root / "layout.json"
    data = json.loads(layout.read_text(encoding="utf-8"))
    next(iter(data["_default"].values()))["shards"] = {"active": "x"}
    layout.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StoreCorrupt, match="layout.json holds the shard counts that cannot be read"):
        Store(root)


# --- layout 3 (one big sharded ledger) is migrated ---------------------------------------------------------


def _layout_3_store(root: Path, journal: list[dict] | None = None) -> None:
    """A store as mailbot wrote it with layout 3: cases as now, the whole outbox ledger in ledger/NNNN.json
    by hash of the action id, and pending_index.json naming the shards with pending mail."""
    store = Store(root)
    store.put_case(case(key(1)))
    store.remember("<a@x>", key(1))
    store.commit()
    layout = json.loads((root / "layout.json").read_text())
    meta = layout["_default"]["1"]
    meta["version"], meta["shards"] = 3, {**{k: v for k, v in meta["shards"].items() if k != "unsent"}, "ledger": 4096}
    (root / "layout.json").write_text(json.dumps(layout))
    ledger = {
        "a/reminder/1": {"status": "sent", "message_id": "<r1@bot>", "recorded": "2026-03-01T09:00:00+08:00"},
        "a/reminder/2": {"status": "pending", "message_id": "<r2@bot>", "raw": "RAW2", "attempts": 1,
                         "recorded": "2026-03-04T09:00:00+08:00"},
        "b/closure/x": {"status": "failed", "message_id": "<c@bot>", "raw": "RAWC", "recorded": "2026-03-03"},
    }
    (root / "ledger").mkdir()
    for action_id, doc in ledger.items():
        n = tables_mod.h64(action_id) % 4096
        (root / "ledger" / f"{n:04d}.json").write_text(
            json.dumps({"_default": {"1": {**doc, "action_id": action_id, "_k": action_id}}}))
    pending = tables_mod.h64("a/reminder/2") % 4096
    (root / "pending_index.json").write_text(json.dumps({"_default": {"1": {"_k": str(pending)}}}))
    if journal is not None:
        entries = {str(i): {"_k": f"{e['t']}/{e['key']}", **e} for i, e in enumerate(journal, 1)}
        (root / "journal.json").write_text(json.dumps({"_default": entries}))


def _ledger_as_migrated(store: Store) -> None:
    assert [e["action_id"] for e in store.outbox_pending()] == ["a/reminder/2"]
    assert store.outbox_entry("a/reminder/2")["raw"] == "RAW2"
    assert store.outbox_entry("a/reminder/1")["status"] == "sent"
    assert store.outbox_entry("b/closure/x")["raw"] == "RAWC"
    assert store.outbox_entry("never") is None
    assert store.get_case(key(1)) is not None and store.case_for_message("<a@x>") == key(1)


def _version(root: Path) -> int:
    return json.loads((root / "layout.json").read_text())["_default"]["1"]["version"]


def test_a_layout_3_store_is_read_as_it_is_and_migrated_by_the_first_commit(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _layout_3_store(root)
    before = files(root)
    _ledger_as_migrated(Store(root))
    assert files(root) == before  # a reader (`mailbot cases`) writes nothing
    store = Store(root)
    store.commit()
    assert _version(root) == store_mod.LAYOUT_VERSION
    assert not (root / "ledger").exists() and not (root / "pending_index.json").exists()
    assert not (root / "journal.json").exists()
    _ledger_as_migrated(Store(root))
    # The mail goes on as usual: the pending one is finished, the failed one stays failed.
    store = Store(root)
    store.outbox_finish("a/reminder/2", "sent", sent="now")
    store.commit()
    store = Store(root)
    assert store.outbox_pending() == [] and "raw" not in store.outbox_entry("a/reminder/2")
    assert {e["action_id"] for e in store.outbox_entries()} == {"a/reminder/1", "a/reminder/2", "b/closure/x"}


class Crash(Exception):
    pass


def test_a_crash_in_the_migration_is_finished_next_time(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "store"
    _layout_3_store(root)

    def no_layout(self: Store) -> None:
        raise Crash

    # The new tables are written, then the power goes before layout.json says 4.
    monkeypatch.setattr(Store, "_write_layout", no_layout)
    with pytest.raises(Crash):
        Store(root).commit()
    monkeypatch.undo()
    assert _version(root) == 3 and (root / "unsent").is_dir()
    _ledger_as_migrated(Store(root))
    # Now layout.json is written, and the power goes while the old files are removed.
    real_rmdir = Path.rmdir

    def crash_on_rmdir(self: Path) -> None:
        raise Crash

    monkeypatch.setattr(Path, "rmdir", crash_on_rmdir)
    with pytest.raises(Crash):
        Store(root).commit()
    monkeypatch.setattr(Path, "rmdir", real_rmdir)
    assert _version(root) == store_mod.LAYOUT_VERSION and (root / "pending_index.json").exists()
    _ledger_as_migrated(Store(root))
    Store(root).commit()
    assert not (root / "ledger").exists() and not (root / "pending_index.json").exists()
    _ledger_as_migrated(Store(root))


def test_a_layout_3_journal_left_by_a_crash_is_replayed_before_the_migration(tmp_path: Path) -> None:
    root = tmp_path / "store"
    # Layout 3's last commit: the pending reminder was sent (the shard itself was not yet renamed).
    sent = {"status": "sent", "message_id": "<r2@bot>", "action_id": "a/reminder/2", "attempts": 1,
            "recorded": "2026-03-04T09:00:00+08:00", "_k": "a/reminder/2"}
    _layout_3_store(root, journal=[{"t": "ledger", "key": "a/reminder/2", "d": sent},
                                   {"t": "pending_index", "key": "7", "d": None}])
    store = Store(root)
    assert store.outbox_pending() == [] and store.outbox_entry("a/reminder/2")["status"] == "sent"
    store.commit()
    store = Store(root)
    assert store.outbox_pending() == [] and store.outbox_entry("a/reminder/2")["status"] == "sent"
    assert store.outbox_entry("b/closure/x")["status"] == "failed"


@pytest.mark.parametrize("old_journal", [False, True], ids=["clean", "with a layout-3 journal"])
def test_what_was_done_after_the_migration_survives_a_crash_before_layout_4(tmp_path: Path, monkeypatch,
                                                                          old_journal: bool) -> None:
    """The old ledger stays on disk until layout.json says 4; opening the store again must not put its stale
    entries back over what the new tables hold (a mail sent, then pending again, would go out twice)."""
    root = tmp_path / "store"
    failed_for_good = {"status": "failed", "message_id": "<c@bot>", "action_id": "b/closure/x", "raw": "RAWC",
                       "recorded": "2026-03-03", "error": "550", "_k": "b/closure/x"}
    _layout_3_store(root, journal=[{"t": "ledger", "key": "b/closure/x", "d": failed_for_good}] if old_journal
                    else None)

    def no_layout(self: Store) -> None:
        raise Crash

    store = Store(root)
    store.outbox_finish("a/reminder/2", "sent", sent="09:01")  # the service's first sweep
    monkeypatch.setattr(Store, "_write_layout", no_layout)
    with pytest.raises(Crash):
        store.commit()
    monkeypatch.undo()
    assert _version(root) == 3
    for store in (Store(root), Store(root)):
        assert store.outbox_pending() == [] and store.outbox_entry("a/reminder/2")["status"] == "sent"
        assert store.outbox_entry("b/closure/x").get("error") == ("550" if old_journal else None)
    # A layout.json that cannot be written (disk full) leaves layout 3 a while longer, but loses nothing.
    def disk_full(self: Store) -> None:
        raise storage_mod.StoreWriteError(root / "layout.json", OSError(28, "No space left on device"))

    monkeypatch.setattr(Store, "_write_layout", disk_full)
    store = Store(root)
    store.outbox_record({"action_id": "c/reminder/1", "message_id": "<c1@bot>", "raw": "R", "recorded": "x"})
    store.commit()
    store.outbox_finish("c/reminder/1", "sent", sent="09:02")
    store.commit()
    monkeypatch.undo()
    assert _version(root) == 3
    store = Store(root)
    assert store.outbox_pending() == [] and store.outbox_entry("c/reminder/1")["status"] == "sent"
    store.commit()
    assert _version(root) == store_mod.LAYOUT_VERSION and not (root / "ledger").exists()
    store = Store(root)
    assert store.outbox_pending() == [] and store.outbox_entry("a/reminder/2")["status"] == "sent"


def test_a_token_points_to_the_case_that_gained_it_last(root: Path | None) -> None:
    store = Store(root)
    store.put_case(case(key(1), tokens=("CMIT:0000001",)))
    store.put_case(case(key(2), tokens=("CMIT:0000001",)))  # the CRM reused the token
    store.commit()
    store = reopen(store)
    assert store.case_for_token("CMIT:0000001") == key(2)
    # Saving or closing the first case again does not take the token back.
    store.put_case(store.get_case(key(1)).with_(notes=("again",)))
    store.put_case(store.get_case(key(1)).with_(status=CaseStatus.CLOSED))
    store.commit()
    assert reopen(store).case_for_token("CMIT:0000001") == key(2)


def test_run_files_left_unlisted_by_a_killed_commit_go_with_the_next_writer(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.remember("<a@x>", key(1))
    store.commit()
    # What a kill between the manifest's rename and the removal of the merged-away runs leaves behind.
    left = [root / "ids" / "r000050.0000.json", root / "ids" / "r000050.fp.json"]
    for path in left:
        path.write_text('{"_default": {}}')
    assert Store(root).case_for_message("<a@x>") == key(1) and all(p.exists() for p in left)  # a reader
    store = Store(root)
    store.remember("<b@x>", key(1))
    store.commit()
    assert not any(p.exists() for p in left)
    assert Store(root).case_for_message("<a@x>") == key(1) and Store(root).case_for_message("<b@x>") == key(1)


def test_marking_mail_sent_after_a_long_history_writes_a_few_small_files(tmp_path: Path) -> None:
    """Sending costs what it changes: recording 25 mails, marking them attempted and then sent rewrites the
    few unsent shards and adds a small run of finished mail, however many mails went out before."""
    root = tmp_path / "store"
    store = Store(root)
    for n in range(3000):
        store.outbox_record({"action_id": f"old/{n}", "message_id": f"<old{n}@bot>", "raw": "R" * 2000,
                             "recorded": T0.isoformat(), "text": "提醒" * 100})
        store.outbox_finish(f"old/{n}", "sent", sent=T0.isoformat())
    store.commit()
    before = files(root)
    total = sum(size for _, _, size in before.values())
    store = Store(root)
    for n in range(25):
        store.outbox_record({"action_id": f"new/{n}", "message_id": f"<new{n}@bot>", "raw": "R" * 2000,
                             "recorded": T0.isoformat(), "text": "提醒"})
    store.commit()
    for entry in store.outbox_pending():
        store.outbox_update(entry["action_id"], attempts=1)
    store.commit()
    for entry in store.outbox_pending():
        store.outbox_finish(entry["action_id"], "sent", sent=T0.isoformat())
    store.commit()
    after = files(root)
    changed = {p: after[p] for p in after if before.get(p) != after[p]}
    assert len(changed) <= store_mod.SHARDS["unsent"] + 4, sorted(changed)  # unsent shards, one run + manifest
    assert sum(size for _, _, size in changed.values()) < total / 20
    store = Store(root)
    assert store.outbox_pending() == []
    assert store.outbox_entry("new/7")["status"] == "sent" and store.outbox_entry("old/2999")["status"] == "sent"


def test_a_commit_that_changes_more_shards_than_the_cache_holds_keeps_every_change(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """A bulk load changes more case shards in one commit than the cache's budget holds. The shard just read
    for a change was dropped from the cache before the change went in (every other one being changed), and
    the commit wrote it as read again from disk: 13 of 100,000 cases were lost in the round-trip bench, and
    1,681 of 3,000 here."""
    monkeypatch.setitem(tables_mod._CACHE_BYTES, "closed", 32 << 10)
    root = tmp_path / "store"
    store = Store(root)
    keys = [key(n) for n in range(3000)]
    for round_ in ("first", "again"):
        for n, k in enumerate(keys):
            store.put_case(case(k, status=CaseStatus.CLOSED, text=f"{round_}: 请收集日志并上传。"))
            if n % 500 == 499:
                store.commit()
        store.commit()
        store = Store(root)
        texts = {c.key: c.timeline[0].text for c in store.all_cases()}
        assert len(texts) == 3000 and set(texts.values()) == {f"{round_}: 请收集日志并上传。 0"}  # entry 0's
