"""The interface every mailbox adapter offers (Maildir, IMAP, and the in-memory twin for tests)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol


class MailboxProblem(Exception):
    """The mailbox cannot be used (server unreachable, bad login, a Maildir part that is a file): `reason` is
    one readable sentence, which the CLI prints as its one line and `doctor` as its verdict."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FetchedMail:
    ref: str  # adapter-specific handle (Maildir file name, IMAP "folder/uidvalidity/uid")
    raw: bytes
    size: int | None = None  # set when `raw` was left unread: the message is bigger than max_message_bytes

    @property
    def length(self) -> int:
        """The message's size in bytes, read or not."""
        return len(self.raw) if self.size is None else self.size

    @property
    def unread(self) -> bool:
        return self.size is not None


class Budget:
    """How much one fetch_new may take: at most `limit` mails, and no further mail once `max_bytes` are held
    (but always the first, so a mail bigger than the budget still moves); a mail over `max_message_bytes` is
    not read at all (only its size is), so it holds nothing."""

    def __init__(self, limit: int | None, max_bytes: int | None, max_message_bytes: int | None) -> None:
        self.limit, self.max_bytes, self.max_message_bytes = limit, max_bytes, max_message_bytes
        self.mails = 0
        self.held = 0

    def full(self) -> bool:
        return (self.limit is not None and self.mails >= self.limit) or (
            self.max_bytes is not None and self.mails > 0 and self.held >= self.max_bytes)

    def too_big(self, size: int) -> bool:
        return self.max_message_bytes is not None and size > self.max_message_bytes

    def take(self, mail: FetchedMail) -> FetchedMail:
        self.mails += 1
        self.held += len(mail.raw)
        return mail


class Mailbox(Protocol):
    """fetch → (the service saves case state) → mark_processed / quarantine. Nothing is ever deleted.

    `fetch_new` returns mail not yet marked processed, oldest first, leaving out the refs in `skip` (the
    service reads the next batch while the last one is still being saved); after a crash, mail fetched but
    not marked is fetched again and the store's Message-ID dedup keeps it from being recorded twice. It
    stops adding mail once `max_bytes` are held (always at least one mail: twelve 50 MB mails in one batch
    took 1.5 GB), and a mail bigger than `max_message_bytes` comes back unread (`size` set, `raw` empty).
    """

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = (), *, max_bytes: int | None = None,
                  max_message_bytes: int | None = None) -> list[FetchedMail]: ...

    def mark_processed(self, refs: list[str]) -> None: ...

    def quarantine(self, ref: str, reason: str) -> None: ...

    def close(self) -> None: ...
