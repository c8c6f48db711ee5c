"""The case file: cases, the Message-ID index, unmatched and quarantined mail, the outbox ledger, checkpoints.

Layout (every file a TinyDB JSON document store, written atomically by BufferedAtomicStorage):

    <state>/store/active/NN.json     open cases, 32 shards by key hash   — loaded whole (the sweep needs them)
    <state>/store/closed/NN.json     closed cases, 64 shards             — loaded lazily, one shard at a time
    <state>/store/ids/NN.json        Message-ID and token → case, 256 shards — loaded lazily
    <state>/store/ledger/NN.json     every outgoing mail by action id, 64 shards
    <state>/store/pending.json       outgoing mail recorded but not yet confirmed sent
    <state>/store/unmatched.json, quarantine.json, checkpoints.json

A write touches only the shards it changes, and `commit()` writes a batch at once, so the cost of a write
does not grow with history. This is the only module that turns documents into models and back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mailbot.models import (
    Case,
    CaseStatus,
    ClosureFields,
    EntryKind,
    NextAction,
    Role,
    TimelineEntry,
)
from mailbot.storage import BufferedAtomicStorage, StoreCorrupt

__all__ = ["Store", "StoreCorrupt", "case_to_doc", "case_from_doc"]

_TABLE = "_default"


class _Shard:
    """One TinyDB file holding documents addressed by a string key (kept in the document as `_k`)."""

    def __init__(self, path: Path | None) -> None:
        self.storage = BufferedAtomicStorage(path)
        data = self.storage.read() or {}
        self.table: dict[str, dict[str, Any]] = data.setdefault(_TABLE, {})
        self.ids: dict[str, str] = {doc["_k"]: doc_id for doc_id, doc in self.table.items()}
        self.next_id = max((int(i) for i in self.table), default=0) + 1
        self._data = data

    def get(self, key: str) -> dict[str, Any] | None:
        doc_id = self.ids.get(key)
        return None if doc_id is None else self.table[doc_id]

    def put(self, key: str, doc: dict[str, Any]) -> None:
        doc_id = self.ids.get(key)
        if doc_id is None:
            doc_id = str(self.next_id)
            self.next_id += 1
            self.ids[key] = doc_id
        self.table[doc_id] = {**doc, "_k": key}
        self.storage.write(self._data)

    def delete(self, key: str) -> None:
        doc_id = self.ids.pop(key, None)
        if doc_id is not None:
            del self.table[doc_id]
            self.storage.write(self._data)

    def docs(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.table.values()))

    def __len__(self) -> int:
        return len(self.table)


class _ShardedTable:
    def __init__(self, root: Path | None, name: str, shards: int) -> None:
        self.root = None if root is None else root / name
        self.count = shards
        self.loaded: dict[int, _Shard] = {}

    def shard_of(self, key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big") % self.count

    def shard(self, n: int) -> _Shard:
        if n not in self.loaded:
            path = None if self.root is None else self.root / f"{n:03d}.json"
            self.loaded[n] = _Shard(path)
        return self.loaded[n]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.shard(self.shard_of(key)).get(key)

    def put(self, key: str, doc: dict[str, Any]) -> None:
        self.shard(self.shard_of(key)).put(key, doc)

    def delete(self, key: str) -> None:
        self.shard(self.shard_of(key)).delete(key)

    def docs(self) -> Iterator[dict[str, Any]]:
        for n in range(self.count):
            if self.root is not None and n not in self.loaded and not (self.root / f"{n:03d}.json").exists():
                continue
            yield from self.shard(n).docs()

    def storages(self) -> list[BufferedAtomicStorage]:
        return [s.storage for s in self.loaded.values()]


class Store:
    """The TinyDB-backed store. `root=None` gives the in-memory twin with identical behaviour."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.active = _ShardedTable(root, "active", 32)
        self.closed = _ShardedTable(root, "closed", 64)
        self.ids = _ShardedTable(root, "ids", 256)
        self.ledger = _ShardedTable(root, "ledger", 64)
        self.pending = _Shard(None if root is None else root / "pending.json")
        self.unmatched_t = _Shard(None if root is None else root / "unmatched.json")
        self.quarantine_t = _Shard(None if root is None else root / "quarantine.json")
        self.checkpoints = _Shard(None if root is None else root / "checkpoints.json")

    # --- cases -------------------------------------------------------------------------------------

    def get_case(self, key: str) -> Case | None:
        doc = self.active.get(key) or self.closed.get(key)
        return None if doc is None else case_from_doc(doc)

    def put_case(self, case: Case) -> None:
        doc = case_to_doc(case)
        if case.status == CaseStatus.CLOSED:
            self.closed.put(case.key, doc)
            self.active.delete(case.key)
        else:
            self.active.put(case.key, doc)
            self.closed.delete(case.key)
        for token in case.tracking_tokens:
            self.ids.put("token:" + token, {"case": case.key})

    def active_cases(self) -> Iterator[Case]:
        for doc in self.active.docs():
            yield case_from_doc(doc)

    def all_cases(self) -> Iterator[Case]:
        yield from self.active_cases()
        for doc in self.closed.docs():
            yield case_from_doc(doc)

    def due_case_keys(self, now: datetime) -> list[str]:
        """Keys of open cases whose next action is due, soonest first; reads documents, builds no models."""
        due: list[tuple[str, str]] = []
        limit = now.isoformat()
        for doc in self.active.docs():
            action = doc.get("next_action")
            if action and action["due"] <= limit:
                due.append((action["due"], doc["key"]))
        return [key for _, key in sorted(due)]

    # --- the Message-ID index (dedup and threading) ------------------------------------------------

    def case_for_message(self, message_id: str) -> str | None:
        doc = self.ids.get(message_id)
        return doc["case"] if doc and doc.get("case") else None

    def case_for_token(self, token: str) -> str | None:
        doc = self.ids.get("token:" + token)
        return doc["case"] if doc else None

    def seen(self, message_id: str) -> dict[str, Any] | None:
        """Where an already-recorded message ended: {"case": KEY} or {"case": "", "place": ...}."""
        return self.ids.get(message_id)

    def remember(self, message_id: str, case_key: str, place: str = "case") -> None:
        self.ids.put(message_id, {"case": case_key, "place": place})

    # --- unmatched and quarantined mail -------------------------------------------------------------

    def add_unmatched(self, record: dict[str, Any]) -> None:
        self.unmatched_t.put(record["message_id"], record)

    def unmatched(self) -> list[dict[str, Any]]:
        return [_public(d) for d in self.unmatched_t.docs()]

    def add_quarantined(self, record: dict[str, Any]) -> None:
        self.quarantine_t.put(record["ref"], record)

    def quarantined(self) -> list[dict[str, Any]]:
        return [_public(d) for d in self.quarantine_t.docs()]

    # --- the outbox ledger (exactly-once sending) ---------------------------------------------------

    def outbox_entry(self, action_id: str) -> dict[str, Any] | None:
        doc = self.pending.get(action_id) or self.ledger.get(action_id)
        return None if doc is None else _public(doc)

    def outbox_record(self, entry: dict[str, Any]) -> None:
        """Record an intent to send, before sending (status "pending")."""
        self.pending.put(entry["action_id"], {**entry, "status": "pending"})

    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        """Move an entry from pending to the ledger with its final status ("sent" | "failed")."""
        entry = self.pending.get(action_id) or self.ledger.get(action_id)
        if entry is None:
            return
        self.ledger.put(action_id, {**_public(entry), **details, "status": status})
        self.pending.delete(action_id)

    def outbox_update(self, action_id: str, **details: Any) -> None:
        entry = self.pending.get(action_id)
        if entry is not None:
            self.pending.put(action_id, {**_public(entry), **details})

    def outbox_pending(self) -> list[dict[str, Any]]:
        return sorted((_public(d) for d in self.pending.docs()), key=lambda d: d.get("recorded", ""))

    def sends_since(self, address: str, since: datetime) -> int:
        """How many mails went to `address` at or after `since` (for the per-recipient daily cap)."""
        limit = since.isoformat()
        return sum(1 for t in self._send_times(address) if t >= limit)

    def note_send(self, address: str, at: datetime) -> None:
        # Only the last few days matter for a daily cap; keep the document small.
        times = [*self._send_times(address), at.isoformat()][-20:]
        self.checkpoints.put("sends:" + address, {"times": times})

    def _send_times(self, address: str) -> list[str]:
        doc = self.checkpoints.get("sends:" + address)
        return list(doc["times"]) if doc else []

    # --- checkpoints (IMAP folder, UIDVALIDITY, last UID) -------------------------------------------

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        doc = self.checkpoints.get("cp:" + key)
        return None if doc is None else _public(doc)

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        self.checkpoints.put("cp:" + key, value)
        self.checkpoints.storage.flush()

    # --- durability ----------------------------------------------------------------------------------

    def commit(self) -> int:
        """Write every changed file. Order matters for crash safety: the ledger before cases, so that
        after a crash a re-made decision finds its mail already recorded instead of sending it again."""
        written = 0
        order = [self.pending.storage, *self.ledger.storages(), *self.ids.storages(),
                 self.unmatched_t.storage, self.quarantine_t.storage, *self.closed.storages(),
                 *self.active.storages(), self.checkpoints.storage]
        for storage in order:
            written += storage.flush()
        return written

    def counts(self) -> dict[str, int]:
        return {
            "active": sum(1 for _ in self.active.docs()),
            "closed": sum(1 for _ in self.closed.docs()),
            "unmatched": len(self.unmatched_t),
            "quarantined": len(self.quarantine_t),
            "pending": len(self.pending),
        }


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_k"}


