"""Ingest throughput: `Service.run_once` over a Maildir into a fresh on-disk store, against mail-parser alone on
the same files in the same run. Target (issue 7): ingest total time ≤ 1.5 × mail-parser's time.

    .venv/bin/python bench/ingest.py [--messages 2000] [--threads 400] [--seed 7] [--repeat 3] [--json]
                                     [--parse-workers 0] [--profile FILE.prof] [--no-reference]

The ingest is `run --once` as configured by default: `[bot] parse_workers = 0`, one parse worker per core
(mailbot/parse/pool.py). For reference the same ingest is also measured with everything in the bot's own
process (`parse_workers = 1`) and as a command (`--no-reference` skips both). With --repeat N each is measured
N times and the best of each is kept.

On a machine shared with other work the two best times may come from different minutes, so each ingest is
also held against mail-parser's time measured right before and right after it (their mean): mail-parser,
ingest, mail-parser, ingest, …, mail-parser. The min and median of those ratios are printed beside the
ratio of the best times.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import copy_maildir, emit, generate, last_date, time_mailparser, timed_ingest, write_maildir  # noqa: E402

from mailbot.parse.pool import make_parser  # noqa: E402

TARGET = 1.5


def time_command(work: Path, source: Path, now: datetime, parse_workers: int) -> float:
    """`mailbot run --once` as a user runs it: a new process (interpreter start, imports, config) and the run."""
    copy_maildir(source, work / "maildir")
    (work / "config.toml").write_text(
        f'[bot]\naddress = "casebot@support.example"\nname = "casebot"\nstate_dir = "state"\n'
        f'parse_workers = {parse_workers}\n[engineers]\ndomains = ["support.example"]\n'
        f'[mailbox]\nkind = "maildir"\npath = "maildir"\n', encoding="utf-8")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mailbot.cli", "run", "--once", "--config", "config.toml",
                    "--now", now.isoformat()], cwd=work, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--parse-workers", type=int, default=0, help="[bot] parse_workers for the measured ingest")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the (last) ingest here")
    ap.add_argument("--no-reference", action="store_true",
                    help="measure only mail-parser and the ingest (no in-process run, no command)")
    args = ap.parse_args(argv)

    mails = generate(args.messages, args.threads, args.seed)
    now = last_date(mails) + timedelta(minutes=10)
    raws = [m.raw for m in mails]
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-") as tmp:
        base = Path(tmp)
        write_maildir(base / "source", mails)
        time_mailparser(raws[:50])  # warm-up: imports, codec lookups
        parse_times, ingest_times, single_times, command_times = [], [], [], []
        report = None
        gc.collect()
        parse_times.append(time_mailparser(raws))
        for i in range(args.repeat):
            work = base / f"run{i}"
            copy_maildir(base / "source", work / "maildir")
            gc.collect()
            profiler = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
            if profiler:
                profiler.enable()
            seconds, report, store = timed_ingest(work, now, parse_workers=args.parse_workers)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            ingest_times.append(seconds)
            gc.collect()
            parse_times.append(time_mailparser(raws))  # after this ingest, before the next
            if args.no_reference:
                continue
            if args.parse_workers != 1:
                single = base / f"single{i}"
                copy_maildir(base / "source", single / "maildir")
                gc.collect()
                single_times.append(timed_ingest(single, now, parse_workers=1)[0])
            command_times.append(time_command(base / f"command{i}", base / "source", now, args.parse_workers))
        store_bytes = sum(p.stat().st_size for p in (work / "state" / "store").rglob("*") if p.is_file())
        store_files = sum(1 for p in (work / "state" / "store").rglob("*.json"))
        assert report is not None
    parse_s, ingest_s = min(parse_times), min(ingest_times)
    single_s = min(single_times) if single_times else ingest_s
    command_s = min(command_times) if command_times else float("nan")
    # each ingest against the mean of the mail-parser runs on either side of it
    run_ratios = [x / ((parse_times[i] + parse_times[i + 1]) / 2) for i, x in enumerate(ingest_times)]
    workers = make_parser(args.parse_workers).workers
    n = len(mails)
    ratio = ingest_s / parse_s
    data = {
        "messages": n, "threads": args.threads, "mean_size_kb": round(sum(map(len, raws)) / n / 1024, 1),
        "mailparser_s": round(parse_s, 3), "mailparser_msg_s": round(n / parse_s),
        "ingest_s": round(ingest_s, 3), "ingest_msg_s": round(n / ingest_s),
        "ratio": round(ratio, 2), "target_ratio": TARGET, "ok": ratio <= TARGET, "parse_workers": workers,
        "in_process_s": round(single_s, 3), "in_process_ratio": round(single_s / parse_s, 2),
        "command_s": round(command_s, 3), "command_ratio": round(command_s / parse_s, 2),
        "report": report.as_dict(), "store_files": store_files, "store_mb": round(store_bytes / 2**20, 1),
        "all_mailparser_s": [round(x, 3) for x in parse_times], "all_ingest_s": [round(x, 3) for x in ingest_times],
        "run_ratios": [round(r, 2) for r in run_ratios], "run_ratio_min": round(min(run_ratios), 2),
        "run_ratio_median": round(statistics.median(run_ratios), 2),
    }
    emit(f"ingest: {n} messages in {args.threads} threads ({data['mean_size_kb']} KB mean), best of {args.repeat}", [
        ("mail-parser alone", f"{parse_s:.2f} s  {n / parse_s:,.0f} msg/s"),
        (f"full ingest (run_once, {workers} parse workers)", f"{ingest_s:.2f} s  {n / ingest_s:,.0f} msg/s"),
        ("ratio ingest/parse", f"{ratio:.2f}  (target ≤ {TARGET}: {'OK' if ratio <= TARGET else 'MISSED'})"),
        ("each run against its neighbours", f"min {min(run_ratios):.2f}  median {statistics.median(run_ratios):.2f}  "
                                            f"({', '.join(f'{r:.2f}' for r in run_ratios)})"),
        *([] if args.no_reference else [
            ("the same as a command", f"{command_s:.2f} s  (ratio {command_s / parse_s:.2f}): `mailbot run --once`, "
                                      "process start and imports included"),
            ("for reference: all in-process",
             f"{single_s:.2f} s  {n / single_s:,.0f} msg/s  (ratio {single_s / parse_s:.2f})")]),
        ("cycle", ", ".join(f"{k} {v}" for k, v in report.as_dict().items() if v)),
        ("store after", f"{store_files} files, {store_bytes / 2**20:.1f} MB"),
    ], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
