"""Rating by destination: rates, time bands, rate decks and rate plans (issue 13).

A destination is a prefix of E.164 digits ("" matches every number). A deck maps prefixes to
rates; a rate plan is decks in priority order. The rate of a call is found once, when the
session is admitted, and charged for the whole session: a price scheduled to start later does
not change a session that started before it.

Rules of this file:
- Pure: stdlib only, no clock, no I/O. Every lookup takes ``now`` (aware) and the account's
  time zone; bands are matched on the wall clock there, so they follow DST.
- Rates are never edited in place: each has an ``effective_from`` instant, and the one in
  force for a prefix and band is the latest that is not after ``now``.
- Lookup order: the plan's decks by priority; in a deck, the longest prefix of the number that
  has a rate in force now; for that prefix a rate of a band that contains the local time wins
  over the all-day rate (band ""). A prefix whose only rates are for other bands (or not in
  force yet) does not match, and shorter prefixes are tried.
- Money is integer micro-units; a rate's ``tariff`` is the core ``Tariff`` that prices its time
  (minimum and increment as ``ocs.core.rating`` bills them), so grants and charges reuse one
  arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple

from ocs.core.model import ServiceUnit, Tariff, Usage
from ocs.core.rating import affordable_units, usage_charge

MAX_PREFIX_DIGITS = 15  # E.164: a whole number is at most 15 digits
MINUTES_PER_DAY = 24 * 60

# ISO weekday numbers (Monday 1 ... Sunday 7), as PostgreSQL's isodow and date.isoweekday().
WEEKDAYS = range(1, 8)


class RateError(ValueError):
    """A rate, band or deck that cannot be used (the message says which value and why)."""


def valid_prefix(prefix: str) -> bool:
    """A destination prefix: 0 to 15 ASCII digits."""
    return len(prefix) <= MAX_PREFIX_DIGITS and (
        prefix == "" or (prefix.isascii() and prefix.isdigit())
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """One price of one destination, from ``effective_from`` on.

    ``price_per_minute`` and ``connection_fee`` are micro-units; time is billed in
    ``increment_s`` steps with at least ``minimum_s`` (60/6: ``minimum_s=60, increment_s=6``).
    ``band`` names the deck's time band the rate is for ("" all day). Rates carry no prefix, so
    the many prefixes that share a price share one object.
    """

    price_per_minute: int
    minimum_s: int = 0
    increment_s: int = 1
    connection_fee: int = 0
    effective_from: datetime
    band: str = ""
    tariff: Tariff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.effective_from.tzinfo is None or self.effective_from.utcoffset() is None:
            raise RateError(f"effective_from must be timezone-aware, got {self.effective_from!r}")
        for name in ("price_per_minute", "minimum_s", "connection_fee"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise RateError(f"{name} must be an int >= 0, got {value!r}")
        if type(self.increment_s) is not int or self.increment_s < 1:
            raise RateError(f"increment_s must be an int >= 1, got {self.increment_s!r}")
        object.__setattr__(
            self,
            "tariff",
            Tariff(
                price_per_minute=self.price_per_minute,
                billing_increment_s=self.increment_s,
                minimum_s=self.minimum_s,
                connection_fee=self.connection_fee,
            ),
        )

    @classmethod
    def from_tariff(cls, tariff: Tariff, effective_from: datetime) -> Rate:
        """The per-account tariff as a rate (the simple plan: one rate for the prefix "")."""
        return cls(
            price_per_minute=tariff.price_per_minute,
            minimum_s=tariff.minimum_s,
            increment_s=tariff.billing_increment_s,
            connection_fee=tariff.connection_fee,
            effective_from=effective_from,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeBand:
    """A named part of the week (peak, off-peak ...) on the account's wall clock.

    It starts at ``start_minute`` (minutes after midnight) on each of ``weekdays`` (ISO:
    Monday 1 ... Sunday 7) and ends at ``end_minute``; an end at or before the start crosses
    midnight into the next day (Mon-Fri 20:00-08:00 includes Saturday 07:59, not Monday 07:59).
    ``start_minute == end_minute`` is the whole day.
    """

    name: str
    weekdays: frozenset[int]
    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not self.name:
            raise RateError("a time band needs a name (the all-day band is the empty name)")
        if not self.weekdays or not self.weekdays <= set(WEEKDAYS):
            raise RateError(f"band {self.name}: weekdays must be ISO 1 (Monday) to 7 (Sunday)")
        for label, minute in (("start", self.start_minute), ("end", self.end_minute)):
            if type(minute) is not int or not 0 <= minute <= MINUTES_PER_DAY:
                raise RateError(f"band {self.name}: {label} must be 00:00 to 24:00")

    def contains(self, weekday: int, minute: int) -> bool:
        """Whether local ``weekday`` (ISO) at ``minute`` after midnight is in the band."""
        start, end = self.start_minute, self.end_minute
        if start < end:
            return weekday in self.weekdays and start <= minute < end
        if start == end:
            return weekday in self.weekdays
        # Crosses midnight: the evening part on a listed day, the morning part the day after.
        if minute >= start:
            return weekday in self.weekdays
        return minute < end and (weekday - 1 or 7) in self.weekdays


def active_bands(bands: Iterable[TimeBand], now: datetime, zone: tzinfo) -> frozenset[str]:
    """The names of the bands that contain ``now`` on the wall clock of ``zone``."""
    local = now.astimezone(zone)
    weekday, minute = local.isoweekday(), local.hour * 60 + local.minute
    return frozenset(band.name for band in bands if band.contains(weekday, minute))


class RateMatch(NamedTuple):
    """The rate that prices a call, and why: which plan, deck, prefix.

    ``tariff`` is what prices the session: the rate's, or for an account without a rate plan
    its own tariff (``plan_id``/``deck_id`` None). A named tuple, not a dataclass: one is made
    per admission, and a tuple is built in a third of the time.
    """

    rate: Rate
    prefix: str
    tariff: Tariff
    plan_id: int | None = None
    deck_id: int | None = None
    deck_name: str = ""


def _in_force(versions: tuple[Rate, ...], now: datetime, bands: frozenset[str]) -> Rate | None:
    """From one prefix's rates (newest ``effective_from`` first): the latest in force at
    ``now`` of an active band, else the latest in force of the all-day band, else None."""
    all_day: Rate | None = None
    for rate in versions:
        if rate.effective_from > now:
            continue
        if rate.band:
            if rate.band in bands:
                return rate
        elif all_day is None:
            all_day = rate
            if not bands:
                return rate
    return all_day


class RateDeckBuilder:
    """Builds a ``RateDeck`` in steps, so that a caller with an event loop can build a deck of
    a million prefixes without holding the loop for the whole of it: ``add_all`` a batch of
    rows at a time, then run ``finish_steps()`` to the end (it yields every ``step`` prefixes),
    then ``RateDeck.from_builder``."""

    def __init__(self, *, deck_id: int | None, name: str, bands: Iterable[TimeBand] = ()) -> None:
        self.deck_id = deck_id
        self.name = name
        self.bands = tuple(bands)
        self._band_names = {band.name for band in self.bands}
        if len(self._band_names) != len(self.bands):
            raise RateError(f"deck {name}: two time bands have the same name")
        self._grouped: dict[str, list[Rate]] = {}
        self.index: dict[str, tuple[Rate, ...]] | None = None

    def add_all(self, rates: Iterable[tuple[str, Rate]]) -> None:
        grouped, names, name = self._grouped, self._band_names, self.name
        for prefix, rate in rates:
            if not valid_prefix(prefix):
                raise RateError(f"deck {name}: {prefix!r} is not a prefix of 0 to 15 digits")
            if rate.band and rate.band not in names:
                raise RateError(
                    f"deck {name}: prefix {prefix!r} names an unknown band {rate.band!r}"
                )
            found = grouped.get(prefix)
            if found is None:
                grouped[prefix] = [rate]
            else:
                found.append(rate)

    def finish_steps(self, step: int = 50_000) -> Iterator[None]:
        """Sort each prefix's rates newest first and share equal tuples; yields every
        ``step`` prefixes."""
        shared: dict[tuple[Rate, ...], tuple[Rate, ...]] = {}
        index: dict[str, tuple[Rate, ...]] = {}
        for count, (prefix, found) in enumerate(self._grouped.items(), 1):
            if len(found) > 1:
                found.sort(key=_newest_first)
            versions = tuple(found)
            index[prefix] = shared.setdefault(versions, versions)
            if count % step == 0:
                yield
        self._grouped = {}
        self.index = index


class RateDeck:
    """Prefix → rates of one deck, for longest-prefix lookup.

    One dictionary from the prefix string to its rates (a tuple, newest first) and the prefix
    lengths present, longest first: a lookup probes at most one slice per length present
    (15 at worst), each a dictionary hit or miss. Equal rate tuples are shared between prefixes
    (a deck has far fewer distinct prices than prefixes). Immutable once built.
    """

    __slots__ = ("_index", "_lengths", "bands", "deck_id", "name")

    deck_id: int | None
    name: str
    bands: tuple[TimeBand, ...]
    _index: dict[str, tuple[Rate, ...]]
    _lengths: tuple[int, ...]

    def __init__(
        self,
        *,
        deck_id: int | None,
        name: str,
        rates: Iterable[tuple[str, Rate]],
        bands: Iterable[TimeBand] = (),
    ) -> None:
        builder = RateDeckBuilder(deck_id=deck_id, name=name, bands=bands)
        builder.add_all(rates)
        for _ in builder.finish_steps():
            pass
        self._adopt(builder)

    @classmethod
    def from_builder(cls, builder: RateDeckBuilder) -> RateDeck:
        """The deck a finished builder made (see ``RateDeckBuilder.finish_steps``)."""
        deck = object.__new__(cls)
        deck._adopt(builder)
        return deck

    def _adopt(self, builder: RateDeckBuilder) -> None:
        if builder.index is None:
            raise RuntimeError("the builder is not finished: run finish_steps() to the end")
        self.deck_id = builder.deck_id
        self.name = builder.name
        self.bands = builder.bands
        self._index = builder.index
        self._lengths = tuple(sorted({len(p) for p in builder.index}, reverse=True))

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, number: str, now: datetime, zone: tzinfo) -> tuple[str, Rate] | None:
        """The longest prefix of ``number`` with a rate in force at ``now``, and that rate."""
        bands = active_bands(self.bands, now, zone) if self.bands else frozenset()
        index = self._index
        size = len(number)
        for length in self._lengths:
            if length > size:
                continue
            prefix = number[:length]
            versions = index.get(prefix)
            if versions is not None:
                if len(versions) == 1:  # the common case, inline: one all-day rate
                    rate = versions[0]
                    if not rate.band and rate.effective_from <= now:
                        return prefix, rate
                in_force = _in_force(versions, now, bands)
                if in_force is not None:
                    return prefix, in_force
        return None

    def rates_of(self, prefix: str) -> tuple[Rate, ...]:
        """Every rate of exactly ``prefix``, newest first (for explanations)."""
        return self._index.get(prefix, ())


def _newest_first(rate: Rate) -> tuple[float, str]:
    return (-rate.effective_from.timestamp(), rate.band)


@dataclass(frozen=True, slots=True, kw_only=True)
class RatePlan:
    """A named set of decks, tried in order (``decks[0]`` first): the first deck with a rate
    for the number prices the call. ``currency`` is ISO 4217; an account uses only plans in
    its own currency (the database enforces it)."""

    plan_id: int | None
    name: str
    currency: str
    decks: tuple[RateDeck, ...]

    def lookup(self, number: str, now: datetime, zone: tzinfo) -> RateMatch | None:
        """The rate for a call to ``number`` (normalised digits) starting at ``now``."""
        for deck in self.decks:
            found = deck.lookup(number, now, zone)
            if found is not None:
                prefix, rate = found
                return RateMatch(rate, prefix, rate.tariff, self.plan_id, deck.deck_id, deck.name)
        return None

    @property
    def prefix_count(self) -> int:
        return sum(len(deck) for deck in self.decks)


def tariff_plan(tariff: Tariff, *, name: str = "tariff", currency: str = "XXX") -> RatePlan:
    """The per-account tariff as a rate plan: one deck, one all-day rate for the prefix ""."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    deck = RateDeck(deck_id=None, name=name, rates=[("", Rate.from_tariff(tariff, epoch))])
    return RatePlan(plan_id=None, name=name, currency=currency, decks=(deck,))


# --- grants and charges at a rate ------------------------------------------------------------


def grant_seconds(rate: Rate, available: int, cap_s: int, *, new_session: bool = True) -> int:
    """The seconds ``available`` micro-units buy at ``rate``, at most ``cap_s``: whole
    increments, 0 when the credit cannot pay the minimum (a new session pays the connection
    fee first)."""
    budget = available - (rate.connection_fee if new_session else 0)
    return affordable_units(rate.tariff, ServiceUnit.TIME, budget, cap_s)


def charge(rate: Rate, seconds: int, *, include_connection_fee: bool = True) -> int:
    """Micro-units for a call of ``seconds`` at ``rate``: billed time (minimum, increments,
    rounded up to the micro-unit) plus the connection fee once; 0 s costs nothing."""
    return usage_charge(
        rate.tariff, Usage(seconds=seconds), include_connection_fee=include_connection_fee
    )


def next_rate_change(deck: RateDeck, prefix: str, now: datetime) -> datetime | None:
    """The next instant after ``now`` at which a rate of ``prefix`` comes into force."""
    later = [r.effective_from for r in deck.rates_of(prefix) if r.effective_from > now]
    return min(later) if later else None
