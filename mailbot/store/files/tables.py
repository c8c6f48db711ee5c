"""The files engine's tables: documents by key, hash-sharded over TinyDB JSON files, cached to a byte budget."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailbot.storage import BufferedAtomicStorage, StoreCorrupt, corrupt_file, read_document

TABLE = "_default"
# Bytes of JSON each table may keep cached (clean shards only; least recently used go first).
_CACHE_BYTES = {"active": 24 << 20, "due": 8 << 20, "closed": 8 << 20, "unsent": 1 << 30, "sends": 2 << 20,
                "unmatched": 2 << 20, "quarantine": 1 << 30, "ledger": 8 << 20}


def h64(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class Health:
    """Shared by the tables: once a file was found corrupt, nothing more is written."""

    def __init__(self) -> None:
        self.corrupt: StoreCorrupt | None = None

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = read_document(path)
            # Valid JSON is not enough: a document without its key would be skipped silently, and the next
            # commit would write the file again without it (a case's history lost).
            if data is not None and not all(isinstance(d, dict) and isinstance(d.get("_k"), str)
                                            for table in data.values() for d in table.values()):
                raise corrupt_file(path, path.read_bytes(), "holds a document without its key (_k)")
            return data
        except StoreCorrupt as e:
            self.corrupt = self.corrupt or e
            raise

    def unreadable(self, path: Path | None, what: str, error: Exception) -> StoreCorrupt:
        """A document that is valid JSON but not what mailbot wrote (a field missing or mangled): from now on
        nothing is written, as for a file that is not JSON at all."""
        why = f"{type(error).__name__}: {error}"
        if path is not None and path.exists():
            e = corrupt_file(path, path.read_bytes(), f"holds {what} that cannot be read ({why})")
        else:  # the in-memory twin, or a document not yet on disk
            e = StoreCorrupt(f"{what} cannot be read ({why}); mailbot will not overwrite it")
        self.corrupt = self.corrupt or e
        return e


def docs_of(data: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not data:
        return {}
    return {d["_k"]: d for d in data.get(TABLE, {}).values() if isinstance(d, dict) and isinstance(d.get("_k"), str)}


def document(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {TABLE: {str(i): d for i, d in enumerate(docs.values(), 1)}}


class Table:
    """Documents addressed by a string key (kept in each document as `_k`), hash-sharded over files.

    Shards are loaded on first use and cached up to a byte budget; changed shards stay until committed.
    """

    def __init__(self, root: Path | None, name: str, shards: int, health: Health, single: bool = False) -> None:
        self.name = name
        self.count = shards
        self.single = single
        self.root = root
        self.health = health
        self.budget = _CACHE_BYTES.get(name, 4 << 20)
        self.loaded: OrderedDict[int, dict[str, dict[str, Any]]] = OrderedDict()
        self.sizes: dict[int, int] = {}
        self.cached_bytes = 0
        self.dirty: set[int] = set()
        self.changes: dict[str, dict[str, Any] | None] = {}  # since the last commit, for the journal

    def path(self, n: int) -> Path | None:
        if self.root is None:
            return None
        return self.root / f"{self.name}.json" if self.single else self.root / self.name / f"{n:04d}.json"

    def shard_of(self, key: str) -> int:
        return 0 if self.count == 1 else h64(key) % self.count

    def shard(self, n: int, keep: bool = True) -> dict[str, dict[str, Any]]:
        docs = self.loaded.get(n)
        if docs is not None:
            self.loaded.move_to_end(n)
            return docs
        path = self.path(n)
        size = 0
        if path is None:
            docs = {}
        else:
            data = self.health.read(path)
            docs = docs_of(data)
            size = path.stat().st_size if data is not None else 0
        if keep or path is None:
            self.loaded[n] = docs
            self.sizes[n] = size
            self.cached_bytes += size
            self._evict(keep=n)
        return docs

    def _evict(self, keep: int | None = None) -> None:
        """Drop clean shards, oldest first, down to 3/4 of the budget. Never a changed one, nor `keep`: the shard
        just handed to `put` or `delete`, which change the very dict they were given (dropping it from the
        cache there lost the change: the commit wrote the file as it was read again)."""
        if self.root is None or self.cached_bytes <= self.budget:
            return
        for n in list(self.loaded):
            if self.cached_bytes <= self.budget * 3 // 4:
                break
            if n in self.dirty or n == keep:
                continue
            del self.loaded[n]
            self.cached_bytes -= self.sizes.pop(n, 0)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.shard(self.shard_of(key)).get(key)

    def put(self, key: str, doc: dict[str, Any]) -> None:
        """Store `doc` (a dict the store owns from now on) under `key`; an identical document is no change."""
        doc["_k"] = key
        n = self.shard_of(key)
        docs = self.shard(n)
        if docs.get(key) == doc:
            return
        docs[key] = doc
        self.dirty.add(n)
        self.changes[key] = doc

    def delete(self, key: str) -> None:
        n = self.shard_of(key)
        docs = self.shard(n)
        if key in docs:
            del docs[key]
            self.dirty.add(n)
            self.changes[key] = None

    def _numbers(self) -> list[int]:
        if self.root is None or self.single:
            return sorted(self.loaded) if self.root is None else [0]
        try:
            names = os.listdir(self.root / self.name)
        except FileNotFoundError:
            names = []
        on_disk = {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}
        return sorted(on_disk | set(self.loaded))

    def docs(self, keep: bool = True) -> Iterator[dict[str, Any]]:
        """Every document, shard by shard; with keep=False shards not already cached are read and dropped."""
        for n in self._numbers():
            yield from list(self.shard(n, keep).values())

    def shard_bytes(self, part: int = 0, parts: int = 1
                    ) -> Iterator[tuple[int, dict[str, dict[str, Any]] | bytes]]:
        """Every shard (or those numbered `part` modulo `parts`), undecoded where possible: (n, its file's
        bytes), or (n, its documents) when the shard is in memory (cached, or changed since the last commit:
        then the documents, not the file, are the truth). Nothing is cached; a shard whose file went away
        meanwhile is empty, as `docs` reads it."""
        for n in self._numbers():
            if n % parts != part:
                continue
            docs = self.loaded.get(n)
            if docs is not None:
                yield n, docs
                continue
            path = self.path(n)
            try:
                raw = path.read_bytes() if path is not None else b""
            except FileNotFoundError:
                continue
            yield n, raw

    def __len__(self) -> int:
        return sum(1 for _ in self.docs(keep=False))

    def storages(self) -> list[BufferedAtomicStorage]:
        out = []
        for n in sorted(self.dirty):
            storage = BufferedAtomicStorage(self.path(n), document(self.loaded[n]), load=False)
            storage.dirty = True
            out.append(storage)
        return out

    def committed(self, written: list[BufferedAtomicStorage]) -> None:
        for s in written:
            if s.path is not None:
                n = 0 if self.single else int(s.path.stem)
                self.cached_bytes += s.size - self.sizes.get(n, 0)
                self.sizes[n] = s.size
        self.dirty.clear()
        self.changes.clear()
        self._evict()

