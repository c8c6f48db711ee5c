"""Labelled secrets in running text (`密码：x`, `password is x`, `pwd=x`): where a label is, and what of
the text after it is the value. Part of redact.py."""

from __future__ import annotations

import re
from typing import Any

MASK = "******"

# Every pattern here meets untrusted text and is linear in it, by one of two means. Patterns that may look
# far (`mysql … -p`, a JWT inside a long base64 run) run on RE2 (google-re2), a DFA: one pass over the text
# whatever its shape, at the price of no lookaround and no backreferences. Python's `re` retries every start
# position, and on such patterns was quadratic: `mysql ` × 16,000 took 20 s, a 250 KB run of `-eyJ…` 9 s.
# Patterns that match often (labels) stay on Python's `re`, whose matches cost ~0.3 µs against RE2's ~5 µs
# through its Python wrapper, and are linear because every quantifier in them is bounded: an attempt at
# one position reads at most ~150 characters. bench/redaction.py measures both.

_SP = "[ \t\u3000]"  # blanks inside a line, the ideographic space among them
_S2 = "[ \\t\\x{3000}]"  # the same for RE2, which spells a code point \\x{…}
_QUAL = "(?:" + _SP + "{0,4}[(\\[（【][^)\\]）】\\n]{0,40}[)\\]）】])"  # `密码（区分大小写）：`, `password (new):`

# Labels whose value is a secret whatever it looks like, once a separator follows. Chinese labels may
# hold a blank (`密 码：`, letter-spaced in forms). English short words must start a word or a camelCase
# part (`AccessToken`, `DB_PASS`; not `Compass`, `mytoken`, nor the `otp` of `rootpassword`).
_CN_STRONG = ("pin" + _SP + "?码|密" + _SP + "?码|口" + _SP + "?令|密" + _SP + "?钥|秘钥|验证码|校验码|动态码|动态口令|"
              "动态密码|授权码|安全码|短信码|激活码")
_EN_LONG = ("password|passwd|passphrase|passcode|passwort|kennwort|mot de passe|credentials?|"
            "secret[_ -]?(?:access[_ -]?)?key|private[_ -]?key|api[_ -]?key|access[_ -]?key|app[_ -]?key|"
            "client[_ -]?secret|app[_ -]?secret|auth[_ -]?(?:code|token)|access[_ -]?token|refresh[_ -]?token|"
            "one[- ]time (?:code|password|passcode|pin)|verification code|security code|confirmation code|"
            "login code|sms code|(?:2fa|mfa|totp) code|wi-?fi key|wlan key|wpa2? key|network key|"
            "wireless key|network security key")
_EN_SHORT = "pass|pwd|pw|secret|token|pin|otp|psk|totp"
_WORD_START = "(?-i:(?<![A-Za-z])|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z]))"
# Said of a password without a label: `重置为 X` (reset to X) takes a value only when it looks like a secret.
_CN_WEAK = "(?:已|被)?(?:重置|重设|初始化)为"

_FOR = "(?:" + _SP + "{1,4}(?:for|of|to|on)" + _SP + "{1,4}[^:：=\\n]{1,40}?)"  # `Password for the portal: X`
# `密码已重置为：X`, `密码临时改为 X`, `密码我重置成了 X`: a few words may stand before the verb
_ASSIGN = (_SP + "{0,4}(?:[\u4e00-\u9fff]{0,4}?(?:重置|修改|更改|变更|设置|重设|改|设))?(?:为|是|成)了?" + _SP
           + "{0,4}")
