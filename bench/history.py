"""History independence: the ingest of bench/ingest.py into a store that already holds 100,000 closed cases
and 500,000 Message-IDs (and the 200,000 mails the bot sent for them), against the same ingest into an empty store. Targets (issue 7): speed ≥ 0.8 × the
empty store's, peak RSS ≤ 200 MB.

    .venv/bin/python bench/history.py [--cases 100000] [--ids-per-case 5] [--sent-per-case 2]
                                      [--messages 2000] [--threads 400]
                                      [--repeat 1] [--cache DIR] [--json]

The history store is built through the Store API (one commit per group of case shards) and kept in
--cache DIR for the next run. Each measured ingest runs in a fresh subprocess (so the build's memory does
not count) on a hard-link copy of the store and of the Maildir (both only ever replace files, never edit
them, so the originals stay intact); RSS is the subprocess's own ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cached_store_is_current,
    emit,
    fill_store,
    generate,
    history_case,
    last_date,
    link_tree,
    peak_rss_mb,
    timed_ingest,
    tree_size,
    vm_hwm_mb,
    workers_peak_rss_mb,
    write_maildir,
)

from mailbot.store import Store  # noqa: E402

SPEED_TARGET, RSS_TARGET = 0.8, 200.0


def build(root: Path, cases: int, ids_per_case: int, sent_per_case: int = 2) -> float:
    rng = random.Random(11)
    start = time.perf_counter()
    store = Store(root)
    opened = datetime(2021, 1, 4, 1, 0, tzinfo=UTC)

    def past():
        for i in range(cases):
            yield history_case(i, rng, opened=opened + timedelta(minutes=7 * i), entries=ids_per_case)

    fill_store(store, past())
    # The outbox ledger's history: a reminder and a closure per case, sent (no raw bytes kept).
    for i in range(cases):
        key = f"CAS-{i % 100000:05d}-Z{i % 100000:05d}"  # as history_case names them
        for n in range(sent_per_case):
            action = f"{key}/{'closure' if n == sent_per_case - 1 else f'reminder/{n + 1}'}/history"
            store.outbox_record({"action_id": action, "case": key, "kind": "reminder", "attempts": 1,
                                 "message_id": f"<mailbot.h{i}-{n}@support.example>", "raw": "",
                                 "recipients": [f"user{i}@customer.example"], "sender": "casebot@support.example",
                                 "subject": f"[案例号: {key} ] % 历史案例 %", "recorded": "2021-06-01T09:00:00+08:00",
                                 "text": "杨先生，您好：我们电话未能联系上您，请问问题现在进展如何？" * 4})
            store.outbox_finish(action, "sent", sent="2021-06-01T09:00:01+08:00", refused=[])
        if i % 10_000 == 9_999:
            store.commit()
    store.commit()
    return time.perf_counter() - start


def cached_history(cache: Path, cases: int, ids_per_case: int, sent_per_case: int) -> tuple[Path, float | None]:
    """The history store kept in `cache` (built first, in a subprocess, when missing or of an older layout);
    returns its path and the build's seconds (None: reused). bench/store_roundtrip.py and history_pg.py share it."""
    history = cache / f"store-{cases}x{ids_per_case}-s{sent_per_case}"
    if cached_store_is_current(history):
        return history, None
    if history.exists():
        shutil.rmtree(history)
    # In a subprocess, so that the caller stays small (children inherit its ru_maxrss).
    built = run_child("--build", str(history), "--cases", str(cases), "--ids-per-case", str(ids_per_case),
                      "--sent-per-case", str(sent_per_case))["seconds"]
    return history, float(built)  # type: ignore[arg-type]


def measure(work: Path, now: datetime) -> dict[str, object]:
    """In the subprocess: one run_once into work/state/store over work/maildir."""
    seconds, report, store = timed_ingest(work, now)
    return {"seconds": seconds, "report": report.as_dict(), "rss_mb": peak_rss_mb(), "hwm_mb": vm_hwm_mb(),
            "workers_rss_mb": workers_peak_rss_mb(),
            **store.index_stats()}


