"""The embedded default transport: each mail as a file in an outbox folder, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from mailbot.storage import sync_directories, sync_files
from mailbot.transport.base import (
    PermanentFailure,
    Refused,
    TemporaryFailure,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def outbox_file_name(message_id: str) -> str:
    """A file name that is the Message-ID when it is safe, or a sanitised one plus a hash otherwise
    (so two different ids can never share a file)."""
    bare = message_id.strip().strip("<>")
    safe = _UNSAFE.sub("_", bare)
    if safe != bare or not safe or safe.startswith(".") or len(safe) > 200:
        digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:16]
        safe = f"{safe.lstrip('.')[:80]}-{digest}"
    return safe + ".eml"


class OutboxDirTransport:
    """Writes each mail to `<directory>/<message id>.eml`; the file's existence is the proof of sending.

    `send` writes the mail to a hidden temp file; `settle` syncs the batch's temp files at once, renames
    them into place and syncs the folder. So a mail appears whole and durable, or not at all, and a batch of
    250 reminders costs one filesystem sync instead of 500 fsyncs. A mail not yet settled does not exist:
    after a crash, it is written again.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._staged: dict[Path, Path] = {}  # temp file → its final name, not yet settled

    def path_for(self, message_id: str) -> Path:
        return self.directory / outbox_file_name(message_id)

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        if not recipients:
            raise PermanentFailure("no recipients")
        target = self.path_for(message_id)
        tmp = target.with_name(f".{target.name}.tmp")  # the same name on a retry: no litter after a crash
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # 0600 whatever the umask: the mail holds customers' addresses and words.
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600),
                      "wb") as f:
                f.write(raw)
        except OSError as e:
            # A full disk or a permission problem is not the mail's fault: keep it and retry.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TemporaryFailure(f"cannot write {target}: {e.strerror or e}") from e
        self._staged[tmp] = target
        return {}

    def settle(self) -> None:
        staged, self._staged = self._staged, {}
        if not staged:
            return
        try:
            sync_files(staged)
            for tmp, target in staged.items():
                os.replace(tmp, target)
            sync_directories([self.directory])
        except OSError as e:
            for tmp in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise TemporaryFailure(f"cannot write to {self.directory}: {e.strerror or e}") from e

    def check(self) -> str:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.directory, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise TemporaryFailure(
                f"outbox directory {self.directory} is not writable: {e.strerror or e}"
            ) from e
        count = sum(1 for _ in self.directory.glob("*.eml"))
        return f"outbox directory {self.directory} is writable ({count} mails in it)"

    def already_sent(self, message_id: str) -> bool | None:
        return self.path_for(message_id).exists()


# --- SMTP (RFC 5321) through smtplib.

# RFC 4954 §6: 530 auth required, 534 mechanism too weak, 535 bad credentials, 538 encryption required.
# They answer MAIL FROM as 5xx, but it is our login that is wrong, not the mail or its recipients.
