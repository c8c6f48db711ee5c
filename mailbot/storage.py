"""A TinyDB storage that buffers writes in memory and flushes them atomically: temp file, fsync, replace.

TinyDB's JSONStorage rewrites its file in place (a crash mid-write leaves invalid JSON) and rewrites it on
every single insert. This storage keeps the database in memory, and `flush()` writes it once per batch the
crash-safe way, so a poll's worth of changes costs one write per touched file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tinydb.storages import Storage


class StoreCorrupt(Exception):
    """A state file that is not valid JSON: we refuse to start rather than overwrite it."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
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


class BufferedAtomicStorage(Storage):
    """TinyDB storage: reads once, keeps data in memory, `flush()` persists atomically.

    With `path=None` it is the in-memory twin used by tests (flush does nothing).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.dirty = False
        self._data: dict[str, dict[str, Any]] | None = None
        if path is not None and path.exists():
            try:
                raw = path.read_bytes()
                self._data = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                if not backup.exists():
                    shutil.copy2(path, backup)
                raise StoreCorrupt(
                    f"{path} is not valid JSON ({e.__class__.__name__}: {e}); a copy was kept at {backup}. "
                    "Restore the file from a backup or move it away; mailbot will not overwrite it"
                ) from None
            if self._data is not None and not isinstance(self._data, dict):
                raise StoreCorrupt(f"{path} does not hold a TinyDB document store; mailbot will not overwrite it")

    def read(self) -> dict[str, dict[str, Any]] | None:
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data
        self.dirty = True

    def flush(self) -> bool:
        """Persist pending changes; True when a file was written."""
        if not self.dirty:
            return False
        if self.path is not None:
            payload = json.dumps(self._data, ensure_ascii=False, separators=(",", ":"))
            atomic_write_bytes(self.path, payload.encode("utf-8"))
        self.dirty = False
        return True

    def close(self) -> None:
        pass
