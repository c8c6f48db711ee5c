"""The parse's shortcuts answer exactly what the full path answers: each one skips work only where that work
cannot change the result, and each is run both ways here on every corpus mail, every test mail, the
benchmark's mail and random text built from the pieces each shortcut looks for."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbot.parse import quotes
from mailbot.parse.body import _body_text, _MailParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import generate  # noqa: E402
import hostile  # noqa: E402
from test_corpus import FILES  # noqa: E402


def _sample_mails() -> Iterator[tuple[str, bytes]]:
    for path in FILES:
        yield f"corpus/{path.name}", path.read_bytes()
    for path in sorted((ROOT / "tests" / "data").rglob("*.eml")):
        yield f"data/{path.name}", path.read_bytes()
    for n, m in enumerate(generate.generate(600, 120, 11)):
        yield f"bench/{n}", m.raw
    for name, shape in hostile.SHAPES.items():
        yield f"hostile/{name}", shape(2)


MAILS = list(_sample_mails())


def _bodies() -> list[str]:
    out = []
    for _, raw in MAILS:
        try:
            out.append(_body_text(_MailParser.from_bytes(raw)))
        except Exception:  # quarantined mail has no body to split
            continue
    return out


# The pieces each shortcut's test looks for, in the spellings that trip a test written too narrowly:
# re.I's non-ASCII letters (`ſ` for s, `K` for k, `ı` and `İ` for i), full-width colons, trailing blanks.
PIECES = [
    "On Mon, Apr 12, 2021 at 5:52 PM Li Qi <liqi@example.test> wrote:", "Li Qi <", "liqi@x> wrote:",
    "杨先生 <y@x> 于2021年4月12日周一 下午5:52写道：", "在 2021年4月12日，李 写道：", "2021年4月12日 李 写道：",
    "Am 12.04.2021 um 17:52 schrieb Li Qi:", "Am Montag ſchrieb X:", "Le lundi, X a écrit :", "X ſkrev:",
    "X napİsał:", "X kırjoitti:", "2021年4月12日(月) 17:52 李 <l@x>:", "李 書きました", "X 書きました：",
    "From: Li Qi", "FROM: a", "*From:* a", "ſent: Monday", "Sent: Monday", "To: Yang", "tO: y", "Subject: x",
    "Date: today", "Cc: z", "Organization: o", "Von: a", "Gesendet: b", "An: c", "Betreff: d", "Datum: e",
    "发件人: 李", "发件人：李", "发送时间: 今天", "收件人: 杨", "主题: x", "抄送: z", "组织: o", "寄件者: a",
    "-----Original Message-----", "----- original message -----", "-----原始邮件-----", "--- 原始邮件 ---",
    "________________________________", "_____", "--", "> quoted", ">", "> > deep", "", "   ", "\t",
    "Thanks,", "Best regards", "Sent from my iPhone", "CAUTION: external", "谢谢，", "您好：", "问题：",
    "hello:", "wrote:  ", "wrote:\u3000", "a\u2028b", "x\r", "C:\\> ipconfig",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        lines = [rng.choice(PIECES) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.3:
            lines = [f"{' ' * rng.randint(0, 3)}{line}{' ' * rng.randint(0, 2)}" for line in lines]
        texts.append("\n".join(lines))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _bodies() + _random_texts(4000, 18) + [q[1] for q in _quote_table()]


def _quote_table() -> list[tuple[str, str, str]]:
    from test_parse import QUOTES

    return QUOTES


def _full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shortcut of split_reply off: every search runs, the library is always asked."""
    monkeypatch.setattr(quotes, "_may_hold_separator", lambda text: True)
    monkeypatch.setattr(quotes, "_attribution_candidates",
                        lambda text: quotes._line_numbers(text, quotes._ATTRIBUTION_IN_TEXT.finditer(text)))
    monkeypatch.setattr(quotes, "_latest_reply", quotes._PARSER.parse_reply)
    monkeypatch.setattr(quotes, "_HEADER_TRIES", 0)


