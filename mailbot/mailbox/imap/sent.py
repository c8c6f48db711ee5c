"""The IMAP Sent folder's exchanges on a given connection: store a copy of sent mail, find one by Message-ID.

The caller (ImapMailbox) owns the connection, its lock and its one transparent reconnect; what is here is
what to say to the server, and that a retried APPEND does not store a mail twice.
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32

from imapclient import IMAPClient

SEEN = b"\\Seen"
CONFIRM_AT_MOST = 20  # HEADER search hits whose Message-ID is read to confirm an exact match


def normal_message_id(message_id: str) -> str:
    mid = message_id.strip()
    return mid if mid.startswith("<") else f"<{mid}>"


def message_id_of(raw: bytes) -> str | None:
    value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    return normal_message_id(str(value)) if value else None


def searchable(mid: str) -> bool:
    """A Message-ID is printable ASCII on one line (RFC 5322 §3.6.4); nothing else can be in the folder."""
    return mid.isascii() and not any(ch in mid for ch in "\r\n")


def imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append(client: IMAPClient, folder: str, raw: bytes, retried: bool, known: set[str]) -> None:
    """Store `raw` in `folder` marked \\Seen (the caller has made sure the folder exists). After a dropped
    link (`retried`) the first APPEND may have gone through: then it is not stored twice."""
    message_id = message_id_of(raw)
    if retried and message_id and contains(client, folder, message_id, known):
        return
    client.append(folder, raw, flags=[SEEN])


def contains(client: IMAPClient, folder: str, mid: str, known: set[str]) -> bool:
    """Whether `folder` holds a message with exactly this (normalised) Message-ID. `known` is the set of
    folders seen to exist on this connection; a folder found is added to it."""
    if folder not in known:
        if not client.folder_exists(folder):
            return False
        known.add(folder)
    client.select_folder(folder, readonly=True)
    # Our own quoting (a single string is sent as is): ids may contain characters IMAP treats specially.
    uids = client.search(f"HEADER Message-ID {imap_quote(mid)}")
    if not uids:
        return False
    # HEADER search is a substring match (RFC 3501 §6.4.4): confirm the exact id.
    data = client.fetch(sorted(uids)[:CONFIRM_AT_MOST], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return any(
        key.startswith(b"BODY[HEADER") and message_id_of(value) == mid
        for item in data.values()
        for key, value in item.items()
    )

