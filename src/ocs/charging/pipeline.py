"""The charging pipeline: the one place that decides, for both protocols.

Rules of this file:
- Protocol fronts translate wire messages into calls here and the answers back; they never
  size a grant, price usage, keep session totals or run session timers. The session API:
  ``admit_cached``/``admit`` (a new session's admission and its pending hold), ``start`` (the
  session runs), ``report`` (usage so far, or the final usage), ``next_grant`` (a running
  session's next quota), ``close_origin`` (Accounting-On/Off), and the one-shot events
  ``direct_debit``, ``price``, ``refund``, ``has_credit``.
- Admission is decided from the cache: ``admit_cached`` never awaits; only when it returns
  None (unknown to the cache, too old) do fronts await ``admit``, which asks the database once
  per identity however many requests wait (single flight), within ``load_timeout_s``. With the
  database unreachable, an entry older than ``ttl_s`` still decides until it is ``max_stale_s``
  old; after that the ``on_stale`` policy answers, and it is counted.
- An identity the cache does not hold costs at most one database read per negative-cache TTL,
  and none at all when the cache is authoritative (a full load holds every account; new
  identities arrive by NOTIFY).
- A value the database refuses as data (``SourceRefused``: a NUL, bad UTF-8, a value too
  long) is the input's fault: the request is answered as for an unknown subscriber, and the
  database is not taken for down (no retry pause, no stale policy).
- Sessions are durable things with generations (``ocs.core.ledger``): the store decides from
  what it recorded whether a report is a repeat and which generation it belongs to, at any age
  and across restarts. Usage is acknowledged only after ``UsageSink.record`` returns
  (committed, or spooled by the sink). The account's new figures replace the cached ones at
  once.
- Every running session holds the price of its grant until the grant ends (plus
  ``session_margin_s``); then, with no news, it is closed. Holds are written to the database
  behind the answers (``write_behind_s``, coalesced: a session that starts and ends within it
  with no usage is never written), and rebuilt from it at start-up before the listeners open.
- The store and the sidecar implement the ``AccountSource`` and ``UsageSink`` protocols
  declared here; this module knows no SQL and no wire format.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Protocol

from ocs.charging.cache import AccountCache
from ocs.charging.errors import SourceRefused, SourceUnavailable, SpoolFull
from ocs.charging.rates import RatePlanCache
from ocs.charging.sessions import SessionBook
from ocs.core.credit import available_credit, continue_session, decide, largest_grant
from ocs.core.identity import DialPlan, IdentityError, IdentityKind, normalize_destination
from ocs.core.ledger import (
    NO_USAGE,
    Counting,
    Generation,
    Hold,
    Report,
    ReportKind,
    apply_report,
)
from ocs.core.model import (
    AccountSnapshot,
    CreditDecision,
    GrantLimits,
    RefusalReason,
    ServiceUnit,
    SessionRequest,
    Tariff,
    Usage,
)
from ocs.core.rating import (
    affordable_units,
    event_charge,
    time_charge,
    usage_charge,
    volume_charge,
)
from ocs.core.trusted import assigning_init

log = logging.getLogger(__name__)

# How long SystemClock.wall keeps one datetime (seconds).
WALL_CLOCK_RESOLUTION_S: Final = 0.001


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class UsageReport:
    """One report about one session key, for the store: the key and the ledger's report."""

    source: str
    origin: str
    session_key: str
    entry: Report

    def __init__(
        self,
        *,
        source: str,
        origin: str,
        session_key: str,
        entry: Report,
    ) -> None:
        self.source = source  # type: ignore[misc]
        self.origin = origin  # type: ignore[misc]
        self.session_key = session_key  # type: ignore[misc]
        self.entry = entry  # type: ignore[misc]

    @property
    def account_id(self) -> int:
        return self.entry.account_id

    @property
    def idempotency_key(self) -> str:
        return self.entry.uid


assigning_init(UsageReport)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class UsageOutcome:
    charged: int  # micro-units charged by this report (0 for a repeat)
    duplicate: bool
    snapshot: AccountSnapshot | None  # the account's figures after the report, when known
    spooled: bool = False  # kept in the local spool until the database is back
    version: Any = None  # the snapshot's change stamp, for the cache
    generation: Generation | None = None  # the report's generation after it, when known

    def __init__(
        self,
        *,
        charged: int,
        duplicate: bool,
        snapshot: AccountSnapshot | None,
        spooled: bool = False,
        version: Any = None,
        generation: Generation | None = None,
    ) -> None:
        self.charged = charged  # type: ignore[misc]
        self.duplicate = duplicate  # type: ignore[misc]
        self.snapshot = snapshot  # type: ignore[misc]
        self.spooled = spooled  # type: ignore[misc]
        self.version = version  # type: ignore[misc]
        self.generation = generation  # type: ignore[misc]


assigning_init(UsageOutcome)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenGeneration:
    """An open generation as the store has it (for the holds rebuilt at start-up)."""

    source: str
    origin: str
    session_key: str
    generation: Generation
    time_zone: tzinfo = UTC


class AccountSource(Protocol):
    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        """The account an identity (in normal form) belongs to, or None."""
        ...

    async def load_account(self, account_id: int) -> AccountSnapshot | None: ...


