"""Raw bytes → InboundMail (or ParseFailure); never raises.

mail-parser walks the MIME tree and decodes the bodies; headers are decoded with the stdlib, which keeps the
space between an encoded word and plain text that mail-parser drops (`初次响应 CMIT:0001247`).
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import re
from collections import Counter
from datetime import UTC, datetime
from email import base64mime, message_from_bytes, quoprimime
from email.errors import HeaderParseError
from email.header import Header, decode_header, ecre
from email.message import Message
from email.parser import Parser
from email.utils import getaddresses, parsedate_to_datetime

import mailparser
import mailparser.core
import mailparser.utils

from mailbot import charsets
from mailbot.htmltext import html_to_text
from mailbot.models import Attachment, Flag, InboundMail, ParseFailure
from mailbot.quotes import cut_html_history, split_reply
from mailbot.redact import redact, redact_html

# mail-parser logs every defect at WARNING; defects are normal in real mail and we report them ourselves.
logging.getLogger("mailparser").setLevel(logging.CRITICAL)
# mail-parser names an attachment that has no name with ten random letters (`znkjtkninm.txt`). parse() is a
# function of the bytes alone — the same mail parsed twice, or by a parse worker, reads the same — so the
# invented name is fixed: `unnamed.txt`. mail-parser is pinned; tests/test_parse.py checks this.
mailparser.core.random_string = lambda string_length=10: "unnamed"

_MSGID = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n[ \t]+")

# RFC 3834 §5: Auto-Submitted other than "no" marks automatic mail. The rest is experience.
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:自动回复|自動回覆|自动答复|外出|休假|Automatic reply|Auto(?:matic)?[ -]?(?:reply|response)|"
    r"Out of (?:the )?Office|Abwesenheitsnotiz|Automatische Antwort|Réponse automatique|Fuera de la oficina|"
    r"Frånvaro|Autosvar|Vacation)\b",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"(?:Undeliver(?:ed|able)|Delivery Status Notification|Mail delivery failed|Returned mail|"
    r"Delivery (?:has )?failed|failure notice|Non[- ]?delivery|系统退信|退信|未送达|无法送达)",
    re.I,
)
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mdaemon|bounce[s]?)@", re.I)


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


# mail-parser decodes each attachment's filename with the stdlib's decode_header: a filename of 64 KB of
# `=?utf-8?q?a ` took 2.8 s there, 256 KB 42 s. It gets the linear twin (same result: tests/test_hostile.py).
mailparser.utils.decode_header = _decode_header_linear
# mail-parser also parses every Received header (hops, dates) for its `.received`, which nothing here reads
# (the RFC 8601 verdict we trust is Authentication-Results): 10,000 Received lines cost it 1.3 s a mail.
mailparser.core.receiveds_parsing = lambda receiveds, **diagnostics: []


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


# RFC 5322 §3.4.1 addr-spec, as getaddresses hands it back: a dot-atom or quoted local part, "@", a domain
# or a domain literal. Non-ASCII is allowed (RFC 6532); blanks, controls and specials are not. Every
# repetition is bounded and the classes at each boundary are disjoint, so matching stays linear.
_ATEXT = r"[^\s\"(),:;<>@\[\]\\\x00-\x1f\x7f]"  # atext and the dot, and any non-ASCII character
_LABEL = r"[^\s\"(),:;<>@.\[\]\\\x00-\x1f\x7f]{1,63}"
_ADDR_SPEC = re.compile(
    rf'(?:{_ATEXT}{{1,128}}|"(?:[^"\\\r\n]|\\.){{1,128}}")'  # local part: dot-atom or quoted-string
    rf"@(?:{_LABEL}(?:\.{_LABEL}){{0,30}}|\[[^\[\]\\\s]{{1,64}}\])"  # domain: labels or a literal
)


def _addr_spec(addr: str) -> str | None:
    """The address as written, lower-cased, when it is a valid addr-spec; never RFC 2047-decoded: an
    encoded word may form a display name, never an address (RFC 2047 §5), so `=?utf-8?b?…?=` that decodes
    to an engineer's address is no address at all, and neither is one holding `>, <`."""
    addr = addr.strip()
    if "=?" in addr or not _ADDR_SPEC.fullmatch(addr):
        return None
    return addr.lower()


