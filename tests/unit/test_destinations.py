"""Rating by destination (issue 13): longest prefix, effective dates, time bands across
midnight and DST in the account's zone, grants and charges exact to the micro-unit."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ocs.core import parse_amount
from ocs.core.currency import CurrencyError, format_money, parse_currency
from ocs.core.destinations import (
    Rate,
    RateDeck,
    RateError,
    RatePlan,
    TimeBand,
    active_bands,
    charge,
    grant_seconds,
    next_rate_change,
    tariff_plan,
)
from ocs.core.identity import DialPlan, IdentityError, normalize_destination
from ocs.core.model import Tariff

T0 = datetime(2027, 3, 1, tzinfo=UTC)
ZURICH = ZoneInfo("Europe/Zurich")
NEW_YORK = ZoneInfo("America/New_York")


def rate(price: str, minimum: int = 0, increment: int = 1, fee: str = "0", **kw: object) -> Rate:
    return Rate(
        price_per_minute=parse_amount(price),
        minimum_s=minimum,
        increment_s=increment,
        connection_fee=parse_amount(fee),
        effective_from=kw.pop("effective_from", T0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


WORLD = RateDeck(
    deck_id=1,
    name="world",
    rates=[
        ("", rate("0.50")),
        ("1", rate("0.01")),
        ("44", rate("0.02")),
        ("447", rate("0.10")),
        ("4477", rate("0.12")),
        ("44770", rate("0.15")),
        ("41", rate("0.03")),
        ("4179", rate("0.20")),
    ],
)


# --- longest prefix ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "prefix", "price"),
    [
        ("447700900123", "44770", "0.15"),
        ("447710900123", "4477", "0.12"),
        ("447600900123", "447", "0.10"),
        ("442071234567", "44", "0.02"),
        ("41791234567", "4179", "0.20"),
        ("41441234567", "41", "0.03"),
        ("12125551234", "1", "0.01"),
        ("861012345678", "", "0.50"),  # only the catch-all prices China
        ("4", "", "0.50"),  # shorter than every prefix but the empty one
        ("44", "44", "0.02"),  # the number is exactly a prefix
        ("", "", "0.50"),  # no called number: the catch-all
    ],
)
def test_longest_prefix_wins(number: str, prefix: str, price: str) -> None:
    found = WORLD.lookup(number, T0, UTC)
    assert found is not None
    assert found[0] == prefix
    assert found[1].price_per_minute == parse_amount(price)


def test_no_prefix_matches_without_a_catch_all() -> None:
    deck = RateDeck(deck_id=2, name="uk", rates=[("44", rate("0.02")), ("447", rate("0.1"))])
    assert deck.lookup("4915112345678", T0, UTC) is None
    assert deck.lookup("4", T0, UTC) is None
    assert deck.lookup("", T0, UTC) is None


def test_plan_tries_decks_in_priority_order() -> None:
    promo = RateDeck(deck_id=7, name="promo", rates=[("4179", rate("0.05"))])
    plan = RatePlan(plan_id=3, name="retail", currency="CHF", decks=(promo, WORLD))
    match = plan.lookup("41791234567", T0, UTC)
    assert match is not None
    assert (match.deck_id, match.deck_name, match.prefix) == (7, "promo", "4179")
    assert match.tariff.price_per_minute == parse_amount("0.05")
    # Not in the promo deck: the next deck prices it, by its own longest prefix.
    match = plan.lookup("447700900123", T0, UTC)
    assert match is not None
    assert (match.deck_id, match.prefix, match.plan_id) == (1, "44770", 3)
    # The promo deck's longer prefix does not hide the base deck for other numbers.
    assert plan.prefix_count == len(promo) + len(WORLD) == 9


def test_plan_without_a_matching_rate_gives_none() -> None:
    uk = RateDeck(deck_id=2, name="uk", rates=[("44", rate("0.02"))])
    plan = RatePlan(plan_id=1, name="uk-only", currency="GBP", decks=(uk,))
    assert plan.lookup("12125551234", T0, UTC) is None


def test_tariff_is_the_plan_with_the_empty_prefix() -> None:
    tariff = Tariff(
        price_per_minute=parse_amount("0.06"),
        minimum_s=60,
        billing_increment_s=6,
        connection_fee=parse_amount("0.10"),
    )
    plan = tariff_plan(tariff)
    for number in ("41791234567", "1", ""):
        match = plan.lookup(number, T0, UTC)
        assert match is not None
        assert match.prefix == ""
        assert match.tariff == tariff


@pytest.mark.parametrize("bad", ["+41", "4a", "1234567890123456", "٤٤"])
def test_a_prefix_must_be_up_to_15_ascii_digits(bad: str) -> None:
    with pytest.raises(RateError, match="not a prefix"):
        RateDeck(deck_id=1, name="d", rates=[(bad, rate("0.01"))])


def test_shared_rates_are_one_object() -> None:
    shared = rate("0.01")
    deck = RateDeck(deck_id=1, name="d", rates=[(str(p), shared) for p in range(100, 200)])
    assert len({id(deck.rates_of(str(p))) for p in range(100, 200)}) == 1


# --- effective dates ---------------------------------------------------------------------------

CHANGE = T0 + timedelta(days=10)
SCHEDULED = RateDeck(
    deck_id=1,
    name="scheduled",
    rates=[
        ("41", rate("0.03")),
        ("41", rate("0.04", effective_from=CHANGE)),
        ("4179", rate("0.20", effective_from=CHANGE)),  # a new destination, not yet in force
        ("", rate("0.50")),
    ],
)


@pytest.mark.parametrize(
    ("at", "prefix", "price"),
    [
        (T0 - timedelta(seconds=1), None, None),  # before anything is in force
        (T0, "41", "0.03"),  # in force from its instant on
        (CHANGE - timedelta(microseconds=1), "41", "0.03"),
        (CHANGE, "4179", "0.20"),  # the longer prefix starts existing at the change
        (CHANGE + timedelta(days=365), "4179", "0.20"),
    ],
)
def test_the_rate_in_force_is_the_latest_not_after_now(
    at: datetime, prefix: str | None, price: str | None
) -> None:
    found = SCHEDULED.lookup("41791234567", at, UTC)
    if prefix is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0], found[1].price_per_minute) == (prefix, parse_amount(price or "0"))


def test_scheduled_change_of_an_existing_prefix() -> None:
    before = SCHEDULED.lookup("41441234567", CHANGE - timedelta(seconds=1), UTC)
    after = SCHEDULED.lookup("41441234567", CHANGE, UTC)
    assert before is not None and after is not None
    assert before[1].price_per_minute == parse_amount("0.03")
    assert after[1].price_per_minute == parse_amount("0.04")
    assert next_rate_change(SCHEDULED, "41", T0) == CHANGE
    assert next_rate_change(SCHEDULED, "41", CHANGE) is None


def test_a_session_keeps_the_rate_of_its_start_across_a_price_change() -> None:
    """The price is the one in force when the call started: the match made at admission
    is what the call is charged at, whatever the deck says later."""
    started = CHANGE - timedelta(minutes=5)
    match = SCHEDULED.lookup("41441234567", started, UTC)
    assert match is not None
    # The call lasts 10 minutes, across the change at CHANGE.
    assert charge(match[1], 600) == parse_amount("0.30")  # 10 min at 0.03, not 0.04
    later = SCHEDULED.lookup("41441234567", started + timedelta(minutes=10), UTC)
    assert later is not None and charge(later[1], 600) == parse_amount("0.40")


# --- time bands ----------------------------------------------------------------------------

WEEKDAYS_ = frozenset({1, 2, 3, 4, 5})
PEAK = TimeBand(name="peak", weekdays=WEEKDAYS_, start_minute=8 * 60, end_minute=20 * 60)
# Mon-Fri 20:00 to 08:00 the next morning: crosses midnight.
NIGHT = TimeBand(name="night", weekdays=WEEKDAYS_, start_minute=20 * 60, end_minute=8 * 60)
BANDED = RateDeck(
    deck_id=4,
    name="banded",
    bands=(PEAK, NIGHT),
    rates=[
        ("41", rate("0.10", band="peak")),
        ("41", rate("0.02", band="night")),
        ("41", rate("0.05")),  # weekends, and whatever no band covers
    ],
)


def zurich(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZURICH)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("local", "price", "why"),
    [
        (zurich(2027, 3, 3, 12, 0), "0.10", "Wednesday noon: peak"),
        (zurich(2027, 3, 3, 7, 59), "0.02", "Wednesday 07:59: Tuesday's night band"),
        (zurich(2027, 3, 3, 8, 0), "0.10", "08:00 starts peak"),
        (zurich(2027, 3, 3, 19, 59), "0.10", "19:59 still peak"),
        (zurich(2027, 3, 3, 20, 0), "0.02", "20:00 starts night"),
        (zurich(2027, 3, 3, 23, 59), "0.02", "before midnight"),
        (zurich(2027, 3, 4, 0, 0), "0.02", "after midnight, the same night"),
        (zurich(2027, 3, 1, 3, 0), "0.05", "Monday 03:00: Sunday has no night band"),
        (zurich(2027, 3, 6, 7, 59), "0.02", "Saturday 07:59: Friday's night goes on"),
        (zurich(2027, 3, 6, 8, 0), "0.05", "Saturday 08:00: the weekend's all-day rate"),
        (zurich(2027, 3, 7, 12, 0), "0.05", "Sunday noon"),
    ],
)
def test_bands_across_midnight_in_the_accounts_zone(local: datetime, price: str, why: str) -> None:
    found = BANDED.lookup("41441234567", local.astimezone(UTC), ZURICH)
    assert found is not None, why
    assert found[1].price_per_minute == parse_amount(price), why


def test_bands_follow_the_wall_clock_across_dst() -> None:
    # Zurich: 2027-03-28 02:00 CET → 03:00 CEST (Sunday); 2027-10-31 03:00 CEST → 02:00 CET.
    # The same UTC hour is 07:30 local in winter and 08:30 in summer (Tuesdays, so the early
    # hours belong to Monday's night band).
    winter = datetime(2027, 3, 23, 6, 30, tzinfo=UTC)  # 07:30 CET: night
    summer = datetime(2027, 3, 30, 6, 30, tzinfo=UTC)  # 08:30 CEST: peak
    assert active_bands(BANDED.bands, winter, ZURICH) == {"night"}
    assert active_bands(BANDED.bands, summer, ZURICH) == {"peak"}
    assert active_bands(BANDED.bands, winter + timedelta(hours=1), ZURICH) == {"peak"}
    assert active_bands(BANDED.bands, summer - timedelta(hours=1), ZURICH) == {"night"}
    # The same instant in UTC says otherwise: the account's zone decides.
    assert active_bands(BANDED.bands, summer, UTC) == {"night"}
    found = BANDED.lookup("41441234567", summer, ZURICH)
    assert found is not None and found[1].price_per_minute == parse_amount("0.10")


def test_a_band_that_ends_in_the_hour_dst_skips_or_repeats() -> None:
    # New York, Sunday 2027-03-14: 02:00 EST jumps to 03:00 EDT. A band 01:00-02:30 on
    # Sundays: 01:59 EST is in it, the next minute (03:00 EDT) is not.
    small_hours = TimeBand(name="small", weekdays=frozenset({7}), start_minute=60, end_minute=150)
    before = datetime(2027, 3, 14, 6, 59, tzinfo=UTC)  # 01:59 EST
    after = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert active_bands([small_hours], before, NEW_YORK) == {"small"}
    assert active_bands([small_hours], after, NEW_YORK) == set()
    # Sunday 2027-11-07: 01:00-02:00 happens twice (EDT, then EST); both are in the band.
    first = datetime(2027, 11, 7, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2027, 11, 7, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert active_bands([small_hours], first, NEW_YORK) == {"small"}
    assert active_bands([small_hours], second, NEW_YORK) == {"small"}


def test_a_banded_prefix_without_a_rate_for_now_falls_back_to_a_shorter_prefix() -> None:
    deck = RateDeck(
        deck_id=5,
        name="d",
        bands=(PEAK,),
        rates=[("4179", rate("0.30", band="peak")), ("41", rate("0.04"))],
    )
    saturday = zurich(2027, 3, 6, 12, 0).astimezone(UTC)
    wednesday = zurich(2027, 3, 3, 12, 0).astimezone(UTC)
    assert deck.lookup("41791234567", wednesday, ZURICH) == ("4179", rate("0.30", band="peak"))
    assert deck.lookup("41791234567", saturday, ZURICH) == ("41", rate("0.04"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "weekdays": frozenset({1}), "start_minute": 0, "end_minute": 60}, "name"),
        ({"name": "x", "weekdays": frozenset(), "start_minute": 0, "end_minute": 60}, "weekdays"),
        ({"name": "x", "weekdays": frozenset({8}), "start_minute": 0, "end_minute": 60}, "ISO"),
        ({"name": "x", "weekdays": frozenset({1}), "start_minute": -1, "end_minute": 60}, "start"),
        ({"name": "x", "weekdays": frozenset({1}), "start_minute": 0, "end_minute": 1441}, "end"),
    ],
)
def test_bad_bands_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RateError, match=message):
        TimeBand(**kwargs)  # type: ignore[arg-type]


def test_a_rate_for_an_unknown_band_is_refused() -> None:
    with pytest.raises(RateError, match="unknown band 'evening'"):
        RateDeck(deck_id=1, name="d", rates=[("41", rate("0.1", band="evening"))])
    with pytest.raises(RateError, match="same name"):
        RateDeck(deck_id=1, name="d", rates=[], bands=(PEAK, PEAK))


def test_whole_day_band() -> None:
    sunday = TimeBand(name="sunday", weekdays=frozenset({7}), start_minute=0, end_minute=0)
    assert sunday.contains(7, 0) and sunday.contains(7, 1439)
    assert not sunday.contains(1, 0) and not sunday.contains(6, 1439)


# --- grants and charges ------------------------------------------------------------------------

# 0.06 per minute = 1000 micro-units a second.
SIXTY_SIX = rate("0.06", minimum=60, increment=6)
PER_SECOND = rate("0.06", minimum=1, increment=1)
THIRTY_SIX = rate("0.06", minimum=30, increment=6)
SIXTY_SIXTY = rate("0.06", minimum=60, increment=60)


@pytest.mark.parametrize(
    ("the_rate", "seconds", "amount"),
    [
        (SIXTY_SIX, 0, "0"),
        (SIXTY_SIX, 1, "0.06"),  # the minimum: 60 s
        (SIXTY_SIX, 59, "0.06"),
        (SIXTY_SIX, 60, "0.06"),
        (SIXTY_SIX, 61, "0.066"),  # 66 s
        (SIXTY_SIX, 3601, "3.606"),  # 3606 s
        (PER_SECOND, 0, "0"),
        (PER_SECOND, 1, "0.001"),
        (PER_SECOND, 59, "0.059"),
        (PER_SECOND, 60, "0.06"),
        (PER_SECOND, 61, "0.061"),
        (PER_SECOND, 3601, "3.601"),
        (THIRTY_SIX, 1, "0.03"),
        (THIRTY_SIX, 31, "0.036"),
        (SIXTY_SIXTY, 61, "0.12"),
        (SIXTY_SIXTY, 3601, "3.66"),
    ],
)
def test_charge_by_minimum_and_increment(the_rate: Rate, seconds: int, amount: str) -> None:
    assert charge(the_rate, seconds) == parse_amount(amount)


@pytest.mark.parametrize(
    ("price", "increment", "seconds", "micros"),
    [
        # 0.013 per minute is 216.66... micro-units a second: rounded up once, on the total.
        ("0.013", 1, 1, 217),
        ("0.013", 1, 59, 12_784),  # 12783.33 → 12784
        ("0.013", 1, 60, 13_000),
        ("0.013", 1, 61, 13_217),  # 13216.67 → 13217
        ("0.013", 1, 3601, 780_217),  # 780216.67 → 780217
        ("0.013", 6, 61, 14_300),  # 66 s exactly
        ("0.000001", 1, 1, 1),  # a micro-unit a minute: never free
        ("1.999999", 1, 3601, 120_033_274),  # 120033273.32 → ...274
    ],
)
def test_money_is_exact_to_the_micro_unit(
    price: str, increment: int, seconds: int, micros: int
) -> None:
    assert charge(rate(price, increment=increment), seconds) == micros


def test_connection_fee_is_charged_once_and_only_for_a_used_call() -> None:
    with_fee = rate("0.06", minimum=60, increment=6, fee="0.25")
    assert charge(with_fee, 0) == 0
    assert charge(with_fee, 1) == parse_amount("0.31")
    assert charge(with_fee, 61, include_connection_fee=False) == parse_amount("0.066")


@pytest.mark.parametrize(
    ("the_rate", "available", "cap", "granted"),
    [
        (SIXTY_SIX, parse_amount("1.00"), 3600, 996),  # 1000 s bought, whole 6 s steps
        (PER_SECOND, parse_amount("1.00"), 3600, 1000),
        (SIXTY_SIX, parse_amount("0.06"), 3600, 60),  # exactly the minimum
        (SIXTY_SIX, parse_amount("0.059999"), 3600, 0),  # cannot pay the minimum
        (PER_SECOND, parse_amount("0.000999"), 3600, 0),  # not one second
        (PER_SECOND, parse_amount("100"), 3600, 3600),  # the cap
        (SIXTY_SIXTY, parse_amount("0.119999"), 3600, 60),  # one minute, not two
        (rate("0"), 1, 3600, 3600),  # a free destination: the cap
    ],
)
def test_grant_is_what_available_buys(
    the_rate: Rate, available: int, cap: int, granted: int
) -> None:
    assert grant_seconds(the_rate, available, cap) == granted
    # Never more than the credit: the grant's charge fits in what was available.
    assert charge(the_rate, granted) <= available or the_rate.price_per_minute == 0


def test_grant_pays_the_connection_fee_first() -> None:
    with_fee = rate("0.06", minimum=1, increment=1, fee="0.50")
    assert grant_seconds(with_fee, parse_amount("1.00"), 3600) == 500
    assert grant_seconds(with_fee, parse_amount("0.50"), 3600) == 0
    assert grant_seconds(with_fee, parse_amount("0.50"), 3600, new_session=False) == 500


@pytest.mark.parametrize(
    "kwargs",
    [
        {"price_per_minute": -1},
        {"price_per_minute": 1.5},
        {"increment_s": 0},
        {"minimum_s": -1},
        {"connection_fee": -1},
        {"effective_from": datetime(2027, 1, 1)},  # naive
    ],
)
def test_bad_rates_are_refused(kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"price_per_minute": 1, "effective_from": T0}
    values.update(kwargs)
    with pytest.raises(RateError):
        Rate(**values)  # type: ignore[arg-type]


# --- called numbers ----------------------------------------------------------------------------

SWISS = DialPlan(country_code="41", international_prefix="00", national_prefix="0")
NANP = DialPlan(country_code="1", international_prefix="011", national_prefix="1")


@pytest.mark.parametrize(
    ("raw", "plan", "digits"),
    [
        ("+41 44 668 18 00", SWISS, "41446681800"),
        ("0041446681800", SWISS, "41446681800"),
        ("0446681800", SWISS, "41446681800"),  # national: the client's country code
        ("41446681800", SWISS, "41446681800"),  # already international digits
        ("sip:+41446681800@gw.example.net;user=phone", SWISS, "41446681800"),
        ("<sip:0446681800@10.0.0.1:5060>", SWISS, "41446681800"),
        ("tel:+1-212-555-1234", SWISS, "12125551234"),
        ("011 44 20 7946 0000", NANP, "442079460000"),
        ("1 (212) 555-1234", NANP, "12125551234"),
        ("+44 20 7946 0000", NANP, "442079460000"),
        ("00442079460000", DialPlan(), "442079460000"),  # the default plan knows 00 and +
        ("442079460000", DialPlan(international_prefix=""), "442079460000"),
    ],
)
def test_called_numbers_are_normalised(raw: str, plan: DialPlan, digits: str) -> None:
    assert normalize_destination(raw, plan) == digits


@pytest.mark.parametrize("raw", ["", "+", "*100#", "sip:alice@example.net", "+1234567890123456"])
def test_bad_called_numbers_are_refused(raw: str) -> None:
    with pytest.raises(IdentityError, match="not a called number"):
        normalize_destination(raw, SWISS)


@pytest.mark.parametrize(
    "kwargs",
    [{"country_code": "4x"}, {"international_prefix": "00000"}, {"national_prefix": "0"}],
)
def test_bad_dial_plans_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(IdentityError):
        DialPlan(**kwargs)


# --- currencies --------------------------------------------------------------------------------


def test_currencies() -> None:
    assert parse_currency(" eur ") == "EUR"
    with pytest.raises(CurrencyError, match="ISO 4217"):
        parse_currency("EURO")
    with pytest.raises(CurrencyError):
        parse_currency("ABC")
    assert format_money(parse_amount("1.5"), "EUR") == "1.50 EUR"
    assert format_money(parse_amount("150"), "JPY") == "150 JPY"
    assert format_money(parse_amount("1.5"), "BHD") == "1.500 BHD"
    assert format_money(parse_amount("0.0001"), "USD") == "0.0001 USD"


def test_a_called_number_is_normalised_by_its_clients_dial_plan_only_when_asked() -> None:
    """The fronts hand the pipeline what the client sent and the client's dial plan;
    ``called_number`` normalises it (for an account with a rate plan)."""
    from ocs.charging.pipeline import CalledNumber, called_number
    from ocs.core.identity import DialPlan

    swiss = DialPlan(country_code="41", national_prefix="0")
    assert called_number(CalledNumber("079 123 45 67", swiss)) == "41791234567"
    assert called_number(CalledNumber("0044 20 7946 0000", swiss)) == "442079460000"
    assert called_number(CalledNumber("+1 212 555 0100", swiss)) == "12125550100"
    assert called_number("0041791234567") == "41791234567"  # a plain string: international
    assert called_number(CalledNumber("*123#", swiss)) == ""  # not a number: no destination
    assert called_number(None) == ""
