"""What a cycle and each mail come to (typed, no strings), and the Sent folder a sender needs: shared by the
service's steps (service.py ingests, sweeping.py records what is due, outbox.py sends)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


class SentFolder(Protocol):
    """Where a copy of every sent mail goes (the IMAP Sent folder), and where a crash is resolved."""

    def append_sent(self, raw: bytes) -> None: ...

    def sent_contains(self, message_id: str) -> bool: ...


@dataclass
class CycleReport:
    ingested: int = 0
    opened: int = 0
    threaded: int = 0
    unmatched: int = 0
    quarantined: int = 0
    duplicates: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Processed:
    """The mail is recorded (on a case, as unmatched, or already known): the mailbox marks it done."""


@dataclass(frozen=True)
class Quarantined:
    """The mail cannot be read, or handling it failed: the mailbox sets it aside with this reason."""

    reason: str


MailOutcome = Processed | Quarantined  # what one fetched mail comes to (`Service.handle_parsed`)
