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

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mailbot.models import Case, CaseStatus
from mailbot.storage import (
    BufferedAtomicStorage,
    StoreCorrupt,
    atomic_write_bytes,
    dump_document,
    fsync_dir,
    write_batch,
)
from mailbot.store.codec import case_from_doc, case_to_doc, public, utc
from mailbot.store.files.runs import RunIndex
from mailbot.store.files.tables import TABLE, Health, Table, docs_of, document

log = logging.getLogger("mailbot")

__all__ = ["Store", "StoreCorrupt"]

LAYOUT_VERSION = 4  # 2: an interim layout (never released); 3: the ledger in 4096 shards (migrated)
SHARDS = {"active": 16384, "due": 16, "closed": 4096, "unsent": 16, "sends": 16, "unmatched": 256}


class Store:
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

    def _layout(self) -> tuple[int, dict[str, int]]:
        if self.root is None:
            return LAYOUT_VERSION, dict(SHARDS)
        data = self.health.read(self.root / "layout.json")
        if data is None:
            if (self.root / "pending.json").exists() or (self.root / "active" / "000.json").exists():
                raise StoreCorrupt(f"{self.root} was written by an older mailbot (store layout 1); "
                                   "move it away and re-import the mail (`mailbot import`)")
            return LAYOUT_VERSION, dict(SHARDS)
        meta = docs_of(data).get("layout", {})
        version = meta.get("version")
        if version not in (3, LAYOUT_VERSION):
            raise StoreCorrupt(f"{self.root / 'layout.json'}: store layout {version!r}, this mailbot "
                               f"reads layout {LAYOUT_VERSION}; mailbot will not overwrite it")
        try:
            shards = {k: int(v) for k, v in meta.get("shards", {}).items()}
            if any(n < 1 for n in shards.values()):
                raise ValueError("a shard count below 1")
        except (ValueError, TypeError, AttributeError) as e:
            raise self.health.unreadable(self.root / "layout.json", "the shard counts", e) from None
        return version, {**SHARDS, **shards}

    def _write_layout(self) -> None:
        assert self.root is not None
        atomic_write_bytes(self.root / "layout.json", dump_document(document(
            {"layout": {"_k": "layout", "version": LAYOUT_VERSION, "shards": self._shard_counts()}})))

    def _migrate_ledger(self, old: Table) -> None:
        """Layout 3 → 4, in memory: the ledger's pending mail goes to unsent/, the rest to finished/."""
        for doc in old.docs(keep=False):
            entry = dict(doc)
            key = entry.pop("_k")
            if self.unsent.get(key) is not None or self.finished.get(key) is not None:
                continue  # written by a migrating commit that crashed before layout.json said 4: newer
            if entry.get("status") == "pending":
                self.unsent.put(key, entry)
            else:
                self.finished.put(key, entry)

    def _try_to_finish_migration(self) -> None:
        if self.root is None or not (self._migrating or self._leftovers):
            return
        try:
            self._finish_migration()
        except OSError as e:  # the commit itself is done; until layout.json says 4 the store reads as before
            log.warning("store: the migration to layout %d is not finished yet (%s); the next commit tries "
                        "again", LAYOUT_VERSION, e)

    def _finish_migration(self) -> None:
        """After the commit that wrote the migrated tables: layout.json says 4, then the old files go. A crash
        before layout.json migrates again (the old ledger is still there); after it, the next commit removes
        what is left (pending_index.json goes last, so while it exists there is something to remove)."""
        assert self.root is not None
        if self._migrating:
            self._write_layout()
            self._migrating = False
            self._leftovers = True
        if self._leftovers:
            ledger = self.root / "ledger"
            if ledger.is_dir():
                for name in os.listdir(ledger):
                    os.unlink(ledger / name)
                ledger.rmdir()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "pending_index.json")
            self._leftovers = False

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

    def remember(self, message_id: str, case_key: str, place: str = "case") -> None:
        self.ids.put(message_id, {"case": case_key, "place": place})

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

    # --- durability ----------------------------------------------------------------------------------

    def _journal_path(self) -> Path | None:
        return None if self.root is None else self.root / "journal.json"

    def _replay(self, old_ledger: Table | None = None) -> None:
        """A journal left by a crash holds a complete commit: apply it (in memory; the next commit writes it).

        With a layout-3 store (`old_ledger`), the journal's ledger changes (a layout-3 commit) are applied to
        that ledger, the other changes to their tables (they may be the migrating commit itself), and only
        then is the old ledger migrated, skipping what unsent/ and finished/ already hold (always newer)."""
        path = self._journal_path()
        self._stale_journal = False
        entries = []
        if path is not None:
            data = self.health.read(path)
            self._stale_journal = data is not None
            entries = list(docs_of(data).values())
        if old_ledger is not None:
            for entry in entries:
                if entry["t"] == "ledger":
                    (old_ledger.delete(entry["key"]) if entry["d"] is None
                     else old_ledger.put(entry["key"], entry["d"]))
        for entry in entries:
            name, key, doc = entry["t"], entry["key"], entry["d"]
            if name in self._runs:
                self._runs[name].put(key, doc)
            elif name in ("ledger", "pending_index") and old_ledger is not None:
                continue  # applied above; layout 3's list of ledger shards is not needed (all are read)
            elif name not in self._by_name:
                raise self.health.unreadable(path, f"a change to an unknown table {name!r}", KeyError(name))
            elif doc is None:
                self._by_name[name].delete(key)
            else:
                self._by_name[name].put(key, doc)
        if old_ledger is not None:
            self._migrate_ledger(old_ledger)

    def _changes(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        changes: list[tuple[str, str, dict[str, Any] | None]] = []
        for name, runs in self._runs.items():
            changes.extend((name, k, d) for k, d in runs.changes.items())
        for table in self._tables:
            changes.extend((table.name, k, d) for k, d in table.changes.items())
        return changes

    def commit(self) -> int:
        """Make every change since the last commit durable, atomically; returns the number of files written."""
        if self.health.corrupt is not None:
            raise StoreCorrupt(f"not writing anything: {self.health.corrupt}")
        changes = self._changes()
        if not changes:
            if self._stale_journal and self.root is not None:  # replayed, and everything was already on disk
                os.unlink(self.root / "journal.json")
                self._stale_journal = False
                self._journal_unlinked = True
            self._try_to_finish_migration()
            return 0
        if self.root is None:
            for index in self._runs.values():
                index.committed(index.runs)
            for table in self._tables:
                table.committed([])
            return 0
        journal = self._journal_path()
        assert journal is not None
        if not (self.root / "layout.json").exists():
            self._write_layout()
        finished_files, finished_runs = self.finished.storages()
        id_files, runs = self.ids.storages()
        per_table = [(t, t.storages()) for t in self._tables]
        files = {t.name: storages for t, storages in per_table}
        # Shard files in the order outbox ledger → ids → cases (the journal makes the commit atomic in any order).
        batch = [*files["unsent"], *finished_files, *files["sends"], *files["unmatched"], *files["quarantine"],
                 *id_files, *files["closed"], *files["active"], *files["due"]]
        if len(batch) == 1 and not self._stale_journal:
            if self._journal_unlinked:
                # The last journal's unlink must be durable before a commit without one: if power loss
                # brought it back, replaying it would undo this commit.
                fsync_dir(self.root)
                self._journal_unlinked = False
            written = write_batch(batch)  # one file is atomic on its own: no journal needed
        else:
            entries = {str(i): {"_k": f"{t}/{k}", "t": t, "key": k, "d": d} for i, (t, k, d) in enumerate(changes, 1)}
            journal_file = BufferedAtomicStorage(journal, {TABLE: entries}, load=False)
            journal_file.dirty = True
            written = write_batch(batch, journal=journal_file)
            os.unlink(journal)  # no sync needed yet: replaying a finished commit changes nothing
            self._journal_unlinked = True
        self._stale_journal = False
        self.finished.committed(finished_runs)
        self.ids.committed(runs)
        for table, storages in per_table:
            table.committed(storages)
        self._try_to_finish_migration()
        if self._runs_to_tidy:
            # A process killed between a commit's manifest rename and the removal of the runs it merged away
            # leaves their files behind (never read again); the first commit of the next process removes them.
            for index in self._runs.values():
                if index.dir is not None and index.dir.is_dir():
                    index._remove_unlisted()
            self._runs_to_tidy = False
        return written + self.finished.merge_big_runs() + self.ids.merge_big_runs()

    def _shard_counts(self) -> dict[str, int]:
        return {t.name: t.count for t in self._tables if not t.single}

    # --- export and import (the engine-neutral dump: mailbot/store/dump.py) ---------------------------

    def id_entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Message-ID and token entries; not the `case:KEY` ones (engine-internal, `put_case` writes them)."""
        for doc in self.ids.docs():
            if not doc["_k"].startswith("case:"):
                yield doc["_k"], public(doc)

    def restore_id(self, key: str, doc: dict[str, Any]) -> None:
        self.ids.put(key, public(doc))

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


