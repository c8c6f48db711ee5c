"""Several mailboxes spread over several instances: 3 `mailbot run` processes on one PostgreSQL database work
6 Maildir mailboxes; one instance is SIGKILLed again and again during an ingest and a sweep of due reminders
to an SMTP sink. Targets (issue 16): every mailbox has exactly one leader (the spread 2 + 2 + 2 when all are
up), a killed instance's mailboxes are taken over within ~2 × lease_seconds, 0 mails lost, 0 recorded twice,
0 sent twice (Message-IDs counted at the sink, as bench/failover.py counts).

    .venv/bin/python bench/mailboxes.py [--mails 1200] [--reminders 300] [--kills 6] [--lease 2] [--json]

Starts a private PostgreSQL (tests/pg_server.py) and an aiosmtpd sink (tests/smtp_server.py). The database is
loaded with `--reminders` cases (spread over the mailboxes) whose first reminder is due, the six Maildirs with
`--mails` generated case mails (each thread in one mailbox); then three `mailbot run` processes (each its own
state folder) run with the clock on a business morning. Each round waits for the spread 2 + 2 + 2, lets the
instances work 0.3–2 s, SIGKILLs one and measures, for each mailbox it held, the time from the kill until
another instance holds it under a higher fence; then starts it again (it takes its share back). Meanwhile an
observer samples the leases: a sample with a mailbox that has no leader, after the first spread and outside
a takeover, counts as a gap. After the last kill the survivors finish and everything is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from instances import NOW, Instances, instance_config, message_id  # noqa: E402

MAILBOXES = tuple(f"desk{n}" for n in range(1, 7))
INSTANCES = ("a", "b", "c")
DESKS = "".join(f'[mailboxes.{m}]\npath = "{m}"\npoll_seconds = 1\n' for m in MAILBOXES)


def _leases(conn: Any) -> dict[str, tuple[str, int]]:
    """mailbox → (holder, fence) of each lease held now, by the database's clock."""
    rows = conn.execute("SELECT mailbox, holder, fence FROM leases WHERE expires > now()").fetchall()
    return {str(m): (str(h), int(f)) for m, h, f in rows}


