"""The PostgreSQL engine's outbox ledger, send log and checkpoints (a part of `PostgresStore`).

The ledger is one row per outgoing mail, from its intent ("pending", with its raw bytes) to its end ("sent":
the bytes are dropped, the Sent folder or outbox folder has the copy; "failed": kept), like the files engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from mailbot.store.codec import utc
from mailbot.store.postgresql.safe import escape_text, from_db, to_db, unescape_text

_KEEP_SENDS = 20  # only the last few days matter for a daily cap; the files engine keeps 20 a recipient too

_PUT_ENTRY = """
INSERT INTO outbox (action_id, status, "case", not_before, recorded, doc)
VALUES (%(id)s, %(status)s, %(case)s, %(not_before)s, %(recorded)s, %(doc)s::jsonb)
ON CONFLICT (action_id) DO UPDATE SET status = excluded.status, "case" = excluded."case",
    not_before = excluded.not_before, recorded = excluded.recorded, doc = excluded.doc
WHERE outbox.doc IS DISTINCT FROM excluded.doc
"""

# The details merge into the stored document; a sent mail's raw text goes (the files engine's rule).
_FINISH = """
UPDATE outbox SET status = %(status)s,
    doc = CASE WHEN %(status)s = 'sent' THEN (doc || %(details)s::jsonb) - 'raw' ELSE doc || %(details)s::jsonb END
WHERE action_id = %(id)s
"""

_UPDATE = """
UPDATE outbox SET doc = doc || %(details)s::jsonb,
    not_before = CASE WHEN %(details)s::jsonb ? 'not_before' THEN %(details)s::jsonb->>'not_before'
                      ELSE not_before END
