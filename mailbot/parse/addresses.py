"""Address headers as mailboxes: RFC 5322 addr-specs, comments, and a bound on how much is read."""

from __future__ import annotations

import re
from email.message import Message
from email.utils import getaddresses

from mailbot.parse.headers import _FOLD, _Headers, _raw_all, _unraw, decode_header_value

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


# The shapes nearly every address header has — `a@b`, `Name <a@b>`, `"Li, Qi" <a@b>`, `=?utf-8?b?…?= <a@b>`,
# a comma between mailboxes — read by one pattern, with the stdlib's parser (a character at a time in Python,
# a third of the time spent on headers) for everything else. What the pattern reads, the stdlib reads the same
# (tests/test_parse_fast_paths.py checks both on every test mail and on random mixes of these characters):
# no comment, group, domain literal, backslash or line break (_NOT_COMMON); a display name of atoms (`.`
# allowed, RFC 5322 §4.1 obs-phrase) and quoted strings, whose words the stdlib joins with one space;
# nothing but spaces and tabs between the pieces (the stdlib's only blanks: U+3000 is part of an atom).
_NOT_COMMON = re.compile(r"[()\[\]:;\\\r\n]")
_ATOMS = r'[^<>@," \t]+'  # what the stdlib reads as an atom, once _NOT_COMMON is ruled out
# An address without any blank: the stdlib drops a piece of an address that str.strip() empties (`\x0b@b`).
_ADDR = r'[^<>@,"\s]+@[^<>@,"\s]+'
_COMMON_MAILBOX = re.compile(  # possessive and atomic: each piece is read one way only, so it stays linear
    rf'[ \t]*+(?:((?>"[^"]*"|{_ATOMS}|[ \t]+)*)<({_ADDR})>|({_ADDR}))[ \t]*+(?:,|\Z)'
)
_PHRASE_WORD = re.compile(rf'"([^"]*)"|({_ATOMS})')


def _common_addresses(value: str) -> list[tuple[str, str]] | None:
    """getaddresses([value]) for the common shapes; None for any other (the stdlib's parser reads those)."""
    if _NOT_COMMON.search(value):
        return None
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(value):
        m = _COMMON_MAILBOX.match(value, pos)
        if m is None:  # also a blank or empty mailbox, which the stdlib names ('', '')
            return None
        phrase, routed, bare = m.groups()
        if bare is not None:
            out.append(("", bare))
        else:
            words = _PHRASE_WORD.finditer(phrase)
            out.append((" ".join(w[1] if w[1] is not None else w[2] for w in words), routed))
        pos = m.end()
    return out


def _getaddresses(values: list[str]) -> list[tuple[str, str]]:
    """email.utils.getaddresses, without RFC 5322 comments in display names: the stdlib appends them
    (`MAILER-DAEMON (Mail Delivery System) <…>` came out named `MAILER-DAEMON (Mail Delivery System)`).
    A comment stands in only where there is no name at all — `addr (Full Name)`, the RFC 822 habit that
    Postfix bounces keep — as mail clients show it."""
    out: list[tuple[str, str]] = []
    for value in values:
        common = _common_addresses(value)
        if common is not None:  # no comment in it either
            out.extend(common)
            continue
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

