"""An IMAP connection to the support mailbox: open (TLS, STARTTLS), log in (password or OAuth2), run a
command and reconnect with backoff when the link dies. Mixed into `ImapMailbox`."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import (
    CapabilityError,
    IMAPClientAbortError,
    IMAPClientError,
    LoginError,
)

from mailbot.mailbox.base import MailboxProblem
from mailbot.storage import StoreWriteError

log = logging.getLogger("mailbot.imap")


PROCESSED_KEYWORD = "$MailbotProcessed"
DELETED = b"\\Deleted"
FETCH_CHUNK = 100  # UIDs per FETCH: bounded memory and command length
STORE_CHUNK = 500  # UIDs per MOVE/COPY/STORE/SEARCH by UID list
IDLE_RENEW_SECONDS = 9 * 60  # servers may end IDLE after 10-30 min of silence (RFC 2177: re-issue < 29)
STOP_CHECK_SECONDS = 0.5  # how often a blocking wait looks at the stop event
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0

# A dead or broken link (reset, timeout, TLS error, BYE/EOF): reconnecting may help. Plain IMAPClientError
# (a NO/BAD answer) is not in this list: the server is alive and said no.
LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, IMAPClientAbortError)

T = TypeVar("T")


class ImapError(MailboxProblem):
    """Something a person has to look at; `reason` is one readable sentence (doctor prints it)."""


class ConnectionLost(ImapError):
    """The link died (server restart, network). Call again: the adapter reconnects with backoff."""


class LoginFailed(ImapError):
    """The server refused the credentials; retrying would not help (and may lock the account)."""


def has_new_mail(responses: Iterable[Any]) -> bool:
    return any(
        isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") and r[0] for r in responses
    )


def bye_response(responses: Iterable[Any]) -> Any:
    return next((r for r in responses if isinstance(r, tuple) and r and r[0] == b"BYE"), None)


class Link:
    """One IMAP connection and what we know about it; only used while holding `lock`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.client: IMAPClient | None = None
        self.folders: set[str] = set()  # folders known to exist on this connection
        self.selected = False  # the ingest folder is selected read-write

    def drop(self) -> None:
        client, self.client = self.client, None
        self.folders.clear()
        self.selected = False
        if client is not None:
            # No LOGOUT: the link is presumed dead and LOGOUT could block; closing may fail any way.
            with contextlib.suppress(Exception):
                client.shutdown()


