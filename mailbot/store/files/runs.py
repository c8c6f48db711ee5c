"""The files engine's run index: documents by key as immutable, merged runs (a small log-structured merge tree)."""

from __future__ import annotations

import base64
import os
import sys
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailbot.storage import BufferedAtomicStorage, write_batch
from mailbot.store.files.tables import TABLE, Health, docs_of, document, h64

RUN_PART = 512  # ids per part file of a run
MERGE_RATIO = 2  # merge the newest runs while the one before is at most this many times bigger
FOLD_LIMIT = 20_000  # runs up to this size are merged in memory within a commit; bigger ones stream


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


class RunIndex:
    """Documents by key as immutable runs, newest last (the Message-ID index, the finished mail). A run's part
    `p` holds the keys whose 64-bit hash falls in the p-th slice of the hash space, so runs merge slice by
    slice in bounded memory."""

    def __init__(self, root: Path | None, health: Health, name: str = "ids") -> None:
        self.dir = None if root is None else root / name
        self.health = health
        self.runs: list[_Run] = []
        self.memory: dict[str, dict[str, Any]] = {}  # the in-memory twin keeps everything here
        self.changes: dict[str, dict[str, Any]] = {}  # not yet committed
        self.parts: OrderedDict[tuple[int, int], dict[str, dict[str, Any]]] = OrderedDict()
        # What `get_many` read from the committed runs (None: absent), until the next commit: a bulk load
        # compares a record with it and then `put`s, and the put's own comparison must not read a part again.
        self.read_ahead: dict[str, dict[str, Any] | None] = {}
        self.next_number = 1
        if self.dir is not None:
            manifest = health.read(self.dir / "runs.json")
            for entry in docs_of(manifest).values():
                try:
                    number = int(entry["_k"])
                    fp_doc = health.read(self._fp_path(number))
                    fps = array("I") if fp_doc is None else _fp_decode(next(iter(docs_of(fp_doc).values()))["fp"])
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
        docs = docs_of(self.health.read(self._part_path(run.number, part)))
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
        if key in self.read_ahead:
            return self.read_ahead[key]
        h = h64(key)
        fp = h & 0xFFFFFFFF
        for run in reversed(self.runs):
            if run.may_hold(fp):
                found = self._part(run, (h >> 32) * run.parts >> 32).get(key)
                if found is not None:
                    return found
        return None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The documents of these keys that exist, as `get` finds them, reading each part of a run at most once
        (a random key's part is rarely among the cached ones: one `get` a key reads one file a key)."""
        found: dict[str, dict[str, Any]] = {}
        wanted: dict[tuple[int, int], list[str]] = {}  # (index of the run, part) → keys to look for there
        newest_first = list(reversed(self.runs))
        for key in keys:
            doc = self.changes.get(key)
            if doc is None and self.dir is None:
                doc = self.memory.get(key)
            elif doc is None and key in self.read_ahead:
                doc = self.read_ahead[key]
            elif doc is None:
                h = h64(key)
                fp = h & 0xFFFFFFFF
                places = [(i, (h >> 32) * run.parts >> 32) for i, run in enumerate(newest_first) if run.may_hold(fp)]
                for place in places:
                    wanted.setdefault(place, []).append(key)
                self.read_ahead[key] = None  # until a part below holds it
                continue
            if doc is not None:
                found[key] = doc
        # Newest run first: a key an older run also holds keeps the newer document.
        for (i, part), in_part in sorted(wanted.items()):
            docs = self._part(newest_first[i], part, keep=False)
            for key in in_part:
                doc = docs.get(key)
                if doc is not None and self.read_ahead[key] is None:
                    self.read_ahead[key] = found[key] = doc
        return found

    def may_hold(self, key: str) -> bool:
        """False when `key` is certainly not in the index (no file is read: the runs' fingerprints are in
        memory); True when it is, or, rarely, when a fingerprint of another key matches."""
        if key in self.changes:
            return True
        if self.dir is None:
            return key in self.memory
        fp = h64(key) & 0xFFFFFFFF
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
            h = h64(doc["_k"])
            fps.append(h & 0xFFFFFFFF)
            buckets[(h >> 32) * parts >> 32][doc["_k"]] = doc
        run = _Run(number, len(docs), parts, _fp_array(fps))
        storages = []
        for p, bucket in enumerate(buckets):
            s = BufferedAtomicStorage(self._part_path(number, p), document(bucket), load=False)
            s.dirty = True
            storages.append(s)
        fp = BufferedAtomicStorage(self._fp_path(number), {TABLE: {"1": {"_k": "fp", "fp": _fp_encode(run.fps)}}},
                                   load=False)
        fp.dirty = True
        storages.append(fp)
        return run, storages

    def _manifest(self, runs: list[_Run]) -> BufferedAtomicStorage:
        assert self.dir is not None
        docs = {str(r.number): {"_k": str(r.number), "count": r.count, "parts": r.parts} for r in runs}
        s = BufferedAtomicStorage(self.dir / "runs.json", document(docs), load=False)
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
        self.read_ahead.clear()
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
                        if ((h64(key) >> 32) * parts) >> 32 == p:
                            merged[key] = doc
            count += len(merged)
            fps.extend(h64(k) & 0xFFFFFFFF for k in merged)
            s = BufferedAtomicStorage(self._part_path(number, p), document(merged), load=False)
            s.dirty = True
            storages.append(s)
        run = _Run(number, count, parts, _fp_array(fps))
        fp = BufferedAtomicStorage(self._fp_path(number), {TABLE: {"1": {"_k": "fp", "fp": _fp_encode(run.fps)}}},
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

