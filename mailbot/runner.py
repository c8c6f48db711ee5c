"""`mailbot run`: the service — watch the mailbox (IDLE or polling), ingest, and let the scheduler send
what is due, until SIGTERM/SIGINT, which finish the message in hand, save, and exit 0."""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from mailbot.config import Settings
from mailbot.storage import StoreCorrupt, StoreWriteError

log = logging.getLogger("mailbot")


def make_clock(fixed_now: datetime | None) -> Callable[[], datetime]:
    """The real clock, or one shifted so that the service starts at `fixed_now` (for simulations)."""
    if fixed_now is None:
        return lambda: datetime.now(UTC)
    offset = fixed_now - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


def make_scheduler(sweep: Callable[[], None], every_seconds: int) -> BackgroundScheduler:
    # APScheduler's defaults drop runs (misfire_grace_time=1) and may overlap them; the store holds the
    # schedule, so one coalescing interval job that never runs twice at once is all we need.
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    scheduler.add_job(sweep, "interval", seconds=every_seconds, id="sweep", next_run_time=datetime.now(UTC))
    return scheduler


def run_forever(service: Any, settings: Settings, fixed_now: datetime | None = None,
                stop: threading.Event | None = None) -> int:
    clock = make_clock(fixed_now)
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("- %s received: finishing the message in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    fatal: list[StoreCorrupt] = []

    def sweep() -> None:
        if stop.is_set():
            return
        try:
            service.send_due(clock())
        except StoreCorrupt as e:  # nothing more may be written: stop, and say why
            fatal.append(e)
            stop.set()
        except StoreWriteError as e:  # disk full: nothing half-written; the next sweep does it again
            log.error("- sweep: %s", e)
        except Exception:  # the next sweep tries again; a failure must not kill the scheduler thread
            log.exception("- sweep failed")

    # The parse workers are forked now, while this is the only thread (mailbot.parse.pool says why).
    service.parser.start()
    scheduler = make_scheduler(sweep, settings.followup.sweep_seconds)
    scheduler.start()
    mailbox = service.mailbox
    log.info("- mailbot running: %s mailbox, %s sending; sweep every %ss",
             settings.mailbox.kind, settings.smtp.kind, settings.followup.sweep_seconds)
    backoff = 1.0
    try:
        while not stop.is_set():
            try:
                report = service.ingest(clock())
                if report.ingested or report.quarantined:
                    log.info("- ingested %s, quarantined %s", report.ingested, report.quarantined)
                backoff = 1.0
                if hasattr(mailbox, "wait_for_mail"):
                    mailbox.wait_for_mail(float(settings.mailbox.poll_seconds), stop)
                else:
                    stop.wait(settings.mailbox.poll_seconds)
            except StoreCorrupt as e:
                fatal.append(e)
                break
            except Exception as e:  # connection lost, server restarted, DNS down, disk full: wait, try again
                delay = min(300.0, backoff) * (0.5 + random.random())  # jitter: no thundering herd
                if isinstance(e, StoreWriteError):
                    log.error("- %s; the mail stays in the mailbox; retrying in %.0fs", e, delay)
                else:
                    log.warning("- mailbox problem (%s: %s); retrying in %.0fs", type(e).__name__, e, delay)
                backoff *= 2
                stop.wait(delay)
    finally:
        scheduler.shutdown(wait=True)
        try:
            mailbox.close()
        except Exception as e:  # closing a dead connection may fail; we are leaving anyway
            log.debug("- closing the mailbox: %s", e)
        log.info("- mailbot stopped")
    if fatal:
        raise fatal[0]  # the command prints it and exits 1
    return 0
