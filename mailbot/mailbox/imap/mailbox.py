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

import logging
import ssl
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import (
    IMAPClientAbortError,
    IMAPClientError,
)

from mailbot.config import MailboxSettings
from mailbot.mailbox.base import Budget, FetchedMail
from mailbot.mailbox.imap import checkpoint, sent
from mailbot.mailbox.imap.checkpoint import Cursor, fetch_chunks, make_ref, parse_ref
from mailbot.mailbox.imap.folders import Folders
from mailbot.mailbox.imap.idle import Idle
from mailbot.mailbox.imap.link import (
    FETCH_CHUNK,
    IDLE_RENEW_SECONDS,
    LINK_ERRORS,
    PROCESSED_KEYWORD,
    Connection,
    ConnectionLost,
    ImapError,
    Link,
    LoginFailed,
)

log = logging.getLogger("mailbot.imap")


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


class ImapMailbox(Connection, Folders, Idle):
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
        self._main = Link("ingest")
        self._sent = Link("sent")
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
                    # Gone (another client), or left out of the answer by a server that could not read it
                    # now: either way it holds the checkpoint back like a fetched mail, so that it is fetched
                    # again while SEARCH still lists it (and `plan_fetch` lets go of it once it does not);
                    # passed over, the checkpoint would move beyond it and it would stay unread for ever.
                    log.info(
                        "UID %d in %s was not in the FETCH answer (gone, or not readable now): looked for again",
                        uid,
                        self.settings.folder,
                    )
                    self._cursor = checkpoint.fetched(self._cursor, [uid])
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

    def _advance(self, uids: Sequence[int]) -> None:
        """Move the checkpoint up to the highest handled UID below every still-pending one, so a crash
        never skips fetched-but-unhandled mail."""
        before = self._cursor.last_uid
        self._cursor = checkpoint.advance(self._cursor, uids)
        if self._cursor.last_uid != before:
            self._save_checkpoint()

    # --- waiting for mail

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
        except LINK_ERRORS as e:
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
