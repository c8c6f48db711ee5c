"""Charset aliases that keep Chinese mail intact; imported by the package before any parsing.

Mail labelled gb2312 routinely carries GBK-only characters (镕, 堃, 喆) from Outlook and Foxmail, and strict
gb2312 decoding then fails; both mail-parser and the stdlib fall back in ways that silently drop the
Chinese text. GB18030 is a superset of GB2312 and GBK, so decoding every member of the family as GB18030
is always at least as good. The codec cache keeps its first answer, so this must run before any lookup.
"""

from __future__ import annotations

import codecs
import encodings.aliases

_GB_FAMILY = (
    "gb2312", "gbk", "cp936", "euc_cn", "euccn", "eucgb2312_cn", "gb2312_1980", "gb2312_80",
    "csgb2312", "x_gbk", "ms936", "936", "chinese", "csiso58gb231280", "iso_ir_58",
)


def register() -> None:
    for name in _GB_FAMILY:
        encodings.aliases.aliases[name] = "gb18030"
    # Big5 in the wild is mostly the HKSCS superset.
    encodings.aliases.aliases["big5"] = "big5hkscs"
    encodings.aliases.aliases["cp950"] = "big5hkscs"


def decode_8bit(data: bytes) -> str:
    """Raw 8-bit header bytes: try UTF-8, then GB18030, then Big5-HKSCS; never fail."""
    for enc in ("utf-8", "gb18030", "big5hkscs"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def lookup_or_none(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"').lower()).name
    except LookupError:
        return None


register()
