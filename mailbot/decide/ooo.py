"""The return date an out-of-office reply names (`4月14日返回`, `until Friday 14 May 2021`, `back on
2021-05-14`), so reminders can wait for the customer to be back — pure."""

from __future__ import annotations

import re
from datetime import date, timedelta

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_CUE = r"(?:until|till|through|back(?: in the office)? on|return(?:ing)?(?: to the office)? on|returning|back|return)"

_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_ZH = re.compile(r"(?:(\d{4})\s*年\s*)?(\d{1,2})\s*月\s*(\d{1,2})\s*[日号號]")
_ZH_RANGE = re.compile(r"\s*(?:至|到|-|~|～|—|－)\s*$")  # `4月10日至4月14日`: the first date starts the absence
_ZH_CUE = re.compile(r"返回|回来|回來|返岗|返崗|回到|上班|之前|以前|期间|至|到")
_EN_DAY_MONTH = re.compile(_CUE + r"\s+(?:[a-z]+,?\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH + r"(?:,?\s+(\d{4}))?", re.I)
_EN_MONTH_DAY = re.compile(_CUE + r"\s+(?:[a-z]+,?\s+)?" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?", re.I)
_EN_ISO = re.compile(_CUE + r"\s+(?:[a-z]+,?\s+)?(\d{4})-(\d{1,2})-(\d{1,2})", re.I)


# How far from the mail's date a return date may lie. A leave of more than a year is not something to
# hold reminders for, and a date beyond it (`back on 9999-12-31`) is a typo or a trap: near the calendar's
# ends, business-day arithmetic and time zones overflow (OverflowError quarantined the mail).
MAX_AWAY = timedelta(days=400)
_USABLE = (date(2, 1, 1), date(9998, 12, 31))  # a year's margin from date.min/max for the arithmetic after


def _plausible(d: date, sent: date) -> date | None:
    return d if abs(d - sent) <= MAX_AWAY and _USABLE[0] <= d <= _USABLE[1] else None


def _resolve(year: int | None, month: int, day: int, sent: date) -> date | None:
    """A date without a year is the next such date on or after the mail was sent — unless it lies only
    a little in the past: an out-of-office left on after `back on 2 April` answering on 13 April means
    2 April (already back), not 2 April next year, which would hold the reminders for a year. A date the
    calendar cannot use (no such day, or further than MAX_AWAY from the mail) is no return date."""
    try:
        if year is not None:
            return _plausible(date(year, month, day), sent)
        candidate = date(sent.year, month, day)
        if candidate >= sent or (sent - candidate).days <= 183:
            return _plausible(candidate, sent)
        return _plausible(date(sent.year + 1, month, day), sent)
    except (ValueError, OverflowError):
        return None


def return_date(text: str, sent: date) -> date | None:
    """The day the sender says they are back, or None when the reply names no date."""
    for m in _EN_ISO.finditer(text):
        if d := _resolve(int(m.group(1)), int(m.group(2)), int(m.group(3)), sent):
            return d
    for m in _EN_DAY_MONTH.finditer(text):
        if d := _resolve(int(m.group(3)) if m.group(3) else None, _MONTHS[m.group(2).lower()[:3]],
                         int(m.group(1)), sent):
            return d
    for m in _EN_MONTH_DAY.finditer(text):
        if d := _resolve(int(m.group(3)) if m.group(3) else None, _MONTHS[m.group(1).lower()[:3]],
                         int(m.group(2)), sent):
            return d
    zh = list(_ZH.finditer(text))
    for n, m in enumerate(zh):
        if n + 1 < len(zh) and _ZH_RANGE.match(text[m.end(): zh[n + 1].start()]):
            continue  # the range's end is the return date
        window = text[max(0, m.start() - 6): m.end() + 8]
        range_end = n > 0 and _ZH_RANGE.match(text[zh[n - 1].end(): m.start()]) is not None
        if range_end or _ZH_CUE.search(window):
            year = int(m.group(1)) if m.group(1) else None
            if d := _resolve(year, int(m.group(2)), int(m.group(3)), sent):
                return d
    for m in _ISO.finditer(text):
        if d := _resolve(int(m.group(1)), int(m.group(2)), int(m.group(3)), sent):
            return d
    return None
