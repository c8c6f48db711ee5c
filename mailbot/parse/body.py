"""The MIME tree and the sender's own text: mail-parser, bounded and deterministic, and the top-level body.

mail-parser walks the MIME tree and decodes the bodies; the monkeypatches below are applied when
`mailbot.parse` is imported (mail-parser is pinned exactly in pyproject.toml).
"""

from __future__ import annotations

import binascii
import logging
import re
from collections import Counter
from email.message import Message

import mailparser
import mailparser.core
import mailparser.utils

import mailbot.parse.charsets as charsets
from mailbot.models import Attachment
from mailbot.parse.feed import parse_text
from mailbot.parse.headers import _decode_header_linear, _unraw, decode_header_value
from mailbot.parse.htmltext import html_to_text
from mailbot.parse.quotes import cut_html_history
from mailbot.parse.redact import redact, redact_html

# mail-parser logs every defect at WARNING; defects are normal in real mail and we report them ourselves.
logging.getLogger("mailparser").setLevel(logging.CRITICAL)
# mail-parser names an attachment that has no name with ten random letters (`znkjtkninm.txt`). parse() is a
# function of the bytes alone — the same mail parsed twice, or by a parse worker, reads the same — so the
# invented name is fixed: `unnamed.txt`. mail-parser is pinned; tests/test_parse.py checks this.
mailparser.core.random_string = lambda string_length=10: "unnamed"
# mail-parser decodes each attachment's filename with the stdlib's decode_header: a filename of 64 KB of
# `=?utf-8?q?a ` took 2.8 s there, 256 KB 42 s. It gets the linear twin (same result: tests/test_hostile.py).
mailparser.utils.decode_header = _decode_header_linear
# mail-parser also parses every Received header (hops, dates) for its `.received`, which nothing here reads
# (the RFC 8601 verdict we trust is Authentication-Results): 10,000 Received lines cost it 1.3 s a mail.
mailparser.core.receiveds_parsing = lambda receiveds, **diagnostics: []
_MIME_HEADERS = ("content-type", "content-disposition", "content-id", "content-transfer-encoding")
_mime_header_view = mailparser.core.mime_header_view


def _mime_header_view_8bit(part: Message) -> tuple[Message, list[str]]:
    """mail-parser's view of a part's MIME headers, with raw 8-bit values read in their own charset.

    mail-parser reads such values as UTF-8 with U+FFFD for the rest: a GBK attachment name written raw
    (`filename="日志文件.zip"` from older Outlook and Foxmail) came out `��־�ļ�.zip`. Its defects are kept."""
    view, defects = _mime_header_view(part)
    if not defects:  # every value was UTF-8 already: mail-parser's view is right
        return view, defects
    fixed = Message()
    fixed.set_default_type(part.get_default_type())
    for name, raw in part.raw_items():
        if name.lower() in _MIME_HEADERS:
            fixed[name] = _unraw(str(raw))
    return fixed, defects


