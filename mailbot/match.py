"""Finds the case a mail belongs to: subject case number, tracking token, then the thread's Message-IDs."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import re2

from mailbot.models import CaseMatch, Flag, InboundMail, MatchRule

# Reply/forward prefixes in the languages our customers write in, any number of them, in any order:
# `回复: 答复: RE: AW: Antw: SV: VS: FW: Fwd: WG: TR: RIF: ENC: Odp: 转发: 轉寄:` (after NFKC, so full-width
# colons are ASCII), optionally with a counter such as `RE[2]:` or `Re(3):`.
_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|antw(?:oord)?|sv|vs|fw|fwd|wg|tr|rif|r|enc|odp|res|ynt|atb|回复|答复|回覆|答覆|转发|轉寄|"
    r"转寄|轉發|自动回复|自動回覆|Automatic reply|Auto(?:matic)?[ -]?reply)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+",
    re.IGNORECASE,
)
# On RE2 (linear time): with Python's `re`, every `[` of a run that never closes retried the rest of the
# subject (a key and 32,000 `[` took 13 s; the adjacent `\s*` would make blanks worse still).
_CASE_TAG = re2.compile(r"(?i)[\[【]\s*(?:案例号|案例號|Case(?: No\.?| number| #)?|Ticket)?\s*:?\s*([^\]】]*)[\]】]")


def normalise(subject: str) -> str:
    """NFKC folds full-width forms (`：` → `:`, `ＣＡＳ` → `CAS`); 【】 survive NFKC and are kept."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", subject)).strip()


def strip_prefixes(subject: str) -> str:
    """The subject without any reply/forward prefixes (`回复: RE: AW: x` → `x`)."""
    s = normalise(subject)
    while True:
        stripped = _PREFIX.sub("", s, count=1).strip()
        if stripped == s:
            return s
        s = stripped


def _whole(pattern: re.Pattern[str], s: str) -> list[str]:
    """Matches not followed by another ASCII letter or digit: `CAS-04027-B7D2Z55` is not case
    `CAS-04027-B7D2Z5`. The start is not anchored: keys and tokens are often glued to the text before
    them (`初次响应CMIT:0001247`)."""
    found = []
    for m in pattern.finditer(s):
        after = s[m.end() : m.end() + 1]
        if m.group(0) and not (after.isascii() and after.isalnum()):
            found.append(m.group(0).upper())
    return found


def find_key(subject: str, patterns: tuple[re.Pattern[str], ...]) -> str | None:
    s = normalise(subject)
    for pattern in patterns:
        if found := _whole(pattern, s):
            return found[0]
    return None


def find_tokens(text: str, token: re.Pattern[str] | None) -> tuple[str, ...]:
    if token is None:
        return ()
    return tuple(dict.fromkeys(_whole(token, normalise(text))))


def title_of(subject: str, key: str | None, token: re.Pattern[str] | None) -> str:
    """The case's title: the text between the `%` markers where present, else the cleaned subject."""
    s = strip_prefixes(subject)
    parts = s.split("%")
    if len(parts) >= 3 and parts[1].strip():
        return parts[1].strip()
    s = _CASE_TAG.sub(" ", s)
    if key:
        s = re.sub(re.escape(key), " ", s, flags=re.I)
    if token is not None:
        s = token.sub(" ", s)
    return re.sub(r"\s+", " ", s).strip(" -:%") or (key or "")


@dataclass(frozen=True)
class Index:
    """What the store knows, as lookups: Message-ID → case key, tracking token → case key."""

    case_for_message: Callable[[str], str | None]
    case_for_token: Callable[[str], str | None]


def match(
    mail: InboundMail,
    patterns: tuple[re.Pattern[str], ...],
    token: re.Pattern[str] | None,
    index: Index,
) -> CaseMatch:
    """Rules in order; the first that finds a case wins, and the result says which rule it was."""
    by_message, by_token = index.case_for_message, index.case_for_token
    key = find_key(mail.subject, patterns)
    if key:
        return CaseMatch(key, MatchRule.SUBJECT, key)
    rules: list[tuple[MatchRule, Callable[[str], str | None], Iterable[str]]] = [
        (MatchRule.TRACKING_TOKEN, by_token, find_tokens(mail.subject, token)),
        (MatchRule.IN_REPLY_TO, by_message, mail.in_reply_to),
        # newest first (RFC 5322 §3.6.4 lists oldest first)
        (MatchRule.REFERENCES, by_message, reversed(mail.references)),
    ]
    if Flag.BOUNCE in mail.flags:
        bounced_key = find_key(mail.bounced_subject, patterns)
        rules += [
            (MatchRule.BOUNCED_HEADERS, lambda k: k, [bounced_key] if bounced_key else []),
            (MatchRule.BOUNCED_HEADERS, by_message, mail.bounced_message_ids),
            (MatchRule.BOUNCED_HEADERS, by_token, find_tokens(mail.bounced_subject, token)),
        ]
    for rule, lookup, candidates in rules:
        for candidate in candidates:
            found = lookup(candidate)
            if found:
                return CaseMatch(found, rule, candidate)
    return CaseMatch(None, None)
