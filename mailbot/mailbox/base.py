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


class Mailbox(Protocol):
    """fetch → (the service saves case state) → mark_processed / quarantine. Nothing is ever deleted.

    `fetch_new` returns mail not yet marked processed, oldest first, leaving out the refs in `skip` (the
    service reads the next batch while the last one is still being saved); after a crash, mail fetched but
    not marked is fetched again and the store's Message-ID dedup keeps it from being recorded twice.
    """

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = ()) -> list[FetchedMail]: ...

    def mark_processed(self, refs: list[str]) -> None: ...

    def quarantine(self, ref: str, reason: str) -> None: ...

    def close(self) -> None: ...
