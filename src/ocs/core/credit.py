"""The credit rules (DESIGN §1): available credit and the new-session decision.

Rules of this file:
- Every function takes ``now`` and returns values; nothing here reads a clock, sleeps,
  logs or performs I/O.
- ``available > 0`` (strictly) is the credit test for a new session. Sessions already running
  are never refused by the credit check (ConnexCS: "calls in progress continue to flow") unless
  the caller asks for strict mode.
- Checks run in a fixed order so the reason given is the most useful one: status, credit,
  concurrency, setup rate.
"""

from datetime import date, datetime, timedelta, tzinfo

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
)
from ocs.core.rating import affordable_units


def billing_period_start(now: datetime, snapshot: AccountSnapshot) -> date:
    """The first day of ``now``'s month in the account's time zone."""
    return billing_period_start_in(now, snapshot.time_zone)


def billing_period_start_in(now: datetime, zone: tzinfo) -> date:
    """The first day of ``now``'s month in ``zone``."""
    return now.astimezone(zone).date().replace(day=1)


def next_billing_period_start(now: datetime, snapshot: AccountSnapshot) -> datetime:
    """The instant (aware) at which the next monthly period starts in the account's zone."""
    local = now.astimezone(snapshot.time_zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=snapshot.time_zone)


def effective_credit_limit(snapshot: AccountSnapshot, now: datetime) -> int:
    """Permanent limit plus the temporary increase while it is valid (micro-units)."""
    terms = snapshot.terms
    increase = terms.temporary_increase
    if increase is None:
        return terms.credit_limit
    return terms.credit_limit + increase.amount_at(terms.credit_limit, now)


def unbilled_in_current_period(snapshot: AccountSnapshot, now: datetime) -> int:
    """The unbilled usage that counts at ``now``: 0 once the snapshot's period is over."""
    period = snapshot.unbilled_period
    if period is None or period < billing_period_start(now, snapshot):
        return 0
    return snapshot.unbilled


def available_credit(snapshot: AccountSnapshot, now: datetime, reserved: int = 0) -> int:
    """Credit a new session could spend at ``now`` (micro-units; may be negative).

    balance basis:  balance + effective_limit - min_balance - reserved
    unbilled basis: effective_limit - unbilled_in_current_period - reserved
    """
    limit = effective_credit_limit(snapshot, now)
    if snapshot.limit_basis is LimitBasis.UNBILLED:
        return limit - unbilled_in_current_period(snapshot, now) - reserved
    return snapshot.balance + limit - snapshot.min_balance - reserved


def figure_changes_at(snapshot: AccountSnapshot, now: datetime) -> datetime | None:
    """The next instant the same snapshot gives a different available figure, if any."""
    terms = snapshot.terms
    if terms.temporary_increase is None and terms.limit_basis is LimitBasis.BALANCE:
        return None  # the common case, tested first: this runs for every decision
    candidates: list[datetime] = []
    increase = snapshot.temporary_increase
    if increase is not None and now < increase.valid_until:
        candidates.append(increase.valid_until)
    if snapshot.limit_basis is LimitBasis.UNBILLED and snapshot.unbilled:
        candidates.append(next_billing_period_start(now, snapshot))
    return min(candidates) if candidates else None


def largest_grant(limits: GrantLimits, unit: ServiceUnit) -> int:
    """The largest grant of ``unit`` the limits allow (here, compiled, rather than a method of
    the interpreted ``GrantLimits``: it is asked on every admission)."""
    if unit is ServiceUnit.TIME:
        return limits.max_time_s
    if unit is ServiceUnit.VOLUME:
        return limits.max_volume_bytes
    return limits.max_events


def _cap_for(unit: ServiceUnit, limits: GrantLimits) -> tuple[int, int]:
    if unit is ServiceUnit.TIME:
        minimum = max(limits.min_time_s, 1)
    elif unit is ServiceUnit.VOLUME:
        minimum = max(limits.min_volume_bytes, 1)
    else:
        minimum = 1
    return largest_grant(limits, unit), minimum


def _refuse(
    reason: RefusalReason,
    request: SessionRequest,
    available: int,
    limit: int,
    changes: datetime | None,
) -> CreditDecision:
    return CreditDecision(
        admitted=False,
        reason=reason,
        unit=request.unit,
        granted_units=0,
        available=available,
        effective_limit=limit,
        changes_at=changes,
    )


def _grant(
    request: SessionRequest,
    granted: int,
    available: int,
    limit: int,
    changes: datetime | None,
    *,
    volume_quota: int | None = None,
    rate_limit: RateLimit | None = None,
) -> CreditDecision:
    return CreditDecision(
        admitted=True,
        reason=None,
        unit=request.unit,
        granted_units=granted,
        available=available,
        effective_limit=limit,
        changes_at=changes,
        volume_quota_bytes=volume_quota,
        rate_limit=rate_limit,
    )


