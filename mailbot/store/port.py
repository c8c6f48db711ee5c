"""The store port: the one domain API that every engine serves (files, memory, postgresql).

The service, the CLI and the sweep talk to the store only through these methods; nothing outside an engine
knows its tables, files or SQL. Semantics every engine keeps (the shared suite `tests/test_store_port.py`
runs on each):

- Writes are seen by the reads of the same store object at once, and become durable together at
  `commit()` — one atomic transaction per batch. A crash before `commit()` loses the batch, never half of it.
- Checkpoints (`set_checkpoint`) are the exception: durable at once, because they follow a mailbox's state
  (IMAP UIDs already moved), not the batch.
- Records (unmatched, quarantined, outbox entries, checkpoints) are plain JSON-able dicts; cases are models.
- `outbox_record` → `outbox_update`* → `outbox_finish` is an entry's life: "pending" until "sent" | "failed".
- Lookups of missing things return None / False / empty, never raise. A store that finds data it did not
  write raises `StoreCorrupt` and writes nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from mailbot.models import Case
from mailbot.store.codec import CaseFacts


@runtime_checkable
class StorePort(Protocol):
    # --- cases ---
    def get_case(self, key: str) -> Case | None: ...
    def put_case(self, case: Case) -> None:
        """Insert or replace; the case's tracking tokens and its key become findable; its next action is what
        `due_case_keys` reads."""
    def active_cases(self) -> Iterator[Case]: ...
    def all_cases(self) -> Iterator[Case]:
        """Open cases first, then closed ones."""
    def due_case_keys(self, now: datetime) -> list[str]:
        """Open cases whose next action is due at or before `now`, soonest first."""
    def report_cases(self, since: datetime, part: int = 0, parts: int = 1) -> Iterator[Case | CaseFacts]:
        """The cases, open or closed, whose `last_activity` is at or after `since`, in no particular order,
        as mailbot.report reads them: each a Case or a CaseFacts (codec.py: the fields the report reads, with
        the same names and values, decoded without the rest). Leaving out the older cases loses nothing of a
        period that starts at `since`: mailbot.cases keeps `last_activity` at the latest date on the timeline
        and never before `opened`. With `parts` > 1, only the `part`-th (from 0) of that many disjoint parts
        whose union is all of them (to be read by several processes at once)."""

    # --- the Message-ID index ---
    def case_for_message(self, message_id: str) -> str | None: ...
    def case_for_token(self, token: str) -> str | None:
        """The case that gained this tracking token last."""
    def seen(self, message_id: str) -> dict[str, Any] | None:
        """Where a recorded message ended: {"case": KEY, "place": ...} or {"case": "", "place": ...}."""
    def remember(self, message_id: str, case_key: str, place: str = "case", digest: str = "") -> None:
        """Record where a mail ended. `digest`: its content's (mailbot.parse.mail.content_digest), so that a
        different mail under the same Message-ID is told from a copy; `seen` returns it when given."""
    def prefetch(self, message_ids: list[str], case_keys: Sequence[str] = ()) -> None:
        """A hint, changing nothing: `seen` / `case_for_message` are about to be asked about these Message-IDs
        and `get_case` about these keys. An engine behind a network (PostgreSQL) reads them in one query each
        instead of one round trip per mail; the others ignore it."""

    # --- unmatched and quarantined mail ---
    def add_unmatched(self, record: dict[str, Any]) -> None:
        """Keyed by record["message_id"]."""
    def unmatched(self) -> list[dict[str, Any]]: ...
    def add_quarantined(self, record: dict[str, Any]) -> None:
        """Keyed by record["ref"]."""
    def quarantined(self) -> list[dict[str, Any]]: ...
    def remove_quarantined(self, ref: str) -> bool: ...

    # --- the outbox ledger (exactly-once sending) ---
    def outbox_entry(self, action_id: str) -> dict[str, Any] | None: ...
    def outbox_record(self, entry: dict[str, Any]) -> None:
        """Record an intent to send before sending: status "pending", keyed by entry["action_id"]."""
    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        """Final status "sent" (the raw bytes are dropped) or "failed" (kept). Unknown ids are ignored."""
    def outbox_update(self, action_id: str, **details: Any) -> None:
        """Merge details into a pending entry (attempt marks); finished or unknown ids are ignored."""
    def outbox_pending(self) -> list[dict[str, Any]]:
        """Pending entries, oldest recorded first."""
    def outbox_held(self, case_key: str) -> list[dict[str, Any]]:
        """The case's pending entries that wait for a later time (`not_before`), oldest first."""
    def outbox_entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, pending first (for checks and dumps, not for the bot's work)."""
    def sends_since(self, address: str, since: datetime) -> int: ...
    def note_send(self, address: str, at: datetime) -> None: ...

    # --- checkpoints ---
    def get_checkpoint(self, key: str) -> dict[str, Any] | None: ...
    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        """Durable at once, independently of `commit()`."""

    # --- export and import: everything the engine-neutral dump (mailbot/store/dump.py) reads and writes ---
    def id_entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The Message-ID index: (Message-ID, {"case", "place"}) and ("token:" + token, {"case"})."""
    def restore_id(self, key: str, doc: dict[str, Any]) -> None:
        """Put back one entry of `id_entries` as it was."""
    # Bulk reads for a load: each answers for many keys what the one-key read answers (only what exists, keyed
    # as asked), at the cost of one query (PostgreSQL) or one read of each index file (files).
    def get_cases(self, keys: list[str]) -> dict[str, Case]: ...
    def seen_many(self, message_ids: list[str]) -> dict[str, dict[str, Any]]: ...
    def cases_for_tokens(self, tokens: list[str]) -> dict[str, str]: ...
    def outbox_entries_for(self, action_ids: list[str]) -> dict[str, dict[str, Any]]: ...
    def send_entries(self) -> Iterator[tuple[str, list[str]]]:
        """(recipient, the UTC ISO times of the recent sends to it, oldest first)."""
    def restore_sends(self, address: str, times: list[str]) -> None:
        """Replace a recipient's recent send times."""
    def checkpoints(self) -> Iterator[tuple[str, dict[str, Any]]]: ...
    def outbox_restore(self, entry: dict[str, Any]) -> None:
        """Put back an outbox entry as it was dumped, whatever its status."""

    # --- durability and figures ---
    def commit(self) -> int:
        """Make every change since the last commit durable, atomically; returns a figure of work done."""
    def locality(self, case: Case) -> int:
        """A grouping hint for bulk loads (cases with the same number share storage); any order is correct."""
    def counts(self) -> dict[str, int]:
        """{"active", "closed", "unmatched", "quarantined", "pending"}."""
