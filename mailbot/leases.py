"""The runner's side of a mailbox lease: one thread that acquires and renews it on a local timer, and says
whether this instance may act on the mailbox right now (PostgreSQL store only)."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from mailbot.store.postgresql import lease as leases
from mailbot.store.postgresql.lease import Lease

log = logging.getLogger("mailbot")

DEFAULT_MAILBOX = "default"  # INTERFACE.md: `[mailbox]` alone is the mailbox named "default"


def connect_dsn(dsn: str, lease_seconds: float) -> Callable[[], Any]:
    """Connections for the lease thread: autocommit (each lease statement is its own short transaction), a
    connect timeout and TCP keepalives shorter than the lease, so a dead network is noticed before it lapses."""

    def connect() -> Any:
        import psycopg

        probe = max(1, int(lease_seconds / 3))
        return psycopg.connect(dsn, autocommit=True, connect_timeout=max(2, int(lease_seconds / 3)),
                               keepalives=1, keepalives_idle=probe, keepalives_interval=1, keepalives_count=3,
                               application_name="mailbot-lease")

    return connect


def _busy(e: Exception) -> bool:
    import psycopg

    # A lock or statement timeout: the row is busy or the server slow, the connection is fine. If it lasts,
    # the local deadline passes and `current()` says so.
    return isinstance(e, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled)


class Quiet(Protocol):
    """What a lease is given up under: the lock its mailbox's ingest and sweep hold (an RLock)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


class FairShare:
    """The mailboxes of one instance spread over the live ones: its keepers take a free or expired lease only
    while the instance holds fewer than ceil(mailboxes / live instances), and give up the excess (one at a time,
    between batches) when more instances are alive. Live = seen within one lease by the database's clock
    (the keepers beat every third of one: three beats missed). One lease, not two: a dead instance's leases
    lapse after one lease, and its share must pass to the others by then, or the takeover waits for the
    liveness window instead of the lease (measured: a second lease of waiting in bench/mailboxes.py). Judging
    a slow instance dead early is safe: others take only free or expired leases, never one it renews, and the
    share is handed back between batches once it beats again."""

    def __init__(self, mailboxes: int, lease_seconds: float, instance: str) -> None:
        self.mailboxes, self.instance = mailboxes, instance
        self.seconds = float(lease_seconds)
        self.lock = threading.Lock()  # one keeper at a time decides to take or give (no two take the last slot)
        self.keepers: list[LeaseKeeper] = []
        self.giving = 0  # leases being given up right now (already counted off)
        self.taking = 0  # leases being acquired right now (already counted in)
        self._quota: tuple[float, int] | None = None  # (when, the share then)

    def quota(self, conn: Any) -> int:
        """ceil(mailboxes / live instances), counted at most once per half tick for all the keepers (they
        tick together: one query instead of one each)."""
        now = time.monotonic()
        if self._quota is None or now - self._quota[0] > self.seconds / 6:
            live = leases.live_instances(conn, self.seconds, self.instance)
            self._quota = (now, max(1, math.ceil(self.mailboxes / max(1, live))))
        return self._quota[1]

    def held(self) -> int:
        return sum(1 for k in self.keepers if k.lease is not None)

    def reserve(self, conn: Any) -> bool:
        """Whether one more lease fits this instance's share; a yes holds the slot until `reserved` (the
        acquire runs outside the lock: a keeper waiting for a busy lease row must not hold up the others'
        renewals)."""
        with self.lock:
            if self.held() + self.taking - self.giving < self.quota(conn):
                self.taking += 1
                return True
            return False

    def reserved(self) -> None:
        with self.lock:
            self.taking -= 1

    def should_give(self, conn: Any) -> bool:
        """Whether this instance holds more than its share; a yes counts one lease off until `given`."""
        with self.lock:
            if self.held() - self.giving > self.quota(conn):
                self.giving += 1
                return True
            return False

    def given(self) -> None:
        with self.lock:
            self.giving -= 1