# --- documents ↔ models -----------------------------------------------------------------------------


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _iso(d: datetime | None) -> str | None:
    return None if d is None else d.isoformat()


def case_to_doc(case: Case) -> dict[str, Any]:
    return {
        "key": case.key,
        "title": case.title,
        "subject": case.subject,
        "status": case.status.value,
        "language": case.language,
        "language_override": case.language_override,
        "opened": _iso(case.opened),
        "last_activity": _iso(case.last_activity),
        "tracking_tokens": list(case.tracking_tokens),
        "customers": list(case.customers),
        "engineers": list(case.engineers),
        "contact_names": dict(case.contact_names),
        "reminders_sent": case.reminders_sent,
        "next_action": None
        if case.next_action is None
        else {"kind": case.next_action.kind, "due": _iso(case.next_action.due)},
        "last_engineer_mail": _iso(case.last_engineer_mail),
        "followup_enabled": case.followup_enabled,
        "snoozed_until": _iso(case.snoozed_until),
        "phone_call_logged": case.phone_call_logged,
        "failed_addresses": list(case.failed_addresses),
        "closure": None if case.closure is None else vars(case.closure).copy(),
        "notes": list(case.notes),
        "timeline": [
            {
                "message_id": e.message_id,
                "date": _iso(e.date),
                "from": e.from_addr,
                "role": e.role.value,
                "kind": e.kind.value,
                "direction": e.direction,
                "text": e.text,
                "subject": e.subject,
            }
            for e in case.timeline
        ],
    }


