"""Crash-safe files for the store: TinyDB JSON documents written by temp file + rename, one sync per batch.

TinyDB's JSONStorage rewrites its file in place (a crash mid-write leaves invalid JSON) and rewrites it on
every single insert. Here a file is only ever replaced whole: its new content goes to `.NAME.tmp`, the data is
made durable, then the temp file is renamed over the old one and the directory entry is synced. A batch of
files (one store commit) is written in two phases — `prepare()` every file, one `sync_files()`, then
`flush()` (rename) every file — so a commit costs one filesystem sync instead of one fsync per file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinydb.storages import Storage


class StoreCorrupt(Exception):
    """A state file that is not a valid TinyDB JSON document: we refuse to start rather than overwrite it."""


class StoreWriteError(OSError):
    """A state file could not be written (disk full, read-only, no permission). Nothing was replaced: every
    file keeps its last complete content (temp files are removed), and the caller's changes are still in
    memory, to be written by the next commit."""

    def __init__(self, where: object, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.reason = (f"cannot save the state ({where}): {error.strerror or error}; nothing was changed "
                       "on disk, and what was not saved is done again on the next try")

    def __str__(self) -> str:
        return self.reason


def _write_errors_explained(fn: Any) -> Any:
    """OSError from a state write → StoreWriteError naming the file: one clear line, and not mistaken for a
    network error by callers that catch OSError around I/O (the IMAP adapter writes its checkpoint)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreWriteError:
            raise
        except OSError as e:
            target = args[0] if args else "?"
            if isinstance(target, list):
                target = next((s.path for s in target if getattr(s, "path", None) is not None), "?")
            raise StoreWriteError(e.filename or target, e) from e

    return wrapper


@_write_errors_explained
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk (POSIX).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _libc_syncfs() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _libc_syncfs()


SYNCFS_FROM = 8  # batches of at least this many files (or directories) use one syncfs


def sync_files(paths: Iterable[Path]) -> None:
    """Make the data of these (already written, closed) files durable.

    For a big batch on Linux, one syncfs(2) of the filesystem holding them replaces an fsync per file (since
    5.8 it reports write-back errors). A small batch is fsynced file by file: syncfs also waits for everybody
    else's dirty data on that filesystem, which on a busy host costs more than a few fsyncs.
    """
    files = list(paths)
    if not files:
        return
    if _SYNCFS is not None and len(files) >= SYNCFS_FROM:
        fd = os.open(files[0].parent, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dump_document(data: Any) -> bytes:
    """Compact UTF-8 JSON. Lone surrogates (undecodable header bytes) are kept as \\u escapes."""
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), check_circular=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, separators=(",", ":"), check_circular=False).encode("ascii")


def read_document(path: Path, empty_ok: bool = False) -> dict[str, Any] | None:
    """A TinyDB JSON file's content, None when the file does not exist.

    A file that is not valid JSON (or empty, unless `empty_ok`) raises StoreCorrupt; a `.corrupt-<time>` copy
    is kept beside it and the original is left exactly as found.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    problem = ""
    data: Any = None
    if not raw.strip():
        if empty_ok:
            return None
        problem = "the file is empty"
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            problem = f"{e.__class__.__name__}: {e}"
        else:
            if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
                problem = "it does not hold a TinyDB document store"
    if problem:
        raise corrupt_file(path, raw, f"is not valid JSON ({problem})")
    return data


def corrupt_file(path: Path, raw: bytes, what: str) -> StoreCorrupt:
    """The error for a state file that cannot be used as it is, with a `.corrupt-<time>` copy kept beside it
    (one per distinct content: a service restarted in a loop must not fill the disk with copies)."""
    same = [p for p in sorted(path.parent.glob(f"{glob.escape(path.name)}.corrupt-*")) if p.read_bytes() == raw]
    backup = same[0] if same else path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    if not backup.exists():
        shutil.copy2(path, backup)
    return StoreCorrupt(
        f"{path} {what}; a copy was kept at {backup}. "
        "Restore the file from a backup or move it away; mailbot will not overwrite it"
    )


class BufferedAtomicStorage(Storage):
    """TinyDB storage: reads once, keeps data in memory, persists atomically.

    `flush()` alone writes the file the safe way (temp, fsync, rename, fsync dir). For a batch, call
    `prepare()` on every storage, `sync_files()` on the prepared temp files, then `flush()` on each: the
    renames then need no further fsync. With `path=None` it is the in-memory twin (flush does nothing).
    """

    def __init__(self, path: Path | None = None, data: dict[str, Any] | None = None, load: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.dirty = False
        self.size = 0  # bytes of the last prepared content
        self._data: dict[str, Any] | None = data
        self._prepared: Path | None = None
        if load and data is None and self.path is not None:
            self._data = read_document(self.path, empty_ok=True)

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self.dirty = True

    @property
    def tmp_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(f".{self.path.name}.tmp")

    def prepare(self) -> Path | None:
        """Phase one of a batch: write the content to the temp file (not yet durable, not yet visible)."""
        if not self.dirty or self.path is None:
            return None
        tmp = self.tmp_path
        assert tmp is not None
        payload = dump_document(self._data if self._data is not None else {})
        self.size = len(payload)
        try:
            # 0600 whatever the umask: the store holds customers' mail.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            tmp.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._prepared = tmp  # from now on, discard() removes it (a write that fails must leave no litter)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return tmp

    def flush(self) -> bool:
        """Persist pending changes; True when a file was written. After `prepare()` + `sync_files()` this is
        just the rename (the caller syncs the directory); on its own it is a complete atomic write."""
        if not self.dirty:
            return False
        if self.path is not None:
            if self._prepared is not None:
                os.replace(self._prepared, self.path)
                self._prepared = None
            else:
                atomic_write_bytes(self.path, dump_document(self._data if self._data is not None else {}))
        self.dirty = False
        return True

    def discard(self) -> None:
        """Forget a prepared temp file (after a failed batch)."""
        if self._prepared is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._prepared)
            self._prepared = None

    def close(self) -> None:
        pass


def sync_directories(directories: Iterable[Path]) -> None:
    """Make renames in these directories durable: an fsync per directory, or one syncfs(2) for many."""
    dirs = list(dict.fromkeys(directories))
    if not dirs:
        return
    if _SYNCFS is not None and len(dirs) >= SYNCFS_FROM:
        fd = os.open(dirs[0], os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for directory in dirs:
        fsync_dir(directory)


@_write_errors_explained
def write_batch(storages: list[BufferedAtomicStorage], journal: BufferedAtomicStorage | None = None) -> int:
    """Persist every dirty storage as one batch and return the number of files written.

    Temp files first, one sync; then the journal (if any) is renamed into place and its directory synced, so
    that it is durable before any file it describes changes; then the renames in list order, and one sync of
    the directories. On an error, temp files not yet renamed are removed.
    """
    dirty = [s for s in storages if s.dirty and s.path is not None]
    for s in storages:
        if s.path is None:
            s.dirty = False
    if not dirty:
        return 0
    everything = [journal, *dirty] if journal is not None else dirty
    try:
        prepared = [p for p in (s.prepare() for s in everything) if p is not None]
        sync_files(prepared)
        if journal is not None and journal.path is not None:
            journal.flush()
            fsync_dir(journal.path.parent)
        for s in dirty:
            s.flush()
    except BaseException:
        for s in everything:
            s.discard()
        raise
    sync_directories(s.path.parent for s in dirty if s.path is not None)
    return len(dirty)
