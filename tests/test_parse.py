"""parse(): raw bytes in, an InboundMail (or a ParseFailure with a reason) out — never an exception.

Each table below is a piece of the spec: the input as it arrives from Outlook, Foxmail, Gmail or a mail
server, and what the bot must make of it.
"""

from __future__ import annotations

import base64
import os
import quopri
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mailbot.config import EngineerSettings
from mailbot.decide.commands import find_commands
from mailbot.decide.ooo import return_date
from mailbot.decide.roles import sender_role
from mailbot.models import Attachment, ClosureFields, Flag, InboundMail, ParseFailure, Role
from mailbot.parse import decode_header_value, parse
from mailbot.parse.quotes import split_reply

DATA = Path(__file__).resolve().parent / "data"


def shared_dir() -> Path | None:
    """../shared beside the checkout; MAILBOT_SHARED overrides; None when absent (tests then skip)."""
    env = os.environ.get("MAILBOT_SHARED")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return candidate if candidate.is_dir() else None


def ew(text: str, charset: str, encode_as: str | None = None) -> str:
    """An RFC 2047 B-encoded word; `encode_as` builds mislabelled mail (GBK bytes labelled gb2312)."""
    data = text.encode(encode_as or charset)
    return f"=?{charset}?B?{base64.b64encode(data).decode()}?="


def mail(*headers: str | bytes, body: bytes | str = b"hello\n", charset: str = "utf-8", cte: str = "8bit",
         msgid: bool = True) -> bytes:
    """A one-part text/plain message; headers given as `Name: value` lines (str or raw bytes)."""
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    names = {line.split(b":", 1)[0].lower() for line in lines}
    if msgid and b"message-id" not in names:
        lines.append(b"Message-ID: <t@example.test>")
    if b"content-type" not in names:
        lines += [b"MIME-Version: 1.0", f"Content-Type: text/plain; charset={charset}".encode(),
                  f"Content-Transfer-Encoding: {cte}".encode()]
    payload = body.encode(charset if charset != "gb2312" else "gb18030") if isinstance(body, str) else body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def ok(raw: bytes) -> InboundMail:
    result = parse(raw)
    assert isinstance(result, InboundMail), result
    return result


# --- subjects ---------------------------------------------------------------------------------------

SUBJECTS = [
    # the space between an encoded word and plain text is kept (mail-parser drops it)
    (b"Subject: =?utf-8?b?5Yid5qyh5ZON5bqU?= CMIT:0001247", "初次响应 CMIT:0001247"),
    # the scenario's folded subject: two encoded words joined, then plain text on the next line
    (b"Subject: =?utf-8?b?W+ahiOS+i+WPtzogQ0FTLTA0MDI3LUI3RDJaNSBdICUg5p+Q5Y2V5L2N?=\r\n"
     b" =?utf-8?b?57uI56uv6aKR57mB6JOd5bGPICUg5Yid5qyh5ZON5bqU?= CMIT:0001247",
     "[案例号: CAS-04027-B7D2Z5 ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"),
    # labelled gb2312, but holding the GBK-only 镕 堃 喆 (Outlook, Foxmail): decoded as GB18030, intact
    (f"Subject: {ew('回复: [案例号: CAS-04027-B7D2Z5 ] 朱镕基 测试', 'gb2312', 'gb18030')}".encode(),
     "回复: [案例号: CAS-04027-B7D2Z5 ] 朱镕基 测试"),
    (f"Subject: {ew('王堃 张喆', 'GB2312', 'gb18030')}".encode(), "王堃 张喆"),
    (f"Subject: {ew('答复: 测试', 'gbk')}".encode(), "答复: 测试"),
    (f"Subject: {ew('繁體 測試', 'big5')}".encode(), "繁體 測試"),
    (b"Subject: =?gb2312?Q?=BB=D8=B8=B4:_=D6=EC=E9F=BB=F9?=", "回复: 朱镕基"),
    # raw 8-bit headers (no RFC 2047): UTF-8, then the message's charset, then GB18030
    ("Subject: 回复: 朱镕基 测试".encode(), "回复: 朱镕基 测试"),
    ("Subject: 回复: 朱镕基 堃 喆".encode("gb18030"), "回复: 朱镕基 堃 喆"),
    # raw GBK text and an encoded word in one header (was `\\u4e2d\\u6587 …`)
    ("Subject: 中文 ".encode("gbk") + b"=?utf-8?b?5Yid5qyh?= x", "中文 初次 x"),
    # an encoded word in a charset Python does not know: decoded by the fallback, not shown raw
    (b"Subject: =?x-unknown?b?5Yid5qyh5ZON5bqU?= CMIT:0001247", "初次响应 CMIT:0001247"),
    (b"Subject: RE: =?utf-8?q?caf=C3=A9?= ok", "RE: café ok"),
    (b"Subject: plain\r\n  folded\tline", "plain folded line"),
    (b"Subject: =?utf-8?B?broken?=", None),  # undecodable: anything, but no exception
    (b"X-No-Subject: 1", ""),
]


@pytest.mark.parametrize(("header", "expected"), SUBJECTS)
def test_subject_decoding(header: bytes, expected: str | None) -> None:
    m = ok(mail(b"From: a@example.test", header))
    if expected is not None:
        assert m.subject == expected


def test_raw_big5_subject_follows_the_declared_charset() -> None:
    # Corpus finding (Kopano big5.eml): raw Big5 bytes decode as GB18030 without error but as nonsense;
    # the message's own charset is tried first.
    raw = mail("Subject: 養樂多線上訂購".encode("big5"), b"From: a@example.test", charset="big5",
               body="內容".encode("big5"))
    assert ok(raw).subject == "養樂多線上訂購"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("", ""),
        ("=?utf-8?b?5p2o5YWI55Sf?=", "杨先生"),
        ("a\r\n b", "a b"),
        ("nul\x00byte", "nulbyte"),
    ],
)
def test_decode_header_value(value: str | None, expected: str) -> None:
    assert decode_header_value(value) == expected


# --- GB2312-labelled mail with GBK-only characters ---------------------------------------------------

GBK_ONLY = "朱镕基同志：王堃、张喆两位的日志已上传。"


