"""Commits to a store in a loop, for tests/test_crash.py to SIGKILL at random moments.

    python tests/crash_worker.py STORE_ROOT

Iteration i changes every table in one commit: 40 cases (spread over the shards; every other iteration one
of them moves between open and closed), 30 new Message-IDs (the id runs grow, fold and merge), one outbox
entry recorded and the previous one finished, one unmatched mail; after the commit, the IMAP checkpoint.
It prints "ready" once the store is open, then each i once its commit has returned. A restarted worker
continues after the last iteration the store holds. `expected_state` says what a store after iteration i
holds: the test checks that a killed store holds exactly one iteration's state, never a mix.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mailbot.cases import open_case  # noqa: E402
from mailbot.models import CaseStatus  # noqa: E402
from mailbot.store import Store  # noqa: E402

CASES = 40
IDS_PER_ITERATION = 30
WHEN = datetime(2026, 3, 6, 2, 0, tzinfo=UTC)


def case_key(n: int) -> str:
    return f"CAS-{20000 + n:05d}-W{n:05d}"


def mid(i: int, k: int) -> str:
    return f"<w{i}-{k}@crash.example>"


def iteration_of(store: Store) -> int:
    """The last committed iteration (-1 for a new store); every case must agree."""
    seen = {c.reminders_sent for c in store.all_cases()}
    if not seen:
        return -1
    assert len(seen) == 1, f"cases from different commits: {sorted(seen)}"
    return seen.pop()


def step(store: Store, i: int) -> None:
    for n in range(CASES):
        closed = n == i % CASES and i % 2 == 1
        case = open_case(case_key(n), f"crash {n}", f"crash {n}", WHEN, "en").with_(
            reminders_sent=i, status=CaseStatus.CLOSED if closed else CaseStatus.WAITING_ENGINEER)
        store.put_case(case)
    for k in range(IDS_PER_ITERATION):
        store.remember(mid(i, k), case_key(k % CASES))
    store.outbox_record({"action_id": f"a{i}", "case": case_key(0), "kind": "reminder", "message_id": f"<a{i}@x>",
                         "recipients": ["c@x"], "sender": "b@x", "subject": "s", "text": "t", "raw": "x" * 2000,
                         "recorded": WHEN.isoformat(), "attempts": 0})
    if i > 0:
        store.outbox_finish(f"a{i - 1}", "sent", sent=WHEN.isoformat())
    store.add_unmatched({"message_id": f"<u{i}@crash.example>", "subject": f"u{i}", "from": "x@y", "role": "customer",
                         "date": WHEN.isoformat(), "reason": "test", "flags": []})


def expected_state(store: Store) -> dict[str, Any]:
    """Check that the store holds one whole iteration; returns it with a few figures."""
    i = iteration_of(store)
    cases = list(store.all_cases())
    assert len(cases) == (CASES if i >= 0 else 0)
    closed = [c.key for c in cases if c.status == CaseStatus.CLOSED]
    assert closed == ([case_key(i % CASES)] if i >= 0 and i % 2 == 1 else []), (i, closed)
    for j in range(max(0, i - 3), i + 1):  # the last few iterations' ids are all there …
        assert all(store.seen(mid(j, k)) is not None for k in range(IDS_PER_ITERATION)), j
    assert store.seen(mid(i + 1, 0)) is None  # … and none of the next
    if i >= 0:
        assert store.seen(mid(0, 0)) is not None
        pending = [e["action_id"] for e in store.outbox_pending()]
        assert pending == [f"a{i}"], pending
        if i > 0:
            assert (store.outbox_entry(f"a{i - 1}") or {}).get("status") == "sent"
        unmatched = {u["message_id"] for u in store.unmatched()}
        assert unmatched == {f"<u{j}@crash.example>" for j in range(i + 1)}
    checkpoint = store.get_checkpoint("worker")
    assert checkpoint is None or checkpoint["i"] <= i  # written after the commit, never ahead of it
    return {"iteration": i}


def main(root: Path) -> None:
    store = Store(root)
    i = iteration_of(store) + 1
    print("ready", i, flush=True)
    while True:
        step(store, i)
        store.commit()
        store.set_checkpoint("worker", {"i": i})
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]))
