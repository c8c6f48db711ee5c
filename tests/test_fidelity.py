"""Mail fidelity (issue 18): real-world header blocks that other helpdesks read right are read right here too.

Each table is a class of mail as old clients, forwarders and mail servers write it, and what `parse` (and
`mailbot explain`) must make of it: raw 8-bit headers in a charset the body does not declare, a header block
broken by a line without its leading blank, comments in addresses, a stray line before the headers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import charsets, parse

CUSTOMER = "yang@customer.example"


def raw_mail(*headers: bytes, parts: tuple[tuple[str, bytes], ...] = (("utf-8", b"hello\n"),),
             msgid: bool = True) -> bytes:
    """A mail with the given header lines (raw bytes, written as they are) and one text part per
    (charset, body); more than one part makes a multipart/mixed whose first part declares the first charset."""
    head = list(headers) + ([b"Message-ID: <fidelity@customer.example>"] if msgid else []) + [b"MIME-Version: 1.0"]
    if len(parts) == 1:
        charset, body = parts[0]
        head += [f"Content-Type: text/plain; charset={charset}".encode(), b"Content-Transfer-Encoding: 8bit"]
        return b"\r\n".join(head) + b"\r\n\r\n" + body
    head.append(b'Content-Type: multipart/mixed; boundary="b"')
    out = b"\r\n".join(head) + b"\r\n\r\n"
    for charset, body in parts:
        out += (f"--b\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                .encode() + body + b"\r\n")
    return out + b"--b--\r\n"


def ok(raw: bytes) -> InboundMail:
    result = parse(raw)
    assert isinstance(result, InboundMail), result
    return result


# --- raw 8-bit bytes in headers ------------------------------------------------------------------------

# (subject, display name, charset the headers are written in, the parts' declared charsets)
RAW_HEADERS = [
    # a GBK subject, and the first part an iso-8859-1 wrapper: was read as Latin-1 (`¹ØÓÚ·þÎñÆ÷`)
    ("关于服务器无法启动的问题", "王堃", "gbk", ("iso-8859-1", "gbk")),
    ("服务器", "杨先生", "gbk", ("iso-8859-1",)),
    # a Shift_JIS subject in a mail that declares iso-2022-jp: was GB18030 mojibake (`尒愊彂偺審`)
    ("見積書の件", "山田", "shift_jis", ("iso-2022-jp",)),
    ("お問い合わせの件について", "鈴木", "shift_jis", ("iso-8859-1",)),
    ("繁體中文測試郵件", "陳大文", "big5", ("us-ascii",)),
    ("회의 일정 안내", "김철수", "euc_kr", ("iso-8859-1",)),
    ("日本語のメール", "田中", "euc_jp", ("euc-jp",)),
    # UTF-8 first, whatever the body declares
    ("回复: 朱镕基 测试", "王堃", "utf-8", ("gbk",)),
    # Western mail stays Western: the CJK family must not claim Latin-1 bytes
    ("Re: Ärger mit dem Drucker", "Wilhelmsen Håvard", "iso-8859-1", ("iso-8859-1",)),
    ("Café résumé", "Müller", "iso-8859-1", ("utf-8",)),
    ("Привет мир", "Иван", "koi8-r", ("koi8-r",)),
]


@pytest.mark.parametrize(("subject", "name", "written_in", "declared"), RAW_HEADERS,
                         ids=[f"{r[2]}-declared-{'+'.join(r[3])}" for r in RAW_HEADERS])
def test_raw_8bit_headers_are_read_in_their_own_charset(subject: str, name: str, written_in: str,
                                                        declared: tuple[str, ...]) -> None:
    parts = tuple((cs, b"body\n") for cs in declared)
    m = ok(raw_mail(b"Subject: " + subject.encode(written_in),
                    b"From: " + name.encode(written_in) + f" <{CUSTOMER}>".encode(), parts=parts))
    assert (m.subject, m.from_name, m.from_addr) == (subject, name, CUSTOMER)


def test_the_detector_runs_only_when_strict_decodes_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASCII and UTF-8 headers, and bytes only one candidate reads, never reach charset-normalizer; a GBK
    subject in an iso-8859-1 mail does, and only with a bounded sample."""
    import charset_normalizer

    seen: list[int] = []
    real = charset_normalizer.from_bytes

    def spy(data: bytes, **kwargs: object) -> object:
        seen.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(charset_normalizer, "from_bytes", spy)
    ok(raw_mail(b"Subject: plain", f"From: Yang <{CUSTOMER}>".encode()))
    ok(raw_mail("Subject: 回复: 测试".encode(), f"From: Yang <{CUSTOMER}>".encode(), parts=(("gbk", b"x"),)))
    assert seen == []
    long_subject = "关于服务器无法启动的问题" * 2000  # 48 KB of GBK
    m = ok(raw_mail(b"Subject: " + long_subject.encode("gbk"), f"From: Yang <{CUSTOMER}>".encode(),
                    parts=(("iso-8859-1", b"x"),)))
    assert m.subject.startswith("关于服务器无法启动的问题")
    assert seen and max(seen) <= 4096


