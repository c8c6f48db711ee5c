"""match(): which case a mail belongs to, and by which rule — subject case number, tracking token,
In-Reply-To, References (newest first), and for bounces the returned message's headers."""

from __future__ import annotations

import re

import pytest

from mailbot.match import Index, find_key, find_tokens, match, normalise, strip_prefixes, title_of
from mailbot.models import CaseMatch, Flag, InboundMail, MatchRule

PATTERNS = (re.compile(r"CAS-\d{5}-[A-Z0-9]{6}", re.I),)
TOKEN = re.compile(r"CMIT:\d{7}", re.I)
KEY = "CAS-04027-B7D2Z5"
TAIL = "[案例号: CAS-04027-B7D2Z5 ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"


def inbound(subject: str = "", *, in_reply_to: tuple[str, ...] = (), references: tuple[str, ...] = (),
            flags: frozenset[Flag] = frozenset(), bounced_subject: str = "",
            bounced_ids: tuple[str, ...] = ()) -> InboundMail:
    return InboundMail(
        message_id="<new@customer.example>", subject=subject, from_addr="yang@customer.example", from_name="",
        to=(), cc=(), date=None, in_reply_to=in_reply_to, references=references, new_text="", flags=flags,
        bounced_subject=bounced_subject, bounced_message_ids=bounced_ids,
    )


def index(messages: dict[str, str] | None = None, tokens: dict[str, str] | None = None) -> Index:
    messages, tokens = messages or {}, tokens or {}
    return Index(case_for_message=messages.get, case_for_token=tokens.get)


EMPTY = index()


# --- reply and forward prefixes -------------------------------------------------------------------------

PREFIXES = [
    ("回复: " + TAIL, TAIL),
    ("答复: " + TAIL, TAIL),
    ("回复：答复：" + TAIL, TAIL),  # full-width colons
    ("RE: " + TAIL, TAIL),
    ("Re: re: RE: " + TAIL, TAIL),
    ("AW: " + TAIL, TAIL),  # German
    ("Antw: " + TAIL, TAIL),  # Dutch
    ("SV: VS: " + TAIL, TAIL),  # Scandinavian, Finnish
    ("FW: Fwd: WG: TR: " + TAIL, TAIL),  # forwards: English, German, French
    ("转发: " + TAIL, TAIL),
    ("轉寄: 回覆: " + TAIL, TAIL),  # Traditional Chinese
    ("RE[2]: " + TAIL, TAIL),
    ("Re(3): " + TAIL, TAIL),
    ("RE : " + TAIL, TAIL),  # French spacing
    ("回复: 答复: RE: AW: Antw: SV: VS: FW: Fwd: WG: TR: 转发: RE[2]: " + TAIL, TAIL),
    ("自动回复: " + TAIL, TAIL),
    ("Automatic reply: " + TAIL, TAIL),
    ("ＲＥ：" + TAIL, TAIL),  # full-width letters (NFKC)
    ("Re: Re: Re:", ""),
    ("", ""),
    ("Remote access broken", "Remote access broken"),  # `Re` must be a prefix, not a word start
    ("Fwdx: hello", "Fwdx: hello"),
]


@pytest.mark.parametrize(("subject", "expected"), PREFIXES)
def test_strip_prefixes(subject: str, expected: str) -> None:
    assert strip_prefixes(subject) == expected


# --- the case number in the subject ---------------------------------------------------------------------

KEYS = [
    (TAIL, KEY),
    ("回复: 答复: RE: AW: Antw: SV: VS: FW: Fwd: WG: TR: 转发: RE[2]: " + TAIL, KEY),
    ("【案例号：CAS-04027-B7D2Z5】某单位终端频繁蓝屏", KEY),
    ("答复：【案例号：ＣＡＳ－０４０２７－Ｂ７Ｄ２Ｚ５】某单位终端频繁蓝屏", KEY),  # full-width letters and digits
    ("[案例号:CAS-04027-B7D2Z5]", KEY),
    ("案例号CAS-04027-B7D2Z5某单位", KEY),  # glued to Chinese on both sides
    ("re: cas-04027-b7d2z5 lower case", KEY),
    ("[案例号: CAS-04027-B7D2Z5 ] [案例号: CAS-99999-ZZZZZZ ]", KEY),  # the first wins
    ("Case CAS-04027-B7D2Z55 is another id", None),  # a longer id is not this case
    ("CAS-0402-B7D2Z5", None),
    ("某单位终端频繁蓝屏 初次响应 CMIT:0001247", None),
    ("", None),
]


@pytest.mark.parametrize(("subject", "expected"), KEYS)
def test_find_key(subject: str, expected: str | None) -> None:
    assert find_key(subject, PATTERNS) == expected


def test_patterns_are_tried_in_order() -> None:
    patterns = (re.compile(r"INC\d{6}"), *PATTERNS)
    assert find_key("RE: CAS-04027-B7D2Z5 INC123456", patterns) == "INC123456"


TOKENS = [
    ("初次响应 CMIT:0001247", ("CMIT:0001247",)),
    ("初次响应CMIT:0001247", ("CMIT:0001247",)),  # glued to the text before it
    ("初次响应ＣＭＩＴ：０００１２４７", ("CMIT:0001247",)),  # full-width (NFKC)
    ("cmit:0001247 and CMIT:0001248 and cmit:0001247", ("CMIT:0001247", "CMIT:0001248")),
    ("CMIT:00012479", ()),  # a longer number is another token
    ("CMIT:000124", ()),
    ("no token here", ()),
]


