"""Moving, flagging and quarantining mail by UID, tolerant of messages that vanished meanwhile; folders made
on first use. Mixed into `ImapMailbox`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from imapclient import IMAPClient
from imapclient.exceptions import (
    IMAPClientAbortError,
    IMAPClientError,
)

from mailbot.mailbox.imap import checkpoint
from mailbot.mailbox.imap.checkpoint import fetch_chunks
from mailbot.mailbox.imap.link import DELETED, PROCESSED_KEYWORD, STORE_CHUNK, ImapError, Link

log = logging.getLogger("mailbot.imap")


class Folders:
    """Writes to the mailbox (needs _run, _main, _cursor, settings)."""

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

    def _ensure_folder(self, link: Link, client: IMAPClient, folder: str) -> None:
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
