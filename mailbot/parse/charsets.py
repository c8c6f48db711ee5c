"""Reading mail text in the right charset: aliases that keep Chinese mail intact (imported by the package
before any parsing), and a judgement of which charset raw 8-bit header bytes are written in.

Mail labelled gb2312 routinely carries GBK-only characters (镕, 堃, 喆) from Outlook and Foxmail, and strict
gb2312 decoding then fails; both mail-parser and the stdlib fall back in ways that silently drop the
Chinese text. GB18030 is a superset of GB2312 and GBK, so decoding every member of the family as GB18030
is always at least as good. The codec cache keeps its first answer, so this must run before any lookup.
"""

from __future__ import annotations

import codecs
import encodings.aliases
import encodings.big5
import encodings.euc_jp
import encodings.euc_kr
import encodings.gb2312
import encodings.shift_jis
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

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
    """Raw 8-bit header bytes: UTF-8, then `hint` (the charset guess_8bit judged for the message's raw
    headers), then the charset guess_8bit judges for these bytes alone; Latin-1 only as the last resort,
    since it never fails. Never raises."""
    order = ["utf-8"]
    if (name := lookup_or_none(hint)) is not None:
        order.append(name)
    for enc in dict.fromkeys(order):
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    guess = guess_8bit(data, [hint])
    return data.decode(guess) if guess is not None else data.decode("latin-1")


# Raw 8-bit headers (RFC 6532 allows only UTF-8; older clients write their own charset) are tried in the
# message's declared charsets, then this CJK family, then cp1252. Each is a superset of its national
# standard (GB18030 ⊃ GBK ⊃ GB2312, Big5-HKSCS ⊃ Big5, CP932 ⊃ Shift_JIS, CP949 ⊃ EUC-KR); EUC-JP is its own.
_CJK = ("gb18030", "big5hkscs", "cp932", "euc_jp", "cp949")
# The national standard inside each superset, by codec object (encodings.gb2312 etc. are imported directly
# because register() points the `gb2312` alias at GB18030), and the lead bytes of its symbols and of its
# first, most frequent level of characters: GB2312 level 1 (3,755 hanzi), Big5 常用字 (5,401), JIS X 0208
# level 1 (2,965 kanji), KS X 1001 hangul (2,350 syllables). Writers use those; the same bytes read in the
# wrong charset land mostly elsewhere (`尒愊彂` for Shift_JIS `見積書` read as GBK, hanja for Big5 read as
# CP949, half-width katakana for EUC-KR read as CP932).
_CORE = {
    "gb18030": (encodings.gb2312.codec, (range(0xA1, 0xAA), range(0xB0, 0xD8))),
    "big5hkscs": (encodings.big5.codec, (range(0xA1, 0xA4), range(0xA4, 0xC7))),
    "cp932": (encodings.shift_jis.codec, (range(0x81, 0x85), range(0x88, 0x99))),
    "euc_jp": (encodings.euc_jp.codec, (range(0xA1, 0xA6), range(0xB0, 0xD0))),
    "cp949": (encodings.euc_kr.codec, (range(0xA1, 0xAD), range(0xB0, 0xC9))),
}
# Kana are in GB2312, Big5 and KS X 1001 too, but Chinese and Korean text does not use them: in those
# readings they are Japanese read in the wrong charset (`お坤厦になっております`).
_NO_KANA = ("gb18030", "big5hkscs", "cp949")
_DETECT_SAMPLE = 4096  # bytes the detector reads: a header block's 8-bit text says all it can in that


def header_candidates(declared: Iterable[str | None]) -> list[str]:
    """The codecs, in order of preference, that raw 8-bit header bytes may be written in."""
    order: list[str] = []
    for label in declared:
        name = lookup_or_none(label)
        if name is not None and name not in ("ascii", "utf-8"):
            order += [name, *_family(name, label or "")]
    return list(dict.fromkeys([*order, *_CJK, "cp1252"]))


def guess_8bit(data: bytes, declared: Iterable[str | None] = ()) -> str | None:
    """The codec raw 8-bit header bytes are written in, or None when only Latin-1 reads them.

    UTF-8 first (it almost never decodes other charsets by accident). Otherwise every candidate that
    decodes the bytes strictly is a reading; when the readings differ, a detector judges them, since
    "no exception" proves little: GB18030 reads most Shift_JIS, and Latin-1 reads anything."""
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    order = header_candidates(declared)
    readings: dict[str, str] = {}
    for enc in order:
        try:
            readings[enc] = data.decode(enc)  # C speed; parse caps header sizes
        except (UnicodeDecodeError, LookupError):
            continue
    if len(set(readings.values())) <= 1:
        return next(iter(readings), None)
    return _judge(data, readings, order)