_LABEL = re.compile(
    "(?P<label>" + _CN_STRONG + "|" + _EN_LONG + "|" + _WORD_START + "(?:" + _EN_SHORT + ")|" + _CN_WEAK + ")"
    "(?P<quote>[\"']?)"  # JSON and YAML keys: `"password": "x"`
    "(?:" + _QUAL + ")?"
    "(?:(?P<sep>" + _FOR + "?(?:" + _ASSIGN + ")?" + _SP + "{0,8}(?:=>|:=|->|→|[:：=]))"
    "|(?P<is>" + _FOR + "?" + _SP + "{1,4}(?:is|was|has been (?:reset|changed|set) to|is now|reset to|"
    "changed to|set to|to)(?:" + _SP + "{0,4}:)?)"
    "|" + _ASSIGN + ")?",
    re.IGNORECASE,
)
_SHORT = frozenset(_EN_SHORT.split("|"))
_CODES = frozenset(("pin", "otp", "totp"))

# A value that can stand without a separator: printable ASCII, 4 characters or more, holding a digit or a
# symbol (`密码是必须的`, `the password is required` are prose).
_SECRET_LIKE = re.compile(r"(?=[\x21-\x7e]{0,200}[0-9!#$%&*+\-/?@^_~=])[\x21-\x7e]{4,200}")
_TOKEN_CUT = re.compile(r"[^\s，。；、！？,;)）`]{1,200}")
# The end of a labelled value on its line: a full-width pause, a cell, the next `label：`, an HTML tag, a
# bracket or a case key after a blank (subjects are redacted too: `密码：x [案例号: CAS-04027-B7D2Z5]` must
# still find its case).
_VALUE_END = re.compile(r"[，；。、（]|\t|[ \t][|(\[【]|</|" + _SP + r"[^\s:：=,，]{1,12}[:：]|"
                        r"[ \t][A-Z]{2,8}-\d{3,8}-[A-Z0-9]{4,8}\b")
_EQ_VALUE = re.compile(r"[^\s,;&\"'<>}\]]{1,512}")  # `pwd=x&user=y`, `{"pin": 1234, …}`
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』"}

# Values that say where the secret is, or that there is none. Not secrets: masking them hides the answer
# an engineer needs (`密码：见短信` — the password went by SMS).
_REFUSALS = frozenset((
    "见短信", "见附件", "见邮件", "见下", "见下文", "另行发送", "已发送", "单独发送", "稍后发送", "电话告知", "短信发送",
    "短信告知", "已短信发送", "无", "空", "未设置", "暂无", "略", "不变", "同上", "已隐藏", "已脱敏", "保密", "不提供",
    "n/a", "na", "none", "null", "nil", "no", "-", "--", "---", "—", "expired", "invalid", "revoked", "required",
    "not set", "unset", "unchanged", "hidden", "redacted", "removed", "sent separately", "see sms",
    "see attachment", "see below", "see above", "tbd", "todo", "***", "xxx", "xxxx", "empty", "(empty)",
    "same as before", "same as above", "not required", "not needed", "optional", "provided separately",
    "will be sent separately", "sent by sms", "sent via sms", "by phone", "see previous mail", "unchanged",
    "true", "false", "yes", "ok", "reset", "changed", "updated", "已重置", "已修改", "已更新", "已过期", "过期",
    "错误", "不正确", "正确", "失效", "已失效", "收不到", "没收到", "未收到", "不知道", "忘记了",
))
_REFUSAL_START = re.compile(
    r"(?:见|请|另|已通过|通过|稍后|将|会|由|需|需要|必须|至少|不少于|长度|不能|不可|不要|"
    r"see |sent |will |please |via |by |ask |must |should |at least |minimum |expires |expired |is |not |"
    r"has |have |can |cannot |does |do |required|was |the one |the same |same |your (?:usual|own|current|old|"
    r"domain|windows|ad) |收不到|没收到|未收到)", re.I)
_PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]\w{0,60}\}?|%\w{1,60}%|<[^<>]{1,40}>|\{\{[^{}]{1,60}\}\}|\*+|•+|x{3,}",
                          re.I)