class UsageSink(Protocol):
    async def record(self, report: UsageReport) -> UsageOutcome:
        """Make the report durable (the ledger decides what it does); returns what it did."""
        ...

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        """Close every open session of ``origin``; returns (account id, session key) pairs."""
        ...

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        """Keep usage that cannot be charged, with why; True unless it was a repeat."""
        ...

    async def session_generations(
        self, source: str, origin: str, session_key: str
    ) -> list[Generation]:
        """The key's recent generations, oldest first (a report for a session this process
        does not know, with no identity of its own)."""
        ...

    async def open_generations(self, owner: str) -> list[OpenGeneration]:
        """The open generations this daemon (``owner``) was running when it stopped."""
        ...

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot | None:
        """Give ``amount`` back to the account (a refund of units), once per key."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    ttl_s: float = 60.0
    max_stale_s: float = 300.0
    on_stale: str = "reject"  # or "accept"
    load_timeout_s: float = 2.0
    pending_reservation_ttl_s: float = 60.0  # admitted, start not seen yet
    session_ttl_margin_s: float = 120.0  # a running session's silence allowed past its grant
    write_behind_s: float = 0.5  # holds and closes reach the database this much after


class AtomicReserver(Protocol):
    """Shared reservations (Redis): an admission of an account with little credit left is
    checked against what the other instances hold *now*, atomically, before it is answered."""

    def usable(self) -> bool:
        """Whether the shared store answers (else admissions go on from local figures)."""
        ...

    async def confirm(self, account_id: int, expected_remote: int) -> bool:
        """Publish this instance's figures for the account (its new reservation included) if
        the others hold no more than ``expected_remote`` micro-units; else refresh what the
        book knows of them and return False."""
        ...


class Clock(Protocol):
    def wall(self) -> datetime: ...
    def mono(self) -> float: ...


class SystemClock:
    """The machine's clocks. ``wall`` is read to the millisecond: a request's decision needs
    the date and time (a billing period, a temporary increase ending) but building a
    ``datetime`` costs about 0.35 µs, so one is kept for the millisecond it was made in."""

    def __init__(self) -> None:
        self._wall_at = 0.0  # time.time() when _wall was made
        self._wall = datetime.fromtimestamp(0, UTC)

    def wall(self) -> datetime:
        now = time.time()
        if self._wall_at <= now < self._wall_at + WALL_CLOCK_RESOLUTION_S:
            return self._wall
        wall = datetime.fromtimestamp(now, UTC)
        self._wall_at, self._wall = now, wall
        return wall

    def mono(self) -> float:
        # CLOCK_MONOTONIC, the event loops' clock too (uvloop's is the same clock to the
        # millisecond); asking the running loop costs four times as much, on every request.
        return time.monotonic()


@dataclass(slots=True)
class PipelineStats:
    """Counters the metrics layer reads; plain ints so the hot path stays cheap."""

    cache_hits: int = 0
    cache_misses: int = 0
    stale_decisions: int = 0
    stale_policy_applied: int = 0
    source_errors: int = 0
    source_refused: int = 0  # lookups the database refused as data (not counted as errors)
    unknown_identities: int = 0
    authoritative_unknowns: int = 0  # unknown without a query: the cache holds every account
    decisions: dict[str, int] = field(default_factory=dict)
    sessions_expired: int = 0
    atomic_confirmed: int = 0  # admissions confirmed against the other instances
    atomic_conflicts: int = 0  # ... that found them holding more than known: decided again
    atomic_unavailable: int = 0  # ... that went on from local figures (the store was away)
    holds_rebuilt: int = 0
    behind_written: int = 0
    behind_failed: int = 0
    behind_coalesced: int = 0


class SessionId:
    """Who a session is: RADIUS (NAS, Acct-Session-Id), Diameter (Origin-Host, Session-Id).
    ``book_key`` is its key in the session book (made once: it is read on every request)."""

    __slots__ = ("book_key", "key", "origin", "source")

    def __init__(self, source: str, origin: str, key: str) -> None:
        self.source = source
        self.origin = origin
        self.key = key
        self.book_key = f"{source}|{origin}|{key}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionId) and self.book_key == other.book_key

    def __hash__(self) -> int:
        return hash(self.book_key)

    def __repr__(self) -> str:
        return f"SessionId({self.source!r}, {self.origin!r}, {self.key!r})"


class LiveSession:
    """A session this process runs: what it needs to charge, hold and end it."""

    __slots__ = (
        "account_id",
        "charged",
        "counting",
        "expires_at",
        "generation",
        "granted_s",
        "hold_amount",
        "hold_until",
        "identity",
        "overdraft_used",
        "ref",
        "start_key",
        "start_ref",
        "start_wire_key",
        "state",
        "tariff",
        "time_zone",
        "timed",
        "unit",
        "unreported_s",
        "usage",
        "written",
    )

    def __init__(
        self,
        *,
        ref: SessionId,
        account_id: int,
        start_ref: str,
        tariff: Tariff,
        unit: ServiceUnit,
        time_zone: tzinfo,
        identity: tuple[IdentityKind, str] | None,
        expires_at: float,
        start_key: str,
        start_wire_key: str | None = None,
        usage: Usage = NO_USAGE,
        charged: int = 0,
        written: bool = False,
        generation: Generation | None = None,
    ) -> None:
        self.ref = ref
        self.account_id = account_id
        self.start_ref = start_ref
        self.tariff = tariff
        self.unit = unit
        self.time_zone = time_zone
        self.identity = identity
        self.expires_at = expires_at
        self.start_key = start_key
        self.start_wire_key = start_wire_key
        self.usage = usage
        self.charged = charged
        self.written = written  # its start reached the store (or the spool)
        self.generation = generation  # as the store last returned it
        self.hold_amount = 0  # micro-units held for its grant ...
        self.hold_until = 0.0  # ... until this monotonic instant
        self.overdraft_used = 0
        self.state = ""  # the front's own state (Diameter: RFC 4006 §7 session state)
        # What its grant is (seconds): what it is charged when it ends with no news, as its
        # whole time (cumulative clients) or as its unreported last quota (incremental ones).
        self.granted_s = 0
        self.unreported_s = 0
        self.counting = Counting.CUMULATIVE
        self.timed = False  # transaction-style accounting: duration from Start to Stop


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Reported:
    """What ``report`` did: the store's outcome and the session it went to (None when the
    session is over or unknown here)."""

    outcome: UsageOutcome
    session: LiveSession | None

    def __init__(
        self,
        *,
        outcome: UsageOutcome,
        session: LiveSession | None,
    ) -> None:
        self.outcome = outcome  # type: ignore[misc]
        self.session = session  # type: ignore[misc]


assigning_init(Reported)


def _unknown(unit: ServiceUnit) -> CreditDecision:
    return CreditDecision(
        admitted=False,
        reason=RefusalReason.UNKNOWN_ACCOUNT,
        unit=unit,
        granted_units=0,
        available=0,
        effective_limit=0,
    )


def grant_cost(tariff: Tariff, unit: ServiceUnit, units: int, *, new_session: bool) -> int:
    """What ``units`` of a grant will cost at most: the credit to reserve for it."""
    fee = tariff.connection_fee if new_session else 0
    if unit is ServiceUnit.TIME:
        return fee + time_charge(tariff, units)
    if unit is ServiceUnit.VOLUME:
        return fee + volume_charge(tariff, units)
    return fee + event_charge(tariff, units)


def unit_of_tariff(tariff: Tariff) -> ServiceUnit:
    """The unit a session is granted in when the client does not say: volume for an account
    whose tariff prices only volume (so parallel data sessions cannot overspend), else time."""
    if tariff.price_per_minute == 0 and tariff.price_per_mb > 0:
        return ServiceUnit.VOLUME
    return ServiceUnit.TIME


def usage_of(unit: ServiceUnit, amount: int) -> Usage:
    if unit is ServiceUnit.TIME:
        return Usage(seconds=amount)
    if unit is ServiceUnit.VOLUME:
        return Usage(octets=amount)
    return Usage(events=amount)


_UID_PREFIX = secrets.token_hex(8)  # this process's: uids of two processes never meet
_uid_counter = itertools.count(1)


def new_uid() -> str:
    """A report's (or a start's) own identity: unique across processes and restarts (a random
    prefix drawn at import, then a counter), cheap enough to draw for every request."""
    return f"{_UID_PREFIX}.{next(_uid_counter)}"


class Charging:
    def __init__(
        self,
        *,
        cache: AccountCache,
        sessions: SessionBook,
        source: AccountSource,
        sink: UsageSink,
        limits: GrantLimits,
        policy: CachePolicy,
        clock: Clock | None = None,
        owner: str = "ocsd",
        strict: bool = False,
        atomic: AtomicReserver | None = None,
        atomic_below_grants: float = 2.0,
        rates: RatePlanCache | None = None,
    ) -> None:
        self.cache = cache
        self.sessions = sessions
        self.source = source
        self.sink = sink
        self.limits = limits
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.owner = owner
        self.strict = strict
        # Below this many times the price of the largest grant, an admission is confirmed
        # against the other instances (``atomic``) before it is answered.
        self.atomic = atomic
        self.atomic_below_grants = atomic_below_grants
        # Rating by destination: what prices a session of an account with a rate plan, fixed
        # at its admission (kept here until its start claims the admission).
        self.rates = rates
        self._admitted_tariffs: dict[str, Tariff] = {}
        self.stats = PipelineStats()
        self._inflight: dict[tuple[str, object], asyncio.Future[AccountSnapshot | None]] = {}
        # The database is not asked while it is known to be away (the sidecar says so, or a
        # load just failed): requests are decided from the cache at once instead of waiting.
        self.source_healthy = True
        self._source_retry_at = 0.0
        # The sessions this process runs, by book key.
        self.live: dict[str, LiveSession] = {}
        # Writes behind the answers: the latest pending change per session (book key): the
        # session, what changed, (for an end) its request number, (for a close) why.
        self._behind: dict[str, tuple[LiveSession, ReportKind, int | None, str | None]] = {}
        # A session that ends with no news is charged its grant (DESIGN §6), unless not.
        self.charge_unended = True
        self._behind_wakeup = asyncio.Event()
        self.behind_max = 200_000

    def set_source_health(self, healthy: bool) -> None:
        self.source_healthy = healthy
        if healthy:
            self._source_retry_at = 0.0

    def _source_usable(self, now: float) -> bool:
        return self.source_healthy and now >= self._source_retry_at

    # --- admission of new sessions ----------------------------------------------------------

    def admit_cached(
        self,
        kind: IdentityKind,
        value: str,
        *,
        unit: ServiceUnit | None = ServiceUnit.TIME,
        requested: int | None = None,
        reservation_key: str | None = None,
        destination: Destination | None = None,
    ) -> CreditDecision | None:
        """Decide from the cache alone, or return None when the database must be asked.
        ``unit`` None: as the account's tariff prices (``unit_of_tariff``). ``destination``:
        the called number (E.164 digits) an account with a rate plan is priced by."""
        now = self.clock.mono()
        account_id = self.cache.account_for(kind, value)
        if account_id is None:
            if self.cache.authoritative:
                self.stats.cache_hits += 1
                self.stats.authoritative_unknowns += 1
                return self.count_decision(_unknown(unit or ServiceUnit.TIME))
            if self.cache.known_unknown(kind, value, now):
                self.stats.cache_hits += 1
                return self.count_decision(_unknown(unit or ServiceUnit.TIME))
            return None
        snapshot = self.cache.get(account_id)
        if snapshot is None or self.cache.age_s(account_id, now) > self.policy.ttl_s:
            return None
        decision = self._decide(
            snapshot, unit, requested, reservation_key, now, may_defer=True, destination=destination
        )
        if decision is not None:
            self.stats.cache_hits += 1
        return decision

    async def admit(
        self,
        kind: IdentityKind,
        value: str,
        *,
        unit: ServiceUnit | None = ServiceUnit.TIME,
        requested: int | None = None,
        reservation_key: str | None = None,
        destination: Destination | None = None,
    ) -> CreditDecision:
        """Decide for a new session, asking the database when the cache cannot answer."""
        cached = self.admit_cached(
            kind,
            value,
            unit=unit,
            requested=requested,
            reservation_key=reservation_key,
            destination=destination,
        )
        if cached is not None:
            return cached
        now = self.clock.mono()
        account_id = self.cache.account_for(kind, value)
        fresh = self.cache.get(account_id) if account_id is not None else None
        if (
            fresh is not None
            and account_id is not None
            and self.cache.age_s(account_id, now) <= self.policy.ttl_s
        ):
            # The cache knows: the admission waits to be confirmed by the other instances.
            self.stats.cache_hits += 1
            return await self._admit_confirmed(fresh, unit, requested, reservation_key, destination)
        self.stats.cache_misses += 1
        if not self._source_usable(self.clock.mono()):
            return self._decide_without_database(
                kind, value, unit, requested, reservation_key, destination=destination
            )
        try:
            snapshot = await self._single_flight(
                ("identity", (kind, value)), lambda: self.source.find_account(kind, value)
            )
        except SourceUnavailable:
            self._source_retry_at = self.clock.mono() + 1.0
            return self._decide_without_database(
                kind, value, unit, requested, reservation_key, destination=destination
            )
        except SourceRefused:
            self.stats.source_refused += 1
            snapshot = None
        now = self.clock.mono()
        if snapshot is None:
            self.stats.unknown_identities += 1
            self.cache.remember_unknown(kind, value, now)
            return self.count_decision(_unknown(unit or ServiceUnit.TIME))
        self.cache.put(snapshot, now)
        self.cache.add_identity(kind, value, snapshot.account_id)
        return await self._admit_confirmed(snapshot, unit, requested, reservation_key, destination)

    async def _admit_confirmed(
        self,
        snapshot: AccountSnapshot,
        unit: ServiceUnit | None,
        requested: int | None,
        reservation_key: str | None,
        destination: Destination | None = None,
    ) -> CreditDecision:
        """Decide, and when the account's credit is low, confirm the reservation against the
        other instances before answering (a burst split across instances then admits what one
        instance would). Conflicts decide again on the figures the confirmation brought."""
        account = snapshot.account_id
        decision: CreditDecision | None = None
        for _attempt in range(3):
            decision = self._decide(
                snapshot,
                unit,
                requested,
                reservation_key,
                self.clock.mono(),
                count=False,
                destination=destination,
            )
            assert decision is not None
            if not self._must_confirm(snapshot, decision, reservation_key):
                break
            atomic = self.atomic
            assert atomic is not None
            expected = self.sessions.remote_figures(account)[0]
            try:
                confirmed = await atomic.confirm(account, expected)
            except Exception as exc:  # the store is away: go on from local figures
                self.stats.atomic_unavailable += 1
                log.debug("shared reservation not confirmed, deciding locally: %r", exc)
                break
            if confirmed:
                self.stats.atomic_confirmed += 1
                break
            self.stats.atomic_conflicts += 1
            assert reservation_key is not None
            self.sessions.end(reservation_key)  # undone; decided again below
        assert decision is not None
        return self.count_decision(decision)

    def _must_confirm(
        self, snapshot: AccountSnapshot, decision: CreditDecision, reservation_key: str | None
    ) -> bool:
        atomic = self.atomic
        if (
            atomic is None
            or reservation_key is None
            or not decision.admitted
            or not atomic.usable()
        ):
            return False
        unit = decision.unit
        largest = grant_cost(
            snapshot.tariff, unit, largest_grant(self.limits, unit), new_session=True
        )
        # Little credit left, or this instance admitted for the account since the last sync
        # (the others do not know that hold yet): confirm. So an account's credit is never
        # spent by more than one unconfirmed grant per instance within a sync interval.
        return decision.available < self.atomic_below_grants * largest or (
            largest > 0 and self.sessions.unsynced(snapshot.account_id)
        )

    def _decide_without_database(
        self,
        kind: IdentityKind,
        value: str,
        unit: ServiceUnit | None,
        requested: int | None,
        reservation_key: str | None,
        *,
        destination: Destination | None = None,
    ) -> CreditDecision:
        self.stats.source_errors += 1
        now = self.clock.mono()
        account_id = self.cache.account_for(kind, value)
        entry = self.cache.get(account_id) if account_id is not None else None
        if (
            entry is not None
            and account_id is not None
            and self.cache.age_s(account_id, now) <= self.policy.max_stale_s
        ):
            self.stats.stale_decisions += 1
            return self._decide_now(
                entry, unit, requested, reservation_key, now, destination=destination
            )
        self.stats.stale_policy_applied += 1
        unit = unit or ServiceUnit.TIME
        if self.policy.on_stale == "accept":
            if entry is not None:
                decision = self._decide_now(
                    entry, unit, requested, reservation_key, now, destination=destination
                )
                if decision.admitted:
                    return decision
            cap = largest_grant(self.limits, unit)
            return self.count_decision(
                CreditDecision(
                    admitted=True,
                    reason=None,
                    unit=unit,
                    granted_units=min(cap, requested) if requested else cap,
                    available=0,
                    effective_limit=0,
                )
            )
        return self.count_decision(
            CreditDecision(
                admitted=False,
                reason=RefusalReason.CREDIT_DATA_UNAVAILABLE,
                unit=unit,
                granted_units=0,
                available=0,
                effective_limit=0,
            )
        )

    def _decide(
        self,
        snapshot: AccountSnapshot,
        unit: ServiceUnit | None,
        requested: int | None,
        reservation_key: str | None,
        now: float,
        *,
        may_defer: bool = False,
        count: bool = True,
        destination: Destination | None = None,
    ) -> CreditDecision | None:
        """The core's decision with this process's figures; an admission holds its grant's
        price under ``reservation_key``. With ``may_defer``, None when the admission must be
        confirmed with the other instances first (``admit`` does that)."""
        account = snapshot.account_id
        tariff = snapshot.tariff
        if self.rates is not None and snapshot.terms.rate_plan_id is not None:
            match = self.rates.rate_for(snapshot, called_number(destination), self.clock.wall())
            if match is None:
                refused = CreditDecision(
                    admitted=False,
                    reason=RefusalReason.NO_RATE,
                    unit=unit or ServiceUnit.TIME,
                    granted_units=0,
                    available=0,
                    effective_limit=0,
                )
                return self.count_decision(refused) if count else refused
            tariff = match.tariff
        if unit is None:
            unit = (
                ServiceUnit.VOLUME
                if tariff.price_per_minute == 0 and tariff.price_per_mb > 0
                else ServiceUnit.TIME
            )
        reserved, active, setups = self.sessions.figures(account, now)
        if reservation_key is not None and reserved:
            # The same admission again (a call attempted again under its name): its earlier
            # hold is what this one replaces, not credit another session holds.
            reserved -= self.sessions.held_for(reservation_key)
        request = SessionRequest(
            unit=unit,
            active_sessions=active,
            setups_last_s=setups,
            reserved=reserved,
            requested_units=requested,
        )
        rated = tariff if tariff is not snapshot.tariff else None
        decision = decide(snapshot, request, self.clock.wall(), self.limits, tariff=rated)
        if (
            not decision.admitted
            and decision.reason is RefusalReason.INSUFFICIENT_CREDIT
            and reserved > 0
        ):
            # The balance alone would do: running sessions hold the credit. Say so.
            unheld = decide(
                snapshot, replace(request, reserved=0), self.clock.wall(), self.limits, tariff=rated
            )
            if unheld.admitted:
                decision = replace(
                    decision,
                    reason=RefusalReason.CREDIT_HELD,
                    held_by=max(request.active_sessions, 1),
                )
        if decision.admitted and reservation_key is not None:
            if (
                may_defer
                and self.atomic is not None
                and self._must_confirm(snapshot, decision, reservation_key)
            ):
                return None
            amount = grant_cost(tariff, unit, decision.granted_units, new_session=True)
            grant_s = decision.granted_units if unit is ServiceUnit.TIME else self.limits.max_time_s
            self.sessions.admit(
                reservation_key,
                account,
                amount,
                now,
                self.policy.pending_reservation_ttl_s,
                grant_s=grant_s,
            )
            if rated is not None:
                admitted = self._admitted_tariffs
                if len(admitted) >= 200_000:  # admissions that never started: drop the oldest
                    del admitted[next(iter(admitted))]
                admitted[reservation_key] = rated
        return self.count_decision(decision) if count else decision

    def _decide_now(
        self,
        snapshot: AccountSnapshot,
        unit: ServiceUnit | None,
        requested: int | None,
        reservation_key: str | None,
        now: float,
        *,
        destination: Destination | None = None,
    ) -> CreditDecision:
        """``_decide`` without deferring (the shared store is not asked)."""
        decision = self._decide(
            snapshot, unit, requested, reservation_key, now, destination=destination
        )
        assert decision is not None
        return decision

    def count_decision(self, decision: CreditDecision) -> CreditDecision:
        """Count a new-session decision in ``stats.decisions`` (by result: "admitted" or the
        refusal reason), which the metrics publish as ``ocs_new_sessions_total`` when scraped."""
        key = "admitted" if decision.admitted else str(decision.reason)
        decisions = self.stats.decisions
        decisions[key] = decisions.get(key, 0) + 1
        return decision

    async def _single_flight(
        self,
        key: tuple[str, object],
        load: Callable[[], Awaitable[AccountSnapshot | None]],
    ) -> AccountSnapshot | None:
        """One database query per key however many callers wait for it."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[AccountSnapshot | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await asyncio.wait_for(load(), self.policy.load_timeout_s)
        except SourceRefused as exc:  # the input's fault: every waiter gets the same
            future.set_exception(SourceRefused(str(exc)))
            future.exception()
            raise
        except (TimeoutError, SourceUnavailable, OSError) as failure:
            error = SourceUnavailable(str(failure) or type(failure).__name__)
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise error from failure
        except BaseException as exc:
            future.set_exception(SourceUnavailable(f"load failed: {exc!r}"))
            future.exception()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        """The account of an identity, from the cache when possible (for accounting); None
        for an identity no account has (or one the database refuses as data). Raises
        ``SourceUnavailable`` when only the database could tell."""
        account_id = self.cache.account_for(kind, value)
        if account_id is not None:
            cached = self.cache.get(account_id)
            if cached is not None:
                return cached
        elif self.cache.authoritative:
            self.stats.authoritative_unknowns += 1
            return None
        elif self.cache.known_unknown(kind, value, self.clock.mono()):
            return None
        if not self._source_usable(self.clock.mono()):
            raise SourceUnavailable("the database is unavailable and the identity is not cached")
        try:
            snapshot = await self._single_flight(
                ("identity", (kind, value)), lambda: self.source.find_account(kind, value)
            )
        except SourceRefused:
            self.stats.source_refused += 1
            snapshot = None
        if snapshot is None and account_id is None:
            self.cache.remember_unknown(kind, value, self.clock.mono())
        if snapshot is not None:
            self.cache.put(snapshot, self.clock.mono())
            self.cache.add_identity(kind, value, snapshot.account_id)
        return snapshot

    async def account_by_id(self, account_id: int) -> AccountSnapshot | None:
        cached = self.cache.get(account_id)
        if cached is not None:
            return cached
        if not self._source_usable(self.clock.mono()):
            raise SourceUnavailable("the database is unavailable and the account is not cached")
        return await self._single_flight(
            ("account", account_id), lambda: self.source.load_account(account_id)
        )

    # --- running sessions -------------------------------------------------------------------

    def session(self, ref: SessionId) -> LiveSession | None:
        return self.live.get(ref.book_key)

    def start(
        self,
        ref: SessionId,
        snapshot: AccountSnapshot,
        *,
        unit: ServiceUnit,
        grant_s: float | None,
        identity: tuple[IdentityKind, str] | None = None,
        claim: Sequence[str] | None = None,
        report_key: str = "start",
        wire_key: str | None = None,
        client_at: datetime | None = None,
        durable: bool = False,
        counting: Counting = Counting.CUMULATIVE,
        timed: bool = False,
        granted_s: float | None = None,
    ) -> tuple[LiveSession, UsageReport | None]:
        """The session runs: it takes over its admission's hold (``claim``: the pending
        reservations of its services; None: the oldest of its account, as a RADIUS Start
        follows its Access-Request) until its grant (``grant_s``; None: as long as the grant
        of the admission it claimed) plus the margin has passed with no news. Another session
        of this key still running here is over (its key was reused).

        Returns the session and, with ``durable``, its start report for the caller to await
        ``record_start`` with (RADIUS: the Accounting-Response waits for it); else None: the
        start is written behind the answer."""
        book_key = ref.book_key
        previous = self.live.pop(book_key, None)
        if previous is not None:
            self.sessions.end(book_key)
            self._behind.pop(book_key, None)
        now = self.clock.mono()
        margin = self.policy.session_ttl_margin_s
        provisional = (grant_s if grant_s is not None else self.limits.max_time_s) + margin
        held, claimed_s, first = self.sessions.start(
            book_key, snapshot.account_id, now, provisional, claim=claim
        )
        # The rate fixed at its admission (by destination), else the account's tariff.
        tariff = snapshot.tariff
        if first is not None and self._admitted_tariffs:
            tariff = self._admitted_tariffs.pop(first, tariff)
        ttl = provisional
        if grant_s is None and claimed_s:
            ttl = claimed_s + margin
            self.sessions.touch(book_key, now, ttl)
        session = LiveSession(
            ref=ref,
            account_id=snapshot.account_id,
            start_ref=new_uid(),
            tariff=tariff,
            unit=unit,
            time_zone=snapshot.time_zone,
            identity=identity,
            expires_at=now + ttl,
            start_key=report_key,
            start_wire_key=wire_key,
        )
        session.hold_amount = held
        session.hold_until = now + ttl
        session.counting = counting
        session.timed = timed
        # The time granted (what an end with no news is charged): as given, else the grant of
        # the admission it claimed.
        granted = granted_s if granted_s is not None else (claimed_s or grant_s or 0)
        session.granted_s = int(granted) if unit is ServiceUnit.TIME else 0
        session.unreported_s = session.granted_s
        self.live[book_key] = session
        if not durable:
            self._write_behind(session, ReportKind.OPEN)
            return session, None
        report = self._report(
            session, ReportKind.OPEN, report_key, wire_key=wire_key, client_at=client_at
        )
        return session, report

    async def record_start(self, session: LiveSession, report: UsageReport | None) -> UsageOutcome:
        """Make a start durable now (the RADIUS Start's Accounting-Response waits for it);
        ``report`` is what ``start`` returned with ``durable``."""
        assert report is not None, "start(..., durable=True) returns the report to record"
        outcome = await self._record(report)
        session.written = True
        if outcome.generation is not None:
            self._adopt_generation(session, outcome.generation)
        return outcome

    async def report(
        self,
        ref: SessionId,
        *,
        kind: ReportKind,
        usage: Usage,
        counting: Counting,
        report_key: str,
        snapshot: AccountSnapshot | None = None,
        wire_key: str | None = None,
        client_at: datetime | None = None,
        request_number: int | None = None,
        close_reason: str | None = None,
        timed: bool = False,
    ) -> Reported:
        """Usage so far (``USAGE``) or the session's last (``FINAL``): durable before this
        returns. A session this process does not run (it restarted, or another instance
        started it) goes to the generation the store finds; ``snapshot`` is the account the
        client names, used when the store must open a generation for it. ``timed``:
        transaction-style accounting (the duration is the time from the session's start to
        this report)."""
        book_key = ref.book_key
        session = self.live.get(book_key)
        if (
            session is not None
            and snapshot is not None
            and snapshot.account_id != session.account_id
        ):
            # The key was reused for another account: that account's session starts.
            self._forget(session)
            session = None
        if session is None and snapshot is None:
            snapshot = await self._account_of_key(ref)
        if session is not None:
            report = self._report(
                session,
                kind,
                report_key,
                usage=usage,
                counting=counting,
                wire_key=wire_key,
                client_at=client_at,
                request_number=request_number,
                close_reason=close_reason,
                timed=session.timed or timed,
            )
        else:
            assert snapshot is not None
            report = self._new_report(
                ref,
                kind,
                report_key,
                account_id=snapshot.account_id,
                time_zone=snapshot.time_zone,
                tariff=snapshot.tariff,
                usage=usage,
                counting=counting,
                wire_key=wire_key,
                client_at=client_at,
                request_number=request_number,
                close_reason=close_reason,
                timed=timed,
            )
        final = kind is ReportKind.FINAL
        if final and session is not None:
            pending = self._behind.get(book_key)
            if pending is not None and pending[0] is session and pending[1] is ReportKind.OPEN:
                # Its start was not written yet: this final report opens and closes the
                # generation itself (by its start_ref); the start need not follow it.
                del self._behind[book_key]
        outcome = await self._record(report, session)
        generation = outcome.generation
        if session is None and generation is not None and generation.is_open and not final:
            assert snapshot is not None
            session = self._resume(ref, generation, snapshot)
        if session is not None:
            if final:
                self._end(session)
                session = None
            else:
                now = self.clock.mono()
                ttl = max(session.expires_at - now, 0.0)
                self.sessions.touch(book_key, now, ttl)
        return Reported(outcome=outcome, session=session)

    async def _account_of_key(self, ref: SessionId) -> AccountSnapshot:
        """The account of a key's latest generation (a report that names no identity)."""
        if not self._source_usable(self.clock.mono()):
            raise SourceUnavailable("the database is unavailable")
        try:
            generations = await asyncio.wait_for(
                self.sink.session_generations(ref.source, ref.origin, ref.key),
                self.policy.load_timeout_s,
            )
        except TimeoutError as exc:
            raise SourceUnavailable("looking up the session timed out") from exc
        if not generations:
            raise UnknownSession(ref)
        snapshot = await self.account_by_id(generations[-1].account_id)
        if snapshot is None:
            raise UnknownSession(ref)
        return snapshot

    def _resume(
        self, ref: SessionId, generation: Generation, snapshot: AccountSnapshot
    ) -> LiveSession:
        """Run here a session the store has open (this process restarted, or another
        instance started it): its hold is rebuilt as the store has it."""
        now = self.clock.mono()
        wall = self.clock.wall()
        hold = generation.hold
        remaining = (hold.until - wall).total_seconds() if hold is not None else 0.0
        ttl = max(remaining, float(self.limits.max_time_s)) + self.policy.session_ttl_margin_s
        self.sessions.start(
            ref.book_key,
            generation.account_id,
            now,
            ttl,
            amount=hold.amount if hold is not None and remaining > 0 else 0,
        )
        session = LiveSession(
            ref=ref,
            account_id=generation.account_id,
            start_ref=generation.start_ref or new_uid(),
            tariff=generation.tariff,
            unit=unit_of_tariff(generation.tariff),
            time_zone=snapshot.time_zone,
            identity=None,
            expires_at=now + ttl,
            start_key=generation.start_key or "start",
            start_wire_key=generation.start_wire_key,
            usage=generation.usage,
            charged=generation.charged,
            written=True,
            generation=generation,
        )
        if hold is not None and remaining > 0:
            session.hold_amount = hold.amount
            session.hold_until = now + remaining
        self.live[ref.book_key] = session
        return session

    def next_grants(
        self,
        session: LiveSession,
        services: Sequence[tuple[ServiceUnit, int | None]],
        *,
        validity_s: float,
    ) -> list[tuple[CreditDecision, bool]]:
        """The next quota of each service (rating group) of a running session, and whether it
        is the last (strict mode, or the overdraft spent). The session's hold becomes the
        price of these grants, until they end; each service's grant sees the ones before."""
        limits = self.limits
        book = self.sessions
        book_key = session.ref.book_key
        snapshot = self.cache.get(session.account_id)
        now = self.clock.mono()
        wall = self.clock.wall()
        others = max(book.reserved(session.account_id) - book.held_for(book_key), 0)
        results: list[tuple[CreditDecision, bool]] = []
        held = 0
        longest = 0.0
        for unit, requested in services:
            cap = largest_grant(limits, unit)
            if requested:
                cap = min(cap, requested)
            if snapshot is None:  # not cached (the stale policy admitted it): no figures
                granted = min(cap, self._overdraft_left(unit, session)) or cap
                decision = CreditDecision(
                    admitted=True,
                    reason=None,
                    unit=unit,
                    granted_units=granted,
                    available=0,
                    effective_limit=0,
                )
                results.append((decision, False))
                continue
            tariff = session.tariff
            decision = continue_session(
                snapshot,
                SessionRequest(unit=unit, requested_units=requested, reserved=others + held),
                wall,
                limits,
                strict=self.strict,
                overdraft_used=session.overdraft_used,
                tariff=tariff if tariff is not snapshot.tariff else None,
            )
            final = False
            if decision.admitted:
                if affordable_units(tariff, unit, decision.available, cap) == 0:
                    # Granted from the overdraft: it counts, and the last of it is final.
                    session.overdraft_used += decision.granted_units
                    final = self._overdraft_left(unit, session) == 0
                elif self.strict and decision.granted_units < cap:
                    final = True
                held += grant_cost(tariff, unit, decision.granted_units, new_session=False)
                if unit is ServiceUnit.TIME:
                    longest = max(longest, float(decision.granted_units))
            results.append((decision, final))
        ttl = max(longest, validity_s) + self.policy.session_ttl_margin_s
        session.granted_s = int(longest)
        session.unreported_s = int(longest)
        session.expires_at = now + ttl
        book.touch(book_key, now, ttl)
        book.reserve(book_key, session.account_id, held, now, ttl)
        if held != session.hold_amount or (held and abs(now + ttl - session.hold_until) > 1.0):
            session.hold_amount = held
            session.hold_until = now + ttl
            self._write_behind(session, ReportKind.OPEN)
        return results

    def _overdraft_left(self, unit: ServiceUnit, session: LiveSession) -> int:
        limits = self.limits
        allowance = {
            ServiceUnit.TIME: limits.overdraft_s,
            ServiceUnit.VOLUME: limits.overdraft_volume_bytes,
            ServiceUnit.EVENT: limits.overdraft_events,
        }[unit]
        return max(allowance - session.overdraft_used, 0)

    def extend(self, session: LiveSession, seconds: float) -> None:
        """News from a running session: it lives at least ``seconds`` (plus the margin) more."""
        now = self.clock.mono()
        ttl = seconds + self.policy.session_ttl_margin_s
        if now + ttl > session.expires_at:
            session.expires_at = now + ttl
            self.sessions.touch(session.ref.book_key, now, ttl)

    def end_unreported(self, session: LiveSession, *, request_number: int | None = None) -> None:
        """The session ended with nothing more to charge (a CCR-Termination with no usage):
        written behind, or not at all when nothing of it was ever written."""
        self._end(session)
        if session.written or session.ref.book_key in self._behind:
            session.hold_amount = 0
            self._write_behind(session, ReportKind.FINAL, request_number)

    def _end(self, session: LiveSession) -> None:
        book_key = session.ref.book_key
        if self.live.get(book_key) is session:
            del self.live[book_key]
        self.sessions.end(book_key)

    def release_admission(self, reservation_key: str) -> bool:
        """An admitted session that never ran (RADIUS Acct-Status-Type Failed, or a Stop with no
        Start, naming its admission by the Class of its Access-Accept): its hold goes at once,
        not when the ring timeout ends. True when a hold was released."""
        held = self.sessions.held_for(reservation_key) > 0
        self.sessions.end(reservation_key)
        self._admitted_tariffs.pop(reservation_key, None)
        return held

    def supersede(self, session: LiveSession) -> None:
        """A new start for the key of a running session (a CCR-Initial for a Session-Id in use):
        the old session ends here before the new one is admitted; the store closes it with the
        new start, or with the close written behind when the new one is refused."""
        self._end(session)
        if session.written or session.ref.book_key in self._behind:
            session.hold_amount = 0
            self._write_behind(session, ReportKind.CLOSE, reason="superseded")
        else:
            self._behind.pop(session.ref.book_key, None)

    def _forget(self, session: LiveSession) -> None:
        """A session superseded here (its key reused): the store closes it with the new one."""
        self._end(session)
        self._behind.pop(session.ref.book_key, None)

    def expire_sessions(self) -> int:
        """Close the sessions whose grant (plus the margin) ran out with no news. Call after
        ``SessionBook.expire``; the closes are written behind."""
        closed = 0
        for book_key in self.sessions.take_expired():
            session = self.live.pop(book_key, None)
            if session is None:
                continue
            closed += 1
            if session.written or book_key in self._behind:
                session.hold_amount = 0
                self._write_behind(session, ReportKind.CLOSE, reason="grant_ended")
        self.stats.sessions_expired += closed
        return closed

    async def close_origin(self, source: str, origin: str, reason: str) -> int:
        """Accounting-On/Off: every session of ``origin`` is gone."""
        closed = await self.sink.close_sessions(source, origin, reason)
        prefix = f"{source}|{origin}|"
        for key in [k for k in self.live if k.startswith(prefix)]:
            session = self.live.pop(key)
            self._behind.pop(key, None)
            self.sessions.end(session.ref.book_key)
        for _account, key in closed:
            self.sessions.end(SessionId(source, origin, key).book_key)
        return len(closed)

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        """Usage nobody can be charged for is kept (never lost) for operators to reconcile."""
        return await self.sink.record_unmatched(report, identity_kind, identity, reason)

    def unmatched_report(
        self,
        ref: SessionId,
        *,
        kind: ReportKind,
        usage: Usage,
        report_key: str,
        client_at: datetime | None = None,
    ) -> UsageReport:
        """A report that names no account (for ``record_unmatched``)."""
        return self._new_report(
            ref,
            kind,
            report_key,
            account_id=0,
            time_zone=UTC,
            tariff=Tariff(),
            uid=f"{ref.book_key}|{report_key}",
            usage=usage,
            client_at=client_at,
        )

    # --- holds rebuilt at start-up ----------------------------------------------------------

    async def rebuild(self) -> int:
        """Before the listeners open: the sessions this daemon ran when it stopped hold their
        credit again (as the store has it); those whose grant ended meanwhile are closed.
        A session that held nothing (accounting with no admission before it) has no grant
        to end: it runs on here as it would have, closed if no news comes within
        ``grant.max_time_s`` plus the margin. Returns how many hold credit again."""
        generations = await self.sink.open_generations(self.owner)
        wall = self.clock.wall()
        rebuilt = 0
        for found in generations:
            ref = SessionId(found.source, found.origin, found.session_key)
            generation = found.generation
            hold = generation.hold
            if hold is not None and hold.until <= wall:
                closing = LiveSession(
                    ref=ref,
                    account_id=generation.account_id,
                    start_ref=generation.start_ref or new_uid(),
                    tariff=generation.tariff,
                    unit=unit_of_tariff(generation.tariff),
                    time_zone=found.time_zone,
                    identity=None,
                    expires_at=0.0,
                    start_key=generation.start_key or "start",
                    written=True,
                    generation=generation,
                )
                # Closed with what it reported: its grant is not known from the store.
                self._behind[ref.book_key] = (
                    closing,
                    ReportKind.CLOSE,
                    None,
                    "grant_ended_while_stopped",
                )
                continue
            snapshot = self.cache.get(generation.account_id)
            zone = snapshot.time_zone if snapshot is not None else found.time_zone
            session = self._resume(ref, generation, _zone_only(generation.account_id, zone))
            if hold is None:
                continue  # nothing to hold: it expires as _resume set (max_time_s + margin)
            session.expires_at = self.clock.mono() + (
                (hold.until - wall).total_seconds() + self.policy.session_ttl_margin_s
            )
            rebuilt += 1
        self.stats.holds_rebuilt = rebuilt
        if self._behind:
            self._behind_wakeup.set()
        return rebuilt

    # --- the ledger's reports ---------------------------------------------------------------

    def _report(
        self,
        session: LiveSession,
        kind: ReportKind,
        report_key: str,
        *,
        usage: Usage = NO_USAGE,
        counting: Counting = Counting.CUMULATIVE,
        wire_key: str | None = None,
        client_at: datetime | None = None,
        request_number: int | None = None,
        close_reason: str | None = None,
        timed: bool = False,
    ) -> UsageReport:
        if kind is ReportKind.OPEN:
            wire_key = session.start_wire_key
        return self._new_report(
            session.ref,
            kind,
            report_key,
            account_id=session.account_id,
            time_zone=session.time_zone,
            tariff=session.tariff,
            usage=usage,
            counting=counting,
            wire_key=wire_key,
            start_ref=session.start_ref,
            client_at=client_at,
            request_number=request_number,
            close_reason=close_reason,
            hold=self._hold(session) if kind in (ReportKind.OPEN, ReportKind.USAGE) else None,
            timed=timed,
        )

    def _new_report(
        self,
        ref: SessionId,
        kind: ReportKind,
        report_key: str,
        *,
        account_id: int,
        time_zone: tzinfo,
        tariff: Tariff,
        uid: str | None = None,
        **details: Any,
    ) -> UsageReport:
        """A report about ``ref``, received now (``details``: the rest of ``Report``'s fields)."""
        return UsageReport(
            source=ref.source,
            origin=ref.origin,
            session_key=ref.key,
            entry=Report(
                kind=kind,
                account_id=account_id,
                uid=uid or new_uid(),
                report_key=report_key,
                received_at=self.clock.wall(),
                time_zone=time_zone,
                tariff=tariff,
                **details,
            ),
        )

    def _hold(self, session: LiveSession) -> Hold | None:
        """The session's hold as the store keeps it (the end as a wall-clock instant)."""
        if not session.hold_amount:
            return None
        left = session.hold_until - self.clock.mono()
        return Hold(amount=session.hold_amount, until=self.clock.wall() + timedelta(seconds=left))

    async def _record(
        self, report: UsageReport, session: LiveSession | None = None
    ) -> UsageOutcome:
        outcome = await self.sink.record(report)
        account = report.account_id
        if outcome.snapshot is not None:
            self.cache.put(outcome.snapshot, self.clock.mono(), outcome.version)
        elif outcome.spooled and session is not None:
            # Not in the database yet: charge the cached figures by the same ledger on this
            # process's copy of the session, so the next decisions see the usage while
            # PostgreSQL is away. The sidecar reloads the truth once it is back.
            step = apply_report([self._generation_of(session)], report.entry)
            cached = self.cache.get(account)
            if step.generation is not None:
                session.usage = step.generation.usage
                session.charged = step.generation.charged
            if cached is not None and step.charged:
                snapshot = cached.replace(balance=cached.balance - step.charged)
                self.cache.put(snapshot, self.cache.loaded_at(account), self.cache.version(account))
        if session is not None:
            # Its generation is in the store (or the spool) now, opened by this report when
            # the start was still queued behind: a later close must be written, not dropped
            # with the queued start as if nothing of the session had been.
            session.written = True
            if outcome.generation is not None:
                self._adopt_generation(session, outcome.generation)
        return outcome

    def _generation_of(self, session: LiveSession) -> Generation:
        if session.generation is not None:
            return replace(session.generation, usage=session.usage, charged=session.charged)
        return Generation(
            ref=None,
            generation=1,
            account_id=session.account_id,
            start_ref=session.start_ref,
            started_at=self.clock.wall(),
            tariff=session.tariff,
            usage=session.usage,
            charged=session.charged,
            start_key=session.start_key,
        )

    @staticmethod
    def _adopt_generation(session: LiveSession, generation: Generation) -> None:
        if generation.start_ref == session.start_ref or session.generation is None:
            session.generation = generation
            session.usage = generation.usage
            session.charged = generation.charged

    # --- writes behind the answers ----------------------------------------------------------

    def _write_behind(
        self,
        session: LiveSession,
        kind: ReportKind,
        request_number: int | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        """Queue a change that moves no money (a start, a hold, an end without usage) for the
        next flush; the report is built then, from the session as it is. A newer change of the
        same session replaces the older one, and a session that ends before its start was
        written is never written at all. Past ``behind_max`` queued, starts and holds are
        dropped (counted) but not the end of a session the store has: dropped, it would leave
        the generation open there with its hold (such ends are as many as the sessions that
        ran here, at most)."""
        book_key = session.ref.book_key
        pending = self._behind.get(book_key)
        if pending is not None:
            self.stats.behind_coalesced += 1
            if (
                kind is not ReportKind.OPEN
                and pending[1] is ReportKind.OPEN
                and not session.written
                and pending[0] is session
            ):
                del self._behind[book_key]  # started and ended between two flushes
                return
        elif len(self._behind) >= self.behind_max and not _an_end_to_keep(session, kind):
            self.stats.behind_failed += 1
            return
        self._behind[book_key] = (session, kind, request_number, reason)
        if len(self._behind) == 1:
            self._behind_wakeup.set()

    def _behind_report(
        self,
        session: LiveSession,
        kind: ReportKind,
        request_number: int | None,
        reason: str | None,
    ) -> UsageReport:
        if kind is ReportKind.OPEN:
            return self._report(session, kind, session.start_key)
        if kind is ReportKind.FINAL:
            key = f"n={request_number}" if request_number is not None else "final"
            return self._report(
                session, kind, key, request_number=request_number, close_reason="final"
            )
        usage = NO_USAGE
        if reason == "grant_ended" and self.charge_unended:
            # No Stop, no CCR-T: charged what it was granted (its whole time when the client
            # counts cumulatively; its last, unreported quota when it reports increments).
            seconds = (
                session.granted_s
                if session.counting is Counting.CUMULATIVE
                else (session.unreported_s)
            )
            usage = Usage(seconds=seconds) if seconds > 0 else NO_USAGE
        return self._report(
            session,
            kind,
            "close",
            usage=usage,
            counting=session.counting,
            close_reason=reason or "closed",
        )

    async def flush_behind(self) -> int:
        """Write what is queued behind the answers; returns how many reports were written."""
        if not self._behind:
            return 0
        batch = [
            (book_key, entry, self._behind_report(*entry))
            for book_key, entry in self._behind.items()
        ]
        self._behind.clear()
        results = await asyncio.gather(
            *(self.sink.record(report) for _, _, report in batch), return_exceptions=True
        )
        written = 0
        for (book_key, entry, _report), result in zip(batch, results, strict=True):
            session = entry[0]
            if isinstance(result, BaseException):
                self.stats.behind_failed += 1
                if not isinstance(result, SourceUnavailable | SpoolFull):
                    log.error("write behind failed: %r", result)
                if book_key not in self._behind and (
                    len(self._behind) < self.behind_max or _an_end_to_keep(session, entry[1])
                ):
                    self._behind[book_key] = entry  # kept for the next flush
                continue
            written += 1
            if entry[1] is ReportKind.OPEN:
                session.written = True
                if result.generation is not None:
                    self._adopt_generation(session, result.generation)
        self.stats.behind_written += written
        return written

    async def run_write_behind(self) -> None:
        """The flusher: every ``write_behind_s`` while anything is queued."""
        while True:
            await self._behind_wakeup.wait()
            self._behind_wakeup.clear()
            await asyncio.sleep(self.policy.write_behind_s)
            try:
                await self.flush_behind()
            except Exception:
                log.exception("write behind round failed")
            if self._behind:
                self._behind_wakeup.set()

    @property
    def behind_depth(self) -> int:
        return len(self._behind)

    # --- one-shot events --------------------------------------------------------------------

    def tariff_for(
        self, snapshot: AccountSnapshot, destination: Destination | None
    ) -> Tariff | None:
        """What prices a session of the account to ``destination`` now (its own tariff when it
        has no rate plan); None: no rate."""
        if self.rates is None or snapshot.terms.rate_plan_id is None:
            return snapshot.tariff
        match = self.rates.rate_for(snapshot, called_number(destination), self.clock.wall())
        return match.tariff if match is not None else None

    def has_credit(self, snapshot: AccountSnapshot) -> bool:
        """CHECK_BALANCE: would the account's credit, less what its sessions hold, pay
        anything now?"""
        reserved = self.sessions.reserved(snapshot.account_id)
        return available_credit(snapshot, self.clock.wall(), reserved) > 0

    @staticmethod
    def price(tariff: Tariff, unit: ServiceUnit, amount: int) -> int:
        """PRICE_ENQUIRY: what ``amount`` units cost at ``tariff`` (micro-units)."""
        return usage_charge(tariff, usage_of(unit, amount))

    async def refund(
        self,
        snapshot: AccountSnapshot,
        tariff: Tariff,
        unit: ServiceUnit,
        amount: int,
        idempotency_key: str,
    ) -> int:
        """REFUND_ACCOUNT: the price of the units (at ``tariff``) back to the account, once
        per key."""
        refund = usage_charge(tariff, usage_of(unit, amount))
        credited = await self.sink.credit(
            snapshot.account_id, refund, idempotency_key, "diameter REFUND_ACCOUNT"
        )
        if credited is not None:
            self.cache.put(credited, self.clock.mono())
        return refund

    async def direct_debit(
        self,
        ref: SessionId,
        identity: tuple[IdentityKind, str],
        *,
        unit: ServiceUnit,
        amount: int,
        report_key: str,
        wire_key: str | None = None,
        client_at: datetime | None = None,
        destination: Destination | None = None,
    ) -> tuple[CreditDecision, UsageOutcome | None]:
        """DIRECT_DEBITING: admitted like a new session for exactly ``amount`` units, then
        charged at once (one generation, opened and closed) at the destination's rate."""
        decision = await self.admit(*identity, unit=unit, requested=amount, destination=destination)
        if not decision.admitted:
            return decision, None
        if decision.granted_units < amount:
            return replace(decision, admitted=False, reason=RefusalReason.INSUFFICIENT_CREDIT), None
        snapshot = await self.account(*identity)
        if snapshot is None:
            return _unknown(unit), None
        tariff = self.tariff_for(snapshot, destination) or snapshot.tariff
        report = self._new_report(
            ref,
            ReportKind.EVENT,
            report_key,
            account_id=snapshot.account_id,
            time_zone=snapshot.time_zone,
            tariff=tariff,
            usage=usage_of(unit, amount),
            counting=Counting.INCREMENT,
            wire_key=wire_key,
            client_at=client_at,
            close_reason="event",
        )
        return decision, await self._record(report)


class UnknownSession(LookupError):
    """A report for a session key nobody recorded, that names no account either."""

    def __init__(self, ref: SessionId) -> None:
        super().__init__(f"no session {ref.key!r} of {ref.origin!r} is known")
        self.ref = ref


class CalledNumber:
    """A called number as a client sent it, with that client's dial plan: normalised only
    when an account with a rate plan needs it (most decisions never do)."""

    __slots__ = ("plan", "raw")

    def __init__(self, raw: str, plan: DialPlan) -> None:
        self.raw = raw
        self.plan = plan

    def __str__(self) -> str:
        return self.raw


Destination = str | CalledNumber


def called_number(destination: Destination | None) -> str:
    """A called number as the rate lookup wants it (E.164 digits), "" when there is none or it
    is not one (a rate plan may price "" too: then every call gets that rate). A plain string
    is read as international (``+``, ``00``, or digits that start with the country code)."""
    if not destination:
        return ""
    try:
        if isinstance(destination, CalledNumber):
            return normalize_destination(destination.raw, destination.plan)
        return normalize_destination(destination)
    except IdentityError:
        return ""


def _an_end_to_keep(session: LiveSession, kind: ReportKind) -> bool:
    """The end of a session whose generation the store has (a start or a hold is not)."""
    return session.written and kind is not ReportKind.OPEN


def _zone_only(account_id: int, zone: tzinfo) -> AccountSnapshot:
    """A stand-in snapshot carrying only an account's time zone (holds rebuilt before the
    account is cached)."""
    return AccountSnapshot(account_id=account_id, name="", time_zone=zone)


def sessions_of(charging: Charging, keys: Iterable[str]) -> list[LiveSession]:
    """The live sessions among ``keys`` (book keys)."""
    return [s for k in keys if (s := charging.live.get(k)) is not None]