@pytest.mark.parametrize("cte", ["base64", "quoted-printable", "8bit"])
@pytest.mark.parametrize("label", ["gb2312", "GB2312", "gbk", "x-gbk", "cp936"])
def test_gb2312_labelled_body_with_gbk_only_characters(cte: str, label: str) -> None:
    data = GBK_ONLY.encode("gb18030")
    body = {"base64": base64.encodebytes(data), "quoted-printable": quopri.encodestring(data), "8bit": data}[cte]
    subject = f"Subject: {ew('朱镕基 堃 喆', label, 'gb18030')}"
    m = ok(mail(b"From: a@example.test", subject, body=body, charset=label, cte=cte))
    assert m.subject == "朱镕基 堃 喆"
    assert m.new_text == GBK_ONLY


def test_gb2312_file_with_gbk_only_characters_in_subject_name_and_body() -> None:
    m = ok((DATA / "gb2312-gbk-only.eml").read_bytes())
    assert m.subject == "回复: [案例号: CAS-04027-B7D2Z5 ] 朱镕基 测试 喆"
    assert m.from_name == "王堃"
    assert m.new_text == "朱镕基同志：\n王堃、张喆两位的日志已上传。"


def test_a_stray_byte_does_not_cost_the_whole_chinese_body() -> None:
    # mail-parser decodes a body whose declared charset fails as UTF-8 with replacement characters:
    # one broken byte at the end of a GBK mail and every Chinese character was lost.
    data = "日志已经上传，谢谢。".encode("gbk") + b"\xff"
    m = ok(mail(b"From: a@example.test", b"Subject: x", body=base64.encodebytes(data), charset="gb2312", cte="base64"))
    assert m.new_text.startswith("日志已经上传，谢谢。")


def test_a_mislabelled_euc_jp_body_is_read_in_its_family() -> None:
    # Corpus finding (spamassassin iso-2022-jp.2.eml): EUC-JP bytes labelled iso-2022-jp came out as noise.
    data = "調べます。".encode("euc_jp")
    m = ok(mail(b"From: a@example.test", b"Subject: x", body=data, charset="iso-2022-jp", cte="7bit"))
    assert m.new_text == "調べます。"


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("windows-1252http-equivContent-Type", "Orange mécanique".encode("cp1252"), "Orange mécanique"),
        ("big5", "您好！ 你今天好吗？".encode(), "您好！ 你今天好吗？"),  # labelled Big5, really UTF-8
        ("utf-8-purple", b"body", "body"),
    ],
)
def test_wrong_or_unknown_charset_labels(charset: str, data: bytes, expected: str) -> None:
    m = ok(mail(b"From: a@example.test", b"Subject: x", body=base64.encodebytes(data), charset=charset, cte="base64"))
    assert m.new_text == expected


def test_a_header_name_with_blanks_does_not_end_the_headers() -> None:
    # Corpus finding (mnako/letters Chinese fixtures): `X-Script/function/\t !"#…: TEST` has a tab and
    # spaces in its name; the stdlib ended the header section there, so Content-Type and
    # Content-Transfer-Encoding below it were ignored and the GBK base64 body came out as noise.
    data = "石室诗士施氏，嗜狮，誓食十狮。".encode("gbk")
    raw = (b"From: a@example.test\nSubject: x\nMessage-ID: <m@x>\nMIME-Version: 1.0\n"
           b"X-Script/function/\t !\"#$%&'()*+,-./;<=>?@[\\]^_`{|}~: TEST\n VALUE 1\n"
           b"Content-Type: TEXT/PLAIN; CHarset=Gbk\nContent-Transfer-Encoding: BASE64\n\n"
           + base64.encodebytes(data))
    assert ok(raw).new_text == "石室诗士施氏，嗜狮，誓食十狮。"


def test_missing_empty_line_after_headers_still_reads_the_body() -> None:
    # Body text straight after the headers (no empty line): left to the parser's own tolerance.
    raw = b"From: a@example.test\nSubject: x\nHello there, this is the body\nsecond line\n"
    m = parse(raw)
    assert isinstance(m, InboundMail | ParseFailure)


# --- addresses ----------------------------------------------------------------------------------------

ADDRESSES = [
    ("From: Li Qi <LiQi@Support.Example>", ("Li Qi", "liqi@support.example")),
    ("From: liqi@support.example", ("", "liqi@support.example")),
    ('From: "Li, Qi" <liqi@support.example>', ("Li, Qi", "liqi@support.example")),
    # a decoded display name holding a comma stays one address (was split into two, name `先生`)
    (f"From: {ew('杨, 先生', 'utf-8')} <yang@customer.example>", ("杨, 先生", "yang@customer.example")),
    (f"From: {ew('王堃', 'gb2312', 'gb18030')} <wangkun@customer.example>", ("王堃", "wangkun@customer.example")),
    (f'From: "{ew("杨先生", "utf-8")}" <yang@customer.example>', ("杨先生", "yang@customer.example")),
    ("From: 杨先生 <yang@customer.example>".encode("gbk"), ("杨先生", "yang@customer.example")),
    ("From: Wilhelmsen H\xe5vard <h@example.no>".encode("latin-1"), ("Wilhelmsen Håvard", "h@example.no")),
    ("From: undisclosed-recipients:;", ("", "")),
    ("X-From: nobody", ("", "")),
]


@pytest.mark.parametrize(("header", "expected"), ADDRESSES)
def test_from_address(header: str | bytes, expected: tuple[str, str]) -> None:
    m = ok(mail(header, b"Subject: x", charset="iso-8859-1" if b"\xe5" in (header if isinstance(header, bytes) else b"") else "utf-8"))
    assert (m.from_name, m.from_addr) == expected


def test_sender_is_used_when_from_is_missing() -> None:
    m = ok(mail(b"Sender: Li Qi <liqi@support.example>", b"Subject: x"))
    assert m.from_addr == "liqi@support.example"
    assert m.from_count == 0  # so never an engineer (roles.sender_role)


def test_sender_does_not_stand_in_for_an_unreadable_from() -> None:
    m = ok(mail(f"From: {ew('liqi@support.example', 'utf-8')}", b"Sender: liqi@support.example"))
    assert (m.from_addr, m.from_count) == ("", 1)


