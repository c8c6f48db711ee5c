"""The header block made readable for the stdlib: stray lines before it, nameless lines, blanks in names."""

from __future__ import annotations

import re

from mailbot.parse.headers import _CONTROL

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

