"""The PostgreSQL engine of the store port: cases as jsonb rows, the Message-ID index and the ledger as tables.

One transaction per batch: the connection is not in autocommit, so every write executes at once (this
store's reads see it, other connections do not) and `commit()` makes the batch durable atomically; closing
or `rollback()` loses it whole. Checkpoints go through a second, autocommit connection: durable at once,
without committing the batch (they follow the mailbox, not the batch — see `port.py`).

The instance coordination (leases, fencing) lives elsewhere; it can hook into each batch through `fence`,
called with the batch's connection just before COMMIT: raising there rolls the batch back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

import psycopg

from mailbot.models import Case, CaseStatus
from mailbot.storage import StoreCorrupt
from mailbot.store.codec import CaseFacts, case_from_doc, case_to_doc, facts_of_json
from mailbot.store.postgresql.ledger import Ledger
from mailbot.store.postgresql.safe import MARK, escape_text, from_db, to_db, unescape_text
from mailbot.store.postgresql.schema import SCHEMA_VERSION, current_version, init_schema

_PAGE = 1000  # rows a page of a full scan reads (keyset pagination: safe across commits in between)

_PUT_CASE = """
WITH old AS (SELECT doc->'tracking_tokens' AS tokens FROM cases WHERE key = %(key)s),
up AS (
    INSERT INTO cases (key, mailbox, status, next_due, next_kind, doc)
    VALUES (%(key)s, coalesce(%(mailbox)s::text, %(default_mailbox)s), %(status)s, %(due)s, %(kind)s, %(doc)s::jsonb)
    ON CONFLICT (key) DO UPDATE SET mailbox = coalesce(%(mailbox)s::text, cases.mailbox), status = excluded.status,
        next_due = excluded.next_due, next_kind = excluded.next_kind, doc = excluded.doc
    WHERE cases.doc IS DISTINCT FROM excluded.doc OR cases.mailbox <> coalesce(%(mailbox)s::text, cases.mailbox)
    RETURNING 1),
-- A token points to the case that gained it last: one the case already had is left as it is.
tok AS (
    INSERT INTO tokens (token, "case")
    SELECT t, %(key)s FROM unnest(%(tokens)s::text[]) AS t
    WHERE NOT EXISTS (SELECT 1 FROM old WHERE old.tokens ? t)
    ON CONFLICT (token) DO UPDATE SET "case" = excluded."case" WHERE tokens."case" <> excluded."case"
    RETURNING 1)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM tok)
