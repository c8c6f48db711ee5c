"""History independence on PostgreSQL: the ingest of bench/ingest.py into a PostgreSQL store that already holds
100,000 closed cases and 500,000 Message-IDs (and the 200,000 mails sent for them), against the same ingest into
an empty one. Target (issue 15): speed ≥ 0.8 × the empty store's.

    .venv/bin/python bench/history_pg.py [--cases 100000] [--ids-per-case 5] [--sent-per-case 2]
                                         [--messages 2000] [--threads 400] [--repeat 2]
                                         [--cache DIR] [--dsn postgresql://...] [--json]

The history is bench/history.py's files store (kept in --cache DIR, the same DIR as history.py's), moved into
a template database with the dump loader (mailbot.store.dump, as `store load` does) and analysed; each
measured ingest gets its own copy (CREATE DATABASE … TEMPLATE) and runs in a fresh subprocess, the opening of
the store included, as in bench/store_pg.py. Without --dsn a private cluster is started (fsync off, as the
tests' cluster).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from common import emit, generate, last_date, link_tree, write_maildir  # noqa: E402
from history import cached_history  # noqa: E402
from store_pg import new_database, timed_ingest  # noqa: E402

from mailbot.store.dump import dump, load  # noqa: E402
from mailbot.store.files import Store  # noqa: E402
from mailbot.store.postgresql import PostgresStore  # noqa: E402

SPEED_TARGET = 0.8


def copy_database(admin_dsn: str, template_dsn: str) -> str:
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_dsn.rsplit("/", 1)[1]}"')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def prepare(admin_dsn: str, history: Path) -> tuple[str, str, float, dict[str, Any]]:
    """The template databases: the history loaded from the files store, and an empty store (schema only)."""
    import psycopg

    full = new_database(admin_dsn)
    store = PostgresStore(full)
    start = time.perf_counter()
    changed = load(store, dump(Store(history)))
    loaded = time.perf_counter() - start
    counts = store.counts()
    store.close()
    with psycopg.connect(full, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as a database that has lived a while would be
        row = conn.execute("""SELECT pg_database_size(current_database()), (SELECT count(*) FROM message_ids),
            (SELECT count(*) FROM outbox)""").fetchone()
    assert row is not None
    empty = new_database(admin_dsn)
    PostgresStore(empty).close()
    return full, empty, loaded, {"changed": changed, **counts, "ids": row[1], "outbox": row[2],
                                 "mb": round(row[0] / 2**20)}


def measure(work: Path, now: datetime, dsn: str) -> dict[str, Any]:
    """In the subprocess: open the store and run_once over work/maildir, timed together."""
    start = time.perf_counter()
    store = PostgresStore(dsn)
    opened = time.perf_counter() - start
    try:
        seconds, report = timed_ingest(work, now, store)
    finally:
        store.close()
    return {"seconds": opened + seconds, "report": report}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--ids-per-case", type=int, default=5)
    ap.add_argument("--sent-per-case", type=int, default=2)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="bench/history.py's --cache: keep the history store here")
    ap.add_argument("--dsn", help="an admin DSN of a server to create the bench databases on")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--measure", nargs=3, metavar=("WORKDIR", "NOW", "DSN"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), datetime.fromisoformat(args.measure[1]), args.measure[2])))
        return 0

    server = None
    admin = args.dsn
    if admin is None:
        from tests.pg_server import PostgresServer, pg_bindir

        bindir = pg_bindir()
        if bindir is None:
            sys.exit("history_pg: PostgreSQL is not installed (scripts/ensure-postgres.sh) and no --dsn given")
        server = PostgresServer(bindir)
        server.start()
        admin = server.dsn
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-history-pg-"))
    try:
        history, built = cached_history(args.cache or tmp / "history", args.cases, args.ids_per_case,
                                        args.sent_per_case)
        full, empty, loaded, held = prepare(admin, history)
        mails = generate(args.messages, args.threads, args.seed)
        now = last_date(mails) + timedelta(minutes=10)
        write_maildir(tmp / "maildir", mails)
        results: dict[str, list[dict[str, Any]]] = {"empty": [], "history": []}
        for i in range(args.repeat):
            for kind, template in (("empty", empty), ("history", full)):
                work = tmp / f"{kind}{i}"
                link_tree(tmp / "maildir", work / "maildir")
                results[kind].append(run_child("--measure", str(work), now.isoformat(), copy_database(admin, template)))
                shutil.rmtree(work)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    e = min(results["empty"], key=lambda r: r["seconds"])
    h = min(results["history"], key=lambda r: r["seconds"])
    n = args.messages
    speed = e["seconds"] / h["seconds"]
    data = {
        "history_cases": held["closed"], "history_ids": held["ids"], "history_outbox": held["outbox"],
        "history_db_mb": held["mb"], "load_s": round(loaded, 1), "history_built_s": built and round(built, 1),
        "messages": n, "empty_s": round(e["seconds"], 3), "history_s": round(h["seconds"], 3),
        "speed_ratio": round(speed, 2), "speed_target": SPEED_TARGET, "ok": speed >= SPEED_TARGET,
        "reports_equal": e["report"] == h["report"], "report": h["report"],
        "all_empty_s": [round(r["seconds"], 3) for r in results["empty"]],
        "all_history_s": [round(r["seconds"], 3) for r in results["history"]],
        "private_cluster": server is not None,
    }
    emit(f"history on postgresql: {n} messages into an empty store vs one with {held['closed']:,} closed cases "
         f"and {held['ids']:,} Message-IDs ({held['outbox']:,} mails sent), best of {args.repeat}", [
        ("history database", f"{held['mb']:,} MB, loaded from the files store in {loaded:.0f} s "
                             f"({held['changed']:,} records)" + (f"; files store built in {built:.0f} s" if built else "")),
        ("empty store", f"{e['seconds']:.2f} s  {n / e['seconds']:,.0f} msg/s"),
        ("with history", f"{h['seconds']:.2f} s  {n / h['seconds']:,.0f} msg/s"),
        ("speed ratio", f"{speed:.2f}  (target ≥ {SPEED_TARGET}: {'OK' if speed >= SPEED_TARGET else 'MISSED'})"),
        ("same cycle report", str(data["reports_equal"])),
        ("all runs", f"empty {data['all_empty_s']}, history {data['all_history_s']}"),
    ], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
