"""The transport's in-memory twin for tests: records what would have been sent, fails on request."""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.transport.base import (
    PermanentFailure,
    Refused,
    TransportError,
    all_refused,
)


@dataclass(frozen=True)
class SentMail:
    raw: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str


class MemoryTransport:
    """Records what would have been sent; can fail the next N sends, refuse given addresses, or fail check."""

    def __init__(self) -> None:
        self.sent: list[SentMail] = []
        self.refuse: Refused = {}  # address (lowercase) → reply, like a server refusing that RCPT
        self.check_error: TransportError | None = None
        self._failures: list[TransportError] = []
        self.attempts = 0

    def fail_next(self, error: TransportError, n: int = 1) -> None:
        self._failures.extend([error] * n)

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        self.attempts += 1
        if self._failures:
            raise self._failures.pop(0)
        if not recipients:
            raise PermanentFailure("no recipients")
        refused = {r: self.refuse[r.lower()] for r in recipients if r.lower() in self.refuse}
        accepted = tuple(r for r in recipients if r not in refused)
        if not accepted:
            raise all_refused(refused, recipients)
        self.sent.append(SentMail(raw, sender, accepted, message_id))
        return refused

    def check(self) -> str:
        if self.check_error is not None:
            raise self.check_error
        return f"memory transport ({len(self.sent)} mails sent)"

    def already_sent(self, message_id: str) -> bool | None:
        return any(m.message_id == message_id for m in self.sent)

    def settle(self) -> None:
        """Nothing to do: what `send` took is in `sent` at once."""

    @property
    def sent_ids(self) -> list[str]:
        return [m.message_id for m in self.sent]
