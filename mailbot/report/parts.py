"""The report read in parallel: each of a few processes counts one part of the store's cases, the counts add up.

Why: over 100,000 cases the figures are a few seconds of pure Python per core (mailbot.report.figures), and a
report is read while nothing else waits for that core. Each part is the store's own (`report_cases(since,
part, parts)`: disjoint, all of them together), each process opens its own store (a database connection is
never shared across a fork), and every figure is a sum, a union or a percentile of all the values, so the
parts give exactly the report that one pass gives (tests/test_report.py compares them).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from mailbot.decide.calendar import BusinessCalendar
from mailbot.report.figures import report_of, tally
from mailbot.report.periods import Period
from mailbot.store.port import StorePort

MAX_PARTS = 4  # beyond a few, the processes' start and the summing cost more than they save

# What the forked processes count: set just before they start, read by them (nothing is pickled to them).
_job: tuple[Callable[[], StorePort], Period, BusinessCalendar, str | None, int] | None = None


def _count(part: int) -> Any:
    assert _job is not None
    open_store, period, calendar, mailbox, parts = _job
    return _tally_part(open_store, period, calendar, mailbox, part, parts)


def _tally_part(open_store: Callable[[], StorePort], period: Period, calendar: BusinessCalendar,
                mailbox: str | None, part: int, parts: int) -> Any:
    store = open_store()
    try:
        return tally(store.report_cases(period.start, part, parts), period, calendar, mailbox)
    finally:
        close_store(store)


def close_store(store: StorePort) -> None:
    """Close a store's database connection (the files and memory engines hold none)."""
    close = getattr(store, "close", None)
    if close is not None:
        close()


def default_parts() -> int:
    """One part per CPU this process may use, at most MAX_PARTS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PARTS))


def gather_report(open_store: Callable[[], StorePort], period: Period, calendar: BusinessCalendar,
                  mailbox: str | None = None, parts: int | None = None) -> dict[str, Any]:
    """The INTERFACE.md report over the cases of the store active in `period`, read in `parts` processes
    (default: `default_parts()`): this one and parts - 1 forked ones, each with the store `open_store()`
    opens for it (and that is closed after). Where processes cannot be forked, or with one part, this
    process reads it all. An error in any part (a corrupt store) is raised here."""
    global _job
    parts = default_parts() if parts is None else parts
    if parts <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return report_of([_tally_part(open_store, period, calendar, mailbox, 0, 1)], mailbox)
    sys.stdout.flush()  # a forked process flushes what it inherited when it ends: nothing printed twice
    sys.stderr.flush()
    _job = (open_store, period, calendar, mailbox, parts)
    try:
        with ProcessPoolExecutor(parts - 1, mp_context=multiprocessing.get_context("fork")) as pool:
            others = [pool.submit(_count, part) for part in range(1, parts)]
            mine = _tally_part(open_store, period, calendar, mailbox, 0, parts)
            return report_of([mine, *(f.result() for f in others)], mailbox)
    finally:
        _job = None