def decide(
    snapshot: AccountSnapshot,
    request: SessionRequest,
    now: datetime,
    limits: GrantLimits,
    *,
    tariff: Tariff | None = None,
) -> CreditDecision:
    """Admit or refuse a **new** session, and size its grant.

    Admitted iff the account is active, ``available > 0``, the credit buys at least the
    minimum grant (and one billing step), and the concurrency and setup-rate caps allow it.
    ``tariff``: what prices this session (the rate for its destination), when not the
    account's own tariff.
    """
    terms = snapshot.terms
    if tariff is None:
        tariff = terms.tariff
    limit = effective_credit_limit(snapshot, now)
    # available_credit(snapshot, now, reserved), with the limit computed once
    if terms.limit_basis is LimitBasis.UNBILLED:
        available = limit - unbilled_in_current_period(snapshot, now) - request.reserved
    else:
        available = snapshot.balance + limit - terms.min_balance - request.reserved
    changes = figure_changes_at(snapshot, now)

    if terms.status is AccountStatus.CLOSED:
        return _refuse(RefusalReason.CLOSED, request, available, limit, changes)
    if terms.status is AccountStatus.BLOCKED:
        return _refuse(RefusalReason.BLOCKED, request, available, limit, changes)
    if available <= 0:
        return _refuse(RefusalReason.INSUFFICIENT_CREDIT, request, available, limit, changes)

    cap, minimum = _cap_for(request.unit, limits)
    if request.requested_units:
        cap = min(cap, max(request.requested_units, minimum))
    # A new session pays the connection fee up front.
    budget = available - tariff.connection_fee
    granted = affordable_units(tariff, request.unit, budget, cap)
    if granted < minimum:
        return _refuse(RefusalReason.INSUFFICIENT_CREDIT, request, available, limit, changes)

    if terms.max_sessions is not None and request.active_sessions >= terms.max_sessions:
        return _refuse(RefusalReason.TOO_MANY_SESSIONS, request, available, limit, changes)
    if terms.max_setups_per_s is not None and request.setups_last_s >= terms.max_setups_per_s:
        return _refuse(RefusalReason.SETUP_RATE_EXCEEDED, request, available, limit, changes)

    increase = terms.temporary_increase
    if increase is not None and now < increase.valid_until and request.unit is ServiceUnit.TIME:
        # Do not grant time past the instant the temporary increase ends: the client
        # comes back then and is decided again on the lower limit.
        seconds_left = (increase.valid_until - now) // timedelta(seconds=1)
        if seconds_left < granted:
            granted = max(seconds_left, minimum)

    volume_quota: int | None = None
    if request.unit is ServiceUnit.TIME and terms.tariff.price_per_mb > 0:
        # The same credit, spent on bytes instead: the NAS stops whichever runs out first.
        volume_quota = affordable_units(
            terms.tariff, ServiceUnit.VOLUME, budget, limits.max_volume_bytes
        )

    return _grant(
        request,
        granted,
        available,
        limit,
        changes,
        volume_quota=volume_quota,
        rate_limit=terms.rate_limit,
    )


def overdraft_units(tariff: Tariff, unit: ServiceUnit, available: int, limits: GrantLimits) -> int:
    """What a running session may be granted, in all, once its credit buys nothing: the
    configured overdraft for the unit, no more than ``overdraft_amount`` beyond the
    available credit buys when that is set."""
    if unit is ServiceUnit.TIME:
        allowance = limits.overdraft_s
    elif unit is ServiceUnit.VOLUME:
        allowance = limits.overdraft_volume_bytes
    else:
        allowance = limits.overdraft_events
    if limits.overdraft_amount is not None and allowance:
        budget = max(available, 0) + limits.overdraft_amount
        allowance = affordable_units(tariff, unit, budget, allowance)
    return allowance


def continue_session(
    snapshot: AccountSnapshot,
    request: SessionRequest,
    now: datetime,
    limits: GrantLimits,
    *,
    strict: bool = False,
    overdraft_used: int = 0,
    tariff: Tariff | None = None,
) -> CreditDecision:
    """The next grant for a session that is already running.

    Not strict (the default): never refused while credit buys something; once it buys
    nothing, the session may go on within the overdraft (``overdraft_units``, less the
    ``overdraft_used`` units it was already granted that way), and is refused with
    ``INSUFFICIENT_CREDIT`` when that is spent, so the adapter ends it (Final-Unit-Indication).
    Strict: no overdraft; refused as soon as the credit buys nothing. ``tariff``: the rate
    the session runs at, when not the account's own tariff.
    """
    if tariff is None:
        tariff = snapshot.tariff
    limit = effective_credit_limit(snapshot, now)
    available = available_credit(snapshot, now, request.reserved)
    changes = figure_changes_at(snapshot, now)
    cap, _ = _cap_for(request.unit, limits)
    if request.requested_units:
        cap = min(cap, request.requested_units)
    granted = affordable_units(tariff, request.unit, available, cap)
    if granted == 0:
        if strict:
            return _refuse(RefusalReason.INSUFFICIENT_CREDIT, request, available, limit, changes)
        allowance = overdraft_units(tariff, request.unit, available, limits) - overdraft_used
        granted = max(min(cap, allowance), 0)
        if granted == 0:
            return _refuse(RefusalReason.INSUFFICIENT_CREDIT, request, available, limit, changes)
    return _grant(request, granted, available, limit, changes)
