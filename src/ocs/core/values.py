"""The core's values that every request makes: the session request, the decision, the usage
(and the bandwidth limit a decision carries). Compiled with the hot paths
(``scripts/build_native.py``), so compiled code builds them with native constructors and reads
their fields directly; ``ocs.core.model`` re-exports them with the other value types.

Frozen, keyword-only, slotted, validated when built, like the rest of the model. Each class
writes its own ``__init__`` of plain assignments (``ocs.core.trusted`` says why and how).
"""

from dataclasses import dataclass
from datetime import datetime

from ocs.core.enums import REFUSAL_TEXT, RefusalReason, ServiceUnit
from ocs.core.trusted import assigning_init


def require_int(name: str, value: object, *, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RateLimit:
    """An account's bandwidth limit for data sessions, in kilobits (1000 bits) per second as
    the subscriber sees it: ``up_kbps`` from the subscriber, ``down_kbps`` towards them.
    A NAS enforces it (Mikrotik-Rate-Limit, WISPr-Bandwidth-Max-Up/Down)."""

    up_kbps: int
    down_kbps: int

    def __init__(
        self,
        *,
        up_kbps: int,
        down_kbps: int,
    ) -> None:
        self.up_kbps = up_kbps  # type: ignore[misc]
        self.down_kbps = down_kbps  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        require_int("up_kbps", self.up_kbps, minimum=1)
        require_int("down_kbps", self.down_kbps, minimum=1)


assigning_init(RateLimit)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
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

    def __init__(
        self,
        *,
        unit: ServiceUnit = ServiceUnit.TIME,
        active_sessions: int = 0,
        setups_last_s: int = 0,
        reserved: int = 0,
        requested_units: int | None = None,
    ) -> None:
        self.unit = unit  # type: ignore[misc]
        self.active_sessions = active_sessions  # type: ignore[misc]
        self.setups_last_s = setups_last_s  # type: ignore[misc]
        self.reserved = reserved  # type: ignore[misc]
        self.requested_units = requested_units  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        require_int("active_sessions", self.active_sessions, minimum=0)
        require_int("setups_last_s", self.setups_last_s, minimum=0)
        require_int("reserved", self.reserved, minimum=0)
        if self.requested_units is not None:
            require_int("requested_units", self.requested_units, minimum=0)


assigning_init(SessionRequest)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CreditDecision:
    """The core's answer.

    ``granted_units`` is seconds, bytes or events by ``unit`` (0 when refused).
    ``available`` and ``effective_limit`` are micro-units at ``now``. ``changes_at`` is the
    next instant at which the same data gives a different figure (a temporary increase
    ending, a new billing period), so callers can schedule instead of polling.
    For an admitted time grant on an account whose tariff prices volume, ``volume_quota_bytes``
    is what the same credit buys in bytes (a NAS can enforce both); ``rate_limit`` is the
    account's bandwidth setting, for the NAS to enforce.
    ``held_by`` is how many running sessions hold the account's credit (set with
    ``CREDIT_HELD``: the refusal says so).
    """

    admitted: bool
    reason: RefusalReason | None
    unit: ServiceUnit
    granted_units: int
    available: int
    effective_limit: int
    changes_at: datetime | None = None
    held_by: int = 0
    volume_quota_bytes: int | None = None
    rate_limit: RateLimit | None = None

    def __init__(
        self,
        *,
        admitted: bool,
        reason: RefusalReason | None,
        unit: ServiceUnit,
        granted_units: int,
        available: int,
        effective_limit: int,
        changes_at: datetime | None = None,
        held_by: int = 0,
        volume_quota_bytes: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.admitted = admitted  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.unit = unit  # type: ignore[misc]
        self.granted_units = granted_units  # type: ignore[misc]
        self.available = available  # type: ignore[misc]
        self.effective_limit = effective_limit  # type: ignore[misc]
        self.changes_at = changes_at  # type: ignore[misc]
        self.held_by = held_by  # type: ignore[misc]
        self.volume_quota_bytes = volume_quota_bytes  # type: ignore[misc]
        self.rate_limit = rate_limit  # type: ignore[misc]


assigning_init(CreditDecision)


def refusal_text(decision: CreditDecision) -> str:
    """What a subscriber or an operator reads for a refused decision."""
    reason = decision.reason
    if reason is None:
        return ""
    if reason is RefusalReason.CREDIT_HELD and decision.held_by:
        sessions = "session" if decision.held_by == 1 else "sessions"
        return f"insufficient credit: held by {decision.held_by} running {sessions}"
    return REFUSAL_TEXT[reason]


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Usage:
    """What a session used: seconds, bytes (both directions) and events."""

    seconds: int = 0
    octets: int = 0
    events: int = 0

    def __init__(
        self,
        *,
        seconds: int = 0,
        octets: int = 0,
        events: int = 0,
    ) -> None:
        self.seconds = seconds  # type: ignore[misc]
        self.octets = octets  # type: ignore[misc]
        self.events = events  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        require_int("seconds", self.seconds, minimum=0)
        require_int("octets", self.octets, minimum=0)
        require_int("events", self.events, minimum=0)

    @property
    def is_empty(self) -> bool:
        return self.seconds == 0 and self.octets == 0 and self.events == 0


assigning_init(Usage)