def _without_comments(value: str) -> str:
    """`value` with its RFC 5322 §3.2.2 comments — nested, never inside a quoted string — each replaced by
    one space. One pass over the characters."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"' and not depth:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
            if depth == 1:
                out.append(" ")
            continue
        elif ch == ")" and depth:
            depth -= 1
            continue
        if not depth:
            out.append(ch)
    return "".join(out)


def _getaddresses(values: list[str]) -> list[tuple[str, str]]:
    """email.utils.getaddresses, without RFC 5322 comments in display names: the stdlib appends them
    (`MAILER-DAEMON (Mail Delivery System) <…>` came out named `MAILER-DAEMON (Mail Delivery System)`).
    A comment stands in only where there is no name at all — `addr (Full Name)`, the RFC 822 habit that
    Postfix bounces keep — as mail clients show it."""
    out: list[tuple[str, str]] = []
    for value in values:
        pairs = getaddresses([value])
        if "(" in value:
            bare = getaddresses([_without_comments(value)])
            if len(bare) == len(pairs):  # the same mailboxes: take each name without its comments
                pairs = [(b[0] if b[0].strip() else p[0].strip().removeprefix("(").removesuffix(")"), p[1])
                         for b, p in zip(bare, pairs, strict=True)]
        out.extend(pairs)
    return out


# Address headers are read up to this many characters each (From, To, Cc…: ~2,000 ordinary addresses); the
# rest is ignored and named in `header_problems`. 40,000 addresses in a To took 2.5 s a mail to read, and
# every one of them could have become a party to the case.
MAX_ADDRESS_CHARS = 65_536


def _bounded_values(values: list[str], limit: int) -> tuple[list[str], bool]:
    """The values up to `limit` characters in all: the one that crosses it is cut, those after it dropped.
    True when something was cut."""
    out: list[str] = []
    room = limit
    for value in values:
        if len(value) > room:
            out.append(value[:room])
            return out, True
        out.append(value)
        room -= len(value)
    return out, False


def _address_problems(heads: _Headers) -> list[str]:
    """Address headers too long to read whole (MAX_ADDRESS_CHARS), in words."""
    problems = []
    for name in ("From", "Sender", "To", "Cc"):
        size = sum(len(v) for v in heads.all(name))
        if size > MAX_ADDRESS_CHARS:
            problems.append(f"{name}: {size:,} characters of addresses; only the first {MAX_ADDRESS_CHARS:,} "
                            "were read, the addresses after them are ignored")
    return problems


def _mailboxes(msg: Message | _Headers, *names: str, hint: str | None = None) -> list[tuple[str, str | None]]:
    """Every mailbox the headers name, as (display name, address or None when it is not a valid addr-spec).

    The raw header is split into mailboxes first and only display names are decoded after: a decoded
    name may contain a comma (`=?utf-8?b?…?=` → `杨, 先生`) or an address, which must neither split one
    mailbox into two nor become one."""
    raw, cut = _bounded_values([v for name in names for v in _raw_all(msg, name)], MAX_ADDRESS_CHARS)
    values = [_FOLD.sub(" ", _unraw(v, hint)) for v in raw]
    pairs = _getaddresses(values[:-1] if cut else values)
    if cut:  # the last mailbox of the value that was cut may be only the start of one: left out
        pairs += _getaddresses(values[-1:])[:-1]
    out: list[tuple[str, str | None]] = []
    for display, addr in pairs:
        if not display.strip() and not addr.strip():
            continue  # an empty group (`undisclosed-recipients:;`) names nobody
        out.append((decode_header_value(display), _addr_spec(addr)))
    return out


def _addresses(msg: Message | _Headers, *names: str, hint: str | None = None) -> list[tuple[str, str]]:
    return [(display, addr) for display, addr in _mailboxes(msg, *names, hint=hint) if addr is not None]


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


def _flags(msg: Message, heads: _Headers, subject: str, from_addr: str) -> tuple[frozenset[Flag], tuple[str, ...]]:
    flags: set[Flag] = set()
    reasons: list[str] = []

    def hit(flag: Flag, reason: str) -> None:
        flags.add(flag)
        reasons.append(reason)

    def value(name: str) -> str | None:
        raw = heads.first(name)
        return None if raw is None else _unraw(raw)

    auto = (value("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        hit(Flag.AUTO_REPLY, f"Auto-Submitted: {auto} (RFC 3834)")
    for name in ("X-Autoreply", "X-Autorespond", "X-Autogenerated", "X-AutoReply-From", "X-Mail-Autoreply"):
        if name in heads:
            hit(Flag.AUTO_REPLY, f"{name} header")
    precedence = (value("Precedence") or "").strip().lower()
    if precedence == "auto_reply":
        hit(Flag.AUTO_REPLY, "Precedence: auto_reply")
    elif precedence in ("bulk", "junk", "list"):
        hit(Flag.LIST, f"Precedence: {precedence}")
    if "List-Id" in heads:
        hit(Flag.LIST, "List-Id header (RFC 2919)")
    if "List-Unsubscribe" in heads and Flag.LIST not in flags:
        hit(Flag.LIST, "List-Unsubscribe header (RFC 2369)")
    if _AUTO_SUBJECT.match(subject):
        hit(Flag.AUTO_REPLY, "auto-reply subject")

    ctype = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "", header="content-type") or "").lower()
    if ctype == "multipart/report" and report_type == "delivery-status":
        hit(Flag.BOUNCE, "multipart/report; report-type=delivery-status (RFC 3464)")
    elif ctype == "multipart/report" and report_type == "disposition-notification":
        hit(Flag.AUTO_REPLY, "read receipt (RFC 8098)")
    if _DAEMON.match(from_addr):
        hit(Flag.BOUNCE, f"sent by {from_addr}")
    return_path = value("Return-Path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        if _BOUNCE_SUBJECT.search(subject) or Flag.BOUNCE in flags:
            hit(Flag.BOUNCE, "empty Return-Path")
        elif Flag.AUTO_REPLY not in flags:
            hit(Flag.AUTO_REPLY, "empty Return-Path (RFC 5321 null sender)")
    elif Flag.BOUNCE not in flags and _BOUNCE_SUBJECT.search(subject) and not from_addr:
        hit(Flag.BOUNCE, "bounce subject without sender")
    return frozenset(flags), tuple(dict.fromkeys(reasons))


# What a report returns of the original message (RFC 3464 §2, RFC 6522 §3, RFC 6533 for message/global).
_RETURNED = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
             "message/global-headers")
# RFC 3464 §2.3.1: `address-type ; address` (`rfc822; yang@customer.example`); the address must parse.
_RECIPIENT_VALUE = re.compile(r"(?i)(?:[a-z0-9-]{1,20}[ \t]*;)?[ \t]*<?([^\s<>;]{1,320})>?[ \t]*$")
MAX_BOUNCED_RECIPIENTS = 100


def _returned_original(parts: list[Message], hint: str | None) -> tuple[str, tuple[str, ...]]:
    """The subject and Message-ID/In-Reply-To/References of the message a report returns."""
    subject = ""
    ids: list[str] = []
    for part in parts:
        if part.get_content_type() not in _RETURNED:
            continue
        inner = part.get_payload(0) if part.is_multipart() else None
        if isinstance(inner, Message):
            headers: Message = inner
        else:
            payload = part.get_payload(decode=True) or b""
            headers = message_from_bytes(payload if isinstance(payload, bytes) else b"")
        subject = subject or decode_header_value(_raw(headers, "Subject"), hint)
        for name in ("Message-ID", "In-Reply-To", "References"):
            ids.extend(i for i in _ids(headers, name) if i not in ids)
    return subject, tuple(ids)


def _status_blocks(status: Message) -> list[list[tuple[str, str]]]:
    """A message/delivery-status part as its blocks of (lower-case field name, value) (RFC 3464 §2.1)."""
    blocks = status.get_payload()
    if isinstance(blocks, list):
        return [[(k.lower(), _FOLD.sub(" ", str(v)).strip()) for k, v in b.raw_items()]
                for b in blocks if isinstance(b, Message)]
    payload = status.get_payload(decode=True)
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(blocks or "")
    out: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            out.append([])
        elif ":" in line and not line[0].isspace():
            name, _, value = line.partition(":")
            out[-1].append((name.strip().lower(), value.strip()))
    return out


def _failed_recipients(status: Message) -> tuple[str, ...]:
    """RFC 3464 §2.3: the recipients whose Action is `failed` (not delayed, delivered, relayed, expanded).
    Each per-recipient block holds its recipient fields and its Action, in any order (Exim writes Action
    first); a server that leaves out the blank line between recipients repeats Final-Recipient, which
    starts the next recipient."""
    failed: list[str] = []
    for block in _status_blocks(status):
        groups: list[dict[str, list[str]]] = [{}]
        for name, value in block:
            if name in ("final-recipient", "original-recipient", "action"):
                if name in groups[-1]:
                    groups.append({})
                groups[-1][name] = [value]
        for group in groups:
            action = (group.get("action") or [""])[0].split()
            if not action or action[0].lower() != "failed":
                continue
            for field in ("original-recipient", "final-recipient"):
                for value in group.get(field, []):
                    m = _RECIPIENT_VALUE.match(value)
                    addr = _addr_spec(m.group(1)) if m else None
                    if addr is not None and addr not in failed:
                        failed.append(addr)
        if len(failed) >= MAX_BOUNCED_RECIPIENTS:
            break
    return tuple(failed[:MAX_BOUNCED_RECIPIENTS])


def _bounced_original(msg: Message, hint: str | None) -> tuple[bool, str, tuple[str, ...], tuple[str, ...]]:
    """From a bounce: whether it is a real delivery report, the returned message's subject and ids, and
    the recipients that failed.

    Only a real RFC 3464 report — the message itself multipart/report; report-type=delivery-status
    (RFC 6522) with a message/delivery-status part — names failed recipients, and only from that part.
    X-Failed-Recipients is a header anyone can write on any mail (a customer's plain mail with it stopped
    their own reminders), so it names nobody. Other bounce-looking mail (a mailer-daemon's plain text)
    still yields the returned subject and ids, to thread it to its case; nothing more."""
    children = msg.get_payload() if msg.is_multipart() else []
    children = [c for c in children if isinstance(c, Message)] if isinstance(children, list) else []
    report_type = str(msg.get_param("report-type", "", header="content-type") or "").lower()
    statuses = [c for c in children if c.get_content_type() == "message/delivery-status"]
    if msg.get_content_type() == "multipart/report" and report_type == "delivery-status" and statuses:
        subject, ids = _returned_original(children, hint)
        recipients: list[str] = []
        for status in statuses:
            recipients.extend(a for a in _failed_recipients(status) if a not in recipients)
        return True, subject, ids, tuple(recipients[:MAX_BOUNCED_RECIPIENTS])
    subject, ids = _returned_original(list(msg.walk()), hint)
    return False, subject, ids, ()


def _attachments(parsed: mailparser.MailParser) -> tuple[Attachment, ...]:
    out = []
    for a in parsed.attachments:
        payload = a.get("payload") or ""
        if a.get("binary"):  # base64 as on the wire: line breaks and padding are not content
            b64 = re.sub(r"\s+", "", str(payload))
            size = max(0, len(b64) * 3 // 4 - len(b64) + len(b64.rstrip("=")))
        else:
            size = len(str(payload).encode("utf-8", "replace"))
        name = redact(decode_header_value(a.get("filename") or "")) or "(unnamed)"  # `密码：x.txt` happens
        out.append(Attachment(name=name, content_type=str(a.get("mail_content_type") or ""), size=size))
    return tuple(out)


# Parts that carry someone else's message, never the sender's own words: an attached or forwarded mail
# (RFC 2046 §5.2, RFC 6532 message/global), a report's returned headers (RFC 6522) and its status fields.
_NOT_OWN_TEXT = ("message/", "text/rfc822-headers")
MAX_BODY_DEPTH = 50


def _own_text(part: Message, texts: dict[int, str], depth: int = 0) -> tuple[str, str] | None:
    """The first body unit of a MIME (sub)tree as (plain, html) text, either possibly empty; None when the
    subtree holds none. A multipart/alternative offers both of its versions; any other multipart gives its
    first child that holds a body. Attachments and message/* parts are never descended into."""
    ctype = part.get_content_type()
    if depth > MAX_BODY_DEPTH or ctype.startswith(_NOT_OWN_TEXT):
        return None
    disposition = part.get_content_disposition()
    if disposition == "attachment" or (disposition != "inline" and part.get_filename()):
        return None
    if part.is_multipart():
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        if ctype == "multipart/alternative":
            plain = html = ""
            for child in children:
                found = _own_text(child, texts, depth + 1)
                if found is not None:
                    plain, html = plain or found[0], html or found[1]
            return (plain, html) if plain or html else None
        for child in children:
            found = _own_text(child, texts, depth + 1)
            if found is not None:
                return found
        return None
    text = texts.get(id(part), "")
    if not text.strip():
        return None
    if ctype == "text/plain":
        return text, ""
    if ctype == "text/html":
        return "", text
    return None


def _body_text(parsed: _MailParser) -> str:
    """The sender's own text: the top-level message's first body part, text/plain preferred, else its HTML
    alternative. Never the text of an attached or forwarded message (mail-parser's `text_plain` lists
    those too: a customer's `#close` in a forwarded mail ran as the engineer's when the engineer's own
    part was HTML only). Quoted history is cut after, by split_reply."""
    found = _own_text(parsed.message, parsed.decoded_texts)
    if found is None:
        return ""
    plain, html = found
    # A table's password cell is masked in the markup, where rows and cells are still told apart (RFC 2854
    # text/html); once flattened to text, `<td>密码</td><td>a b</td>` is just `密码 a b`.
    return plain if plain.strip() else html_to_text(redact_html(cut_html_history(html)))


def _synthetic_id(raw: bytes) -> str:
    # Deterministic, so the same id-less mail delivered twice is still recorded once.
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@mailbot.invalid>"


# RFC 5322 §2.2: the header section ends at the first line that is neither a field nor a fold. This is the
# stdlib's own test (email.feedparser.headerRE), asked at every line start.
_NOT_A_HEADER_LINE = re.compile(r"^(?!From |[\x21-\x39\x3b-\x7e]*:|[\t ])", re.M)
_LONE_CR = re.compile(r"\r(?!\n)")


def _message_from_bytes(raw: bytes) -> Message:
    """email.message_from_bytes, the same message, but a single-part body taken in one piece: the stdlib
    reads a body line by line (1 MB of blank lines: 0.3 s, a third of the whole parse), though the payload
    of a part that is not multipart or message/* is the rest of the text as it stands. Such a message's
    header section and first body line go through the stdlib (its headers, defects and content type come
    from there); anything else — a multipart, a lone CR or a `From ` line in the header section — is the
    stdlib's whole."""
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser does
    first = _NOT_A_HEADER_LINE.search(text)
    eol = text.find("\n", first.start()) if first is not None else -1
    # A `From ` line under the first may be the body's first line: the stdlib decides that when it is done.
    if first is None or eol == -1 or _LONE_CR.search(text, 0, eol + 1) or text.find("\nFrom ", 0, eol) >= 0:
        return message_from_bytes(raw)
    msg = Parser().parsestr(text[: eol + 1])
    if msg.get_content_maintype() in ("multipart", "message"):
        return message_from_bytes(raw)
    blank = first.start() in (eol, eol - 1) and text[first.start()] in "\r\n"  # the empty separator line
    msg.set_payload(text[eol + 1 :] if blank else text[first.start() :])
    return msg


MAX_MIME_PARTS = 1_000


class TooManyParts(Exception):
    """A message of more MIME parts than MAX_MIME_PARTS: quarantined unread."""

    def __init__(self, count: int) -> None:
        super().__init__(f"more than {MAX_MIME_PARTS:,} MIME parts ({count:,}): not read")


# RFC 2046 §5.1.1: the boundary (1-70 characters) is a Content-Type parameter, quoted or not; each part
# starts at a line `--boundary`, with optional blanks after it (the close delimiter ends in `--`).
# `boundary*0=` is an RFC 2231 continuation's first segment: the whole boundary when it has no other.
_BOUNDARY_PARAM = re.compile(rb'(?i)\bboundary(?:\*0)?\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))')
_DASH_LINE = re.compile(rb"^--([^\r\n]{1,200})", re.M)


def _count_parts(raw: bytes) -> int:
    """How many body parts the message's multiparts hold, counted from the raw bytes in one pass: the
    lines that open a part with a boundary declared anywhere in the message."""
    boundaries = {quoted or bare for quoted, bare in _BOUNDARY_PARAM.findall(raw)}
    if not boundaries:
        return 0
    lines = Counter(line.rstrip(b" \t") for line in _DASH_LINE.findall(raw))
    return sum(lines[b] for b in boundaries)


class _MailParser(mailparser.MailParser):
    """mail-parser, with a second chance for body text it could not decode in the declared charset, and
    without the summary dicts nobody reads.

    When the declared charset fails, mail-parser decodes as UTF-8 with replacement characters: one stray
    byte in a GBK mail, or an EUC-JP body labelled iso-2022-jp, and every character is lost. We retry
    the same bytes with charsets.decode_text (the declared charset's family, then replacement only where
    needed). `_decode_body_payload` is internal to mail-parser, which is pinned exactly in pyproject.toml;
    tests/test_parse.py checks the behaviour, so an upgrade that drops the hook fails loudly.
    """

    @classmethod
    def from_bytes(cls, bt):  # type: ignore[no-untyped-def]
        # Counted before the stdlib builds the tree: 30,000 parts cost 0.45 s to build and 0.5 s more in
        # mail-parser's walk, and no support mail has a thousand.
        if (n := _count_parts(bt)) > MAX_MIME_PARTS:
            raise TooManyParts(n)
        return cls._parse_guarded(lambda: _message_from_bytes(bt))

    def parse(self):  # type: ignore[no-untyped-def]
        # The same bound on the tree the stdlib built, for boundaries the count above does not see
        # (RFC 2231 `boundary*0=`, a folded parameter).
        if self.message is not None and (n := sum(1 for _ in self.message.walk()) - 1) > MAX_MIME_PARTS:
            raise TooManyParts(n)  # the parts below the message, as counted from the raw bytes
        return super().parse()

    def _build_header_index(self):  # type: ignore[no-untyped-def]
        # mail-parser indexes every header to parse its address headers (`.to`, `.from_`) and to fill the
        # summary dicts; _build reads the message itself and uses neither. 40,000 addresses in To cost
        # mail-parser 1 s a mail, for nothing.
        return {}

    def _make_mail(self, complete=True):  # type: ignore[no-untyped-def]
        # mail-parser ends its parse by building two summary dicts (`.mail`, `.mail_partial`: every header
        # decoded again, twice; a tenth of its time). Nothing here reads them — _build takes what it needs
        # from the message itself — so they stay empty.
        return {}

    @property
    def decoded_texts(self) -> dict[int, str]:
        """Each body part's decoded text by id() of its Message (the parts stay alive in `.message`), so
        that _body_text can choose parts by their place in the MIME tree."""
        # Through __dict__: mail-parser's __getattr__ answers any unknown attribute as a mail header.
        texts: dict[int, str] = self.__dict__.setdefault("_decoded_texts", {})
        return texts

    def _decode_body_payload(self, part, charset, part_index):  # type: ignore[no-untyped-def]
        text = self._better_text(part, charset, part_index)
        self.decoded_texts[id(part)] = text
        return text

    def _better_text(self, part, charset, part_index):  # type: ignore[no-untyped-def]
        text = super()._decode_body_payload(part, charset, part_index)
        if "\ufffd" not in text:
            return text
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a broken transfer encoding: keep what mail-parser made of it
            return text
        if not isinstance(payload, bytes) or not payload:
            return text
        better = charsets.decode_text(payload, part.get_content_charset())
        return better if better.count("\ufffd") < text.count("\ufffd") else text


_HEADER_LINE = re.compile(rb"^(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])")
_BAD_NAME = re.compile(rb"^([\t\x20-\x39\x3b-\x7e]{1,200}):")


# Field names of RFC 5322 §3.6, RFC 2045, RFC 3834 and the common extensions: a line that starts with one
# after a broken line shows the header block goes on. Literals and one bounded class that excludes the
# colon and blanks after it: linear.
_KNOWN_HEADER = re.compile(
    rb"(?i:from|sender|reply-to|to|cc|bcc|subject|date|message-id|in-reply-to|references|mime-version|"
    rb"return-path|received|delivered-to|auto-submitted|precedence|importance|priority|organization|"
    rb"user-agent|thread-topic|thread-index|dkim-signature|authentication-results|received-spf|"
    rb"disposition-notification-to|(?:content|list|x|arc|resent|accept)-[\x21-\x39\x3b-\x7e]{1,100})[ \t]{0,8}:"
)


def _repair_header_block(raw: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The header section as RFC 5322 §2.1 bounds it — up to the first empty line — made readable for the
    stdlib, which ends it at the first line that is not a well-formed header; and what was repaired.

    - A header whose name holds a space or a tab (`X-Script/function/\t !"#…: TEST`): the blanks become
      `_`, or the Content-Type and Content-Transfer-Encoding after it became body text.
    - A line without a name and without leading blanks (a long vendor header folded without them): it is
      joined to the header above as a continuation (RFC 5322 §2.2.3), or Subject, From and every other
      header after it became body text and the mail was from nobody. Only lines before the last known
      header name are joined; a line after it is where a body without the empty line begins, and is left
      to the parser's own tolerance.
    One pass over the lines, and one back from the end while looking for the last known header."""
    ends = [e for e in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if e >= 0]
    if not ends:
        return raw, ()
    end = min(ends)
    lines = raw[:end].split(b"\n")
    bad: list[int] = []
    stray: list[int] = []
    for i, line in enumerate(lines):
        text = line.rstrip(b"\r")
        if _HEADER_LINE.match(text):
            continue
        (bad if _BAD_NAME.match(text) else stray).append(i)
    if not bad and not stray:
        return raw, ()
    last = -1  # the last line that starts a known header: the header block surely reaches that far
    if stray:
        last = next((i for i in range(len(lines) - 1, stray[0], -1) if _KNOWN_HEADER.match(lines[i])), -1)
    body_from = next((i for i in stray if i > last), len(lines))
    joined = [i for i in stray if 0 < i < last]
    for i in joined:
        lines[i] = b" " + lines[i]
    renamed = [i for i in bad if i < body_from]
    for i in renamed:
        m = _BAD_NAME.match(lines[i])
        assert m is not None
        lines[i] = re.sub(rb"[ \t]", b"_", m.group(1)) + lines[i][m.end(1) :]
    if not joined and not renamed:
        return raw, ()
    notes = []
    if joined:
        notes.append(f"header block repaired: {len(joined)} line(s) without a field name or leading blank "
                     "joined to the header above (RFC 5322 §2.2.3), so the headers after them are kept")
    if renamed:
        notes.append(f"header block repaired: {len(renamed)} field name(s) holding blanks")
    return b"\n".join(lines) + raw[end:], tuple(notes)


MAX_STRAY_LINES = 3  # lines a forwarder may write before the headers (`---- Original email message ----`)
_BLANK_LINES = re.compile(rb"[\r\n]*")


def _skip_stray_lines(raw: bytes) -> tuple[bytes, tuple[str, ...]]:
    """A message that starts with a few lines that are not headers, then a known header: the headers, as
    the mbox `From ` line is skipped; and a note of what was skipped. Anything else is left as it is."""
    if _HEADER_LINE.match(raw) or _BAD_NAME.match(raw):  # a header, or one _repair_header_block renames
        return raw, ()
    pos = 0
    for _ in range(MAX_STRAY_LINES):
        nl = raw.find(b"\n", pos, pos + 1000)  # RFC 5322 §2.1.1: a line is at most 998 characters
        if nl < 0:
            return raw, ()
        match = _BLANK_LINES.match(raw, nl + 1)
        pos = match.end() if match else nl + 1
        if _KNOWN_HEADER.match(raw, pos):
            skipped = raw[:pos].decode("utf-8", "replace").strip()
            return raw[pos:], (f"{len(skipped.splitlines())} line(s) before the headers skipped: "
                               f"{_CONTROL.sub(' ', skipped)[:100]!r}",)
    return raw, ()


def parse(raw: bytes) -> InboundMail | ParseFailure:
    """Decode one message. A message we cannot make sense of becomes a ParseFailure with a reason."""
    if not raw or not raw.strip():
        return ParseFailure("empty message")
    # Tolerate what mail stores put in front of a message: blank lines and an mbox "From " line.
    raw = raw.lstrip(b"\r\n")
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    raw, skipped = _skip_stray_lines(raw)
    raw, repaired = _repair_header_block(raw)
    try:
        parsed = _MailParser.from_bytes(raw)
    except TooManyParts as e:
        return ParseFailure(str(e))
    except Exception as e:  # mail-parser raises a zoo of exception types on broken input
        return ParseFailure(f"mail-parser could not read the message: {type(e).__name__}: {e}"[:300])
    try:
        return _build(parsed, raw, (*skipped, *repaired))
    except RecursionError:
        return ParseFailure("MIME structure nested too deeply to read")
    except Exception as e:  # last line of defence: quarantine with a reason, never crash the service
        return ParseFailure(f"unreadable message: {type(e).__name__}: {e}"[:300])


def _missing_headers(heads: _Headers, from_boxes: list[tuple[str, str | None]], from_addr: str) -> list[str]:
    """From and Subject that a mail lacks or that name nobody, in words: never lost silently."""
    problems = []
    if "From" not in heads:
        author = "the author is taken from Sender" if from_addr else "the mail is from nobody"
        problems.append(f"no From header: {author}")
    elif not from_addr:
        problems.append(f"From names no readable address ({len(from_boxes)} mailbox(es))")
    if "Subject" not in heads:
        problems.append("no Subject header")
    return problems


def _build(
    parsed: mailparser.MailParser, raw: bytes, repairs: tuple[str, ...] = ()
) -> InboundMail | ParseFailure:
    msg: Message = parsed.message
    if not msg.keys():
        return ParseFailure("no mail headers found")
    heads = _Headers(msg)
    # The declared charset is only a guess for raw 8-bit header bytes: look for it only when there are some.
    hint = _charset_hint(msg) if heads.any_8bit() else None
    subject = decode_header_value(heads.first("Subject"), hint)
    from_boxes = _mailboxes(heads, "From", hint=hint)
    # Sender stands in only when From names nobody at all; a From that names someone unreadable (an
    # encoded word where the address belongs) leaves no author, and Sender must not supply one. Every
    # mailbox counts, readable or not: only a From of exactly one can be an engineer (roles.sender_role).
    if from_boxes:
        senders = [(n, a) for n, a in from_boxes if a is not None]
    else:
        senders = _addresses(heads, "Sender", hint=hint)
    from_name, from_addr = senders[0] if senders else ("", "")
    flags, reasons = _flags(msg, heads, subject, from_addr)
    message_id = next(iter(_ids(heads, "Message-ID")), "")
    synthesized = not message_id
    if synthesized:
        message_id = _synthetic_id(raw)
    body = _body_text(parsed)
    new_text, _history = split_reply(body)
    is_dsn, bounced_subject, bounced_ids, bounced_rcpts = (False, "", (), ())
    if Flag.BOUNCE in flags:
        is_dsn, bounced_subject, bounced_ids, bounced_rcpts = _bounced_original(msg, hint)
    return_path = heads.first("Return-Path")
    return InboundMail(
        message_id=message_id,
        subject=redact(subject),  # people paste passwords into subjects too; the case keeps what it shows
        from_addr=from_addr,
        from_name=redact(from_name),  # a display name is text the sender chose: it can hold anything
        to=tuple(a for _, a in _addresses(heads, "To", hint=hint)),
        cc=tuple(a for _, a in _addresses(heads, "Cc", hint=hint)),
        date=_date(heads),
        in_reply_to=_ids(heads, "In-Reply-To"),
        references=_ids(heads, "References"),
        new_text=redact(new_text),
        attachments=_attachments(parsed),
        flags=flags,
        flag_reasons=reasons,
        return_path=None if return_path is None else decode_header_value(return_path),
        bounced_subject=redact(bounced_subject),
        bounced_message_ids=bounced_ids,
        bounced_recipients=bounced_rcpts,
        # RFC 8601 has no encoded words: unfolded, never decoded (mailbot.authres reads the grammar).
        authentication_results=tuple(
            _FOLD.sub(" ", _unraw(v)).strip() for v in heads.all("Authentication-Results")
        ),
        message_id_synthesized=synthesized,
        from_count=len(from_boxes),
        is_dsn=is_dsn,
        header_problems=(*repairs, *_missing_headers(heads, from_boxes, from_addr), *_address_problems(heads)),
    )
