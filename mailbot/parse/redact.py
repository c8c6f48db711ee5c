"""Masks credentials that people paste into mail, before anything is stored, logged, rendered or sent."""

from __future__ import annotations

import base64
import binascii
import html as htmllib
import re
from collections.abc import Callable, Iterator
from typing import Any

import re2  # google-re2: a DFA, so every search is linear in the text whatever its shape

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
    "(?:(?P<sep>" + _FOR + "?(?:" + _ASSIGN + ")?" + _SP + "{0,8}(?:=>|:=|[:：=]))"
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


# --- technical formats: (pattern, check of the value) — the named group `v` is masked -------------------
def _has_secret_shape(v: str) -> bool:
    return bool(_SECRET_LIKE.fullmatch(v.strip("'\""))) and not _is_refusal(v)


def _bearer_token(v: str) -> bool:
    # `Bearer authentication` is prose: a token holds a digit or mixes cases over 20 characters or more
    return any(c.isdigit() for c in v) or (len(v) >= 20 and v != v.lower() and v != v.upper())


def _basic_credentials(v: str) -> bool:
    try:
        decoded = base64.b64decode(v + "=" * (-len(v) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded  # RFC 7617: base64 of user-id ":" password


def _not_masked(v: str) -> bool:
    return MASK not in v


_QV = "(?P<v>'[^'\\n]{1,256}'|\"[^\"\\n]{1,256}\"|[^\\s'\"`]{1,256})"
# (a word the text must hold, lower-cased; the pattern; whether the value `v` it found is a secret)
_TECHNICAL: list[tuple[bytes, Any, Callable[[str], bool]]] = [
    # scheme://user:secret@host — the secret may itself hold an `@` (`p@ss`): it ends at the last `@`.
    (b"://", re2.compile("(?i)\\b[a-z][a-z0-9+.-]{0,20}://[^\\s:/@]{0,64}:(?P<v>[^\\s/]{1,256})@[^\\s@/]"), _not_masked),
    # RFC 6750: after `Authorization:` any token goes; in prose (`Bearer authentication`) it must look like one
    (b"bearer", re2.compile("(?i)authorization" + _S2 + "*[:：]" + _S2 + "*bearer" + _S2 + "+(?P<v>[A-Za-z0-9._~+/=-]{8,})"),
     _not_masked),
    (b"bearer", re2.compile("(?i)\\bbearer" + _S2 + "+(?P<v>[A-Za-z0-9._~+/=-]{12,})"), _bearer_token),
    (b"basic", re2.compile("(?i)\\bbasic" + _S2 + "+(?P<v>[A-Za-z0-9+/]{6,}={0,2})"), _basic_credentials),
    (b"mysql", re2.compile("(?i)\\bmysql(?:dump|admin|sh|import|check)?\\b[^\\n]{0,300}?[ \\t]-p(?P<v>'[^'\\n]{1,256}'|"
                 "\"[^\"\\n]{1,256}\"|[^\\s'\"`]{1,256})"), _not_masked),
    (b"sshpass", re2.compile("\\bsshpass" + _S2 + "+(?:-[a-oq-zA-Z]" + _S2 + "+)?-p" + _S2 + "*" + _QV), _not_masked),
    (b"docker", re2.compile("\\bdocker" + _S2 + "+login\\b[^\\n]{0,300}?[ \\t](?:-p|--password)" + _S2 + "+" + _QV), _not_masked),
    (b"ldap", re2.compile("\\bldap(?:search|modify|add|delete|passwd|whoami)\\b[^\\n]{0,300}?[ \\t]-w" + _S2 + "+" + _QV),
     _not_masked),
    (b"smb", re2.compile("\\b(?:smbclient|rpcclient|smbmap|smbcacls)\\b[^\\n]{0,300}?[ \\t](?:-U|--user)[ =]?['\"]?"
                         "[^\\s%'\"]{1,64}%(?P<v>[^\\s'\"`]{1,256})"), _not_masked),
    (b"redis-cli", re2.compile("\\bredis-cli\\b[^\\n]{0,300}?[ \\t](?:-a|--pass)" + _S2 + "+" + _QV), _not_masked),
    (b"curl", re2.compile("\\bcurl\\b[^\\n]{0,300}?[ \\t](?:-u|--user)" + _S2 + "*['\"]?[^\\s:'\"]{1,64}:"
                 "(?P<v>[^\\s'\"]{1,256})"), _not_masked),
    # Oracle: `sqlplus user/pw@db`, `expdp system/pw`, `rman target sys/pw@db`; `conn u/p@db` needs the `@`.
    (b"/", re2.compile("(?i)\\b(?:sqlplus|expdp|impdp|exp|imp|sqlldr|rman|dgmgrl)" + _S2 + "+(?:-[a-z]+" + _S2
                 + "+){0,3}(?:target" + _S2 + "+)?['\"]?[A-Za-z0-9_$#.]{1,64}/(?P<v>[^\\s@/'\"]{1,256})"),
     _not_masked),
    (b"conn", re2.compile("(?i)\\bconn(?:ect)?" + _S2 + "+[A-Za-z0-9_$#.]{1,64}/(?P<v>[^\\s@/'\"]{1,256})@"), _not_masked),
    # `<password>x</password>`, `<add key="DbPassword" value="x"/>`
    (b"<", re2.compile("(?i)<[\\w:.-]{0,30}(?:password|passwd|pwd|secret|token|apikey|api_key|passphrase)[\\w:.-]{0,30}>"
                 "(?P<v>[^<\\n]{1,512})</"), _not_masked),
    (b"value=", re2.compile("(?i)(?:key|name)=\"[^\"\\n]{0,40}(?:password|pwd|secret|token)[^\"\\n]{0,40}\"" + _S2
                 + "+value=\"(?P<v>[^\"\\n]{1,512})\""), _not_masked),
    # `administrator / Qwe!2345`: a well-known account name, a slash, and something shaped like a password
    (b"/", re2.compile("(?i)\\b(?:administrator|admin|root|sa|sys|system|oracle|postgres|sysadmin)" + _S2 + "*/" + _S2
                 + "*(?P<v>[\\x21-\\x2e\\x30-\\x7e]{4,64})"),
     lambda v: _has_secret_shape(v) and any(c.isdigit() or c in "!@#$%^&*" for c in v)),
]
_KNOWN_TOKENS = re2.compile(
    "\\b(?P<v>AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{40,255}|"
    "glpat-[A-Za-z0-9_-]{20,64}|xox[abpr]-[A-Za-z0-9-]{10,255}|AIza[0-9A-Za-z_-]{35}|"
    "sk-(?:proj-|ant-|live_|test_)?[A-Za-z0-9_-]{20,255}|"
    "eyJ[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]{10,})"
)
# Each alternative of _KNOWN_TOKENS starts with one of these (case-sensitive, as the pattern is): without
# any, the pattern is not run (a call through the RE2 wrapper costs more than these twelve searches).
_KNOWN_TOKEN_STARTS = (b"AKIA", b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_", b"glpat-", b"xox", b"AIza",
                       b"sk-", b"eyJ")
_NET_USE = re2.compile("(?i)\\bnet" + _S2 + "+use\\b(?P<v>[^\\n]{1,400})")


_MASK_B = MASK.encode()


_GROUP_V: dict[int, int] = {}  # id(pattern) → the index of its group `v`: the wrapper rebuilds groupindex per ask


def _mask_groups(pattern: Any, data: bytes, keep: Callable[[str], bool]) -> bytes:
    """Mask group `v` of each match of an RE2 pattern. RE2 runs on the UTF-8 bytes: its Python wrapper maps
    every match back to str offsets otherwise, which costs more than the match."""
    g = _GROUP_V.get(id(pattern))
    if g is None:
        g = _GROUP_V[id(pattern)] = pattern.groupindex["v"]  # the patterns are module constants: ids stay
    pieces: list[bytes] = []
    last = 0
    for m in pattern.finditer(data):
        s, e = m.span(g)
        if s < last or not keep(data[s:e].decode("utf-8", "replace")):
            continue
        pieces.append(data[last:s])
        pieces.append(_MASK_B)
        last = e
    if not pieces:
        return data
    pieces.append(data[last:])
    return b"".join(pieces)


def _net_use(rest: str) -> str:
    """`net use Z: \\\\srv\\share P@ss /user:corp\\bob`: each positional word that is not a drive, a share or `*`."""
    words = rest.split(" ")
    for i, w in enumerate(words):
        if not w or w.startswith(("/", "\\\\")) or w == "*" or (len(w) == 2 and w[1] == ":") \
                or w.lower() in ("yes", "no", "/delete") or w == MASK:
            continue
        words[i] = MASK
    return " ".join(words)


def _private_keys(text: str) -> str:
    """PEM and PGP private key blocks go whole; one left open runs to the end (a truncated paste)."""
    out, pos = [], 0
    while (start := text.find("-----BEGIN ", pos)) != -1:
        head = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----").match(text, start)
        if not head:
            out.append(text[pos:start + 11])
            pos = start + 11
            continue
        kind = head.group(1)
        end = text.find(f"-----END {kind}-----", head.end())
        out.append(text[pos:start] + f"[{kind.lower()} removed]")
        pos = len(text) if end == -1 else end + len(f"-----END {kind}-----")
    out.append(text[pos:])
    return "".join(out)


# --- tables: a header row names the password column, or a cell holding a label is followed by its value ---
_COLUMN_WORDS = frozenset((
    "用户名", "用户", "账号", "帐号", "账户", "帐户", "登录名", "登录账号", "主机", "主机名", "服务器", "地址", "ip", "ip地址",
    "端口", "系统", "备注", "说明", "名称", "类型", "数据库", "实例", "设备", "环境", "用途", "协议", "域名", "网络", "序号",
    "user", "username", "user name", "login", "account", "host", "hostname", "server", "address", "port",
    "system", "database", "db", "note", "notes", "remark", "remarks", "name", "type", "role", "device",
    "environment", "env", "url", "protocol", "instance", "service", "ssid", "network", "no", "#", "id",
))
_LABEL_CELL = re.compile(
    r"(?:[^\s:：]{0,8})?(?:密\s?码|口\s?令|密\s?钥|秘钥|验证码|动态口令|授权码|password|passwd|passphrase|passcode|pwd|"
    r"pass|secret|token|pin|api key|wi-?fi key|psk|kennwort)(?:\s*[(（【\[][^)）】\]]{0,20}[)）】\]])?\s*[:：]?",
    re.I,
)
_TABLE_RULE = re.compile(r"[\s|:+=-]*")


def _is_label_cell(cell: str) -> bool:
    return 0 < len(cell) <= 30 and bool(_LABEL_CELL.fullmatch(cell))


def _secret_cells(rows: list[list[str]]) -> list[tuple[int, int]]:
    """(row, column) of each cell that holds a password, for rows of one table (cell texts, stripped)."""
    found: list[tuple[int, int]] = []
    column, width = -1, 0
    for r, cells in enumerate(rows):
        if len(cells) < 2 or all(_TABLE_RULE.fullmatch(c) for c in cells):
            continue  # a rule line `|---|---|` keeps the header going
        labels = [c for c, cell in enumerate(cells) if _is_label_cell(cell)]
        wordish = all(not any(ch.isdigit() for ch in cell) and len(cell) <= 20 for cell in cells)
        known = any(cell.lower().rstrip(":：") in _COLUMN_WORDS for cell in cells)
        if labels and wordish and known:
            column, width = labels[0], len(cells)  # a header row
            continue
        if column >= 0 and len(cells) == width:
            if column < len(cells) and cells[column] and not _is_refusal(cells[column]):
                found.append((r, column))
            continue
        column = -1
        for c in labels:
            if c + 1 < len(cells) and cells[c + 1] and not _is_refusal(cells[c + 1]) \
                    and not _is_label_cell(cells[c + 1]):
                found.append((r, c + 1))
    return found


def _split_cells(line: str) -> tuple[str, list[tuple[int, int]]]:
    """A line's table separator and the spans of its cells' stripped text."""
    if "|" in line:
        sep = "|"
    elif "\t" in line:
        sep = "\t"
    elif "  " in line:
        sep = "  "
    else:
        return "", []
    spans: list[tuple[int, int]] = []
    if sep == "  ":
        for m in re.finditer(r"\S+(?: \S+)*", line):
            spans.append(m.span())
        return sep, spans
    pos = 0
    for part in line.split(sep):
        s, e = pos, pos + len(part)
        while s < e and line[s] in " \u3000":
            s += 1
        while e > s and line[e - 1] in " \u3000":
            e -= 1
        spans.append((s, e))
        pos += len(part) + 1
    if sep == "|" and line.strip().startswith("|"):
        spans = spans[1:]
    if sep == "|" and line.strip().endswith("|"):
        spans = spans[:-1]
    return sep, spans


def _tables(text: str) -> str:
    if "|" not in text and "\t" not in text and "  " not in text:
        return text
    lines = text.split("\n")
    groups: list[tuple[str, list[int]]] = []
    for i, line in enumerate(lines):
        sep, _ = _split_cells(line) if len(line) <= 2000 else ("", [])
        if groups and sep and groups[-1][0] == sep and groups[-1][1][-1] == i - 1:
            groups[-1][1].append(i)
        elif sep:
            groups.append((sep, [i]))
    changed = False
    for _sep, idx in groups:
        split = [_split_cells(lines[i])[1] for i in idx]
        rows = [[lines[i][s:e] for s, e in spans] for i, spans in zip(idx, split, strict=True)]
        for r, c in _secret_cells(rows):
            line = lines[idx[r]]
            s, e = split[r][c]
            if line[s:e] != MASK:
                lines[idx[r]] = line[:s] + MASK + line[e:]
                changed = True
                split[r] = _split_cells(lines[idx[r]])[1]
    return "\n".join(lines) if changed else text


def _technical(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    lower = data.lower()
    for needle, pattern, keep in _TECHNICAL:
        if needle in lower:
            data = _mask_groups(pattern, data, keep)
    if b"net" in lower:
        pieces, last = [], 0
        for m in _NET_USE.finditer(data):
            s, e = m.span(1)
            pieces += [data[last:s], _net_use(data[s:e].decode("utf-8", "replace")).encode("utf-8", "surrogatepass")]
            last = e
        if pieces:
            data = b"".join(pieces) + data[last:]
    if any(start in data for start in _KNOWN_TOKEN_STARTS):
        data = _mask_groups(_KNOWN_TOKENS, data, _not_masked)
    return data.decode("utf-8", "surrogatepass")


def redact(text: str) -> str:
    """Return `text` with every credential we recognise replaced by a mask."""
    if not text:
        return text
    if "-----BEGIN " in text:
        text = _private_keys(text)
    text = _technical(text)
    text = _labelled(text)
    return _tables(text)


def contains_secret(text: str) -> bool:
    return redact(text) != text


# --- HTML parts: cells are masked in the markup, where the table's shape is still known ---------------
_CELL_TAG = re.compile(r"<(?P<close>/?)(?P<tag>tr|td|th|table)\b[^<>]{0,2000}>", re.I)  # ends at the next `<`
_TAG = re.compile(r"<[^<>]{0,2000}>")


def _cells(html: str) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """Each table row's cells as (start, end) of their inner markup; rows of one table share a number."""
    table, row, cell_start = 0, None, -1
    rows: list[tuple[int, list[tuple[int, int]]]] = []
    for m in _CELL_TAG.finditer(html):
        close, tag = m.group(1, 2)
        tag = tag.lower()
        if cell_start >= 0 and (tag in ("td", "th", "tr", "table")):
            if row is not None:
                row.append((cell_start, m.start()))
            cell_start = -1
        if tag == "table":
            table += 1
            row = None
        elif tag == "tr":
            row = None if close else []
            if not close:
                rows.append((table, row))
        elif not close:
            if row is None:
                row = []
                rows.append((table, row))
            cell_start = m.end()
    yield from rows


def _cell_text(fragment: str) -> str:
    if "<" in fragment:
        fragment = _TAG.sub(" ", fragment)
    if "&" in fragment:
        fragment = htmllib.unescape(fragment)
    return " ".join(fragment.split())


_ROW_BUDGET = 1_000  # rows read as a table; past it (a hostile mail), a cell after a label cell is masked


def redact_html(html: str) -> str:
    """Mask password cells of HTML tables (a header naming the column, or a label cell then its value), and
    any cell whose own text holds a labelled secret; the rest of the markup is left as it came."""
    if not html or not _label_starts(html):
        return html
    rows = list(_cells(html))
    if not rows:
        return html
    texts = [[_cell_text(html[s:e]) for s, e in cells] for _, cells in rows]
    replace: dict[tuple[int, int], str] = {}
    start = 0
    for r in range(1, min(len(rows), _ROW_BUDGET) + 1):
        if r == len(rows) or r == _ROW_BUDGET or rows[r][0] != rows[start][0]:
            for rr, c in _secret_cells(texts[start:r]):
                replace[rows[start + rr][1][c]] = MASK
            start = r
    for r in range(_ROW_BUDGET, len(rows)):
        for c in range(len(texts[r]) - 1):
            if _KEYWORD.search(texts[r][c].lower()):
                replace[rows[r][1][c + 1]] = MASK
    # A cell's own `密码：x` is masked too: one redact() over every cell, a line each (cell text holds no newline).
    spans = [span for _, cells in rows for span in cells]
    flat = [t for row in texts for t in row]
    for span, before, after in zip(spans, flat, redact("\n".join(flat)).split("\n"), strict=False):
        if span not in replace and after != before:
            replace[span] = htmllib.escape(after, quote=False)
    if not replace:
        return html
    out, pos = [], 0
    for (s, e), new in sorted(replace.items()):
        out.append(html[pos:s] + new)
        pos = e
    out.append(html[pos:])
    return "".join(out)