WHERE action_id = %(id)s AND status = 'pending'
"""


class Ledger:
    """Mixed into `PostgresStore`, which provides the connections and `_exec`/`_write`/`_pages`."""

    dsn: str
    conn: psycopg.Connection[Any]
    _checkpoint_conn: psycopg.Connection[Any] | None

    if TYPE_CHECKING:  # provided by PostgresStore
        def _exec(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]: ...
        def _write(self, sql: str, params: Any = None) -> None: ...
        def _pages(self, sql: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]: ...

    # --- the outbox ledger ----------------------------------------------------------------------------

    def outbox_entry(self, action_id: str) -> dict[str, Any] | None:
        row = self._exec("SELECT doc FROM outbox WHERE action_id = %s", (action_id,)).fetchone()
        return None if row is None else from_db(row[0])

    def outbox_entries_for(self, action_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The entries of these ids that exist (a bulk read for `load`)."""
        rows = self._exec("SELECT action_id, doc FROM outbox WHERE action_id = ANY(%s)", (action_ids,)).fetchall()
        return {action_id: from_db(doc) for action_id, doc in rows}

    def _put_entry(self, entry: dict[str, Any]) -> None:
        if self._held_cases is not None and entry.get("not_before") and entry.get("case"):
            self._held_cases.add(entry["case"])
        self._write(_PUT_ENTRY, {
            "id": entry["action_id"], "status": entry["status"], "case": entry.get("case"),
            "not_before": entry.get("not_before") or None, "recorded": entry.get("recorded", ""),
            "doc": to_db(entry)})

    def outbox_record(self, entry: dict[str, Any]) -> None:
        """Record an intent to send, before sending (status "pending")."""
        self._put_entry({**entry, "status": "pending"})

    def outbox_restore(self, entry: dict[str, Any]) -> None:
        """Put an entry back as it was dumped, whatever its status (for `load`)."""
        self._put_entry(dict(entry))

    def outbox_finish(self, action_id: str, status: str, **details: Any) -> None:
        self._write(_FINISH, {"id": action_id, "status": status, "details": to_db({**details, "status": status})})

    def outbox_update(self, action_id: str, **details: Any) -> None:
        if details.get("not_before"):  # held now (a retry after a 4xx): its case is not known here, so ask again
            self._held_cases = None
        self._write(_UPDATE, {"id": action_id, "details": to_db(details)})

    # Several mailboxes over several instances (issue 16): each instance sends the pending mail of the
    # mailboxes it holds, not every instance all of it. `outbox_of` names the mailbox (None: all pending mail,
    # the one-mailbox form); `outbox_unowned`: this store also sends mail outside any case (the first mailbox).
    outbox_of: str | None = None
    outbox_unowned: bool = True
    configured: tuple[str, ...] | None = None  # PostgresStore's: the first mailbox adopts the others' orphans

    def outbox_pending(self) -> list[dict[str, Any]]:
        if self.outbox_of is None:
            rows = self._exec("SELECT doc FROM outbox WHERE status = 'pending' ORDER BY recorded, action_id")
        else:
            rows = self._exec(
                """SELECT o.doc FROM outbox o LEFT JOIN cases c ON c.key = o."case"
                    WHERE o.status = 'pending' AND (c.mailbox = %s OR (c.mailbox IS NULL AND %s)
                          OR (%s AND NOT c.mailbox = ANY(%s)))
                    ORDER BY o.recorded, o.action_id""",
                (self.outbox_of, self.outbox_unowned, self.configured is not None, list(self.configured or ())))
        return [from_db(r[0]) for r in rows]

    # The cases that may have held mail, read once per batch (`prefetch_seen` starts a lookahead): asked for
    # every incoming mail, and almost always "none", the answer then costs no round trip. A superset: a case
    # in it is still asked about; mail held during the batch adds its case (`_put_entry`).
    _held_cases: set[str] | None = None

    def _maybe_held(self, case_key: str) -> bool:
        if self._held_cases is None:
            return True
        return case_key in self._held_cases

    def _read_held_cases(self) -> None:
        rows = self._exec("""SELECT DISTINCT "case" FROM outbox WHERE status = 'pending'
            AND coalesce(not_before, '') <> '' AND "case" IS NOT NULL""").fetchall()
        self._held_cases = {r[0] for r in rows}

    def outbox_held(self, case_key: str) -> list[dict[str, Any]]:
        if not self._maybe_held(case_key):
            return []
        rows = self._exec("""SELECT doc FROM outbox WHERE status = 'pending' AND "case" = %s
            AND coalesce(not_before, '') <> '' ORDER BY recorded, action_id""", (case_key,))
        return [from_db(r[0]) for r in rows]

    def outbox_entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, pending first (reads all of it: for checks and dumps, not for the bot's work)."""
        for where in ("status = 'pending'", "status <> 'pending'"):
            sql = (f"SELECT action_id, doc FROM outbox WHERE {where} AND action_id > %(after)s "
                   "ORDER BY action_id LIMIT %(limit)s")
            for _, doc in self._pages(sql, {}):
                yield from_db(doc)

    # --- the send log (the per-recipient daily cap) ---------------------------------------------------

    def sends_since(self, address: str, since: datetime) -> int:
        row = self._exec("SELECT count(*) FROM sends WHERE address = %s AND at >= %s", (address, since)).fetchone()
        return int(row[0]) if row else 0

    def note_send(self, address: str, at: datetime) -> None:
        self._write("INSERT INTO sends (address, at) VALUES (%s, %s)", (address, at))
        self._write("""DELETE FROM sends WHERE address = %s AND ctid IN (
            SELECT ctid FROM sends WHERE address = %s ORDER BY at DESC OFFSET %s)""", (address, address, _KEEP_SENDS))

    def send_entries(self) -> Iterator[tuple[str, list[str]]]:
        """Each recipient's recent send times (UTC ISO strings, oldest first)."""
        rows = self._exec("SELECT address, array_agg(at ORDER BY at) FROM sends GROUP BY address ORDER BY address")
        for address, times in rows.fetchall():
            yield address, [utc(t) for t in times]

    def restore_sends(self, address: str, times: list[str]) -> None:
        """Replace a recipient's send times with these (for `load`)."""
        self._write("DELETE FROM sends WHERE address = %s", (address,))
        for t in times[-_KEEP_SENDS:]:
            self._write("INSERT INTO sends (address, at) VALUES (%s, %s)", (address, datetime.fromisoformat(t)))

    # --- checkpoints: a second, autocommit connection, so they are durable without the batch ----------

    def _checkpoints_db(self) -> psycopg.Connection[Any]:
        if self._checkpoint_conn is None or self._checkpoint_conn.closed:
            self._checkpoint_conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        return self._checkpoint_conn

    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        row = self._checkpoints_db().execute("SELECT doc FROM checkpoints WHERE key = %s",
                                             (escape_text(key),)).fetchone()
        return None if row is None else from_db(row[0])

    def set_checkpoint(self, key: str, value: dict[str, Any]) -> None:
        self._checkpoints_db().execute(
            "INSERT INTO checkpoints (key, doc) VALUES (%s, %s::jsonb) ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
            (escape_text(key), to_db(dict(value))))

    def checkpoints(self) -> Iterator[tuple[str, dict[str, Any]]]:
        rows = self._checkpoints_db().execute("SELECT key, doc FROM checkpoints ORDER BY key").fetchall()
        for key, doc in rows:
            yield unescape_text(key), from_db(doc)

