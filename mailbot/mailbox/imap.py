"""IMAP mailbox adapter over imapclient 4.1: checkpointed fetch, move/flag, quarantine, IDLE, Sent folder.

Refs are "<folder>/<UIDVALIDITY>/<UID>". A checkpoint (folder, UIDVALIDITY, last UID) in the caller's store
lets a restart resume where it stopped; when UIDVALIDITY changes the adapter starts again from UID 1 and
the service's Message-ID dedup absorbs the repeats (the arithmetic, pure: checkpoint.py; what is said to
the Sent folder: sent.py). Nothing is ever deleted except, on servers without
MOVE, the inbox copies of messages already copied to the processed folder (UID EXPUNGE of those UIDs only).

Two connections, each with its own lock: the ingest one (fetch, mark, quarantine, IDLE) and a Sent-folder
one (append_sent, sent_contains), so the sender thread never waits for the IDLE loop. `check()` opens and
closes a third, short-lived one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import (
    CapabilityError,
    IMAPClientAbortError,
    IMAPClientError,
    LoginError,
)

from mailbot.config import MailboxSettings
from mailbot.mailbox import checkpoint, sent
from mailbot.mailbox.base import Budget, FetchedMail, MailboxProblem
from mailbot.mailbox.checkpoint import Cursor, fetch_chunks, make_ref, parse_ref
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
_LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, IMAPClientAbortError)

T = TypeVar("T")


class ImapError(MailboxProblem):
    """Something a person has to look at; `reason` is one readable sentence (doctor prints it)."""


class ConnectionLost(ImapError):
    """The link died (server restart, network). Call again: the adapter reconnects with backoff."""


class LoginFailed(ImapError):
    """The server refused the credentials; retrying would not help (and may lock the account)."""


class CheckpointStore(Protocol):
    def get_checkpoint(self, key: str) -> dict[str, Any] | None: ...

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryCheckpoints:
    """A CheckpointStore in a dict, for tests and for running without a state store."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        value = self.data.get(key)
        return dict(value) if value is not None else None

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = dict(value)


__all__ = ["ConnectionLost", "ImapError", "ImapMailbox", "LoginFailed", "MemoryCheckpoints", "make_ref",
           "parse_ref"]


def _has_new_mail(responses: Iterable[Any]) -> bool:
    return any(
        isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") and r[0] for r in responses
    )


def _bye(responses: Iterable[Any]) -> Any:
    return next((r for r in responses if isinstance(r, tuple) and r and r[0] == b"BYE"), None)


class _Link:
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


