"""`mailbot run`: the service — watch the mailbox (IDLE or polling), ingest, and let the scheduler send
what is due, until SIGTERM/SIGINT, which finish the message in hand, save, and exit 0. With the PostgreSQL
store, all of it happens only while this instance holds the mailbox's lease (`mailbot.leases`)."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler

from mailbot.config import Settings
from mailbot.storage import StoreCorrupt, StoreWriteError

if TYPE_CHECKING:
    from mailbot.leases import FairShare, LeaseKeeper

log = logging.getLogger("mailbot")


def make_clock(fixed_now: datetime | None) -> Callable[[], datetime]:
    """The real clock, or one shifted so that the service starts at `fixed_now` (for simulations)."""
    if fixed_now is None:
        return lambda: datetime.now(UTC)
    offset = fixed_now - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


def make_scheduler(sweep: Callable[[], None] | Sequence[tuple[str, Callable[[], None]]],
                   every_seconds: int) -> BackgroundScheduler:
    """One sweep job, or one per mailbox ((name, sweep) pairs): each coalescing, never twice at once."""
    # APScheduler's defaults drop runs (misfire_grace_time=1) and may overlap them; the store holds the
    # schedule, so one coalescing interval job that never runs twice at once is all we need.
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    jobs = [("", sweep)] if callable(sweep) else list(sweep)
    for name, job in jobs:
        scheduler.add_job(job, "interval", seconds=every_seconds, id=f"sweep:{name}" if name else "sweep",
                          next_run_time=datetime.now(UTC))
    return scheduler


def make_keeper(settings: Settings, share: FairShare | None = None) -> LeaseKeeper | None:
    """The lease thread of `settings`' mailbox for `[store] kind = "postgresql"`; None for the files store (one
    instance, no lease). `share`: several mailboxes, spread over the live instances."""
    if settings.store.kind != "postgresql":
        return None
    from mailbot.leases import LeaseKeeper, connect_dsn
    from mailbot.wiring import RuntimeProblem

    dsn = os.environ.get(settings.store.dsn_env)
    if not dsn:
        raise RuntimeProblem(f"[store] dsn_env: the environment variable {settings.store.dsn_env} is not set "
                             "(the PostgreSQL URL or conninfo)")
    return LeaseKeeper(connect_dsn(dsn, settings.store.lease_seconds), settings.bot.instance_name,
                       settings.store.lease_seconds, socket.gethostname(), os.getpid(),
                       mailbox=settings.mailbox.name, share=share)


def make_keepers(settings: Settings, services: Sequence[Any]) -> list[LeaseKeeper | None]:
    """One lease per mailbox (PostgreSQL), sharing the instance's fair share when there are several."""
    if settings.store.kind != "postgresql":
        return [None] * len(services)
    if len(services) == 1:
        return [make_keeper(services[0].settings)]
    from mailbot.leases import FairShare

    share = FairShare(len(services), settings.store.lease_seconds, settings.bot.instance_name)
    return [make_keeper(s.settings, share) for s in services]


class FencedTransport:
    """The transport, guarded: a mail is handed over only while the lease that the current batch was read
    under is still held by the local deadline (the fence in the store catches the rest at commit)."""

    def __init__(self, inner: Any, keeper: LeaseKeeper, store: Any) -> None:
        self.inner, self.keeper, self.store = inner, keeper, store

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Any:
        from mailbot.transport.base import TemporaryFailure

        lease = self.keeper.current()
        fence = self.store.fence
        if lease is None or (fence.mailbox, fence.number) != (lease.mailbox, lease.fence):
            raise TemporaryFailure("this instance no longer holds the mailbox's lease")
        return self.inner.send(raw, sender, recipients, message_id)

    def __getattr__(self, name: str) -> Any:  # check, already_sent, settle, accepted …
        return getattr(self.inner, name)


def _guard_transport(service: Any, keeper: LeaseKeeper) -> None:
    inner = service.transport.inner if isinstance(service.transport, FencedTransport) else service.transport
    service.transport = FencedTransport(inner, keeper, service.store)


