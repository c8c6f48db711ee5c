"""A real SMTP server (aiosmtpd) on 127.0.0.1 for transport tests: records mail, fails on request.

Use it with `pytest_plugins = ["tests.smtp_server"]` and a `smtp_server` argument.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# Reply lines for the codes tests ask for (RFC 5321 §4.2 codes, RFC 3463 enhanced status codes).
REPLIES: dict[int, str] = {
    421: "421 4.3.2 Service shutting down, try later",
    450: "450 4.2.1 Mailbox busy",
    451: "451 4.3.0 Try again later",
    452: "452 4.3.1 Insufficient storage",
    550: "550 5.1.1 Mailbox unavailable",
    552: "552 5.3.4 Message too big",
    553: "553 5.1.8 Sender address rejected",
    554: "554 5.7.1 Message rejected",
}


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServer:
    """Handler and controller in one; the public attributes are what tests look at."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.messages: list[ReceivedMail] = []
        self.refused: dict[str, str] = {}  # address (lowercase) → reply for that RCPT only
        self.credentials: tuple[str, str] | None = None
        self._failures: list[tuple[str, str]] = []  # (stage, reply) for the next transactions
        self._controller: Controller | None = None

    # --- what tests call

    def fail_next(self, code: int, n: int = 1, stage: str = "RCPT") -> None:
        """Answer `code` for the next `n` transactions, at MAIL, RCPT (every recipient) or DATA."""
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, got {stage!r}")
        reply = REPLIES.get(code, f"{code} {code // 100}.0.0 Test failure")
        self._failures.extend([(stage, reply)] * n)

    def refuse(self, address: str, code: int = 550) -> None:
        """Always refuse this one recipient (for partial refusals)."""
        self.refused[address.lower()] = REPLIES.get(code, f"{code} {code // 100}.0.0 Refused")

    def require_auth(self, username: str, password: str) -> None:
        """From now on MAIL needs a successful AUTH with these credentials (RFC 4954 530 otherwise)."""
        self.credentials = (username, password)

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            server_hostname="mx.test",  # skip aiosmtpd's getfqdn() lookup
            authenticator=self._authenticate,
            auth_require_tls=False,  # AUTH over plain TCP: loopback test server only
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # --- aiosmtpd hooks

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (auth_data.login.decode(), auth_data.password.decode())
        ok = self.credentials is None or given == self.credentials
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        # One queued failure per transaction: taken here, remembered on the envelope for RCPT/DATA.
        failure = self._failures.pop(0) if self._failures else None
        if failure is not None and failure[0] == "MAIL":
            return failure[1]
        envelope.mailbot_failure = failure  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        failure = getattr(envelope, "mailbot_failure", None)
        if failure is not None and failure[0] == "RCPT":
            return str(failure[1])
        if address.lower() in self.refused:
            return self.refused[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = getattr(envelope, "mailbot_failure", None)
        if failure is not None and failure[0] == "DATA":
            return str(failure[1])
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        self.messages.append(ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), raw))
        return "250 2.0.0 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
