"""The IMAP UID checkpoint as values: which UIDs to fetch and how far the checkpoint may move, with no I/O.

The adapter asks the server, hands the answers here and carries out what comes back. RFC 3501 §2.3.1.1:
UIDs in a folder only grow while its UIDVALIDITY stays the same; when UIDVALIDITY changes every UID may name
another message, so the folder is read again from UID 1 (the service's Message-ID dedup absorbs repeats).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MAX_UID = 2**32 - 1  # RFC 3501 §9: a UID is an nz-number, at most 4,294,967,295


@dataclass(frozen=True)
class Cursor:
    """Where ingest stands in one folder. `uidvalidity`/`last_uid` are what a restart resumes from (the saved
    checkpoint); `pending` (fetched, not yet handled) and `done` (handled, but above a pending UID) live
    only for one session and keep the checkpoint from passing mail that was fetched but not handled."""

    uidvalidity: int | None = None
    last_uid: int = 0
    pending: frozenset[int] = field(default_factory=frozenset)
    done: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class FetchPlan:
    """What a SEARCH answer means: the UIDs to fetch (ascending) and the cursor to keep."""

    uids: tuple[int, ...]
    cursor: Cursor


def make_ref(folder: str, uidvalidity: int, uid: int) -> str:
    """The handle of one message: "<folder>/<UIDVALIDITY>/<UID>"."""
    return f"{folder}/{uidvalidity}/{uid}"


def parse_ref(ref: str) -> tuple[str, int, int]:
    """`INBOX/123/45` → ("INBOX", 123, 45); the folder itself may contain "/"."""
    folder, sep1, rest = ref.rpartition("/")
    folder, sep2, validity = folder.rpartition("/")
    if not (sep1 and sep2 and folder and validity.isdigit() and rest.isdigit()):
        raise ValueError(f"not an IMAP ref (folder/uidvalidity/uid): {ref!r}")
    return folder, int(validity), int(rest)


def split_refs(refs: Iterable[str], folder: str, uidvalidity: int | None) -> tuple[list[int], list[str]]:
    """The distinct UIDs (ascending) of the refs that name a message of `folder` under `uidvalidity`, and
    the refs that do not: their UID would name another message now (or one of another folder).
    ValueError for a ref that is not an IMAP ref at all."""
    uids: set[int] = set()
    stale: list[str] = []
    for ref in refs:
        ref_folder, ref_validity, uid = parse_ref(ref)
        if ref_folder != folder or ref_validity != uidvalidity:
            stale.append(ref)
        else:
            uids.add(uid)
    return sorted(uids), stale


def skipped_uids(skip: Iterable[str], folder: str, uidvalidity: int) -> frozenset[int]:
    """The UIDs whose refs (exactly as `make_ref` writes them) are in `skip`; anything else there is
    ignored, as it names no message of this folder now."""
    uids: set[int] = set()
    for ref in skip:
        try:
            parts = parse_ref(ref)
        except ValueError:
            continue
        if parts[:2] == (folder, uidvalidity) and make_ref(*parts) == ref:
            uids.add(parts[2])
    return frozenset(uids)


def from_record(value: Mapping[str, Any] | None) -> Cursor:
    """The cursor a saved checkpoint describes; ValueError when the record cannot be read."""
    if value is None:
        return Cursor()
    try:
        uidvalidity, last_uid = int(value["uidvalidity"]), int(value["last_uid"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"unreadable IMAP checkpoint: {value!r}") from e
    if last_uid < 0:
        raise ValueError(f"unreadable IMAP checkpoint (negative UID): {value!r}")
    return Cursor(uidvalidity, last_uid)


def to_record(folder: str, cursor: Cursor) -> dict[str, Any]:
    """What is saved: only the part of the cursor that stays true across a restart."""
    return {"folder": folder, "uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid}


def on_select(cursor: Cursor, uidvalidity: int) -> Cursor:
    """The cursor after SELECT reported `uidvalidity`: unchanged when it matches, else back to UID 0 with
    nothing pending (the old UIDs name nothing any more). The caller saves it when it is a new object."""
    if uidvalidity == cursor.uidvalidity:
        return cursor
    return Cursor(uidvalidity, 0)


def search_range(cursor: Cursor) -> str | None:
    """The UID set for `UID SEARCH` of mail above the checkpoint, or None when no UID can be above it.
    A range string is fine for SEARCH but not for imapclient 4.x FETCH (issue #666): fetch with
    `fetch_chunks`. `N:*` matches the highest UID even when N is past it: filter with `plan_fetch`."""
    if cursor.last_uid >= MAX_UID:
        return None  # UIDs are exhausted; the server must change UIDVALIDITY before it adds more
    return f"{cursor.last_uid + 1}:*"


def plan_fetch(
    cursor: Cursor, found: Iterable[int], skip: Collection[int] = (), limit: int | None = None
) -> FetchPlan:
    """From a SEARCH answer: the UIDs above the checkpoint, not in `skip`, oldest first, at most `limit`.
    Pending UIDs the answer no longer lists (moved or expunged by another client) stop holding the
    checkpoint back."""
    above = sorted({u for u in found if u > cursor.last_uid})
    kept = cursor.pending & frozenset(above)
    wanted = [u for u in above if u not in skip] if skip else above
    if limit is not None:
        wanted = wanted[: max(limit, 0)]
    return FetchPlan(tuple(wanted), cursor if kept == cursor.pending else replace(cursor, pending=kept))


def fetch_chunks(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    """Lists of integer UIDs, `size` at a time: never a range string (imapclient 4.x FETCH rejects those)."""
    for i in range(0, len(uids), size):
        yield list(uids[i : i + size])


def fetched(cursor: Cursor, uids: Iterable[int]) -> Cursor:
    """The cursor once `uids` were handed to the caller: they hold the checkpoint until handled."""
    return replace(cursor, pending=cursor.pending | frozenset(uids))


def advance(cursor: Cursor, handled: Iterable[int]) -> Cursor:
    """The cursor after `handled` were marked or quarantined: the checkpoint moves up to the highest
    handled UID below every still-pending one, so a crash never skips fetched-but-unhandled mail."""
    handled = frozenset(handled)
    pending = cursor.pending - handled
    done = cursor.done | {u for u in handled if u > cursor.last_uid}
    bound = min(pending) - 1 if pending else None
    reachable = [u for u in done if bound is None or u <= bound]
    last = max(cursor.last_uid, max(reachable)) if reachable else cursor.last_uid
    return Cursor(cursor.uidvalidity, last, pending, frozenset(u for u in done if u > last))
