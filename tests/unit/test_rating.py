"""Rating and grants: integer micro-units, rounding in the operator's favour, never a float."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.core import (
    AccountSnapshot,
    GrantLimits,
    ServiceUnit,
    SessionRequest,
    Tariff,
    Usage,
    affordable_units,
    billed_seconds,
    decide,
    parse_amount,
    usage_charge,
)
from ocs.core.rating import time_charge, volume_charge

PER_SECOND = Tariff(price_per_minute=parse_amount("0.06"))
SIXTY_SIX = Tariff(price_per_minute=parse_amount("0.06"), minimum_s=60, billing_increment_s=6)


@pytest.mark.parametrize(
    ("tariff", "seconds", "billed"),
    [
        (PER_SECOND, 0, 0),
        (PER_SECOND, 1, 1),
        (PER_SECOND, 61, 61),
        (SIXTY_SIX, 1, 60),
        (SIXTY_SIX, 60, 60),
        (SIXTY_SIX, 61, 66),
        (SIXTY_SIX, 66, 66),
        (SIXTY_SIX, 67, 72),
    ],
)
def test_billed_seconds(tariff: Tariff, seconds: int, billed: int) -> None:
    assert billed_seconds(tariff, seconds) == billed


def test_time_charge_per_minute_price_billed_per_second() -> None:
    assert time_charge(PER_SECOND, 1000) == parse_amount("1.00")
    assert time_charge(PER_SECOND, 1) == parse_amount("0.001")
    # 0.05 per minute is 833.33... micro-units a second: rounded up, never down.
    odd = Tariff(price_per_minute=parse_amount("0.05"))
    assert time_charge(odd, 1) == 834
    assert time_charge(odd, 60) == parse_amount("0.05")


def test_volume_charge_per_megabyte_of_a_million_bytes() -> None:
    tariff = Tariff(price_per_mb=parse_amount("0.01"))
    assert volume_charge(tariff, 1_000_000) == parse_amount("0.01")
    assert volume_charge(tariff, 1) == 1  # 0.00000001 rounded up to a micro-unit
    assert volume_charge(tariff, 0) == 0


def test_usage_charge_adds_the_connection_fee_once_and_only_for_used_sessions() -> None:
    tariff = Tariff(
        price_per_minute=parse_amount("0.06"),
        connection_fee=parse_amount("0.10"),
        price_per_mb=parse_amount("0.01"),
        price_per_event=parse_amount("0.05"),
    )
    usage = Usage(seconds=100, octets=2_000_000, events=2)
    assert usage_charge(tariff, usage) == parse_amount("0.10") + parse_amount(
        "0.10"
    ) + parse_amount("0.02") + parse_amount("0.10")
    assert usage_charge(tariff, usage, include_connection_fee=False) == parse_amount("0.22")
    assert usage_charge(tariff, Usage()) == 0


def test_affordable_units_respects_increment_and_minimum() -> None:
    # 0.10 buys 100 s per second, but 60/6 billing grants whole 6 s steps: 96 s.
    assert affordable_units(SIXTY_SIX, ServiceUnit.TIME, parse_amount("0.10"), 3600) == 96
    # 0.059 cannot pay the 60 s minimum.
    assert affordable_units(SIXTY_SIX, ServiceUnit.TIME, parse_amount("0.059"), 3600) == 0
    assert affordable_units(SIXTY_SIX, ServiceUnit.TIME, parse_amount("0.06"), 3600) == 60
    assert affordable_units(PER_SECOND, ServiceUnit.TIME, -1, 3600) == 0


money = st.integers(min_value=0, max_value=10**12)
tariffs = st.builds(
    Tariff,
    price_per_minute=st.integers(min_value=1, max_value=10**8),
    billing_increment_s=st.integers(min_value=1, max_value=120),
    minimum_s=st.integers(min_value=0, max_value=300),
    price_per_mb=st.integers(min_value=1, max_value=10**8),
    connection_fee=st.integers(min_value=0, max_value=10**6),
    price_per_event=st.integers(min_value=1, max_value=10**7),
)


@given(tariff=tariffs, budget=money, cap=st.integers(min_value=1, max_value=10**9))
def test_a_grant_never_costs_more_than_the_budget(tariff: Tariff, budget: int, cap: int) -> None:
    seconds = affordable_units(tariff, ServiceUnit.TIME, budget, cap)
    assert 0 <= seconds <= max(cap, tariff.minimum_s)
    assert time_charge(tariff, seconds) <= budget
    octets = affordable_units(tariff, ServiceUnit.VOLUME, budget, cap)
    assert 0 <= octets <= cap
    assert volume_charge(tariff, octets) <= budget
    events = affordable_units(tariff, ServiceUnit.EVENT, budget, cap)
    assert events * tariff.price_per_event <= budget


@given(tariff=tariffs, balance=st.integers(min_value=-(10**9), max_value=10**10))
def test_an_admitted_session_can_pay_its_grant(tariff: Tariff, balance: int) -> None:
    snap = AccountSnapshot(account_id=1, name="p", balance=balance, tariff=tariff)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    decision = decide(snap, SessionRequest(), now, GrantLimits())
    if decision.admitted:
        cost = tariff.connection_fee + time_charge(tariff, decision.granted_units)
        assert cost <= decision.available
        assert decision.granted_units >= 1
    else:
        assert decision.granted_units == 0
