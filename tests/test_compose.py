"""compose: OutboundMail → RFC 5322 bytes."""

from __future__ import annotations

import email
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage

import pytest

from mailbot.models import EntryKind, OutboundMail
from mailbot.render.compose import MAX_REFERENCES_OCTETS, make_message_id, recipients, to_bytes

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def make_mail(**changes: object) -> OutboundMail:
    mail = OutboundMail(
        action_id="reminder:CAS-01234-ABCDEF:1",
        case_key="CAS-01234-ABCDEF",
        kind=EntryKind.REMINDER,
        message_id=make_message_id("reminder:CAS-01234-ABCDEF:1", "support.example"),
        subject="Re: CAS-01234-ABCDEF disk failure",
        from_addr="casebot@support.example",
        from_name="Support Bot",
        to=("Customer@Client.example",),
        cc=("eng@support.example",),
        in_reply_to="<parent@client.example>",
        references=("<root@client.example>", "<parent@client.example>"),
        text="Hello,\nany news?\n",
        html=None,
    )
    return replace(mail, **changes)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def content(part: EmailMessage) -> str:
    """Decoded body with wire CRLFs back to the newlines the template had."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def test_threading_and_loop_prevention_headers() -> None:
    mail = make_mail()
    msg = parse(to_bytes(mail, NOW))
    assert msg["From"] == "Support Bot <casebot@support.example>"
    assert msg["To"] == "Customer@Client.example"
    assert msg["Cc"] == "eng@support.example"
    assert msg["Subject"] == "Re: CAS-01234-ABCDEF disk failure"
    assert msg["Message-ID"] == mail.message_id
    # RFC 5322 §3.6.4
    assert msg["In-Reply-To"] == "<parent@client.example>"
    assert msg["References"] == "<root@client.example> <parent@client.example>"
    # RFC 3834 §5 and the Exchange equivalent
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "OOF, NRN, AutoReply, RN"
    assert msg["X-Mailbot-Action"] == "reminder:CAS-01234-ABCDEF:1"
    assert msg["Date"].datetime == NOW
    assert msg.get_content_type() == "text/plain"
    assert content(msg) == "Hello,\nany news?\n"


def test_date_keeps_the_callers_offset() -> None:
    shanghai = timezone(timedelta(hours=8))
    raw = to_bytes(make_mail(), NOW.astimezone(shanghai))
    assert b"Date: Mon, 06 May 2024 15:08:09 +0800\r\n" in raw


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        to_bytes(make_mail(), datetime(2024, 5, 6))


def test_cc_omitted_when_empty_and_no_threading_headers_for_a_new_thread() -> None:
    msg = parse(to_bytes(make_mail(cc=(), in_reply_to=None, references=()), NOW))
    assert "Cc" not in msg
    assert "In-Reply-To" not in msg
    assert "References" not in msg


def test_long_references_are_folded_and_keep_the_root_and_the_latest() -> None:
    refs = tuple(f"<message-{i:03d}.0123456789abcdef@mail.client.example>" for i in range(30))
    raw = to_bytes(make_mail(references=refs), NOW)
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")), "RFC 5322 §2.1.1 line length"
    kept = parse(raw)["References"].split()
    # RFC 5322 §3.6.4 lets References be shortened: the thread's root, then the newest ids in order.
    assert kept[0] == refs[0]
    assert kept[1:] == list(refs[len(refs) - len(kept) + 1:])
    assert len(" ".join(kept)) <= MAX_REFERENCES_OCTETS < len(" ".join([*kept, refs[len(refs) - len(kept)]]))


def test_lines_are_crlf_and_seven_bit() -> None:
    raw = to_bytes(make_mail(subject="回复：初次响应", text="您好，\n请问有进展吗？\n"), NOW)
    assert max(raw) < 128  # no 8BITMIME negotiated, so nothing 8-bit on the wire
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_chinese_subject_names_and_body_round_trip() -> None:
    mail = make_mail(
        subject="回复：初次响应 CMIT:0001247 关于存储阵列硬盘故障的后续跟进，请尽快回复以便我们安排工程师",
        from_name="支持团队 机器人",
        text="您好，\n\n请问问题是否已解决？\n",
    )
    msg = parse(to_bytes(mail, NOW))
    assert msg["Subject"] == mail.subject
    assert msg["From"].addresses[0].display_name == "支持团队 机器人"
    assert msg["From"].addresses[0].addr_spec == "casebot@support.example"
    body = msg.get_body(("plain",))
    assert body is not None
    assert body.get_content_charset() == "utf-8"
    assert content(body) == mail.text


def test_html_alternative() -> None:
    mail = make_mail(text="Hello 你好\n", html="<p>Hello <b>你好</b></p>\n")
    msg = parse(to_bytes(mail, NOW))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]  # RFC 2046 §5.1.4 order
    assert content(parts[0]) == "Hello 你好\n"
    assert content(parts[1]) == "<p>Hello <b>你好</b></p>\n"


def _header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [m.group(1).lower() for m in re.finditer(r"^([^\s:]+):", head, re.MULTILINE)]


@pytest.mark.parametrize("crlf", ["\r\n", "\n", "\r"])
def test_header_injection_through_subject_is_neutralised(crlf: str) -> None:
    mail = make_mail(subject=f"Hello{crlf}Bcc: evil@x")
    raw = to_bytes(mail, NOW)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert "bcc" not in _header_names(raw)
    assert msg["Subject"] == "Hello Bcc: evil@x"


def test_header_injection_through_names() -> None:
    mail = make_mail(from_name="Bot\r\nBcc: evil@x", action_id="reminder:CAS-1:1\r\nBcc: evil@y")
    raw = to_bytes(mail, NOW)
    assert "bcc" not in _header_names(raw)
    msg = parse(raw)
    assert "Bcc" not in msg
    assert msg["X-Mailbot-Action"] == "reminder:CAS-1:1 Bcc: evil@y"


def test_message_id_is_deterministic_per_action() -> None:
    a = make_message_id("reminder:CAS-1:1", "support.example")
    assert a == make_message_id("reminder:CAS-1:1", "Support.Example")
    assert a != make_message_id("reminder:CAS-1:2", "support.example")
    assert re.fullmatch(r"<mailbot\.[0-9a-f]{24}@support\.example>", a)


@pytest.mark.parametrize("domain", ["", "bad domain", "x>@y", "a@b"])
def test_message_id_rejects_a_bad_domain(domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id("a", domain)


def test_recipients_are_to_then_cc_lowercased_once() -> None:
    mail = make_mail(to=("A@X.example", "b@y.example"), cc=("a@x.example", " C@Z.example ", "B@Y.EXAMPLE"))
    assert recipients(mail) == ["a@x.example", "b@y.example", "c@z.example"]


def test_the_short_ascii_header_shortcut_writes_what_compat32_writes() -> None:
    """compose's policy writes a short ASCII header as it is instead of folding it through `Header`; the
    bytes must be those compat32 itself writes, spaces, tabs and encoded-word look-alikes included."""
    import random

    from mailbot.render.compose import SMTP_COMPAT

    reference = policy.compat32.clone(linesep="\r\n", max_line_length=78)
    rng = random.Random(7)
    alphabet = "ab =?:;<>@.\t,\"()\u00e9"
    names = ["To", "Subject", "X-Mailbot-Action", "Content-Type", "References"]
    for _ in range(20_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        name = rng.choice(names)
        assert SMTP_COMPAT.fold_binary(name, value) == reference.fold_binary(name, value), (name, value)
    # And a whole mail, through the generator.
    raw = to_bytes(make_mail(html=None), NOW)
    assert email.message_from_bytes(raw, policy=policy.compat32).as_bytes(policy=reference) == raw


# --- untrusted text in headers (issue 13): line length, threading ids, control characters, addresses


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def shown_recipients(raw: bytes) -> list[str]:
    """The addresses a mail client shows in To and Cc, as the stdlib reads the sent bytes."""
    msg = parse(raw)
    return [a.addr_spec.lower() for name in ("To", "Cc") if msg[name] is not None for a in msg[name].addresses]


def test_a_2000_character_message_id_is_left_out_of_the_threading_headers() -> None:
    huge = "<" + "x" * 1990 + "@outsider.example>"
    mail = make_mail(in_reply_to=huge, references=("<root@client.example>", huge, "<parent@client.example>"))
    raw = to_bytes(mail, NOW)
    assert max(len(line) for line in header_lines(raw)) <= 78
    msg = parse(raw)
    assert "In-Reply-To" not in msg  # no parent a server would take: better no In-Reply-To than no mail
    assert msg["References"].split() == ["<root@client.example>", "<parent@client.example>"]


@pytest.mark.parametrize("bad", ["<回复@client.example>", "<a b@client.example>", "<a\x0b@client.example>",
                                 "no-brackets@client.example", "<>"])
def test_an_id_that_is_not_an_ascii_msg_id_is_dropped_not_encoded(bad: str) -> None:
    raw = to_bytes(make_mail(in_reply_to=bad, references=(bad, "<parent@client.example>")), NOW)
    assert b"=?" not in b"\r\n".join(line for line in header_lines(raw) if not line.startswith(b"Subject"))
    msg = parse(raw)
    assert "In-Reply-To" not in msg
    assert msg["References"] == "<parent@client.example>"


def test_an_id_of_the_longest_kept_length_threads() -> None:
    longest = "<" + "a" * 230 + "@client.example>"
    assert len(longest) == 247
    msg = parse(to_bytes(make_mail(in_reply_to=longest, references=(longest,)), NOW))
    assert msg["In-Reply-To"].strip() == longest  # folded onto its own line (RFC 5322 §3.6.4 [CFWS])
    assert msg["References"].strip() == longest


@pytest.mark.parametrize("ctrl", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00",
                                  "\x7f", "\x1b"])
def test_control_characters_never_reach_a_header(ctrl: str) -> None:
    mail = make_mail(subject=f"Hello{ctrl}Bcc: evil@x", from_name=f"Bot{ctrl}Bcc: evil@y",
                     action_id=f"fine{ctrl}Bcc: evil@z")
    raw = to_bytes(mail, NOW)
    assert "bcc" not in _header_names(raw)
    msg = parse(raw)
    for name in ("Subject", "From", "X-Mailbot-Action"):
        value = str(msg[name])
        assert ctrl not in value and "Bcc: evil@" in value, (name, value)


def test_an_encoded_address_holding_angle_brackets_stays_one_recipient() -> None:
    # What parse makes of `=?utf-8?q?victim=40x.example=3E=2C_=3Cevil?= <…@y.example>`-style tricks.
    tricky = "victim@x.example>, <evil@y.example"
    mail = make_mail(to=(tricky,), cc=("eng@support.example",))
    raw = to_bytes(mail, NOW)
    assert shown_recipients(raw) == recipients(mail) == ['"victim@x.example>, <evil"@y.example', "eng@support.example"]
    # A local part that arrives quoted is quoted once, not twice.
    quoted = make_mail(to=('"john smith"@client.example',), cc=())
    assert shown_recipients(to_bytes(quoted, NOW)) == recipients(quoted) == ['"john smith"@client.example']


def test_a_display_name_with_specials_is_one_address() -> None:
    for name in ['Li Qi>, <evil@x.example', 'Li "Q" Qi, \\ via bot', "李琦>, <evil@x.example via 机器人"]:
        msg = parse(to_bytes(make_mail(from_name=name), NOW))
        [sender] = msg["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (name, "casebot@support.example")


def test_addresses_that_cannot_be_delivered_are_neither_shown_nor_sent() -> None:
    from mailbot.render.compose import undeliverable

    mail = make_mail(to=("张三@客户.example", "ok@客户.example", "a\x0bb@x.example", "no-at-sign"), cc=())
    raw = to_bytes(mail, NOW)
    [ok] = recipients(mail)
    local, domain = ok.split("@")
    # The domain in IDNA (RFC 5890): ASCII on the wire, the same name once decoded.
    assert local == "ok" and domain.startswith("xn--") and domain.encode("ascii").decode("idna") == "客户.example"
    assert shown_recipients(raw) == recipients(mail)
    assert undeliverable(mail) == ["张三@客户.example", "a\x0bb@x.example", "no-at-sign"]


def test_to_says_undisclosed_recipients_when_none_is_deliverable() -> None:
    mail = make_mail(to=("张三@客户.example",), cc=("eng@support.example",))
    raw = to_bytes(mail, NOW)
    assert b"\r\nTo: undisclosed-recipients:;\r\n" in raw
    assert shown_recipients(raw) == recipients(mail) == ["eng@support.example"]


def test_a_receipt_for_a_long_message_id_keeps_its_action_header_short() -> None:
    action = "receipt/<" + "y" * 1500 + "@outsider.example>"
    raw = to_bytes(make_mail(action_id=action), NOW)
    assert max(len(line) for line in header_lines(raw)) <= 78
    assert str(parse(raw)["X-Mailbot-Action"]) == action


def test_hostile_values_in_every_field_give_short_lines_and_honest_recipients() -> None:
    import random

    rng = random.Random(13)
    pieces = ["a", "Z", " ", "\t", ",", "<", ">", '"', "\\", "@", ".", "=?", "?=", ":", ";", "(", "回", "é",
              "\r", "\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\x00", "\x7f", "x" * 300, "<id@h>"]

    def text(n: int) -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, n)))

    for _ in range(200):
        mail = make_mail(
            subject=text(40), from_name=text(30), action_id=text(20),
            to=tuple(text(8) + "@" + rng.choice(["client.example", "客户.example", text(4)])
                     for _ in range(rng.randint(1, 3))),
            cc=tuple(text(6) for _ in range(rng.randint(0, 2))),
            in_reply_to=text(10), references=tuple(text(10) for _ in range(rng.randint(0, 5))),
        )
        raw = to_bytes(mail, NOW)
        lines = header_lines(raw)
        assert max(len(line) for line in lines) <= 998, mail  # RFC 5322 §2.1.1
        assert all(line[:1] in b" \t" or b":" in line for line in lines), mail  # no stray line
        assert max(raw) < 128 and not any(c < 32 and c != 9 for line in lines for c in line), mail
        assert len(_header_names(raw)) == len(set(_header_names(raw))), mail  # nothing injected twice
        assert shown_recipients(raw) == recipients(mail), mail
