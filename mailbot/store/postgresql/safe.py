"""Text PostgreSQL cannot hold (NUL, lone surrogates from undecodable mail bytes), escaped reversibly.

PostgreSQL text and jsonb refuse U+0000 and unpaired surrogates, but a hostile mail can put both into a
case's timeline or an outgoing mail's raw text (kept as surrogate escapes). Such strings are rewritten with
U+E000 as the escape character; a document holding one carries `"_pgesc": true`, so clean documents (nearly
all) are read back without a walk.
"""

from __future__ import annotations

import json
import re
from typing import Any

ESC = "\ue000"
_BAD = re.compile("[\x00\ue000\ud800-\udfff]")
_ESCAPED = re.compile("\ue000(?:\ue000|0|s[0-9a-f]{4})")
MARK = "_pgesc"


def _escape_one(m: re.Match[str]) -> str:
    c = m.group(0)
    if c == ESC:
        return ESC + ESC
    if c == "\x00":
        return ESC + "0"
    return f"{ESC}s{ord(c):04x}"


def _unescape_one(m: re.Match[str]) -> str:
    s = m.group(0)
    if s[1] == ESC:
        return ESC
    if s[1] == "0":
        return "\x00"
    return chr(int(s[2:], 16))


def escape_text(s: str) -> str:
    return _BAD.sub(_escape_one, s) if _BAD.search(s) else s


def unescape_text(s: str) -> str:
    return _ESCAPED.sub(_unescape_one, s) if ESC in s else s


def _walk(value: Any, fix: Any) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {fix(k): _walk(v, fix) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fix) for v in value]
    return value


def to_db(doc: dict[str, Any]) -> str:
    """A document as JSON text that jsonb accepts (escaped only when it must be)."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    # json.dumps writes NUL as the escape \u0000 and leaves lone surrogates as they are (ensure_ascii off).
    if "\\u0000" in text or _BAD.search(text):
        text = json.dumps({**_walk(doc, escape_text), MARK: True}, ensure_ascii=False, separators=(",", ":"))
    return text


def from_db(doc: dict[str, Any]) -> dict[str, Any]:
    if not doc.get(MARK):
        return doc
    out = _walk(doc, unescape_text)
    out.pop(MARK, None)
    return out
