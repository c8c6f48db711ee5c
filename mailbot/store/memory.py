"""The memory engine: the store port over plain dicts, for tests and tools that need no durability.

It keeps the port's batch semantics so that code tested on it behaves the same on the durable engines:
writes are seen at once, `commit()` makes them the committed state, and `rollback()` (what a crash does to
the other engines) brings back the last committed state. Documents go through the same codec as on disk,
so a case that cannot be stored cannot be stored here either.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from mailbot.models import Case, CaseStatus
from mailbot.store.codec import case_from_doc, case_to_doc, utc

_MISSING = object()


class MemoryStore:
    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, dict[str, Any]] = {}  # Message-ID, "token:T" → {"case", "place"?}
        self.unmatched_t: dict[str, dict[str, Any]] = {}
        self.quarantine_t: dict[str, dict[str, Any]] = {}
        self.outbox: dict[str, dict[str, Any]] = {}
        self.sends: dict[str, list[str]] = {}
        self.checkpoints_t: dict[str, dict[str, Any]] = {}
        # What each change replaced, in order, since the last commit: `rollback()` puts it back. Values are
        # never mutated in place (every write stores a new object), so keeping the old object is enough.
        self._undo: list[tuple[dict[str, Any], str, Any]] = []

    def _set(self, table: dict[str, Any], key: str, value: Any) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        if value is _MISSING:
            del table[key]
        else:
            table[key] = value

    # --- cases ---

    def get_case(self, key: str) -> Case | None:
        doc = self.cases.get(key)
        return None if doc is None else case_from_doc(doc)

    def put_case(self, case: Case) -> None:
        before = self.cases.get(case.key)
        known = set(before.get("tracking_tokens", ())) if before else set()
        self._set(self.cases, case.key, case_to_doc(case))
        for token in case.tracking_tokens:
            if token not in known:  # a token points to the case that gained it last
                self._set(self.ids, "token:" + token, {"case": case.key})

    def active_cases(self) -> Iterator[Case]:
        for doc in list(self.cases.values()):
            if doc["status"] != CaseStatus.CLOSED.value:
                yield case_from_doc(doc)

    def all_cases(self) -> Iterator[Case]:
        yield from self.active_cases()
        for doc in list(self.cases.values()):
            if doc["status"] == CaseStatus.CLOSED.value:
                yield case_from_doc(doc)

    def report_cases(self, since: datetime, part: int = 0, parts: int = 1) -> Iterator[Case]:
        for key, doc in list(self.cases.items()):
            if parts > 1 and zlib.crc32(key.encode("utf-8", "surrogatepass")) % parts != part:
                continue
            # The date alone first (cheap): the older cases are never made into models.
            if datetime.fromisoformat(doc["last_activity"]) >= since:
                yield case_from_doc(doc)

    def due_case_keys(self, now: datetime) -> list[str]:
        limit = utc(now)
        due = []
        for key, doc in self.cases.items():
            action = doc.get("next_action")
            if doc["status"] != CaseStatus.CLOSED.value and action:
                at = utc(datetime.fromisoformat(action["due"]))
                if at <= limit:
                    due.append((at, key))
        return [key for _, key in sorted(due)]

    # --- the Message-ID index ---

    def case_for_message(self, message_id: str) -> str | None:
        doc = self.ids.get(message_id)
        return doc["case"] if doc and doc.get("case") else None

    def case_for_token(self, token: str) -> str | None:
        doc = self.ids.get("token:" + token)
        return doc["case"] if doc else None

    def seen(self, message_id: str) -> dict[str, Any] | None:
        doc = self.ids.get(message_id)
        return None if doc is None else dict(doc)

    def prefetch(self, message_ids: list[str], case_keys: Sequence[str] = ()) -> None:
        """Nothing to do: a lookup here costs no round trip (the port's hint is for networked engines)."""

    def remember(self, message_id: str, case_key: str, place: str = "case", digest: str = "") -> None:
        self._set(self.ids, message_id, {"case": case_key, "place": place, **({"digest": digest} if digest else {})})

    # --- unmatched and quarantined mail ---

    def add_unmatched(self, record: dict[str, Any]) -> None:
        self._set(self.unmatched_t, record["message_id"], dict(record))

    def unmatched(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.unmatched_t.values()]

    def add_quarantined(self, record: dict[str, Any]) -> None:
        self._set(self.quarantine_t, record["ref"], dict(record))

    def quarantined(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.quarantine_t.values()]

    def remove_quarantined(self, ref: str) -> bool:
        if ref not in self.quarantine_t:
            return False
        self._set(self.quarantine_t, ref, _MISSING)
        return True

    # --- the outbox ledger ---

    def outbox_entry(self, action_id: str) -> dict[str, Any] | None:
        doc = self.outbox.get(action_id)
        return None if doc is None else dict(doc)

    def outbox_record(self, entry: dict[str, Any]) -> None:
        self._set(self.outbox, entry["action_id"], {**entry, "status": "pending"})

    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        entry = self.outbox.get(action_id)
        if entry is None:
            return
        done = {**entry, **details, "status": status}
        if status == "sent":
            done.pop("raw", None)  # the Sent folder or the outbox folder has the copy
        self._set(self.outbox, action_id, done)

    def outbox_update(self, action_id: str, **details: Any) -> None:
        entry = self.outbox.get(action_id)
        if entry is not None and entry.get("status") == "pending":
            self._set(self.outbox, action_id, {**entry, **details})

    def outbox_pending(self) -> list[dict[str, Any]]:
        pending = (dict(d) for d in self.outbox.values() if d.get("status") == "pending")
        return sorted(pending, key=lambda d: d.get("recorded", ""))

    def outbox_held(self, case_key: str) -> list[dict[str, Any]]:
        return [d for d in self.outbox_pending() if d.get("case") == case_key and d.get("not_before")]

    def outbox_entries(self) -> Iterator[dict[str, Any]]:
        yield from self.outbox_pending()
        for doc in list(self.outbox.values()):
            if doc.get("status") != "pending":
                yield dict(doc)

    def sends_since(self, address: str, since: datetime) -> int:
        limit = utc(since)
        return sum(1 for t in self.sends.get(address, ()) if t >= limit)

    def note_send(self, address: str, at: datetime) -> None:
        self._set(self.sends, address, [*self.sends.get(address, ()), utc(at)][-20:])  # a day's cap needs few

    # --- checkpoints (durable at once: not part of a batch) ---

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        doc = self.checkpoints_t.get(key)
        return None if doc is None else dict(doc)

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        self.checkpoints_t[key] = dict(value)

    # --- export and import (the engine-neutral dump: mailbot/store/dump.py) ---

    def id_entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, doc in list(self.ids.items()):
            yield key, dict(doc)

    def restore_id(self, key: str, doc: dict[str, Any]) -> None:
        self._set(self.ids, key, dict(doc))

    def get_cases(self, keys: list[str]) -> dict[str, Case]:
        return {key: case for key in keys if (case := self.get_case(key)) is not None}

    def seen_many(self, message_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {key: seen for key in message_ids if (seen := self.seen(key)) is not None}

    def cases_for_tokens(self, tokens: list[str]) -> dict[str, str]:
        return {token: case for token in tokens if (case := self.case_for_token(token)) is not None}

    def outbox_entries_for(self, action_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {key: entry for key in action_ids if (entry := self.outbox_entry(key)) is not None}

    def send_entries(self) -> Iterator[tuple[str, list[str]]]:
        for address, times in list(self.sends.items()):
            yield address, sorted(times)

    def restore_sends(self, address: str, times: list[str]) -> None:
        self._set(self.sends, address, sorted(times)[-20:])

    def checkpoints(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, doc in list(self.checkpoints_t.items()):
            yield key, dict(doc)

    def outbox_restore(self, entry: dict[str, Any]) -> None:
        self._set(self.outbox, entry["action_id"], dict(entry))

    # --- durability and figures ---

    def commit(self) -> int:
        changes = len(self._undo)
        self._undo.clear()
        return changes

    def rollback(self) -> None:
        """Forget every change since the last commit (what a crash does to a durable engine)."""
        while self._undo:
            table, key, old = self._undo.pop()
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old

    def locality(self, case: Case) -> int:
        return 0

    def counts(self) -> dict[str, int]:
        closed = sum(1 for d in self.cases.values() if d["status"] == CaseStatus.CLOSED.value)
        return {
            "active": len(self.cases) - closed,
            "closed": closed,
            "unmatched": len(self.unmatched_t),
            "quarantined": len(self.quarantine_t),
            "pending": len(self.outbox_pending()),
        }
