"""Mailbox leases with fencing numbers on PostgreSQL: which live instance works each mailbox, and the check
every write that matters makes in its own transaction.

Why a lease row and not an advisory lock (`pg_advisory_lock`): an advisory lock belongs to one connection.
It vanishes silently when that connection dies, while the process that held it may still be in the middle
of a write on another connection (or about to send a mail) and has no way to learn it lost the lock; and
a transaction-pooling proxy (PgBouncer) hands each transaction a different server connection, so a session
lock is taken on one backend and "held" by whoever gets that backend next. A row with an expiry and a
fencing number survives both: the expiry is judged by the database's clock alone (machines' clocks differ),
and each write transaction re-reads the row (`check_fence`) so a stale holder's batch is rolled back whole.

The holder's side of time is a local monotonic deadline: `Lease.deadline` is `time.monotonic()` taken
*before* the acquire/renew statement was sent, plus `lease_seconds` minus a margin, so the instance stops
acting (sending, moving mail) before the database can consider the lease lapsed, whatever the wall clocks say.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Migration 2 of the engine's schema (`schema.MIGRATIONS`): the statements live here, beside the code that
# reads them.
LEASE_DDL: list[str] = [
    """CREATE TABLE leases (
        mailbox     text PRIMARY KEY,
        holder      text NOT NULL,
        fence       bigint NOT NULL,
        expires     timestamptz NOT NULL,
        acquired    timestamptz NOT NULL DEFAULT now(),
        last_ingest timestamptz)""",
    """CREATE TABLE instances (
        name      text PRIMARY KEY,
        host      text NOT NULL,
        pid       integer NOT NULL,
        started   timestamptz NOT NULL,
        last_seen timestamptz NOT NULL)""",
    # The SMTP accepted log (`transport.smtp.AcceptedLog`) shared by every instance: after a takeover the new
    # leader must find what the old one's server accepted (`accepted.SharedAcceptedLog`).
    "CREATE TABLE smtp_accepted (message_id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX smtp_accepted_at ON smtp_accepted (at)",
]
# leases: fence +1 at every acquisition (a new holder, or the same one after a lapse); expires by the
# database's clock (expired or released = free); last_ingest = the holder's last ingest cycle (status).

# How long one lease statement may wait for a row lock or run: a lease row locked by a write transaction of
# a partitioned holder must not hang the standby that wants to take over (it retries at its next tick).
STATEMENT_TIMEOUT_MS = 2000
LOCK_TIMEOUT_MS = 1000  # below the statement timeout: a busy row says so (LockNotAvailable), it is no outage


class LeaseLost(Exception):
    """This instance does not hold the mailbox's lease (any more) with this fencing number: the transaction
    that asked is rolled back and nothing of its batch lands."""


@dataclass
class Lease:
    """A held lease as its holder sees it. `expires` is the database's word (for logs and status);
    `deadline` is the local monotonic instant after which the holder must not act without a renewal."""

    mailbox: str
    holder: str
    fence: int
    expires: datetime
    seconds: float
    deadline: float

    def valid(self, monotonic_now: float | None = None) -> bool:
        return (time.monotonic() if monotonic_now is None else monotonic_now) < self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def margin(lease_seconds: float) -> float:
    """How much earlier than the database the holder gives up: a fifth of the lease, covering the time the
    statement took on its way and clock-rate drift (monotonic clocks of two machines tick at slightly
    different rates), at most 3 s."""
    return min(3.0, lease_seconds / 5)


def _deadline(sent_at: float, lease_seconds: float) -> float:
    return sent_at + lease_seconds - margin(lease_seconds)


def _limits(conn: Any) -> None:
    # SET LOCAL lasts for this transaction only, which also works through PgBouncer's transaction pooling.
    conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")


def acquire(conn: Any, mailbox: str, instance: str, lease_seconds: float) -> Lease | None:
    """Take the mailbox's lease when it is free (never taken, released, or expired by the database's clock);
    the fencing number goes up by one. None when someone else holds it — or this instance still holds it
    under another fencing number (a second process with the same name must not share it)."""
    sent_at = time.monotonic()
    with conn.transaction():
        _limits(conn)
        row = conn.execute(
            """
            INSERT INTO leases AS l (mailbox, holder, fence, expires, acquired)
            VALUES (%(mailbox)s, %(holder)s, 1, now() + make_interval(secs => %(secs)s), now())
            ON CONFLICT (mailbox) DO UPDATE
               SET holder = EXCLUDED.holder, fence = l.fence + 1, expires = EXCLUDED.expires,
                   acquired = now(), last_ingest = NULL
             WHERE l.expires <= now()
            RETURNING fence, expires
            """,
            {"mailbox": mailbox, "holder": instance, "secs": float(lease_seconds)},
        ).fetchone()
    if row is None:
        return None
    return Lease(mailbox, instance, int(row[0]), row[1], float(lease_seconds), _deadline(sent_at, lease_seconds))


def takeable(conn: Any, mailbox: str) -> bool:
    """Whether `acquire` could take the lease now (never taken, released or expired by the database's clock).
    A plain read: it never waits for a row another instance's batch holds, so an instance can ask about every
    mailbox without stalling, and spend its fair share only on leases it can actually take."""
    with conn.transaction():
        _limits(conn)
        row = conn.execute("SELECT expires > now() FROM leases WHERE mailbox = %s", (mailbox,)).fetchone()
    return row is None or not row[0]


def renew(conn: Any, lease: Lease) -> datetime | None:
    """Extend the lease by its length from the database's now; only its holder, with the same fencing number,
    can. Returns the new expiry (and moves the local deadline), or None: lost to another instance.

    A lease that lapsed without anybody taking it over renews too: nobody else held it in between (any
    acquisition raises the fence), and `check_fence` refused every write while it was lapsed."""
    sent_at = time.monotonic()
    with conn.transaction():
        _limits(conn)
        row = conn.execute(
            """
            UPDATE leases SET expires = now() + make_interval(secs => %(secs)s)
             WHERE mailbox = %(mailbox)s AND holder = %(holder)s AND fence = %(fence)s
            RETURNING expires
            """,
            {"mailbox": lease.mailbox, "holder": lease.holder, "fence": lease.fence, "secs": lease.seconds},
        ).fetchone()
    if row is None:
        lease.deadline = sent_at  # gone: stop acting now
        return None
    lease.expires = row[0]
    lease.deadline = _deadline(sent_at, lease.seconds)
    return row[0]


def release(conn: Any, lease: Lease) -> bool:
    """Give the lease up at once (a clean stop): another instance may take it at its next try."""
    lease.deadline = time.monotonic()
    with conn.transaction():
        _limits(conn)
        row = conn.execute(
            "UPDATE leases SET expires = now() WHERE mailbox = %s AND holder = %s AND fence = %s RETURNING fence",
            (lease.mailbox, lease.holder, lease.fence),
        ).fetchone()
    return row is not None


def check_fence(conn: Any, mailbox: str, fence: int) -> None:
    """Inside a write transaction: raise LeaseLost unless the lease row still carries `fence` and has not
    expired. FOR SHARE holds the row until this transaction ends, so a takeover (an UPDATE of the row) waits
    for it: the new holder reads the store only after this batch has landed or been rolled back.

    clock_timestamp(), not now(): now() is frozen at the start of the transaction, which may be a whole batch
    ago. Call it last, just before COMMIT, so the row lock is held for as short a time as possible."""
    row = conn.execute(
        "SELECT fence, expires > clock_timestamp() FROM leases WHERE mailbox = %s FOR SHARE",
        (mailbox,),
    ).fetchone()
    if row is None or int(row[0]) != fence:
        raise LeaseLost(f"the lease on mailbox {mailbox!r} is held under fence {row[0] if row else 'none'}, "
                        f"not {fence}: another instance took it over")
    if not row[1]:
        raise LeaseLost(f"the lease on mailbox {mailbox!r} (fence {fence}) expired before this write")


@dataclass(frozen=True)
class Fence:
    """The engine's commit hook (`PostgresStore.fence`): checks this fencing number in the batch's transaction,
    just before COMMIT. Fence 0 is never issued, so `Fence(mailbox, 0)` refuses every commit."""

    mailbox: str
    number: int

    def __call__(self, conn: Any) -> None:
        check_fence(conn, self.mailbox, self.number)


def note_ingest(conn: Any, lease: Lease) -> None:
    """The holder finished an ingest cycle (shown by `mailbot status`)."""
    with conn.transaction():
        _limits(conn)
        conn.execute("UPDATE leases SET last_ingest = now() WHERE mailbox = %s AND fence = %s",
                     (lease.mailbox, lease.fence))


def register(conn: Any, name: str, host: str, pid: int) -> None:
    """Announce this instance; rows of instances silent for a day are dropped on the way."""
    with conn.transaction():
        _limits(conn)
        conn.execute("DELETE FROM instances WHERE last_seen < now() - interval '1 day'")
        conn.execute(
            """
            INSERT INTO instances (name, host, pid, started, last_seen) VALUES (%s, %s, %s, now(), now())
            ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,
                started = EXCLUDED.started, last_seen = EXCLUDED.last_seen
            """,
            (name, host, pid),
        )


def heartbeat(conn: Any, name: str) -> None:
    with conn.transaction():
        _limits(conn)
        conn.execute("UPDATE instances SET last_seen = now() WHERE name = %s", (name,))


def live_instances(conn: Any, within_seconds: float, me: str) -> int:
    """How many instances beat within `within_seconds` by the database's clock, `me` always among them (its
    own late beat must not make it think it is alone): the fair share of mailboxes,
    `mailbot.leases.FairShare`; `mailbot status` counts the others the same way."""
    with conn.transaction():
        _limits(conn)
        row = conn.execute("SELECT count(*) FROM instances WHERE name <> %s "
                           "AND last_seen >= now() - make_interval(secs => %s)",
                           (me, float(within_seconds))).fetchone()
    return 1 + (int(row[0]) if row else 0)


def retire(conn: Any, name: str) -> None:
    """A clean stop: this instance is no longer live (the others' fair share of mailboxes grows at once)."""
    with conn.transaction():
        _limits(conn)
        conn.execute("DELETE FROM instances WHERE name = %s", (name,))