ENGINEER_IN_A_WORD = ew("liqi@support.example", "utf-8")
# The From header → (from_name, from_addr, from_count). RFC 2047 §5: an encoded word may be (part of) a
# display name, never an address; whatever it decodes to is a name at most.
FROM_CLAIMS = [
    (f"From: {ENGINEER_IN_A_WORD}", ("", "", 1)),
    (f"From: <{ENGINEER_IN_A_WORD}>", ("", "", 1)),
    (f"From: {ENGINEER_IN_A_WORD} <yang@customer.example>", ("liqi@support.example", "yang@customer.example", 1)),
    (f"From: {ew('liqi', 'utf-8')}@support.example", ("", "", 1)),
    ("From: =?utf-8?q?liqi=40support=2Eexample?=", ("", "", 1)),
    # several authors (RFC 5322 §3.6.2): the first readable one is shown, and the count says several
    ("From: liqi@support.example, x@evil.example", ("", "liqi@support.example", 2)),
    ("From: x@evil.example, Li Qi <liqi@support.example>", ("", "x@evil.example", 2)),
    (f"From: {ENGINEER_IN_A_WORD}, liqi@support.example", ("", "liqi@support.example", 2)),
    ("From: Team: liqi@support.example, x@evil.example;", ("", "liqi@support.example", 2)),
    ("From: liqi@support.example", ("", "liqi@support.example", 1)),
]


@pytest.mark.parametrize(("header", "expected"), FROM_CLAIMS)
def test_from_claims(header: str, expected: tuple[str, str, int]) -> None:
    m = ok(mail(header, b"Subject: x"))
    assert (m.from_name, m.from_addr, m.from_count) == expected


def test_only_a_single_readable_from_can_be_an_engineer() -> None:
    engineers = EngineerSettings(addresses=("liqi@support.example",), domains=("support.example",))
    roles = {header: sender_role(ok(mail(header, b"Subject: x")), engineers, "casebot@support.example")
             for header, _ in FROM_CLAIMS}
    assert roles == {
        f"From: {ENGINEER_IN_A_WORD}": Role.OTHER,
        f"From: <{ENGINEER_IN_A_WORD}>": Role.OTHER,
        f"From: {ENGINEER_IN_A_WORD} <yang@customer.example>": Role.CUSTOMER,
        f"From: {ew('liqi', 'utf-8')}@support.example": Role.OTHER,
        "From: =?utf-8?q?liqi=40support=2Eexample?=": Role.OTHER,
        "From: liqi@support.example, x@evil.example": Role.CUSTOMER,
        "From: x@evil.example, Li Qi <liqi@support.example>": Role.CUSTOMER,
        f"From: {ENGINEER_IN_A_WORD}, liqi@support.example": Role.CUSTOMER,
        "From: Team: liqi@support.example, x@evil.example;": Role.CUSTOMER,
        "From: liqi@support.example": Role.ENGINEER,
    }


def test_an_encoded_address_holding_angle_brackets_is_nobody() -> None:
    # `a@x.example>, <b@y.example` inside one encoded word was one "address" that became two recipients.
    word = ew("yang@customer.example>, <evil@evil.example", "utf-8")
    m = ok(mail(b"From: a@example.test", f"To: {word}, li@support.example".encode(), f"Cc: <{word}>".encode()))
    assert (m.to, m.cc) == (("li@support.example",), ())


# Control characters that split lines (str.splitlines) or records never reach a subject or a name.
CONTROLS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x07", "\x7f"]


@pytest.mark.parametrize("char", CONTROLS, ids=[repr(c) for c in CONTROLS])
def test_control_characters_are_stripped_from_decoded_headers(char: str) -> None:
    m = ok(mail(f"From: {ew(f'Li{char}Qi', 'utf-8')} <liqi@support.example>",
                f"Subject: {ew(f'Case{char}Bcc: x@evil.example', 'utf-8')}"))
    assert m.from_name == "Li Qi" and m.subject == "Case Bcc: x@evil.example"
    assert len(m.subject.splitlines()) == 1 and len(m.from_name.splitlines()) == 1


def test_to_and_cc_lists() -> None:
    m = ok(mail(
        b"From: a@example.test",
        "To: 杨先生 <Yang@Customer.Example>, \"Li, Qi\" <liqi@support.example>".encode(),
        b"Cc: casebot@support.example,\r\n  other@customer.example",
        b"Cc: second-cc@customer.example",
        b"To: undisclosed-recipients:;",
    ))
    assert m.to == ("yang@customer.example", "liqi@support.example")
    assert m.cc == ("casebot@support.example", "other@customer.example", "second-cc@customer.example")


# --- dates ------------------------------------------------------------------------------------------

DATES = [
    ("Date: Mon, 12 Apr 2021 17:52:59 +0000", datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)),
    ("Date: Tue, 13 Apr 2021 01:52:59 +0800", datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)),
    ("Date: 12 Apr 2021 17:52:59 -0000", datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)),
    ("Date: Mon, 12 Apr 2021 17:52:59", datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)),  # no zone: UTC
    ("Date: Tue, 13 Apr 2021 01:52:59 +0800 (CST)", datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)),
    ("X-No-Date: 1", None),
    ("Date: ", None),
    ("Date: garbage", None),
    ("Date: Mon, 32 Apr 2021 17:52:59 +0000", None),
    ("Date: Mon, 12 Foo 2021 17:52:59 +0000", None),
    ("Date: Mon, 12 Apr 99999 17:52:59 +0000", None),
]


@pytest.mark.parametrize(("header", "expected"), DATES)
def test_date(header: str, expected: datetime | None) -> None:
    assert ok(mail(b"From: a@example.test", header)).date == expected


# --- Message-ID, In-Reply-To, References --------------------------------------------------------------

def test_message_id_is_kept() -> None:
    m = ok(mail(b"From: a@example.test", b"Message-ID: <initial-04027@support.example>"))
    assert m.message_id == "<initial-04027@support.example>"
    assert not m.message_id_synthesized


@pytest.mark.parametrize("header", [b"X-No-Id: 1", b"Message-ID:", b"Message-ID: not-an-id"])
def test_missing_message_id_is_synthesized_deterministically(header: bytes) -> None:
    raw = mail(b"From: a@example.test", b"Subject: x", header, msgid=False)
    first, second = ok(raw), ok(raw)
    assert first.message_id_synthesized
    assert first.message_id == second.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith("@mailbot.invalid>")
    other = ok(mail(b"From: a@example.test", b"Subject: y", header, msgid=False))
    assert other.message_id != first.message_id


