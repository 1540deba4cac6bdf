"""An unknown identity never costs more than one database read per negative-cache TTL, and none
when the cache holds every account (issue 14). Queries are counted by a wrapper around the real
asyncpg pool that the pipeline's account source uses; the sidecar runs for real (LISTEN/NOTIFY
on its own connection) while usage and payments change accounts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from ocs.admin.demo import load_demo
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.core.identity import IdentityKind
from ocs.core.model import GrantLimits, RefusalReason
from ocs.metrics import Metrics
from ocs.store import accounts as store
from ocs.store.sidecar import Sidecar
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration

USER = IdentityKind.USER_NAME


class CountingPool:
    """The real pool; every query made through it is counted (with its SQL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.queries: list[str] = []

    async def fetchrow(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.queries.append(sql)
        return await self._pool.fetchrow(sql, *args, **kw)

    async def fetch(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.queries.append(sql)
        return await self._pool.fetch(sql, *args, **kw)

    async def fetchval(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.queries.append(sql)
        return await self._pool.fetchval(sql, *args, **kw)

    async def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.queries.append(sql)
        return await self._pool.execute(sql, *args, **kw)

    def acquire(self, *args: Any, **kw: Any) -> Any:
        self.queries.append("acquire")
        return self._pool.acquire(*args, **kw)

    def lookups(self) -> int:
        return sum("account_identities" in q for q in self.queries)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def mono(self) -> float:
        return self.now


async def _setup(
    dsn: str, *, full_load: bool, negative_ttl_s: float = 10.0
) -> tuple[asyncpg.Pool, CountingPool, Charging, Sidecar, Clock, asyncio.Task[None]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await load_demo(conn)
        watermark = await conn.fetchval("SELECT now()")
        entries, identities = await store.load_all(conn)
    clock = Clock()
    cache = AccountCache(negative_ttl_s=negative_ttl_s)
    if full_load:
        cache.adopt_all(entries, identities, loaded_at=clock.mono())
    else:  # a cache that was never fully loaded: only prepaid-ok and postpaid
        keep = [s for s in entries.values() if s.name in ("prepaid-ok", "postpaid")]
        cache.replace_all(keep, [("user_name", s.name, s.account_id) for s in keep], clock.mono())
    counting = CountingPool(pool)
    source = PostgresAccounts(counting, metrics=Metrics())  # type: ignore[arg-type]
    charging = Charging(
        cache=cache,
        sessions=SessionBook(),
        source=source,
        sink=source,
        limits=GrantLimits(),
        policy=CachePolicy(),
        clock=clock,
    )
    sidecar = Sidecar(
        pool=pool,
        dsn=dsn,
        cache=cache,
        charging=charging,
        metrics=Metrics(),
        sink=None,
        refresh_interval_s=0.2,
        query_timeout_s=5.0,
        watermark=watermark,
    )
    task = asyncio.create_task(sidecar.run())
    await asyncio.wait_for(sidecar.listening.wait(), 10)
    return pool, counting, charging, sidecar, clock, task


async def _change_accounts(dsn: str, times: int) -> None:
    """Other writers changing accounts (each commit NOTIFYs ocs_account_changed)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(times):
            await conn.execute(
                "INSERT INTO ledger_entries (account_id, kind, amount) "
                "SELECT id, 'payment', 0.01 FROM accounts WHERE name = 'postpaid'"
            )
    finally:
        await conn.close()


async def _stop(pool: asyncpg.Pool, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pool.close()


async def test_a_fully_loaded_cache_answers_unknown_identities_without_a_query(dsn: str) -> None:
    pool, counting, charging, _sidecar, clock, task = await _setup(dsn, full_load=True)
    try:
        assert charging.cache.authoritative
        for n in range(2000):
            decision = await charging.admit(USER, f"nobody-{n % 500}")
            assert decision.reason is RefusalReason.UNKNOWN_ACCOUNT
            assert await charging.account(USER, f"stranger-{n}") is None
            if n % 400 == 0:
                await _change_accounts(dsn, 5)  # notifications flow meanwhile
                clock.now += 30  # past the negative TTL: still no query
        assert counting.lookups() == 0, counting.queries
        assert charging.stats.authoritative_unknowns == 4000
        # A known account is decided from the cache too.
        assert (await charging.admit(USER, "postpaid")).admitted
        assert counting.lookups() == 0

        # A new account and identity arrive by NOTIFY: found without a query of ours.
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO accounts (name, credit_limit, tariff_id) "
                "SELECT 'newcomer', 10, tariff_id FROM accounts WHERE name = 'postpaid'"
            )
            await conn.execute(
                "INSERT INTO account_identities (account_id, kind, value) "
                "SELECT id, 'user_name', 'newcomer' FROM accounts WHERE name = 'newcomer'"
            )
        finally:
            await conn.close()
        for _ in range(200):
            if charging.cache.account_for(USER, "newcomer") is not None:
                break
            await asyncio.sleep(0.01)
        decision = await charging.admit(USER, "newcomer")
        assert decision.admitted, decision
        assert counting.lookups() == 0
    finally:
        await _stop(pool, task)


async def test_an_unknown_identity_costs_one_read_per_negative_ttl(dsn: str) -> None:
    pool, counting, charging, sidecar, clock, task = await _setup(
        dsn, full_load=False, negative_ttl_s=10.0
    )
    try:
        assert not charging.cache.authoritative

        async def flood(name: str, requests: int) -> None:
            await asyncio.gather(*(charging.admit(USER, name) for _ in range(requests // 2)))
            for _ in range(requests // 2):
                assert await charging.account(USER, name) is None

        await flood("nobody", 1000)  # concurrent and sequential, within one TTL
        assert counting.lookups() == 1
        await _change_accounts(dsn, 20)  # other accounts change: the negative entry stays
        await asyncio.sleep(0.3)
        assert sidecar.changes_applied > 0
        await flood("nobody", 1000)
        assert counting.lookups() == 1
        clock.now += 10.5  # the TTL has passed: one more read, then remembered again
        await flood("nobody", 1000)
        assert counting.lookups() == 2
        await flood("someone-else", 200)
        assert counting.lookups() == 3

        # An identity added for a formerly unknown name leaves the negative cache by NOTIFY.
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO account_identities (account_id, kind, value) "
                "SELECT id, 'user_name', 'nobody' FROM accounts WHERE name = 'postpaid'"
            )
        finally:
            await conn.close()
        for _ in range(200):
            if charging.cache.account_for(USER, "nobody") is not None:
                break
            await asyncio.sleep(0.01)
        assert (await charging.admit(USER, "nobody")).admitted
        assert counting.lookups() == 3
    finally:
        await _stop(pool, task)
