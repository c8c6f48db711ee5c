"""The embedded default mailbox: a local Maildir. New mail is read from new/; once its case state is
saved it moves to cur/ with the Seen flag; unprocessable mail goes to the .Quarantine folder. Nothing is
ever deleted."""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Collection
from itertools import count
from pathlib import Path

from mailbot.mailbox.base import Budget, FetchedMail, MailboxProblem
from mailbot.storage import fsync_dir

_SEQ = count()
log = logging.getLogger("mailbot")


class MaildirProblem(MailboxProblem):
    """The Maildir cannot be used as it is (a part of it is a file): one line for the user, exit 1."""


def ensure_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        try:
            (path / sub).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (path, path / sub) if p.exists() and not p.is_dir()), path / sub)
            raise MaildirProblem(f"{path} is not a usable Maildir: {blocker} is a file, not a folder") from None


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
        self._not_mail: set[str] = set()
        ensure_maildir(path)

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = (), *, max_bytes: int | None = None,
                  max_message_bytes: int | None = None) -> list[FetchedMail]:
        names = sorted(n for n in os.listdir(self.path / "new") if not n.startswith(".") and n not in skip)
        mails: list[FetchedMail] = []
        budget = Budget(limit, max_bytes, max_message_bytes)
        for name in names:
            if budget.full():
                break
            path = self.path / "new" / name
            try:
                # Only a regular file is a mail: a folder or a pipe left in new/ (by hand, by a broken
                # delivery agent) is not read — reading a pipe would wait for ever — and holds nothing up.
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    self._note_not_mail(name)
                    continue
                if budget.too_big(st.st_size):  # quarantined unread: never held in memory
                    mails.append(budget.take(FetchedMail(ref=name, raw=b"", size=st.st_size)))
                    continue
                raw = path.read_bytes()
            except FileNotFoundError:  # another reader took it meanwhile
                continue
            mails.append(budget.take(FetchedMail(ref=name, raw=raw)))
        return mails

    def _note_not_mail(self, name: str) -> None:
        if name not in self._not_mail:
            self._not_mail.add(name)
            log.warning("- %s is not a mail file (a folder, a pipe, a link?); it stays in new/, untouched",
                        self.path / "new" / name)

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
        """Put a quarantined message back into new/ for another try (after a fix or an upgrade). `ref` is
        the file's name as listed by `mailbot cases` (in cur/ it carries the Maildir info suffix `:2,…`)."""
        if not ref or "/" in ref or ref in (".", ".."):
            return False
        moved = False
        for sub in ("cur", "new"):
            folder = self.quarantine_path / sub
            if not folder.is_dir():
                continue
            # Every file quarantined under this name: several, when mail arrived twice under one name.
            for candidate in sorted(folder.iterdir()):
                if _quarantined_as(candidate.name, ref):
                    self._move(candidate, self.path / "new" / ref)
                    moved = True
        return moved

    def close(self) -> None:
        pass

    @staticmethod
    def _move(src: Path, dst: Path, sync: bool = True) -> None:
        """Rename `src` to `dst`, or to `dst` with `~N` after its name when another file is there already: a
        name is unique only by convention (a file dropped in by hand or by another tool may repeat one), and
        os.replace would delete the mail there — in Quarantine, its only copy. The bot is the only writer
        (the writer lock), so the check cannot race with itself."""
        if dst.exists():
            name, colon, info = dst.name.partition(":")
            n = 1
            while (dst.parent / f"{name}~{n}{colon}{info}").exists():
                n += 1
            dst = dst.parent / f"{name}~{n}{colon}{info}"
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            return
        if sync:
            fsync_dir(dst.parent)


def _quarantined_as(name: str, ref: str) -> bool:
    """Whether the Quarantine file `name` holds the mail that was `ref` in new/: `ref`, `ref:2,…`, or one of
    the `ref~N…` that `_move` gives a second mail of the same name."""
    if name == ref or name.startswith(ref + ":"):
        return True
    rest = name[len(ref) + 1:].partition(":")[0] if name.startswith(ref + "~") else ""
    return rest.isdigit()
