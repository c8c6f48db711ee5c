"""Small text helpers every step shares: a value on one line, a moment as people read it where they are."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def one_line(text: str | bytes, limit: int | None = None) -> str:
    """`text` on one line: each run of whitespace (line breaks included) becomes one space. With `limit`,
    at most that many characters, the last an ellipsis when cut. Bytes (a server's reply) are read as
    UTF-8, an undecodable byte as U+FFFD."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = " ".join(text.split())
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"


def local_time(moment: datetime, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """`moment` on the clock of `zone` (the bot's, or a case's `#timezone`)."""
    return moment.astimezone(zone).strftime(fmt)
