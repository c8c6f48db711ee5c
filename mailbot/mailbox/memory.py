"""The in-memory twin of a mailbox, for tests of the service without any server or folder."""

from __future__ import annotations

from collections.abc import Collection

from mailbot.mailbox.base import Budget, FetchedMail


class MemoryMailbox:
    def __init__(self) -> None:
        self.inbox: dict[str, bytes] = {}
        self.processed: dict[str, bytes] = {}
        self.quarantined: dict[str, tuple[bytes, str]] = {}
        self._n = 0

    def deliver(self, raw: bytes) -> str:
        self._n += 1
        ref = f"m{self._n:06d}"
        self.inbox[ref] = raw
        return ref

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = (), *, max_bytes: int | None = None,
                  max_message_bytes: int | None = None) -> list[FetchedMail]:
        budget = Budget(limit, max_bytes, max_message_bytes)
        out: list[FetchedMail] = []
        for ref in sorted(r for r in self.inbox if r not in skip):
            if budget.full():
                break
            raw = self.inbox[ref]
            out.append(budget.take(FetchedMail(ref, b"", len(raw)) if budget.too_big(len(raw)) else FetchedMail(ref, raw)))
        return out

    def mark_processed(self, refs: list[str]) -> None:
        for ref in refs:
            if ref in self.inbox:
                self.processed[ref] = self.inbox.pop(ref)

    def quarantine(self, ref: str, reason: str) -> None:
        if ref in self.inbox:
            self.quarantined[ref] = (self.inbox.pop(ref), reason)

    def close(self) -> None:
        pass
