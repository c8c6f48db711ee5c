"""Mail fidelity audit: mail the bot read or wrote wrongly, each told as a moment in a case's life.

Chinese (GBK/GB18030/Big5, Outlook, Foxmail, QQ Mail, NetEase) and English mail are both first class. Each
test sends what a real client sends through the real path — `parse`, `mailbot explain --json`, or a Maildir
and `Service.run_once` — and checks what the case keeps or what the customer receives.
"""

from __future__ import annotations

import base64
import email
import json
import quopri
import struct
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

import pytest

from mailbot.cli.main import main
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import InboundMail
from mailbot.parse import parse
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.outboxdir import OutboxDirTransport
from mailbot.wiring import make_calendar

KEY = "CAS-04027-B7D2Z5"
CONFIG = ('[bot]\naddress = "casebot@support.example"\nstate_dir = "state"\n'
          '[engineers]\ndomains = ["support.example"]\n[mailbox]\npath = "maildir"\n')


def b64(text: str, charset: str = "utf-8") -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


def customer_mail(body: bytes, content_type: str = "text/plain; charset=utf-8", cte: str = "base64",
                  subject: str = f"=?utf-8?B?{b64(f'答复: [案例号: {KEY} ] 某单位终端频繁蓝屏')}?=",
                  extra: str = "") -> bytes:
    """Yang's answer in the case's thread, with the body exactly as his client wrote it."""
    head = (f"From: =?utf-8?B?{b64('杨先生')}?= <yang@customer.example>\r\nTo: liqi@support.example\r\n"
            f"Cc: casebot@support.example\r\nSubject: {subject}\r\nMessage-ID: <reply1@customer.example>\r\n"
            f"In-Reply-To: <open1@support.example>\r\nDate: Mon, 19 Apr 2021 10:00:00 +0800\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n{extra}\r\n")
    return head.encode("ascii") + body


def read(raw: bytes) -> InboundMail:
    mail = parse(raw)
    assert isinstance(mail, InboundMail), mail
    return mail


