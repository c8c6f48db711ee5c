"""The `store dump` → `store load` round trip of the history store (issue 15): the 100,000-closed-case files store
of bench/history.py → dump → a fresh PostgreSQL database → dump → a fresh files store, with `cases --json`
compared at each step and each load repeated (target: identical `cases --json`; a second load changes 0).

    .venv/bin/python bench/store_roundtrip.py [--cases 100000] [--ids-per-case 5] [--sent-per-case 2]
                                              [--cache DIR] [--dsn postgresql://...] [--cli-cases 300] [--json]

The history store is bench/history.py's, kept in --cache DIR (the same DIR as history.py's: built once). Dump
and load run in-process through the library functions the CLI calls (mailbot.store.dump); `cases --json` is
built with the CLI's functions (views.filter_cases, views.case_json) over every case and compared by a SHA-256
of its JSON. The dumps are compared too, as multisets of lines (engines list records in their own order).
Then the real CLI does the same round trip once on a small store (--cli-cases; 0: skipped). Without --dsn a
private cluster is started (fsync off, as the tests' cluster).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from common import emit, settings_for  # noqa: E402
from history import build, cached_history  # noqa: E402
from store_pg import new_database  # noqa: E402

from mailbot.cli import views  # noqa: E402
from mailbot.store.dump import dump_lines, load, parse_lines  # noqa: E402
from mailbot.store.files import Store  # noqa: E402
from mailbot.store.postgresql import PostgresStore  # noqa: E402
from mailbot.store.secret import ensure_message_id_secret  # noqa: E402

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # `cases` without --overdue does not depend on it


def listing(store: Any) -> tuple[int, str]:
    """(cases, SHA-256 of `cases --json`), made as cmd_cases makes it: every case, filter_cases's order."""
    zone = settings_for(Path(tempfile.gettempdir())).bot.zone
    cases = views.filter_cases(list(store.all_cases()), status=None, engineer=None, overdue=False, now=NOW)
    digest = hashlib.sha256()
    for case in cases:
        digest.update(json.dumps(views.case_json(case, zone), ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return len(cases), digest.hexdigest()


def write_dump(store: Any, path: Path) -> tuple[float, str]:
    """Seconds to write the dump (as `store dump FILE` writes it), and a digest of its lines as a multiset."""
    start = time.perf_counter()
    with open(path, "w", encoding="utf-8") as out:
        for line in dump_lines(store):
            out.write(line)
    seconds = time.perf_counter() - start
    with open(path, encoding="utf-8") as f:
        lines = sorted(hashlib.sha1(line.encode()).digest() for i, line in enumerate(f) if i)  # past the header
    return seconds, hashlib.sha256(b"".join(lines)).hexdigest()


def read_dump(path: Path, kinds: Counter[str]) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for record in parse_lines(f):
            kinds[record.get("kind", "?")] += 1
            yield record


def timed_load(store: Any, path: Path) -> tuple[float, int, Counter[str]]:
    kinds: Counter[str] = Counter()
    start = time.perf_counter()
    changed = load(store, read_dump(path, kinds))
    return time.perf_counter() - start, changed, kinds


def cli_round_trip(base: Path, admin: str, cases: int) -> dict[str, Any]:
    """The real commands on a small store: files `store dump` → postgresql `store load` (twice) → `store dump`
    → files `store load`; `cases --json` of the three stores compared as printed."""
    def config(name: str, kind: str) -> Path:
        root = base / name
        root.mkdir(parents=True)
        text = (f'[bot]\naddress = "casebot@support.example"\nstate_dir = "{root / "state"}"\n'
                f'[engineers]\ndomains = ["support.example"]\n[mailbox]\nkind = "maildir"\npath = "{root / "maildir"}"\n'
                f'[store]\nkind = "{kind}"\n')
        (root / "config.toml").write_text(text, encoding="utf-8")
        return root / "config.toml"

    env = {**os.environ, "MAILBOT_DATABASE_URL": new_database(admin)}
    mailbot = [sys.executable, "-c", "import sys; from mailbot.cli.main import main; sys.exit(main())"]

    def run(conf: Path, *args: str) -> str:
        done = subprocess.run([*mailbot, "--config", str(conf), *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mailbot {' '.join(args)}: {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    source, pg, back = config("source", "files"), config("pg", "postgresql"), config("back", "files")
    build(source.parent / "state" / "store", cases, 5, 2)
    start = time.perf_counter()
    run(source, "store", "dump", str(base / "one.jsonl"))
    loads = [run(pg, "store", "load", str(base / "one.jsonl")).strip() for _ in range(2)]
    run(pg, "store", "dump", str(base / "two.jsonl"))
    back_loads = [run(back, "store", "load", str(base / "two.jsonl")).strip() for _ in range(2)]
    seconds = time.perf_counter() - start
    listed = [json.loads(run(conf, "cases", "--json")) for conf in (source, pg, back)]
    return {"cases": len(listed[0]), "seconds": round(seconds, 2), "loads": loads + back_loads,
            "identical": listed[0] == listed[1] == listed[2] and len(listed[0]) == cases,
            "second_load_unchanged": all(line.endswith("0 records changed (already loaded)")
                                         for line in (loads[1], back_loads[1]))}


def progress(t: dict[str, float]) -> None:
    """The steps so far, on stderr (the whole round trip takes minutes)."""
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--ids-per-case", type=int, default=5)
    ap.add_argument("--sent-per-case", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="bench/history.py's --cache: keep the history store here")
    ap.add_argument("--dsn", help="an admin DSN of a server to create the bench databases on")
    ap.add_argument("--cli-cases", type=int, default=300, help="cases of the small store the real CLI moves")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    server = None
    admin = args.dsn
    if admin is None:
        from tests.pg_server import PostgresServer, pg_bindir

        bindir = pg_bindir()
        if bindir is None:
            sys.exit("store_roundtrip: PostgreSQL is not installed (scripts/ensure-postgres.sh) and no --dsn given")
        server = PostgresServer(bindir)
        server.start()
        admin = server.dsn
    t: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mailbot-bench-roundtrip-") as tmp:
            base = Path(tmp)
            history, built = cached_history(args.cache or base / "history", args.cases, args.ids_per_case,
                                            args.sent_per_case)
            source = Store(history)  # read: dump writes nothing
            # As `mailbot run` leaves a store: with its Message-ID secret (a PostgreSQL database makes its own at
            # its migration; the dump's must replace it, or the two dumps differ by it). One checkpoint write.
            ensure_message_id_secret(source)
            start = time.perf_counter()
            n_source, want = listing(source)
            t["listing"] = time.perf_counter() - start
            t["dump_files"], dump_one = write_dump(source, base / "one.jsonl")
            progress(t)
            dump_mb = (base / "one.jsonl").stat().st_size / 2**20
            del source

            pg = PostgresStore(new_database(admin))
            t["load_postgresql"], changed_pg, kinds = timed_load(pg, base / "one.jsonl")
            progress(t)
            t["load_postgresql_again"], again_pg, _ = timed_load(pg, base / "one.jsonl")
            n_pg, got_pg = listing(pg)
            t["dump_postgresql"], dump_two = write_dump(pg, base / "two.jsonl")
            pg.close()
            progress(t)

            back = Store(base / "back")
            t["load_files"], changed_files, _ = timed_load(back, base / "two.jsonl")
            progress(t)
            t["load_files_again"], again_files, _ = timed_load(back, base / "two.jsonl")
            n_back, got_back = listing(Store(base / "back"))  # as a new process would read it
            cli = cli_round_trip(base / "cli", admin, args.cli_cases) if args.cli_cases else None
    finally:
        if server is not None:
            server.stop()
    records = sum(kinds.values()) - kinds["dump"]
    identical = want == got_pg == got_back and n_source == n_pg == n_back == args.cases
    data = {
        "cases": args.cases, "records": records, "records_by_kind": dict(kinds), "dump_mb": round(dump_mb),
        "history_built_s": built and round(built, 1), **{f"{k}_s": round(v, 2) for k, v in t.items()},
        "changed_first_load_postgresql": changed_pg, "changed_second_load_postgresql": again_pg,
        "changed_first_load_files": changed_files, "changed_second_load_files": again_files,
        "cases_json_identical": identical, "dumps_identical": dump_one == dump_two,
        "cli": cli, "private_cluster": server is not None,
    }
    yes = {True: "yes", False: "NO"}
    emit(f"store round trip: {args.cases:,} closed cases, files → postgresql → files", [
        ("records", f"{records:,} (" + ", ".join(f"{k} {v:,}" for k, v in kinds.items() if k != "dump") +
                    f"); dump {dump_mb:,.0f} MB" + (f"; history store built in {built:.0f} s" if built else "")),
        ("cases --json (files)", f"{t['listing']:.1f} s for {n_source:,} cases"),
        ("store dump (files)", f"{t['dump_files']:.1f} s"),
        ("store load → postgresql", f"{t['load_postgresql']:.1f} s, {changed_pg:,} records changed "
                                     f"({records / t['load_postgresql']:,.0f} records/s)"),
        ("load again", f"{t['load_postgresql_again']:.1f} s, {again_pg} records changed"),
        ("store dump (postgresql)", f"{t['dump_postgresql']:.1f} s"),
        ("store load → files", f"{t['load_files']:.1f} s, {changed_files:,} records changed"),
        ("load again", f"{t['load_files_again']:.1f} s, {again_files} records changed"),
        ("cases --json identical", f"{yes[identical]} (files, postgresql, files again: {n_source:,} / {n_pg:,} / "
                                   f"{n_back:,} cases)"),
        ("dumps identical", f"{yes[dump_one == dump_two]} (as multisets of records)"),
        ("second loads change 0", yes[again_pg == 0 and again_files == 0]),
        ("real CLI, small store", "skipped" if cli is None else
         f"{cli['cases']} cases, dump/load/load/dump/load/load {cli['seconds']:.1f} s; cases --json identical: "
         f"{yes[cli['identical']]}; second loads change 0: {yes[cli['second_load_unchanged']]}"),
    ], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