class Connection:
    """Connecting, logging in and running commands with reconnects (needs settings, _main, _sent, stop)."""

    # --- connecting

    def connect(self) -> None:
        """Open the ingest connection now (one attempt); raises ImapError with the reason."""
        with self._main.lock:
            if self._main.client is None:
                self._main.client = self._open()

    def reconnect(self, max_wait: float | None = None, stop: threading.Event | None = None) -> None:
        """Drop the ingest connection and open a new one, retrying with exponential backoff and jitter
        for up to `max_wait` seconds (default: reconnect_max_wait). Wrong credentials and configuration
        errors are raised at once; only ConnectionLost is retried."""
        with self._main.lock:
            self._main.drop()
            self._reconnect(
                self._main, self.reconnect_max_wait if max_wait is None else max_wait, stop or self.stop
            )

    def _reconnect(self, link: Link, max_wait: float, stop: threading.Event | None = None) -> IMAPClient:
        deadline = time.monotonic() + max_wait
        attempt = 0
        while True:
            try:
                link.client = self._open()
            except ConnectionLost as e:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionLost(
                        f"could not reconnect to {self._where} within {max_wait:g} s: {e.reason}"
                    ) from e
                # Equal jitter: never zero, and bots restarted together do not retry in lockstep.
                ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
                delay = min(left, ceiling / 2 + random.uniform(0, ceiling / 2))
                log.warning(
                    "IMAP %s connection failed (%s); retry %d in %.1f s", link.name, e.reason, attempt, delay
                )
                if stop is not None:
                    if stop.wait(delay):
                        raise ConnectionLost("stopped while reconnecting") from e
                else:
                    time.sleep(delay)
                continue
            if attempt:
                log.info(
                    "IMAP %s connection to %s restored after %d retries", link.name, self._where, attempt
                )
            return link.client

    def _ensure(self, link: Link) -> IMAPClient:
        if link.client is None:
            return self._reconnect(link, self.reconnect_max_wait, self.stop)
        return link.client

    def _open(self) -> IMAPClient:
        """A new, logged-in connection, or ImapError/ConnectionLost/LoginFailed saying why not."""
        s = self.settings
        where = self._where
        try:
            client = IMAPClient(
                s.host,
                s.port,
                ssl=s.security == "ssl",
                ssl_context=self._ssl_context if s.security == "ssl" else None,
                timeout=s.timeout_seconds,
            )
        except ssl.SSLCertVerificationError as e:
            raise ImapError(f"the TLS certificate of {where} is not trusted: {e.verify_message}") from e
        except ssl.SSLError as e:
            raise ImapError(
                f"TLS handshake with {where} failed ({e.reason or e}): security = 'ssl' needs a port that "
                "speaks TLS from the first byte (usually 993); for port 143 use 'starttls'"
            ) from e
        except ConnectionRefusedError as e:
            raise ConnectionLost(
                f"connection refused by {where}: is the IMAP server running on that port?"
            ) from e
        except TimeoutError as e:
            hint = (
                " (or the port expects TLS from the start: try security = 'ssl')"
                if s.security != "ssl"
                else ""
            )
            raise ConnectionLost(f"no IMAP greeting from {where} within {s.timeout_seconds} s{hint}") from e
        except OSError as e:
            raise ConnectionLost(f"cannot connect to {where}: {e}") from e
        except IMAPClientAbortError as e:  # e.g. "* BYE too many connections" as the greeting
            raise ConnectionLost(f"{where} closed the connection at once: {e}") from e
        except IMAPClientError as e:
            raise ImapError(f"{where} did not answer like an IMAP server: {e}") from e
        try:
            if s.security == "starttls":
                self._starttls(client)
            self._login(client)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters, not this one
                client.shutdown()
            raise
        log.info("IMAP connected to %s as %s (%s)", where, s.username, s.security)
        return client

    def _starttls(self, client: IMAPClient) -> None:
        where = self._where
        try:
            client.starttls(self._ssl_context)
        except CapabilityError as e:
            raise ImapError(
                f"{where} does not offer STARTTLS: use security = 'ssl' on its TLS port (usually 993)"
                " or, on a trusted network only, 'none'"
            ) from e
        except ssl.SSLCertVerificationError as e:
            raise ImapError(f"the TLS certificate of {where} is not trusted: {e.verify_message}") from e
        except ssl.SSLError as e:
            raise ImapError(f"STARTTLS with {where} failed: {e.reason or e}") from e
        except LINK_ERRORS as e:
            raise ConnectionLost(f"connection to {where} lost during STARTTLS: {e}") from e
        except IMAPClientError as e:
            raise ImapError(f"{where} refused STARTTLS: {e}") from e

    def _login(self, client: IMAPClient) -> None:
        s = self.settings
        try:
            if self._oauth2:
                token = self._secret() if self._secret is not None else self._token_from_config()
                client.oauth2_login(s.username, token)
            else:
                password = self._secret() if self._secret is not None else self._password_from_env()
                client.login(s.username, password)
        except LoginError as e:
            text = str(e)
            # imapclient turns every error during login into LoginError, a dropped link included.
            if isinstance(e.__context__, LINK_ERRORS):
                raise ConnectionLost(f"connection to {self._where} lost during login: {text}") from e
            if "UNAVAILABLE" in text or "Temporary" in text:
                raise ConnectionLost(f"{self._where} cannot log anyone in right now: {text}") from e
            how = "the OAuth2 token" if self._oauth2 else "the password"
            raise LoginFailed(
                f"login as {s.username!r} rejected by {self._where} ({text}): check {how}"
            ) from e
        except LINK_ERRORS as e:
            raise ConnectionLost(f"connection to {self._where} lost during login: {e}") from e

    def _password_from_env(self) -> str:
        name = self.settings.password_env
        value = os.environ.get(name)
        if not value:
            raise ImapError(f"environment variable {name} (the IMAP password) is not set")
        return value

    def _token_from_config(self) -> str:
        s = self.settings
        if s.oauth2_token_command:
            try:
                # No shell: the command is split like a command line; wrap pipes in `sh -c '…'`.
                done = subprocess.run(
                    shlex.split(s.oauth2_token_command),
                    capture_output=True,
                    text=True,
                    timeout=s.timeout_seconds,
                    check=False,
                )
            except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                raise ImapError(f"oauth2_token_command could not run: {e}") from e
            if done.returncode != 0:
                detail = done.stderr.strip().splitlines()[-1:] or ["no error output"]
                raise ImapError(f"oauth2_token_command exited with {done.returncode}: {detail[0]}")
            token = done.stdout.strip()
            if not token:
                raise ImapError("oauth2_token_command printed no token")
            return token
        path = Path(s.oauth2_token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ImapError(f"cannot read oauth2_token_file {path}: {e.strerror or e}") from e
        if not token:
            raise ImapError(f"oauth2_token_file {path} is empty")
        return token

    def close(self) -> None:
        for link in (self._main, self._sent):
            with link.lock:
                client, link.client = link.client, None
                link.folders.clear()
                link.selected = False
                if client is None:
                    continue
                try:
                    client.logout()
                except Exception:  # already closed or broken: just drop the socket
                    with contextlib.suppress(Exception):
                        client.shutdown()

    # --- running commands with one transparent reconnect

    def _run(self, link: Link, what: str, fn: Callable[[IMAPClient, bool], T]) -> T:
        """fn(client, retried) on a live connection. A dead link is reconnected and fn retried once,
        so every fn must be safe to repeat (MOVE/STORE of UIDs already handled are no-ops)."""
        with link.lock:
            for attempt in (0, 1):
                client = self._ensure(link)
                try:
                    return fn(client, attempt == 1)
                except (ImapError, StoreWriteError):  # a full disk while saving the checkpoint is not the link
                    raise
                except LINK_ERRORS as e:
                    link.drop()
                    if attempt:
                        raise ConnectionLost(f"{what}: connection to {self._where} lost again: {e}") from e
                    log.warning("IMAP %s: connection lost (%s); reconnecting", what, e)
                except IMAPClientError as e:
                    raise ImapError(f"{what}: {self._where} said: {e}") from e
        raise AssertionError("unreachable")

    # --- the ingest folder
