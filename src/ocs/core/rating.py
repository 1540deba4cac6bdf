"""Rating: what usage costs, and what an amount of credit buys, at a tariff.

Pure integer arithmetic in micro-units. Charges round up to the micro-unit (the operator
never undercharges by a rounding); grants round down (a grant never costs more than the
credit that bought it).
"""

from ocs.core.model import ServiceUnit, Tariff, Usage

BYTES_PER_MB = 1_000_000


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def billed_seconds(tariff: Tariff, seconds: int) -> int:
    """Seconds billed for a session of ``seconds``: rounded up to the billing increment,
    at least the minimum. A session of 0 s is billed 0 s (an unanswered call is free)."""
    if seconds <= 0:
        return 0
    step = tariff.billing_increment_s
    return max(tariff.minimum_s, _ceil_div(seconds, step) * step)


def time_charge(tariff: Tariff, seconds: int) -> int:
    """Micro-units for ``seconds`` of time, without the connection fee."""
    return _ceil_div(tariff.price_per_minute * billed_seconds(tariff, seconds), 60)


def volume_charge(tariff: Tariff, octets: int) -> int:
    """Micro-units for ``octets`` bytes, without the connection fee."""
    if octets <= 0:
        return 0
    return _ceil_div(tariff.price_per_mb * octets, BYTES_PER_MB)


def event_charge(tariff: Tariff, events: int) -> int:
    return tariff.price_per_event * max(events, 0)


def usage_charge(tariff: Tariff, usage: Usage, *, include_connection_fee: bool = True) -> int:
    """Micro-units for a session's whole usage. The connection fee is charged once, and only
    when something was used; pass ``include_connection_fee=False`` for a later slice of a
    session that was already charged it."""
    if usage.is_empty:
        return 0
    fee = tariff.connection_fee if include_connection_fee else 0
    return (
        fee
        + time_charge(tariff, usage.seconds)
        + volume_charge(tariff, usage.octets)
        + event_charge(tariff, usage.events)
    )


def affordable_units(tariff: Tariff, unit: ServiceUnit, budget: int, cap: int) -> int:
    """The most seconds, bytes or events that ``budget`` micro-units pay for, at most ``cap``.

    Time grants are whole billing increments and are 0 when the budget cannot pay the
    minimum billed duration. A free unit buys ``cap``.
    """
    if budget < 0:
        return 0
    if unit is ServiceUnit.TIME:
        if tariff.price_per_minute == 0:
            return cap
        seconds = budget * 60 // tariff.price_per_minute
        step = tariff.billing_increment_s
        seconds = min(seconds, cap) // step * step
        if seconds < tariff.minimum_s:
            # The minimum is billed anyway: grant it only if it is paid for.
            return tariff.minimum_s if time_charge(tariff, tariff.minimum_s) <= budget else 0
        return seconds
    if unit is ServiceUnit.VOLUME:
        if tariff.price_per_mb == 0:
            return cap
        return min(budget * BYTES_PER_MB // tariff.price_per_mb, cap)
    if tariff.price_per_event == 0:
        return cap
    return min(budget // tariff.price_per_event, cap)
