"""The case file: cases, the Message-ID index, unmatched and quarantined mail, the outbox ledger, checkpoints.

Layout (every file a TinyDB JSON document store — `{"_default": {"1": {..., "_k": key}}}` — replaced whole,
never edited in place):

    <root>/layout.json            layout version and shard counts (a store keeps the counts it was made with)
    <root>/active/NNNN.json       open cases, 16384 shards by key hash (about one case a shard with 20,000
                                  open: a case written costs its own few KB) — loaded lazily, LRU-cached
    <root>/due/NNNN.json          key → next action (kind, due in UTC), 16 shards — all the sweep reads
    <root>/closed/NNNN.json       closed cases, 4096 shards                   — loaded lazily, LRU-cached
    <root>/ids/runs.json          the Message-ID index: Message-ID, `token:T` and `case:KEY` → case, kept
    <root>/ids/rNNNNNN.fp.json    as immutable runs (a small log-structured merge tree): each commit adds
    <root>/ids/rNNNNNN.PPPP.json  one run, runs of similar size are merged; a run's 32-bit key fingerprints
                                  stay in memory (4 bytes a key), so a new id is known to be new without I/O
    <root>/unsent/NNNN.json       the outbox ledger, part one: each outgoing mail by action id from the
                                  moment it is recorded ("pending", with its bytes) until it is finished,
                                  16 shards — the few files a sweep's records and attempt marks rewrite
    <root>/finished/...           part two: mail "sent" or "failed", by action id, as immutable runs like
                                  the ids (runs.json, rNNNNNN.fp.json, rNNNNNN.PPPP.json): marking a batch
                                  sent adds one small run, whatever the number of mails sent before
    <root>/sends/NNNN.json        recent send times per recipient (the daily cap), 16 shards
    <root>/unmatched/NNNN.json    unmatched mail, 256 shards
    <root>/quarantine.json, checkpoints.json
    <root>/journal.json           only during a commit (see below)

Why: a file is rewritten whole, so a write costs what the files it touches weigh, and on a busy disk every
file written costs about a third of a millisecond. History (closed cases, unmatched) is spread over thousands
of small shards, or over append-only runs for what every mail adds to (the ids, the finished mail); the open cases are kept apart from the closed ones, and a small due index lets the
sweep find what is due without reading every open case. A write therefore touches a few small files
whatever the size of the history, and nothing is read that the operation does not need.

Commit: `commit()` is atomic. It first writes every changed document to `journal.json` (fsynced), then
writes the changed shard files as one batch (temp files, one filesystem sync, renames in the order outbox
ledger → ids → cases, one fsync per directory), then deletes the journal. A crash before the journal is complete
leaves the old state; a crash after it is replayed when the store is next opened. Nothing is written
without `commit()`, except IMAP checkpoints (`set_checkpoint` writes at once).

Layout 3 (one ledger of 4096 shards, rewritten three times for each mail sent, plus pending_index.json) is
migrated when it is first opened: one journaled commit writes the new tables, then layout.json says 4, then
the old files go. A crash anywhere in between leaves a store that opens (and finishes the migration).

Documents become models in `mailbot/store/codec.py`; the tables and runs live beside this file.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mailbot.models import Case, CaseStatus
from mailbot.storage import (
    StoreCorrupt,
    atomic_write_bytes,
    dump_document,
)
from mailbot.store.codec import CaseFacts, case_from_doc, case_to_doc, facts_of_shard, public, utc
from mailbot.store.files.journal import Journal
from mailbot.store.files.layout import Layout
from mailbot.store.files.runs import RunIndex
from mailbot.store.files.tables import Health, Table, docs_of, document

log = logging.getLogger("mailbot")

__all__ = ["Store", "StoreCorrupt"]



class Store(Layout, Journal):
    """The files engine: TinyDB-format documents under `root`. `root=None` keeps them in memory (same code)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.health = Health()
        version, shards = self._layout()
        h = self.health
        self.active = Table(root, "active", shards["active"], h)
        self.due = Table(root, "due", shards["due"], h)
        self.closed = Table(root, "closed", shards["closed"], h)
        self.ids = RunIndex(root, h)
        self.unsent = Table(root, "unsent", shards["unsent"], h)
        self.finished = RunIndex(root, h, "finished")
        self.sends = Table(root, "sends", shards["sends"], h)
        self.unmatched_t = Table(root, "unmatched", shards["unmatched"], h)
        self.quarantine_t = Table(root, "quarantine", 1, h, single=True)
        self._checkpoints: dict[str, dict[str, Any]] | None = None
        self._journal_unlinked = False  # since the last sync of the root folder
        self._runs_to_tidy = root is not None  # run files a killed commit left unlisted: the first commit removes
        # Case models built from documents, by key: (the document they came from, the model). Valid while
        # that very document object is the stored one (every change stores a new object); Case is frozen.
        self._models: OrderedDict[str, tuple[dict[str, Any], Case]] = OrderedDict()
        # Commit order (for the shard files; the journal makes the commit atomic anyway): the ledger before
        # the cases, so that a re-made decision finds its mail already recorded instead of sending it again.
        self._tables = [self.unsent, self.sends, self.unmatched_t, self.quarantine_t,
                        self.closed, self.active, self.due]
        self._runs = {"ids": self.ids, "finished": self.finished}
        self._by_name = {t.name: t for t in self._tables}
        # Layout 3 is migrated in memory here (readers see the new tables and write nothing); the first
        # commit writes it, then layout.json, then removes the old files (`_finish_migration`).
        self._migrating = version == 3
        self._leftovers = root is not None and (root / "pending_index.json").exists()
        self._replay(Table(root, "ledger", shards.get("ledger", 4096), h) if self._migrating else None)

    # --- cases -------------------------------------------------------------------------------------

    def _case_doc(self, key: str) -> dict[str, Any] | None:
        # A case is in exactly one of the two tables (put_case moves it in the same commit), so its place in
        # the id index need not be read: the fingerprints say whether the case exists at all, and the open
        # cases, which are what the bot works on, are looked at first.
        if not self.ids.may_hold("case:" + key):
            return None
        return self.active.get(key) or self.closed.get(key)

    def get_case(self, key: str) -> Case | None:
        doc = self._case_doc(key)
        if doc is None:
            return None
        cached = self._models.get(key)
        if cached is not None and cached[0] is doc:
            self._models.move_to_end(key)
            return cached[1]
        table = self.active if self.active.get(key) is doc else self.closed
        case = self._case(table, doc)
        self._remember_model(key, doc, case)
        return case

    def _case(self, table: Table, doc: dict[str, Any]) -> Case:
        try:
            return case_from_doc(doc)
        except (KeyError, ValueError, TypeError, AttributeError) as e:  # edited by hand, or another program
            key = doc.get("_k", "?")
            raise self.health.unreadable(table.path(table.shard_of(key)), f"case {key}", e) from None

    def _remember_model(self, key: str, doc: dict[str, Any], case: Case) -> None:
        self._models[key] = (doc, case)
        self._models.move_to_end(key)
        if len(self._models) > 2048:
            self._models.popitem(last=False)

    def put_case(self, case: Case) -> None:
        key = case.key
        doc = case_to_doc(case)
        closed = case.status == CaseStatus.CLOSED
        place = "closed" if closed else "active"
        table, other = (self.closed, self.active) if closed else (self.active, self.closed)
        before = table.get(key)
        known_tokens: tuple[str, ...] | list[str] = ()
        if before is not None:
            # Already in its place: the id index says so since the commit that put it there.
            known_tokens = before.get("tracking_tokens") or ()
        else:  # a new case, or one that moves between open and closed
            moved = other.get(key) if self.ids.may_hold("case:" + key) else None
            if moved is not None:
                other.delete(key)
                known_tokens = moved.get("tracking_tokens") or ()
            self.ids.put("case:" + key, {"case": key, "place": place})
        table.put(key, doc)
        stored = table.get(key)
        if stored is not None and stored == doc:
            self._remember_model(key, stored, case)
        action = case.next_action
        if closed or action is None:
            self.due.delete(key)
        else:
            self.due.put(key, {"due": utc(action.due), "kind": action.kind})
        for token in case.tracking_tokens:
            # A token points to the case that gained it last: one the case already had is left as it is.
            if token not in known_tokens:
                self.ids.put("token:" + token, {"case": key})

    def active_cases(self) -> Iterator[Case]:
        for doc in self.active.docs(keep=False):
            yield self._case(self.active, doc)

    def all_cases(self) -> Iterator[Case]:
        yield from self.active_cases()
        for doc in self.closed.docs(keep=False):
            yield self._case(self.closed, doc)

    def report_cases(self, since: datetime, part: int = 0, parts: int = 1) -> Iterator[Case | CaseFacts]:
        """The cases with activity at or after `since`, open ones first, as the report reads them: a shard
        file is decoded straight into CaseFacts (its texts left undecoded); a shard in memory, or a file
        that is not exactly what this engine writes, goes through the codec as `all_cases` reads it. A
        part is the shards whose number is `part` modulo `parts`."""
        for table in (self.active, self.closed):
            for n, shard in table.shard_bytes(part, parts):
                facts = facts_of_shard(shard) if isinstance(shard, bytes) else None
                if facts is None:
                    docs = shard.values() if isinstance(shard, dict) else table.shard(n, keep=False).values()
                    facts = (self._case(table, doc) for doc in list(docs))
                for case in facts:
                    if case.last_activity >= since:
                        yield case

    def due_case_keys(self, now: datetime) -> list[str]:
        """Keys of open cases whose next action is due, soonest first; reads only the small due index."""
        limit = utc(now)
        return [key for _, key in sorted((d["due"], d["_k"]) for d in self.due.docs() if d["due"] <= limit)]

    # --- the Message-ID index (dedup and threading) ------------------------------------------------

    def case_for_message(self, message_id: str) -> str | None:
        doc = self.ids.get(message_id)
        return doc["case"] if doc and doc.get("case") else None

    def case_for_token(self, token: str) -> str | None:
        doc = self.ids.get("token:" + token)
        return doc["case"] if doc else None

    def seen(self, message_id: str) -> dict[str, Any] | None:
        """Where an already-recorded message ended: {"case": KEY} or {"case": "", "place": ...}."""
        doc = self.ids.get(message_id)
        return None if doc is None else public(doc)

    def prefetch(self, message_ids: list[str], case_keys: Sequence[str] = ()) -> None:
        """Nothing to do: a lookup here costs no round trip (the port's hint is for networked engines)."""

    def remember(self, message_id: str, case_key: str, place: str = "case", digest: str = "") -> None:
        self.ids.put(message_id, {"case": case_key, "place": place, **({"digest": digest} if digest else {})})

    # --- unmatched and quarantined mail -------------------------------------------------------------

    def add_unmatched(self, record: dict[str, Any]) -> None:
        self.unmatched_t.put(record["message_id"], dict(record))

    def unmatched(self) -> list[dict[str, Any]]:
        return [public(d) for d in self.unmatched_t.docs(keep=False)]

    def add_quarantined(self, record: dict[str, Any]) -> None:
        self.quarantine_t.put(record["ref"], dict(record))

    def quarantined(self) -> list[dict[str, Any]]:
        return [public(d) for d in self.quarantine_t.docs()]

    def remove_quarantined(self, ref: str) -> bool:
        """Forget a quarantined mail (it was put back in the inbox: `mailbot requeue`); False when unknown.
        Like every change, it is on disk after the next commit."""
        if self.quarantine_t.get(ref) is None:
            return False
        self.quarantine_t.delete(ref)
        return True

    # --- the outbox ledger (exactly-once sending) ---------------------------------------------------

    def outbox_entry(self, action_id: str) -> dict[str, Any] | None:
        doc = self.unsent.get(action_id) or self.finished.get(action_id)
        return None if doc is None else public(doc)

    def outbox_record(self, entry: dict[str, Any]) -> None:
        """Record an intent to send, before sending (status "pending")."""
        self.unsent.put(entry["action_id"], {**entry, "status": "pending"})

    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        """Give an entry its final status ("sent" | "failed"). A sent mail's raw bytes are not kept (the Sent
        folder or the outbox folder has the copy); a failed one keeps them."""
        entry = self.unsent.get(action_id) or self.finished.get(action_id)
        if entry is None:
            return
        done = {**public(entry), **details, "status": status}
        if status == "sent":
            done.pop("raw", None)
        self.unsent.delete(action_id)
        self.finished.put(action_id, done)

    def outbox_update(self, action_id: str, **details: Any) -> None:
        entry = self.unsent.get(action_id)
        if entry is not None:
            self.unsent.put(action_id, {**public(entry), **details})

    def outbox_pending(self) -> list[dict[str, Any]]:
        return sorted((public(d) for d in self.unsent.docs()), key=lambda d: d.get("recorded", ""))

    def outbox_held(self, case_key: str) -> list[dict[str, Any]]:
        """The case's unsent mail that waits for a later time (`not_before`), oldest first. Asked for many
        incoming mails: it copies only the matches, not the whole unsent ledger."""
        held = (public(d) for d in self.unsent.docs() if d.get("case") == case_key and d.get("not_before"))
        return sorted(held, key=lambda d: d.get("recorded", ""))

    def outbox_entries(self) -> Iterator[dict[str, Any]]:
        """Every mail the ledger knows, unsent first (reads all of it: for checks, not for the bot's work)."""
        for doc in (*self.unsent.docs(keep=False), *self.finished.docs()):
            yield public(doc)

    def sends_since(self, address: str, since: datetime) -> int:
        """How many mails went to `address` at or after `since` (for the per-recipient daily cap)."""
        limit = utc(since)
        return sum(1 for t in self._send_times(address) if t >= limit)

    def note_send(self, address: str, at: datetime) -> None:
        # Only the last few days matter for a daily cap; keep the document small.
        times = [*self._send_times(address), utc(at)][-20:]
        self.sends.put(address, {"times": times})

    def _send_times(self, address: str) -> list[str]:
        doc = self.sends.get(address)
        return list(doc["times"]) if doc else []

    # --- checkpoints (IMAP folder, UIDVALIDITY, last UID) -------------------------------------------

    def _checkpoint_docs(self) -> dict[str, dict[str, Any]]:
        if self._checkpoints is None:
            self._checkpoints = {} if self.root is None else docs_of(self.health.read(self.root / "checkpoints.json"))
        return self._checkpoints

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        doc = self._checkpoint_docs().get(key)
        return None if doc is None else public(doc)

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        """Written at once (atomically), independently of `commit()`."""
        docs = self._checkpoint_docs()
        docs[key] = {**value, "_k": key}
        if self.root is not None:
            atomic_write_bytes(self.root / "checkpoints.json", dump_document(document(docs)))

    # --- export and import (the engine-neutral dump: mailbot/store/dump.py) ---------------------------

    def id_entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Message-ID and token entries; not the `case:KEY` ones (engine-internal, `put_case` writes them)."""
        for doc in self.ids.docs():
            if not doc["_k"].startswith("case:"):
                yield doc["_k"], public(doc)

    def restore_id(self, key: str, doc: dict[str, Any]) -> None:
        self.ids.put(key, public(doc))

    # Bulk reads for `load` (mailbot/store/dump.py looks for them): a chunk of id records reads each part of
    # each run once, where one lookup a record would read one part file a record. Each returns what exists.

    def get_cases(self, keys: list[str]) -> dict[str, Case]:
        return {key: case for key in keys if (case := self.get_case(key)) is not None}

    def seen_many(self, message_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {key: public(doc) for key, doc in self.ids.get_many(message_ids).items()}

    def cases_for_tokens(self, tokens: list[str]) -> dict[str, str]:
        found = self.ids.get_many(["token:" + t for t in tokens])
        return {key[len("token:"):]: doc["case"] for key, doc in found.items()}

    def outbox_entries_for(self, action_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = {key: doc for key in action_ids if (doc := self.unsent.get(key)) is not None}
        finished = self.finished.get_many([key for key in action_ids if key not in found])
        return {key: public(doc) for key, doc in {**finished, **found}.items()}

    def send_entries(self) -> Iterator[tuple[str, list[str]]]:
        for doc in self.sends.docs(keep=False):
            yield doc["_k"], sorted(doc["times"])

    def restore_sends(self, address: str, times: list[str]) -> None:
        self.sends.put(address, {"times": sorted(times)[-20:]})

    def checkpoints(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, doc in list(self._checkpoint_docs().items()):
            yield key, public(doc)

    def outbox_restore(self, entry: dict[str, Any]) -> None:
        """An entry as dumped: pending ones wait in unsent/, the others join the finished runs."""
        action_id = entry["action_id"]
        if entry.get("status") == "pending":
            self.unsent.put(action_id, public(entry))
        else:
            self.unsent.delete(action_id)
            self.finished.put(action_id, public(entry))

    def locality(self, case: Case) -> int:
        """A number that cases sharing files have in common (their shard): a bulk load that commits one
        group of nearby numbers at a time writes each file once. Any order is correct; this one is cheap."""
        return (self.closed if case.status == CaseStatus.CLOSED else self.active).shard_of(case.key)

    def index_stats(self) -> dict[str, int]:
        """The Message-ID index's size: entries (Message-IDs, tokens, case keys; an entry overwritten in a
        newer run counts until the runs merge) and the runs they are kept in (a lookup reads at most one
        part per run), for the benches and the tests of the merge policy."""
        return {"ids": len(self.ids), "runs": len(self.ids.runs)}

    def counts(self) -> dict[str, int]:
        return {
            "active": len(self.active),
            "closed": len(self.closed),
            "unmatched": len(self.unmatched_t),
            "quarantined": len(self.quarantine_t),
            "pending": len(self.outbox_pending()),
        }


