"""Waiting for new mail: IMAP IDLE (RFC 2177), renewed before servers drop it, or polling. Mixed into
`ImapMailbox`."""

from __future__ import annotations

import logging
import select
import ssl
import threading
import time
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import (
    IMAPClientAbortError,
    IMAPClientError,
)

from mailbot.mailbox.imap.link import (
    LINK_ERRORS,
    STOP_CHECK_SECONDS,
    ConnectionLost,
    bye_response,
    has_new_mail,
)

log = logging.getLogger("mailbot.imap")


class Idle:
    """wait_for_mail (needs _main, _run, idle_renew_seconds, stop)."""

    def wait_for_mail(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until new mail may have arrived (True) or `timeout`/`stop` (False). Uses IDLE when the
        server has it, else sleeps up to poll_seconds and returns True ("time to look"). Raises
        ConnectionLost when the link dies; the next call (or fetch_new) reconnects."""
        link = self._main
        if stop is None:
            stop = self.stop
        with link.lock:
            client = self._ensure(link)
            try:
                if not link.selected:
                    self._select(client)
                has_idle = client.has_capability("IDLE")
            except LINK_ERRORS as e:
                link.drop()
                raise ConnectionLost(f"connection to {self._where} lost: {e}") from e
            if not has_idle:
                return self._sleep(min(timeout, self.settings.poll_seconds), stop)
            try:
                return self._idle(client, timeout, stop)
            except ConnectionLost:
                link.drop()  # no idle_done(): it can hang on a dead link (imapclient #449)
                raise
            except LINK_ERRORS as e:
                link.drop()
                raise ConnectionLost(f"connection to {self._where} lost while waiting for mail: {e}") from e
            except IMAPClientError as e:
                link.drop()  # an IDLE exchange gone wrong: a fresh session is the safe state
                raise ConnectionLost(f"IDLE with {self._where} failed: {e}") from e

    @staticmethod
    def _sleep(seconds: float, stop: threading.Event | None) -> bool:
        if stop is None:
            time.sleep(max(seconds, 0))
            return True
        return not stop.wait(max(seconds, 0))

    def _idle(self, client: IMAPClient, timeout: float, stop: threading.Event | None) -> bool:
        deadline = time.monotonic() + timeout
        if not self._start_idle(client):
            return True
        started = time.monotonic()
        sock = client.socket()
        news = False
        while not news:
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                break
            if now - started >= self.idle_renew_seconds or _buffered(client):
                # Renew before the server's IDLE timeout; or collect lines imaplib already buffered
                # (invisible to poll) by ending IDLE, which reads them the normal way.
                _text, responses = client.idle_done()
                if has_new_mail(responses):
                    return True
                if not self._start_idle(client):
                    return True
                started = time.monotonic()
                continue
            wait = min(deadline - now, self.idle_renew_seconds - (now - started))
            if stop is not None:
                wait = min(wait, STOP_CHECK_SECONDS)
            if not _readable(sock, wait):
                continue
            responses = client.idle_check(timeout=0)
            if not responses:
                raise ConnectionLost(f"{self._where} closed the connection during IDLE")
            bye = bye_response(responses)
            if bye is not None:
                text = " ".join(
                    x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in bye[1:]
                )
                raise ConnectionLost(f"{self._where} ended the session: {text}")
            news = has_new_mail(responses)
        _text, responses = client.idle_done()
        return news or has_new_mail(responses)

    def _start_idle(self, client: IMAPClient) -> bool:
        try:
            client.idle()
        except IMAPClientAbortError:
            raise
        except IMAPClientError as e:
            # imapclient raises when the server reports something (e.g. EXISTS) before "+ idling": the
            # session state is unclear, so start afresh and let the caller look.
            log.info("IDLE not started (%s); reconnecting", e)
            self._main.drop()
            return False
        return True

    # --- the Sent folder


def _readable(sock: Any, timeout: float) -> bool:
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted bytes already waiting: poll() cannot see them
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(max(timeout, 0) * 1000))


def _buffered(client: IMAPClient) -> bool:
    """Whether imaplib's read buffer already holds server lines (e.g. EXISTS right after "+ idling"),
    which poll() on the socket would never report."""
    reader = getattr(getattr(client, "_imap", None), "file", None)
    peek = getattr(reader, "peek", None)
    if peek is None:
        return False
    sock = client.socket()
    old = sock.gettimeout()
    sock.settimeout(0)  # peek must not block when the buffer is empty
    try:
        return bool(peek(1))
    except (BlockingIOError, ssl.SSLWantReadError, TimeoutError):
        return False
    finally:
        sock.settimeout(old)