def run_once_leased(service: Any, settings: Settings, now: datetime, keeper: LeaseKeeper | None = None) -> Any:
    """`mailbot run --once` on the PostgreSQL store: one cycle under the mailbox's lease (waiting up to two
    leases for it), released afterwards. Returns the CycleReport, or None when another instance kept it."""
    keeper = keeper if keeper is not None else make_keeper(settings)
    if keeper is None:
        return service.run_once(now)
    return run_once_leased_all([service], now, [keeper])[0]


def run_once_leased_all(services: Sequence[Any], now: datetime,
                        keepers: Sequence[LeaseKeeper | None] | None = None) -> list[Any]:
    """One cycle of each mailbox under its lease: every lease is asked for at once, each mailbox runs as soon as
    its lease is held and gives it back after, and the wait is two leases in all, not two a mailbox. Returns
    each mailbox's CycleReport, None where another instance kept the lease."""
    import time

    from mailbot.store.postgresql.lease import Fence

    keepers = list(keepers) if keepers is not None else [make_keeper(s.settings) for s in services]
    reports: list[Any] = [None] * len(services)
    waiting: dict[int, LeaseKeeper] = {}
    for i, (service, keeper) in enumerate(zip(services, keepers, strict=True)):
        if keeper is None:
            reports[i] = service.run_once(now)
            continue
        service.store.fence = Fence(keeper.mailbox, 0)  # never issued: nothing commits before the lease is held
        _guard_transport(service, keeper)
        keeper.start()
        waiting[i] = keeper
    try:
        deadline = time.monotonic() + 2 * max((k.seconds for k in waiting.values()), default=0)
        while waiting:
            last_look = time.monotonic() >= deadline  # a lease gained during a long cycle still counts
            for i, keeper in list(waiting.items()):
                lease = keeper.current()
                if lease is None:
                    continue
                service = services[i]
                with service.lock:
                    service.store.fence = Fence(lease.mailbox, lease.fence)
                    reports[i] = service.run_once(now)
                keeper.note_ingest()  # for `mailbot status`: written as the lease is given back
                del waiting[i]
                keeper.stop(release=True)
            if last_look:
                break
            time.sleep(0.05)
    finally:
        for keeper in waiting.values():
            keeper.stop(release=True)
    return reports


