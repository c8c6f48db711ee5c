"""Parsing a batch of mail: in the bot's own process, or on every core while the bot applies what is parsed.

`parse()` is pure — bytes in, InboundMail or ParseFailure out — and takes two thirds of an ingest's time, so
a batch (catching up after downtime, an import) is parsed by worker processes while the bot's own process
matches and applies the mails already parsed. Results come back in mailbox order: a reply must be applied
after the mail it answers. Small batches (IDLE hands mail over one by one) are parsed in-process, where a
round trip to a worker would cost more than it saves.

The workers are forked, and only from a process with no other thread running: a fork copies the calling
thread alone, and a lock another thread held at that moment would stay locked in the child for ever.
`mailbot run` starts them before its scheduler thread; where that was not done, the batch is parsed
in-process, which is correct, only slower. A worker that dies (killed, out of memory) costs nothing: the
rest of the batch, and every batch after it, is parsed in-process, and the bot says so once.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import parse

log = logging.getLogger("mailbot")

MIN_BATCH = 32  # fewer mails than this are parsed in-process
CHUNK = 16  # mails per round trip to a worker: large enough to hide the pipe, small enough to start soon
MAX_WORKERS = 4  # parsing is CPU-bound; past a few cores the bot's own (serial) apply step is the limit

Parsed = InboundMail | ParseFailure


class Parser(Protocol):
    def parse_all(self, raws: Sequence[bytes]) -> Iterator[Parsed]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class InlineParser:
    """Every mail parsed in the calling process: the twin of PoolParser, and what one core gets."""

    workers = 1

    def parse_all(self, raws: Sequence[bytes]) -> Iterator[Parsed]:
        return map(parse_safely, raws)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def parse_safely(raw: bytes) -> Parsed:
    """parse() with a last net: a bug in it quarantines the one mail instead of failing the whole batch."""
    try:
        return parse(raw)
    except Exception as e:
        return ParseFailure(f"internal error while parsing: {type(e).__name__}: {e}"[:300])


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _worker_init(parent: int) -> None:
    """A worker lives and dies with the bot. The bot decides when parsing stops (Ctrl-C and SIGTERM go to
    the whole process group; the bot finishes the mail in hand and shuts its workers down), and a worker
    must never outlive a bot that was killed: it holds copies of the bot's open files, the writer lock's
    among them, and a stale holder would keep the next `mailbot run` from starting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        pr_set_pdeathsig = 1  # prctl(2): this signal when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the bot died before the line above: nobody would ever send us work
        os._exit(0)


def _ready() -> bool:
    return True


class PoolParser:
    """Batches of MIN_BATCH mails or more parsed by `workers` forked processes; smaller ones in-process."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None
        self._broken = False

    def start(self) -> None:
        """Fork the workers now. Call it before starting any thread (see the module's docstring)."""
        if self._executor is not None or self._broken:
            return
        if threading.active_count() > 1:
            return  # forking now could copy a held lock into the child: parse in-process instead
        executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
        try:
            # With fork, ProcessPoolExecutor forks all of its workers at the first submit, before it starts
            # its own manager thread: so they are all forked here, while this thread is still the only one.
            executor.submit(_ready).result()
        except (BrokenProcessPool, OSError) as e:
            self._give_up(executor, e)
            return
        self._executor = executor

    @property
    def running(self) -> bool:
        return self._executor is not None

    def parse_all(self, raws: Sequence[bytes]) -> Iterator[Parsed]:
        if len(raws) >= MIN_BATCH:
            self.start()
        executor = self._executor
        if executor is None or len(raws) < MIN_BATCH:
            yield from map(parse_safely, raws)
            return
        done = 0
        try:
            # map() submits the whole batch at once, so the workers run ahead of the caller's apply step.
            for result in executor.map(parse_safely, raws, chunksize=CHUNK):
                yield result
                done += 1
        except BrokenProcessPool as e:
            self._give_up(executor, e)
        except Exception as e:  # one result that would not cross the pipe: this mail and the rest in-process
            log.warning("- parse worker failed on a mail (%s: %s); parsing the rest of the batch here",
                        type(e).__name__, e)
        yield from map(parse_safely, raws[done:])

    def _give_up(self, executor: ProcessPoolExecutor, why: BaseException) -> None:
        log.warning("- parse workers stopped (%s); parsing in the bot's own process from now on", why or "no reason")
        self._broken = True
        self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def make_parser(workers: int) -> InlineParser | PoolParser:
    """`workers` from `[bot] parse_workers`: 0 = one per core (at most MAX_WORKERS), 1 = in-process."""
    n = workers or min(cores(), MAX_WORKERS)
    return InlineParser() if n <= 1 else PoolParser(n)
