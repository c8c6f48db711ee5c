"""Header values as text: RFC 2047 encoded words in linear time, raw 8-bit bytes, controls, ids and dates.

Headers are decoded with the stdlib's pattern, which keeps the space between an encoded word and plain text
that mail-parser drops (`初次响应 CMIT:0001247`).
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime
from email import base64mime, quoprimime
from email.errors import HeaderParseError
from email.header import Header, decode_header, ecre
from email.message import Message
from email.utils import parsedate_to_datetime

import mailbot.parse.charsets as charsets

_MSGID = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n[ \t]+")


def _header_text(value: Header) -> str:
    """A compat32 Header back to the text it was parsed from: raw 8-bit bytes (`unknown-8bit`) stay as
    surrogates, so that they are decoded like any raw header (str() of such a Header is all U+FFFD)."""
    out = []
    for chunk, cs in decode_header(value):
        if isinstance(chunk, str):
            out.append(chunk)
        elif cs in (None, "unknown-8bit", "us-ascii"):
            out.append(chunk.decode("ascii", "surrogateescape"))
        else:
            out.append(charsets.decode_text(chunk, cs))
    return "".join(out)


_SURROGATE = re.compile("[\udc80-\udcff]")


def _unraw(value: str | Header | None, hint: str | None = None) -> str:
    """Raw 8-bit header bytes (kept as surrogates by the stdlib) → text; encoded words left alone."""
    if value is None:
        return ""
    value = _header_text(value) if isinstance(value, Header) else str(value)
    if not value.isascii() and _SURROGATE.search(value):
        value = charsets.decode_8bit(value.encode("utf-8", "surrogateescape"), hint)
    return value


# Control characters never belong in a decoded header: line breaks, tabs, and those that str.splitlines()
# and mail clients treat as line or record breaks (\x0b \x0c \x1c-\x1e \x85 U+2028 U+2029). Each run becomes
# one space, so a subject or name cannot start a new line in a log, a template or an outgoing header.
_CONTROL = re.compile("[\x01-\x1f\x7f\x85\u2028\u2029]+")


# A header value is decoded up to this many characters; the rest is dropped. RFC 5322 §2.1.1 limits a line
# to 998 characters, and a subject of 16 folded lines of encoded words still holds ~3,000 Chinese characters:
# a case title never needs more. Without a bound, a 1 MB subject was decoded, matched, redacted, stored as
# the title and put into every reminder's subject.
MAX_HEADER_CHARS = 16_384


def _cut_header(value: str) -> str:
    """The value's first MAX_HEADER_CHARS characters, cut at the last blank before them when there is one
    in the second half, so that no encoded word is cut in two (RFC 2047 §5: words are apart by blanks)."""
    if len(value) <= MAX_HEADER_CHARS:
        return value
    blank = value.rfind(" ", MAX_HEADER_CHARS // 2, MAX_HEADER_CHARS)
    return value[: blank if blank > 0 else MAX_HEADER_CHARS]


def _has_encoded_word(header: str) -> bool:
    """`ecre.search(header)`, by hand and in linear time. The pattern reads `=?` charset `?` q|b `?` text
    `?=`: the charset runs to the next `?` (line breaks included), the text to a `?=` on the same line."""
    line_end = last = -1  # the line being looked at: where it ends, where its last `?=` starts
    start = header.find("=?")
    while start != -1:
        q = header.find("?", start + 2)  # the charset's end: it holds no `?`
        if q == -1:
            return False
        if header[q + 1 : q + 2] in ("q", "Q", "b", "B") and header[q + 2 : q + 3] == "?":
            if q + 3 > line_end:  # a new line: find its end and its last `?=` once, not once per word
                line_end = header.find("\n", q + 3)
                line_end = len(header) if line_end == -1 else line_end
                last = header.rfind("?=", q + 3, line_end)
            if last >= q + 3:
                return True
        start = header.find("=?", q - 1)  # the next try may start at the charset's last `=`: `=?a=?utf-8?q?…`
    return False


def _decode_words(header: str) -> list[tuple[str | bytes, str | None]]:
    """email.header.decode_header of a str: the same pieces, in linear time.

    The stdlib's pops each piece from the front of a list, deletes from the middle of another and grows a
    bytes object word by word: quadratic three times over (a 1 MB subject of 100,000 encoded words took
    3.5 s). Its own pattern (`ecre`, RFC 2047 §2 read leniently) is kept, but is given each line only up to
    the line's last `?=`: every encoded word ends with one, and past it each `=?x?q?` would rescan the
    rest of the line looking for one (`=?utf-8?q?a ` × 1,300, 16 KB: 0.2 s; × 5,000: 3 s). Raises
    HeaderParseError on bad base64, as the stdlib does."""
    def bounded(line: str) -> int:  # where the last possible encoded word of a line ends
        q = line.rfind("?=")
        return q + 2 if q >= 0 else 0

    if not _has_encoded_word(header):
        return [(header, None)]
    words: list[tuple[str, str | None, str | None]] = []  # (text, encoding or None, charset or None)
    for line in header.splitlines():  # as the stdlib splits
        end = bounded(line)
        parts = ecre.split(line[:end])  # text, charset, encoding, encoded text, text, …, text
        parts[-1] += line[end:]
        for k in range(0, len(parts), 4):
            text = parts[k].lstrip() if k == 0 else parts[k]
            if text:
                words.append((text, None, None))
            if k + 3 < len(parts):
                words.append((parts[k + 3], parts[k + 2].lower(), parts[k + 1].lower()))
    # Blanks between two encoded words are not text (RFC 2047 §6.2).
    drop = {n - 1 for n, w in enumerate(words) if n > 1 and w[1] and words[n - 2][1] and words[n - 1][0].isspace()}
    out: list[tuple[str | bytes, str | None]] = []
    run: list[bytes] = []  # one charset's consecutive words, joined once at the end of the run
    run_charset: str | None = None
    for n, (text, encoding, charset) in enumerate(words):
        if n in drop:
            continue
        if encoding == "q":
            word = quoprimime.header_decode(text).encode("raw-unicode-escape")
        elif encoding == "b":
            padded = text + "==="[: (4 - len(text) % 4) % 4]  # Postel's law, as the stdlib: add missing padding
            try:
                word = base64mime.decode(padded)
            except binascii.Error as e:
                raise HeaderParseError("Base64 decoding error") from e
        else:
            word = text.encode("raw-unicode-escape")
        if run and charset != run_charset:
            out.append((b"".join(run), run_charset))
            run = []
        if run and run_charset is None:
            run.append(b" ")  # the stdlib joins unencoded pieces with a space
        run.append(word)
        run_charset = charset
    out.append((b"".join(run), run_charset))
    return out


def decode_header_value(value: str | Header | None, hint: str | None = None) -> str:
    """RFC 2047 words decoded, folding removed, raw 8-bit bytes guessed (`hint`: the charset the message
    declares for its text); never raises."""
    value = _cut_header(_FOLD.sub(" ", _unraw(value, hint)))
    if "=?" not in value:  # no encoded word (RFC 2047 §2: each starts with "=?"): nothing to decode
        return _CONTROL.sub(" ", value.replace("\x00", "")).strip()
    try:
        chunks = _decode_words(value)
    except Exception:  # a broken encoded word: show it as written
        chunks = [(value, None)]
    out = []
    for chunk, cs in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif cs is None:
            # decode_header hands back the unencoded text between encoded words as raw-unicode-escape
            # bytes; ASCII-decoding them turned `中文 =?utf-8?…?=` into `\\u4e2d\\u6587 …`.
            try:
                out.append(chunk.decode("raw-unicode-escape") if not value.isascii() else chunk.decode("ascii"))
            except UnicodeDecodeError:
                out.append(chunk.decode("latin-1"))
        else:  # an unknown or wrong charset in an encoded word falls back instead of showing the raw word
            out.append(charsets.decode_text(chunk, cs))
    return _CONTROL.sub(" ", "".join(out).replace("\x00", "")).strip()


def _decode_header_linear(header: str | Header) -> list[tuple[str | bytes, str | None]]:
    """email.header.decode_header, with _decode_words for text (a Header object is already linear)."""
    return decode_header(header) if isinstance(header, Header) else _decode_words(header)


class _Headers:
    """A message's headers by lower-case name, each value as stored (raw 8-bit bytes as surrogates, never
    a lossy Header object): read once, where Message.get() scans every header on each call."""

    def __init__(self, msg: Message) -> None:
        self.by_name: dict[str, list[str]] = {}
        for k, v in msg.raw_items():
            self.by_name.setdefault(k.lower(), []).append(str(v))

    def all(self, name: str) -> list[str]:
        return self.by_name.get(name.lower(), [])

    def first(self, name: str) -> str | None:
        values = self.by_name.get(name.lower())
        return values[0] if values else None

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.by_name

    def any_8bit(self) -> bool:
        return any(not v.isascii() for values in self.by_name.values() for v in values)


def _raw_all(msg: Message | _Headers, name: str) -> list[str]:
    """Every value of a header as stored (raw 8-bit bytes as surrogates, never a lossy Header object)."""
    return (msg if isinstance(msg, _Headers) else _Headers(msg)).all(name)


def _raw(msg: Message | _Headers, name: str) -> str | None:
    values = _raw_all(msg, name)
    return values[0] if values else None


# Headers whose raw 8-bit bytes are shown as text; their bytes together are what the charset is judged on.
_TEXT_HEADERS = ("subject", "from", "sender", "reply-to", "to", "cc", "thread-topic")
_HINT_SAMPLE = 4096  # bytes of raw header text to judge; a header block rarely holds more that is 8-bit


def _charset_hint(msg: Message) -> str | None:
    """The charset the message's raw 8-bit header bytes are written in, judged once over all of them (one
    short subject alone rarely tells GBK from Big5 or Shift_JIS). The charsets the message declares for
    its text parts are candidates, never the answer: the first part may be an iso-8859-1 wrapper around a
    GBK subject, and Latin-1 reads any bytes (charsets.guess_8bit)."""
    declared: list[str | None] = []
    try:
        for n, part in enumerate(msg.walk()):
            if n > 50:
                break
            if part.get_content_maintype() == "text":
                declared.append(part.get_content_charset())
    except (RecursionError, AttributeError, TypeError, ValueError, LookupError):
        pass
    sample = bytearray()
    for name, value in msg.raw_items():
        value = str(value)
        if name.lower() in _TEXT_HEADERS and not value.isascii():
            sample += value.encode("utf-8", "surrogateescape") + b"\n"
            if len(sample) >= _HINT_SAMPLE:  # whole values only: a cut would split a character
                break
    return charsets.guess_8bit(bytes(sample), dict.fromkeys(declared)) if sample else None


def _date(msg: Message | _Headers) -> datetime | None:
    raw = _raw(msg, "Date")
    if not raw:
        return None
    try:
        d = parsedate_to_datetime(decode_header_value(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    try:
        return d.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


MAX_REFERENCES = 100  # RFC 5322 §3.6.4 lets a References field be shortened: the first id and the latest


def _ids(msg: Message | _Headers, name: str) -> tuple[str, ...]:
    found: dict[str, None] = {}  # ordered, and a duplicate check that stays linear with 20,000 ids
    for raw in _raw_all(msg, name):
        for mid in _MSGID.findall(_unraw(raw)):
            found.setdefault(mid)
    ids = tuple(found)
    return ids if len(ids) <= MAX_REFERENCES else (ids[0], *ids[-(MAX_REFERENCES - 1):])