def case_from_doc(doc: dict[str, Any]) -> Case:
    action = doc.get("next_action")
    closure = doc.get("closure")
    return Case(
        key=doc["key"],
        title=doc["title"],
        subject=doc["subject"],
        status=CaseStatus(doc["status"]),
        language=doc["language"],
        language_override=doc.get("language_override"),
        opened=datetime.fromisoformat(doc["opened"]),
        last_activity=datetime.fromisoformat(doc["last_activity"]),
        tracking_tokens=tuple(doc.get("tracking_tokens", ())),
        customers=tuple(doc.get("customers", ())),
        engineers=tuple(doc.get("engineers", ())),
        contact_names=tuple(sorted(doc.get("contact_names", {}).items())),
        reminders_sent=doc.get("reminders_sent", 0),
        next_action=None if not action else NextAction(action["kind"], datetime.fromisoformat(action["due"])),
        last_engineer_mail=_dt(doc.get("last_engineer_mail")),
        followup_enabled=doc.get("followup_enabled", True),
        snoozed_until=_dt(doc.get("snoozed_until")),
        phone_call_logged=doc.get("phone_call_logged", False),
        failed_addresses=tuple(doc.get("failed_addresses", ())),
        closure=None if closure is None else ClosureFields(**closure),
        notes=tuple(doc.get("notes", ())),
        timeline=tuple(
            TimelineEntry(
                message_id=e["message_id"],
                date=datetime.fromisoformat(e["date"]),
                from_addr=e["from"],
                role=Role(e["role"]),
                kind=EntryKind(e["kind"]),
                direction=e["direction"],
                text=e["text"],
                subject=e.get("subject", ""),
            )
            for e in doc.get("timeline", ())
        ),
    )
