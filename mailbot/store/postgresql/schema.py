"""The PostgreSQL store's schema: a `schema_version` table and the ordered, versioned migrations that build it.

`init_schema(conn)` creates or upgrades a database to `SCHEMA_VERSION`: idempotent (a migration already
recorded is not run again) and safe when several instances start at once (a transaction-scoped advisory lock
serialises them; the loser finds the work done). A database newer than this mailbot is refused, not touched.
"""

from __future__ import annotations

import psycopg

from mailbot.storage import StoreCorrupt
from mailbot.store.postgresql.lease import LEASE_DDL

# Any constant will do: it only has to be the same in every mailbot (pg_advisory_xact_lock's bigint key).
_LOCK_KEY = 0x6D61696C626F74  # "mailbot"

# Each migration is (version, description, statements). Append new ones; never edit a released one.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "cases, the Message-ID index, unmatched, quarantine, outbox ledger, sends, checkpoints", [
        # A case is its codec document plus the columns queries need; next_due is NULL when closed or idle.
        """CREATE TABLE cases (
            key text PRIMARY KEY,
            mailbox text NOT NULL DEFAULT 'default',
            status text NOT NULL,
            next_due timestamptz,
            next_kind text,
            doc jsonb NOT NULL)""",
        # The sweep reads only what is due: a partial index over the few rows with a next action.
        "CREATE INDEX cases_due ON cases (mailbox, next_due) WHERE next_due IS NOT NULL",
        "CREATE INDEX cases_open ON cases (key) WHERE status <> 'closed'",
        'CREATE TABLE message_ids (key text PRIMARY KEY, "case" text NOT NULL, place text NOT NULL)',
        'CREATE TABLE tokens (token text PRIMARY KEY, "case" text NOT NULL)',
        "CREATE TABLE unmatched (message_id text PRIMARY KEY, doc jsonb NOT NULL)",
        "CREATE TABLE quarantine (ref text PRIMARY KEY, doc jsonb NOT NULL)",
        # The ledger: one row per outgoing mail from its intent to its end; its raw bytes go when it is sent.
        """CREATE TABLE outbox (
            action_id text PRIMARY KEY,
            status text NOT NULL,
            "case" text,
            not_before text,
            recorded text NOT NULL DEFAULT '',
            doc jsonb NOT NULL)""",
        "CREATE INDEX outbox_pending ON outbox (recorded) WHERE status = 'pending'",
        'CREATE INDEX outbox_case_pending ON outbox ("case") WHERE status = \'pending\'',
        "CREATE TABLE sends (address text NOT NULL, at timestamptz NOT NULL)",
        "CREATE INDEX sends_address ON sends (address, at)",
        "CREATE TABLE checkpoints (key text PRIMARY KEY, doc jsonb NOT NULL)",
    ]),
    (2, "mailbox leases with fencing numbers, and the instances (several instances)", LEASE_DDL),
    # Made here, under the migration lock, so that instances starting together never make two
    # (mailbot/store/secret.py); 256 random bits from the server's strong random source.
    (3, "the installation's Message-ID secret", [
        "INSERT INTO checkpoints (key, doc) VALUES ('secret:message-ids', jsonb_build_object('secret', "
        "replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''))) "
        "ON CONFLICT (key) DO NOTHING",
    ]),
    # A digest of each mail's content beside its Message-ID: a different mail under an id already recorded
    # is told from a copy ('': recorded before, or the bot's own mail; taken for a copy, as before).
    (4, "a content digest beside each Message-ID", [
        "ALTER TABLE message_ids ADD COLUMN digest text NOT NULL DEFAULT ''",
    ]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(conn: psycopg.Connection) -> int:
    """The newest migration recorded in the database; 0 for an empty one."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def init_schema(conn: psycopg.Connection) -> list[int]:
    """Create or upgrade the schema in one transaction; returns the versions it applied (empty: up to date).

    Commits on success, rolls back on failure; `conn` must not have a batch in progress."""
    applied: list[int] = []
    up_to_date = current_version(conn) == SCHEMA_VERSION
    conn.rollback()  # end the read's implicit transaction: the block below must own (and commit) its own
    if up_to_date:  # no DDL at all, so a role without CREATE rights can open the store
        return applied
    with conn.transaction():
        # Serialises concurrent starts; released at the end of this transaction, whatever happens.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied timestamptz NOT NULL DEFAULT now())""")
        have = current_version(conn)
        if have > SCHEMA_VERSION:
            raise StoreCorrupt(f"the database's store schema is version {have}, this mailbot knows up to "
                               f"{SCHEMA_VERSION}; mailbot will not touch it (upgrade mailbot)")
        for version, description, statements in MIGRATIONS:
            if version <= have:
                continue
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]  # constant DDL, not user input
            conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                         (version, description))
            applied.append(version)
    return applied
