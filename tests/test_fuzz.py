"""Property: whatever bytes arrive, parse() returns an InboundMail or a ParseFailure, and nothing after it
(match, commands, redaction, out-of-office dates) raises on what parse produced.

Messages are built from random headers (encoded words in random charsets, raw 8-bit bytes), random
Content-Transfer-Encodings and random MIME trees, or are corpus messages mutated by byte flips,
truncation and duplicated headers. `make test` runs a small number of examples; `make fuzz` sets
MAILBOT_FUZZ_EXAMPLES=10000.
"""

from __future__ import annotations

import base64
import os
import quopri
import re
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbot.decide.commands import find_commands
from mailbot.decide.ooo import return_date
from mailbot.match import Index, match, title_of
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import parse
from mailbot.parse.redact import redact

EXAMPLES = int(os.environ.get("MAILBOT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

PATTERNS = (re.compile(r"CAS-\d{5}-[A-Z0-9]{6}", re.I),)
TOKEN = re.compile(r"CMIT:\d{7}", re.I)
KNOWN = {"<initial-04027@support.example>": "CAS-04027-B7D2Z5"}
INDEX = Index(case_for_message=KNOWN.get, case_for_token={"CMIT:0001247": "CAS-04027-B7D2Z5"}.get)


def _seed_messages() -> list[bytes]:
    """Corpus, scenario and our own test data: whatever is present (the last always is)."""
    env = os.environ.get("MAILBOT_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    folders = [shared / "corpus", shared / "scenario", Path(__file__).resolve().parent / "data"]
    files = [p for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix not in (".md", ".tsv")]
    return [p.read_bytes() for p in files if p.stat().st_size <= 64_000]


SEEDS = _seed_messages()


def check(raw: bytes) -> None:
    result = parse(raw)
    assert isinstance(result, InboundMail | ParseFailure)
    if isinstance(result, ParseFailure):
        assert result.reason
        return
    assert result.message_id
    found = match(result, PATTERNS, TOKEN, INDEX)
    if found.key:
        title_of(result.subject, found.key, TOKEN)
    find_commands(result.new_text)
    assert redact(result.new_text) == result.new_text  # parse already masked everything
    return_date(result.new_text, date(2021, 4, 13))


# --- building blocks -----------------------------------------------------------------------------------

CHARSETS = ["utf-8", "gb2312", "GBK", "gb18030", "big5", "iso-2022-jp", "euc-jp", "shift_jis", "iso-8859-1",
            "windows-1252", "koi8-r", "us-ascii", "utf-16", "x-unknown", "", "utf-8'zh'", "base64", "\x00"]
TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["回复: [案例号: CAS-04027-B7D2Z5 ] 朱镕基 测试", "初次响应 CMIT:0001247", "王堃 张喆",
                     "密码：Xk93-fake-Pw77", "#close\n问题描述: x", "4月14日返回", "自动回复", "養樂多"]),
)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    text = draw(TEXTS)
    charset = draw(st.sampled_from(CHARSETS))
    try:
        data = text.encode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        data = text.encode("gb18030")
    if draw(st.booleans()):
        data = draw(st.binary(max_size=20)) + data
    if draw(st.booleans()):
        return f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    return f"=?{charset}?Q?{quopri.encodestring(data, header=True).decode(errors='replace')}?="


HEADER_NAMES = ["Subject", "From", "To", "Cc", "Sender", "Date", "Message-ID", "In-Reply-To", "References",
                "Auto-Submitted", "Precedence", "Return-Path", "List-Id", "X-Autoreply", "X-Failed-Recipients",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "X-Whatever", "Bad Name\t!"]


@st.composite
def header_values(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.one_of(
        encoded_words().map(str.encode),
        TEXTS.map(lambda t: t.encode("utf-8")),
        TEXTS.map(lambda t: t.encode("gb18030")),
        st.sampled_from([b"<a@b>", b"<initial-04027@support.example>", b"Li Qi <liqi@support.example>",
                         b"\"Li, Qi\" <liqi@support.example>", b"<>", b"auto-replied", b"bulk", b"undisclosed:;",
                         b"Mon, 12 Apr 2021 17:52:59 +0000", b"Mon, 99 Foo 2021", b"\r\n ", b"\r\n\t"]),
        st.binary(max_size=16),
    ), max_size=5))
    return b" ".join(parts)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values()), max_size=12))
    return b"".join(name.encode() + b": " + value + b"\r\n" for name, value in lines)


