"""What every transport is: `send` raw bytes or fail in one of two ways.

Every failure is one of two kinds, because the caller only has to decide "retry later" or "give up":
TemporaryFailure (4xx replies, connection, login and TLS problems: the mail itself is fine) and
PermanentFailure (5xx for this mail's sender, recipients or content: resending the same bytes won't help),
which says whether the recipients were refused or the message itself was (`about_message`).
Engines: `outboxdir` (the embedded default), `smtp`, `memory` (the twin).
"""

from __future__ import annotations

from typing import Protocol

from mailbot.text import one_line

# recipient → (SMTP code, server text), as smtplib's sendmail reports refusals.
Refused = dict[str, tuple[int, str]]


class TransportError(Exception):
    """A send or check failed; `reason` is one line a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryFailure(TransportError):
    """Try again later: 4xx replies (RFC 5321 §4.2.1), connection refused/timeout, login or TLS trouble."""


class PermanentFailure(TransportError):
    """5xx for this mail (RFC 5321 §4.2.1). Either the recipients were refused (5xx to RCPT TO):
    `recipients` are those addresses; or the message itself was (`about_message`: 5xx to MAIL FROM, to DATA
    or after the data — 500 line too long, 501 syntax, 552 size, 554 content): no recipient is at fault, so
    `recipients` is empty, and the addresses must not be marked as failing."""

    def __init__(self, reason: str, recipients: tuple[str, ...] = (), *, about_message: bool = False) -> None:
        super().__init__(reason)
        self.recipients = () if about_message else recipients
        self.about_message = about_message


class Transport(Protocol):
    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        """Hand the mail over; return the refused recipients (empty when all were accepted).

        Raises TemporaryFailure or PermanentFailure; PermanentFailure only when nobody got the mail.
        """
        ...

    def check(self) -> str:
        """One-line verdict for `doctor`; raises TransportError with the reason when it would not work."""
        ...

    def already_sent(self, message_id: str) -> bool | None:
        """Whether this Message-ID already went out; None when this transport cannot tell."""
        ...

    def settle(self) -> None:
        """Make every mail `send` took since the last call durable. The service calls it before it marks
        those mails sent; raises TemporaryFailure when it cannot (they then count as not sent)."""
        ...


# --- outbox directory: the default and the demo; a human or another tool picks the files up.


def reply_text(code: int, text: str | bytes) -> str:
    return f"{code} {one_line(text)}".strip()


def all_refused(refusals: Refused, recipients: list[str]) -> TransportError:
    """Every RCPT refused: give up only when all refusals are 5xx; any 4xx is worth a retry."""
    replies = "; ".join(f"{addr}: {reply_text(code, text)}" for addr, (code, text) in refusals.items())
    if refusals and all(code >= 500 for code, _ in refusals.values()):
        return PermanentFailure(f"all recipients refused ({replies})", tuple(refusals))
    return TemporaryFailure(f"recipients deferred ({replies or 'connection closed'})")

