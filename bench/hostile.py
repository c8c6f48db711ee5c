"""Mail built to be slow: parse() time of each hostile shape at growing sizes. Linear code keeps the time
per KB flat; a quadratic step shows as a time that quadruples when the size doubles.

    .venv/bin/python bench/hostile.py [--sizes 20,40,80] [--json]

The shapes are the ones an audit found quadratic before 2026-12-02 (mail-parser-reply on long whitespace
runs, html.parser on unclosed comments and tags, the References duplicate check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbot.parse import parse  # noqa: E402

HEAD = b"From: a@example.test\r\nMessage-ID: <m@example.test>\r\nSubject: x\r\n"


def text_mail(body: str) -> bytes:
    return HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()


def html_mail(body: str) -> bytes:
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode()


SHAPES: dict[str, Callable[[int], bytes]] = {
    "spaces in one line": lambda kb: text_mail("mysql" + " " * (kb * 1024) + "x"),
    "blank lines": lambda kb: text_mail("a" + "\n" * (kb * 1024) + "b"),
    "unclosed <!-- in HTML": lambda kb: html_mail("<!--" * (kb * 256)),
    "unclosed <a in HTML": lambda kb: html_mail("<a " * (kb * 341)),
    "References of many ids": lambda kb: HEAD + b"References: " + b" ".join(
        f"<id{n}@example.test>".encode() for n in range(kb * 48)) + b"\r\n\r\nbody\r\n",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20,40,80", help="KB, comma-separated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict[int, float]] = {}
    for name, make in SHAPES.items():
        results[name] = {}
        for kb in sizes:
            raw = make(kb)
            start = time.perf_counter()
            parse(raw)
            results[name][kb] = time.perf_counter() - start
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("hostile mail: parse() seconds by size")
    print(f"  {'shape':<26}" + "".join(f"{str(kb) + ' KB':>10}" for kb in sizes))
    for name, times in results.items():
        print(f"  {name:<26}" + "".join(f"{times[kb]:>10.3f}" for kb in sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