@pytest.mark.parametrize(("text", "expected"), TOKENS)
def test_find_tokens(text: str, expected: tuple[str, ...]) -> None:
    assert find_tokens(text, TOKEN) == expected


def test_no_tracking_token_configured() -> None:
    assert find_tokens("CMIT:0001247", None) == ()


def test_normalise_folds_full_width_forms_and_spaces() -> None:
    assert normalise("  【案例号：ＣＡＳ】\u3000ｘ  ") == "【案例号:CAS】 x"


# --- the rules, in order -------------------------------------------------------------------------------

RULES = [
    ("subject case number first",
     inbound("RE: " + TAIL, in_reply_to=("<m1>",)), index({"<m1>": "CAS-11111-AAAAAA"}),
     CaseMatch(KEY, MatchRule.SUBJECT, KEY)),
    ("tracking token when the key was dropped",
     inbound("RE: 某单位终端频繁蓝屏 初次响应CMIT:0001247", in_reply_to=("<m1>",)),
     index({"<m1>": "CAS-11111-AAAAAA"}, {"CMIT:0001247": KEY}),
     CaseMatch(KEY, MatchRule.TRACKING_TOKEN, "CMIT:0001247")),
    ("an unknown token falls through to In-Reply-To",
     inbound("RE: x CMIT:0009999", in_reply_to=("<m1>",)), index({"<m1>": KEY}),
     CaseMatch(KEY, MatchRule.IN_REPLY_TO, "<m1>")),
    ("In-Reply-To when the subject has neither",
     inbound("RE: 某单位终端频繁蓝屏", in_reply_to=("<m1>",), references=("<m0>",)),
     index({"<m1>": KEY, "<m0>": "CAS-11111-AAAAAA"}),
     CaseMatch(KEY, MatchRule.IN_REPLY_TO, "<m1>")),
    ("References, newest (last) first",
     inbound("RE: x", in_reply_to=("<unknown>",), references=("<r1>", "<r2>", "<r3>")),
     index({"<r1>": "CAS-11111-AAAAAA", "<r2>": KEY}),
     CaseMatch(KEY, MatchRule.REFERENCES, "<r2>")),
    ("nothing known",
     inbound("hello", in_reply_to=("<x>",), references=("<y>",)), EMPTY, CaseMatch(None, None)),
    ("a bounce through the returned subject",
     inbound("Undelivered Mail Returned to Sender", flags=frozenset({Flag.BOUNCE}), bounced_subject=TAIL),
     EMPTY, CaseMatch(KEY, MatchRule.BOUNCED_HEADERS, KEY)),
    ("a bounce through the returned Message-ID",
     inbound("Undeliverable: x", flags=frozenset({Flag.BOUNCE}), bounced_subject="no key",
             bounced_ids=("<initial-04027@support.example>",)),
     index({"<initial-04027@support.example>": KEY}),
     CaseMatch(KEY, MatchRule.BOUNCED_HEADERS, "<initial-04027@support.example>")),
    ("a bounce through the returned token",
     inbound("Undeliverable", flags=frozenset({Flag.BOUNCE}), bounced_subject="x 初次响应CMIT:0001247"),
     index(tokens={"CMIT:0001247": KEY}), CaseMatch(KEY, MatchRule.BOUNCED_HEADERS, "CMIT:0001247")),
    ("returned headers count only for bounces",
     inbound("FW: x", bounced_subject=TAIL), EMPTY, CaseMatch(None, None)),
    ("a bounce that names a case in its own subject",
     inbound("Undeliverable: " + TAIL, flags=frozenset({Flag.BOUNCE})), EMPTY,
     CaseMatch(KEY, MatchRule.SUBJECT, KEY)),
]


@pytest.mark.parametrize(("case", "mail", "idx", "expected"), RULES, ids=[r[0] for r in RULES])
def test_match_rules(case: str, mail: InboundMail, idx: Index, expected: CaseMatch) -> None:
    assert match(mail, PATTERNS, TOKEN, idx) == expected


def test_match_without_token_pattern() -> None:
    mail = inbound("RE: x CMIT:0001247", in_reply_to=("<m1>",))
    assert match(mail, PATTERNS, None, index({"<m1>": KEY})).rule == MatchRule.IN_REPLY_TO


# --- titles ----------------------------------------------------------------------------------------------

TITLES = [
    (TAIL, "某单位终端频繁蓝屏"),
    ("回复: 答复: RE: " + TAIL, "某单位终端频繁蓝屏"),
    ("回复：【案例号：CAS-04027-B7D2Z5】 % 某单位 终端 % 初次响应", "某单位 终端"),
    ("【案例号：CAS-04027-B7D2Z5】某单位终端频繁蓝屏", "某单位终端频繁蓝屏"),  # no markers: cleaned subject
    ("RE: [Case CAS-04027-B7D2Z5] Blue screens after update CMIT:0001247", "Blue screens after update"),
    ("CAS-04027-B7D2Z5 - printer offline", "printer offline"),
    ("RE: CAS-04027-B7D2Z5", KEY),  # nothing else: the key
    ("% %  CAS-04027-B7D2Z5 office", "office"),  # empty markers are no title
]


@pytest.mark.parametrize(("subject", "expected"), TITLES)
def test_title(subject: str, expected: str) -> None:
    assert title_of(subject, find_key(subject, PATTERNS), TOKEN) == expected
