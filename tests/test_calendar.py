"""Business days and hours: mainland China holidays with make-up workdays, overrides, DST, coverage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from mailbot.decide.calendar import BusinessCalendar, parse_overrides

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NINE, SIX_PM = time(9), time(18)

CN = BusinessCalendar(zone=SH, opening=NINE, closing=SIX_PM)
PLAIN_BERLIN = BusinessCalendar(zone=BERLIN, opening=NINE, closing=SIX_PM, region="none")

OVERRIDES_2027 = """
# State Council notice for 2027 (made-up dates for the test)
holidays = ["2027-01-01", "2027-02-11"]
workdays = ["2027-02-07", 2027-02-20]
"""


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SH)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2021, 4, 25), True),  # Sunday, make-up workday for Labour Day
        (date(2021, 5, 1), False),
        (date(2021, 5, 3), False),  # Monday inside the break
        (date(2021, 5, 5), False),
        (date(2021, 5, 6), True),
        (date(2021, 5, 8), True),  # Saturday, make-up workday
        (date(2021, 5, 9), False),  # plain Sunday
        (date(2021, 9, 26), True),  # Sunday, make-up workday for National Day
        (date(2021, 10, 1), False),
        (date(2021, 10, 7), False),  # Thursday inside the break
        (date(2021, 10, 8), True),
        (date(2021, 10, 9), True),  # Saturday, make-up workday
        (date(2021, 1, 1), False),
        (date(2021, 4, 13), True),
        (date(2027, 1, 1), False),  # past chinese_calendar's data: `holidays` rules
        (date(2027, 10, 1), False),
        (date(2027, 1, 4), True),
        (date(2027, 1, 2), False),  # Saturday
    ],
)
def test_cn_is_workday(day: date, expected: bool) -> None:
    assert CN.is_workday(day) is expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2021, 10, 1), True),  # no public holidays, only weekends
        (date(2021, 10, 9), False),
        (date(2021, 4, 25), False),
        (date(2027, 1, 1), True),
    ],
)
def test_region_none_is_weekends_only(day: date, expected: bool) -> None:
    assert PLAIN_BERLIN.is_workday(day) is expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2021, 4, 23), date(2021, 4, 25)),  # Fri → the make-up Sunday
        (date(2021, 4, 30), date(2021, 5, 6)),
        (date(2021, 5, 7), date(2021, 5, 8)),  # Fri → the make-up Saturday
        (date(2021, 9, 30), date(2021, 10, 8)),
        (date(2021, 10, 8), date(2021, 10, 9)),
        (date(2020, 12, 31), date(2021, 1, 4)),  # Jan 1 holiday, Jan 2-3 weekend
        (date(2021, 5, 3), date(2021, 5, 6)),  # from inside a break
        (date(2026, 12, 31), date(2027, 1, 4)),  # across the end of chinese_calendar's data
    ],
)
def test_next_workday_is_strictly_after(day: date, expected: date) -> None:
    assert CN.next_workday(day) == expected


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # The mail in the scenario: 17:52:59 UTC is 01:52 Tuesday in Shanghai, before opening.
        (datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC), 3, sh(2021, 4, 16, 9)),
        (sh(2021, 4, 16, 9), 3, sh(2021, 4, 21, 9)),
        (sh(2021, 4, 21, 9), 2, sh(2021, 4, 23, 9)),
        # Labour Day 2021: Sun Apr 25 works, May 1-5 off, Sat May 8 works.
        (sh(2021, 4, 23, 10), 1, sh(2021, 4, 25, 10)),
        (sh(2021, 4, 29, 10), 2, sh(2021, 5, 6, 10)),
        (sh(2021, 4, 30, 10), 2, sh(2021, 5, 7, 10)),
        (sh(2021, 5, 6, 10), 2, sh(2021, 5, 8, 10)),
        # National Day 2021: Sun Sep 26 works, Oct 1-7 off, Sat Oct 9 works.
        (sh(2021, 9, 24, 15), 1, sh(2021, 9, 26, 15)),
        (sh(2021, 9, 30, 15), 1, sh(2021, 10, 8, 15)),
        (sh(2021, 9, 30, 15), 2, sh(2021, 10, 9, 15)),
        (sh(2021, 9, 30, 15), 3, sh(2021, 10, 11, 15)),
        # Year end: Jan 1 is a holiday, Jan 2-3 a weekend.
        (sh(2020, 12, 31, 11), 1, sh(2021, 1, 4, 11)),
        # 20:00 is after closing: the result lands on the following business day's opening.
        (sh(2021, 4, 12, 20), 3, sh(2021, 4, 16, 9)),
        (sh(2021, 4, 12, 18), 1, sh(2021, 4, 14, 9)),  # closing itself is already out of hours
        # Midday is kept as midday.
        (sh(2021, 4, 12, 12), 3, sh(2021, 4, 15, 12)),
        (sh(2021, 4, 12, 17, 59, 59), 1, sh(2021, 4, 13, 17, 59, 59)),
        # Counting from a day off: silence starts at the next opening, so one business day is a whole one
        # (not the three hours from 09:00 to noon on the first workday after the holiday).
        (sh(2021, 5, 2, 12), 1, sh(2021, 5, 7, 9)),
        # A Saturday mail before the make-up workday (Sun 25 Apr 2021): 3 whole business days from Sunday.
        (sh(2021, 4, 24, 10), 3, sh(2021, 4, 28, 9)),
        (sh(2021, 4, 24, 19), 3, sh(2021, 4, 28, 9)),
        # A start given in another zone is counted on Shanghai's calendar.
        # 23:00 on 7 Oct in New York is 11:00 on 8 Oct in Shanghai, so the count starts from the 8th.
        (datetime(2021, 10, 7, 23, tzinfo=ZoneInfo("America/New_York")), 1, sh(2021, 10, 9, 11)),
        # n = 0 only moves into working hours.
        (sh(2021, 4, 13, 1, 52), 0, sh(2021, 4, 13, 9)),
        (sh(2021, 4, 13, 12), 0, sh(2021, 4, 13, 12)),
        (sh(2021, 10, 1, 12), 0, sh(2021, 10, 8, 9)),
        # Beyond chinese_calendar (2027): `holidays` rules, no crash.
        (sh(2026, 12, 31, 10), 1, sh(2027, 1, 4, 10)),
        (sh(2027, 9, 30, 10), 1, sh(2027, 10, 6, 10)),
    ],
)
def test_add_business_days_cn(start: datetime, n: int, expected: datetime) -> None:
    result = CN.add_business_days(start, n)
    assert result == expected
    assert result.utcoffset() is not None and result.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "n", "local_expected"),
    [
        # Fri 26 Mar 2021 is CET (+01:00), Mon 29 Mar CEST (+02:00): 10:00 stays 10:00 on the wall clock.
        (datetime(2021, 3, 26, 10, tzinfo=BERLIN), 1, datetime(2021, 3, 29, 10, tzinfo=BERLIN)),
        # And back again in October (CEST → CET).
        (datetime(2021, 10, 29, 16, tzinfo=BERLIN), 1, datetime(2021, 11, 1, 16, tzinfo=BERLIN)),
        # Saturday morning of a DST weekend, before opening, lands on Monday's opening in summer time.
        (datetime(2021, 3, 27, 7, tzinfo=BERLIN), 0, datetime(2021, 3, 29, 9, tzinfo=BERLIN)),
        # Region "none": 1 Oct is an ordinary Friday.
        (datetime(2021, 9, 30, 10, tzinfo=BERLIN), 1, datetime(2021, 10, 1, 10, tzinfo=BERLIN)),
    ],
)
def test_add_business_days_keeps_local_time_across_dst(
    start: datetime, n: int, local_expected: datetime
) -> None:
    result = PLAIN_BERLIN.add_business_days(start, n)
    assert result == local_expected
    assert result.astimezone(BERLIN).time() == local_expected.time()


def test_dst_change_shows_in_utc() -> None:
    before = PLAIN_BERLIN.add_business_days(datetime(2021, 3, 26, 10, tzinfo=BERLIN), 0)
    after = PLAIN_BERLIN.add_business_days(datetime(2021, 3, 26, 10, tzinfo=BERLIN), 1)
    assert (before.hour, after.hour) == (9, 8)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (sh(2021, 4, 13, 8, 59), sh(2021, 4, 13, 9)),
        (sh(2021, 4, 13, 9), sh(2021, 4, 13, 9)),
        (sh(2021, 4, 13, 14, 30), sh(2021, 4, 13, 14, 30)),
        (sh(2021, 4, 13, 18), sh(2021, 4, 14, 9)),
        (sh(2021, 4, 30, 19), sh(2021, 5, 6, 9)),  # evening before the Labour Day break
        (sh(2021, 10, 9, 10), sh(2021, 10, 9, 10)),  # in hours on a make-up Saturday
        (sh(2021, 10, 10, 10), sh(2021, 10, 11, 9)),  # Sunday after it
        (datetime(2021, 4, 13, 2, tzinfo=UTC), sh(2021, 4, 13, 10)),  # UTC in, judged in Shanghai
    ],
)
def test_into_working_hours(instant: datetime, expected: datetime) -> None:
    result = CN.into_working_hours(instant)
    assert result == expected
    assert result.tzinfo is UTC


def test_overrides_win_over_both_libraries() -> None:
    holidays, workdays = parse_overrides(OVERRIDES_2027)
    cal = BusinessCalendar(
        zone=SH,
        opening=NINE,
        closing=SIX_PM,
        extra_holidays=holidays | {date(2021, 4, 13)},  # a chinese_calendar workday
        extra_workdays=workdays | {date(2021, 10, 1)},  # a chinese_calendar holiday
    )
    assert not cal.is_workday(date(2021, 4, 13))
    assert cal.is_workday(date(2021, 10, 1))
    assert cal.is_workday(date(2027, 2, 7))  # Sunday; `holidays` says Spring Festival
    assert cal.is_workday(date(2027, 2, 20))  # Saturday
    assert not cal.is_workday(date(2027, 2, 11))  # a Thursday `holidays` calls a workday
    assert CN.is_workday(date(2027, 2, 11)) and not CN.is_workday(date(2027, 2, 7))
    # From a Spring Festival day: silence starts on the override's make-up Sunday, and its 11th is off.
    assert cal.add_business_days(sh(2027, 2, 5, 10), 0) == sh(2027, 2, 7, 9)
    assert cal.add_business_days(sh(2027, 2, 5, 10), 1) == sh(2027, 2, 12, 9)
    assert cal.add_business_days(sh(2027, 2, 7, 10), 1) == sh(2027, 2, 12, 10)


def test_overrides_apply_to_region_none() -> None:
    cal = BusinessCalendar(
        zone=BERLIN,
        opening=NINE,
        closing=SIX_PM,
        region="none",
        extra_holidays=frozenset({date(2021, 12, 24)}),
    )
    assert not cal.is_workday(date(2021, 12, 24))


@pytest.mark.parametrize(
    ("text", "expected_holidays", "expected_workdays"),
    [
        ("", frozenset(), frozenset()),
        ('holidays = ["2027-01-01"]', frozenset({date(2027, 1, 1)}), frozenset()),
        ("workdays = [2027-02-07]", frozenset(), frozenset({date(2027, 2, 7)})),
        (
            OVERRIDES_2027,
            frozenset({date(2027, 1, 1), date(2027, 2, 11)}),
            frozenset({date(2027, 2, 7), date(2027, 2, 20)}),
        ),
        ('holidays = ["2027-01-01", "2027-01-01"]', frozenset({date(2027, 1, 1)}), frozenset()),
    ],
)
def test_parse_overrides(
    text: str, expected_holidays: frozenset[date], expected_workdays: frozenset[date]
) -> None:
    assert parse_overrides(text) == (expected_holidays, expected_workdays)


@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        ("holidays = [", "not valid TOML"),
        ('holiday = ["2027-01-01"]', "unknown key 'holiday'"),
        ('holidays = "2027-01-01"', "holidays: expected a list"),
        ('holidays = ["2027-1-1"]', "holidays[0]"),
        ('workdays = ["2027-01-01", "20270102"]', "workdays[1]"),
        ('holidays = ["2027-02-30"]', "'2027-02-30'"),
        ("holidays = [20270101]", "holidays[0]"),
        ("holidays = [2027-01-01T09:00:00]", "holidays[0]"),
        ('holidays = ["2027-01-01"]\nworkdays = ["2027-01-01"]', "2027-01-01 listed in both"),
    ],
)
def test_parse_overrides_rejects_bad_input(text: str, message_part: str) -> None:
    with pytest.raises(ValueError, match="holiday overrides") as excinfo:
        parse_overrides(text)
    message = str(excinfo.value)
    assert message_part in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("year", "extra", "expected"),
    [
        (2021, frozenset(), True),
        (2026, frozenset(), True),
        (2027, frozenset(), False),
        (2027, frozenset({date(2027, 10, 1)}), True),
        (2028, frozenset({date(2027, 10, 1)}), False),
    ],
)
def test_has_published_data(year: int, extra: frozenset[date], expected: bool) -> None:
    cal = BusinessCalendar(zone=SH, opening=NINE, closing=SIX_PM, extra_holidays=extra)
    assert cal.has_published_data(year) is expected


def test_coverage_warning_names_the_missing_year() -> None:
    warning = CN.coverage_warning(date(2026, 11, 25))
    assert warning is not None
    assert "2027" in warning and "2026" not in warning
    assert "holiday_overrides" in warning
    assert "\n" not in warning


def test_coverage_warning_names_this_year_too() -> None:
    warning = CN.coverage_warning(date(2027, 3, 1))
    assert warning is not None and "2027 and 2028" in warning


@pytest.mark.parametrize(
    ("cal", "today"),
    [
        (
            BusinessCalendar(
                zone=SH, opening=NINE, closing=SIX_PM, extra_workdays=parse_overrides(OVERRIDES_2027)[1]
            ),
            date(2026, 11, 25),
        ),
        (PLAIN_BERLIN, date(2026, 11, 25)),
        (CN, date(2024, 6, 1)),
    ],
)
def test_coverage_warning_silent(cal: BusinessCalendar, today: date) -> None:
    assert cal.coverage_warning(today) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"region": "US"},
        {"opening": time(18), "closing": time(9)},
        {"opening": time(9, tzinfo=UTC)},
        {"extra_holidays": frozenset({date(2027, 1, 1)}), "extra_workdays": frozenset({date(2027, 1, 1)})},
    ],
)
def test_invalid_calendar_is_rejected(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"zone": SH, "opening": NINE, "closing": SIX_PM, **kwargs}
    with pytest.raises(ValueError):
        BusinessCalendar(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: CN.add_business_days(datetime(2021, 4, 13, 10), 1), ValueError),  # naive
        (lambda: CN.add_business_days(sh(2021, 4, 13, 10), -1), ValueError),
        (lambda: CN.into_working_hours(datetime(2021, 4, 13, 10)), ValueError),
        (lambda: CN.is_workday(sh(2021, 4, 13, 10)), TypeError),
    ],
)
def test_misuse_is_loud(call: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_calendar_is_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        CN.region = "none"  # type: ignore[misc]
    assert hash(CN) == hash(BusinessCalendar(zone=SH, opening=NINE, closing=SIX_PM))