def explain(tmp_path: Path, raw: bytes, capsys: pytest.CaptureFixture[str]) -> dict:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    eml = tmp_path / "mail.eml"
    eml.write_bytes(raw)
    assert main(["explain", str(eml), "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)


# --- reading: the customer's words survive damaged transfer encodings -------------------------------------

ANSWER = "李工您好，日志已经上传到服务器，蓝屏问题在更新驱动后没有再出现，谢谢。"


@pytest.mark.parametrize("damage", ["base64 cut short", "one stray byte"])
def test_a_utf8_answer_with_one_broken_byte_keeps_its_chinese(damage: str) -> None:
    # Found: one undecodable byte in a UTF-8 body (a relay that cut the base64 by a character, a stray
    # byte) made the whole answer Latin-1 mojibake (`æ\x9d\x8eå·¥æ\x82¨å¥½`): charsets.decode_text fell
    # through to Latin-1, which has no U+FFFD and so looked better than mail-parser's one replacement.
    data = ANSWER.encode("utf-8")
    if damage == "base64 cut short":
        body = base64.b64encode(data)[:-2] + b"\r\n"  # the last character and the padding lost
        mail = read(customer_mail(body))
    else:
        mail = read(customer_mail(data[:12] + b"\xff" + data[12:], cte="8bit"))
    # Every character but the damaged one is kept; that one shows as one U+FFFD.
    assert mail.new_text.count("\ufffd") == 1
    lost = ANSWER[-1] if damage == "base64 cut short" else ""
    assert mail.new_text.replace("\ufffd", "") == ANSWER.removesuffix(lost)


@pytest.mark.parametrize(("text", "label"), [(ANSWER, "utf-8"), ("师志", "gb2312")], ids=["GBK as utf-8", "a GBK name"])
def test_gbk_is_still_read_as_gbk(text: str, label: str) -> None:
    # The guards below must not take real GBK for UTF-8: GBK read as UTF-8 is mostly broken sequences, and
    # the few short GBK texts that are valid UTF-8 by chance (`师志` is `ʦ־`) read as common characters.
    mail = read(customer_mail(text.encode("gbk"), f"text/plain; charset={label}", "8bit"))
    assert mail.new_text == text


@pytest.mark.parametrize("label", ["gb2312", "GBK"])
@pytest.mark.parametrize("cte", ["base64", "8bit"])
def test_a_utf8_answer_under_a_chinese_label_is_read_as_utf8(label: str, cte: str) -> None:
    # Found: UTF-8 text labelled gb2312 (misconfigured OA systems and scripts) was read as GB18030 whenever
    # that decodes without an error — about 40% of Chinese UTF-8 text — into `濂界殑锛岃阿璋紒` mojibake;
    # the subject's encoded word alike.
    subject, answer = "答复: 更新驱动后问题已解决", "好的，谢谢！\n更新驱动后问题已解决"
    assert answer.encode().decode("gb18030") != answer  # GB18030 reads these bytes without an error
    body = base64.encodebytes(answer.encode()) if cte == "base64" else answer.encode()
    mail = read(customer_mail(body, f"text/plain; charset={label}", cte, subject=f"=?{label}?B?{b64(subject)}?="))
    assert (mail.subject, mail.new_text) == (subject, answer)


def test_quoted_printable_with_padded_soft_breaks_is_read_whole() -> None:
    # Found: RFC 2045 §6.7 (3) makes blanks at the end of a quoted-printable line transport padding, so
    # `= ` at a line end is a soft break; the stdlib kept `=` and the break, and since the encoder had split
    # a GBK character there, every character after the first break was misread.
    encoded = quopri.encodestring(ANSWER.encode("gbk"))
    assert b"=\n" in encoded  # the encoder folded the line, inside a character
    padded = encoded.replace(b"=\n", b"=  \r\n")
    mail = read(customer_mail(padded, "text/plain; charset=gb2312", "quoted-printable"))
    assert mail.new_text == ANSWER


def test_a_byte_order_mark_does_not_hide_the_engineers_close(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Found: a UTF-8 body written with a BOM (Notepad text pasted by some Windows mailers) kept U+FEFF in
    # front of the text: `#close` on the first line was no command at all, and the BOM was quoted.
    body = "\ufeff#close\n问题描述：终端频繁蓝屏\n问题总结：更新显卡驱动后解决\n".encode()
    raw = (f"From: =?utf-8?B?{b64('李琦')}?= <liqi@support.example>\r\nTo: casebot@support.example\r\n"
           f"Subject: [案例号: {KEY} ]\r\nMessage-ID: <close1@support.example>\r\n"
           f"Date: Tue, 20 Apr 2021 10:00:00 +0800\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(body)
    data = explain(tmp_path, raw, capsys)
    assert data["text"].startswith("#close\n问题描述")
    assert [(c["command"], c["error"]) for c in data["commands"]] == [("close", None)]


def test_big5_html_that_names_its_charset_only_in_meta_is_read_as_big5() -> None:
    # Found: HTML-only mail from Taiwan/Hong Kong clients often has no MIME charset, only <meta charset>;
    # the bytes were guessed, and Big5 read as GB18030 decodes "successfully" into wrong characters.
    text = "您好，請協助上傳日誌檔案，謝謝。"
    html = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=big5"></head>' \
           f"<body><p>{text}</p></body></html>"
    mail = read(customer_mail(base64.encodebytes(html.encode("big5")), "text/html"))
    assert mail.new_text == text


def test_a_raw_gbk_attachment_name_is_read_in_gbk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found: Foxmail and older Outlook write a Chinese filename as raw GBK bytes; mail-parser read them as
    # UTF-8 with replacements (`��־�ļ�.zip`), and the case's timeline showed that.
    name = "蓝屏日志文件.zip"
    body = (b"--B\r\nContent-Type: text/plain; charset=gbk\r\n\r\n" + "日志见附件。".encode("gbk") + b"\r\n"
            b"--B\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=\""
            + name.encode("gbk") + b"\"\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--B--\r\n")
    raw = customer_mail(body, 'multipart/mixed; boundary="B"', "7bit")
    assert [a.name for a in read(raw).attachments] == [name]
    assert name in json.dumps(explain(tmp_path, raw, capsys)["attachments"], ensure_ascii=False)


def test_a_content_type_without_its_semicolon_keeps_the_body() -> None:
    # Found: `Content-Type: text/plain charset=gbk` (no `;`, from broken mailers and scripts) is one token to
    # the stdlib, so the part was no text part at all and the customer's whole answer was dropped ("").
    mail = read(customer_mail(base64.encodebytes(ANSWER.encode("gbk")), "text/plain charset=gbk"))
    assert mail.new_text == ANSWER


SPLIT_SUBJECT = f"答复: [案例号: {KEY} ] 某单位终端频繁蓝屏"


def _split_words(text: str, charset: str, encoding: str, cut: int) -> str:
    """`text` as two encoded words on two folded lines, cut after `cut` bytes: inside a character."""
    data = text.encode(charset)
    assert data[:cut].decode(charset, "ignore").encode(charset) != data[:cut]  # the cut splits a character
    if encoding == "B":
        words = [base64.b64encode(half).decode("ascii") for half in (data[:cut], data[cut:])]
    else:
        words = ["".join(f"={b:02X}" for b in half) for half in (data[:cut], data[cut:])]
    return "\r\n ".join(f"=?{charset}?{encoding}?{w}?=" for w in words)


@pytest.mark.parametrize(("charset", "encoding", "cut", "name_cut"), [
    ("utf-8", "B", 17, 4), ("utf-8", "Q", 17, 4), ("gbk", "B", 8, 3), ("gb18030", "Q", 8, 3),
])
def test_an_encoded_word_split_inside_a_character_still_names_the_case(charset: str, encoding: str,
                                                                      cut: int, name_cut: int) -> None:
    # Checked (held; no test covered it): Foxmail and some webmails cut a long subject into encoded words
    # by bytes, not characters. RFC 2047 §5 forbids it, but the words of one charset are joined before
    # decoding, so neither the subject nor the name loses a character.
    name = "杨先生（某单位信息中心）"
    raw = customer_mail(b"hi\r\n", subject=_split_words(SPLIT_SUBJECT, charset, encoding, cut))
    raw = raw.replace(f"=?utf-8?B?{b64('杨先生')}?=".encode(), _split_words(name, charset, encoding, name_cut).encode())
    mail = read(raw)
    assert (mail.subject, mail.from_name) == (SPLIT_SUBJECT, name)


def _tnef(body: str) -> bytes:
    """A minimal winmail.dat (MS-OXTNEF): signature, key, and the message body as attBody."""
    def attribute(att_id: int, data: bytes) -> bytes:
        return (struct.pack("<BII", 1, att_id, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF))
    return struct.pack("<IH", 0x223E9F78, 0x0001) + attribute(0x0002800C, body.encode("cp1252") + b"\0")


@pytest.mark.xfail(strict=True, reason="a TNEF-only mail (Outlook `Rich Text` to an outside address) carries "
                   "its text in winmail.dat; reading it needs a TNEF and compressed-RTF decoder (tnefparse 1.4.0 "
                   "is the only pure-Python one, last released 2021): a dependency decision for the lead")
def test_an_outlook_rich_text_answer_in_winmail_dat_is_read() -> None:  # not yet: the note below says so
    # Found: the customer's answer is an empty message; the case shows nothing he wrote and says nothing.
    body = (b"--B\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Disposition: attachment;"
            b" filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(_tnef("The logs are uploaded, the blue screen is gone.")) + b"--B--\r\n")
    mail = read(customer_mail(body, 'multipart/mixed; boundary="B"', "7bit"))
    assert [a.name for a in mail.attachments] == ["winmail.dat"]
    assert mail.new_text == "The logs are uploaded, the blue screen is gone."


def test_an_answer_only_in_winmail_dat_says_its_text_was_not_read() -> None:
    body = (b"--B\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Disposition: attachment;"
            b" filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(_tnef("The logs are uploaded.")) + b"--B--\r\n")
    mail = read(customer_mail(body, 'multipart/mixed; boundary="B"', "7bit"))
    assert mail.new_text == "" and any("winmail.dat" in p for p in mail.header_problems)


# --- reading: only the new words are the customer's answer ----------------------------------------------

NEW = "好的，日志已经上传。"
QUOTED = "请上传 C:\\Windows\\Minidump 下的日志"
HISTORY = {
    # QQ Mail's text/plain alternative keeps the `&nbsp;` of its HTML
    "QQ Mail": '------------------&nbsp;原始邮件&nbsp;------------------\n发件人:&nbsp;"李琦"<liqi@support.example>;\n'
               "发送时间:&nbsp;2021年4月12日(星期一) 晚上7:32\n",
    "QQ Mail, English": '------------------ Original ------------------\nFrom: "李琦"<liqi@support.example>;\n'
                        "Date: Mon, Apr 12, 2021 05:52 PM\n",
    "NetEase Mail Master": "---- 回复的原邮件 ----\n| 发件人 | 李琦<liqi@support.example> |\n| 日期 | 2021年04月12日 17:52 |\n",
    "Outlook 2007 zh": "-----邮件原件-----\n发件人: 李琦 [mailto:liqi@support.example]\n发送时间: 2021年4月12日 17:52\n",
    "NetEase, English": "On 4/12/2021 17:52，李琦<liqi@support.example> wrote：\n",
}


@pytest.mark.parametrize("client", list(HISTORY))
def test_the_reply_text_is_only_the_new_words(client: str) -> None:
    # Found: these separators were not known, so the whole quoted history (or its separator line) was kept
    # as the customer's new text, stored in the timeline and shown as his answer.
    body = f"{NEW}\n\n{HISTORY[client]}\n{QUOTED}\n"
    mail = read(customer_mail(base64.encodebytes(body.encode("gb18030")), "text/plain; charset=gb2312"))
    assert mail.new_text == NEW


# --- writing: the reminder to a case opened by a reply ----------------------------------------------------

@pytest.mark.parametrize(("opening_subject", "reminder_subject"), [
    # NFKC folds the full-width colon when the prefixes are taken off (match.strip_prefixes)
    (f"回复：[案例号：{KEY}] 某单位终端频繁蓝屏", f"回复: [案例号:{KEY}] 某单位终端频繁蓝屏"),
    (f"答复: [案例号: {KEY}] 某单位终端频繁蓝屏", f"回复: [案例号: {KEY}] 某单位终端频繁蓝屏"),
    (f"RE: AW: [案例号: {KEY}] 某单位终端频繁蓝屏", f"回复: [案例号: {KEY}] 某单位终端频繁蓝屏"),
], ids=["QQ full-width", "Outlook zh", "English chain"])
def test_a_reminder_to_a_case_opened_by_a_reply_has_one_reply_prefix(make_settings, tmp_path: Path,
                                                                       opening_subject: str,
                                                                       reminder_subject: str) -> None:
    # Checked (held; no test covered it end to end): the engineer often opens the case by answering the
    # customer's own mail (Outlook zh writes `答复:`, QQ Mail the full-width `回复：`). The reminder goes out
    # with one `回复: `, threaded under the opening mail, its Chinese subject RFC 2047-encoded in lines that
    # no server refuses (RFC 5322 §2.1.1).
    settings = make_settings()
    outbox = settings.bot.state_dir / "outbox"
    service = Service(settings, Store(tmp_path / "state" / "store"), MaildirMailbox(settings.mailbox.path),
                      OutboxDirTransport(outbox), make_calendar(settings))
    opening = (f"From: =?utf-8?B?{b64('李琦')}?= <liqi@support.example>\r\nTo: yang@customer.example\r\n"
               f"Cc: casebot@support.example\r\nSubject: =?utf-8?B?{b64(opening_subject)}?=\r\n"
               f"Message-ID: <open1@support.example>\r\nDate: Mon, 12 Apr 2021 17:52:00 +0000\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               f"{b64('杨先生您好，请上传蓝屏日志。')}\r\n").encode("ascii")
    deliver(settings.mailbox.path, opening)
    service.run_once(datetime(2021, 4, 13, 2, tzinfo=UTC))
    service.run_once(datetime(2021, 4, 16, 2, tzinfo=UTC))  # the first reminder is due (3 business days)

    [raw] = [p.read_bytes() for p in outbox.glob("*.eml")]
    sent = email.message_from_bytes(raw, policy=default)
    assert str(sent["Subject"]) == reminder_subject
    assert sent["In-Reply-To"] == "<open1@support.example>"
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert "> 杨先生您好，请上传蓝屏日志。" in sent.get_body(("plain",)).get_content()
