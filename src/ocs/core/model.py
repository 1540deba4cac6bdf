"""The credit core's value types: account snapshots, requests, decisions.

All frozen, keyword-only, slotted, validated when built. Money is in micro-units
(see ``ocs.core.money``); instants are timezone-aware ``datetime`` objects; durations
are whole seconds; volumes are bytes.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from ocs.core.enums import REFUSAL_TEXT, AccountStatus, LimitBasis, RefusalReason, ServiceUnit
from ocs.core.trusted import trusted_replacer
from ocs.core.values import (
    CreditDecision,
    RateLimit,
    SessionRequest,
    Usage,
    refusal_text,
    require_int,
)

__all__ = [  # the enumerations are defined in ocs.core.enums (compiled) and used from here
    "FREE_TARIFF",
    "REFUSAL_TEXT",
    "AccountSnapshot",
    "AccountStatus",
    "AccountTerms",
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
    "refusal_text",
    "tariff_values",
]


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TemporaryIncrease:
    """Extra credit limit until ``valid_until`` (seeds 001, 002, 004).

    Exactly one of ``amount`` (micro-units) or ``percent_bp`` (basis points of a positive
    permanent credit limit: 10 % is 1000) is set. It counts while ``now < valid_until``.
    """

    valid_until: datetime
    amount: int | None = None
    percent_bp: int | None = None

    def __post_init__(self) -> None:
        _require_aware("valid_until", self.valid_until)
        if (self.amount is None) == (self.percent_bp is None):
            raise ValueError("a temporary increase is either an amount or a percentage")
        if self.amount is not None:
            require_int("amount", self.amount, minimum=0)
        if self.percent_bp is not None:
            require_int("percent_bp", self.percent_bp, minimum=0)

    def amount_at(self, credit_limit: int, now: datetime) -> int:
        """The extra limit in micro-units at ``now``; 0 from ``valid_until`` on."""
        if now >= self.valid_until:
            return 0
        if self.amount is not None:
            return self.amount
        assert self.percent_bp is not None
        # A percentage only applies to a positive permanent limit (seed 001).
        return credit_limit * self.percent_bp // 10_000 if credit_limit > 0 else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariff:
    """Prices in micro-units.

    Time is priced per minute and billed per second in ``billing_increment_s`` steps with a
    minimum billed duration of ``minimum_s`` ("60/6" is ``minimum_s=60, billing_increment_s=6``).
    Volume is priced per megabyte of 1,000,000 bytes and billed to the byte, rounded up to the
    micro-unit. ``connection_fee`` is charged once per session that used anything.
    """

    price_per_minute: int = 0
    billing_increment_s: int = 1
    minimum_s: int = 0
    price_per_mb: int = 0
    connection_fee: int = 0
    price_per_event: int = 0

    def __post_init__(self) -> None:
        require_int("price_per_minute", self.price_per_minute, minimum=0)
        require_int("billing_increment_s", self.billing_increment_s, minimum=1)
        require_int("minimum_s", self.minimum_s, minimum=0)
        require_int("price_per_mb", self.price_per_mb, minimum=0)
        require_int("connection_fee", self.connection_fee, minimum=0)
        require_int("price_per_event", self.price_per_event, minimum=0)


FREE_TARIFF = Tariff()


def tariff_values(tariff: Tariff) -> tuple[int, int, int, int, int, int]:
    """A tariff's prices in declaration order, as the store writes them in rows and the spool
    in its records (``Tariff(*values)`` reads them back)."""
    return (
        tariff.price_per_minute,
        tariff.billing_increment_s,
        tariff.minimum_s,
        tariff.price_per_mb,
        tariff.connection_fee,
        tariff.price_per_event,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountTerms:
    """Everything about an account but its identity and balance: status, limits, basis, caps,
    tariff. Many accounts have the same terms, so one object can serve them all (the cache
    holds a million accounts; see ``AccountSnapshot``)."""

    status: AccountStatus = AccountStatus.ACTIVE
    credit_limit: int = 0
    min_balance: int = 0
    limit_basis: LimitBasis = LimitBasis.BALANCE
    unbilled: int = 0
    unbilled_period: date | None = None
    time_zone: tzinfo = UTC
    temporary_increase: TemporaryIncrease | None = None
    max_sessions: int | None = None
    max_setups_per_s: int | None = None
    tariff: Tariff = field(default=FREE_TARIFF)
    rate_limit: RateLimit | None = None
    # The account's rate plan (its own, else its class's): calls are priced by destination
    # from it. None: every call is priced at ``tariff``.
    rate_plan_id: int | None = None

    def __post_init__(self) -> None:
        # One cheap test for the common case; the detailed checks only run to name the fault.
        if (
            type(self.credit_limit) is int
            and type(self.min_balance) is int
            and type(self.unbilled) is int
            and (
                self.max_sessions is None
                or (type(self.max_sessions) is int and self.max_sessions >= 0)
            )
            and (
                self.max_setups_per_s is None
                or (type(self.max_setups_per_s) is int and self.max_setups_per_s >= 0)
            )
            and type(self.status) is AccountStatus
            and type(self.limit_basis) is LimitBasis
            and (self.rate_plan_id is None or type(self.rate_plan_id) is int)
            and (self.rate_limit is None or type(self.rate_limit) is RateLimit)
        ):
            return
        require_int("credit_limit", self.credit_limit)
        require_int("min_balance", self.min_balance)
        require_int("unbilled", self.unbilled)
        if self.max_sessions is not None:
            require_int("max_sessions", self.max_sessions, minimum=0)
        if self.max_setups_per_s is not None:
            require_int("max_setups_per_s", self.max_setups_per_s, minimum=0)
        if not isinstance(self.status, AccountStatus):
            raise TypeError(f"status must be an AccountStatus, got {self.status!r}")
        if not isinstance(self.limit_basis, LimitBasis):
            raise TypeError(f"limit_basis must be a LimitBasis, got {self.limit_basis!r}")
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a RateLimit, got {self.rate_limit!r}")
        if self.rate_plan_id is not None:
            require_int("rate_plan_id", self.rate_plan_id, minimum=1)


_TERM_FIELDS = (
    "status",
    "credit_limit",
    "min_balance",
    "limit_basis",
    "unbilled",
    "unbilled_period",
    "time_zone",
    "temporary_increase",
    "max_sessions",
    "max_setups_per_s",
    "tariff",
    "rate_limit",
    "rate_plan_id",
)
_CHARGE_FIELDS = frozenset(("balance", "unbilled", "unbilled_period"))
_evolve_terms = trusted_replacer(AccountTerms)  # the rest of the terms is valid already


class AccountSnapshot:
    """What the core needs to know about one account, as loaded from the store.

    ``balance``: payments + credits + transfers in - refunds - transfers out - rated usage.
    ``credit_limit``: how far below zero the balance may go (0 prepaid, > 0 postpaid,
    < 0 prepaid with a buffer). ``unbilled`` is the rated usage of the monthly period that
    starts on ``unbilled_period`` (a first of month in ``time_zone``); it only counts while
    that period is the current one, so a new month starts from 0 without any reload.

    Immutable. Built with keywords like a dataclass; every setting is an attribute. Only
    ``account_id``, ``name`` and ``balance`` live on the object itself: the rest is an
    ``AccountTerms`` that accounts with equal settings share, which keeps a cached account
    near 64 bytes plus what the cache's dictionaries need.
    """

    __slots__ = ("account_id", "balance", "name", "terms")
    account_id: int
    name: str
    balance: int
    terms: AccountTerms

    def __init__(
        self,
        *,
        account_id: int,
        name: str,
        status: AccountStatus = AccountStatus.ACTIVE,
        balance: int = 0,
        credit_limit: int = 0,
        min_balance: int = 0,
        limit_basis: LimitBasis = LimitBasis.BALANCE,
        unbilled: int = 0,
        unbilled_period: date | None = None,
        time_zone: tzinfo = UTC,
        temporary_increase: TemporaryIncrease | None = None,
        max_sessions: int | None = None,
        max_setups_per_s: int | None = None,
        tariff: Tariff = FREE_TARIFF,
        rate_limit: RateLimit | None = None,
        rate_plan_id: int | None = None,
    ) -> None:
        require_int("account_id", account_id)
        require_int("balance", balance)
        terms = AccountTerms(
            status=status,
            credit_limit=credit_limit,
            min_balance=min_balance,
            limit_basis=limit_basis,
            unbilled=unbilled,
            unbilled_period=unbilled_period,
            time_zone=time_zone,
            temporary_increase=temporary_increase,
            max_sessions=max_sessions,
            max_setups_per_s=max_setups_per_s,
            tariff=tariff,
            rate_limit=rate_limit,
            rate_plan_id=rate_plan_id,
        )
        put = object.__setattr__
        put(self, "account_id", account_id)
        put(self, "name", name)
        put(self, "balance", balance)
        put(self, "terms", terms)

    @classmethod
    def trusted(
        cls, account_id: int, name: str, balance: int, terms: AccountTerms
    ) -> "AccountSnapshot":
        """A snapshot from values already known to be valid (the bulk loader, where the
        database's types and constraints vouch for them), sharing ``terms``: no validation."""
        snapshot = object.__new__(cls)
        put = object.__setattr__
        put(snapshot, "account_id", account_id)
        put(snapshot, "name", name)
        put(snapshot, "balance", balance)
        put(snapshot, "terms", terms)
        return snapshot

    def replace(self, **changes: Any) -> "AccountSnapshot":
        """A copy with some fields changed (as ``dataclasses.replace``)."""
        if changes.keys() <= _CHARGE_FIELDS:
            return self._charged(changes)
        values: dict[str, Any] = {
            "account_id": self.account_id,
            "name": self.name,
            "balance": self.balance,
        }
        values.update({f: getattr(self.terms, f) for f in _TERM_FIELDS})
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"AccountSnapshot has no field(s) {sorted(unknown)}")
        values.update(changes)
        return AccountSnapshot(**values)

    def _charged(self, changes: dict[str, Any]) -> "AccountSnapshot":
        """``replace`` of what charging changes (the balance; the unbilled amount and its
        period), done once per charged record in every process: the terms stay shared when
        the unbilled figures did not change, and are copied, not rebuilt, when they did."""
        balance = changes.get("balance", self.balance)
        require_int("balance", balance)
        terms = self.terms
        unbilled = changes.get("unbilled", terms.unbilled)
        period = changes.get("unbilled_period", terms.unbilled_period)
        if unbilled != terms.unbilled or period != terms.unbilled_period:
            require_int("unbilled", unbilled)
            terms = _evolve_terms(terms, unbilled=unbilled, unbilled_period=period)
        return AccountSnapshot.trusted(self.account_id, self.name, balance, terms)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AccountSnapshot is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AccountSnapshot is immutable (cannot delete {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountSnapshot):
            return NotImplemented
        return (self.account_id, self.name, self.balance, self.terms) == (
            other.account_id,
            other.name,
            other.balance,
            other.terms,
        )

    def __hash__(self) -> int:
        return hash((self.account_id, self.name, self.balance, self.terms))

    def __repr__(self) -> str:
        return (
            f"AccountSnapshot(account_id={self.account_id!r}, name={self.name!r}, "
            f"balance={self.balance!r}, terms={self.terms!r})"
        )

    # The terms, as attributes of the snapshot.
    @property
    def status(self) -> AccountStatus:
        return self.terms.status

    @property
    def credit_limit(self) -> int:
        return self.terms.credit_limit

    @property
    def min_balance(self) -> int:
        return self.terms.min_balance

    @property
    def limit_basis(self) -> LimitBasis:
        return self.terms.limit_basis

    @property
    def unbilled(self) -> int:
        return self.terms.unbilled

    @property
    def unbilled_period(self) -> date | None:
        return self.terms.unbilled_period

    @property
    def time_zone(self) -> tzinfo:
        return self.terms.time_zone

    @property
    def temporary_increase(self) -> TemporaryIncrease | None:
        return self.terms.temporary_increase

    @property
    def max_sessions(self) -> int | None:
        return self.terms.max_sessions

    @property
    def max_setups_per_s(self) -> int | None:
        return self.terms.max_setups_per_s

    @property
    def tariff(self) -> Tariff:
        return self.terms.tariff

    @property
    def rate_plan_id(self) -> int | None:
        return self.terms.rate_plan_id

    @property
    def rate_limit(self) -> RateLimit | None:
        return self.terms.rate_limit


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantLimits:
    """Configured bounds on a grant (``[grant]`` in the config file).

    A grant never exceeds the maximum; a new session whose credit buys less than the
    minimum (and never less than one billing step) is refused for insufficient credit.

    The overdraft bounds what a *running* session may still be granted once its account's
    credit buys nothing (calls in progress continue, but not for ever): in all, per session,
    at most ``overdraft_s`` seconds, ``overdraft_volume_bytes`` bytes or ``overdraft_events``
    events, and when ``overdraft_amount`` (micro-units) is set, no more than that amount
    below the available credit buys.
    """

    max_time_s: int = 3600
    min_time_s: int = 0
    max_volume_bytes: int = 100_000_000
    min_volume_bytes: int = 0
    max_events: int = 1000
    overdraft_s: int = 300
    overdraft_volume_bytes: int = 10_000_000
    overdraft_events: int = 0
    overdraft_amount: int | None = None

    def __post_init__(self) -> None:
        require_int("max_time_s", self.max_time_s, minimum=1)
        require_int("min_time_s", self.min_time_s, minimum=0)
        require_int("max_volume_bytes", self.max_volume_bytes, minimum=1)
        require_int("min_volume_bytes", self.min_volume_bytes, minimum=0)
        require_int("max_events", self.max_events, minimum=1)
        require_int("overdraft_s", self.overdraft_s, minimum=0)
        require_int("overdraft_volume_bytes", self.overdraft_volume_bytes, minimum=0)
        require_int("overdraft_events", self.overdraft_events, minimum=0)
        if self.overdraft_amount is not None:
            require_int("overdraft_amount", self.overdraft_amount, minimum=0)
        if self.min_time_s > self.max_time_s:
            raise ValueError("min_time_s must not exceed max_time_s")
        if self.min_volume_bytes > self.max_volume_bytes:
            raise ValueError("min_volume_bytes must not exceed max_volume_bytes")