def _is_refusal(value: str) -> bool:
    v = value.strip().strip(".。!！()（）[]【】").strip().lower()
    if not v or v in _REFUSALS or v.startswith(MASK) or _PLACEHOLDER.fullmatch(v):
        return True
    # `见另一封邮件`, `see the SMS`, `must be 8 characters`: prose, which holds a blank or a CJK character
    return bool(_REFUSAL_START.match(v)) and (" " in v or any(ord(c) > 0x2E7F for c in v))


class _Lines:
    """Where the line holding a position ends; positions come in ascending order, so each line is scanned once."""

    def __init__(self, text: str) -> None:
        self.text, self.end = text, -1

    def end_of(self, pos: int) -> int:
        if pos > self.end:
            end = self.text.find("\n", pos)
            self.end = len(self.text) if end == -1 else end
        return self.end


# Where a label can start: plain lower-case literals, which Python's `re` skips to quickly (a few ms per MB
# of text without them); the label pattern is then tried only there, anchored. Each search resumes one
# character after the last hit, so overlapping starts are all seen (`rootpassword` holds `otp` first).
_KEYWORDS = ("密码", "密 码", "密\u3000码", "密钥", "密 钥", "秘钥", "口令", "口 令", "验证码", "校验码", "动态", "授权码",
             "安全码", "短信码", "激活码", "重置为", "重设为", "初始化为", "pass", "pwd", "pw", "secret", "token", "pin",
             "otp", "psk", "totp", "kennwort", "mot de", "credential", "private", "api", "access", "app", "client",
             "auth", "refresh", "one", "verification", "security", "confirmation", "login", "sms", "2fa", "mfa", "wi",
             "wlan", "wpa", "network", "wireless")
_KEYWORD = re.compile("|".join(re.escape(k) for k in sorted(_KEYWORDS, key=len, reverse=True)))
_KEYWORD_ANY_CASE = re.compile(_KEYWORD.pattern, re.IGNORECASE)
# Past this many labels in one text, analysing each one could take seconds (a hostile `密码` × 500,000):
# fail closed instead — each further line holding a label is masked from the label to its end.
_BUDGET = 5_000


def _label_starts(text: str) -> list[int]:
    lowered = text.lower()
    search = _KEYWORD.search
    if len(lowered) != len(text):  # `İ` lowers to two characters: offsets would shift
        lowered, search = text, _KEYWORD_ANY_CASE.search
    hits: list[int] = []
    pos = 0
    while m := search(lowered, pos):
        hits.append(m.start())
        pos = m.start() + 1
    return hits


def _labelled(text: str) -> str:
    hits = _label_starts(text)
    if not hits:
        return text
    matches: dict[int, Any] = {}

    def label_at(i: int) -> Any:
        if i not in matches:
            matches[i] = _LABEL.match(text, hits[i])
        return matches[i]

    out: list[str] = []
    done = 0  # text[:done] is in out
    seen = 0  # labels analysed so far
    lines = _Lines(text)
    for i, h in enumerate(hits):
        if h < done:
            continue  # inside a value already masked
        m = label_at(i)
        if m is None:
            continue
        seen += 1
        v = m.end()
        line_end = lines.end_of(v)
        if seen > _BUDGET:
            out.append(text[done:v])
            out.append(MASK)
            done = line_end
            continue
        # The value ends before the next label on this line that has its own separator.
        limit, j = line_end, i + 1
        while j < len(hits) and hits[j] < line_end and j < i + 8:
            if hits[j] >= v and (n := label_at(j)) is not None and (n.group("sep") or n.group("is")):
                limit = hits[j]
                break
            j += 1
        span = _value_span(text, v, limit, line_end, m)
        if span is None:
            continue
        s, e = span
        out.append(text[done:s])
        out.append(MASK)
        done = e
    out.append(text[done:])
    return "".join(out)


_REGION = 8192  # what one value may look at: a bound, so that a label repeated along a 1 MB line stays linear


