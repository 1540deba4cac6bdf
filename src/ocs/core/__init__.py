"""The credit core: pure rules, no I/O, no clock, no asyncio, stdlib only.

Everything takes ``now`` and returns values. Adapters (RADIUS, Diameter, the CLI) build a
``SessionRequest``, fetch an ``AccountSnapshot`` and act on the ``CreditDecision``.
"""

from ocs.core.credit import (
    available_credit,
    billing_period_start,
    continue_session,
    decide,
    effective_credit_limit,
    figure_changes_at,
    next_billing_period_start,
    unbilled_in_current_period,
)
from ocs.core.model import (
    AccountSnapshot,
    AccountStatus,
    CreditDecision,
    GrantLimits,
    LimitBasis,
    RateLimit,
    RefusalReason,
    ServiceUnit,
    SessionRequest,
    Tariff,
    TemporaryIncrease,
    Usage,
)
from ocs.core.money import MICROS_PER_UNIT, AmountError, format_amount, parse_amount, to_decimal
from ocs.core.rating import affordable_units, billed_seconds, usage_charge

__all__ = [
    "MICROS_PER_UNIT",
    "AccountSnapshot",
    "AccountStatus",
    "AmountError",
    "CreditDecision",
    "GrantLimits",
    "LimitBasis",
    "RateLimit",
    "RefusalReason",
    "ServiceUnit",
    "SessionRequest",
    "Tariff",
    "TemporaryIncrease",
    "Usage",
    "affordable_units",
    "available_credit",
    "billed_seconds",
    "billing_period_start",
    "continue_session",
    "decide",
    "effective_credit_limit",
    "figure_changes_at",
    "format_amount",
    "next_billing_period_start",
    "parse_amount",
    "to_decimal",
    "unbilled_in_current_period",
    "usage_charge",
]