@pytest.mark.parametrize(
    ("headers", "in_reply_to", "references"),
    [
        ([b"In-Reply-To: <a@x>", b"References: <r1@x> <r2@x>\r\n <a@x>"], ("<a@x>",), ("<r1@x>", "<r2@x>", "<a@x>")),
        ([b"References: <r1@x>\r\n\t<r2@x>,<r3@x>"], (), ("<r1@x>", "<r2@x>", "<r3@x>")),
        ([b"References: <r1@x> <r1@x> <r2@x>"], (), ("<r1@x>", "<r2@x>")),
        ([b"In-Reply-To: <a@x> (Li Qi's message of Mon, 12 Apr 2021)"], ("<a@x>",), ()),
        ([b"In-Reply-To:", b"References:"], (), ()),
        ([b"References: garbage without brackets"], (), ()),
    ],
)
def test_threading_headers(headers: list[bytes], in_reply_to: tuple[str, ...], references: tuple[str, ...]) -> None:
    m = ok(mail(b"From: a@example.test", *headers))
    assert m.in_reply_to == in_reply_to
    assert m.references == references


# --- quoted history -------------------------------------------------------------------------------------

QUOTES = [
    ("Outlook zh, ASCII colons",
     "好的，谢谢。\n\n发件人: Li Qi <liqi@support.example>\n发送时间: 2021年4月12日 17:52\n收件人: 杨先生\n主题: 旧\n\n旧内容",
     "好的，谢谢。"),
    ("Outlook zh, full-width colons",
     "好的，谢谢。\n\n发件人： Li Qi <liqi@support.example>\n发送时间： 2021年4月12日 17:52\n收件人： 杨先生\n\n旧内容",
     "好的，谢谢。"),
    ("Outlook zh, bold markers",
     "收到\n\n**发件人:** Li Qi\n**发送时间:** 2021年4月12日\n\n旧内容",
     "收到"),
    ("Outlook zh-TW", "收到\n\n寄件者: Li Qi\n寄件日期: 2021年4月12日\n\n舊內容", "收到"),
    ("Outlook zh separator", "已处理。\n\n-----原始邮件-----\n发件人: Li Qi\n旧内容", "已处理。"),
    ("Foxmail separator", "已处理。\n\n------------------ 原始邮件 ------------------\n发件人: \"Li Qi\"\n旧内容", "已处理。"),
    ("Foxmail short separator", "已处理。\n\n--- 原始邮件 ---\n旧内容", "已处理。"),
    ("Gmail zh attribution",
     "收到，明天处理。\n\nLi Qi <liqi@support.example> 于2021年4月12日周一 下午5:52写道：\n\n> 旧内容",
     "收到，明天处理。"),
    ("Gmail zh attribution wrapped over two lines",
     "收到。\n\nLi Qi <liqi@support.example> 于2021年4月12日周一\n下午5:52写道：\n> 旧内容",
     "收到。"),
    ("Apple Mail zh", "好的\n\n在 2021年4月12日，下午5:52，Li Qi <liqi@support.example> 写道：\n\n> 旧内容", "好的"),
    ("English On … wrote:",
     "Thanks, done.\n\nOn Mon, Apr 12, 2021 at 5:52 PM Li Qi <liqi@support.example> wrote:\n> old text",
     "Thanks, done."),
    ("English attribution wrapped by Gmail",
     "Thanks, done.\n\nOn Mon, Apr 12, 2021 at 5:52 PM Li Qi <\nliqi@support.example> wrote:\n\n> old text",
     "Thanks, done."),
    ("-----Original Message-----",
     "Thanks.\n\n-----Original Message-----\nFrom: Li Qi\nSent: Monday\nTo: Yang\nSubject: x\n\nold text",
     "Thanks."),
    ("Outlook English header block", "Thanks.\n\nFrom: Li Qi\nSent: Monday, April 12, 2021 5:52 PM\nTo: Yang\n\nold", "Thanks."),
    ("Outlook on the web rule", "Thanks.\n\n________________________________\nFrom: Li Qi\nSent: Monday\n\nold", "Thanks."),
    ("German attribution", "Danke.\n\nAm 12.04.2021 um 17:52 schrieb Li Qi <liqi@support.example>:\n> alt", "Danke."),
    (">-quoted lines at the end", "See below.\n\n> old line 1\n> old line 2\n>\n> old line 3", "See below."),
    # bottom-posting: the quote first, the answer under it
    ("bottom-posted reply", "Li Qi wrote:\n> please send logs\n> thanks\n\nLogs are uploaded.", "Logs are uploaded."),
    ("bare quote above the answer", "> please send logs\n\nLogs are uploaded.", "Logs are uploaded."),
    ("no history at all", "Just a new mail.\nSecond line.", "Just a new mail.\nSecond line."),
    ("indentation of pasted output is kept",
     "Output:\n    C:\\> ipconfig\n      IPv4 . . : 10.0.0.5\n\nOn Mon, Li Qi wrote:\n> old",
     "Output:\n    C:\\> ipconfig\n      IPv4 . . : 10.0.0.5"),
    ("a '>' inside the new text is not history", "a > b\nc\n\nd", "a > b\nc\n\nd"),
    ("CRLF and bare CR line ends", "收到\r\n\r\n-----原始邮件-----\r\n旧", "收到"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("case", "body", "expected"), QUOTES, ids=[q[0] for q in QUOTES])
def test_quoted_history_is_cut(case: str, body: str, expected: str) -> None:
    new, history = split_reply(body)
    assert new == expected
    if body.strip() and new != body.strip():
        assert history  # what was cut is kept as history, not lost


@pytest.mark.parametrize(("case", "body", "expected"), QUOTES[:6], ids=[q[0] for q in QUOTES[:6]])
def test_quoted_history_is_cut_in_gbk_mail(case: str, body: str, expected: str) -> None:
    raw = mail(b"From: a@example.test", b"Subject: x", body=body.replace("\n", "\r\n").encode("gbk"), charset="gbk")
    assert ok(raw).new_text == expected


@pytest.mark.parametrize(
    ("name", "expected", "absent"),
    [
        ("outlook-zh-reply.eml",
         "好的，日志已经上传到 SFTP。\n    C:\\Windows\\Minidump\\041021-1234-01.dmp\n谢谢！\n杨", "请用附件"),
        ("outlook-html-reply.eml", "Thanks, the logs are uploaded.\n\nRegards,\nYang", "OLD-HISTORY-TEXT"),
        ("outlook-html-border-reply.eml", "收到，我们明天安排重启。\n\n杨", "OLD-HISTORY-TEXT"),
    ],
)
def test_outlook_replies_keep_only_the_new_text(name: str, expected: str, absent: str) -> None:
    m = ok((DATA / name).read_bytes())
    assert m.new_text == expected
    assert absent not in m.new_text


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hello</p><p>Line 1<br>Line 2</p>", "Hello\n\nLine 1\nLine 2"),
        ("<div>a<br/>b<br />c</div>", "a\nb\nc"),  # `<br/>` is one line break, not two
        ("<html><head><title>T</title><style>p{color:red}</style></head><body><p>x</p><script>alert(1)</script></body></html>", "x"),
        ("<p>a&nbsp;&amp;&nbsp;b &lt;c&gt; &#20013;&#25991;</p>", "a & b <c> 中文"),
        ("<table><tr><td>Case</td><td>CAS-04027-B7D2Z5</td></tr></table>", "Case CAS-04027-B7D2Z5"),
        ("<pre>log:\n    indented\n\tTAB</pre>", "log:\n    indented\n    TAB"),
        ("<p>你好</p><div class=\"gmail_quote\">Li Qi 于2021年4月12日写道：<blockquote>旧</blockquote></div>", "你好"),
        ("<p>Thanks</p><blockquote type=\"cite\">old</blockquote>", "Thanks"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("", ""),
    ],
)
def test_html_only_mail_to_text(html: str, expected: str) -> None:
    raw = mail(b"From: a@example.test", b"Subject: x", b"Content-Type: text/html; charset=utf-8",
               b"Content-Transfer-Encoding: 8bit", body=html.encode())
    assert ok(raw).new_text == expected