def run_child(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--ids-per-case", type=int, default=5)
    ap.add_argument("--sent-per-case", type=int, default=2)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cache", type=Path, help="keep the built history store here and reuse it")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--measure", nargs=2, metavar=("WORKDIR", "NOW"), help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), datetime.fromisoformat(args.measure[1]))))
        return 0
    if args.build:
        print(json.dumps({"seconds": build(args.build, args.cases, args.ids_per_case, args.sent_per_case), "rss_mb": peak_rss_mb()}))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-history-"))
    try:
        history, built = cached_history(args.cache or tmp / "history", args.cases, args.ids_per_case,
                                        args.sent_per_case)
        files, size = tree_size(history)
        mails = generate(args.messages, args.threads, args.seed)
        now = last_date(mails) + timedelta(minutes=10)
        write_maildir(tmp / "maildir", mails)
        empty, full = [], []
        for i in range(args.repeat):
            for kind, results in (("empty", empty), ("history", full)):
                work = tmp / f"{kind}{i}"
                link_tree(tmp / "maildir", work / "maildir")
                if kind == "history":
                    link_tree(history, work / "state" / "store")
                results.append(run_child("--measure", str(work), now.isoformat()))
                shutil.rmtree(work)
    finally:
        if args.cache is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / "maildir", ignore_errors=True)
            for p in tmp.glob("*"):
                shutil.rmtree(p, ignore_errors=True)
            tmp.rmdir()
    e = min(empty, key=lambda r: r["seconds"])
    h = min(full, key=lambda r: r["seconds"])
    n = args.messages
    speed = e["seconds"] / h["seconds"]
    rss = max(r["rss_mb"] for r in full)
    data = {
        "history_cases": args.cases, "history_ids": args.cases * args.ids_per_case,
        "history_sent": args.cases * args.sent_per_case,
        "history_store_files": files, "history_store_mb": round(size / 2**20), "build_s": built and round(built, 1),
        "messages": n, "empty_s": round(e["seconds"], 3), "history_s": round(h["seconds"], 3),
        "empty_msg_s": round(n / e["seconds"]), "history_msg_s": round(n / h["seconds"]),
        "speed_ratio": round(speed, 2), "speed_target": SPEED_TARGET,
        "empty_rss_mb": round(max(r["rss_mb"] for r in empty)), "history_rss_mb": round(rss),
        "history_vm_hwm_mb": h["hwm_mb"] and round(h["hwm_mb"]),
        "history_worker_rss_mb": round(max(r["workers_rss_mb"] for r in full)),
        "rss_target_mb": RSS_TARGET, "ok": speed >= SPEED_TARGET and rss <= RSS_TARGET,
        "report": h["report"], "id_runs_after": h["runs"],
        "all_empty_s": [round(r["seconds"], 3) for r in empty], "all_history_s": [round(r["seconds"], 3) for r in full],
    }
    emit(f"history: {n} messages into an empty store vs one with {args.cases:,} closed cases and "
         f"{args.cases * args.ids_per_case:,} Message-IDs ({args.cases * args.sent_per_case:,} mails sent), "
         f"best of {args.repeat}", [
        ("history store", f"{files:,} files, {size / 2**20:,.0f} MB" + (f" (built in {built:.0f} s)" if built else "")),
        ("empty store", f"{e['seconds']:.2f} s  {n / e['seconds']:,.0f} msg/s  peak RSS {e['rss_mb']:.0f} MB"),
        ("with history", f"{h['seconds']:.2f} s  {n / h['seconds']:,.0f} msg/s  peak RSS {h['rss_mb']:.0f} MB"),
        ("speed ratio", f"{speed:.2f}  (target ≥ {SPEED_TARGET}: {'OK' if speed >= SPEED_TARGET else 'MISSED'})"),
        ("peak RSS", f"{rss:.0f} MB  (target ≤ {RSS_TARGET:.0f} MB: {'OK' if rss <= RSS_TARGET else 'MISSED'}); "
                     f"each parse worker ≤ {max(r['workers_rss_mb'] for r in full):.0f} MB, shared pages included"),
        ("cycle", ", ".join(f"{k} {v}" for k, v in h["report"].items() if v)),
    ], args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
