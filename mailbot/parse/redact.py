"""Masks credentials that people paste into mail, before anything is stored, logged, rendered or sent."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Iterator

from mailbot.parse.secret_formats import _private_keys, _technical
from mailbot.parse.secret_labels import _KEYWORD, MASK, _label_starts, _labelled
from mailbot.parse.secret_tables import _secret_cells, _tables

__all__ = ["MASK", "contains_secret", "redact", "redact_html"]


def redact(text: str) -> str:
    """Return `text` with every credential we recognise replaced by a mask."""
    if not text:
        return text
    if "-----BEGIN " in text:
        text = _private_keys(text)
    text = _technical(text)
    text = _labelled(text)
    return _tables(text)


def contains_secret(text: str) -> bool:
    return redact(text) != text


# --- HTML parts: cells are masked in the markup, where the table's shape is still known ---------------
_CELL_TAG = re.compile(r"<(?P<close>/?)(?P<tag>tr|td|th|table)\b[^<>]{0,2000}>", re.I)  # ends at the next `<`
_TAG = re.compile(r"<[^<>]{0,2000}>")


def _cells(html: str) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """Each table row's cells as (start, end) of their inner markup; rows of one table share a number."""
    table, row, cell_start = 0, None, -1
    rows: list[tuple[int, list[tuple[int, int]]]] = []
    for m in _CELL_TAG.finditer(html):
        close, tag = m.group(1, 2)
        tag = tag.lower()
        if cell_start >= 0 and (tag in ("td", "th", "tr", "table")):
            if row is not None:
                row.append((cell_start, m.start()))
            cell_start = -1
        if tag == "table":
            table += 1
            row = None
        elif tag == "tr":
            row = None if close else []
            if not close:
                rows.append((table, row))
        elif not close:
            if row is None:
                row = []
                rows.append((table, row))
            cell_start = m.end()
    yield from rows


def _cell_text(fragment: str) -> str:
    if "<" in fragment:
        fragment = _TAG.sub(" ", fragment)
    if "&" in fragment:
        fragment = htmllib.unescape(fragment)
    return " ".join(fragment.split())


_ROW_BUDGET = 1_000  # rows read as a table; past it (a hostile mail), a cell after a label cell is masked


def redact_html(html: str) -> str:
    """Mask password cells of HTML tables (a header naming the column, or a label cell then its value), and
    any cell whose own text holds a labelled secret; the rest of the markup is left as it came."""
    if not html or not _label_starts(html):
        return html
    rows = list(_cells(html))
    if not rows:
        return html
    texts = [[_cell_text(html[s:e]) for s, e in cells] for _, cells in rows]
    replace: dict[tuple[int, int], str] = {}
    start = 0
    for r in range(1, min(len(rows), _ROW_BUDGET) + 1):
        if r == len(rows) or r == _ROW_BUDGET or rows[r][0] != rows[start][0]:
            for rr, c in _secret_cells(texts[start:r]):
                replace[rows[start + rr][1][c]] = MASK
            start = r
    for r in range(_ROW_BUDGET, len(rows)):
        for c in range(len(texts[r]) - 1):
            if _KEYWORD.search(texts[r][c].lower()):
                replace[rows[r][1][c + 1]] = MASK
    # A cell's own `密码：x` is masked too: one redact() over every cell, a line each (cell text holds no newline).
    spans = [span for _, cells in rows for span in cells]
    flat = [t for row in texts for t in row]
    for span, before, after in zip(spans, flat, redact("\n".join(flat)).split("\n"), strict=False):
        if span not in replace and after != before:
            replace[span] = htmllib.escape(after, quote=False)
    if not replace:
        return html
    out, pos = [], 0
    for (s, e), new in sorted(replace.items()):
        out.append(html[pos:s] + new)
        pos = e
    out.append(html[pos:])
    return "".join(out)
