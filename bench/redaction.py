"""Redaction: recall and false positives on the labelled set per language and category, and seconds per
hostile shape and size (every step must stay linear: a 1 MB mail of any shape in well under a second).

    .venv/bin/python bench/redaction.py [--sizes 250000,1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from redaction_corpus import hostile_html, hostile_shapes, load, score  # noqa: E402

from mailbot.parse.htmltext import html_to_text  # noqa: E402
from mailbot.parse.redact import redact, redact_html  # noqa: E402


def timed(fn: Callable[[str], str], text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="250000,1000000")
    args = ap.parse_args()
    examples = load()
    print(f"labelled set: {len(examples)} examples")
    print(score(examples).line("all"))
    for lang in sorted({e.lang for e in examples}):
        print(score(e for e in examples if e.lang == lang).line(f"  {lang}"))
    for cat in sorted({e.category for e in examples}):
        for lang in sorted({e.lang for e in examples}):
            subset = [e for e in examples if e.category == cat and e.lang == lang]
            if subset:
                print(score(subset).line(f"  {lang} {cat}"))
    sizes = [int(s) for s in args.sizes.split(",")]
    print("\nseconds per hostile shape (best of 3): " + "  ".join(f"{s:>10,}" for s in sizes))

    def html_path(html: str) -> str:
        return redact(html_to_text(redact_html(html)))

    for fn, shapes in ((redact, hostile_shapes), (html_path, hostile_html)):
        for name in shapes(1000):
            cells = [timed(fn, shapes(size)[name]) for size in sizes]
            print(f"  {name:<24}" + "  ".join(f"{c:>10.3f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