"""


class PostgresStore(Ledger):
    """The store port over one PostgreSQL database. `mailbox` is the mailbox whose cases this instance
    sweeps (`due_case_keys`; None: every mailbox) and the one new cases belong to. `init=True` creates or
    upgrades the schema first (`mailbot store init` and `run`); otherwise an older schema is refused."""

    def __init__(self, dsn: str, mailbox: str | None = "default", *, init: bool = True,
                 connect_timeout: int = 10) -> None:
        self.dsn = dsn
        self.mailbox = mailbox
        self.conn: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=False, connect_timeout=connect_timeout)
        self._checkpoint_conn: psycopg.Connection[Any] | None = None
        self._changed = 0
        # Writes wait here and go to the server together with the next read or the commit, in one round trip
        # (psycopg's pipeline mode); ("rows" | "one", sql, params): how the statement reports rows changed.
        self._queued: list[tuple[str, str, Any]] = []
        # The cases this batch wrote: their rows stay locked by this transaction until commit, so no other
        # writer can change them meanwhile and this copy is what a read would return.
        self._own_cases: dict[str, Case] = {}
        self._seen_ahead: dict[str, dict[str, Any] | None] = {}
        self._cases_ahead: dict[str, Case | None] = {}  # prefetch's cases, for this batch  # prefetch's answers, for this batch
        # Set on the first mailbox's store when there are several: the configured mailboxes' names, so that
        # it also sweeps and sends for cases of any other (a mailbox renamed or removed from the config).
        self.configured: tuple[str, ...] | None = None
        self.fence: Callable[[psycopg.Connection[Any]], None] | None = None
        try:
            if init:
                init_schema(self.conn)
            else:
                have = current_version(self.conn)
                self.conn.rollback()
                if have != SCHEMA_VERSION:
                    raise StoreCorrupt(f"the database's store schema is version {have}, this mailbot needs "
                                       f"{SCHEMA_VERSION}: run `mailbot store init`")
        except BaseException:
            self.conn.close()
            raise

    # --- plumbing ------------------------------------------------------------------------------------

    def _exec(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Run a statement now, after the queued writes (all in one round trip); a queued write that fails
        raises here."""
        if not self._queued:
            return self.conn.execute(sql, params)  # type: ignore[arg-type]  # constant SQL of this package
        queued, self._queued = self._queued, []
        cursors: list[tuple[str, psycopg.Cursor[Any]]] = []
        with self.conn.pipeline():
            # A run of the same statement goes as one executemany (converted once, prepared, still in order):
            # a load's 500 ids or a batch's case rows cost a third of as many separate executes.
            for (how, q), run in groupby(queued, key=lambda w: (w[0], w[1])):
                c = self.conn.cursor()
                c.executemany(q, [p for _, _, p in run], returning=how == "one")  # type: ignore[arg-type]
                cursors.append((how, c))
            cursor = self.conn.execute(sql, params)  # type: ignore[arg-type]
        for how, c in cursors:
            if how == "rows":  # executemany without returning sums the row counts
                self._changed += max(c.rowcount, 0)
                continue
            while True:  # "one": each statement's own count, one result set each
                row = c.fetchone()
                self._changed += int(row[0]) if row else 0
                if not c.nextset():
                    break
        return cursor

    def _write(self, sql: str, params: Any = None) -> None:
        """Queue a write: this store's reads will see it (they run after it), other connections after commit."""
        self._queued.append(("rows", sql, params))

    def _write_now(self, sql: str, params: Any = None) -> int:
        n = self._exec(sql, params).rowcount
        self._changed += max(n, 0)
        return n

    def _one(self, sql: str, params: Any = None) -> Any:
        row = self._exec(sql, params).fetchone()
        return None if row is None else row[0]

    def _pages(self, sql: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Every row of `sql` (which filters `k > %(after)s`, orders by k and ends in LIMIT %(limit)s)."""
        after = ""
        while True:
            rows = self._exec(sql, {**params, "after": after, "limit": _PAGE}).fetchall()
            yield from rows
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    # --- cases ---------------------------------------------------------------------------------------

    def _case(self, key: str, doc: Any) -> Case:
        try:
            return case_from_doc(from_db(doc))
        except (KeyError, ValueError, TypeError, AttributeError) as e:  # written by another program, or by hand
            raise StoreCorrupt(f"the cases table: case {key} is unreadable ({type(e).__name__}: {e})") from None

    def get_case(self, key: str) -> Case | None:
        if key in self._own_cases:
            return self._own_cases[key]
        if key in self._cases_ahead:  # read ahead with the batch (prefetch); a write goes to _own_cases first
            return self._cases_ahead[key]
        doc = self._one("SELECT doc FROM cases WHERE key = %s", (key,))
        return None if doc is None else self._case(key, doc)

    def put_case(self, case: Case) -> None:
        closed = case.status == CaseStatus.CLOSED
        action = None if closed else case.next_action
        self._own_cases[case.key] = case
        self._queued.append(("one", _PUT_CASE, {
            # The case says which mailbox it belongs to (the one that opened it: Case.mailbox).
            "key": case.key, "mailbox": case.mailbox, "default_mailbox": self.mailbox or "default",
            "status": case.status.value, "due": None if action is None else action.due,
            "kind": None if action is None else action.kind, "doc": to_db(case_to_doc(case)),
            "tokens": list(case.tracking_tokens)}))

    def _cases(self, where: str) -> Iterator[Case]:
        sql = f"SELECT key, doc FROM cases WHERE {where} AND key > %(after)s ORDER BY key LIMIT %(limit)s"
        for key, doc in self._pages(sql, {}):
            yield self._case(key, doc)

    def active_cases(self) -> Iterator[Case]:
        yield from self._cases("status <> 'closed'")

    def all_cases(self) -> Iterator[Case]:
        yield from self.active_cases()
        yield from self._cases("status = 'closed'")

    def report_cases(self, since: datetime, part: int = 0, parts: int = 1) -> Iterator[Case | CaseFacts]:
        """The cases active since `since`, chosen by the database (the older ones never leave it); each
        document comes as JSON text and is decoded into CaseFacts alone (codec.py), or through the codec
        when it holds escaped text (safe.py) or is not what the codec writes. A part: the keys whose hash is
        `part` modulo `parts`."""
        sql = ("SELECT key, doc::text FROM cases WHERE (doc->>'last_activity')::timestamptz >= %(since)s "
               "AND (hashtext(key)::bigint + 2147483648) %% %(parts)s = %(part)s "
               "AND key > %(after)s ORDER BY key LIMIT %(limit)s")
        for key, text in self._pages(sql, {"since": since, "part": part, "parts": parts}):
            facts = None if MARK in text else facts_of_json(text)
            yield facts if facts is not None else self._case(key, json.loads(text))

    def due_case_keys(self, now: datetime) -> list[str]:
        """Open cases due at or before `now`, soonest first: reads only the partial index of due rows."""
        if self.mailbox is None:
            rows = self._exec("SELECT key FROM cases WHERE next_due IS NOT NULL AND next_due <= %s "
                              "ORDER BY next_due, key", (now,))
        elif self.configured is None:
            rows = self._exec("SELECT key FROM cases WHERE mailbox = %s AND next_due IS NOT NULL "
                              "AND next_due <= %s ORDER BY next_due, key", (self.mailbox, now))
        else:  # the first mailbox also sweeps the cases of mailboxes no longer configured (renamed, removed)
            rows = self._exec("SELECT key FROM cases WHERE (mailbox = %s OR NOT mailbox = ANY(%s)) "
                              "AND next_due IS NOT NULL AND next_due <= %s ORDER BY next_due, key",
                              (self.mailbox, list(self.configured), now))
        return [r[0] for r in rows]

    # --- the Message-ID index ------------------------------------------------------------------------

    def case_for_message(self, message_id: str) -> str | None:
        if message_id in self._seen_ahead:  # read ahead with the batch (threading asks for In-Reply-To etc.)
            ahead = self._seen_ahead[message_id]
            return (ahead or {}).get("case") or None
        return self._one('SELECT "case" FROM message_ids WHERE key = %s', (escape_text(message_id),)) or None

    def case_for_token(self, token: str) -> str | None:
        return self._one('SELECT "case" FROM tokens WHERE token = %s', (escape_text(token),))

    def prefetch(self, message_ids: list[str], case_keys: Sequence[str] = ()) -> None:
        """Read where these Message-IDs ended in one query (the ingest asks per mail otherwise: one round trip
        each). Kept until the batch ends; `remember` keeps it current. No other instance writes this
        mailbox's mail meanwhile (the lease), so the answer stays what a query would say."""
        if message_ids:
            found = self.seen_many(list(dict.fromkeys(message_ids)))
            self._seen_ahead.update({m: found.get(m) for m in message_ids})
        keys = [k for k in dict.fromkeys(case_keys) if k not in self._own_cases and k not in self._cases_ahead]
        if keys:
            found = self.get_cases(keys)
            self._cases_ahead.update({k: found.get(k) for k in keys})
        if self._held_cases is None:
            self._read_held_cases()

    def seen(self, message_id: str) -> dict[str, Any] | None:
        if message_id in self._seen_ahead:
            ahead = self._seen_ahead[message_id]
            return None if ahead is None else dict(ahead)
        row = self._exec('SELECT "case", place, digest FROM message_ids WHERE key = %s',
                         (escape_text(message_id),)).fetchone()
        return None if row is None else _seen_doc(*row)

    def remember(self, message_id: str, case_key: str, place: str = "case", digest: str = "") -> None:
        if message_id in self._seen_ahead:
            self._seen_ahead[message_id] = _seen_doc(case_key, place, digest)
        self._write('INSERT INTO message_ids (key, "case", place, digest) VALUES (%s, %s, %s, %s) ON CONFLICT (key) '
                    'DO UPDATE SET "case" = excluded."case", place = excluded.place, digest = excluded.digest '
                    'WHERE (message_ids."case", message_ids.place, message_ids.digest) '
                    'IS DISTINCT FROM (excluded."case", excluded.place, excluded.digest)',
                    (escape_text(message_id), case_key, place, digest))

    # --- unmatched and quarantined mail --------------------------------------------------------------

    def add_unmatched(self, record: dict[str, Any]) -> None:
        self._write("INSERT INTO unmatched (message_id, doc) VALUES (%s, %s::jsonb) ON CONFLICT (message_id) "
                    "DO UPDATE SET doc = excluded.doc WHERE unmatched.doc IS DISTINCT FROM excluded.doc",
                    (escape_text(record["message_id"]), to_db(dict(record))))

    def unmatched(self) -> list[dict[str, Any]]:
        sql = "SELECT message_id, doc FROM unmatched WHERE message_id > %(after)s ORDER BY message_id LIMIT %(limit)s"
        return [from_db(doc) for _, doc in self._pages(sql, {})]

    def add_quarantined(self, record: dict[str, Any]) -> None:
        self._write("INSERT INTO quarantine (ref, doc) VALUES (%s, %s::jsonb) ON CONFLICT (ref) "
                    "DO UPDATE SET doc = excluded.doc WHERE quarantine.doc IS DISTINCT FROM excluded.doc",
                    (escape_text(record["ref"]), to_db(dict(record))))

    def quarantined(self) -> list[dict[str, Any]]:
        return [from_db(r[0]) for r in self._exec("SELECT doc FROM quarantine ORDER BY ref")]

    def remove_quarantined(self, ref: str) -> bool:
        return self._write_now("DELETE FROM quarantine WHERE ref = %s", (escape_text(ref),)) > 0

    # --- export and import (engine-neutral dumps: mailbot/store/dump.py) -----------------------------

    def id_entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        sql = ('SELECT key, "case", place, digest FROM message_ids WHERE key > %(after)s ORDER BY key '
               'LIMIT %(limit)s')
        for key, case, place, digest in self._pages(sql, {}):
            yield unescape_text(key), _seen_doc(case, place, digest)
        sql = 'SELECT token, "case" FROM tokens WHERE token > %(after)s ORDER BY token LIMIT %(limit)s'
        for token, case in self._pages(sql, {}):
            yield "token:" + unescape_text(token), {"case": case}

    # Bulk reads for `load` (mailbot/store/dump.py looks for them): one query for a chunk of records, not one
    # round trip a record. Each returns only what exists, keyed as asked.

    def get_cases(self, keys: list[str]) -> dict[str, Case]:
        rows = self._exec("SELECT key, doc FROM cases WHERE key = ANY(%s)", (keys,)).fetchall()
        found = {key: self._case(key, doc) for key, doc in rows}
        return {k: self._own_cases.get(k, c) for k, c in found.items()}

    def seen_many(self, message_ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self._exec('SELECT key, "case", place, digest FROM message_ids WHERE key = ANY(%s)',
                          ([escape_text(m) for m in message_ids],)).fetchall()
        return {unescape_text(key): _seen_doc(case, place, digest) for key, case, place, digest in rows}

    def cases_for_tokens(self, tokens: list[str]) -> dict[str, str]:
        rows = self._exec('SELECT token, "case" FROM tokens WHERE token = ANY(%s)',
                          ([escape_text(t) for t in tokens],)).fetchall()
        return {unescape_text(token): case for token, case in rows}

    def restore_id(self, key: str, doc: dict[str, Any]) -> None:
        if key.startswith("token:"):
            self._write('INSERT INTO tokens (token, "case") VALUES (%s, %s) ON CONFLICT (token) DO UPDATE '
                        'SET "case" = excluded."case" WHERE tokens."case" <> excluded."case"',
                        (escape_text(key[len("token:"):]), doc["case"]))
        else:
            self.remember(key, doc.get("case", ""), doc.get("place", "case"), doc.get("digest", ""))

    # --- durability and figures ----------------------------------------------------------------------

    def commit(self) -> int:
        """Commit the batch; returns the number of rows it changed. A failing `fence` rolls it back."""
        try:
            self._exec("SELECT 1")  # sends the queued writes (their errors surface here, before COMMIT)
            if self.fence is not None:
                self.fence(self.conn)
            self.conn.commit()
        except BaseException:
            self.rollback()
            raise
        self._seen_ahead.clear()
        self._cases_ahead.clear()
        self._held_cases = None
        changed, self._changed = self._changed, 0
        self._own_cases.clear()
        return changed

    def rollback(self) -> None:
        """Drop the batch (what a crash before `commit()` does)."""
        self._queued.clear()
        self._own_cases.clear()
        self._seen_ahead.clear()
        self._cases_ahead.clear()
        self._held_cases = None
        if not self.conn.closed:
            self.conn.rollback()
        self._changed = 0

    def reconnect(self) -> None:
        """New connections after a lost database (the dead one's batch is gone, as after a crash)."""
        self.close()
        self.conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        self._checkpoint_conn = None
        self._changed = 0
        self._queued.clear()
        self._own_cases.clear()

    def close(self) -> None:
        """Close both connections; an uncommitted batch is lost."""
        for conn in (self.conn, self._checkpoint_conn):
            if conn is not None and not conn.closed:
                conn.close()

    def locality(self, case: Case) -> int:
        return 0  # rows have no shared storage to group by

    def counts(self) -> dict[str, int]:
        row = self._exec("""SELECT (SELECT count(*) FROM cases WHERE status <> 'closed'),
            (SELECT count(*) FROM cases WHERE status = 'closed'), (SELECT count(*) FROM unmatched),
            (SELECT count(*) FROM quarantine), (SELECT count(*) FROM outbox WHERE status = 'pending')""").fetchone()
        assert row is not None
        return dict(zip(("active", "closed", "unmatched", "quarantined", "pending"), map(int, row), strict=True))


def _seen_doc(case: str, place: str, digest: str | None) -> dict[str, Any]:
    """A Message-ID's record as every engine gives it: its digest only when one was recorded."""
    return {"case": case, "place": place, **({"digest": digest} if digest else {})}
