"""Business days and hours in a case's timezone, with mainland China's holidays and make-up workdays."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar
import holidays as holidays_lib

from mailbot.text import one_line

REGIONS = ("CN", "none")

# date.fromisoformat() in 3.11 also accepts "20270101" and "2027-W01-1"; an override file is read by
# people, so only the unambiguous spelling the State Council notice is copied into is allowed.
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@cache
def _chinese_calendar_covers(year: int) -> bool:
    # chinese_calendar has no "which years do you know" API; it raises NotImplementedError outside its
    # data (2004-2026 in 1.11.0), so asking it is the one check that stays right when it is upgraded.
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


@lru_cache(maxsize=4096)
def _published_workday(d: date) -> bool:
    # chinese_calendar validates its argument on every call; planning asks about the same few days
    # thousands of times per poll (measured: 0.1 s per 2,000 mails), and the answer is fixed per day.
    return bool(chinese_calendar.is_workday(d))


@cache
def _rule_based_cn_holidays(year: int) -> frozenset[date]:
    # `holidays` builds a whole year per call (and reads a packaged .mo file for the names), so keep one
    # frozen set per year. language is pinned so the result never depends on the process's LANG.
    return frozenset(holidays_lib.country_holidays("CN", years=year, language="zh_CN"))


@dataclass(frozen=True)
class BusinessCalendar:
    """Which days are workdays and when the working day starts and ends, in one timezone."""

    zone: ZoneInfo
    opening: time
    closing: time
    region: str = "CN"
    # From the holiday_overrides file: they win over both libraries, because the libraries are either
    # silent (chinese_calendar after its last year) or guessing (`holidays` has no make-up workdays).
    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"region: expected one of {', '.join(REGIONS)}, got {self.region!r}")
        if self.opening.tzinfo is not None or self.closing.tzinfo is not None:
            raise ValueError("opening and closing are wall-clock times in zone and must not carry a tzinfo")
        if not self.opening < self.closing:
            raise ValueError(f"opening {self.opening} must be before closing {self.closing}")
        both = self.extra_holidays & self.extra_workdays
        if both:
            raise ValueError(f"{_days(both)} listed both as holiday and as workday")

    def is_workday(self, d: date) -> bool:
        # A datetime is a date too, but its "day" depends on a zone this method cannot know.
        if isinstance(d, datetime):
            raise TypeError(
                "is_workday takes a local date; convert the datetime to the calendar's zone first"
            )
        if d in self.extra_workdays:
            return True
        if d in self.extra_holidays:
            return False
        if self.region == "CN":
            if _chinese_calendar_covers(d.year):
                return _published_workday(d)
            # Rule-based fallback: right about the fixed holidays, blind to make-up workdays (调休).
            return d.weekday() < 5 and d not in _rule_based_cn_holidays(d.year)
        return d.weekday() < 5

    def next_workday(self, d: date) -> date:
        """The first workday strictly after d."""
        # Terminates: holidays are finite runs (the longest CN break is about nine days).
        d += timedelta(days=1)
        while not self.is_workday(d):
            d += timedelta(days=1)
        return d

    def add_business_days(self, start: datetime, n: int) -> datetime:
        """start moved n business days on in zone, same time of day, then into working hours; in UTC.

        Silence is counted in business time: a start outside working hours (a mail sent on Saturday, or
        at night) counts from the next opening, so that n days are always n whole business days."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        local = self._into_working_hours_local(start.astimezone(self.zone))
        day = local.date()
        for _ in range(n):
            day = self.next_workday(day)
        # Wall-clock time is kept, not elapsed hours: across a DST change 10:00 stays 10:00 locally.
        moved = datetime.combine(day, local.time(), tzinfo=self.zone)
        return self._into_working_hours_local(moved).astimezone(UTC)

    def business_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours on workdays from start to end (0 when end is not after start), in hours.

        Counted on the local wall clock, day by day: a night, a weekend or a holiday adds nothing, a make-up
        workday counts like any other."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if end <= start:
            return 0.0
        local = self._into_working_hours_local(start.astimezone(self.zone))
        stop = end.astimezone(self.zone)
        total = timedelta()
        # Bounded by the days between the two instants (a case waits days, not centuries).
        while local < stop:
            closing = datetime.combine(local.date(), self.closing, tzinfo=self.zone)
            total += min(closing, stop) - local
            local = datetime.combine(self.next_workday(local.date()), self.opening, tzinfo=self.zone)
        return total.total_seconds() / 3600

    def add_business_hours(self, start: datetime, hours: float) -> datetime:
        """The moment `hours` working hours after start (counted from the next opening when start is outside
        working hours); in UTC. A count that ends exactly at closing lands on the next opening, the first
        moment anything can be sent in working hours."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if hours < 0:
            raise ValueError(f"hours must be >= 0, got {hours}")
        local = self._into_working_hours_local(start.astimezone(self.zone))
        left = timedelta(hours=hours)
        while True:
            closing = datetime.combine(local.date(), self.closing, tzinfo=self.zone)
            if local + left < closing:
                return (local + left).astimezone(UTC)
            left -= closing - local
            local = datetime.combine(self.next_workday(local.date()), self.opening, tzinfo=self.zone)

    def first_opening(self, day: date) -> datetime:
        """The first working moment from the start of the local `day` on: its opening when it is a workday,
        else the next workday's; in UTC."""
        return self.into_working_hours(datetime.combine(day, time(0, 0), tzinfo=self.zone))

    def in_working_hours(self, instant: datetime) -> bool:
        """Whether instant falls inside working hours on a workday."""
        return self.into_working_hours(instant) == instant

    def into_working_hours(self, instant: datetime) -> datetime:
        """instant if it falls in working hours on a workday, else the next opening; in UTC."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        return self._into_working_hours_local(instant.astimezone(self.zone)).astimezone(UTC)

    def _into_working_hours_local(self, local: datetime) -> datetime:
        # Works on the local wall clock (not a UTC round trip) so a time inside a DST gap is judged as
        # the time the caller meant.
        day, clock = local.date(), local.time()
        if not self.is_workday(day) or clock >= self.closing:
            return datetime.combine(self.next_workday(day), self.opening, tzinfo=self.zone)
        if clock < self.opening:
            return datetime.combine(day, self.opening, tzinfo=self.zone)
        return local

    def has_published_data(self, year: int) -> bool:
        """Whether year's holidays come from an official source rather than `holidays`' rules."""
        if _chinese_calendar_covers(year):
            return True
        return any(d.year == year for d in self.extra_holidays | self.extra_workdays)

    def coverage_warning(self, today: date) -> str | None:
        """One line asking for an override file when this or next year lacks published data."""
        if self.region != "CN":
            return None
        # Next year matters before it starts: a reminder due in early January is scheduled in December.
        missing = [y for y in (today.year, today.year + 1) if not self.has_published_data(y)]
        if not missing:
            return None
        years = " and ".join(str(y) for y in missing)
        return (
            f"no published mainland China holiday data for {years}: business days there follow estimated "
            f"holidays without make-up workdays (调休); add the State Council dates to the file named by "
            f"[followup] holiday_overrides"
        )


def parse_overrides(text: str) -> tuple[frozenset[date], frozenset[date]]:
    """TOML override text → (days off, make-up workdays); ValueError with a one-line message if bad."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"holiday overrides: not valid TOML: {one_line(str(e))}") from None
    unknown = sorted(set(raw) - {"holidays", "workdays"})
    if unknown:
        # Catches typos such as "holiday =" that would otherwise silently override nothing.
        raise ValueError(f"holiday overrides: unknown key {unknown[0]!r}; expected 'holidays' and 'workdays'")
    days_off = _parse_days(raw, "holidays")
    workdays = _parse_days(raw, "workdays")
    both = days_off & workdays
    if both:
        raise ValueError(f"holiday overrides: {_days(both)} listed in both holidays and workdays")
    return days_off, workdays


def _parse_days(raw: dict[str, object], key: str) -> frozenset[date]:
    values = raw.get(key, [])
    if not isinstance(values, list):
        raise ValueError(f'holiday overrides: {key}: expected a list of dates like "2027-01-01"')
    days = set()
    for i, value in enumerate(values):
        # A bare TOML date (2027-01-01 without quotes) is accepted too; a TOML datetime is not a day.
        if isinstance(value, date) and not isinstance(value, datetime):
            days.add(value)
            continue
        if isinstance(value, str) and _ISO_DAY.fullmatch(value):
            try:
                days.add(date.fromisoformat(value))
                continue
            except ValueError:
                pass
        raise ValueError(
            f'holiday overrides: {key}[{i}]: expected a date like "2027-01-01", got {one_line(repr(value))}'
        )
    return frozenset(days)


def _days(days: frozenset[date]) -> str:
    return ", ".join(d.isoformat() for d in sorted(days))
