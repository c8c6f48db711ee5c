"""The files engine's layout: layout.json (version, shard counts) and the migration from layout 3, in which
one ledger of 4096 shards held all outgoing mail. Mixed into the engine (`files/engine.py`)."""

from __future__ import annotations

import contextlib
import logging
import os

from mailbot.storage import (
    StoreCorrupt,
    atomic_write_bytes,
    dump_document,
)
from mailbot.store.files.tables import Table, docs_of, document

log = logging.getLogger("mailbot")

LAYOUT_VERSION = 4  # 2: an interim layout (never released); 3: the ledger in 4096 shards (migrated)
SHARDS = {"active": 16384, "due": 16, "closed": 4096, "unsent": 16, "sends": 16, "unmatched": 256}


class Layout:
    """Reads and writes layout.json; migrates a layout-3 store in memory, its first commit writes it."""

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