class ImapMailbox:
    """The Mailbox protocol over IMAP, plus IDLE, the Sent folder and a doctor check."""

    def __init__(
        self,
        settings: MailboxSettings,
        secret: Callable[[], str] | None = None,
        checkpoints: CheckpointStore | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_max_wait: float = 300.0,
        stop: threading.Event | None = None,
    ) -> None:
        """`secret` returns the password, or the OAuth2 access token when an oauth2_token_* setting is
        given; it is called at every (re)connect so tokens can be refreshed. Without it the password
        comes from the environment variable settings.password_env and the token from the configured
        command or file. `ssl_context` defaults to imapclient's verifying context. Setting the
        `stop` event ends reconnect waits and wait_for_mail early."""
        self.settings = settings
        self._secret = secret
        self._checkpoints: CheckpointStore = checkpoints if checkpoints is not None else MemoryCheckpoints()
        self._ssl_context = ssl_context
        self.reconnect_max_wait = reconnect_max_wait
        self.stop = stop
        self.idle_renew_seconds: float = IDLE_RENEW_SECONDS
        self._main = _Link("ingest")
        self._sent = _Link("sent")
        self._cursor = Cursor()  # UIDVALIDITY, last UID, and this session's pending/done UIDs
        self._checkpoint_loaded = False

    # --- identity

    @property
    def checkpoint_key(self) -> str:
        s = self.settings
        return f"imap:{s.username}@{s.host}/{s.folder}"

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def _oauth2(self) -> bool:
        return bool(self.settings.oauth2_token_command or self.settings.oauth2_token_file)

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

    def _reconnect(self, link: _Link, max_wait: float, stop: threading.Event | None = None) -> IMAPClient:
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

    def _ensure(self, link: _Link) -> IMAPClient:
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
        except _LINK_ERRORS as e:
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
            if isinstance(e.__context__, _LINK_ERRORS):
                raise ConnectionLost(f"connection to {self._where} lost during login: {text}") from e
            if "UNAVAILABLE" in text or "Temporary" in text:
                raise ConnectionLost(f"{self._where} cannot log anyone in right now: {text}") from e
            how = "the OAuth2 token" if self._oauth2 else "the password"
            raise LoginFailed(
                f"login as {s.username!r} rejected by {self._where} ({text}): check {how}"
            ) from e
        except _LINK_ERRORS as e:
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

    def _run(self, link: _Link, what: str, fn: Callable[[IMAPClient, bool], T]) -> T:
        """fn(client, retried) on a live connection. A dead link is reconnected and fn retried once,
        so every fn must be safe to repeat (MOVE/STORE of UIDs already handled are no-ops)."""
        with link.lock:
            for attempt in (0, 1):
                client = self._ensure(link)
                try:
                    return fn(client, attempt == 1)
                except (ImapError, StoreWriteError):  # a full disk while saving the checkpoint is not the link
                    raise
                except _LINK_ERRORS as e:
                    link.drop()
                    if attempt:
                        raise ConnectionLost(f"{what}: connection to {self._where} lost again: {e}") from e
                    log.warning("IMAP %s: connection lost (%s); reconnecting", what, e)
                except IMAPClientError as e:
                    raise ImapError(f"{what}: {self._where} said: {e}") from e
        raise AssertionError("unreachable")

    # --- the ingest folder

    def _load_checkpoint(self) -> None:
        if self._checkpoint_loaded:
            return
        value = self._checkpoints.get_checkpoint(self.checkpoint_key)
        try:
            self._cursor = checkpoint.from_record(value)
        except ValueError:
            log.warning("ignoring unreadable IMAP checkpoint %r: %r", self.checkpoint_key, value)
            self._cursor = Cursor()
        self._checkpoint_loaded = True

    def _save_checkpoint(self) -> None:
        self._checkpoints.set_checkpoint(self.checkpoint_key, checkpoint.to_record(self.settings.folder, self._cursor))

    def _select(self, client: IMAPClient) -> None:
        folder = self.settings.folder
        try:
            info = client.select_folder(folder)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as e:
            raise ImapError(self._folder_problem(client, folder, e)) from e
        self._main.selected = True
        uidvalidity = int(info[b"UIDVALIDITY"])
        self._load_checkpoint()
        before = self._cursor
        self._cursor = checkpoint.on_select(before, uidvalidity)
        if self._cursor is not before:
            if before.uidvalidity is not None:
                log.warning(
                    "UIDVALIDITY of %s changed from %s to %s: reading it again from UID 1 "
                    "(already recorded mail is skipped by Message-ID)",
                    folder,
                    before.uidvalidity,
                    uidvalidity,
                )
            self._save_checkpoint()

    def _folder_problem(self, client: IMAPClient, folder: str, error: Exception) -> str:
        try:
            names = sorted(str(name) for _flags, _sep, name in client.list_folders())
        except Exception:  # only for a better message
            names = []
        if names and folder not in names:
            shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
            return f"folder {folder!r} does not exist on {self._where} (folders: {shown})"
        return f"cannot open folder {folder!r} on {self._where}: {error}"

    def fetch_new(self, limit: int | None = None, skip: Collection[str] = (), *, max_bytes: int | None = None,
                  max_message_bytes: int | None = None) -> list[FetchedMail]:
        """Unprocessed mail above the checkpoint, oldest first. Does not set \\Seen (BODY.PEEK). With a byte
        budget, each chunk's RFC822.SIZE (RFC 3501 §6.4.5) is fetched first: the bodies fetched stop at the
        budget, and a message bigger than max_message_bytes is never downloaded."""
        budget = Budget(limit, max_bytes, max_message_bytes)
        return self._run(self._main, "fetch_new", lambda c, _retried: self._fetch_new(c, limit, skip, budget))

    def _fetch_new(self, client: IMAPClient, limit: int | None, skip: Collection[str] = (),
                   budget: Budget | None = None) -> list[FetchedMail]:
        self._select(client)  # every time: fresh UIDVALIDITY and message list
        folder, uidvalidity = self.settings.folder, self._cursor.uidvalidity
        assert uidvalidity is not None
        uid_range = checkpoint.search_range(self._cursor)
        found = client.search(["UID", uid_range, "UNDELETED", "UNKEYWORD", PROCESSED_KEYWORD]) if uid_range else []
        plan = checkpoint.plan_fetch(
            self._cursor, found, checkpoint.skipped_uids(skip, folder, uidvalidity) if skip else (), limit
        )
        self._cursor = plan.cursor
        out: list[FetchedMail] = []
        sized = budget is not None and (budget.max_bytes is not None or budget.max_message_bytes is not None)
        if budget is not None:  # a retry after a reconnect starts counting again
            budget.mails = budget.held = 0
        for chunk in fetch_chunks(plan.uids, FETCH_CHUNK):
            if budget is not None and budget.full():
                break
            unread: dict[int, int] = {}
            if sized and budget is not None:
                chunk, unread = self._within(client, chunk, budget)
            bodies = self._fetch_bodies(client, [u for u in chunk if u not in unread])
            for uid in chunk:
                if uid in unread:
                    self._cursor = checkpoint.fetched(self._cursor, [uid])
                    out.append(FetchedMail(make_ref(folder, uidvalidity, uid), b"", unread[uid]))
                    continue
                raw = bodies.get(uid)
                if raw is None:
                    log.info(
                        "UID %d in %s vanished before it was fetched (another client?)",
                        uid,
                        self.settings.folder,
                    )
                    continue
                self._cursor = checkpoint.fetched(self._cursor, [uid])
                out.append(FetchedMail(make_ref(folder, uidvalidity, uid), raw))
        return out

    def _within(self, client: IMAPClient, uids: list[int], budget: Budget) -> tuple[list[int], dict[int, int]]:
        """The UIDs of a chunk that fit the budget (by RFC822.SIZE, in order), and those among them too big
        to download at all, with their sizes. A UID whose size the server does not give is fetched."""
        try:
            response = client.fetch(uids, ["RFC822.SIZE"])
        except IMAPClientAbortError:
            raise
        except IMAPClientError as e:
            log.info("FETCH RFC822.SIZE failed (%s); fetching the bodies without it", e)
            response = {}
        taken: list[int] = []
        unread: dict[int, int] = {}
        for uid in uids:
            if budget.full():
                break
            size = response.get(uid, {}).get(b"RFC822.SIZE")
            size = size if isinstance(size, int) else 0
            taken.append(uid)
            budget.mails += 1
            if budget.too_big(size):
                unread[uid] = size
            else:
                budget.held += size
        return taken, unread

    def _fetch_bodies(self, client: IMAPClient, uids: list[int]) -> dict[int, bytes]:
        try:
            response = client.fetch(uids, ["BODY.PEEK[]"])
        except IMAPClientAbortError:
            raise
        except IMAPClientError as e:
            # Some servers answer NO when a message of the set was expunged by another client meanwhile.
            log.info("FETCH failed (%s); retrying with the messages still present", e)
            present = self._present(client, uids)
            response = client.fetch(present, ["BODY.PEEK[]"]) if present else {}
        return {uid: data[b"BODY[]"] for uid, data in response.items() if b"BODY[]" in data}

    def _present(self, client: IMAPClient, uids: Sequence[int]) -> list[int]:
        client.noop()  # lets the server report expunges first
        present: set[int] = set()
        for chunk in fetch_chunks(sorted(uids), STORE_CHUNK):
            present.update(client.search(["UID", ",".join(map(str, chunk))]))
        return sorted(present & set(uids))

    def _tolerant(self, client: IMAPClient, uids: list[int], op: Callable[[list[int]], object]) -> None:
        """op(uids), and when the server says NO, op(the UIDs still present): mail another client moved
        away meanwhile is not ours to handle any more, and not an error."""
        try:
            op(uids)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as e:
            present = self._present(client, uids)
            log.info("%s; retrying with the %d of %d messages still present", e, len(present), len(uids))
            if present:
                op(present)

    def _refs_to_uids(self, refs: Iterable[str], what: str) -> list[int]:
        uids, stale = checkpoint.split_refs(refs, self.settings.folder, self._cursor.uidvalidity)
        for ref in stale:  # the UID would name another message now (or another folder): leave it alone
            log.warning(
                "%s: skipping %s (current folder %s, UIDVALIDITY %s)",
                what,
                ref,
                self.settings.folder,
                self._cursor.uidvalidity,
            )
        return uids

    def mark_processed(self, refs: list[str]) -> None:
        """Move to processed_folder (processed = "move") or add the $MailbotProcessed keyword ("flag"),
        then advance the checkpoint. Mail that is already gone is skipped silently."""
        if refs:
            self._run(self._main, "mark_processed", lambda c, _retried: self._mark(c, refs))

    def _mark(self, client: IMAPClient, refs: list[str]) -> None:
        if not self._main.selected:
            self._select(client)
        uids = self._refs_to_uids(refs, "mark_processed")
        if not uids:
            return
        if self.settings.processed == "flag":
            for chunk in fetch_chunks(uids, STORE_CHUNK):
                self._tolerant(client, chunk, lambda u: client.add_flags(u, [PROCESSED_KEYWORD], silent=True))
        else:
            self._move(client, uids, self.settings.processed_folder)
        self._advance(uids)

    def quarantine(self, ref: str, reason: str) -> None:
        """Move one message to quarantine_folder (created if missing), whatever the processed mode."""
        log.warning("quarantining %s: %s", ref, reason)
        self._run(self._main, "quarantine", lambda c, _retried: self._quarantine(c, ref))

    def _quarantine(self, client: IMAPClient, ref: str) -> None:
        if not self._main.selected:
            self._select(client)
        uids = self._refs_to_uids([ref], "quarantine")
        if uids:
            self._move(client, uids, self.settings.quarantine_folder)
            self._advance(uids)

    def _move(self, client: IMAPClient, uids: list[int], dest: str) -> None:
        self._ensure_folder(self._main, client, dest)
        can_move = client.has_capability("MOVE")
        uidplus = client.has_capability("UIDPLUS")
        for chunk in fetch_chunks(uids, STORE_CHUNK):
            if can_move:
                self._tolerant(client, chunk, lambda u: client.move(u, dest))
                continue
            # No MOVE (Office 365): COPY, then remove only our originals. A crash in between leaves a
            # duplicate in `dest`, never a loss.
            self._tolerant(client, chunk, lambda u: client.copy(u, dest))
            if uidplus:
                self._tolerant(client, chunk, lambda u: self._expunge_only(client, u))
            else:
                # Without UIDPLUS we cannot expunge only ours: the keyword keeps the original from being
                # fetched again; it stays in the folder.
                self._tolerant(client, chunk, lambda u: client.add_flags(u, [PROCESSED_KEYWORD], silent=True))

    @staticmethod
    def _expunge_only(client: IMAPClient, uids: list[int]) -> None:
        client.add_flags(uids, [DELETED], silent=True)
        client.uid_expunge(uids)  # never a plain EXPUNGE: it would remove others' \Deleted mail too

    def _ensure_folder(self, link: _Link, client: IMAPClient, folder: str) -> None:
        if folder in link.folders:
            return
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
                log.info("created IMAP folder %s", folder)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as e:
                if not client.folder_exists(folder):  # another client may have created it meanwhile
                    raise ImapError(f"cannot create folder {folder!r} on {self._where}: {e}") from e
            try:
                client.subscribe_folder(folder)  # so people see it in their mail program
            except IMAPClientAbortError:
                raise
            except IMAPClientError:
                pass
        link.folders.add(folder)

    def _advance(self, uids: Sequence[int]) -> None:
        """Move the checkpoint up to the highest handled UID below every still-pending one, so a crash
        never skips fetched-but-unhandled mail."""
        before = self._cursor.last_uid
        self._cursor = checkpoint.advance(self._cursor, uids)
        if self._cursor.last_uid != before:
            self._save_checkpoint()

    # --- waiting for mail

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
            except _LINK_ERRORS as e:
                link.drop()
                raise ConnectionLost(f"connection to {self._where} lost: {e}") from e
            if not has_idle:
                return self._sleep(min(timeout, self.settings.poll_seconds), stop)
            try:
                return self._idle(client, timeout, stop)
            except ConnectionLost:
                link.drop()  # no idle_done(): it can hang on a dead link (imapclient #449)
                raise
            except _LINK_ERRORS as e:
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
                if _has_new_mail(responses):
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
            bye = _bye(responses)
            if bye is not None:
                text = " ".join(
                    x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in bye[1:]
                )
                raise ConnectionLost(f"{self._where} ended the session: {text}")
            news = _has_new_mail(responses)
        _text, responses = client.idle_done()
        return news or _has_new_mail(responses)

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

    def append_sent(self, raw: bytes) -> None:
        """Store a copy of sent mail in sent_folder (created if missing), marked \\Seen, once."""
        folder = self.settings.sent_folder

        def op(client: IMAPClient, retried: bool) -> None:
            self._ensure_folder(self._sent, client, folder)
            sent.append(client, folder, raw, retried, self._sent.folders)

        self._run(self._sent, "append_sent", op)

    def sent_contains(self, message_id: str) -> bool:
        """Whether sent_folder holds a message with this Message-ID (tells after a crash whether a
        mail went out)."""
        mid = sent.normal_message_id(message_id)
        if not sent.searchable(mid):
            return False
        folder = self.settings.sent_folder
        return self._run(
            self._sent, "sent_contains", lambda c, _retried: sent.contains(c, folder, mid, self._sent.folders)
        )

    # --- doctor

    def check(self) -> str:
        """One line saying the mailbox works, or ImapError with the reason (own short-lived connection)."""
        s = self.settings
        client = self._open()
        try:
            try:
                info = client.select_folder(s.folder, readonly=True)
            except IMAPClientAbortError as e:
                raise ConnectionLost(f"connection to {self._where} lost: {e}") from e
            except IMAPClientError as e:
                raise ImapError(self._folder_problem(client, s.folder, e)) from e
            caps = [c for c in ("IDLE", "MOVE", "UIDPLUS") if client.has_capability(c)]
            missing = [
                f
                for f in (
                    s.processed_folder if s.processed == "move" else "",
                    s.quarantine_folder,
                    s.sent_folder,
                )
                if f and not client.folder_exists(f)
            ]
            flags = tuple(info.get(b"PERMANENTFLAGS", ()))
            if s.processed == "flag" and b"\\*" not in flags and PROCESSED_KEYWORD.encode() not in flags:
                raise ImapError(
                    f"processed = 'flag' but {s.folder!r} on {self._where} does not accept the keyword "
                    f"{PROCESSED_KEYWORD}: use processed = 'move'"
                )
        except _LINK_ERRORS as e:
            raise ConnectionLost(f"connection to {self._where} lost during the check: {e}") from e
        except IMAPClientError as e:
            raise ImapError(f"{self._where} said: {e}") from e
        finally:
            try:
                client.logout()
            except Exception:  # the verdict is known already
                client.shutdown()
        verdict = (
            f"ok: {s.username} at {self._where} ({s.security}); {s.folder} has {info.get(b'EXISTS', 0)} "
            f"messages; {', '.join(caps) or 'no IDLE/MOVE/UIDPLUS'}"
        )
        if missing:
            verdict += f"; will create {', '.join(missing)}"
        return verdict


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