# --- only the sender's own text: never an attached or forwarded message ------------------------------------

FORWARDED_CLOSE = (b"From: Yang <yang@customer.example>\nTo: casebot@support.example\nSubject: please close\n"
                   b"Content-Type: text/plain; charset=utf-8\n\n#close\n")


def forward(own: bytes, attached: bytes, disposition: str = "") -> bytes:
    """An engineer's mail: their own part(s), then a customer's mail attached as message/rfc822."""
    return (b"From: liqi@support.example\nTo: casebot@support.example\nSubject: FW: please close\n"
            b"Message-ID: <fw@support.example>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=M\n\n"
            b"--M\n" + own + b"\n--M\nContent-Type: message/rfc822\n" + disposition.encode() + b"\n" + attached
            + b"\n--M--\n")


HTML_ONLY = b"Content-Type: text/html; charset=utf-8\n\n<p>FYI, see the customer's mail below.</p>\n"
ALTERNATIVE = (b"Content-Type: multipart/alternative; boundary=A\n\n--A\nContent-Type: text/plain\n\n\n"
               b"--A\nContent-Type: text/html\n\n<p>FYI, see the customer's mail below.</p>\n--A--\n")
RELATED = (b"Content-Type: multipart/related; boundary=R\n\n--R\nContent-Type: text/html\n\n"
           b"<p>FYI, see the customer's mail below.</p>\n--R\nContent-Type: image/png\n\nxx\n--R--\n")

OWN_TEXT = [
    # the case: the engineer's own part is HTML only, the customer's forwarded part is plain text
    ("html-only own part", forward(HTML_ONLY, FORWARDED_CLOSE), "FYI, see the customer's mail below."),
    ("empty plain alternative", forward(ALTERNATIVE, FORWARDED_CLOSE), "FYI, see the customer's mail below."),
    ("html in multipart/related", forward(RELATED, FORWARDED_CLOSE), "FYI, see the customer's mail below."),
    ("attached, not inline", forward(HTML_ONLY, FORWARDED_CLOSE, "Content-Disposition: attachment\n"),
     "FYI, see the customer's mail below."),
    # nothing of the engineer's own: no text at all, and surely not the customer's
    ("a bare forward", forward(b"Content-Type: text/plain\n\n\n", FORWARDED_CLOSE), ""),
    # an .eml attached as a file, or a text part named as a file, is an attachment, not the body
    ("an attached .eml file", forward(HTML_ONLY, b"", "").replace(
        b"Content-Type: message/rfc822\n", b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename=\"close.eml\"\n\n" + FORWARDED_CLOSE),
     "FYI, see the customer's mail below."),
    ("a named text part", forward(HTML_ONLY, b"", "").replace(
        b"Content-Type: message/rfc822\n", b"Content-Type: text/plain; name=\"note.txt\"\n\n#close"),
     "FYI, see the customer's mail below."),
]


@pytest.mark.parametrize(("case", "raw", "expected"), OWN_TEXT, ids=[o[0] for o in OWN_TEXT])
def test_commands_come_only_from_the_senders_own_text(case: str, raw: bytes, expected: str) -> None:
    m = ok(raw)
    assert m.new_text == expected
    assert find_commands(m.new_text) == []


def test_a_command_in_the_own_part_still_counts_beside_a_forward() -> None:
    own = b"Content-Type: text/html; charset=utf-8\n\n<p>#snooze 2021-05-01</p>\n"
    m = ok(forward(own, FORWARDED_CLOSE))
    assert [c.name for c in find_commands(m.new_text)] == ["snooze"]


def test_plain_part_is_preferred_over_html() -> None:
    raw = (b"From: a@example.test\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/alternative; boundary=B\n\n--B\nContent-Type: text/plain\n\nplain text\n"
           b"--B\nContent-Type: text/html\n\n<p>html text</p>\n--B--\n")
    assert ok(raw).new_text == "plain text"


# --- attachments ----------------------------------------------------------------------------------------

def test_attachments_are_listed_with_name_type_and_size() -> None:
    m = ok((DATA / "attachments.eml").read_bytes())
    assert m.new_text == "see attached"
    assert m.attachments == (
        Attachment("report.pdf", "application/pdf", 1024),
        Attachment("日志收集.zip", "application/zip", 100),  # RFC 2231 filename*=UTF-8''…
        Attachment("朱镕基-堃喆.txt", "text/plain", 4),  # encoded word, gb2312 label, GBK-only characters
        Attachment("长文件名-part2.bin", "application/octet-stream", 0),  # RFC 2231 continuations, empty
    )


