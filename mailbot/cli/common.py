"""What every command shares: the --now and --config options, logging, JSON output, usage errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailbot.config import Settings, load


class UsageError(Exception):
    """Bad arguments: exit 2."""


def parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value!r}: expected ISO-8601 with offset, e.g. 2021-04-15T10:00:00+08:00") from None
    if d.tzinfo is None:
        raise UsageError(f"--now {value!r}: expected an offset, e.g. 2021-04-15T10:00:00+08:00")
    if not 1970 <= d.year <= 9000:  # the calendar counts years ahead: year 9999 has no next one
        raise UsageError(f"--now {value!r}: expected a year from 1970 to 9000")
    return d.astimezone(UTC)


def settings_of(args: argparse.Namespace) -> Settings:
    return load(Path(args.config))


def setup_logging(settings: Settings | None, debug: bool) -> None:
    level = logging.DEBUG if debug else getattr(logging, settings.bot.log_level if settings else "INFO")
    handler = logging.StreamHandler(sys.stderr)
    if settings is not None and settings.bot.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("mailbot")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                           "message": record.getMessage()}, ensure_ascii=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


# --- commands --------------------------------------------------------------------------------------
