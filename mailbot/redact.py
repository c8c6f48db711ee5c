"""Masks credentials that people paste into mail, before anything is stored, logged, rendered or sent."""

from __future__ import annotations

import re

MASK = "******"

# `密码：secret`, `密码为：secret`, `password = secret`, `口令: secret` … the label stays, the value goes.
# The short labels `pass`, `secret`, `token` must start a word or a camelCase part (`Compass: north` and
# `Bypass: yes` are not credentials; `AccessToken: x` is); a quoted value is masked whole.
_LABELLED = re.compile(
    r"(?P<label>(?:密码|口令|密钥|登录密码|初始密码|验证码|授权码|"
    r"pass(?:word|wd|phrase|wort|code)|kennwort|pwd|api[ _-]?key|access[ _-]?key|auth[ _-]?code|"
    r"(?-i:(?<![A-Za-z])|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z]))(?:pass|secret|token))"
    r"[\"']?\s*(?:\([^)]*\))?\s*(?:为|是)?\s*[:：=]\s*)"  # [\"']?: JSON and YAML keys, `"password": "x"`
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|“[^”\n]*”|[^\s,，;；&}\]\"]+)",
    re.IGNORECASE,
)
# scheme://user:secret@host — the secret may itself hold an `@` (`p@ss`): it ends at the last `@` before the host.
_URL_USERINFO = re.compile(
    r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)(?P<value>[^\s/]+?)(?=@[^\s@/]+(?:[/:?#\s]|$))", re.I
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{12,})")
_KNOWN_TOKENS = re.compile(
    r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|"
    r"sk-(?:proj-|ant-|live_|test_)?[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})\b"
)
# Without a colon — `密码是 X`, `密码为 X`, `密码 X`, `the password is X` — the words alone do not say a
# secret follows (`密码是必须的`, `the password is required`): only a value that looks like one is taken:
# printable ASCII, 4 characters or more, holding a digit or a symbol (trailing punctuation aside).
_STATED = re.compile(
    r"(?P<label>(?:密码|口令|密钥)\s*(?:是|为)?\s*|\bpass(?:word|code|phrase)\s+is\s+)(?P<value>[\x21-\x7e]+)",
    re.IGNORECASE,
)
_SECRET_LIKE = re.compile(r"(?=.*[0-9!#$%&*+\-/?@^_~=])[\x21-\x7e]{4,}")
# mysql, mysqldump, mysqladmin take the password glued to -p: `mysql -uroot -pS3cret db`.
_MYSQL_P = re.compile(r"(?P<pre>\bmysql(?:dump|admin)?\b[^\n]*?\s-p)(?P<value>[^\s'\"]+|'[^'\n]*'|\"[^\"\n]*\")")


def _stated(m: re.Match[str]) -> str:
    value = m.group("value")
    core = value.rstrip(".,;:)]}>'\"")  # not `!` or `?`: secrets end in those too
    if not _SECRET_LIKE.fullmatch(core):
        return m.group(0)
    return m.group("label") + MASK + value[len(core):]


# Substrings without which a pattern cannot match: most mail holds none, and an `in` test costs far less
# than a regex pass. _LABELLED is case-insensitive: its labels are looked for in text.lower(), which finds
# every case variant re.IGNORECASE does except the non-ASCII letters that fold onto ASCII ones without
# lower() (dotless ı, long ſ; the Kelvin sign K lowers to k, and İ to i + a combining dot): text holding
# those takes the regex.
_LABEL_WORDS = ("密码", "口令", "密钥", "验证码", "授权码", "pass", "kennwort", "pwd", "api", "access", "auth",
                "secret", "token")
_FOLDS_ONTO_ASCII = ("\u0131", "\u017f")


def _may_hold_label(text: str) -> bool:
    if ":" not in text and "：" not in text and "=" not in text:
        return False
    if any(c in text for c in _FOLDS_ONTO_ASCII):
        return True
    lowered = text.lower()
    return any(word in lowered for word in _LABEL_WORDS)


def _may_hold_token(text: str) -> bool:
    return "AKIA" in text or "_" in text or "xox" in text or "sk-" in text or "eyJ" in text


def redact(text: str) -> str:
    """Return `text` with every credential we recognise replaced by a mask."""
    if not text:
        return text
    if "-----BEGIN " in text:
        text = _PRIVATE_KEY.sub(lambda m: f"[{m.group('kind').lower()} removed]", text)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: m.group("pre") + MASK, text)
    if _may_hold_label(text):
        text = _LABELLED.sub(lambda m: m.group("label") + MASK, text)
    if "Bearer" in text:
        text = _BEARER.sub(lambda m: m.group("pre") + MASK, text)
    if _may_hold_token(text):
        text = _KNOWN_TOKENS.sub(MASK, text)
    if "密码" in text or "口令" in text or "密钥" in text or " is " in text:
        text = _STATED.sub(_stated, text)
    if "mysql" in text:
        text = _MYSQL_P.sub(lambda m: m.group("pre") + MASK, text)
    return text


def contains_secret(text: str) -> bool:
    return redact(text) != text
