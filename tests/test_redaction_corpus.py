"""Redaction measured on a labelled set of realistic support mail (tests/data/redaction/labelled.jsonl):
recall of the secrets, false positives on look-alikes, and time that grows linearly with hostile input."""

from __future__ import annotations

import gc
import time
from collections import Counter

import pytest
from redaction_corpus import HTML_SHAPES, SHAPES, hostile_shapes, load, score

from mailbot.parse.htmltext import html_to_text
from mailbot.parse.redact import redact, redact_html


def test_the_labelled_set_covers_both_languages_and_the_look_alikes() -> None:
    examples = load()
    langs = Counter(e.lang for e in examples)
    assert len(examples) >= 150 and langs["zh"] >= 60 and langs["en"] >= 60
    assert sum(not e.secrets for e in examples) >= 40
    assert {"technical", "table", "html", "spaces", "code", "phrasing"} <= {e.category for e in examples}
    assert len({e.id for e in examples}) == len(examples)
    for e in examples:  # a label must point at text that is there, or the score measures nothing
        assert all(s in e.text or s.replace("&", "&amp;") in e.text for s in e.secrets), e.id
        assert all(k in e.text or e.format == "html" for k in e.keep), e.id


def test_recall_and_false_positives_on_the_labelled_set() -> None:
    sc = score(load())
    print("\n" + sc.line("labelled set"))  # `pytest -s` shows the figures docs/security.md quotes
    for line in sc.misses + sc.false_positives:
        print("  " + line)
    assert sc.recall >= 0.95, sc.misses
    assert sc.false_positive_rate <= 0.05, sc.false_positives
    assert sc.overmask_rate <= 0.05, sc.false_positives


def _best_of_3(fn, text: str) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    gc.collect()
    gc.disable()  # a collection landing in one run is noise, not growth
    try:
        for _ in range(3):
            start = time.perf_counter()
            fn(text)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def _html_path(html: str) -> str:
    return redact(html_to_text(redact_html(html)))


# The shapes of the issue (`mysql ` × 16,000, a run of `-eyJ`, `密码` and `password=` repeated, one long line)
# and those that stress the label, table and HTML paths; bench/redaction.py times them all.
_SCALING = ("mysql ×", "-eyJ + base64", "密码 ×", "密码： ×", "password= ×", "one line, no newline",
            "label + 1 MB blanks", "tab table of 密码", "admin / ×", "<td>密码</td> ×", "<td + letters")


def test_redaction_time_grows_linearly_with_hostile_input() -> None:
    """A scaling check, not a stopwatch: 4× the input may take at most 8× the time (quadratic would be 16×).
    Each shape starts at the size where one run takes 50 ms or more (timer noise is not growth)."""
    ratios = {}
    for fn, shapes in ((redact, SHAPES), (_html_path, HTML_SHAPES)):
        for name in [n for n in shapes if n in _SCALING]:
            n = 100_000
            while (t1 := _best_of_3(fn, shapes[name](n))) < 0.05 and n < 1_600_000:
                n *= 2
            ratio = _best_of_3(fn, shapes[name](4 * n)) / t1
            if ratio >= 8:  # other processes share this machine: measure once more before calling it growth
                ratio = min(ratio, _best_of_3(fn, shapes[name](4 * n)) / _best_of_3(fn, shapes[name](n)))
            ratios[f"{name} ({n // 1000} KB)"] = round(ratio, 1)
    print("\n4×-size time ratios:", ratios)
    assert {name: r for name, r in ratios.items() if r >= 8} == {}


@pytest.mark.parametrize("name", sorted(hostile_shapes(10)))
def test_hostile_shapes_leave_no_label_value_behind(name: str) -> None:
    text = hostile_shapes(20_000)[name]
    once = redact(text)
    assert redact(once) == once  # stable: what was left is not a half-masked credential