def _database_error(e: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(e, psycopg.Error)


def _note_run(store: Any, name: str, mailboxes: list[str]) -> None:
    """Files store: who runs and which mailboxes, for `mailbot status` (one checkpoint write per start)."""
    from mailbot.status import note_run

    try:
        note_run(store, name, mailboxes)
    except Exception as e:  # only `status` reads it: never a reason not to run
        log.debug("- cannot note this run for `mailbot status`: %s", e)


class MailboxRun:
    """One mailbox's part of `mailbot run`: its ingest loop (IDLE or polling) and its sweep, under its lease
    when there is one. With several mailboxes each loop is a thread of its own and its log lines name it."""

    def __init__(self, service: Any, settings: Settings, keeper: LeaseKeeper | None, clock: Callable[[], datetime],
                 stop: threading.Event, fatal: list[StoreCorrupt], several: bool) -> None:
        self.service, self.settings, self.keeper = service, settings, keeper
        self.clock, self.stop, self.fatal = clock, stop, fatal
        self.name = service.settings.mailbox.name
        self.several = several
        self.said = f"mailbox {self.name}: " if several else ""  # the prefix of this mailbox's log lines
        self.lost_types: tuple[type[BaseException], ...] = ()
        self.held = False  # whether the last look found the lease held (the mailbox is closed when it is not)
        # Held around this mailbox's ingest and sweep, inside the service lock (which several mailboxes share):
        # giving its lease up waits for its own batch only, not for another mailbox's backlog or a sweep
        # waiting its turn.
        self.busy = threading.RLock()
        if keeper is not None:
            from mailbot.store.postgresql.lease import Fence, LeaseLost

            self.lost_types = (LeaseLost,)
            # The store checks the fence in each batch's transaction, just before COMMIT. Fence 0 is never
            # issued: until a lease is held, every commit is refused.
            service.store.fence = Fence(keeper.mailbox, 0)
            _guard_transport(service, keeper)
            keeper.quiet = self.busy  # an excess lease is given up between this mailbox's batches

    def under_lease(self) -> bool:
        """Pin the store's fence to the lease held now (under the service lock, so a batch is read and written
        under one fence); False when there is none: this instance must not act on the mailbox."""
        keeper, service = self.keeper, self.service
        if keeper is None:
            return True
        from mailbot.store.postgresql.lease import Fence

        lease = keeper.current()
        if lease is None:
            return False
        if getattr(getattr(service.store, "conn", None), "closed", False):
            service.store.reconnect()  # after a lost database: a new connection (the dead one's batch is gone)
        fence = Fence(lease.mailbox, lease.fence)
        if service.store.fence != fence:
            # A new lease: whatever an interrupted cycle left uncommitted was read under the old one.
            service.store.rollback()
            service.store.fence = fence
        return True

    def sweep(self) -> None:
        if self.stop.is_set():
            return
        try:
            with self.service.lock, self.busy:  # the sweep of a mailbox's cases runs only on the lease's holder
                if not self.under_lease():
                    return
                self.service.send_due(self.clock())
        except StoreCorrupt as e:  # nothing more may be written: stop, and say why
            self.fatal.append(e)
            self.stop.set()
        except self.lost_types as e:  # the batch was rolled back whole; the lease thread takes it from here
            log.warning("- %ssweep: %s; stopped acting", self.said, e)
        except StoreWriteError as e:  # disk full: nothing half-written; the next sweep does it again
            log.error("- %ssweep: %s", self.said, e)
        except Exception:  # the next sweep tries again; a failure must not kill the scheduler thread
            log.exception("- %ssweep failed", self.said)

    def _let_go(self) -> None:
        """The lease is not held (lost, given up, never had): no connection to a mailbox this instance does not
        work (the holder has its own); the next ingest under a lease opens a new one."""
        if self.held:
            self.held = False
            try:
                self.service.mailbox.close()
            except Exception as e:  # a dead connection may fail to close: it is dropped either way
                log.debug("- %sclosing the mailbox: %s", self.said, e)

    def loop(self) -> None:
        """Ingest, then wait for mail, until `stop`; a failure is logged (naming the mailbox when there are
        several) and retried with backoff, without touching the other mailboxes."""
        service, keeper, stop = self.service, self.keeper, self.stop
        mailbox = service.mailbox
        poll = float(service.settings.mailbox.poll_seconds)
        # Several mailboxes share one service lock (one store writer): connect outside it, so that a server
        # that is down or refuses the login holds up its own mailbox only.
        connect = getattr(mailbox, "connect", None) if self.several else None
        backoff = 1.0
        outages_seen = 0
        failing = ""
        while not stop.is_set():
            try:
                if connect is not None and (keeper is None or keeper.current() is not None):
                    connect()
                with service.lock, self.busy:
                    held = self.under_lease()
                    report = service.ingest(self.clock()) if held else None
                if report is None:
                    assert keeper is not None
                    self._let_go()
                    keeper.wait(stop, poll)
                    continue
                self.held = True
                if keeper is not None:
                    keeper.note_ingest()
                if failing:
                    log.info("- %sworks again", self.said or "the mailbox ")
                    failing = ""
                if report.ingested or report.quarantined:
                    log.info("- %singested %s, quarantined %s", self.said, report.ingested, report.quarantined)
                backoff = 1.0
                if hasattr(mailbox, "wait_for_mail"):
                    mailbox.wait_for_mail(poll, stop)
                else:
                    stop.wait(poll)
            except StoreCorrupt as e:
                self.fatal.append(e)
                stop.set()
                break
            except self.lost_types as e:  # nothing of the batch landed and the mail stays unmarked in the mailbox
                log.warning("- %s%s; stopped acting until the lease is held again", self.said, e)
            except Exception as e:  # connection lost, server restarted, DNS down, disk full: wait, try again
                delay = min(300.0, backoff) * (0.5 + random.random())  # jitter: no thundering herd
                if isinstance(e, StoreWriteError):
                    log.error("- %s%s; the mail stays in the mailbox; retrying in %.0fs", self.said, e, delay)
                elif keeper is not None and _database_error(e):
                    # The store's connection died with the database: the lease thread says so once (and
                    # the next cycle reconnects); a database error it has not seen is worth its own line.
                    said = keeper.outages > outages_seen
                    outages_seen = keeper.outages
                    log.log(logging.DEBUG if said else logging.WARNING, "- %sdatabase problem (%s: %s); retrying "
                            "in %.0fs", self.said, type(e).__name__,
                            str(e).strip().splitlines()[0] if str(e).strip() else "", delay)
                    delay = min(delay, keeper.tick)
                else:
                    failing = f"{type(e).__name__}: {e}"
                    log.warning("- %smailbox problem (%s); retrying in %.0fs", self.said, failing, delay)
                backoff *= 2
                stop.wait(delay)

    def close(self) -> None:
        try:
            self.service.mailbox.close()
        except Exception as e:  # closing a dead connection may fail; we are leaving anyway
            log.debug("- %sclosing the mailbox: %s", self.said, e)


def run_forever(service: Any, settings: Settings, fixed_now: datetime | None = None,
                stop: threading.Event | None = None, keeper: LeaseKeeper | None = None,
                keepers: Sequence[LeaseKeeper | None] | None = None) -> int:
    """Work every mailbox of `service` (one Service, or the list `wiring.make_services` made) until `stop` or
    SIGTERM/SIGINT. One mailbox runs in this thread as it always did; several get a thread each (their own
    IMAP connection and IDLE), one sweep job each, and — on PostgreSQL — a lease each, spread over the live
    instances (`mailbot.leases.FairShare`)."""
    services = list(service) if isinstance(service, list | tuple) else [service]
    several = len(services) > 1
    clock = make_clock(fixed_now)
    stop = stop or threading.Event()
    if keepers is None:
        keepers = [keeper if keeper is not None else make_keeper(settings)] if not several \
            else make_keepers(settings, services)
    fatal: list[StoreCorrupt] = []
    runs = [MailboxRun(s, settings, k, clock, stop, fatal, several) for s, k in zip(services, keepers, strict=True)]

    def on_signal(signum: int, _frame: object) -> None:
        log.info("- %s received: finishing the message in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # The parse workers are forked now, while this is the only thread (mailbot.parse.pool says why); the
    # mailboxes share one pool.
    for each in {id(s.parser): s.parser for s in services}.values():
        each.start()
    leased = [k for k in keepers if k is not None]
    for k in leased:
        k.start()
    if not leased:
        _note_run(services[0].store, settings.bot.instance_name, [r.name for r in runs])
    sweeps = runs[0].sweep if not several else [(r.name, r.sweep) for r in runs]
    scheduler = make_scheduler(sweeps, settings.followup.sweep_seconds)
    scheduler.start()
    lease_note = f"; instance {settings.bot.instance_name}, lease {settings.store.lease_seconds:g}s" if leased else ""
    if several:
        log.info("- mailbot running: %d mailboxes (%s), %s sending; sweep every %ss%s", len(runs),
                 ", ".join(f"{r.name}: {r.service.settings.mailbox.kind}" for r in runs), settings.smtp.kind,
                 settings.followup.sweep_seconds, lease_note)
    else:
        log.info("- mailbot running: %s mailbox, %s sending; sweep every %ss%s",
                 settings.mailbox.kind, settings.smtp.kind, settings.followup.sweep_seconds, lease_note)
    try:
        if not several:
            runs[0].loop()
        else:
            threads = [threading.Thread(target=_guarded(r), name=f"mailbot-mailbox-{r.name}", daemon=True)
                       for r in runs]
            for t in threads:
                t.start()
            while not stop.is_set():  # the main thread keeps the signals; the mailboxes work in theirs
                stop.wait(0.5)
            for t in threads:
                t.join()
    finally:
        scheduler.shutdown(wait=True)
        for k in leased:  # first all: a stopping instance must not take the leases its others give up
            k.halt()
        for k in leased:
            k.stop(release=True)  # a clean stop: another instance takes over at its next tick
        for r in runs:
            r.close()
        log.info("- mailbot stopped")
    if fatal:
        raise fatal[0]  # the command prints it and exits 1
    return 0


def _guarded(run: MailboxRun) -> Callable[[], None]:
    """A mailbox thread that dies of a bug stops the whole run (with the reason logged), not just itself."""

    def target() -> None:
        try:
            run.loop()
        except BaseException:
            log.exception("- %sstopped by an unexpected error; stopping", run.said)
            run.stop.set()
            raise

    return target
