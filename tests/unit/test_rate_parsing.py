"""What people type for rate plans (``ocs rates band``, ``ocs rates show --at``, the API's
``/rates`` query): weekdays, times of day, instants in a zone, time zones. No database."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from ocs.admin.parsing import (
    InvalidRequest,
    describe_weekdays,
    parse_moment,
    parse_time_of_day,
    parse_time_zone,
    parse_weekdays,
)

ZURICH = ZoneInfo("Europe/Zurich")


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("mon-fri", [1, 2, 3, 4, 5]),
        ("Monday-Friday", [1, 2, 3, 4, 5]),
        ("sat,sun", [6, 7]),
        ("6,7", [6, 7]),
        ("fri-mon", [1, 5, 6, 7]),  # across the week's end
        ("wed", [3]),
        ("mon,mon-tue", [1, 2]),
    ],
)
def test_weekdays(text: str, days: list[int]) -> None:
    assert parse_weekdays(text) == days


@pytest.mark.parametrize("text", ["", "0", "8", "mon-", "funday", "1-9", "mon;tue", "monxyz"])
def test_bad_weekdays_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a weekday"):
        parse_weekdays(text)


@pytest.mark.parametrize(
    ("days", "text"),
    [([1, 2, 3, 4, 5], "Mon-Fri"), ([6, 7], "Sat,Sun"), ([1, 3], "Mon,Wed"), ([2], "Tue")],
)
def test_weekdays_described(days: list[int], text: str) -> None:
    assert describe_weekdays(days) == text


def test_times_of_day() -> None:
    assert parse_time_of_day("08:00", what="--from") == time(8)
    assert parse_time_of_day(" 19:30 ", what="--to") == time(19, 30)
    assert parse_time_of_day("24:00", what="--to") == time(0)  # the end of the day
    for bad in ("25:00", "8h", "", "noon"):
        with pytest.raises(InvalidRequest, match=f"--to {bad!r} is not a time of day"):
            parse_time_of_day(bad, what="--to")


def test_moments_are_read_in_the_zone_unless_they_carry_an_offset() -> None:
    assert parse_moment("2027-04-01", ZURICH, what="at") == datetime(2027, 4, 1, tzinfo=ZURICH)
    assert parse_moment("2027-04-01T08:00", ZURICH, what="at") == datetime(
        2027, 4, 1, 6, tzinfo=UTC
    )
    given = parse_moment("2027-04-01T08:00-05:00", ZURICH, what="at")
    assert given == datetime(2027, 4, 1, 13, tzinfo=UTC)
    assert given.utcoffset() == timedelta(hours=-5)
    assert parse_moment("2027-04-01T08:00Z", ZURICH, what="at").tzinfo == UTC
    for bad in ("next week", "2027-13-01", "01.04.2027", ""):
        with pytest.raises(InvalidRequest, match="is not a date"):
            parse_moment(bad, ZURICH, what="--at")


def test_time_zones() -> None:
    assert parse_time_zone("Europe/Zurich") == ZURICH
    # "Europe" is a directory of the zone database: refused like any unknown name.
    for bad in ("Mars/Base", "Europe", "", "../etc/passwd", "a\x00b"):
        with pytest.raises(InvalidRequest, match="unknown time zone"):
            parse_time_zone(bad)
