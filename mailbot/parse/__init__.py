"""Raw bytes → InboundMail (or ParseFailure); never raises. `parse` is the entry; the modules are its steps.

repair (the header block made readable) → mail-parser in body (the MIME tree, the sender's own text) →
headers (encoded words, raw 8-bit) → addresses → flags (auto-reply, bounce, list; the DSN) → mail (put
together). Importing this package applies body's patches to mail-parser.
"""

from mailbot.parse.body import MAX_MIME_PARTS, TooManyParts, _message_from_bytes
from mailbot.parse.headers import MAX_HEADER_CHARS, _decode_words, decode_header_value
from mailbot.parse.mail import parse

__all__ = ["MAX_HEADER_CHARS", "MAX_MIME_PARTS", "TooManyParts", "_decode_words", "_message_from_bytes",
           "decode_header_value", "parse"]
