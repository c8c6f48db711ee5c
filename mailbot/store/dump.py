"""Engine-neutral dumps: every record of a store as JSON lines, and loading them into any engine (idempotent).

A dump is the backup format and the way from the files engine to PostgreSQL and back. Its first line names the
format; then one record a line, `{"kind": ...}`:

    {"kind": "dump", "format": "mailbot-store", "version": 1}
    {"kind": "case", "case": {codec document}}          cases first, so that the explicit ids below win
    {"kind": "id", "key": MESSAGE-ID | "token:" TOKEN, "case": KEY, "place": ..., "digest": ... (if any)}
    {"kind": "unmatched", "record": {...}}   {"kind": "quarantine", "record": {...}}
    {"kind": "outbox", "entry": {...}}       {"kind": "send", "address": A, "times": [UTC ISO, ...]}
    {"kind": "checkpoint", "key": K, "value": {...}}

Loading compares each record with what the store holds and writes only what differs, so loading a dump twice
changes nothing the second time (`load` returns 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mailbot.models import Case
from mailbot.store.codec import case_from_doc, case_to_doc
from mailbot.store.port import StorePort

FORMAT = "mailbot-store"
VERSION = 1
_BATCH = 500  # changed records a commit holds during a load (bounds the memory of a big load)
_LIGHT = frozenset({"id", "send", "checkpoint"})  # records of a few dozen bytes
_WINDOW = 20_000  # case records a load puts in the store's locality order at a time (~200 MB of cases)


class DumpError(ValueError):
    """A dump line that is not a record this version reads; the message names the line."""


def dump(store: StorePort) -> Iterator[dict[str, Any]]:
    yield {"kind": "dump", "format": FORMAT, "version": VERSION}
    for case in store.all_cases():
        yield {"kind": "case", "case": case_to_doc(case)}
    for key, doc in store.id_entries():
        yield {"kind": "id", "key": key, **doc}
    for record in store.unmatched():
        yield {"kind": "unmatched", "record": record}
    for record in store.quarantined():
        yield {"kind": "quarantine", "record": record}
    for entry in store.outbox_entries():
        yield {"kind": "outbox", "entry": entry}
    for address, times in store.send_entries():
        yield {"kind": "send", "address": address, "times": times}
    for key, value in store.checkpoints():
        yield {"kind": "checkpoint", "key": key, "value": value}


def dump_lines(store: StorePort) -> Iterator[str]:
    """The dump as text lines (ASCII JSON: raw mail kept as surrogate escapes survives the round trip)."""
    for record in dump(store):
        yield json.dumps(record, sort_keys=True) + "\n"


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Records from dump lines; a line that is not a JSON object raises DumpError naming its number."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DumpError(f"line {number}: not JSON ({e})") from None
        if not isinstance(record, dict):
            raise DumpError(f"line {number}: not a JSON object")
        yield record


class _Loader:
    """Writes the records that differ from the store's; existing collections are read once, lazily.

    `prefetch` asks the port's bulk reads — `get_cases(keys)`, `seen_many(ids)`, `cases_for_tokens(tokens)`,
    `outbox_entries_for(ids)` — for a chunk of records at once: one query a table on PostgreSQL, one read of
    each index part on the files engine, where one read a record costs a round trip or a part file a record. A prefetched value is used once (`pop`), and the
    tokens of a case written meanwhile are forgotten, so a record that an earlier one of the same chunk
    changed is read again, as without the prefetch."""

    def __init__(self, store: StorePort) -> None:
        self.store = store
        self._unmatched: dict[str, dict[str, Any]] | None = None
        self._quarantined: dict[str, dict[str, Any]] | None = None
        self._sends: dict[str, list[str]] | None = None
        self._known: dict[tuple[str, str], Any] = {}  # (table, key) → what the store held before the chunk

    def prefetch(self, records: list[dict[str, Any]]) -> None:
        """Read what the store holds for these records, in one query a table (when the engine can)."""
        self._known.clear()
        wanted: dict[str, set[str]] = {"case": set(), "id": set(), "token": set(), "outbox": set()}
        for r in records:  # a malformed record is skipped here: apply() names it
            try:
                kind = r.get("kind")
                if kind == "case":
                    wanted["case"].add(str(r["case"]["key"]))
                elif kind == "id":
                    key = str(r["key"])
                    wanted["token" if key.startswith("token:") else "id"].add(key.removeprefix("token:"))
                elif kind == "outbox":
                    wanted["outbox"].add(str(r["entry"]["action_id"]))
            except (KeyError, TypeError, AttributeError):
                continue
        s = self.store
        reads: tuple[tuple[str, Callable[[list[str]], dict[str, Any]]], ...] = (
            ("case", s.get_cases), ("id", s.seen_many), ("token", s.cases_for_tokens),
            ("outbox", s.outbox_entries_for))
        for table, read in reads:
            if wanted[table]:
                keys = sorted(wanted[table])
                found = read(keys)
                self._known.update(((table, k), found.get(k)) for k in keys)

    def _current(self, table: str, key: str, read: Any) -> Any:
        try:
            return self._known.pop((table, key))
        except KeyError:
            return read()

    def apply(self, record: dict[str, Any], case: Case | None = None) -> bool:
        """Write the record if the store holds something else; `case`: a case record's case, already read."""
        kind = record.get("kind")
        s = self.store
        if kind == "dump":
            if record.get("format") != FORMAT or record.get("version") != VERSION:
                raise DumpError(f"a dump of format {record.get('format')!r} version {record.get('version')!r}; "
                                f"this mailbot reads {FORMAT!r} version {VERSION}")
            return False
        if kind == "case":
            case = case or case_from_doc(record["case"])
            if self._current("case", case.key, lambda: s.get_case(case.key)) == case:
                return False
            s.put_case(case)
            for token in case.tracking_tokens:  # put_case may have moved them: read them again
                self._known.pop(("token", token), None)
            return True
        if kind == "id":
            key = record["key"]
            doc = {k: v for k, v in record.items() if k not in ("kind", "key")}
            if key.startswith("token:"):
                token = key[len("token:"):]
                now = {"case": self._current("token", token, lambda: s.case_for_token(token))}
            else:
                now = self._current("id", key, lambda: s.seen(key))
            if now == doc:
                return False
            s.restore_id(key, doc)
            return True
        if kind == "unmatched":
            if self._unmatched is None:
                self._unmatched = {r["message_id"]: r for r in s.unmatched()}
            return self._keyed(self._unmatched, record["record"], "message_id", s.add_unmatched)
        if kind == "quarantine":
            if self._quarantined is None:
                self._quarantined = {r["ref"]: r for r in s.quarantined()}
            return self._keyed(self._quarantined, record["record"], "ref", s.add_quarantined)
        if kind == "outbox":
            entry = record["entry"]
            if self._current("outbox", entry["action_id"], lambda: s.outbox_entry(entry["action_id"])) == entry:
                return False
            s.outbox_restore(entry)
            return True
        if kind == "send":
            if self._sends is None:
                self._sends = dict(s.send_entries())
            times = sorted(record["times"])
            if self._sends.get(record["address"]) == times:
                return False
            s.restore_sends(record["address"], times)
            self._sends[record["address"]] = times
            return True
        if kind == "checkpoint":
            if s.get_checkpoint(record["key"]) == record["value"]:
                return False
            s.set_checkpoint(record["key"], record["value"])
            return True
        raise DumpError(f"a record of unknown kind {kind!r}")

    @staticmethod
    def _keyed(have: dict[str, dict[str, Any]], record: dict[str, Any], field: str, add: Any) -> bool:
        if have.get(record[field]) == record:
            return False
        add(record)
        have[record[field]] = record
        return True