def test_an_attachment_without_a_name_reads_the_same_every_time() -> None:
    raw = (b"From: a@example.test\r\nMessage-ID: <x@example.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nlog\r\n"
           b"--b\r\nContent-Type: text/rtf\r\n\r\n{\\rtf1 x}\r\n--b--\r\n")
    first, second = ok(raw), ok(raw)
    assert [a.name for a in first.attachments] == ["unnamed.txt", "unnamed.rtf"]  # not ten random letters
    assert first == second


def test_mail_without_attachments_lists_none() -> None:
    assert ok(mail(b"From: a@example.test")).attachments == ()


# --- flags: who must never be answered (RFC 3834) ---------------------------------------------------------

FLAGS = [
    ([b"Auto-Submitted: auto-replied"], {Flag.AUTO_REPLY}),
    ([b"Auto-Submitted: auto-generated"], {Flag.AUTO_REPLY}),
    ([b"Auto-Submitted: Auto-Replied (vacation)"], {Flag.AUTO_REPLY}),
    ([b"Auto-Submitted: no"], set()),
    ([b"X-Autoreply: yes"], {Flag.AUTO_REPLY}),
    ([b"X-Autorespond: Out of office"], {Flag.AUTO_REPLY}),
    ([b"Precedence: auto_reply"], {Flag.AUTO_REPLY}),
    ([b"Precedence: bulk"], {Flag.LIST}),
    ([b"Precedence: junk"], {Flag.LIST}),
    ([b"Precedence: list"], {Flag.LIST}),
    ([b"List-Id: Support users <users.lists.example>"], {Flag.LIST}),
    ([b"List-Unsubscribe: <mailto:leave@lists.example>"], {Flag.LIST}),
    (["Subject: 自动回复: [案例号: CAS-04027-B7D2Z5 ]".encode()], {Flag.AUTO_REPLY}),
    (["Subject: 自动回复：外出".encode()], {Flag.AUTO_REPLY}),
    ([b"Subject: Automatic reply: [Case CAS-04027-B7D2Z5]"], {Flag.AUTO_REPLY}),
    ([b"Subject: Out of Office: back Monday"], {Flag.AUTO_REPLY}),
    ([b"Subject: Out of the office"], {Flag.AUTO_REPLY}),
    ([b"Subject: Auto reply: Nyaan"], {Flag.AUTO_REPLY}),
    (["Subject: 回复: 自动回复设置怎么关闭".encode()], set()),  # a human asking about auto-replies
    (["Subject: 自动回复功能不工作".encode()], set()),
    ([b"From: MAILER-DAEMON@mx.customer.example"], {Flag.BOUNCE}),
    ([b"From: Mail Delivery System <postmaster@customer.example>"], {Flag.BOUNCE}),
    ([b"Return-Path: <>", b"Subject: Undelivered Mail Returned to Sender"], {Flag.BOUNCE}),
    ([b"Return-Path: <>", b"Subject: Read: hello"], {Flag.AUTO_REPLY}),  # null sender, not a bounce
    ([b"Return-Path: <yang@customer.example>", b"Subject: hello"], set()),
    ([b"Subject: Undelivered Mail Returned to Sender"], set()),  # a person forwarding a bounce
    ([b"Subject: plain mail"], set()),
]


@pytest.mark.parametrize(("headers", "expected"), FLAGS)
def test_flags(headers: list[bytes], expected: set[Flag]) -> None:
    if not any(h.lower().startswith(b"from:") for h in headers):
        headers = [b"From: yang@customer.example", *headers]
    m = ok(mail(*headers))
    assert set(m.flags) == expected
    assert len(m.flag_reasons) >= len(expected)  # every flag says why


def test_delivery_status_bounce_names_the_returned_message() -> None:
    m = ok((DATA / "dsn-bounce.eml").read_bytes())
    assert Flag.BOUNCE in m.flags
    assert any("RFC 3464" in r for r in m.flag_reasons)
    assert m.bounced_subject == "[案例号: CAS-04027-B7D2Z5 ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"
    assert m.bounced_message_ids == ("<initial-04027@support.example>", "<older-1@support.example>")
    assert m.bounced_recipients == ("nobody@customer.example",)
    assert m.return_path == "<>"


def test_rfc822_headers_bounce_without_a_status_part_names_no_recipient() -> None:
    # It still threads to its case by the returned headers; but without message/delivery-status it is no
    # RFC 3464 report, and X-Failed-Recipients is a header anyone can write: nobody is marked as failed.
    raw = (b"From: MAILER-DAEMON@mx.example\nTo: liqi@support.example\nSubject: Mail delivery failed\n"
           b"X-Failed-Recipients: gone@customer.example\nMessage-ID: <b2@mx.example>\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=Z\n\n"
           b"--Z\nContent-Type: text/plain\n\nfailed\n"
           b"--Z\nContent-Type: text/rfc822-headers\n\nSubject: RE: [Case CAS-04027-B7D2Z5] x\n"
           b"Message-ID: <orig@support.example>\n\n--Z--\n")
    m = ok(raw)
    assert Flag.BOUNCE in m.flags  # never answered all the same (RFC 3834)
    assert m.bounced_subject == "RE: [Case CAS-04027-B7D2Z5] x"
    assert m.bounced_message_ids == ("<orig@support.example>",)
    assert (m.is_dsn, m.bounced_recipients) == (False, ())


def test_a_real_dsn_is_marked_as_one() -> None:
    m = ok((DATA / "dsn-bounce.eml").read_bytes())
    assert m.is_dsn
    # the human-readable part is the mail's text, never the returned message's
    assert m.new_text.startswith("I'm sorry to have to inform you") and "(body of the returned" not in m.new_text


def test_x_failed_recipients_on_a_plain_mail_is_no_bounce() -> None:
    # A customer's own mail carrying the header stopped their reminders: it names nobody now.
    m = ok(mail(b"From: yang@customer.example", b"Subject: RE: [Case CAS-04027-B7D2Z5] x",
                b"X-Failed-Recipients: yang@customer.example, other@customer.example"))
    assert (m.flags, m.is_dsn, m.bounced_recipients) == (frozenset(), False, ())
    daemon = ok(mail(b"From: MAILER-DAEMON@mx.customer.example", b"Subject: Mail delivery failed",
                     b"X-Failed-Recipients: yang@customer.example"))
    assert Flag.BOUNCE in daemon.flags and (daemon.is_dsn, daemon.bounced_recipients) == (False, ())