mailparser.core.mime_header_view = _mime_header_view_8bit


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
    stdlib's whole. The stdlib's parser here is our copy of it (mailbot/parse/feed.py: the same code, with
    boundary lines matched without compiling a regex for each)."""
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser does
    first = _NOT_A_HEADER_LINE.search(text)
    eol = text.find("\n", first.start()) if first is not None else -1
    # A `From ` line under the first may be the body's first line: the stdlib decides that when it is done.
    if first is None or eol == -1 or _LONE_CR.search(text, 0, eol + 1) or text.find("\nFrom ", 0, eol) >= 0:
        return parse_text(text)
    msg = parse_text(text[: eol + 1])
    if msg.get_content_maintype() in ("multipart", "message"):
        return parse_text(text)
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
# Matched on the lower-cased bytes (re.I on bytes is ASCII-only, as bytes.lower() is), each try starting
# where `boundary` is: a case-blind pattern, or one that starts with `\b` or `^`, is tried at every byte
# (two such scans were a tenth of the parse).
_BOUNDARY_PARAM = re.compile(rb'boundary(?:\*0)?\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))')
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")  # \b's word characters, lower-cased


def _boundaries(raw: bytes) -> set[bytes]:
    """Every boundary declared anywhere in the message (`boundary=` or `boundary*0=`, any case, after a
    non-word byte), as written."""
    lowered = raw.lower()
    found: set[bytes] = set()
    at = lowered.find(b"boundary")
    while at != -1:
        m = None if at and lowered[at - 1] in _WORD_BYTES else _BOUNDARY_PARAM.match(lowered, at)
        if m is None:
            at = lowered.find(b"boundary", at + 1)
            continue
        group = 1 if m.start(1) != -1 else 2
        found.add(raw[m.start(group) : m.end(group)])
        at = lowered.find(b"boundary", m.end())
    return found


def _dash_lines(raw: bytes) -> Counter[bytes]:
    """How many times each text follows `--` at a line start (`^--([^\r\n]{1,200})`, re.M: after `\n` only),
    blanks at its end dropped."""
    lines: Counter[bytes] = Counter()
    at = 0 if raw.startswith(b"--") else raw.find(b"\n--")
    while at != -1:
        start = at + 2 if at == 0 and raw.startswith(b"--") else at + 3
        end = min(start + 200, len(raw))
        for stop in (raw.find(b"\n", start, end), raw.find(b"\r", start, end)):
            if stop != -1:
                end = min(end, stop)
        if end > start:
            lines[raw[start:end].rstrip(b" \t")] += 1
        at = raw.find(b"\n--", start - 1)
    return lines


def _count_parts(raw: bytes) -> int:
    """How many body parts the message's multiparts hold, counted from the raw bytes in one pass: the
    lines that open a part with a boundary declared anywhere in the message."""
    boundaries = _boundaries(raw)
    if not boundaries:
        return 0
    lines = _dash_lines(raw)
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
        # A byte order mark (Notepad, some Windows mailers) is not text: left in, it hid an engineer's
        # `#close` on the first line and was quoted in reminders (the UTF-8/UTF-16 codecs keep U+FEFF).
        text = self._better_text(part, charset, part_index).removeprefix("\ufeff")
        self.decoded_texts[id(part)] = text
        return text

    def _better_text(self, part, charset, part_index):  # type: ignore[no-untyped-def]
        if (padded := _padded_qp(part)) is not None:
            return charsets.decode_text(padded, _charset_of(part, padded))
        text = super()._decode_body_payload(part, charset, part_index)
        if "\ufffd" not in text:
            # Read without error; only UTF-8 under a Chinese label deserves a second look (GB18030 reads much
            # UTF-8 without an error, into mojibake): charsets.decode_text tells the two apart.
            if text.isascii() or not charsets.is_chinese_label(part.get_content_charset()):
                return text
            try:
                payload = part.get_payload(decode=True)
            except Exception:  # a broken transfer encoding: keep what mail-parser made of it
                return text
            return charsets.decode_text(payload, part.get_content_charset()) if isinstance(payload, bytes) else text
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a broken transfer encoding: keep what mail-parser made of it
            return text
        if not isinstance(payload, bytes) or not payload:
            return text
        better = charsets.decode_text(payload, _charset_of(part, payload))
        return better if better.count("\ufffd") < text.count("\ufffd") else text


# RFC 2045 §6.7 (3): blanks at the end of a quoted-printable line are transport padding, to be deleted, so
# `= ` at a line end is still a soft line break. The stdlib (binascii.a2b_qp) keeps `= ` and the break, and
# in a GBK or UTF-8 text whose encoder split a character at the break, every character after it was misread.
_QP_PADDED_SOFT_BREAK = re.compile(r"=[ \t]+(?=\r?\n|\Z)")


# HTML5 §13.2.3.2 (the prescan): a page's <meta charset="…"> or <meta http-equiv … content="…; charset=…">
# within its first 1,024 bytes. Matched on lower-cased bytes; `\s*` and `=` are disjoint: linear.
_META_CHARSET = re.compile(rb"charset\s*=\s*[\"']?([a-z0-9_.:-]{1,40})")
_PRESCAN = 1024


def _charset_of(part: Message, payload: bytes) -> str | None:
    """The part's charset parameter; for HTML that has none, the charset its <meta> declares. HTML-only mail
    (Big5 from Taiwan and Hong Kong clients) often names its charset only there; without it the bytes were
    guessed, and Big5 read as GB18030 is a valid-looking string of wrong characters."""
    declared = part.get_content_charset()
    if declared or part.get_content_type() != "text/html":
        return declared
    head = payload[:_PRESCAN].lower()
    m = _META_CHARSET.search(head, head.find(b"<meta")) if b"<meta" in head else None
    return m.group(1).decode("ascii") if m else None


def _padded_qp(part: Message) -> bytes | None:
    """The decoded bytes of a quoted-printable part whose soft line breaks carry trailing blanks, or None
    when the part is not such a part (the stdlib's decoding is then right)."""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "quoted-printable":
        return None
    raw = part.get_payload()
    if not isinstance(raw, str) or not _QP_PADDED_SOFT_BREAK.search(raw):
        return None
    return binascii.a2b_qp(_QP_PADDED_SOFT_BREAK.sub("=", raw).encode("ascii", "surrogateescape"))


# Parts that carry someone else's message, never the sender's own words: an attached or forwarded mail
# (RFC 2046 §5.2, RFC 6532 message/global), a report's returned headers (RFC 6522) and its status fields.
_NOT_OWN_TEXT = ("message/", "text/rfc822-headers")
MAX_BODY_DEPTH = 50


def _may_name_a_file(part: Message) -> bool:
    """False when part.get_filename() is None for certain: it reads the `filename` parameter of
    Content-Disposition or the `name` of Content-Type (RFC 2231 pieces `filename*0*` included), and neither
    header names either: most parts are spared two parameter parses. (Names are compared lower-cased, and
    no character but an ASCII letter lower-cases to a letter of `filename`.)"""
    return any("name" in str(part.get(header, "")).lower() for header in ("content-disposition", "content-type"))


def _own_text(part: Message, texts: dict[int, str], depth: int = 0) -> tuple[str, str] | None:
    """The first body unit of a MIME (sub)tree as (plain, html) text, either possibly empty; None when the
    subtree holds none. A multipart/alternative offers both of its versions; any other multipart gives its
    first child that holds a body. Attachments and message/* parts are never descended into."""
    # `text/plain charset=gbk` (no `;`, from broken mailers) is one token to the stdlib, so the whole body was
    # dropped as no text part at all; the type is its first word (a type never holds a blank, RFC 2045 §5.1).
    ctype = part.get_content_type().split(None, 1)[0]
    if depth > MAX_BODY_DEPTH or ctype.startswith(_NOT_OWN_TEXT):
        return None
    disposition = part.get_content_disposition()
    if disposition == "attachment" or (disposition != "inline" and _may_name_a_file(part) and part.get_filename()):
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


def _attachments(parsed: mailparser.MailParser) -> tuple[Attachment, ...]:
    out = []
    for a in parsed.attachments:
        payload = a.get("payload") or ""
        if a.get("binary"):  # base64 as on the wire: line breaks and padding are not content
            b64 = "".join(str(payload).split())  # re.sub(r"\s+", "", …), in C: the same blanks (Py_UNICODE_ISSPACE)
            size = max(0, len(b64) * 3 // 4 - len(b64) + len(b64.rstrip("=")))
        else:
            size = len(str(payload).encode("utf-8", "replace"))
        name = redact(decode_header_value(a.get("filename") or "")) or "(unnamed)"  # `密码：x.txt` happens
        out.append(Attachment(name=name, content_type=str(a.get("mail_content_type") or ""), size=size))
    return tuple(out)

