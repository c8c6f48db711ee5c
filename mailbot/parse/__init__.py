"""Raw bytes → InboundMail (or ParseFailure); never raises. `parse` is the entry; the modules are its steps.

repair (the header block made readable) → mail-parser in body (the MIME tree, the sender's own text) →
headers (encoded words, raw 8-bit; charsets) → addresses → flags (auto-reply, bounce, list; the DSN) →
quotes (the sender's new text) → redact (credentials masked), htmltext (HTML-only mail) → mail (put
together). Taking `parse` (or any name below) from this package applies body's patches to mail-parser.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and tests/test_imports.py's graph
    from mailbot.parse.body import MAX_MIME_PARTS, TooManyParts, _message_from_bytes
    from mailbot.parse.headers import MAX_HEADER_CHARS, _decode_words, decode_header_value
    from mailbot.parse.mail import parse

# Loaded on first use, not on import: mailbot/__init__.py imports parse.charsets (its codec aliases must be
# registered first), which runs this file, and mail-parser would cost every command ~0.5 s at startup.
_WHERE = {"parse": "mail", "MAX_MIME_PARTS": "body", "TooManyParts": "body", "_message_from_bytes": "body",
          "MAX_HEADER_CHARS": "headers", "_decode_words": "headers", "decode_header_value": "headers"}

__all__ = ["MAX_HEADER_CHARS", "MAX_MIME_PARTS", "TooManyParts", "_decode_words", "_message_from_bytes",
           "decode_header_value", "parse"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value
