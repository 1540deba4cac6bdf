"""The charging pipeline: the one place where cache, credit core, sessions and usage meet.

Rules of this file:
- Protocol adapters call ``admit_cached`` first: a pure dictionary-and-arithmetic decision that
  never awaits. Only when it returns ``None`` (unknown to the cache, or too old) do they await
  ``admit``, which asks the database once per account however many requests wait (single
  flight), within ``load_timeout_s``.
- An identity the cache does not hold costs at most one database read per negative-cache TTL,
  and none at all when the cache is authoritative (a full load holds every account; new
  identities arrive by NOTIFY).
- A value the database refuses as data (``SourceRefused``: a NUL, bad UTF-8, a value too
  long) is the input's fault: the request is answered as for an unknown subscriber, and the
  database is not taken for down (no retry pause, no stale policy).
- With the database unreachable, an entry older than ``ttl_s`` still decides until it is
  ``max_stale_s`` old; after that the ``on_stale`` policy answers, and it is counted.
- Usage is acknowledged only after ``UsageSink.record`` returns (committed, or spooled by the
  sink). The account's new figures replace the cached ones at once, so the next decision sees
  the charge without waiting for the cache to expire.
- The store and the sidecar implement the ``AccountSource`` and ``UsageSink`` protocols declared
  here; this module knows no SQL and no wire format.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ocs.charging.cache import AccountCache
from ocs.charging.sessions import SessionBook
from ocs.core.credit import decide
from ocs.core.identity import IdentityKind
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
from ocs.core.rating import event_charge, time_charge, usage_charge, volume_charge

log = logging.getLogger(__name__)


class SourceUnavailable(Exception):
    """The database could not answer (down, timed out, or failing)."""


class SourceRefused(ValueError):
    """The database refused a value as data (asyncpg ``DataError`` and the like): the input
    is bad, the database is fine."""


class SpoolFull(RuntimeError):
    """Neither the database nor the local spool can take usage now: do not acknowledge it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    """Cumulative usage of one session so far, from one accounting message.

    ``idempotency_key`` identifies the message (RADIUS: NAS, Acct-Session-Id, status type and
    the cumulative figures; Diameter: Session-Id and CC-Request-Number): a repeat is a no-op.
    """

    source: str
    origin: str
    session_key: str
    account_id: int
    idempotency_key: str
    usage: Usage
    final: bool
    occurred_at: datetime
    close_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageOutcome:
    charged: int  # micro-units charged by this report (0 for a repeat)
    duplicate: bool
    snapshot: AccountSnapshot | None  # the account's figures after the report, when known
    spooled: bool = False  # kept in the local spool until the database is back
    version: Any = None  # the snapshot's change stamp, for the cache


class AccountSource(Protocol):
    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        """The account an identity (in normal form) belongs to, or None."""
        ...

    async def load_account(self, account_id: int) -> AccountSnapshot | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenSession:
    """What the database knows of a running session: its account and cumulative usage."""

    account_id: int
    usage: Usage


class UsageSink(Protocol):
    async def record(self, report: UsageReport, total_amount: int) -> UsageOutcome:
        """Make the report durable; ``total_amount`` is the session's cumulative charge."""
        ...

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        """Close every open session of ``origin``; returns (account id, session key) pairs."""
        ...

    async def record_unmatched(
        self,
        report: UsageReport,
        identity_kind: str,
        identity: str,
        *,
        reason: str = "unknown_identity",
    ) -> bool:
        """Keep usage that no account can be charged for (``reason``: why); True unless it
        was a repeat."""
        ...

    async def open_session(self, source: str, origin: str, session_key: str) -> OpenSession | None:
        """A session still open in the database (after a restart forgot it in memory)."""
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


class Clock(Protocol):
    def wall(self) -> datetime: ...
    def mono(self) -> float: ...


