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

This is the only module that turns documents into models and back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import sys
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
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
from mailbot.storage import (
    BufferedAtomicStorage,
    StoreCorrupt,
    atomic_write_bytes,
    corrupt_file,
    dump_document,
    fsync_dir,
    read_document,
    write_batch,
)

log = logging.getLogger("mailbot")

__all__ = ["Store", "StoreCorrupt", "case_to_doc", "case_from_doc"]

_TABLE = "_default"
LAYOUT_VERSION = 4  # 2: an interim layout (never released); 3: the ledger in 4096 shards (migrated)
SHARDS = {"active": 16384, "due": 16, "closed": 4096, "unsent": 16, "sends": 16, "unmatched": 256}
# Bytes of JSON each table may keep cached (clean shards only; least recently used go first).
_CACHE_BYTES = {"active": 24 << 20, "due": 8 << 20, "closed": 8 << 20, "unsent": 1 << 30, "sends": 2 << 20,
                "unmatched": 2 << 20, "quarantine": 1 << 30, "ledger": 8 << 20}
RUN_PART = 512  # ids per part file of a run
MERGE_RATIO = 2  # merge the newest runs while the one before is at most this many times bigger
FOLD_LIMIT = 20_000  # runs up to this size are merged in memory within a commit; bigger ones stream


