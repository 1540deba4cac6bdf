"""The credit core's value types: account snapshots, requests, decisions.

All frozen, keyword-only, slotted, validated when built. Money is in micro-units
(see ``ocs.core.money``); instants are timezone-aware ``datetime`` objects; durations
are whole seconds; volumes are bytes.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum


class AccountStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    CLOSED = "closed"


class LimitBasis(StrEnum):
    """What the credit limit is measured against (seed 002, B3Networks)."""

    BALANCE = "balance"  # the running balance, accumulated over all transactions
    UNBILLED = "unbilled"  # postpaid: usage not yet billed in the current monthly period


class ServiceUnit(StrEnum):
    TIME = "time"  # seconds
    VOLUME = "volume"  # bytes
    EVENT = "event"  # a count of events (SMS, MMS, API calls)


class RefusalReason(StrEnum):
    """Why a new session is refused. Adapters map these to wire codes and texts."""

    UNKNOWN_ACCOUNT = "unknown_account"
    INSUFFICIENT_CREDIT = "insufficient_credit"
    BLOCKED = "blocked"
    CLOSED = "closed"
    TOO_MANY_SESSIONS = "too_many_sessions"
    SETUP_RATE_EXCEEDED = "setup_rate_exceeded"
    # Not a rule of the account: the figures are too old to trust and policy says refuse.
    CREDIT_DATA_UNAVAILABLE = "credit_data_unavailable"


# What a subscriber or an operator reads (RADIUS Reply-Message, the CLI).
REFUSAL_TEXT: dict[RefusalReason, str] = {
    RefusalReason.UNKNOWN_ACCOUNT: "unknown account",
    RefusalReason.INSUFFICIENT_CREDIT: "insufficient credit",
    RefusalReason.BLOCKED: "account blocked",
    RefusalReason.CLOSED: "account closed",
    RefusalReason.TOO_MANY_SESSIONS: "too many sessions",
    RefusalReason.SETUP_RATE_EXCEEDED: "session setup rate exceeded",
    RefusalReason.CREDIT_DATA_UNAVAILABLE: "credit data unavailable",
}


def _require_int(name: str, value: object, *, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


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
            _require_int("amount", self.amount, minimum=0)
        if self.percent_bp is not None:
            _require_int("percent_bp", self.percent_bp, minimum=0)

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
        _require_int("price_per_minute", self.price_per_minute, minimum=0)
        _require_int("billing_increment_s", self.billing_increment_s, minimum=1)
        _require_int("minimum_s", self.minimum_s, minimum=0)
        _require_int("price_per_mb", self.price_per_mb, minimum=0)
        _require_int("connection_fee", self.connection_fee, minimum=0)
        _require_int("price_per_event", self.price_per_event, minimum=0)


FREE_TARIFF = Tariff()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSnapshot:
    """What the core needs to know about one account, as loaded from the store.

    ``balance``: payments + credits + transfers in - refunds - transfers out - rated usage.
    ``credit_limit``: how far below zero the balance may go (0 prepaid, > 0 postpaid,
    < 0 prepaid with a buffer). ``unbilled`` is the rated usage of the monthly period that
    starts on ``unbilled_period`` (a first of month in ``time_zone``); it only counts while
    that period is the current one, so a new month starts from 0 without any reload.
    """

    account_id: int
    name: str
    status: AccountStatus = AccountStatus.ACTIVE
    balance: int = 0
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

    def __post_init__(self) -> None:
        # One cheap test for the common case (a million snapshots load at start-up); the
        # detailed checks below only run to name what is wrong.
        if (
            type(self.account_id) is int
            and type(self.balance) is int
            and type(self.credit_limit) is int
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
        ):
            return
        _require_int("account_id", self.account_id)
        _require_int("balance", self.balance)
        _require_int("credit_limit", self.credit_limit)
        _require_int("min_balance", self.min_balance)
        _require_int("unbilled", self.unbilled)
        if self.max_sessions is not None:
            _require_int("max_sessions", self.max_sessions, minimum=0)
        if self.max_setups_per_s is not None:
            _require_int("max_setups_per_s", self.max_setups_per_s, minimum=0)
        if not isinstance(self.status, AccountStatus):
            raise TypeError(f"status must be an AccountStatus, got {self.status!r}")
        if not isinstance(self.limit_basis, LimitBasis):
            raise TypeError(f"limit_basis must be a LimitBasis, got {self.limit_basis!r}")

    @classmethod
    def trusted(  # noqa: PLR0917 - positional on purpose: the fastest call
        cls,
        account_id: int,
        name: str,
        status: AccountStatus,
        balance: int,
        credit_limit: int,
        min_balance: int,
        limit_basis: LimitBasis,
        unbilled: int,
        unbilled_period: date | None,
        time_zone: tzinfo,
        temporary_increase: TemporaryIncrease | None,
        max_sessions: int | None,
        max_setups_per_s: int | None,
        tariff: Tariff,
    ) -> "AccountSnapshot":
        """A snapshot from values already known to be valid (the bulk loader, where the
        database's types and constraints vouch for them): skips the keyword ``__init__`` and
        ``__post_init__``, which cost about a second per million accounts. Every field is
        positional, in declaration order. Anything else builds through the constructor."""
        snapshot = object.__new__(cls)
        put = object.__setattr__
        put(snapshot, "account_id", account_id)
        put(snapshot, "name", name)
        put(snapshot, "status", status)
        put(snapshot, "balance", balance)
        put(snapshot, "credit_limit", credit_limit)
        put(snapshot, "min_balance", min_balance)
        put(snapshot, "limit_basis", limit_basis)
        put(snapshot, "unbilled", unbilled)
        put(snapshot, "unbilled_period", unbilled_period)
        put(snapshot, "time_zone", time_zone)
        put(snapshot, "temporary_increase", temporary_increase)
        put(snapshot, "max_sessions", max_sessions)
        put(snapshot, "max_setups_per_s", max_setups_per_s)
        put(snapshot, "tariff", tariff)
        return snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantLimits:
    """Configured bounds on a grant (``[grant]`` in the config file).

    A grant never exceeds the maximum; a new session whose credit buys less than the
    minimum (and never less than one billing step) is refused for insufficient credit.
    """

    max_time_s: int = 3600
    min_time_s: int = 0
    max_volume_bytes: int = 100_000_000
    min_volume_bytes: int = 0
    max_events: int = 1000

    def __post_init__(self) -> None:
        _require_int("max_time_s", self.max_time_s, minimum=1)
        _require_int("min_time_s", self.min_time_s, minimum=0)
        _require_int("max_volume_bytes", self.max_volume_bytes, minimum=1)
        _require_int("min_volume_bytes", self.min_volume_bytes, minimum=0)
        _require_int("max_events", self.max_events, minimum=1)
        if self.min_time_s > self.max_time_s:
            raise ValueError("min_time_s must not exceed max_time_s")
        if self.min_volume_bytes > self.max_volume_bytes:
            raise ValueError("min_volume_bytes must not exceed max_volume_bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRequest:
    """A request to start (or continue) a session, as the pipeline sees it.

    ``active_sessions`` and ``setups_last_s`` are the account's counts not including this
    request; ``reserved`` is credit held by the account's running sessions (micro-units);
    ``requested_units`` is what the client asked for, if anything (seconds, bytes, events).
    """

    unit: ServiceUnit = ServiceUnit.TIME
    active_sessions: int = 0
    setups_last_s: int = 0
    reserved: int = 0
    requested_units: int | None = None

    def __post_init__(self) -> None:
        _require_int("active_sessions", self.active_sessions, minimum=0)
        _require_int("setups_last_s", self.setups_last_s, minimum=0)
        _require_int("reserved", self.reserved, minimum=0)
        if self.requested_units is not None:
            _require_int("requested_units", self.requested_units, minimum=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditDecision:
    """The core's answer.

    ``granted_units`` is seconds, bytes or events by ``unit`` (0 when refused).
    ``available`` and ``effective_limit`` are micro-units at ``now``. ``changes_at`` is the
    next instant at which the same data gives a different figure (a temporary increase
    ending, a new billing period), so callers can schedule instead of polling.
    """

    admitted: bool
    reason: RefusalReason | None
    unit: ServiceUnit
    granted_units: int
    available: int
    effective_limit: int
    changes_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What a session used: seconds, bytes (both directions) and events."""

    seconds: int = 0
    octets: int = 0
    events: int = 0

    def __post_init__(self) -> None:
        _require_int("seconds", self.seconds, minimum=0)
        _require_int("octets", self.octets, minimum=0)
        _require_int("events", self.events, minimum=0)

    @property
    def is_empty(self) -> bool:
        return self.seconds == 0 and self.octets == 0 and self.events == 0
