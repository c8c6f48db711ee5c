"""The IMAP UID checkpoint arithmetic as tables: what the server answered → what to fetch and where to stand.

Each row is one moment of a folder's life; the Dovecot tests (test_imap.py) show the same rules end to end.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailbot.mailbox.imap import checkpoint
from mailbot.mailbox.imap.checkpoint import MAX_UID, Cursor


def cur(uidvalidity: int | None, last: int, pending: set[int] | None = None, done: set[int] | None = None) -> Cursor:
    return Cursor(uidvalidity, last, frozenset(pending or ()), frozenset(done or ()))


# --- a saved checkpoint, read back

@pytest.mark.parametrize(("record", "expected"), [
    (None, Cursor()),  # first start: nothing saved yet
    ({"folder": "INBOX", "uidvalidity": 7, "last_uid": 41}, cur(7, 41)),
    ({"folder": "INBOX", "uidvalidity": "7", "last_uid": "41"}, cur(7, 41)),  # written by an older version
    ({"folder": "INBOX", "uidvalidity": MAX_UID, "last_uid": MAX_UID}, cur(MAX_UID, MAX_UID)),
])
def test_a_saved_checkpoint_is_read_back(record: dict[str, Any] | None, expected: Cursor) -> None:
    assert checkpoint.from_record(record) == expected


@pytest.mark.parametrize("record", [
    {"folder": "INBOX"},  # fields missing
    {"uidvalidity": None, "last_uid": 3},
    {"uidvalidity": 7, "last_uid": "forty"},
    {"uidvalidity": 7, "last_uid": -1},
])
def test_an_unreadable_checkpoint_is_refused(record: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unreadable IMAP checkpoint"):
        checkpoint.from_record(record)


def test_only_the_restartable_part_is_saved() -> None:
    # Pending and done UIDs are this session's: a restart fetches them again from the saved last UID.
    record = checkpoint.to_record("Support/Inbox", cur(7, 41, {43}, {44}))
    assert record == {"folder": "Support/Inbox", "uidvalidity": 7, "last_uid": 41}
    assert checkpoint.from_record(record) == cur(7, 41)


# --- SELECT reports a UIDVALIDITY

@pytest.mark.parametrize(("before", "uidvalidity", "after"), [
    (Cursor(), 7, cur(7, 0)),  # first SELECT ever
    (cur(7, 41, {43}, {44}), 7, cur(7, 41, {43}, {44})),  # same folder generation: keep everything
    (cur(7, 41, {43}, {44}), 8, cur(8, 0)),  # folder rebuilt: every old UID names nothing now
    (cur(8, 41), 7, cur(7, 0)),  # a lower UIDVALIDITY is a change as well
])
def test_select_keeps_or_resets_the_cursor(before: Cursor, uidvalidity: int, after: Cursor) -> None:
    assert checkpoint.on_select(before, uidvalidity) == after


def test_an_unchanged_uidvalidity_returns_the_same_cursor_so_nothing_is_saved() -> None:
    before = cur(7, 41)
    assert checkpoint.on_select(before, 7) is before
    assert checkpoint.on_select(before, 9) is not before


# --- searching and fetching

@pytest.mark.parametrize(("last", "expected"), [
    (0, "1:*"),  # empty checkpoint: from the first message
    (41, "42:*"),
    (MAX_UID - 1, f"{MAX_UID}:*"),
    (MAX_UID, None),  # no UID can exist above the largest one (RFC 3501 §9)
])
def test_search_range(last: int, expected: str | None) -> None:
    assert checkpoint.search_range(cur(7, last)) == expected


@pytest.mark.parametrize(("cursor", "found", "skip", "limit", "uids", "pending"), [
    # An empty folder: `1:*` finds nothing.
    (cur(7, 0), [], (), None, (), set()),
    # The fetch-range trap: `42:*` on a folder whose highest UID is 41 still answers 41.
    (cur(7, 41), [41], (), None, (), set()),
    # The server answers unordered and with repeats; a UID below the checkpoint is dropped too.
    (cur(7, 41), [45, 12, 42, 45], (), None, (42, 45), set()),
    # Gaps (expunged mail) are fine: UIDs only have to grow.
    (cur(7, 0), [3, 9, 200], (), None, (3, 9, 200), set()),
    # A limit takes the oldest; a negative limit takes nothing.
    (cur(7, 0), [1, 2, 3, 4], (), 2, (1, 2), set()),
    (cur(7, 0), [1, 2, 3], (), 0, (), set()),
    (cur(7, 0), [1, 2, 3], (), -5, (), set()),
    # Skipped UIDs (held by the caller) are not fetched, and do not count against the limit.
    (cur(7, 0), [1, 2, 3, 4], {1, 3}, 1, (2,), set()),
    # A pending UID no longer found (moved away by another client) stops holding the checkpoint back;
    # one still found stays pending even when it is skipped.
    (cur(7, 4, {5, 6, 7}), [6, 7, 8], {6, 7}, None, (8,), {6, 7}),
    # Huge UIDs: still integers, nothing overflows.
    (cur(7, MAX_UID - 2), [MAX_UID, MAX_UID - 1, MAX_UID - 2], (), None, (MAX_UID - 1, MAX_UID), set()),
])
def test_plan_fetch(cursor: Cursor, found: list[int], skip: set[int], limit: int | None,
                    uids: tuple[int, ...], pending: set[int]) -> None:
    plan = checkpoint.plan_fetch(cursor, found, skip, limit)
    assert plan.uids == uids
    assert plan.cursor == cur(cursor.uidvalidity, cursor.last_uid, pending, set(cursor.done))


@pytest.mark.parametrize(("uids", "size", "chunks"), [
    ([], 100, []),
    ([1, 2, 3], 100, [[1, 2, 3]]),
    ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]]),
    ([MAX_UID - 1, MAX_UID], 1, [[MAX_UID - 1], [MAX_UID]]),
])
def test_fetch_chunks_are_integer_lists_never_range_strings(uids: list[int], size: int,
                                                            chunks: list[list[int]]) -> None:
    # imapclient 4.x FETCH rejects "N:*" (upstream #666): every chunk must be a list of ints.
    got = list(checkpoint.fetch_chunks(uids, size))
    assert got == chunks
    assert all(isinstance(u, int) for chunk in got for u in chunk)


# --- handling mail moves the checkpoint

@pytest.mark.parametrize(("before", "handled", "after"), [
    # In order: the checkpoint follows.
    (cur(7, 0, {1, 2, 3}), [1], cur(7, 1, {2, 3})),
    (cur(7, 0, {1, 2, 3}), [1, 2, 3], cur(7, 3)),
    # Out of order: 3 is done but 2 is still pending, so the checkpoint waits at 1 …
    (cur(7, 1, {2, 3}), [3], cur(7, 1, {2}, {3})),
    # … and jumps past both once 2 is handled.
    (cur(7, 1, {2}, {3}), [2], cur(7, 3)),
    # Gaps: UIDs that never existed do not hold anything back.
    (cur(7, 0, {3, 9, 200}), [3, 9], cur(7, 9, {200})),
    # A UID below the checkpoint (handled twice, or after a restart) changes nothing.
    (cur(7, 41, {45}), [12], cur(7, 41, {45})),
    # Nothing handled: nothing moves.
    (cur(7, 41, {45}), [], cur(7, 41, {45})),
    # Mail handled that was never fetched this session (e.g. a quarantine by ref) still counts.
    (cur(7, 41), [42], cur(7, 42)),
    # Huge UIDs.
    (cur(7, MAX_UID - 2, {MAX_UID - 1, MAX_UID}), [MAX_UID], cur(7, MAX_UID - 2, {MAX_UID - 1}, {MAX_UID})),
    (cur(7, MAX_UID - 2, {MAX_UID - 1}, {MAX_UID}), [MAX_UID - 1], cur(7, MAX_UID)),
])
def test_advance(before: Cursor, handled: list[int], after: Cursor) -> None:
    assert checkpoint.advance(before, handled) == after


def test_a_batch_read_while_the_last_is_pending_never_lets_the_checkpoint_pass_it() -> None:
    # The life of one session: fetch 1-2, fetch 3-4 before 1-2 are handled, handle 3-4, then 1-2.
    c = checkpoint.on_select(Cursor(), 7)
    plan = checkpoint.plan_fetch(c, [1, 2, 3, 4], limit=2)
    c = checkpoint.fetched(plan.cursor, plan.uids)
    plan = checkpoint.plan_fetch(c, [1, 2, 3, 4], skip={1, 2})
    c = checkpoint.fetched(plan.cursor, plan.uids)
    assert plan.uids == (3, 4) and c.pending == {1, 2, 3, 4}
    c = checkpoint.advance(c, [3, 4])
    assert c.last_uid == 0  # a crash now must fetch 1 and 2 again
    c = checkpoint.advance(c, [1, 2])
    assert (c.last_uid, c.pending, c.done) == (4, frozenset(), frozenset())
    assert checkpoint.search_range(c) == "5:*"


# --- refs

@pytest.mark.parametrize(("ref", "parts"), [
    ("INBOX/7/41", ("INBOX", 7, 41)),
    ("Support/Inbox/7/41", ("Support/Inbox", 7, 41)),  # the folder may contain "/"
    (f"INBOX/{MAX_UID}/{MAX_UID}", ("INBOX", MAX_UID, MAX_UID)),
])
def test_refs_round_trip(ref: str, parts: tuple[str, int, int]) -> None:
    assert checkpoint.parse_ref(ref) == parts
    assert checkpoint.make_ref(*parts) == ref


@pytest.mark.parametrize("ref", ["INBOX/41", "/7/41", "INBOX/x/41", "INBOX/7/", "1.M1.host", "INBOX/7/-1"])
def test_not_an_imap_ref(ref: str) -> None:
    with pytest.raises(ValueError, match="not an IMAP ref"):
        checkpoint.parse_ref(ref)


@pytest.mark.parametrize(("refs", "uidvalidity", "uids", "stale"), [
    ([], 7, [], []),
    (["INBOX/7/3", "INBOX/7/1", "INBOX/7/3"], 7, [1, 3], []),
    # Another generation of the folder, or another folder: the UID would name another message.
    (["INBOX/6/3", "Archive/7/4", "INBOX/7/5"], 7, [5], ["INBOX/6/3", "Archive/7/4"]),
    # Before the first SELECT nothing is current.
    (["INBOX/7/3"], None, [], ["INBOX/7/3"]),
])
def test_split_refs(refs: list[str], uidvalidity: int | None, uids: list[int], stale: list[str]) -> None:
    assert checkpoint.split_refs(refs, "INBOX", uidvalidity) == (uids, stale)


@pytest.mark.parametrize(("skip", "uids"), [
    ((), set()),
    ({"INBOX/7/3", "INBOX/7/5"}, {3, 5}),
    ({"INBOX/6/3", "Archive/7/4"}, set()),  # other generation, other folder
    ({"INBOX/7/003", "1.M1.host", "INBOX/7/x"}, set()),  # not written by make_ref: names nothing here
])
def test_skipped_uids(skip: set[str], uids: set[int]) -> None:
    assert checkpoint.skipped_uids(skip, "INBOX", 7) == uids