CTES = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "BASE64", " base64 ", "bogus", ""]


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    ctype = draw(st.sampled_from(["text/plain", "text/html", "application/octet-stream", "image/png",
                                  "message/delivery-status", "text/rfc822-headers", "message/rfc822", "text/x-foo"]))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(CTES))
    text = draw(TEXTS)
    try:
        body = text.encode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        body = text.encode("gb18030")
    if draw(st.booleans()):
        body += draw(st.binary(max_size=64))
    if cte.strip().lower() == "base64" and draw(st.booleans()):
        body = base64.encodebytes(body)
    elif cte == "quoted-printable" and draw(st.booleans()):
        body = quopri.encodestring(body)
    disposition = draw(st.sampled_from([b"", b"Content-Disposition: attachment; filename=\"a.bin\"\r\n",
                                        b"Content-Disposition: inline\r\n",
                                        b"Content-Disposition: attachment; filename*=UTF-8''%E6%97%A5.zip\r\n",
                                        b"Content-Disposition: attachment; filename*0*=x; filename*2=y\r\n"]))
    return (f"Content-Type: {ctype}; charset=\"{charset}\"\r\nContent-Transfer-Encoding: {cte}\r\n".encode()
            + disposition + b"\r\n" + body)


def _multipart(children: list[bytes], boundary: str, subtype: str, closed: bool) -> bytes:
    out = f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n".encode()
    for child in children:
        out += f"--{boundary}\r\n".encode() + child + b"\r\n"
    return out + (f"--{boundary}--\r\nepilogue\r\n".encode() if closed else b"")


MIME_TREES = st.recursive(
    leaf(),
    lambda inner: st.builds(
        _multipart,
        st.lists(inner, max_size=4),
        st.sampled_from(["b1", "b2", "==x==", "b1", ""]),  # reused and empty boundaries on purpose
        st.sampled_from(["mixed", "alternative", "related", "report", "signed"]),
        st.booleans(),
    ),
    max_leaves=12,
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    head = draw(headers())
    tree = draw(MIME_TREES)
    newline = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    raw = head + b"MIME-Version: 1.0\r\n" + tree
    return raw.replace(b"\r\n", newline) if newline != b"\r\n" else raw


# --- properties ----------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(messages())
def test_built_messages(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(headers(), st.binary(max_size=300))
def test_random_headers_over_random_bodies(head: bytes, body: bytes) -> None:
    check(head + b"\r\n" + body)


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete-line"]))
        if not raw:
            break
        if op == "flip":
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del raw[draw(st.integers(0, len(raw))):]
        elif op == "duplicate":  # a header line repeated (two Subjects, two Content-Types …)
            lines = bytes(raw).split(b"\n")
            end = lines.index(b"") if b"" in lines else len(lines)
            if end:
                i = draw(st.integers(0, end - 1))
                lines.insert(i, lines[i])
                raw = bytearray(b"\n".join(lines))
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw[i:i] = draw(st.sampled_from([b"\x00", b"\r", b"\n\n", b"=?gb2312?B?", b"--", b"\xff\xfe", b":"]))
        else:
            lines = bytes(raw).split(b"\n")
            del lines[draw(st.integers(0, len(lines) - 1))]
            raw = bytearray(b"\n".join(lines))
    return bytes(raw)


@FUZZ
@given(mutated_seeds())
def test_mutated_corpus_messages(raw: bytes) -> None:
    check(raw)