class LeaseKeeper:
    """Holds (or waits for) one mailbox's lease. A plain thread is the tick, every lease_seconds/3: renew while
    holding, try to acquire while not. APScheduler is deliberately not involved (its job stores cannot be
    shared between processes, ../shared/LIBRARIES.md); the database row is the only shared state."""

    def __init__(self, connect: Callable[[], Any], instance: str, lease_seconds: float, host: str, pid: int,
                 mailbox: str = DEFAULT_MAILBOX, share: FairShare | None = None) -> None:
        self.connect = connect
        self.instance = instance
        self.seconds = float(lease_seconds)
        self.tick = self.seconds / 3
        self.host, self.pid, self.mailbox = host, pid, mailbox
        self.lease: Lease | None = None
        self.acquired = threading.Event()  # set whenever a lease is (re)gained: wakes the waiting main loop
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one user of the connection at a time (the thread, note_ingest)
        self._conn: Any = None
        self._acting = False  # whether `current()` last said yes: the loss is logged once, when it changes
        self._db_down = False
        self._ingested = False  # an ingest cycle finished since the last note on the lease row
        self.outages = 0  # times the database was lost (the runner leaves those to the one line logged here)
        # Several mailboxes on PostgreSQL: the instance's fair share, and the lock a lease is given up under
        # (the runner sets the service's), so an excess lease is released between batches, never inside one.
        self.share = share
        if share is not None:
            share.keepers.append(self)
        self.quiet: Quiet | None = None
        self._thread = threading.Thread(target=self._loop, name=f"mailbot-lease-{mailbox}", daemon=True)

    # --- what the runner asks ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def current(self) -> Lease | None:
        """The lease while this instance may act on it (its local deadline not passed), else None."""
        lease = self.lease
        if lease is not None and lease.valid():
            self._acting = True
            return lease
        if self._acting:
            self._acting = False
            if lease is not None and not self._db_down:  # a loss to another instance or the database is logged there
                log.warning("- %s: the lease on mailbox %s (fence %s) lapsed without a renewal; stopped acting "
                            "until it is held again", self.instance, self.mailbox, lease.fence)
        return None

    def wait(self, stop: threading.Event, timeout: float) -> None:
        """Sleep until a lease is gained, `stop` is set, or `timeout` passes."""
        self.acquired.clear()
        if self.current() is not None:
            return
        end = timeout
        step = min(0.2, timeout)
        while end > 0 and not stop.is_set() and not self.acquired.is_set():
            self.acquired.wait(step)
            end -= step

    def note_ingest(self) -> None:
        """A finished ingest cycle, recorded on the lease row (for `mailbot status`) at the thread's next tick:
        the runner never waits for the lease's connection (a write on the lease row can wait for a batch's
        commit, and the renewal must not wait behind it)."""
        self._ingested = True

    def _note_ingest(self) -> None:
        lease = self.lease
        if not self._ingested or lease is None or self._conn is None:
            return
        try:
            leases.note_ingest(self._conn, lease)
            self._ingested = False
        except Exception as e:  # busy or gone: the next tick tries again (and notices a dead connection)
            if not _busy(e):
                raise
            log.debug("- cannot note the ingest cycle yet: %s", e)

    def halt(self) -> None:
        """Take no more leases (the instance is stopping); `stop` releases what is held."""
        self._stop.set()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with `release`, give the lease up so a standby takes over at its next tick."""
        self._stop.set()
        self._thread.join(timeout=self.seconds)
        with self._lock:
            if self.lease is not None and self._conn is not None:
                try:  # an ingest noted since the last tick (`run --once` stops right after its one cycle)
                    self._note_ingest()
                except Exception as e:  # status shows the previous one; nothing else depends on it
                    log.debug("- noting the last ingest cycle: %s", e)
            if release and self.lease is not None and self._conn is not None:
                try:
                    leases.release(self._conn, self.lease)
                    log.info("- %s released the lease on mailbox %s", self.instance, self.mailbox)
                except Exception as e:  # it lapses by itself within lease_seconds
                    log.debug("- releasing the lease: %s", e)
            share = self.share
            if release and share is not None and self._conn is not None \
                    and all(k._stop.is_set() for k in share.keepers):
                # The instance's last lease stopped cleanly: it leaves the live ones now, so the others' fair
                # share grows at their next tick instead of two leases later.
                try:
                    leases.retire(self._conn, self.instance)
                except Exception as e:  # it stops being live within two leases anyway
                    log.debug("- leaving the live instances: %s", e)
            self.lease = None
            self._close()

    # --- the thread --------------------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = self.tick
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                with self._lock:
                    give = self._step()
                if give:
                    self._give_up()
                backoff = self.tick
                # A tick every third of the lease from the start of the last, however long that one took.
                self._stop.wait(max(0.0, self.tick - (time.monotonic() - began)))
            except Exception as e:  # psycopg.Error, OSError: the database is unreachable or restarted
                if _busy(e):  # the row is locked by the holder's batch being committed: try at the next tick
                    self._stop.wait(self.tick)
                    continue
                with self._lock:
                    self._close()
                if not self._db_down:
                    self._db_down = True
                    self.outages += 1
                    held = f"; stopped acting on mailbox {self.mailbox}" if self.lease is not None else ""
                    log.warning("- %s lost the database (%s: %s)%s; reconnecting", self.instance,
                                type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "", held)
                    self._acting = False
                    if self.lease is not None:
                        self.lease.deadline = min(self.lease.deadline, time.monotonic())  # stop acting now
                # Jittered, capped at the lease: a standby that lost the database is back in the race within it.
                self._stop.wait(min(self.seconds, backoff) * (0.5 + random.random() / 2))
                backoff *= 2

    def _step(self) -> bool:
        """One tick: (re)connect, renew or acquire, beat. True when this lease is to be given up (over the share)."""
        if self._conn is None:
            self._conn = self.connect()
            leases.register(self._conn, self.instance, self.host, self.pid)
            if self._db_down:
                log.info("- %s reached the database again", self.instance)
                self._db_down = False
        lease = self.lease
        if lease is not None:
            lapsed = not lease.valid()
            if leases.renew(self._conn, lease) is None:
                log.warning("- %s lost the lease on mailbox %s (fence %s) to another instance; stopped acting",
                            self.instance, self.mailbox, lease.fence)
                self.lease = None
                self._acting = False
            elif lapsed:  # nobody took it meanwhile (the fence is the same): act again
                log.info("- %s holds the lease on mailbox %s again (fence %s)", self.instance, self.mailbox,
                         lease.fence)
                self.acquired.set()
        share = self.share
        # With a fair share, a slot of it is reserved only for a lease that can be taken now: a keeper trying for
        # a lease another live instance holds would keep the slot (its acquire waits up to a second on the row
        # that instance's commit holds) and starve the keeper of a lapsed one (measured: takeovers of 6–9 s).
        if self.lease is None and (share is None or (leases.takeable(self._conn, self.mailbox)
                                                      and share.reserve(self._conn))):
            try:
                gained = leases.acquire(self._conn, self.mailbox, self.instance, self.seconds)
                if gained is not None:
                    log.info("- %s holds the lease on mailbox %s (fence %s)", self.instance, self.mailbox,
                             gained.fence)
                    self.lease = gained
                    self.acquired.set()
            finally:
                if share is not None:
                    share.reserved()
        leases.heartbeat(self._conn, self.instance)
        self._note_ingest()
        return share is not None and self.lease is not None and share.should_give(self._conn)

    def _give_up(self) -> None:
        """Release this lease because the instance holds more than its share: under `quiet` (this mailbox
        between two batches), else again at the next tick; another instance takes it at its own tick."""
        assert self.share is not None
        lease = self.lease
        quiet = self.quiet
        got = False
        try:
            if lease is None:
                return
            # At most a tick: the lease stays renewed while this mailbox's batch (a whole backlog) runs.
            got = quiet.acquire(timeout=min(self.tick, lease.remaining())) if quiet is not None else True
            if not got:  # a batch still in hand: renew and try again at the next tick
                return
            with self._lock:
                if self.lease is not lease or self._conn is None:
                    return
                try:
                    leases.release(self._conn, lease)
                except Exception as e:  # it lapses by itself within lease_seconds
                    log.debug("- releasing the lease: %s", e)
                self.lease = None
                self._acting = False
                log.info("- %s gave the lease on mailbox %s (fence %s) up: more instances are alive, so its "
                         "share is smaller", self.instance, self.mailbox, lease.fence)
        finally:
            if got and quiet is not None:
                quiet.release()
            self.share.given()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as e:  # already dead
                log.debug("- closing the lease connection: %s", e)
            self._conn = None