def dsn(status: str, *, report_type: str = "delivery-status", top: str = "multipart/report") -> bytes:
    return (f"From: MAILER-DAEMON@mx.customer.example\nTo: casebot@support.example\nSubject: Returned mail\n"
            f"Message-ID: <dsn@mx.customer.example>\nMIME-Version: 1.0\n"
            f'Content-Type: {top}; report-type={report_type}; boundary="b"\n\n'
            f"--b\nContent-Type: text/plain\n\nreport\n\n"
            f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example\n\n{status}\n"
            f"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <reminder-1@support.example>\n\n--b--\n").encode()


DSNS = [
    ("Final-Recipient: rfc822; yang@customer.example\nAction: failed\nStatus: 5.1.1\n", ("yang@customer.example",)),
    # Exim writes Action first
    ("Action: failed\nFinal-Recipient: rfc822;Yang@Customer.Example\nStatus: 5.0.0\n", ("yang@customer.example",)),
    ("Original-Recipient: rfc822;yang@customer.example\nFinal-Recipient: rfc822;y@relay.example\n"
     "Action: failed\n", ("yang@customer.example", "y@relay.example")),
    # only failures: a delay warning, a delivery or relay notice marks nobody
    ("Final-Recipient: rfc822; yang@customer.example\nAction: delayed\nStatus: 4.4.7\n", ()),
    ("Final-Recipient: rfc822; yang@customer.example\nAction: delivered\nStatus: 2.0.0\n", ()),
    ("Final-Recipient: rfc822; a@customer.example\nAction: delayed\n\n"
     "Final-Recipient: rfc822; b@customer.example\nAction: failed\n", ("b@customer.example",)),
    # no blank line between recipients: each Final-Recipient starts the next one
    ("Final-Recipient: rfc822; a@customer.example\nAction: failed\n"
     "Final-Recipient: rfc822; b@customer.example\nAction: delayed\n", ("a@customer.example",)),
    # an address that does not parse is nobody
    ("Final-Recipient: rfc822; =?utf-8?b?eWFuZ0BjdXN0b21lci5leGFtcGxl?=\nAction: failed\n", ()),
]


@pytest.mark.parametrize(("status", "expected"), DSNS)
def test_dsn_failed_recipients(status: str, expected: tuple[str, ...]) -> None:
    m = ok(dsn(status))
    assert m.is_dsn and m.bounced_recipients == expected
    assert m.bounced_message_ids == ("<reminder-1@support.example>",)


@pytest.mark.parametrize(("report_type", "top"), [("disposition-notification", "multipart/report"),
                                                 ("delivery-status", "multipart/mixed")])
def test_only_a_delivery_status_report_is_a_dsn(report_type: str, top: str) -> None:
    m = ok(dsn("Final-Recipient: rfc822; yang@customer.example\nAction: failed\n", report_type=report_type, top=top))
    assert (m.is_dsn, m.bounced_recipients) == (False, ())


# --- credentials never leave parse -------------------------------------------------------------------------

CREDENTIALS = [
    ("账户名：case04027\n密码：Xk93-fake-Pw77\n如有问题请联系我。", "Xk93-fake-Pw77", "密码：******"),
    ("password: hunter2", "hunter2", "password: ******"),
    ("pwd=hunter2&user=x", "hunter2", "pwd=******"),
    ("口令：Secr3t!", "Secr3t!", "口令：******"),
    ("地址：sftp://upload:Pa55w0rd@upload.support.example:22222", "Pa55w0rd", "sftp://upload:******@"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0fake\n-----END RSA PRIVATE KEY-----\nthanks",
     "MIIEowIBAAKCAQEA0fake", "[rsa private key removed]"),
]


@pytest.mark.parametrize(("body", "secret", "masked"), CREDENTIALS)
def test_credentials_are_masked_in_new_text(body: str, secret: str, masked: str) -> None:
    m = ok(mail(b"From: liqi@support.example", b"Subject: x", body=body))
    assert secret not in m.new_text
    assert masked in m.new_text


def test_credentials_are_masked_in_gbk_mail_too() -> None:
    m = ok(mail(b"From: liqi@support.example", b"Subject: x", body="密码：Xk93-fake-Pw77".encode("gbk"), charset="gbk"))
    assert m.new_text == "密码：******"


# --- the worked case in ../shared/scenario -------------------------------------------------------------------

@pytest.fixture
def scenario() -> Path:
    shared = shared_dir()
    if shared is None or not (shared / "scenario").is_dir():
        pytest.skip("../shared/scenario is not present")
    return shared / "scenario"


SUBJECT_TAIL = "[案例号: CAS-04027-B7D2Z5 ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"


def test_scenario_01_initial_response(scenario: Path) -> None:
    m = ok((scenario / "01-initial-response.eml").read_bytes())
    assert m.subject == SUBJECT_TAIL
    assert (m.from_name, m.from_addr) == ("Li Qi", "liqi@support.example")
    assert m.to == ("yang@customer.example",)
    assert m.cc == ("casebot@support.example",)
    assert m.date == datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)
    assert m.message_id == "<initial-04027@support.example>"
    assert m.flags == frozenset()
    assert "Xk93-fake-Pw77" not in m.new_text  # the SFTP password never gets past parse
    assert "密码：******" in m.new_text
    assert "sftp://upload.support.example:22222" in m.new_text  # a port is not a password
    assert m.new_text.startswith("杨先生，您好：")


def test_scenario_02_customer_autoreply(scenario: Path) -> None:
    m = ok((scenario / "02-customer-autoreply.eml").read_bytes())
    assert m.subject == "自动回复: " + SUBJECT_TAIL
    assert m.flags == frozenset({Flag.AUTO_REPLY})
    assert "Auto-Submitted: auto-replied (RFC 3834)" in m.flag_reasons
    assert m.in_reply_to == ("<initial-04027@support.example>",)
    assert return_date(m.new_text, date(2021, 4, 13)) == date(2021, 4, 14)