def test_split_reply_cuts_where_the_full_search_and_the_library_cut(
    texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = [quotes.split_reply(t) for t in texts]
    with monkeypatch.context() as m:
        _full_path(m)
        full = [quotes.split_reply(t) for t in texts]
    differ = [(t, a, b) for t, a, b in zip(texts, fast, full, strict=True) if a != b]
    assert not differ, differ[:3]
    # the samples exercise both sides of each shortcut, or they would prove nothing
    cut = sum(1 for new, _ in fast if new)
    assert sum(1 for _, history in fast if history) > 100 and cut > 1000


def test_the_library_answer_without_the_library_is_its_answer(texts: list[str]) -> None:
    """_latest_reply against mail-parser-reply itself, on the text as split_reply shows it and raw."""
    asked = skipped = 0
    for text in texts:
        for seen in (text, "\n".join(quotes._for_the_library(text.split("\n"))[0])):
            assert quotes._latest_reply(seen) == quotes._PARSER.parse_reply(seen), seen
            from mailparser_reply import EmailMessage

            if quotes._may_find_header(EmailMessage(text=seen, languages=quotes._PARSER.languages).text):
                asked += 1
            else:
                skipped += 1
    assert asked > 500 and skipped > 500


# --- counting MIME parts before the tree is built -----------------------------------------------------------

def _count_parts_by_regex(raw: bytes) -> int:
    """The count as first written: two regex scans of the whole message, every byte tried."""
    import re
    from collections import Counter

    param = re.compile(rb'(?i)\bboundary(?:\*0)?\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))')
    dash_line = re.compile(rb"^--([^\r\n]{1,200})", re.M)
    boundaries = {quoted or bare for quoted, bare in param.findall(raw)}
    if not boundaries:
        return 0
    lines = Counter(line.rstrip(b" \t") for line in dash_line.findall(raw))
    return sum(lines[b] for b in boundaries)


BYTE_PIECES = [b"--", b"--b", b"--b--", b"--B", b"--b \t", b"--b\r", b"-", b"b", b"B", b"x", b" ", b"\t", b"=",
               b'"', b";", b"\r", b"\n", b"\r\n", b"boundary", b"BoUnDaRy", b"xboundary", b"_boundary", b"*0",
               b"boundary=b", b'boundary="b"', b"boundary*0=b", b"Boundary = b", b'boundary="b\r"', b"\xe4",
               b"-" * 150, b"b" * 199, b"\n--" + b"b" * 205]


def test_counting_parts_finds_what_the_regex_scans_found() -> None:
    rng = random.Random(2046)
    fuzz = [b"".join(rng.choice(BYTE_PIECES) for _ in range(rng.randint(1, 40))) for _ in range(20000)]
    from mailbot.parse.body import _count_parts

    counted = 0
    for raw in [r for _, r in MAILS] + fuzz:
        assert _count_parts(raw) == _count_parts_by_regex(raw), raw[:300]
        counted += _count_parts(raw) > 0
    assert counted > 1000


# --- address headers: the common shapes by one pattern, the rest by the stdlib --------------------------------

ADDRESS_PIECES = ["a@b.example", "li.qi@support.example", ".x@y", "a.@b", "a@b.", "Li", "Qi", "李琪", "=?utf-8?b?5p2O?=",
                  '"Li, Qi"', '"李, 琪"', '""', '"a', '"<x@y>"', "<", ">", "<a@b>", "<x@y.z>", "@", ",", ", ", " ",
                  "  ", "\t", ".", "\u3000", "\x0b", "(comment)", ":", ";", "[1.2.3.4]", "\\", "\r\n", "\n", "x"]


def _address_values() -> list[str]:
    from email import message_from_bytes

    values = []
    for _, raw in MAILS:
        msg = message_from_bytes(raw)
        for name in ("From", "To", "Cc", "Sender", "Reply-To"):
            values += [str(v) for v in msg.get_all(name, [])]
    rng = random.Random(5322)
    values += ["".join(rng.choice(ADDRESS_PIECES) for _ in range(rng.randint(1, 10))) for _ in range(30000)]
    # and well-formed lists, so that the pattern's side is well exercised
    good = ["a@b.example", "Li Qi <li@x.example>", '"Li, Qi" <li@x.example>', "=?utf-8?b?5p2O?= <l@x>", "<a@b>",
            "李 琪<l@x>", 'Li "Q" Qi <l@x>', "a.b.c@d.e"]
    values += [rng.choice([", ", ",", " , ", "\t,"]).join(rng.choices(good, k=rng.randint(1, 6)))
               + rng.choice(["", " ", ",", "\t"]) for _ in range(3000)]
    return values


def test_common_address_shapes_read_as_the_stdlib_reads_them() -> None:
    from email.utils import getaddresses

    from mailbot.parse.addresses import _common_addresses

    fast = 0
    for value in _address_values():
        common = _common_addresses(value)
        if common is not None:
            assert common == getaddresses([value]), value
            fast += 1
    assert fast > 5000


# --- the MIME parser's boundary lines, matched without a regex per boundary ---------------------------------

SEPARATOR_PIECES = ["--", "b", "B", "=_Part_1.2", "+", "(", ")", "[", "*", "?", "\\", ".", "|", "^", "$", " ", "\t", "中",
                    "\udce4", "'", "=", "/", ":"]
LINE_PIECES = ["", "--", "-", " ", "\t", "  \t", "\r\n", "\r", "\n", "\n\n", "\r\r", "\r\n\n", "x", "-- ", "\x0b",
               "\u3000", "--\r\n", "\n--"]


def test_a_boundary_line_matches_as_the_compiled_boundary_pattern() -> None:
    import re

    from mailbot.parse import feed

    rng = random.Random(2046)
    tried = matched = 0
    for _ in range(3000):
        separator = "--" + "".join(rng.choice(SEPARATOR_PIECES) for _ in range(rng.randint(1, 5)))
        pattern = "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
        ours, theirs = feed._FeedRe.compile(pattern), re.compile(pattern)
        assert isinstance(ours, feed._BoundaryLine)
        for _ in range(30):
            line = rng.choice([separator, separator[:-1], ""]) + "".join(
                rng.choice(LINE_PIECES) for _ in range(rng.randint(0, 3)))
            a, b = ours.match(line), theirs.match(line)
            assert (a is None) == (b is None), (separator, line)
            if a is not None and b is not None:
                assert [a.group(g) for g in ("sep", "end", "ws", "linesep")] == list(b.group("sep", "end", "ws", "linesep"))
                matched += 1
            tried += 1
    assert matched > tried // 10  # both sides well tried
    assert not isinstance(feed._FeedRe.compile(r"(?P<sep>a)b"), feed._BoundaryLine)  # any other pattern: re's own


def _tree(msg: object) -> list[object]:
    from email.message import Message

    assert isinstance(msg, Message)
    return [(p._headers, p.get_payload() if not p.is_multipart() else None, [type(d) for d in p.defects],
             p.get_unixfrom(), p.preamble, p.epilogue, p.get_default_type()) for p in msg.walk()]


MULTIPART_PIECES = [b"--b\r\n", b"--b--\r\n", b"--b \t\r\n", b"--b--  \n", b"--b-- x\r\n", b"--bb\r\n", b"--b\r",
                    b"--b", b"\r\n", b"\n", b"text\r\n", b"Content-Type: text/plain\r\n\r\n",
                    b"Content-Type: multipart/mixed; boundary=c\r\n\r\n", b"--c\r\n", b"--c--\r\n",
                    b"Content-Type: message/rfc822\r\n\r\n", b"Subject: inner\r\n\r\n", b"\xe4\xb8\xad\r\n"]


def test_messages_parse_into_the_trees_the_stdlib_builds() -> None:
    from email import message_from_bytes

    from mailbot.parse import feed

    rng = random.Random(822)
    built = [b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
             + b"".join(rng.choice(MULTIPART_PIECES) for _ in range(rng.randint(0, 25))) for _ in range(3000)]
    for raw in [r for _, r in MAILS] + built:
        assert _tree(feed.message_from_bytes(raw)) == _tree(message_from_bytes(raw)), raw[:300]



# --- found on the way: lines of one blank took quadratic time in split_reply ----------------------------------

def test_lines_of_one_blank_take_linear_time() -> None:
    """Until 2026-12-03 the reply's ends were trimmed a line at a time by slicing: 80,000 lines of one space
    took 26 s. n and 4n lines: linear is ~4 times as long, quadratic ~16."""
    import time

    from mailbot.parse import parse

    def seconds(body: bytes) -> float:
        raw = b"From: a@b.example\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            parse(raw)
            best = min(best, time.perf_counter() - start)
        return best

    for shape in (lambda n: b" \r\n" * n + b"x", lambda n: b"x\r\n" + b"\t\r\n" * n):
        small, large = seconds(shape(20_000)), seconds(shape(80_000))
        assert large / max(small, 1e-3) < 8, (small, large)


PARAM_PIECES = ["text/plain", "application/pdf", ";", " ", "name", "NAME", "Name", "filename", "FILENAME", "fİlename",
                "n ame", "=", '"a.txt"', "a.txt", "*", "*0", "*0*", "*1*", "utf-8''%E4%B8%AD", "charset=gbk", "x-",
                "attachment", "inline", "\t", "\r\n ", "ｎａｍｅ", "(c)"]


def test_a_part_said_to_name_no_file_names_none() -> None:
    from email import message_from_bytes

    from mailbot.parse.body import _may_name_a_file

    rng = random.Random(2183)
    parts = [p for _, raw in MAILS for p in message_from_bytes(raw).walk()]
    for _ in range(20000):
        ctype = "".join(rng.choice(PARAM_PIECES) for _ in range(rng.randint(1, 8)))
        disposition = "".join(rng.choice(PARAM_PIECES) for _ in range(rng.randint(0, 8)))
        head = f"Content-Type: {ctype}\r\n" + (f"Content-Disposition: {disposition}\r\n" if disposition else "")
        parts.append(message_from_bytes((head + "\r\nx").encode("utf-8", "surrogateescape")))
    named = 0
    for part in parts:
        if not _may_name_a_file(part):
            assert part.get_filename() is None, part.items()
        named += part.get_filename() is not None
    assert named > 1000