class SystemClock:
    def wall(self) -> datetime:
        return datetime.now(UTC)

    def mono(self) -> float:
        return asyncio.get_running_loop().time()


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
    ) -> None:
        self.cache = cache
        self.sessions = sessions
        self.source = source
        self.sink = sink
        self.limits = limits
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.stats = PipelineStats()
        self._inflight: dict[tuple[str, object], asyncio.Future[AccountSnapshot | None]] = {}
        self.on_decision: Callable[[CreditDecision], None] | None = None
        # The database is not asked while it is known to be away (the sidecar says so, or a
        # load just failed): requests are decided from the cache at once instead of waiting.
        self.source_healthy = True
        self._source_retry_at = 0.0
        # What each running session was charged so far, to charge spooled usage locally.
        self._session_totals: dict[str, int] = {}

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
        unit: ServiceUnit = ServiceUnit.TIME,
        requested: int | None = None,
        reservation_key: str | None = None,
    ) -> CreditDecision | None:
        """Decide from the cache alone, or return None when the database must be asked."""
        now = self.clock.mono()
        account_id = self.cache.account_for(kind, value)
        if account_id is None:
            if self.cache.authoritative:
                self.stats.cache_hits += 1
                self.stats.authoritative_unknowns += 1
                return self._count(_unknown(unit))
            if self.cache.known_unknown(kind, value, now):
                self.stats.cache_hits += 1
                return self._count(_unknown(unit))
            return None
        snapshot = self.cache.get(account_id)
        if snapshot is None or self.cache.age_s(account_id, now) > self.policy.ttl_s:
            return None
        self.stats.cache_hits += 1
        return self._decide(snapshot, unit, requested, reservation_key, now)

    async def admit(
        self,
        kind: IdentityKind,
        value: str,
        *,
        unit: ServiceUnit = ServiceUnit.TIME,
        requested: int | None = None,
        reservation_key: str | None = None,
    ) -> CreditDecision:
        """Decide for a new session, asking the database when the cache cannot answer."""
        cached = self.admit_cached(
            kind, value, unit=unit, requested=requested, reservation_key=reservation_key
        )
        if cached is not None:
            return cached
        self.stats.cache_misses += 1
        if not self._source_usable(self.clock.mono()):
            return self._decide_without_database(kind, value, unit, requested, reservation_key)
        try:
            snapshot = await self._single_flight(
                ("identity", (kind, value)), lambda: self.source.find_account(kind, value)
            )
        except SourceUnavailable:
            self._source_retry_at = self.clock.mono() + 1.0
            return self._decide_without_database(kind, value, unit, requested, reservation_key)
        except SourceRefused:
            self.stats.source_refused += 1
            snapshot = None
        now = self.clock.mono()
        if snapshot is None:
            self.stats.unknown_identities += 1
            self.cache.remember_unknown(kind, value, now)
            return self._count(_unknown(unit))
        self.cache.put(snapshot, now)
        self.cache.add_identity(kind, value, snapshot.account_id)
        return self._decide(snapshot, unit, requested, reservation_key, now)

    def _decide_without_database(
        self,
        kind: IdentityKind,
        value: str,
        unit: ServiceUnit,
        requested: int | None,
        reservation_key: str | None,
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
            return self._decide(entry, unit, requested, reservation_key, now)
        self.stats.stale_policy_applied += 1
        if self.policy.on_stale == "accept":
            if entry is not None:
                decision = self._decide(entry, unit, requested, reservation_key, now)
                if decision.admitted:
                    return decision
            cap = (
                self.limits.max_time_s if unit is ServiceUnit.TIME else self.limits.max_volume_bytes
            )
            return self._count(
                CreditDecision(
                    admitted=True,
                    reason=None,
                    unit=unit,
                    granted_units=min(cap, requested) if requested else cap,
                    available=0,
                    effective_limit=0,
                )
            )
        return self._count(
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
        unit: ServiceUnit,
        requested: int | None,
        reservation_key: str | None,
        now: float,
    ) -> CreditDecision:
        account = snapshot.account_id
        request = SessionRequest(
            unit=unit,
            active_sessions=self.sessions.active_sessions(account),
            setups_last_s=self.sessions.setups_in_window(account, now),
            reserved=self.sessions.reserved(account),
            requested_units=requested,
        )
        decision = decide(snapshot, request, self.clock.wall(), self.limits)
        if decision.admitted and reservation_key is not None:
            amount = grant_cost(snapshot.tariff, unit, decision.granted_units, new_session=True)
            self.sessions.admit(
                reservation_key, account, amount, now, self.policy.pending_reservation_ttl_s
            )
        return self._count(decision)

    def _count(self, decision: CreditDecision) -> CreditDecision:
        key = "admitted" if decision.admitted else str(decision.reason)
        self.stats.decisions[key] = self.stats.decisions.get(key, 0) + 1
        if self.on_decision is not None:
            self.on_decision(decision)
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
        except (TimeoutError, SourceUnavailable, OSError) as exc:
            error = SourceUnavailable(str(exc) or type(exc).__name__)
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise error from exc
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

    # --- running sessions and usage ---------------------------------------------------------

    @staticmethod
    def book_key(source: str, origin: str, session_key: str) -> str:
        return f"{source}|{origin}|{session_key}"

    def session_started(
        self, source: str, origin: str, session_key: str, account_id: int, expected_s: float
    ) -> None:
        """Count a running session (and let it claim its account's pending reservation)."""
        ttl = expected_s + self.policy.session_ttl_margin_s
        key = self.book_key(source, origin, session_key)
        self.sessions.start(key, account_id, self.clock.mono(), ttl)

    async def record_usage(self, report: UsageReport, tariff: Tariff) -> UsageOutcome:
        """Rate the session's cumulative usage and make it durable; then refresh the cache."""
        total = usage_charge(tariff, report.usage)
        key = self.book_key(report.source, report.origin, report.session_key)
        outcome = await self.sink.record(report, total)
        if outcome.snapshot is not None:
            self.cache.put(outcome.snapshot, self.clock.mono(), outcome.version)
        elif outcome.spooled:
            # Not in the database yet: charge the cached figures, so the next decisions see the
            # usage while PostgreSQL is away. The sidecar reloads the truth once it is back.
            delta = max(total - self._session_totals.get(key, 0), 0)
            cached = self.cache.get(report.account_id)
            if cached is not None and delta:
                account = report.account_id
                snapshot = cached.replace(balance=cached.balance - delta)
                self.cache.put(snapshot, self.cache.loaded_at(account), self.cache.version(account))
        if not outcome.duplicate:
            self._session_totals[key] = max(total, self._session_totals.get(key, 0))
        if report.final:
            self.sessions.end(key)
            self._session_totals.pop(key, None)
        else:
            ttl = self.limits.max_time_s + self.policy.session_ttl_margin_s
            self.sessions.touch(key, self.clock.mono(), ttl)
        return outcome

    async def record_unmatched(
        self,
        report: UsageReport,
        identity_kind: str,
        identity: str,
        *,
        reason: str = "unknown_identity",
    ) -> bool:
        """Usage nobody can be charged for is kept (never lost) for operators to reconcile;
        ``reason`` says why (unknown_identity, an ``IdentityProblem``, ...)."""
        return await self.sink.record_unmatched(report, identity_kind, identity, reason=reason)

    async def open_session(self, source: str, origin: str, session_key: str) -> OpenSession | None:
        """A running session this process does not know (it restarted): from the database."""
        if not self._source_usable(self.clock.mono()):
            raise SourceUnavailable("the database is unavailable")
        return await self.sink.open_session(source, origin, session_key)

    async def credit(self, account_id: int, amount: int, idempotency_key: str, note: str) -> None:
        """Credit the account (a refund of units); the cache sees it at once."""
        snapshot = await self.sink.credit(account_id, amount, idempotency_key, note)
        if snapshot is not None:
            self.cache.put(snapshot, self.clock.mono())

    async def close_origin(self, source: str, origin: str, reason: str) -> int:
        """Accounting-On/Off: every session of ``origin`` is gone."""
        closed = await self.sink.close_sessions(source, origin, reason)
        for _account, key in closed:
            self.sessions.end(self.book_key(source, origin, key))
        return len(closed)
