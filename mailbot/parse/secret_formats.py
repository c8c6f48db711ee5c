"""Secrets by their format (private keys, bearer and basic credentials, URLs with passwords, known token
shapes, `net use` lines), on RE2 so that every search is linear. Part of redact.py."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

import re2  # google-re2: a DFA, so every search is linear in the text whatever its shape

from mailbot.parse.secret_labels import _S2, _SECRET_LIKE, MASK, _is_refusal


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