def _judge(data: bytes, readings: dict[str, str], order: list[str]) -> str:
    """The reading with the least charset-normalizer chaos (its mess detector) plus _rarity — on a short
    subject the mess detector alone often scores a wrong CJK reading 0 — ties broken by `order` (the
    declared charsets first)."""
    from charset_normalizer import from_bytes  # imported on first use: 25 ms, and most mail never needs it

    sample = data[:_DETECT_SAMPLE]
    if len(data) > _DETECT_SAMPLE:  # end on an ASCII byte so that no multi-byte character is cut in two
        cut = max(sample.rfind(b" "), sample.rfind(b"\n"))
        sample = sample[:cut] if cut > 0 else sample
    found = from_bytes(sample, cp_isolation=list(readings), preemptive_behaviour=False, explain=False)
    chaos = {}
    for match in found:
        name = lookup_or_none(match.encoding)
        if name in readings:
            chaos[name] = match.chaos
    if not chaos:  # the detector rejects every reading (short Cyrillic, Greek…): the declared order decides
        return next(iter(readings))
    return min(chaos, key=lambda enc: (chaos[enc] + _rarity(readings[enc], enc), order.index(enc)))


def _rarity(text: str, enc: str) -> float:
    """The share of non-ASCII characters in `text` that a writer in `enc` seldom uses: for a CJK charset,
    those outside the symbols and first level of its core national standard (and kana outside Japanese);
    for a single-byte charset, anything but letters and typographic punctuation — CJK bytes read as
    cp1252 come out as `Âà±H: ³ø»ù³æ`, half of it symbols."""
    counts = Counter(ch for ch in text[:_DETECT_SAMPLE] if ch > "\x7f")
    total = sum(counts.values())
    if not total:
        return 0.0
    rare = 0
    if enc not in _CORE:
        for ch, n in counts.items():
            if not (unicodedata.category(ch).startswith("L") or "\u2010" <= ch <= "\u20ac" or ch in "«»¿¡°©®™"):
                rare += n
        return rare / total
    core, common = _CORE[enc]
    for ch, n in counts.items():
        if "\u3040" <= ch <= "\u30ff" and enc in _NO_KANA:
            rare += n
            continue
        try:
            encoded = core.encode(ch)[0]
        except UnicodeEncodeError:
            rare += n
            continue
        # One byte is half-width katakana; more than two is EUC-KR's composed hangul (KS X 1001 annex 3).
        if len(encoded) != 2 or not any(encoded[0] in r for r in common):
            rare += n
    return rare / total


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
    if family == _CHINESE and name is not None and (text := _utf8_in_disguise(data, name)) is not None:
        return text
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
            if enc == "utf-8" and not family and (text := _damaged_utf8(data)) is not None:
                return text
            continue
    if not family:
        return data.decode("latin-1")
    # A CJK text with a few broken bytes: the declared charset with replacements keeps the rest readable.
    readings = [data.decode(enc, "replace") for enc in dict.fromkeys([name or family[0], *family, "utf-8"])]
    return min(readings, key=lambda s: s.count("\ufffd"))


def is_chinese_label(label: str | None) -> bool:
    """Whether `label` names a Chinese charset (GB2312, GBK, GB18030, Big5 and their aliases)."""
    return _family(lookup_or_none(label), label or "") == _CHINESE


# A Chinese reading of UTF-8 bytes lands mostly outside the characters Chinese writers use (measured on
# random Chinese text: at least a third, typically four fifths); real GBK or Big5 text, almost never.
_DISGUISE_RARITY = 0.3


def _utf8_in_disguise(data: bytes, name: str) -> str | None:
    """UTF-8 text under a Chinese label (a misconfigured sender), or None. GB18030 reads about 40% of Chinese
    UTF-8 text without an error, as `涓婄悊`-style mojibake, so a strict decode proves nothing; valid UTF-8
    whose Chinese reading is mostly rare characters is UTF-8. (A short GBK text can be valid UTF-8 by
    chance — `师志` — but then its own reading is common characters, and it stays.)"""
    if data.isascii():
        return None
    try:
        text = data.decode("utf-8")
        reading = data.decode(name)
    except (UnicodeDecodeError, LookupError):
        return None  # not UTF-8, or not the declared charset either: decode_text's order decides
    enc = name if name in _CORE else _CHINESE[0]
    return text if _rarity(reading, enc) >= _DISGUISE_RARITY else None


def _damaged_utf8(data: bytes) -> str | None:
    """UTF-8 text with a few broken bytes (a base64 body cut short, one stray byte), read as UTF-8 with each
    broken sequence shown as U+FFFD; None when the bytes are not mostly UTF-8. Without this, one bad byte
    in a Chinese UTF-8 mail made the whole text Latin-1 mojibake (`ä½\xa0å¥½`), which has no U+FFFD and so
    looked better to every caller that counts them."""
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - broken  # well-formed non-ASCII characters
    # Other charsets read as UTF-8 are mostly broken sequences (GBK: most pairs; Latin-1: every letter).
    return text if multibyte >= 4 * broken else None


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