def test_scenario_03_customer_reply(scenario: Path) -> None:
    m = ok((scenario / "03-customer-reply.eml").read_bytes())
    assert m.subject == "答复: " + SUBJECT_TAIL
    assert (m.from_name, m.from_addr) == ("杨先生", "yang@customer.example")
    assert m.flags == frozenset()
    assert m.in_reply_to == ("<initial-04027@support.example>",)
    assert m.references == ("<initial-04027@support.example>",)
    assert m.new_text == "Li 工程师您好：\n日志已经上传，第三方厂商今天也在现场，我们这边先观察两天。\n谢谢！\n杨"


def test_scenario_04_engineer_close_command(scenario: Path) -> None:
    m = ok((scenario / "04-engineer-close-command.eml").read_bytes())
    assert m.to == ("casebot@support.example",)
    [command] = find_commands(m.new_text)
    assert command.name == "close" and not command.error
    assert command.closure == ClosureFields(
        problem="用户反馈操作系统频繁蓝屏，需要紧急处理",
        analysis="经用户与第三方厂商测试分析，蓝屏由第三方软件 inode 的兼容性导致，与操作系统无关",
        summary="经用户确认，本案例暂做归档处理",
    )


# --- nothing raises ------------------------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    head = b"From: a@example.test\nSubject: deep\nMIME-Version: 1.0\n"
    parts = [b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)]
    tail = [b"\n--b%d--\n" % i for i in reversed(range(depth))]
    return head + b"".join(parts) + b"Content-Type: text/plain\n\nleaf" + b"".join(tail)


HOSTILE = [
    ("empty", b""),
    ("whitespace", b" \r\n\t\n"),
    ("only headers", b"From: a@example.test\nSubject: x"),
    ("only a header name", b"Subject:"),
    ("binary junk", bytes(range(256)) * 8),
    ("NUL bytes", b"From: a@exa\x00mple.test\nSubject: x\x00y\n\nbody\x00body"),
    ("bare CR line ends", b"From: a@example.test\rSubject: bare CR\rMessage-ID: <cr@x>\r\rbody\rline 2\r"),
    ("mbox From_ line", b"From someone Mon Apr 12 17:52:59 2021\nFrom: a@example.test\nSubject: x\n\nbody"),
    ("a single very long line", b"Subject: " + b"x" * 200_000),
    ("deeply nested multiparts", _nested(400)),
    ("nested beyond the recursion limit", _nested(3000)),
    ("multipart without boundary", b"From: a@example.test\nContent-Type: multipart/mixed\n\n--x\n\nbody"),
    ("boundary never closed", b"From: a@example.test\nContent-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nx"),
    ("bad base64", b"From: a@example.test\nContent-Transfer-Encoding: base64\n\n!!!not base64==="),
    ("unknown transfer encoding", b"From: a@example.test\nContent-Transfer-Encoding: x-weird\n\nbody"),
    ("broken encoded words everywhere", b"From: =?utf-8?B?@@@?= <a@b>\nSubject: =?gb2312?Q?=ZZ?=\nTo: =?x?y?z?=\n\nx"),
    ("garbage charset parameter", b"From: a@b\nContent-Type: text/plain; charset=\"\x00\xff\"\n\nbody"),
    ("non-text codec as charset", b"From: a@b\nSubject: =?base64?B?YWJj?=\nContent-Type: text/plain; charset=rot13\n\nbody"),
    ("UTF-16 without BOM", "From: a@b\nSubject: x\n\nbody".encode("utf-16-le")),
    ("header line without colon", b"This is not a header\n\nbody"),
]


@pytest.mark.parametrize(("case", "raw"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_no_input_raises(case: str, raw: bytes) -> None:
    result = parse(raw)
    assert isinstance(result, InboundMail | ParseFailure)
    if isinstance(result, ParseFailure):
        assert result.reason
    else:
        assert result.message_id


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n"])
def test_empty_input_is_a_parse_failure(raw: bytes) -> None:
    assert parse(raw) == ParseFailure("empty message")


def test_bare_cr_mail_is_read() -> None:
    m = ok(b"From: a@example.test\rSubject: bare CR\rMessage-ID: <cr@x>\r\rbody\rline 2\r")
    assert (m.subject, m.message_id, m.new_text) == ("bare CR", "<cr@x>", "body\nline 2")


# --- input built to be slow: the same answers, in linear time (bench/hostile.py prints the times) ------


def test_html_comments_are_dropped_in_one_pass_and_an_unclosed_one_runs_to_the_end() -> None:
    from mailbot.parse.htmltext import html_to_text

    assert html_to_text("<p>a<!-- hidden --></p><!--[if mso]><p>outlook only</p><![endif]--><p>b</p>") == "a\n\nb"
    assert html_to_text("<p>kept</p><!-- never closed <p>gone</p>") == "kept"
    assert html_to_text("<p>ok</p>" + "<!--" * 1000) == "ok"


def test_html_that_never_closes_its_tags_reads_as_text() -> None:
    from mailbot.parse.htmltext import html_to_text

    assert html_to_text("<p>hello</p><a <a x") == "hello\n<a <a x"
    assert html_to_text("<b>bold</b> 1 < 2") == "bold 1 < 2"


def test_long_runs_of_blank_lines_or_spaces_keep_the_mail_as_written() -> None:
    text = "Thanks, all good now." + "\n" * 400 + "Li Qi\n\nOn Mon, 12 Apr 2021, Yang wrote:\n> old"
    new, history = split_reply(text)
    assert new.startswith("Thanks, all good now.") and new.endswith("Li Qi")
    assert history == "On Mon, 12 Apr 2021, Yang wrote:\n> old"
    assert new.count("\n") == 400  # the blank lines are the sender's, not shortened
    spaced = "mysql" + " " * 5000 + "x"
    assert split_reply(spaced) == (spaced, "")


def test_a_references_field_of_thousands_of_ids_keeps_the_first_and_the_latest() -> None:
    refs = " ".join(f"<id{n}@example.test>" for n in range(5000))
    m = ok(mail(b"From: a@example.test", f"References: {refs}".encode()))
    assert len(m.references) == 100
    assert m.references[0] == "<id0@example.test>" and m.references[-1] == "<id4999@example.test>"
    assert m.references[1] == "<id4901@example.test>"