def test_latin1_is_the_last_resort_and_never_raises() -> None:
    # 0x81 alone: no CJK codec and not cp1252 read it; Latin-1 does, and nothing raises.
    assert charsets.decode_8bit(b"\x81\x81\x81", None) == "\x81\x81\x81"
    assert charsets.guess_8bit(b"plain ascii") == "utf-8"
    assert charsets.guess_8bit("服务器".encode("gbk"), ["iso-8859-1"]) == "gb18030"


# --- a header block broken by a line without its leading blank ----------------------------------------

VENDOR = b"X-Vendor-Trace: id=8812; route=mx1.customer.example,mx2.customer.example; policy=default"
FOLDED_WITHOUT_BLANK = b"scanned at 2026-12-01 08.00Z; verdict=clean; engine=v2"  # no colon: not a header


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_headers_after_an_unindented_continuation_are_kept(eol: bytes) -> None:
    raw = eol.join([
        b"Received: from mx1.customer.example by mx.support.example",
        VENDOR, FOLDED_WITHOUT_BLANK,
        "Subject: 回复: [案例号: CAS-04027-B7D2Z5 ] 蓝屏".encode(),
        f"From: Yang <{CUSTOMER}>".encode(),
        b"To: casebot@support.example",
        b"Message-ID: <broken-fold@customer.example>",
        b"Content-Type: text/plain; charset=utf-8",
        b"", "您好，日志已上传。".encode(),
    ])
    m = ok(raw)
    assert m.subject == "回复: [案例号: CAS-04027-B7D2Z5 ] 蓝屏"
    assert (m.from_name, m.from_addr, m.to) == ("Yang", CUSTOMER, ("casebot@support.example",))
    assert m.message_id == "<broken-fold@customer.example>"
    assert m.new_text.startswith("您好，日志已上传。")  # not the header lines
    assert any("joined to the header above" in p for p in m.header_problems), m.header_problems


def test_a_body_without_the_empty_line_stays_body() -> None:
    """No known header follows the first line that is not a header: that is where the body begins (the
    mail simply lacks the empty line), and it is left as it was read before."""
    raw = (f"From: Yang <{CUSTOMER}>\nSubject: logs\nMessage-ID: <nosep@customer.example>\n"
           "Hello team,\nthe logs are attached.\n\nRegards\n").encode()
    m = ok(raw)
    assert (m.subject, m.from_addr) == ("logs", CUSTOMER)
    assert "Hello team" in m.new_text
    assert m.header_problems == ()


MISSING = [
    # (header lines, what explain must say)
    ((b"Subject: no sender here", b"To: casebot@support.example"), ["no From header: the mail is from nobody"]),
    ((f"From: Yang <{CUSTOMER}>".encode(),), ["no Subject header"]),
    ((b"Sender: Li Qi <liqi@support.example>",),
     ["no From header: the author is taken from Sender", "no Subject header"]),
    ((b"From: =?utf-8?b?eWFuZ0BjdXN0b21lci5leGFtcGxl?=", b"Subject: x"),
     ["From names no readable address (1 mailbox(es))"]),
    ((f"From: Yang <{CUSTOMER}>".encode(), b"Subject: all there"), []),
]


@pytest.mark.parametrize(("headers", "problems"), MISSING)
def test_a_mail_without_from_or_subject_is_flagged(headers: tuple[bytes, ...], problems: list[str]) -> None:
    assert list(ok(raw_mail(*headers)).header_problems) == problems