def _value_span(text: str, v: int, limit: int, line_end: int, m: Any) -> tuple[int, int] | None:
    """Where the secret after a label lies, or None when what follows is not one."""
    label = m.group("label")
    lower = label.lower()
    sep = m.group("sep") or ""
    said = m.group("is") or ""
    explicit = bool(sep) or said.rstrip().endswith(":")
    s = v
    while s < limit and text[s] in " \t\u3000":
        s += 1
    if explicit and s < limit and text[s] == "|":  # `| 密码: | value |`: the value is the next cell
        s += 1
        while s < limit and text[s] in " \t\u3000":
            s += 1
    if explicit and s >= limit and limit == line_end and not sep.strip().startswith("="):
        # `新密码：` with the password alone on the next line
        nxt_end = text.find("\n", line_end + 1, line_end + 202)
        line = text[line_end + 1: nxt_end if nxt_end != -1 else line_end + 201]
        word = line.strip(" \t\u3000\r")
        if word and " " not in word and _SECRET_LIKE.fullmatch(word) and not _is_refusal(word):
            start = line_end + 1 + line.index(word)
            return start, start + len(word)
        return None
    if s >= limit:
        return None
    weak = lower[0] in "重已被初"
    if (weak or not explicit) and not ("\x21" <= text[s] <= "\x7e"):
        return None  # no separator and no ASCII word after it: prose (`密码是必须的`)
    region = text[s:min(limit, s + (_REGION if explicit and not weak else 256))]
    if lower == "pwd" and region[:1] in "/~$":
        return None  # PWD=/opt/app: the working directory
    if weak or not explicit:
        # No separator, or prose (`is`): only a value that looks like a secret (`密码是 Shi-Leak-42`, `PIN 4821`).
        if lower in _SHORT and lower not in _CODES:
            return None  # `token abc`, `secret sauce`: too common as words
        if v == m.end() and not said and lower.isascii() and v < len(text) and text[v] not in " \t\u3000":
            return None  # `password2`, `pinned`, `<password>`: the label runs into something else
        tok = _TOKEN_CUT.match(region)
        if not tok:
            return None
        core = tok.group(0).rstrip(".,;:)]}>'\"")  # not `!` or `?`: secrets end in those too
        # ... but `Did the code arrive?` is a question: the shape is judged without them
        if not _SECRET_LIKE.fullmatch(core.rstrip("!?")) or _is_refusal(core):
            return None
        return s, s + len(core)
    opener = region[0]
    if opener in _QUOTES:
        close = region.find(_QUOTES[opener], 1)
        if close > 0:
            return None if _is_refusal(region[1:close]) else (s, s + close + 1)
    # `password = two words` (ini, properties: blanks around `=`) runs to the end of the line like a colon
    ini = "=" in sep and sep[:1] in " \t" and text[v:v + 1] in (" ", "\t")
    if m.group("quote") or ("=" in sep and not ini):
        # key=value and JSON: one token; a connection string's `Password=a b;` runs to its `;`.
        semi = region.find(";")
        if "=" in sep and semi > 0 and " " in region[:semi]:
            value = region[:semi]
        else:
            tok = _EQ_VALUE.match(region)
            if not tok:
                return None
            value = tok.group(0)
        return None if _is_refusal(value) else (s, s + len(value))
    # A clear label and a colon: the value runs to the end of its line or cell, blanks and commas included.
    cut = _VALUE_END.search(region)
    if cut is None and limit > s + _REGION:
        return s, limit
    value = (region[: cut.start()] if cut else region).rstrip(" \t\u3000\r")
    if not value or _is_refusal(value):
        return None
    # `用户名/密码：administrator / Qwe!2345`: the account name stays, the password goes.
    before = text[max(0, m.start() - 3):m.start()].lower()
    if "/" in before or before.endswith(("账号", "帐号", "用户名", "用户", "user", "login")):
        pair = re.match(r"([^\s/]{1,64})\s*/\s*", value)
        if pair and pair.end() < len(value):
            return s + pair.end(), s + len(value)
    return s, s + len(value)