def _in_locality_order(store: StorePort, records: Iterable[dict[str, Any]]
                       ) -> Iterator[tuple[int, dict[str, Any], Case | None]]:
    """(number, record, its case) with each run of case records taken up to _WINDOW at a time in the order of
    `store.locality`, every other record where it stands. For the files engine a commit then rewrites a few
    neighbouring shards, each once a window, instead of one shard a case (a dump of PostgreSQL lists cases by
    key, which scatters them over every shard). Reordering cases is safe: the id records after them say
    which case holds each token, whatever order the cases were written in."""
    window: list[tuple[int, int, dict[str, Any], Case | None]] = []

    def drained() -> list[tuple[int, dict[str, Any], Case | None]]:
        out = [(number, record, case) for _, number, record, case in sorted(window, key=lambda w: (w[0], w[1]))]
        window.clear()
        return out

    for number, record in enumerate(records, 1):
        if isinstance(record, dict) and record.get("kind") == "case":
            try:
                case = case_from_doc(record["case"])
                window.append((store.locality(case), number, record, case))
            except (KeyError, TypeError, ValueError, AttributeError):
                window.append((-1, number, record, None))  # first: apply() names it
            if len(window) >= _WINDOW:
                yield from drained()
            continue
        yield from drained()
        yield number, record, None
    yield from drained()


def _weight(record: dict[str, Any]) -> float:
    # An id, a send log, a checkpoint or a finished mail's ledger entry (its bytes gone: a kilobyte) weighs a
    # fortieth of a case or of a mail still with its bytes — in memory, and in what a files store's commit
    # writes for it.
    kind = record.get("kind")
    if kind in _LIGHT or (kind == "outbox" and isinstance(record.get("entry"), dict) and "raw" not in record["entry"]):
        return 1 / 40
    return 1


def _chunk(ordered: Iterator[tuple[int, dict[str, Any], Case | None]]
           ) -> list[tuple[int, dict[str, Any], Case | None]]:
    """The next records up to a weight of _BATCH: 500 cases, or up to 20,000 ids or sent mails' entries, whose
    reads `prefetch` makes together: the files engine's index keeps ids in part files by hash, so a chunk of
    n ids reads min(n, parts) part files, and 200,000 sent entries 500 at a time read 160,000 (16 minutes)."""
    chunk: list[tuple[int, dict[str, Any], Case | None]] = []
    weight = 0.0
    for item in ordered:
        chunk.append(item)
        weight += _weight(item[1])
        if weight >= _BATCH:
            break
    return chunk


def load(store: StorePort, records: Iterable[dict[str, Any]]) -> int:
    """Load dump records into `store` and commit; returns how many changed something (0: already loaded)."""
    loader = _Loader(store)
    changed, pending = 0, 0.0
    ordered = _in_locality_order(store, records)
    while chunk := _chunk(ordered):
        loader.prefetch([record for _, record, _ in chunk])
        for number, record, case in chunk:
            try:
                did = loader.apply(record, case)
            except DumpError as e:
                raise DumpError(f"record {number}: {e}") from None
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise DumpError(f"record {number} ({record.get('kind')!r}): unreadable "
                                f"({type(e).__name__}: {e})") from None
            if did:
                changed += 1
                pending += _weight(record)  # 500,000 changed ids take 25 commits, not 1,000
                if pending >= _BATCH:
                    store.commit()
                    pending = 0
    store.commit()
    return changed