def test_explain_shows_what_the_header_block_lacked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[bot]\naddress = "casebot@support.example"\nstate_dir = "state"\n'
                      '[engineers]\ndomains = ["support.example"]\n[mailbox]\npath = "maildir"\n', encoding="utf-8")
    eml = tmp_path / "nobody.eml"
    eml.write_bytes(b"\n".join([b"Received: by mx", VENDOR, FOLDED_WITHOUT_BLANK, b"To: casebot@support.example",
                                b"Message-ID: <n@x.example>", b"", b"hi"]))
    assert main(["explain", str(eml), "--json", "--config", str(config)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["from"] == "" and "no From header: the mail is from nobody" in data["header_problems"]
    assert "no Subject header" in data["header_problems"]
    assert main(["explain", str(eml), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no From header: the mail is from nobody" in out and "joined to the header above" in out


# --- comments in addresses ---------------------------------------------------------------------------

COMMENTS = [
    # RFC 5322 §3.2.2: a comment is not part of the display name
    ("MAILER-DAEMON (Mail Delivery System) <MAILER-DAEMON@mx.customer.example>", "MAILER-DAEMON",
     "mailer-daemon@mx.customer.example"),
    ('"Mail Delivery System" (via mx1) <MAILER-DAEMON@mx.customer.example>', "Mail Delivery System",
     "mailer-daemon@mx.customer.example"),
    ("(work) Yang Wei <yang@customer.example>", "Yang Wei", CUSTOMER),
    ("Yang Wei <yang@customer.example> (work)", "Yang Wei", CUSTOMER),
    ("=?utf-8?b?5p2o5YWI55Sf?= (=?utf-8?b?5a6i5oi3?=) <yang@customer.example>", "杨先生", CUSTOMER),
    # parentheses inside a quoted string are the name, not a comment
    ('"Yang (Beijing office)" <yang@customer.example>', "Yang (Beijing office)", CUSTOMER),
    # no name at all: the comment stands in (`addr (Full Name)`, as Postfix bounces write it)
    ("MAILER-DAEMON@mx.customer.example (Mail Delivery System)", "Mail Delivery System",
     "mailer-daemon@mx.customer.example"),
    ("(Mail Delivery System) <MAILER-DAEMON@mx.customer.example>", "Mail Delivery System",
     "mailer-daemon@mx.customer.example"),
    ("yang@customer.example (Yang (nested) Wei)", "Yang nested Wei", CUSTOMER),
    # an unclosed comment: no exception, the address still found
    ("Yang (unclosed <yang@customer.example>", None, None),
]


@pytest.mark.parametrize(("value", "name", "addr"), COMMENTS)
def test_comments_are_not_part_of_the_display_name(value: str, name: str | None, addr: str | None) -> None:
    m = ok(raw_mail(f"From: {value}".encode(), b"Subject: x"))
    if name is not None:
        assert (m.from_name, m.from_addr) == (name, addr)


def test_a_comma_in_a_comment_does_not_split_the_list() -> None:
    m = ok(raw_mail(f"From: Yang <{CUSTOMER}>".encode(), b"Subject: x",
                    b"To: liqi@support.example (Li, Qi), Wang <wang@support.example> (Beijing, CN)"))
    assert m.to == ("liqi@support.example", "wang@support.example")


# --- a stray line before the headers --------------------------------------------------------------------

STRAY = [
    b"---- Original email message ----\n",
    b"-----Original Message-----\r\n\r\n",
    b"\xd4\xad\xca\xbc\xd3\xca\xbc\xfe\n",  # `原始邮件` in GBK
    b"Forwarded by the helpdesk gateway\nat 2026-12-01 08:00\n",
]


@pytest.mark.parametrize("stray", STRAY)
def test_headers_after_a_stray_line_are_recovered(stray: bytes) -> None:
    m = ok(stray + raw_mail(f"From: Yang <{CUSTOMER}>".encode(), "Subject: 蓝屏".encode()))
    assert (m.subject, m.from_addr, m.message_id) == ("蓝屏", CUSTOMER, "<fidelity@customer.example>")
    assert m.header_problems and "before the headers skipped" in m.header_problems[0]


def test_text_that_is_not_followed_by_headers_is_still_quarantined() -> None:
    for raw in (b"---- Original email message ----\nno headers here\n\nat all\n",
                b"one\ntwo\nthree\nfour\nFrom: too@late.example\n\nx\n"):
        assert isinstance(parse(raw), ParseFailure)


# --- every repair stays linear on hostile input ------------------------------------------------------

def _lines(n: int) -> bytes:
    return b"continued without blank\r\n" * n


HOSTILE: dict[str, Callable[[int], bytes]] = {
    "unindented lines, then headers": lambda kb: raw_mail(VENDOR, _lines(kb * 40)[:-2], b"Subject: x"),
    "unindented lines, no header after": lambda kb: raw_mail(b"Subject: x", VENDOR, _lines(kb * 40)[:-2]),
    "bad names and unindented lines": lambda kb: raw_mail(b"Subject: x", b"X a b: c\r\nno colon\r\n" * (kb * 60)),
    "open comments in From": lambda kb: raw_mail(b"From: " + b"(" * (kb * 1024) + b" <a@b.example>", b"Subject: x"),
    "comments in To": lambda kb: raw_mail(b"From: a@b.example", b"To: " + b"a@b.example (c, d), " * (kb * 50)),
    "quotes and parens in From": lambda kb: raw_mail(b'From: ' + b'"(\\"' * (kb * 256) + b" <a@b.example>"),
    "raw GBK subject, Latin-1 declared": lambda kb: raw_mail(
        b"Subject: " + "服务器".encode("gbk") * (kb * 170), parts=(("iso-8859-1", b"x"),)),
    "stray first line of one word": lambda kb: b"-" * (kb * 1024) + b"\nFrom: a@b.example\n\nx",
}


def _seconds(raw: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parse(raw)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_header_repairs_take_linear_time(shape: str) -> None:
    """n and 4n KB of each shape: a linear parse takes ~4 times as long, a quadratic one ~16 times."""
    make = HOSTILE[shape]
    small, large = _seconds(make(16)), _seconds(make(64))
    ratio = large / max(small, 1e-3)  # below a millisecond is noise
    assert ratio < 8, f"{shape}: 16 KB {small:.4f} s, 64 KB {large:.4f} s (×{ratio:.1f})"
