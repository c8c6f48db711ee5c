"""The embedded default mailbox: a local Maildir. New mail is read from new/; once its case state is
saved it moves to cur/ with the Seen flag; unprocessable mail goes to the .Quarantine folder. Nothing is
ever deleted."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection
from itertools import count
from pathlib import Path

from mailbot.mailbox.base import FetchedMail
from mailbot.storage import fsync_dir

_SEQ = count()


def ensure_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def unique_name() -> str:
    # The Maildir naming convention (time.pid_seq.host) keeps names unique without locking.
    return f"{time.time_ns()}.P{os.getpid()}Q{next(_SEQ)}.{socket.gethostname().replace('/', '_')}"


def deliver(path: Path, raw: bytes, name: str | None = None) -> Path:
    """Deliver one message the Maildir way: write into tmp/, fsync, then rename into new/."""
    ensure_maildir(path)
    name = name or unique_name()
    tmp = path / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    final = path / "new" / name
    os.replace(tmp, final)
    return final


class MaildirMailbox:
    def __init__(self, path: Path, quarantine_folder: str = "Quarantine") -> None:
        self.path = path
        self.quarantine_path = path / f".{quarantine_folder}"
        ensure_maildir(path)

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = ()) -> list[FetchedMail]:
        names = sorted(n for n in os.listdir(self.path / "new") if not n.startswith(".") and n not in skip)
        if limit is not None:
            names = names[:limit]
        mails = []
        for name in names:
            try:
                raw = (self.path / "new" / name).read_bytes()
            except FileNotFoundError:  # another reader took it meanwhile
                continue
            mails.append(FetchedMail(ref=name, raw=raw))
        return mails

    def mark_processed(self, refs: list[str]) -> None:
        for ref in refs:
            self._move(self.path / "new" / ref, self.path / "cur" / f"{ref}:2,S", sync=False)
        # One directory sync for the batch: the case state is already saved, so a lost rename only means
        # the mail is read again and recognised by its Message-ID.
        if refs:
            fsync_dir(self.path / "cur")

    def quarantine(self, ref: str, reason: str) -> None:
        ensure_maildir(self.quarantine_path)
        self._move(self.path / "new" / ref, self.quarantine_path / "cur" / f"{ref}:2,")

    def requeue(self, ref: str) -> bool:
        """Put a quarantined message back into new/ for another try (after a fix or an upgrade)."""
        for sub in ("cur", "new"):
            for candidate in (self.quarantine_path / sub).glob(f"{ref}*"):
                self._move(candidate, self.path / "new" / ref)
                return True
        return False

    def close(self) -> None:
        pass

    @staticmethod
    def _move(src: Path, dst: Path, sync: bool = True) -> None:
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            return
        if sync:
            fsync_dir(dst.parent)