class Observer(threading.Thread):
    """Samples the leases every 20 ms: how often a mailbox had no leader outside a takeover window."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.halt = threading.Event()
        self.watching = threading.Event()  # set while no takeover is expected (the spread is complete)
        self.samples = 0
        self.gaps = 0
        self.missing: list[tuple[float, list[str]]] = []  # (monotonic time, mailboxes without a leader)

    def run(self) -> None:
        while not self.halt.wait(0.02):
            if not self.watching.is_set():
                continue
            held = _leases(self.conn)
            self.samples += 1
            if set(held) != set(MAILBOXES) and self.watching.is_set():  # still expected after the query
                self.gaps += 1
                self.missing.append((time.monotonic(), sorted(set(MAILBOXES) - set(held))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=1200)
    ap.add_argument("--reminders", type=int, default=300)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--lease", type=float, default=2.0, help="lease_seconds of every instance")
    ap.add_argument("--sink-delay", type=float, default=0.05,
                    help="seconds the sink waits before answering MAIL FROM: sending takes long enough to be hit")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import psycopg
    from common import emit, generate, history_case, write_maildir

    from mailbot.models import CaseStatus
    from mailbot.store.postgresql.engine import PostgresStore
    from tests.pg_server import PostgresServer, pg_bindir
    from tests.smtp_server import SmtpServer

    bindir = pg_bindir()
    if bindir is None:
        print("skipped: PostgreSQL is not installed (scripts/ensure-postgres.sh)")
        return 0
    rng = random.Random(args.seed)
    mails = generate(args.mails, max(1, args.mails // 5), seed=args.seed)
    ids = [message_id(m.raw) for m in mails]
    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-mailboxes-"))
    pg = PostgresServer(bindir)

    class SlowSink(SmtpServer):
        # Slow before the transaction (bench/failover.py says why): a kill then leaves no mail at the sink.
        async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                              mail_options: list[str]) -> str:
            await asyncio.sleep(args.sink_delay)
            return await super().handle_MAIL(server, session, envelope, address, mail_options)

    sink = SlowSink()
    instances: Instances | None = None
    observer: Observer | None = None
    takeovers: list[float] = []
    spreads: list[float] = []
    kills = 0
    codes: dict[str, int | None] = {}
    try:
        pg.start()
        dsn = pg.create_database()
        sink.start()
        store = PostgresStore(dsn)
        due = datetime.fromisoformat(NOW).astimezone(UTC) - timedelta(hours=1)
        opened = due - timedelta(days=20)
        for i in range(args.reminders):  # cases waiting on their customer, the first reminder due
            case, mids = history_case(i, rng, status=CaseStatus.WAITING_CUSTOMER, opened=opened, entries=1,
                                      next_due=due)
            store.put_case(replace(case, mailbox=MAILBOXES[i % len(MAILBOXES)]))
            for mid in mids:
                store.remember(mid, case.key)
        store.commit()
        store.close()
        for n, m in enumerate(MAILBOXES):  # each thread's mail in one mailbox
            write_maildir(work / m, [x for x in mails if x.thread % len(MAILBOXES) == n])
        for name in INSTANCES:
            (work / f"{name}.toml").write_text(instance_config(name, DESKS, sink.port, args.lease), encoding="utf-8")

        instances = Instances(work, dsn, [sys.executable, "-m", "mailbot.cli", "run", "--config"],
                              {**os.environ, "PYTHONPATH": str(ROOT)})
        watch = psycopg.connect(dsn, autocommit=True)
        observer = Observer(dsn)
        observer.start()
        started = time.monotonic()
        for name in INSTANCES:
            instances.start(name)

        def wait_spread(timeout: float) -> dict[str, tuple[str, int]]:
            """Until every mailbox has a leader and each instance holds two."""
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                held = _leases(watch)
                if set(held) == set(MAILBOXES) and Counter(h for h, _ in held.values()) == Counter(
                        {i: len(MAILBOXES) // len(INSTANCES) for i in INSTANCES}):
                    return held
                time.sleep(0.02)
            raise RuntimeError(f"the mailboxes were not spread 2 + 2 + 2 within {timeout:g} s; see {work}")

        reader = PostgresStore(dsn, mailbox=None, init=False)

        def reminders() -> int:
            return sum(1 for e in reader.outbox_entries() if e["kind"] == "reminder" and e["status"] == "sent")

        def ingested() -> bool:
            reader.rollback()  # a fresh snapshot
            return all(reader.seen(i) is not None for i in ids)

        held = wait_spread(180)
        spreads.append(time.monotonic() - started)
        observer.watching.set()
        for k in range(args.kills):
            if k == args.kills // 2:  # the second half of the kills hits the sweeps and their sending
                while not ingested():
                    time.sleep(0.2)
            time.sleep(rng.uniform(0.3, 2.0))
            victim = INSTANCES[k % len(INSTANCES)]
            observer.watching.clear()  # its mailboxes have no leader until they are taken over: expected
            held = _leases(watch)
            lost = {m: f for m, (h, f) in held.items() if h == victim}
            instances.kill(victim)
            killed_at = time.monotonic()
            kills += 1
            waiting = dict(lost)
            dumped = False
            while waiting and time.monotonic() - killed_at < 10 * args.lease + 30:
                if not dumped and time.monotonic() - killed_at > 3 * args.lease:  # slow: who blocks whom
                    dumped = True
                    with (work / "slow-takeovers.txt").open("a") as f:
                        f.write(f"kill {kills} of {victim}, waiting for {sorted(waiting)}:\n")
                        for row in watch.execute(
                                """SELECT pid, application_name, state, wait_event_type, wait_event,
                                          pg_blocking_pids(pid), left(query, 100), xact_start
                                     FROM pg_stat_activity WHERE datname = current_database()""").fetchall():
                            f.write(f"  {row}\n")
                        f.write(f"  leases: {watch.execute('SELECT * FROM leases').fetchall()}\n")
                        f.write(f"  instances: {watch.execute('SELECT name, last_seen, now() FROM instances').fetchall()}\n")
                now_held = _leases(watch)
                for m in list(waiting):
                    if m in now_held and now_held[m][1] > waiting[m]:
                        takeovers.append(time.monotonic() - killed_at)
                        del waiting[m]
                time.sleep(0.01)
            if waiting:
                raise RuntimeError(f"mailboxes {sorted(waiting)} not taken over after kill {kills}; see {work}")
            observer.watching.set()
            back = time.monotonic()
            instances.start(victim)  # a new process: it takes its share back from the survivors
            observer.watching.clear()  # the hand-back releases and retakes: a short expected gap each
            wait_spread(180)
            spreads.append(time.monotonic() - back)
            observer.watching.set()

        def done() -> bool:
            return ingested() and reader.counts()["pending"] == 0 and reminders() >= args.reminders

        end = time.monotonic() + 600
        while not done() and time.monotonic() < end:
            time.sleep(0.5)
        time.sleep(3 * args.lease)  # anything still on its way to the sink arrives
        wall = time.monotonic() - started
        reader.rollback()
        lost_mail = [i for i in ids if reader.seen(i) is None]
        on_timelines = Counter(e.message_id for c in reader.all_cases() for e in c.timeline)
        unmatched = Counter(u["message_id"] for u in reader.unmatched())
        recorded_twice = [i for i in set(ids) if on_timelines[i] + unmatched[i] > 1]
        reminders_sent = reminders()
        resolved = sum(1 for e in reader.outbox_entries() if e.get("resolved"))
        pending = reader.counts()["pending"]
        wrong_mailbox = sum(1 for c in reader.all_cases() if c.mailbox not in MAILBOXES)
        reader.close()
        watch.close()
    finally:
        if observer is not None:
            observer.halt.set()
            observer.join(timeout=5)
        if instances is not None:
            codes = instances.stop_all()
        sink.stop()
        pg.stop()
    at_sink = Counter(message_id(m.raw) for m in sink.messages)
    sent_twice = sorted(mid for mid, n in at_sink.items() if n > 1)
    limit = 2 * args.lease
    tick = args.lease / 3  # a survivor notices the larger share at its next lease tick
    slow = [t for t in takeovers if t > limit + tick]
    gaps = observer.gaps if observer is not None else -1
    ok = (not lost_mail and not recorded_twice and not sent_twice and not slow and pending == 0 and gaps == 0
          and reminders_sent == args.reminders and not wrong_mailbox and all(c == 0 for c in codes.values()))
    data = {"mails": len(ids), "mailboxes": len(MAILBOXES), "instances": len(INSTANCES),
            "reminders_due": args.reminders, "kills": kills, "lease_seconds": args.lease,
            "mails_lost": len(lost_mail), "recorded_twice": len(recorded_twice), "reminders_sent": reminders_sent,
            "mails_at_sink": sum(at_sink.values()), "sent_twice": len(sent_twice), "pending_at_end": pending,
            "found_already_sent": resolved, "leaderless_samples": gaps,
            "samples": observer.samples if observer else 0,
            "takeover_s": {"p50": round(statistics.median(takeovers), 2) if takeovers else None,
                           "max": round(max(takeovers), 2) if takeovers else None, "limit": limit,
                           "over_limit_plus_tick": len(slow)},
            "spread_s": {"first": round(spreads[0], 2) if spreads else None,
                         "hand_back_max": round(max(spreads[1:]), 2) if len(spreads) > 1 else None},
            "gaps_at_s": [(round(t - started, 2), m) for t, m in observer.missing[:20]] if observer else [],
            "exit_codes": codes, "wall_s": round(wall, 1), "ok": ok, "logs": str(work)}
    emit(f"mailboxes: {len(MAILBOXES)} Maildir mailboxes over {len(INSTANCES)} instances, {kills} SIGKILLs, "
         f"{len(ids)} mails and {args.reminders} due reminders, lease {args.lease:g} s", [
        ("mails lost", f"{len(lost_mail)}  (target 0)"),
        ("mails recorded twice", f"{len(recorded_twice)}  (target 0)"),
        ("reminders sent (ledger)", f"{reminders_sent} of {args.reminders} due"),
        ("mails at the sink / sent twice", f"{sum(at_sink.values())} / {len(sent_twice)}  (target 0 twice)"),
        ("unsent at the end", str(pending)),
        ("handed over by a killed instance, found sent", str(resolved)),
        ("lease samples without a leader (steady state)", f"{gaps} of {data['samples']}  (target 0)"),
        ("takeover p50 / max (per mailbox)",
         f"{data['takeover_s']['p50']} s / {data['takeover_s']['max']} s  (target ~2 × lease = {limit:g} s; "
         f"{'OK' if not slow else f'{len(slow)} over'} with one lease tick of {tick:.2f} s)"),
        ("first spread 2+2+2 / hand-back after a restart (max)",
         f"{data['spread_s']['first']} s / {data['spread_s']['hand_back_max']} s"),
        ("exit codes at SIGTERM", ", ".join(f"{n} {c}" for n, c in codes.items())),
        ("wall", f"{wall:.0f} s; logs in {work}"),
    ], args.json, data)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
