"""What people type, read into values: durations, instants, percentages, threshold lists,
time zones, weekdays and times of day.

Rules of this file:
- Pure functions: no database, no clock (``now`` is passed in). The CLI and the account API
  read the same syntax with the same messages.
- A bad value is an ``InvalidRequest`` whose message quotes it and says what is allowed.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ocs.core.money import AmountError, parse_amount


class InvalidRequest(Exception):
    """A request that is malformed before any data is looked at (the CLI's exit 2, the API's
    422); the message is for the person who asked."""


_DURATION = re.compile(r"(\d+)\s*([wdhm])")
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, or several (``1d12h``)."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise InvalidRequest(f"{text!r} is not a duration (expected e.g. 30d, 12h, 90m, 2w)")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_DURATION_UNITS[unit]: int(number)})
    return total


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    units = ((days, "day"), (hours, "hour"), (minutes, "minute"))
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in units if n]
    return " ".join(parts) or "0 minutes"


def parse_percent(text: str) -> Decimal:
    """``10%`` or ``12.5%`` as a Decimal percentage (0 to 10000)."""
    value = text.strip()
    if not value.endswith("%"):
        raise InvalidRequest(f"{text!r} is not a percentage (expected e.g. 10%)")
    try:
        percent = Decimal(value[:-1])
    except InvalidOperation:
        raise InvalidRequest(f"{text!r} is not a percentage") from None
    if not percent.is_finite() or percent < 0 or percent > 10000:
        raise InvalidRequest(f"{text!r}: expected a percentage from 0% to 10000%")
    if percent != percent.quantize(Decimal("0.01")):
        raise InvalidRequest(f"{text!r}: at most two decimals in a percentage")
    return percent


def percent_text(value: Decimal | None) -> str:
    """``Decimal('20.00')`` as ``20%``, ``Decimal('12.50')`` as ``12.5%``."""
    return "-" if value is None else f"{value.normalize():f}%"


def parse_money(text: str) -> int:
    """An amount (``10``, ``-5.25``, at most 6 decimals) in micro-units."""
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise InvalidRequest(str(exc)) from None


def amount_or_percent(text: str) -> tuple[int | None, Decimal | None]:
    """``50`` (an amount, micro-units) or ``10%`` (a percentage)."""
    if text.strip().endswith("%"):
        return None, parse_percent(text)
    return parse_money(text), None


def parse_thresholds(text: str) -> tuple[list[int], list[Decimal]]:
    """A comma-separated list of amounts and percentages (``50, 10, 20%``), as the seed's
    "several balance warning thresholds as comma-separated values"; ``""`` or ``none``: none."""
    if text.strip().lower() in ("", "none"):
        return [], []
    return split_thresholds(text.split(","), text)


def split_thresholds(items: list[str], whole: str | None = None) -> tuple[list[int], list[Decimal]]:
    """Amounts and percentages from a list of items (``["50", "20%"]``)."""
    amounts: list[int] = []
    percents: list[Decimal] = []
    for item in items:
        if not item.strip():
            shown = whole if whole is not None else ",".join(items)
            raise InvalidRequest(f"{shown!r}: an empty item in the list")
        amount, percent = amount_or_percent(item)
        if percent is not None:
            percents.append(percent)
        else:
            assert amount is not None
            amounts.append(amount)
    return amounts, percents


def parse_until(text: str, now: datetime, zone: tzinfo, *, what: str = "--until") -> datetime:
    """``+7d`` / ``+12h`` / ``+30m`` from now, an ISO date (00:00 of that day in ``zone``), or an
    ISO date-time (in ``zone`` unless it carries an offset)."""
    relative = re.fullmatch(r"\+?(\d+)([dhm])", text.strip())
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative[2]]
        return now + timedelta(**{unit: int(relative[1])})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"{what} {text!r}: expected +7d, +12h, a date (2026-12-31) or a date-time "
            "(2026-12-31T18:00, optionally with an offset)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def parse_every(text: str) -> int | None:
    """A prepaid period: ``month`` (None) or ``Nd`` / ``Nw`` (N days)."""
    if text.strip().lower() in ("month", "monthly", "1month"):
        return None
    duration = parse_duration(text)
    if duration.total_seconds() % 86_400 or duration.days < 1:
        raise InvalidRequest(f"--every {text!r}: expected 'month' or a whole number of days (30d)")
    return duration.days


def parse_instant(text: str, now: datetime, zone: tzinfo, *, what: str) -> datetime:
    """A past instant: ``-7d`` / ``7d`` / ``12h`` / ``30m`` ago, an ISO date (00:00 in ``zone``)
    or an ISO date-time (in ``zone`` unless it carries an offset)."""
    relative = re.fullmatch(r"-?(\d+)([dhm])", text.strip())
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative[2]]
        return now - timedelta(**{unit: int(relative[1])})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"{what} {text!r}: expected 7d (ago), a date (2026-12-01) or a date-time "
            "(2026-12-01T00:00, optionally with an offset)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def parse_moment(text: str, zone: tzinfo, *, what: str) -> datetime:
    """An ISO date (00:00 of that day in ``zone``) or date-time (in ``zone`` unless it carries
    an offset): ``2027-04-01``, ``2027-04-01T08:00``, ``2027-04-01T08:00+02:00``."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{what} {text!r} is not a date (2027-04-01) or date-time (2027-04-01T08:00[+02:00])"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def parse_time_zone(name: str) -> tzinfo:
    """An IANA time zone by name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        raise InvalidRequest(
            f"unknown time zone {name!r} (an IANA name such as Europe/Zurich)"
        ) from None


WEEKDAY_NAMES = ("", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # ISO: Monday is 1
_FULL_DAY_STEMS = {"mon": 1, "tues": 2, "wednes": 3, "thurs": 4, "fri": 5, "satur": 6, "sun": 7}


def parse_weekdays(text: str) -> list[int]:
    """``1-5``, ``mon-fri``, ``sat,sun``, ``6,7``, ``fri-mon``, ``monday-friday`` → sorted ISO
    weekdays."""
    names = {n.lower(): i for i, n in enumerate(WEEKDAY_NAMES) if n}
    names |= {n + "day": i for n, i in _FULL_DAY_STEMS.items()}

    def day(word: str) -> int:
        word = word.strip().lower()
        if word.isdigit() and 1 <= int(word) <= 7:
            return int(word)
        if word in names:
            return names[word]
        raise InvalidRequest(f"--days {text!r}: {word!r} is not a weekday (1-7 or mon..sun)")

    days: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.partition("-")
        if sep:
            a, b = day(first), day(last)
            days.update(range(a, b + 1) if a <= b else [*range(a, 8), *range(1, b + 1)])
        else:
            days.add(day(first))
    return sorted(days)


def describe_weekdays(days: list[int]) -> str:
    """``[1, 2, 3, 4, 5]`` as ``Mon-Fri``, ``[6, 7]`` as ``Sat,Sun``."""
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{WEEKDAY_NAMES[days[0]]}-{WEEKDAY_NAMES[days[-1]]}"
    return ",".join(WEEKDAY_NAMES[d] for d in days)


def parse_time_of_day(text: str, *, what: str) -> time:
    """``08:00``; ``24:00`` is the end of the day, which is its start: 00:00 (an end at or before
    a start crosses midnight, so ``08:00-24:00`` is the same band as ``08:00-00:00``)."""
    if text.strip() == "24:00":
        return time(0)
    try:
        return time.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"{what} {text!r} is not a time of day (HH:MM)") from None
