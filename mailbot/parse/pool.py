"""Parsing a batch of mail: in the bot's own process, or on every core while the bot applies what is parsed.

`parse()` is pure — bytes in, InboundMail or ParseFailure out — and takes two thirds of an ingest's time, so
a batch (catching up after downtime, an import) is parsed by worker processes while the bot's own process
matches and applies the mails already parsed. Results come back in mailbox order: a reply must be applied
after the mail it answers. Small batches (IDLE hands mail over one by one) are parsed in-process, where a
round trip to a worker would cost more than it saves.

How, and why not concurrent.futures: a ProcessPoolExecutor hangs for ever when a worker is killed while it
is sending a result (its reader waits for the rest of a message on a pipe that the parent itself keeps
open: tests/test_parsers.py caught it). Here each worker has a pipe of its own whose other end only that
worker holds, so a dead worker is always an end-of-file, never a hang. A batch's bytes go to the workers in
an unlinked in-memory file (memfd) whose descriptor is passed over that pipe: what is written to a pipe is
small, so neither side can block the other.

The workers are forked, and only from a process with no other thread running: a fork copies the calling
thread alone, and a lock another thread held at that moment would stay locked in the child for ever.
`mailbot run` starts them before its scheduler thread; where that was not done, the batch is parsed
in-process, which is correct, only slower. A worker that dies (killed, out of memory) costs nothing: the
rest of the batch, and every batch after it, is parsed in-process, and the bot says so once.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Protocol

from mailbot.mailbox.base import FetchedMail
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse.mail import parse

log = logging.getLogger("mailbot")

MIN_BATCH = 32  # fewer mails than this are parsed in-process
CHUNK = 16  # mails per result message: large enough to hide the pipe, small enough to start soon
MAX_WORKERS = 4  # parsing is CPU-bound; past a few cores the bot's own (serial) apply step is the limit
MAX_BATCH_BYTES = 256 * 2**20  # a batch file is a second copy of the batch: a bigger batch is parsed here

Parsed = InboundMail | ParseFailure
ParseFn = Callable[[bytes], Parsed]


class Parser(Protocol):
    def parse_all(self, raws: Sequence[bytes], timeout: float | None = None) -> Iterator[Parsed]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class InlineParser:
    """Every mail parsed in the calling process: the twin of PoolParser, and what one core gets. `parse_fn`
    is parse() itself, or a stand-in for tests (a parse that never ends)."""

    workers = 1

    def __init__(self, parse_fn: ParseFn | None = None) -> None:
        self.parse_fn = parse_fn

    def parse_all(self, raws: Sequence[bytes], timeout: float | None = None) -> Iterator[Parsed]:
        return (parse_safely(raw, timeout, self.parse_fn) for raw in raws)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class ParseTimeout(BaseException):
    """Raised by the alarm into a parse that ran out of time. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way (ours, mail-parser's, html.parser's) can swallow it."""


@contextlib.contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Raise ParseTimeout into the code in the block once `seconds` have passed.

    Why an alarm (SIGALRM) and not a thread or a child process per mail: a thread cannot be stopped, and a
    fork per mail would cost more than most parses. Python's regex engine and every loop of the parse look
    at signals between steps (checked: a backtracking `(a+)+$` stops at the alarm), and RE2 runs in linear
    time. The timer repeats every second, in case a bare `except:` somewhere swallowed the first. Signals
    reach only the main thread: elsewhere (never the case in `mailbot run`, where ingest runs in the main
    thread and the workers are processes of their own) the block runs without a budget."""
    if (not seconds or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")):
        yield
        return

    def on_alarm(_signum: int, _frame: object) -> None:
        raise ParseTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parse_safely(raw: bytes, timeout: float | None = None, parse_fn: ParseFn | None = None) -> Parsed:
    """parse() with a last net: a bug in it quarantines the one mail instead of failing the whole batch,
    and so does a parse that takes longer than `timeout` seconds (`[mailbox] parse_timeout_seconds`)."""
    try:
        with time_budget(timeout):
            return (parse_fn or parse)(raw)
    except ParseTimeout:
        return ParseFailure(f"parsing took longer than parse_timeout_seconds ({timeout:g} s)")
    except Exception as e:
        return ParseFailure(f"internal error while parsing: {type(e).__name__}: {e}"[:300])


def too_big(mail: FetchedMail, max_message_bytes: int | None) -> ParseFailure | None:
    if max_message_bytes is None or mail.length <= max_message_bytes:
        return None
    return ParseFailure(f"message of {mail.length:,} bytes exceeds max_message_bytes ({max_message_bytes:,})")


def parse_fetched(parser: Parser, batch: Sequence[FetchedMail], max_message_bytes: int | None = None,
                  timeout: float | None = None) -> Iterator[Parsed]:
    """Each fetched mail parsed, in order: one bigger than `max_message_bytes` is never parsed (a failure that
    says so takes its place, and the service quarantines it), the rest within `timeout` seconds each. The
    batch is handed to the parser now (workers start at once); the results are read as they are asked for."""
    failures = [too_big(m, max_message_bytes) for m in batch]
    results = parser.parse_all([b"" if f is not None else m.raw for m, f in zip(batch, failures, strict=True)],
                               timeout=timeout)
    return (f if f is not None else r for f, r in zip(failures, results, strict=True))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _worker_init(parent: int) -> None:
    """A worker lives and dies with the bot. Ctrl-C goes to the whole process group: the bot handles it,
    a worker ignores it (no KeyboardInterrupt traceback from every worker). SIGTERM — systemd's stop, or
    multiprocessing terminating its children at exit — simply ends a worker: the bot takes that as it
    takes any worker's death. The bot's own SIGTERM handler, copied by the fork, must not be kept. And a
    worker must never outlive a bot that was killed: it holds copies of the bot's open files, the writer
    lock's among them, and a stale holder would keep the next `mailbot run` from starting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        pr_set_pdeathsig = 1  # prctl(2): this signal when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the bot died before the line above: nobody would ever send us work
        os._exit(0)


Spans = list[tuple[int, int]]  # (offset, length) of each mail of a chunk in the batch file


def _serve(conn: Connection, parent: int, not_mine: list[Connection], parse_fn: ParseFn | None = None) -> None:
    """A worker's loop: a job is (job id, [(chunk id, spans)], timeout) plus the batch file's descriptor; each
    chunk's results go back as (job id, chunk id, results) as soon as they are ready. Each mail is parsed
    within the timeout (the alarm works here: a worker's loop is its process's main thread)."""
    _worker_init(parent)
    for other in not_mine:  # the bot's ends of the pipes, copied by the fork: held here, a sibling would never
        other.close()      # see the bot close its pipe
    while True:
        try:
            job = conn.recv()
            if job is None:
                return
            job_id, chunks, timeout = job
            fd = reduction.recv_handle(conn)
        except (EOFError, OSError):  # the bot closed the pipe or died
            return
        try:
            for chunk_id, spans in chunks:
                conn.send((job_id, chunk_id, [parse_safely(os.pread(fd, length, offset), timeout, parse_fn)
                                              for offset, length in spans]))
        except (BrokenPipeError, ConnectionResetError):  # the bot is gone or gave up on us
            return
        except Exception as e:  # say it in one line and stop: the bot sees the pipe close and parses itself
            log.error("- parse worker %d: %s: %s", os.getpid(), type(e).__name__, e)
            return
        finally:
            os.close(fd)


def _batch_file(raws: Sequence[bytes]) -> tuple[int, Spans]:
    """The batch in an unlinked in-memory file: its descriptor and where each mail is in it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mailbot-batch", os.MFD_CLOEXEC)
    else:  # not Linux: an unlinked temp file does the same
        fd, path = tempfile.mkstemp(prefix="mailbot-batch-")
        os.unlink(path)
    spans: Spans = []
    offset = 0
    try:
        with open(fd, "wb", closefd=False) as f:
            for raw in raws:
                f.write(raw)
                spans.append((offset, len(raw)))
                offset += len(raw)
    except BaseException:
        os.close(fd)
        raise
    return fd, spans


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


class PoolParser:
    """Batches of MIN_BATCH mails or more parsed by `workers` forked processes; smaller ones in-process."""

    def __init__(self, workers: int, parse_fn: ParseFn | None = None) -> None:
        self.workers = max(1, workers)
        self.parse_fn = parse_fn
        self._pool: list[_Worker] = []
        self._broken = False
        self._jobs = 0
        # Results by (job, chunk) as they arrive, for every batch whose iterator is still alive: batches may
        # overlap (the next handed over before the last is read to its end), and one given up half-way
        # must not leave its results behind.
        self._ready: dict[tuple[int, int], list[Parsed]] = {}
        self._live: set[int] = set()

    @property
    def running(self) -> bool:
        return bool(self._pool)

    def start(self) -> None:
        """Fork the workers now. Call it before starting any thread (see the module's docstring)."""
        if self._pool or self._broken:
            return
        if threading.active_count() > 1:
            return  # forking now could copy a held lock into the child: parse in-process instead
        context = multiprocessing.get_context("fork")
        try:
            for n in range(self.workers):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(
                    target=_serve, name=f"mailbot-parse-{n}", daemon=True,
                    args=(theirs, os.getpid(), [w.conn for w in self._pool] + [mine], self.parse_fn),
                )
                process.start()
                theirs.close()  # from now on only the worker holds its end: its death is our end-of-file
                self._pool.append(_Worker(process, mine))
        except OSError as e:  # no more processes or memory: parse here
            self._give_up(e)
            return
        log.info("- %d parse workers started (pids %s)", len(self._pool),
                 " ".join(str(w.process.pid) for w in self._pool))

    def _here(self, raws: Sequence[bytes], timeout: float | None) -> Iterator[Parsed]:
        return (parse_safely(raw, timeout, self.parse_fn) for raw in raws)

    def parse_all(self, raws: Sequence[bytes], timeout: float | None = None) -> Iterator[Parsed]:
        """The whole batch goes to the workers now, before the first result is asked for: the caller can
        go on with other work (saving the previous batch) while they parse."""
        worth_it = len(raws) >= MIN_BATCH and sum(map(len, raws)) <= MAX_BATCH_BYTES
        if worth_it:
            self.start()
        if not self._pool or not worth_it:
            return self._here(raws, timeout)
        self._jobs += 1
        job_id = self._jobs
        chunks = [list(range(i, min(i + CHUNK, len(raws)))) for i in range(0, len(raws), CHUNK)]
        try:
            fd, spans = _batch_file(raws)
            try:
                for w, worker in enumerate(self._pool):
                    # chunk c goes to worker c mod n: results arrive in order, the load evenly spread
                    mine = [(c, [spans[k] for k in chunks[c]]) for c in range(w, len(chunks), len(self._pool))]
                    worker.conn.send((job_id, mine, timeout))
                    reduction.send_handle(worker.conn, fd, worker.process.pid or 0)
            finally:
                os.close(fd)
        except OSError as e:  # a worker gone, or no memory for the batch file
            self._give_up(e)
            return self._here(raws, timeout)
        self._live.add(job_id)
        results = self._collect(job_id, len(chunks), raws, timeout)
        weakref.finalize(results, self._forget, job_id)  # read to the end, or dropped unread
        return results

    def _forget(self, job_id: int) -> None:
        self._live.discard(job_id)
        for key in [k for k in self._ready if k[0] == job_id]:
            del self._ready[key]

    def _collect(self, job_id: int, n_chunks: int, raws: Sequence[bytes], timeout: float | None) -> Iterator[Parsed]:
        # Each worker stops a parse at its timeout; should one hang where its alarm cannot reach (a C
        # library), the bot stops waiting after a chunk's worth of timeouts and parses the rest itself.
        silence = None if not timeout else CHUNK * (timeout + 1) + 10
        for c in range(n_chunks):
            try:
                while (job_id, c) not in self._ready:
                    if not self._pool:  # given up while another batch was being read
                        raise EOFError("parse workers stopped")
                    # Whatever any worker has sent: a worker blocked on a full pipe would stop parsing.
                    ready = wait([w.conn for w in self._pool], timeout=silence)
                    if not ready:
                        raise TimeoutError(f"no parse worker answered for {silence:g} s")
                    for conn in ready:
                        got_job, chunk_id, results = conn.recv()  # EOFError: that worker died
                        if got_job in self._live:  # results of a batch given up half-way are dropped
                            self._ready[(got_job, chunk_id)] = results
            except Exception as e:  # EOFError or OSError: a worker died; anything else: a result we cannot read
                if self._pool:
                    self._give_up(e)
                yield from self._here(raws[c * CHUNK:], timeout)
                return
            yield from self._ready.pop((job_id, c))
        self._live.discard(job_id)

    def _give_up(self, why: BaseException) -> None:
        log.warning("- parse workers stopped (%s); parsing in the bot's own process from now on",
                    f"{type(why).__name__}: {why}".rstrip(": "))
        self._broken = True
        self._stop(kill=True)

    def _stop(self, kill: bool) -> None:
        pool, self._pool = self._pool, []
        for worker in pool:
            if not kill:
                with contextlib.suppress(OSError):  # already gone: nothing to tell it
                    worker.conn.send(None)
            worker.conn.close()
        for worker in pool:
            if kill:
                worker.process.kill()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)

    def close(self) -> None:
        self._stop(kill=False)


def parse_in_batches(parser: Parser, raws: Sequence[bytes], batch: int = 500) -> Iterator[Parsed]:
    """Every mail of a long sequence (an import), parsed `batch` at a time with the next batch always
    handed over before the current one is read: bounded memory, and the workers never wait."""
    current = parser.parse_all(raws[:batch])
    for start in range(batch, len(raws) + batch, batch):
        following = parser.parse_all(raws[start : start + batch]) if start < len(raws) else None
        yield from current
        if following is None:
            return
        current = following


def make_parser(workers: int, parse_fn: ParseFn | None = None) -> InlineParser | PoolParser:
    """`workers` from `[bot] parse_workers`: 0 = one per core (at most MAX_WORKERS), 1 = in-process."""
    n = workers or min(cores(), MAX_WORKERS)
    return InlineParser(parse_fn) if n <= 1 else PoolParser(n, parse_fn)
