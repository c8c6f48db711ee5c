"""The PostgreSQL store against the files engine: the ingest of `bench/ingest.py` and the sweep's read of what is
due. Targets (issue 15): ingest ≥ 0.7 × the files engine's speed; sweep over 20,000 open cases with 250 due ≤ 1 s.

    .venv/bin/python bench/store_pg.py [--messages 2000] [--threads 400] [--open 20000] [--due 250]
                                       [--repeat 3] [--dsn postgresql://...] [--json]

Without --dsn a private cluster is started (as tests/pg_server.py does; fsync off like the tests' cluster, so
pass --dsn for a production-like server). The ingest is `Service.run_once` over a Maildir, one parse worker per
core, into a fresh store of each engine. The sweep figure is `due_case_keys(now)` plus reading every due case.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from common import (  # noqa: E402
    copy_maildir,
    emit,
    fill_store,
    generate,
    history_case,
    last_date,
    service_for,
    settings_for,
    write_maildir,
)

from mailbot.models import CaseStatus  # noqa: E402
from mailbot.store.files import Store  # noqa: E402
from mailbot.store.postgresql import PostgresStore  # noqa: E402

INGEST_TARGET = 0.7
SWEEP_TARGET_S = 1.0


def new_database(admin_dsn: str) -> str:
    import uuid

    import psycopg

    name = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def timed_ingest(work: Path, now: datetime, store: Any) -> tuple[float, dict[str, int]]:
    settings = settings_for(work)
    start = time.perf_counter()
    service = service_for(settings, store)
    try:
        report = service.run_once(now)
    finally:
        service.close()
    return time.perf_counter() - start, report.as_dict()


def sweep_store(store: Any, n_open: int, n_due: int, now: datetime) -> None:
    rng = random.Random(11)
    due_at = set(rng.sample(range(n_open), n_due))

    def cases() -> Any:
        for i in range(n_open):
            due = now - timedelta(minutes=i % 60) if i in due_at else now + timedelta(days=1 + i % 20)
            yield history_case(i, rng, status=CaseStatus.WAITING_CUSTOMER, opened=now - timedelta(days=30),
                               next_due=due)

    fill_store(store, cases())


def time_sweep(store: Any, now: datetime, repeat: int) -> tuple[float, int]:
    best, found = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        keys = store.due_case_keys(now)
        cases = [store.get_case(k) for k in keys]
        best = min(best, time.perf_counter() - start)
        found = len(cases)
    return best, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--open", type=int, default=20000)
    ap.add_argument("--due", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dsn", help="an admin DSN of a server to create the bench databases on")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    server = None
    admin = args.dsn
    if admin is None:
        from tests.pg_server import PostgresServer, pg_bindir

        bindir = pg_bindir()
        if bindir is None:
            sys.exit("store_pg: PostgreSQL is not installed (scripts/ensure-postgres.sh) and no --dsn given")
        server = PostgresServer(bindir)
        server.start()
        admin = server.dsn
    try:
        mails = generate(args.messages, args.threads, args.seed)
        now = last_date(mails) + timedelta(minutes=10)
        files_times, pg_times, reports = [], [], {}
        with tempfile.TemporaryDirectory(prefix="mailbot-bench-pg-") as tmp:
            base = Path(tmp)
            write_maildir(base / "source", mails)
            for i in range(args.repeat):
                for engine, times in (("files", files_times), ("postgresql", pg_times)):
                    work = base / f"{engine}{i}"
                    copy_maildir(base / "source", work / "maildir")
                    gc.collect()
                    start = time.perf_counter()
                    store = Store(work / "state" / "store") if engine == "files" else PostgresStore(new_database(admin))
                    opened = time.perf_counter() - start
                    seconds, reports[engine] = timed_ingest(work, now, store)
                    times.append(opened + seconds)
                    if engine == "postgresql":
                        store.close()
            sweep_now = now + timedelta(days=1)
            pg = PostgresStore(new_database(admin))
            sweep_store(pg, args.open, args.due, sweep_now)
            pg.conn.execute("ANALYZE cases")
            pg.commit()
            pg_sweep, pg_found = time_sweep(pg, sweep_now, args.repeat)
            pg.close()
            files = Store(base / "sweep" / "store")
            sweep_store(files, args.open, args.due, sweep_now)
            files_sweep, files_found = time_sweep(Store(base / "sweep" / "store"), sweep_now, 1)
    finally:
        if server is not None:
            server.stop()
    files_s, pg_s = min(files_times), min(pg_times)
    speed = files_s / pg_s
    data = {
        "messages": len(mails), "files_ingest_s": round(files_s, 3), "postgresql_ingest_s": round(pg_s, 3),
        "speed_ratio": round(speed, 2), "ingest_target": INGEST_TARGET, "ingest_ok": speed >= INGEST_TARGET,
        "reports_equal": reports.get("files") == reports.get("postgresql"), "report": reports.get("postgresql"),
        "open": args.open, "due": pg_found, "postgresql_sweep_s": round(pg_sweep, 4),
        "files_sweep_cold_s": round(files_sweep, 4), "files_due": files_found,
        "sweep_ok": pg_sweep <= SWEEP_TARGET_S, "private_cluster": server is not None,
    }
    emit(f"store engines: ingest of {len(mails)} mails, sweep of {args.open} open cases, best of {args.repeat}", [
        ("files engine ingest", f"{files_s:.2f} s  {len(mails) / files_s:,.0f} msg/s"),
        ("postgresql ingest", f"{pg_s:.2f} s  {len(mails) / pg_s:,.0f} msg/s"),
        ("speed postgresql/files", f"{speed:.2f}  (target ≥ {INGEST_TARGET}: {'OK' if speed >= INGEST_TARGET else 'MISSED'})"),
        ("same cycle report", str(data["reports_equal"])),
        ("postgresql sweep read", f"{pg_sweep * 1000:.1f} ms for {pg_found} due of {args.open}  "
                                  f"(target ≤ {SWEEP_TARGET_S} s: {'OK' if data['sweep_ok'] else 'MISSED'})"),
        ("files sweep read (cold open)", f"{files_sweep * 1000:.1f} ms for {files_found} due"),
    ], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
