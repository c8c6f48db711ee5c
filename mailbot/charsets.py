"""Charset aliases that keep Chinese mail intact; imported by the package before any parsing.

Mail labelled gb2312 routinely carries GBK-only characters (镕, 堃, 喆) from Outlook and Foxmail, and strict
gb2312 decoding then fails; both mail-parser and the stdlib fall back in ways that silently drop the
Chinese text. GB18030 is a superset of GB2312 and GBK, so decoding every member of the family as GB18030
is always at least as good. The codec cache keeps its first answer, so this must run before any lookup.
"""

from __future__ import annotations

import codecs
import encodings.aliases
import re

_GB_FAMILY = (
    "gb2312", "gbk", "cp936", "euc_cn", "euccn", "eucgb2312_cn", "gb2312_1980", "gb2312_80",
    "csgb2312", "x_gbk", "ms936", "936", "chinese", "csiso58gb231280", "iso_ir_58",
)

# When the declared charset fails (mislabelled mail), try its neighbours before giving up on the text.
_CHINESE = ("gb18030", "big5hkscs")
_JAPANESE = ("euc_jp", "cp932", "iso2022_jp")
_KOREAN = ("cp949", "iso2022_kr")
_SAMPLE = 16 * 1024  # bytes _looks_double_byte reads


def register() -> None:
    for name in _GB_FAMILY:
        encodings.aliases.aliases[name] = "gb18030"
    # Big5 in the wild is mostly the HKSCS superset.
    encodings.aliases.aliases["big5"] = "big5hkscs"
    encodings.aliases.aliases["cp950"] = "big5hkscs"


def _looks_double_byte(data: bytes) -> bool:
    """GB2312/GBK text: high bytes come in pairs of two high bytes. Latin-1 text has lone high bytes,
    or a high byte followed by an ASCII letter (`é` + `c`), which GB18030 would happily read as one
    ideograph — so only pairs of two high bytes count in favour."""
    data = data[:_SAMPLE]  # a guess: a sample says as much as the whole, and the loop is Python
    strong = weak = lone = i = 0
    n = len(data)
    while i < n:
        if data[i] >= 0x81 and i + 1 < n and data[i + 1] >= 0x80:
            strong += 1
            i += 2
        elif data[i] >= 0x81 and i + 1 < n and 0x40 <= data[i + 1] <= 0x7E:
            weak += 1
            i += 2
        else:
            lone += data[i] >= 0x80
            i += 1
    return strong > 0 and strong >= weak and lone * 4 <= strong + weak


def decode_8bit(data: bytes, hint: str | None = None) -> str:
    """Raw 8-bit header bytes: try UTF-8, then the charset the message declares for its text (`hint`),
    then GB18030, then Big5-HKSCS; never fail."""
    order = ["utf-8"]
    if (name := lookup_or_none(hint)) is not None:
        order.append(name)
    for enc in dict.fromkeys(order):
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    # Only now, when neither fits: the guess costs a Python loop over the bytes.
    for enc in ("gb18030", "big5hkscs") if _looks_double_byte(data) else ():
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _family(name: str | None, label: str) -> tuple[str, ...]:
    tokens = set(re.split(r"[^a-z0-9]+", f"{name or ''} {label}".lower()))
    if tokens & {"gb18030", "gbk", "gb2312", "big5", "big5hkscs", "hkscs", "cp936", "cp950", "euc_cn", "cn", "gb"}:
        return _CHINESE
    if any(t.startswith(("gb", "big5")) for t in tokens):
        return _CHINESE
    if tokens & {"jp", "jis", "shift", "sjis", "cp932", "ms932"} or any("jis" in t or "jp" in t for t in tokens):
        return _JAPANESE
    if tokens & {"kr", "cp949", "ks", "korean"} or any(t.endswith("kr") for t in tokens):
        return _KOREAN
    return ()


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Body or encoded-word bytes in their declared charset; when that is unknown or wrong (mislabelled
    mail), the charsets of the same family, UTF-8, and for Western labels cp1252. Never raises; when
    nothing fits, the reading that loses the fewest characters (each lost one shown as U+FFFD)."""
    name = lookup_or_none(declared)
    family = _family(name, declared or "")
    order = [name] if name else []
    order.append("utf-8")
    if family:
        order += family
    else:
        if _looks_double_byte(data):
            order += _CHINESE
        order += ["cp1252"]
    for enc in dict.fromkeys(order):
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    if not family:
        return data.decode("latin-1")
    # A CJK text with a few broken bytes: the declared charset with replacements keeps the rest readable.
    readings = [data.decode(enc, "replace") for enc in dict.fromkeys([name or family[0], *family, "utf-8"])]
    return min(readings, key=lambda s: s.count("\ufffd"))


def lookup_or_none(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        info = codecs.lookup(str(charset).strip().strip('"').lower())
    except (LookupError, ValueError, TypeError):
        return None
    # `base64`, `rot13`, `hex` … are codecs too, but not text encodings a mail can be written in.
    return info.name if getattr(info, "_is_text_encoding", True) else None


register()
