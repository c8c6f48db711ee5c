"""The stdlib's MIME parser (email.feedparser) in a copy of our own, whose boundary lines are matched without
compiling a regex for each boundary.

For every multipart, feedparser compiles `(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \\t]*)(?P<linesep>…)?$`:
boundaries are unique, so the `re` cache never helps, and compiling took a sixth of mail-parser's own time
(0.12 ms a multipart). Our copy of the module (loaded from the same source file, so every other line of it is
the stdlib's) gets a `re` whose `compile` answers that one pattern with _BoundaryLine, which matches as the
pattern does; any other pattern is compiled by `re` as before. The stdlib's own module is left alone:
nothing else in the process, mail-parser included, sees a difference.
"""

from __future__ import annotations

import importlib.util
import re
from email._policybase import compat32
from email.message import Message
from types import ModuleType
from typing import Any

_PREFIX = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_ESCAPED = re.compile(r"\\(.)", re.S)  # re.escape puts a backslash before each special character
_LINESEPS = ("\r\n", "\r", "\n")  # the pattern's alternatives, in its order


class _BoundaryMatch:
    """What feedparser reads of a match: it is true, and its groups by name."""

    __slots__ = ("groups",)

    def __init__(self, sep: str, end: str | None, ws: str, linesep: str | None) -> None:
        self.groups = {"sep": sep, "end": end, "ws": ws, "linesep": linesep}

    def group(self, name: str) -> str | None:
        return self.groups[name]


def _tail(text: str) -> tuple[str, str | None] | None:
    """`(?P<ws>[ \\t]*)(?P<linesep>\\r\\n|\\r|\\n)?$` matched at the start of `text` (`$`: the end, or before a
    last `\\n`): (ws, linesep), or None. The blanks are taken greedily; giving one back leaves a blank where
    only a line break or the end may be, so the pattern never does."""
    rest = text.lstrip(" \t")
    ws = text[: len(text) - len(rest)]
    for linesep in _LINESEPS:
        if rest.startswith(linesep) and rest[len(linesep) :] in ("", "\n"):
            return ws, linesep
    return (ws, None) if rest in ("", "\n") else None


class _BoundaryLine:
    """The compiled boundary pattern, for `.match(line)`: the separator at the start of the line, `--` when
    what follows it allows (the pattern tries `--` first, then without it), blanks, a line break."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> _BoundaryMatch | None:
        if not line.startswith(self.separator):
            return None
        rest = line[len(self.separator) :]
        if rest.startswith("--") and (tail := _tail(rest[2:])) is not None:
            return _BoundaryMatch(self.separator, "--", *tail)
        if (tail := _tail(rest)) is not None:
            return _BoundaryMatch(self.separator, None, *tail)
        return None


def _separator(pattern: str) -> str | None:
    """The separator a boundary pattern was built from, or None for any other pattern."""
    if not (pattern.startswith(_PREFIX) and pattern.endswith(_SUFFIX)):
        return None
    escaped = pattern[len(_PREFIX) : -len(_SUFFIX)]
    separator = _ESCAPED.sub(r"\1", escaped)
    return separator if re.escape(separator) == escaped else None  # exactly what feedparser built


class _FeedRe:
    """`re` as our feedparser copy sees it."""

    escape = staticmethod(re.escape)

    @staticmethod
    def compile(pattern: str, flags: int = 0) -> Any:
        separator = _separator(pattern) if not flags else None
        return _BoundaryLine(separator) if separator is not None else re.compile(pattern, flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def _own_feedparser() -> ModuleType:
    spec = importlib.util.find_spec("email.feedparser")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)  # not put in sys.modules: nobody else imports it
    spec.loader.exec_module(module)
    module.re = _FeedRe()  # its module-level patterns are compiled already; only _parsegen calls re after
    return module


_FEEDPARSER = _own_feedparser()


def parse_text(text: str) -> Message:
    """`email.parser.Parser().parsestr(text)`: the same parser, fed the same 8,192-character pieces."""
    parser = _FEEDPARSER.FeedParser(policy=compat32)
    for start in range(0, len(text), 8192):
        parser.feed(text[start : start + 8192])
    message: Message = parser.close()
    return message


def message_from_bytes(raw: bytes) -> Message:
    """`email.message_from_bytes(raw)` (compat32): bytes read as ASCII, 8-bit bytes kept as surrogates."""
    return parse_text(raw.decode("ascii", "surrogateescape"))
