"""The files engine's atomic commit: a journal of every changed document, then the shard files as one
batch, then the journal removed; a journal left by a crash is replayed on open. Mixed into the engine."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mailbot.storage import (
    BufferedAtomicStorage,
    StoreCorrupt,
    fsync_dir,
    write_batch,
)
from mailbot.store.files.tables import TABLE, Table, docs_of

log = logging.getLogger("mailbot")



class Journal:
    """`commit()` and the replay of a journal a crash left behind."""

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