def _h64(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class _Health:
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


def _docs_of(data: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not data:
        return {}
    return {d["_k"]: d for d in data.get(_TABLE, {}).values() if isinstance(d, dict) and isinstance(d.get("_k"), str)}


def _document(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {_TABLE: {str(i): d for i, d in enumerate(docs.values(), 1)}}


class _Table:
    """Documents addressed by a string key (kept in each document as `_k`), hash-sharded over files.

    Shards are loaded on first use and cached up to a byte budget; changed shards stay until committed.
    """

    def __init__(self, root: Path | None, name: str, shards: int, health: _Health, single: bool = False) -> None:
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
        return 0 if self.count == 1 else _h64(key) % self.count

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
            docs = _docs_of(data)
            size = path.stat().st_size if data is not None else 0
        if keep or path is None:
            self.loaded[n] = docs
            self.sizes[n] = size
            self.cached_bytes += size
            self._evict()
        return docs

    def _evict(self) -> None:
        if self.root is None or self.cached_bytes <= self.budget:
            return
        for n in list(self.loaded):
            if self.cached_bytes <= self.budget * 3 // 4:
                break
            if n in self.dirty:
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

    def __len__(self) -> int:
        return sum(1 for _ in self.docs(keep=False))

    def storages(self) -> list[BufferedAtomicStorage]:
        out = []
        for n in sorted(self.dirty):
            storage = BufferedAtomicStorage(self.path(n), _document(self.loaded[n]), load=False)
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


class _Run:
    __slots__ = ("number", "count", "parts", "fps")

    def __init__(self, number: int, count: int, parts: int, fps: array) -> None:
        self.number, self.count, self.parts, self.fps = number, count, parts, fps

    def may_hold(self, fp: int) -> bool:
        i = bisect_left(self.fps, fp)
        return i < len(self.fps) and self.fps[i] == fp


def _fp_array(values: list[int] | array) -> array:
    out = array("I", sorted(values))
    assert out.itemsize == 4
    return out


def _fp_encode(fps: array) -> str:
    data = array("I", fps)
    if sys.byteorder == "big":
        data.byteswap()
    return base64.b64encode(data.tobytes()).decode("ascii")


def _fp_decode(text: str) -> array:
    data = array("I")
    data.frombytes(base64.b64decode(text))
    if sys.byteorder == "big":
        data.byteswap()
    return data


class _RunIndex:
    """Documents by key as immutable runs, newest last (the Message-ID index, the finished mail). A run's part
    `p` holds the keys whose 64-bit hash falls in the p-th slice of the hash space, so runs merge slice by
    slice in bounded memory."""

    def __init__(self, root: Path | None, health: _Health, name: str = "ids") -> None:
        self.dir = None if root is None else root / name
        self.health = health
        self.runs: list[_Run] = []
        self.memory: dict[str, dict[str, Any]] = {}  # the in-memory twin keeps everything here
        self.changes: dict[str, dict[str, Any]] = {}  # not yet committed
        self.parts: OrderedDict[tuple[int, int], dict[str, dict[str, Any]]] = OrderedDict()
        self.next_number = 1
        if self.dir is not None:
            manifest = health.read(self.dir / "runs.json")
            for entry in _docs_of(manifest).values():
                try:
                    number = int(entry["_k"])
                    fp_doc = health.read(self._fp_path(number))
                    fps = array("I") if fp_doc is None else _fp_decode(next(iter(_docs_of(fp_doc).values()))["fp"])
                    self.runs.append(_Run(number, int(entry["count"]), int(entry["parts"]), fps))
                except (KeyError, ValueError, TypeError, StopIteration) as e:
                    raise health.unreadable(self.dir / "runs.json", f"run {entry.get('_k')!r}", e) from None
            self.runs.sort(key=lambda r: r.number)
            self.next_number = max([r.number for r in self.runs] + self._numbers_on_disk() + [0]) + 1

    # --- files

    def _fp_path(self, number: int) -> Path:
        assert self.dir is not None
        return self.dir / f"r{number:06d}.fp.json"

    def _part_path(self, number: int, part: int) -> Path:
        assert self.dir is not None
        return self.dir / f"r{number:06d}.{part:04d}.json"

    def _numbers_on_disk(self) -> list[int]:
        if self.dir is None or not self.dir.is_dir():
            return []
        return [int(name[1:7]) for name in os.listdir(self.dir) if name.startswith("r") and name[1:7].isdigit()]

    def _part(self, run: _Run, part: int, keep: bool = True) -> dict[str, dict[str, Any]]:
        docs = self.parts.get((run.number, part))
        if docs is not None:
            self.parts.move_to_end((run.number, part))
            return docs
        docs = _docs_of(self.health.read(self._part_path(run.number, part)))
        if keep:
            self.parts[(run.number, part)] = docs
            while len(self.parts) > 64:
                self.parts.popitem(last=False)
        return docs

    # --- lookups

    def get(self, key: str) -> dict[str, Any] | None:
        doc = self.changes.get(key)
        if doc is not None:
            return doc
        if self.dir is None:
            return self.memory.get(key)
        h = _h64(key)
        fp = h & 0xFFFFFFFF
        for run in reversed(self.runs):
            if run.may_hold(fp):
                found = self._part(run, (h >> 32) * run.parts >> 32).get(key)
                if found is not None:
                    return found
        return None

    def may_hold(self, key: str) -> bool:
        """False when `key` is certainly not in the index (no file is read: the runs' fingerprints are in
        memory); True when it is, or, rarely, when a fingerprint of another key matches."""
        if key in self.changes:
            return True
        if self.dir is None:
            return key in self.memory
        fp = _h64(key) & 0xFFFFFFFF
        return any(run.may_hold(fp) for run in self.runs)

    def put(self, key: str, doc: dict[str, Any]) -> None:
        doc["_k"] = key
        if self.get(key) != doc:
            self.changes[key] = doc

    def __len__(self) -> int:
        return len(self.memory) if self.dir is None else sum(r.count for r in self.runs)

    def docs(self) -> Iterator[dict[str, Any]]:
        """Every document once, in its newest version (committed or not); reads every part of every run."""
        seen: set[str] = set()
        newest: list[dict[str, dict[str, Any]]] = [self.changes]
        if self.dir is None:
            newest.append(self.memory)
        for docs in newest:
            for key, doc in docs.items():
                if key not in seen:
                    seen.add(key)
                    yield doc
        for run in reversed(self.runs):
            for q in range(run.parts):
                for key, doc in self._part(run, q, keep=False).items():
                    if key not in seen:
                        seen.add(key)
                        yield doc

    # --- writing

    def _run_storages(self, number: int, docs: list[dict[str, Any]]) -> tuple[_Run, list[BufferedAtomicStorage]]:
        """Files of a new run holding `docs` (one per key)."""
        parts = max(1, -(-len(docs) // RUN_PART))
        buckets: list[dict[str, dict[str, Any]]] = [{} for _ in range(parts)]
        fps = []
        for doc in docs:
            h = _h64(doc["_k"])
            fps.append(h & 0xFFFFFFFF)
            buckets[(h >> 32) * parts >> 32][doc["_k"]] = doc
        run = _Run(number, len(docs), parts, _fp_array(fps))
        storages = []
        for p, bucket in enumerate(buckets):
            s = BufferedAtomicStorage(self._part_path(number, p), _document(bucket), load=False)
            s.dirty = True
            storages.append(s)
        fp = BufferedAtomicStorage(self._fp_path(number), {_TABLE: {"1": {"_k": "fp", "fp": _fp_encode(run.fps)}}},
                                   load=False)
        fp.dirty = True
        storages.append(fp)
        return run, storages

    def _manifest(self, runs: list[_Run]) -> BufferedAtomicStorage:
        assert self.dir is not None
        docs = {str(r.number): {"_k": str(r.number), "count": r.count, "parts": r.parts} for r in runs}
        s = BufferedAtomicStorage(self.dir / "runs.json", _document(docs), load=False)
        s.dirty = True
        return s

    def storages(self) -> tuple[list[BufferedAtomicStorage], list[_Run]]:
        """The files of this commit's run (and the new manifest), and the runs as they will then be.

        Small runs at the end are folded into the new run in memory (the binary-counter rule: fold the newest
        while it is at most MERGE_RATIO times what is accumulated), so a commit writes one run and the number
        of runs stays logarithmic; merging big runs is left to `merge_big_runs`, which streams."""
        if not self.changes or self.dir is None:
            return [], self.runs
        runs = list(self.runs)
        folded: list[_Run] = []
        total = len(self.changes)
        while runs and runs[-1].count <= MERGE_RATIO * total and total + runs[-1].count <= FOLD_LIMIT:
            folded.append(runs.pop())
            total += folded[-1].count
        docs: dict[str, dict[str, Any]] = {}
        for run in reversed(folded):  # oldest first: newer documents overwrite older ones
            for q in range(run.parts):
                docs.update(self._part(run, q, keep=False))
        docs.update(self.changes)
        run, storages = self._run_storages(self.next_number, list(docs.values()))
        runs.append(run)
        return [*storages, self._manifest(runs)], runs

    def committed(self, runs: list[_Run]) -> None:
        if self.dir is None:
            self.memory.update(self.changes)
        elif runs is not self.runs:
            gone = {r.number for r in self.runs} - {r.number for r in runs}
            self.runs = runs
            self.next_number = runs[-1].number + 1
            if gone:
                for key in [k for k in self.parts if k[0] in gone]:
                    del self.parts[key]
                self._remove_unlisted()
        self.changes.clear()

    def merge_big_runs(self) -> int:
        """Merge the newest runs while the one before is not much bigger, part by part in bounded memory:
        every id is rewritten about log2(ids / batch) times over its life."""
        written = 0
        while (self.dir is not None and len(self.runs) >= 2
               and self.runs[-2].count <= MERGE_RATIO * self.runs[-1].count):
            written += self._merge(self.runs[-2], self.runs[-1])
        return written

    def _merge(self, old: _Run, new: _Run) -> int:
        number = self.next_number
        total = old.count + new.count
        parts = max(1, -(-total // RUN_PART))
        storages = []
        fps: list[int] = []
        count = 0
        for p in range(parts):
            # The top 32 bits t of a key's hash put it in part (t * parts) >> 32: this part holds t_lo..t_hi.
            t_lo, t_hi = -(-(p << 32) // parts), -(-((p + 1) << 32) // parts) - 1
            merged: dict[str, dict[str, Any]] = {}
            for run in (old, new):  # the newer run wins
                for q in range((t_lo * run.parts) >> 32, ((t_hi * run.parts) >> 32) + 1):
                    for key, doc in self._part(run, q, keep=False).items():
                        if ((_h64(key) >> 32) * parts) >> 32 == p:
                            merged[key] = doc
            count += len(merged)
            fps.extend(_h64(k) & 0xFFFFFFFF for k in merged)
            s = BufferedAtomicStorage(self._part_path(number, p), _document(merged), load=False)
            s.dirty = True
            storages.append(s)
        run = _Run(number, count, parts, _fp_array(fps))
        fp = BufferedAtomicStorage(self._fp_path(number), {_TABLE: {"1": {"_k": "fp", "fp": _fp_encode(run.fps)}}},
                                   load=False)
        fp.dirty = True
        runs = [*self.runs[:-2], run]
        written = write_batch([*storages, fp, self._manifest(runs)])
        self.runs = runs
        self.next_number = number + 1
        for key in [k for k in self.parts if k[0] in (old.number, new.number)]:
            del self.parts[key]
        self._remove_unlisted()
        return written

    def _remove_unlisted(self) -> None:
        """Delete run files the manifest no longer lists (merged away, or left by a crash)."""
        assert self.dir is not None
        listed = {r.number for r in self.runs}
        for name in os.listdir(self.dir):
            if name.startswith("r") and name[1:7].isdigit() and int(name[1:7]) not in listed:
                os.unlink(self.dir / name)  # no sync needed: a file that comes back is unlisted again


class Store:
    """The TinyDB-backed store. `root=None` gives the in-memory twin with identical behaviour."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.health = _Health()
        version, shards = self._layout()
        h = self.health
        self.active = _Table(root, "active", shards["active"], h)
        self.due = _Table(root, "due", shards["due"], h)
        self.closed = _Table(root, "closed", shards["closed"], h)
        self.ids = _RunIndex(root, h)
        self.unsent = _Table(root, "unsent", shards["unsent"], h)
        self.finished = _RunIndex(root, h, "finished")
        self.sends = _Table(root, "sends", shards["sends"], h)
        self.unmatched_t = _Table(root, "unmatched", shards["unmatched"], h)
        self.quarantine_t = _Table(root, "quarantine", 1, h, single=True)
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
        self._replay(_Table(root, "ledger", shards.get("ledger", 4096), h) if self._migrating else None)

    def _layout(self) -> tuple[int, dict[str, int]]:
        if self.root is None:
            return LAYOUT_VERSION, dict(SHARDS)
        data = self.health.read(self.root / "layout.json")
        if data is None:
            if (self.root / "pending.json").exists() or (self.root / "active" / "000.json").exists():
                raise StoreCorrupt(f"{self.root} was written by an older mailbot (store layout 1); "
                                   "move it away and re-import the mail (`mailbot import`)")
            return LAYOUT_VERSION, dict(SHARDS)
        meta = _docs_of(data).get("layout", {})
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
        atomic_write_bytes(self.root / "layout.json", dump_document(_document(
            {"layout": {"_k": "layout", "version": LAYOUT_VERSION, "shards": self._shard_counts()}})))

    def _migrate_ledger(self, old: _Table) -> None:
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

    def _case(self, table: _Table, doc: dict[str, Any]) -> Case:
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
            self.due.put(key, {"due": _utc(action.due), "kind": action.kind})
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
        limit = _utc(now)
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
        return None if doc is None else _public(doc)

    def remember(self, message_id: str, case_key: str, place: str = "case") -> None:
        self.ids.put(message_id, {"case": case_key, "place": place})

    # --- unmatched and quarantined mail -------------------------------------------------------------

    def add_unmatched(self, record: dict[str, Any]) -> None:
        self.unmatched_t.put(record["message_id"], dict(record))

    def unmatched(self) -> list[dict[str, Any]]:
        return [_public(d) for d in self.unmatched_t.docs(keep=False)]

    def add_quarantined(self, record: dict[str, Any]) -> None:
        self.quarantine_t.put(record["ref"], dict(record))

    def quarantined(self) -> list[dict[str, Any]]:
        return [_public(d) for d in self.quarantine_t.docs()]

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
        return None if doc is None else _public(doc)

    def outbox_record(self, entry: dict[str, Any]) -> None:
        """Record an intent to send, before sending (status "pending")."""
        self.unsent.put(entry["action_id"], {**entry, "status": "pending"})

    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        """Give an entry its final status ("sent" | "failed"). A sent mail's raw bytes are not kept (the Sent
        folder or the outbox folder has the copy); a failed one keeps them."""
        entry = self.unsent.get(action_id) or self.finished.get(action_id)
        if entry is None:
            return
        done = {**_public(entry), **details, "status": status}
        if status == "sent":
            done.pop("raw", None)
        self.unsent.delete(action_id)
        self.finished.put(action_id, done)

    def outbox_update(self, action_id: str, **details: Any) -> None:
        entry = self.unsent.get(action_id)
        if entry is not None:
            self.unsent.put(action_id, {**_public(entry), **details})

    def outbox_pending(self) -> list[dict[str, Any]]:
        return sorted((_public(d) for d in self.unsent.docs()), key=lambda d: d.get("recorded", ""))

    def outbox_held(self, case_key: str) -> list[dict[str, Any]]:
        """The case's unsent mail that waits for a later time (`not_before`), oldest first. Asked for many
        incoming mails: it copies only the matches, not the whole unsent ledger."""
        held = (_public(d) for d in self.unsent.docs() if d.get("case") == case_key and d.get("not_before"))
        return sorted(held, key=lambda d: d.get("recorded", ""))

    def outbox_entries(self) -> Iterator[dict[str, Any]]:
        """Every mail the ledger knows, unsent first (reads all of it: for checks, not for the bot's work)."""
        for doc in (*self.unsent.docs(keep=False), *self.finished.docs()):
            yield _public(doc)

    def sends_since(self, address: str, since: datetime) -> int:
        """How many mails went to `address` at or after `since` (for the per-recipient daily cap)."""
        limit = _utc(since)
        return sum(1 for t in self._send_times(address) if t >= limit)

    def note_send(self, address: str, at: datetime) -> None:
        # Only the last few days matter for a daily cap; keep the document small.
        times = [*self._send_times(address), _utc(at)][-20:]
        self.sends.put(address, {"times": times})

    def _send_times(self, address: str) -> list[str]:
        doc = self.sends.get(address)
        return list(doc["times"]) if doc else []

    # --- checkpoints (IMAP folder, UIDVALIDITY, last UID) -------------------------------------------

    def _checkpoint_docs(self) -> dict[str, dict[str, Any]]:
        if self._checkpoints is None:
            self._checkpoints = {} if self.root is None else _docs_of(self.health.read(self.root / "checkpoints.json"))
        return self._checkpoints

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        doc = self._checkpoint_docs().get(key)
        return None if doc is None else _public(doc)

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        """Written at once (atomically), independently of `commit()`."""
        docs = self._checkpoint_docs()
        docs[key] = {**value, "_k": key}
        if self.root is not None:
            atomic_write_bytes(self.root / "checkpoints.json", dump_document(_document(docs)))

    # --- durability ----------------------------------------------------------------------------------

    def _journal_path(self) -> Path | None:
        return None if self.root is None else self.root / "journal.json"

    def _replay(self, old_ledger: _Table | None = None) -> None:
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
            entries = list(_docs_of(data).values())
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
            journal_file = BufferedAtomicStorage(journal, {_TABLE: entries}, load=False)
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


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_k"}


def _utc(d: datetime) -> str:
    """A fixed-width UTC timestamp: these strings compare like the instants they name."""
    return d.astimezone(UTC).isoformat(timespec="microseconds")


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
        "timezone": case.timezone,
        "failed_addresses": list(case.failed_addresses),
        "closure": None if case.closure is None else vars(case.closure).copy(),
        "notes": list(case.notes),
        "outsiders": list(case.outsiders),
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
                "matched_by": e.matched_by,
                "internal": e.internal,
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
        timezone=doc.get("timezone"),
        failed_addresses=tuple(doc.get("failed_addresses", ())),
        closure=None if closure is None else ClosureFields(**closure),
        notes=tuple(doc.get("notes", ())),
        # Older documents have neither: their customers stay parties, their entries stay as shown before.
        outsiders=tuple(doc.get("outsiders", ())),
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
                matched_by=e.get("matched_by", ""),
                internal=bool(e.get("internal", False)),
            )
            for e in doc.get("timeline", ())
        ),
    )
