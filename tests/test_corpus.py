"""The shared corpus of real third-party test mail (../shared/corpus) through parse, match and the whole
service: nothing raises, and every message ends in exactly one place. Skips when the corpus is absent.

The Chinese files were decoded and read by eye once; each finding below is pinned by a test, with the
finding in a comment.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.config import from_dict
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.match import Index, match
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import parse
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_calendar


def corpus_dir() -> Path | None:
    """../shared/corpus beside the checkout; MAILBOT_SHARED overrides; None when absent."""
    env = os.environ.get("MAILBOT_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    corpus = shared / "corpus"
    return corpus if corpus.is_dir() else None


CORPUS = corpus_dir()
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.parent != CORPUS) if CORPUS else []
SETTINGS = from_dict({}, Path("."))
EMPTY = Index(case_for_message=lambda _: None, case_for_token=lambda _: None)

needs_corpus = pytest.mark.skipif(CORPUS is None, reason="../shared/corpus is not present")


def corpus_file(relative: str) -> bytes:
    if CORPUS is None or not (CORPUS / relative).is_file():
        pytest.skip(f"corpus file {relative} is not present")
    return (CORPUS / relative).read_bytes()


def ok(relative: str) -> InboundMail:
    result = parse(corpus_file(relative))
    assert isinstance(result, InboundMail), result
    return result


@needs_corpus
def test_manifest_lists_every_file() -> None:
    assert CORPUS is not None
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        listed = {row["path"] for row in csv.DictReader(f, delimiter="\t")}
    assert listed == {str(p.relative_to(CORPUS)) for p in FILES}


@pytest.mark.parametrize(
    "path", FILES or [None], ids=[str(p.relative_to(CORPUS)) for p in FILES] if CORPUS else ["corpus-absent"]
)
def test_every_corpus_file_parses_and_matches(path: Path | None) -> None:
    if path is None:
        pytest.skip("../shared/corpus is not present")
    result = parse(path.read_bytes())
    assert isinstance(result, InboundMail | ParseFailure)
    if isinstance(result, ParseFailure):
        assert result.reason.strip()
        return
    assert result.message_id
    found = match(result, SETTINGS.cases.patterns, SETTINGS.cases.tracking_token, EMPTY)
    assert found.key is None or found.rule is not None


@needs_corpus
def test_whole_corpus_through_a_maildir_ends_in_exactly_one_place(tmp_path: Path) -> None:
    settings = from_dict({
        "bot": {"address": "casebot@support.example", "state_dir": "state"},
        "engineers": {"addresses": ["liqi@support.example"], "domains": ["support.example"]},
        "mailbox": {"kind": "maildir", "path": "maildir"},
    }, tmp_path)
    root = settings.mailbox.path
    for n, path in enumerate(FILES):
        deliver(root, path.read_bytes(), name=f"{n:04d}.{path.name}")
    store = Store(None)
    box = MaildirMailbox(root, settings.mailbox.quarantine_folder)
    service = Service(settings, store, box, MemoryTransport(), make_calendar(settings))

    report = service.run_once(datetime(2026, 11, 2, 2, 0, tzinfo=UTC))

    assert list((root / "new").iterdir()) == []
    processed = sorted(p.name.split(":")[0] for p in (root / "cur").iterdir())
    quarantined = sorted(p.name.split(":")[0] for p in (root / ".Quarantine" / "cur").iterdir())
    assert len(processed) + len(quarantined) == len(FILES)
    assert not set(processed) & set(quarantined)

    # quarantined: each with a reason on record
    reasons = {q["ref"]: q["reason"] for q in store.quarantined()}
    assert sorted(reasons) == quarantined
    assert all(reason.strip() for reason in reasons.values())

    # processed: each recorded on a case or on the unmatched list, under its Message-ID
    unmatched = {u["message_id"] for u in store.unmatched()}
    for name in processed:
        mail = parse((root / "cur" / f"{name}:2,S").read_bytes())
        assert isinstance(mail, InboundMail), name
        place = store.seen(mail.message_id)
        assert place is not None, name
        if place["case"]:
            case = store.get_case(place["case"])
            assert case is not None and case.has_message(mail.message_id), name
            assert mail.message_id not in unmatched, name
        else:
            assert mail.message_id in unmatched, name

    # and the report adds up: copies of one Message-ID are recorded once
    assert report.ingested + report.quarantined == len(FILES)
    assert report.threaded + report.unmatched + report.duplicates == report.ingested
    assert report.quarantined == len(quarantined)


# --- what reading the Chinese corpus by eye found -------------------------------------------------------

CHINESE = [
    # Raw 8-bit Big5 subject and From: compat32 hands such headers back as Header objects whose str() is
    # all U+FFFD (`�i���h�u�W�q��`). Now the raw bytes are read, in the charset the body declares.
    ("chinese/Kopano-dev_kopano-core__big5.eml", "養樂多線上訂購", "養樂多", "body"),
    # Raw 8-bit GB2312 subject and display name in a spam mail: same loss, same fix.
    ("chinese/apache_spamassassin__gb2312.1.eml", "全新原装进口，送货上门，货到付款－台湾鑫龙商贸集团公司向您拜年!",
     "台湾鑫龙商贸集团公司", "台湾鑫龙商贸集团公司向您拜年!"),
    # Raw 8-bit Big5 subject of a mailing-list post.
    ("chinese/apache_spamassassin__big5-base64.1.eml",
     "[SLAT-talk] 鉅靡6月17日新片又到.如有重複寄發.敬請原諒!．．．．．．鉅靡6月17日新片又到.如有重複寄發.敬請原諒!．．．",
     "", "永久網址：gimit.cn.st或gimit99.iscool.net"),
    # Raw 8-bit GB2312 subject of a bounce from sina.com.
    ("chinese/wRAR_flufl.bounce__sina_01.txt", "邮件传输失败！", "", "邮件无法发送到您指定的地址中。"),
    # A header name with a tab and spaces ended the stdlib's header section, so the GBK base64 body was
    # decoded as garbage (`]'+��~�ܶ*'��`). Now such names are repaired before parsing.
    ("chinese/mnako_letters__test_chinese_plaintext_gbk_over_base64.txt", "📧 Test 施氏食狮史", "艾莉絲 发件人",
     "石室诗士施氏，嗜狮，誓食十狮。"),
    ("chinese/mnako_letters__test_chinese_plaintext_gb18030_over_quoted-printable.txt", "📧 Test 施氏食狮史",
     "艾莉絲 发件人", "石室诗士施氏，嗜狮，誓食十狮。"),
    ("chinese/mnako_letters__test_chinese_multipart_signed_gbk_over_base64.txt", "📧 Signed Test 施氏食狮史",
     "艾莉絲 发件人", "石室诗士施氏，嗜狮，誓食十狮。"),
    # These were right before and must stay right: mislabelled charsets and the GB family.
    ("chinese/SpamScope_mail-parser__mail_test_12.eml", "代开各地增值税发票", "张先生", "你好！我公司可代开各类增值税发票"),
    ("chinese/discourse_discourse__chinese_reply.eml", "", "Foo Bar", "您好！ 你今天好吗？"),
    ("chinese/discourse_discourse__big5.eml", "Re: [Discourse] new reply to your post in 'Crystal Blue'",
     "Walter White", "媽！我上電視了！"),
    ("chinese/bestpractical_rt__new-ticket-from-gb18030.eml", "测试", "", "测试"),
    # `Jason Lee (=?GB2312?Q?…?=) <…>`: the parenthesised part is an RFC 5322 §3.2.2 comment, not part of
    # the display name (issue 18; it was shown as `Jason Lee (李展锋)`).
    ("chinese/apache_spamassassin__gb2312.2.eml", "RE: 装硬碟问题", "Jason Lee", "假设你的硬碟是IDE介面(不是SCSI)"),
]


@pytest.mark.parametrize(("relative", "subject", "from_name", "text_start"), CHINESE, ids=[c[0] for c in CHINESE])
def test_chinese_corpus_reads_intact(relative: str, subject: str, from_name: str, text_start: str) -> None:
    m = ok(relative)
    assert m.subject == subject
    assert m.from_name == from_name
    assert text_start in m.new_text[:300]
    assert "\ufffd" not in m.subject + m.from_name + m.new_text


def test_chinese_corpus_has_no_replacement_characters() -> None:
    # Two files are mojibake at the source and stay so: `gb2312_18030.eml` carries literal `?` bytes in its
    # encoded subject, and `content_transfer_encoding_empty.eml` is Big5 that some relay re-encoded as
    # UTF-8 of Latin-1 (double-encoded). Neither contains a U+FFFD of ours.
    if CORPUS is None:
        pytest.skip("../shared/corpus is not present")
    for path in sorted((CORPUS / "chinese").iterdir()):
        m = parse(path.read_bytes())
        assert isinstance(m, InboundMail), path.name
        assert "\ufffd" not in m.subject + m.from_name, path.name


def test_gb2312_label_with_gb18030_subject() -> None:
    # The subject is labelled gb2312 and needs GB18030; its `?` are in the source bytes.
    m = ok("chinese/Kopano-dev_kopano-core__gb2312_18030.eml")
    assert m.subject == "讀取: ??排??生?a"
    assert m.from_name == "梁祐晟"


def test_mislabelled_gb2312_japanese_bounce() -> None:
    # Exchange labels Japanese text gb2312 (GB2312 has the kana): decoded as written, not as noise.
    m = ok("chinese/php-mime-mail-parser_php-mime-mail-parser__failure.eml")
    assert m.new_text.startswith("次の受信者またはグループへの配信に失敗しました")


def test_google_groups_bounce_names_no_failed_recipient() -> None:
    # Not an RFC 3464 report: only X-Failed-Recipients names an address, and anyone can write that header
    # (issue 13: a customer's plain mail with it stopped their reminders). A bounce all the same: never answered.
    m = ok("chinese/sisimai_set-of-emails__lhost-googlegroups-13.eml")
    assert "bounce" in m.flags and not m.is_dsn and m.bounced_recipients == ()
    assert m.new_text.startswith("kijitora@example.jp您好，")


# --- findings outside the Chinese folder, found on the way ------------------------------------------------

OTHERS = [
    # Raw 8-bit Latin-1 display name (was `Wilhelmsen H�vard`); the reply sits under the quote
    # (bottom-posted), and was cut away entirely.
    ("outlook-replies/bestpractical_rt__new-ticket-from-iso-8859-1-full.eml", "Wilhelmsen Håvard",
     "Hello again,\n\nThanks for your fast replay!"),
    ("outlook-replies/mailgun_talon__thunderbird.eml", "bob", "Hello"),
    ("outlook-replies/mailgun_flanker__from-encoding.eml", "Ingo Lütkebohle",
     "Isn't that the case for almost every other server you care to mention?"),
    # German `Am … schrieb …:` over a quote, the answer under it.
    ("threading/zammad_zammad__mail005.box", "Marc Smith", "Hallo Martin,"),
    # EUC-JP labelled iso-2022-jp: the body was noise; now read in the Japanese family.
    ("threading/apache_spamassassin__iso-2022-jp.2.eml", "", "itojun> \truby repositoryには修正いれてあるとおもいます。"),
]


@pytest.mark.parametrize(("relative", "from_name", "text_start"), OTHERS, ids=[o[0] for o in OTHERS])
def test_other_findings(relative: str, from_name: str, text_start: str) -> None:
    m = ok(relative)
    assert m.from_name == from_name
    assert m.new_text.startswith(text_start)
    assert "\ufffd" not in m.new_text[:200]


@needs_corpus
def test_explain_reads_every_corpus_file_without_a_traceback(tmp_path: Path) -> None:
    """`mailbot explain FILE --json` on every file: exit 0, JSON out, a case key or null, never a traceback."""
    import json
    import subprocess
    import sys

    from mailbot.cli.main import main

    config = tmp_path / "config.toml"
    config.write_text('[bot]\nstate_dir = "state"\n', encoding="utf-8")
    for path in FILES:
        code = main(["explain", str(path), "--json", "--config", str(config)])
        assert code == 0, path
    # And once as a user runs it, for one file per category.
    for path in {p.parent: p for p in FILES}.values():
        result = subprocess.run([sys.executable, "-m", "mailbot.cli", "explain", str(path), "--json", "--config",
                                 str(config)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Traceback" not in result.stderr, path
        data = json.loads(result.stdout)
        assert "case_key" in data and ("quarantine" in data or data["message_id"])
