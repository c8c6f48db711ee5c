"""The report's periods and business time: a period of local days, business hours between two instants on
the business calendar, percentiles and rates. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailbot.decide.calendar import BusinessCalendar

WITHIN_DAYS = (1, 3)  # "answered within N business days", as INTERFACE.md names them


@dataclass(frozen=True)
class Period:
    """Local days `since` … `until`, both included, in `zone` (the bot's)."""

    since: date
    until: date
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError(f"the period ends ({self.until}) before it starts ({self.since})")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time(0, 0), tzinfo=self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.until + timedelta(days=1), time(0, 0), tzinfo=self.zone).astimezone(UTC)


def default_period(now: datetime, zone: ZoneInfo, days: int = 30) -> Period:
    """The last `days` local days up to and including today."""
    today = now.astimezone(zone).date()
    return Period(today - timedelta(days=days - 1), today, zone)


def previous_week(now: datetime, zone: ZoneInfo) -> Period:
    """Monday to Sunday of the week before `now`'s (the weekly report's period)."""
    monday = now.astimezone(zone).date()
    monday -= timedelta(days=monday.weekday())
    return Period(monday - timedelta(days=7), monday - timedelta(days=1), zone)


class BusinessClock:
    """Business seconds between instants: working hours on the calendar's workdays, in its zone.

    The holidays and hours are the calendar's (BusinessCalendar.is_workday, opening, closing); this only
    adds a running total per day, so one difference costs two lookups instead of a walk over the days
    between (hundreds of thousands of reply times per report)."""

    def __init__(self, calendar: BusinessCalendar) -> None:
        self.calendar = calendar
        self.zone = calendar.zone
        self.opening = _seconds(calendar.opening)
        self.day = _seconds(calendar.closing) - self.opening
        self._base = 0  # the date ordinal of _before[0]
        self._before: list[int] = []  # business seconds from _base up to the start of each day
        self._workday: list[bool] = []
        # (n, n business days in hours) for "answered within n business days"
        self.within_limits = tuple((n, n * self.day_hours) for n in WITHIN_DAYS)

    def _index(self, ordinal: int) -> int:
        if not self._before:
            self._base = ordinal - 200
            self._extend(ordinal + 200)
        elif ordinal < self._base:
            # Prepend a year more than needed: timelines are read in no particular order of cases.
            old_base, old_before, old_workday = self._base, self._before, self._workday
            self._base, self._before, self._workday = ordinal - 366, [], []
            self._extend(old_base - 1)
            shift = self._before[-1] + (self.day if self._workday[-1] else 0)
            self._before += [b + shift for b in old_before]
            self._workday += old_workday
        if ordinal - self._base >= len(self._before):
            self._extend(ordinal + 366)
        return ordinal - self._base

    def _extend(self, last: int) -> None:
        total = self._before[-1] + (self.day if self._workday[-1] else 0) if self._before else 0
        for ordinal in range(self._base + len(self._before), last + 1):
            workday = self.calendar.is_workday(date.fromordinal(ordinal))
            self._before.append(total)
            self._workday.append(workday)
            total += self.day if workday else 0

    def at(self, instant: datetime) -> int:
        """Business seconds from the clock's origin to `instant`."""
        local = instant.astimezone(self.zone)
        i = local.toordinal() - self._base
        if not 0 <= i < len(self._before):  # outside the days known so far (rare): extend the totals
            i = self._index(local.toordinal())
        if not self._workday[i]:
            return self._before[i]
        into = local.hour * 3600 + local.minute * 60 + local.second - self.opening
        return self._before[i] + min(max(into, 0), self.day)

    def hours_between(self, start: datetime, end: datetime) -> float:
        return max(0, self.at(end) - self.at(start)) / 3600

    @property
    def day_hours(self) -> float:
        return self.day / 3600


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def hours_summary(values: list[float]) -> dict[str, Any]:
    p50, p90 = percentile(values, 50), percentile(values, 90)
    return {"p50": None if p50 is None else round(p50, 1), "p90": None if p90 is None else round(p90, 1),
            "count": len(values)}
