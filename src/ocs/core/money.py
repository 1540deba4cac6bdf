"""Money as integers of a fixed minor unit.

Every amount inside ocs is an ``int`` of micro-units (1e-6 of the account's currency).
``Decimal`` appears only here, where people type or read amounts. Floats never do.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000
_MICRO = Decimal("0.000001")


class AmountError(ValueError):
    """An amount as a person typed it cannot be used."""


def parse_amount(text: str | Decimal | int) -> int:
    """Parse a decimal amount such as ``"12.50"`` or ``"-5"`` into micro-units.

    More than six decimal places, non-numbers, NaN and infinities are refused rather
    than rounded: a typo should not silently become money.
    """
    if isinstance(text, bool):
        raise AmountError(f"{text!r} is not an amount")
    try:
        value = text if isinstance(text, Decimal) else Decimal(str(text).strip())
    except InvalidOperation:
        raise AmountError(f"{text!r} is not an amount (expected a decimal number)") from None
    if not value.is_finite():
        raise AmountError(f"{text!r} is not a finite amount")
    micros = value * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise AmountError(f"{text!r} has more than 6 decimal places")
    return int(micros)


def to_decimal(micros: int) -> Decimal:
    """Micro-units as an exact ``Decimal`` amount (for SQL ``numeric`` and display)."""
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(_MICRO, rounding=ROUND_HALF_EVEN)


def format_amount(micros: int, places: int = 2) -> str:
    """Micro-units for people: at least ``places`` decimals, more only when they matter.

    >>> format_amount(1_000_000)
    '1.00'
    >>> format_amount(-1_234_500)
    '-1.2345'
    """
    text = f"{to_decimal(micros):f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    frac = frac.ljust(places, "0")
    return f"{whole}.{frac}" if frac else whole
