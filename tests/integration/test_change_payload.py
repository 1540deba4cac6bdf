"""A usage batch's change announcement carries its figures (migration 0062), against a real
PostgreSQL: a process whose cached snapshot is the one the batch changed takes the new balance,
unbilled amount and period from the announcement without a query; any other process re-reads
the account as before. Either way each cache ends equal to the database, to the micro-unit.

Two sidecars listen, each with its own cache, as two daemon processes would; the usage is
written by the real group-commit writer. Queries are counted on the sidecars' pools.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from test_negative_cache import Clock, CountingPool
from test_usage_writer import account_id, report

from ocs.admin.demo import load_demo
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.core.identity import IdentityKind
from ocs.core.model import GrantLimits
from ocs.metrics import Metrics
from ocs.store import accounts as store
from ocs.store.accounts import VERSIONED_SNAPSHOT_COLUMNS, snapshot_from_row
from ocs.store.sidecar import Sidecar
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Listener:
    """One process's view: a cache fed by its own sidecar, whose pool counts its queries."""

    cache: AccountCache
    sidecar: Sidecar
    pool: CountingPool
    task: asyncio.Task[None]

    def reads(self) -> int:
        return self.pool.queries.count("acquire")


@pytest.fixture
async def setup(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, PostgresAccounts, list[Listener]]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    async with pool.acquire() as conn:
        await load_demo(conn)
        watermark = await conn.fetchval("SELECT now()")
    listeners = []
    for _ in range(2):
        async with pool.acquire() as conn:
            entries, identities = await store.load_all(conn)
        clock = Clock()
        cache = AccountCache()
        cache.adopt_all(entries, identities, loaded_at=clock.mono())  # no stamps kept
        counting = CountingPool(pool)
        charging = Charging(
            cache=cache,
            sessions=SessionBook(),
            source=PostgresAccounts(counting, metrics=Metrics()),  # type: ignore[arg-type]
            sink=None,  # the writer below records; this process only listens
            limits=GrantLimits(),
            policy=CachePolicy(),
            clock=clock,
        )
        sidecar = Sidecar(
            pool=counting,  # type: ignore[arg-type]
            dsn=dsn,
            cache=cache,
            charging=charging,
            metrics=Metrics(),
            sink=None,
            refresh_interval_s=3600.0,  # no poll during a test: only announcements count
            query_timeout_s=5.0,
            watermark=watermark,
        )
        task = asyncio.create_task(sidecar.run())
        await asyncio.wait_for(sidecar.listening.wait(), 10)
        listeners.append(Listener(cache, sidecar, counting, task))
    await asyncio.sleep(0.2)  # the first poll after LISTEN is done
    writer = PostgresAccounts(pool, metrics=Metrics(), owner="writer")
    yield pool, writer, listeners
    for listener in listeners:
        listener.task.cancel()
        await asyncio.gather(listener.task, return_exceptions=True)
    await writer.drain(5)
    await pool.close()


async def row(pool: asyncpg.Pool, account: int) -> tuple[Any, ...]:
    found = await pool.fetchrow(
        f"SELECT {VERSIONED_SNAPSHOT_COLUMNS} FROM account_snapshots WHERE account_id = $1",
        account,
    )
    assert found is not None
    return tuple(found)


async def settled(listeners: list[Listener], done: Callable[[Listener], bool]) -> None:
    for _ in range(200):
        if all(done(listener) for listener in listeners):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the announcement was not applied within 2 s")


async def first_change(setup: Any) -> tuple[Any, PostgresAccounts, list[Listener], int, Any]:
    """A first usage batch on ``postpaid``, applied by both listeners (which stamps their
    entries): the state each test starts from."""
    pool, writer, listeners = setup
    account = await account_id(pool, "postpaid")
    first = await writer.record(report(account, "call-1", 60))
    await settled(listeners, lambda x: x.cache.version(account) == first.version)
    return pool, writer, listeners, account, first


def micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


async def test_a_cached_snapshot_takes_a_usage_change_without_a_query(setup: Any) -> None:
    pool, writer, listeners, account, first = await first_change(setup)
    assert first.charged == 6_000
    truth = await row(pool, account)
    for x in listeners:
        assert x.cache.get(account) == snapshot_from_row(truth)

    taken = [x.sidecar.changes_taken for x in listeners]
    reads = [x.reads() for x in listeners]
    second = await writer.record(report(account, "call-2", 90))
    assert second.charged == 9_000
    await settled(listeners, lambda x: x.cache.version(account) == second.version)
    truth = await row(pool, account)
    for x, was, before in zip(listeners, taken, reads, strict=True):
        assert x.sidecar.changes_taken == was + 1
        assert x.reads() == before  # no query for it
        snapshot = x.cache.get(account)
        assert snapshot == snapshot_from_row(truth)
        assert snapshot is not None and snapshot.balance == truth[3]  # to the micro-unit
        assert (snapshot.unbilled, snapshot.unbilled_period) == (truth[7], truth[8])
        assert x.cache.version(account) == truth[-1]


async def test_an_entry_without_a_stamp_is_re_read(setup: Any) -> None:
    pool, writer, listeners = setup
    account = await account_id(pool, "postpaid")
    x = listeners[0]
    async with pool.acquire() as conn:  # a fresh bulk load keeps no stamps
        entries, identities = await store.load_all(conn)
    x.cache.adopt_all(entries, identities, loaded_at=0.0)
    assert x.cache.version(account) is None
    taken, reads = x.sidecar.changes_taken, x.reads()
    done = await writer.record(report(account, "call-1", 60))
    await settled([x], lambda x: x.cache.version(account) == done.version)
    assert x.sidecar.changes_taken == taken
    assert x.reads() == reads + 1
    assert x.cache.get(account) == snapshot_from_row(await row(pool, account))


async def test_a_change_of_another_kind_in_between_is_read_and_the_next_usage_follows_it(
    setup: Any,
) -> None:
    pool, writer, listeners, account, _first = await first_change(setup)
    await pool.execute("UPDATE accounts SET credit_limit = credit_limit + 7 WHERE id = $1", account)
    truth = await row(pool, account)
    await settled(listeners, lambda x: x.cache.version(account) == truth[-1])
    taken = [x.sidecar.changes_taken for x in listeners]
    second = await writer.record(report(account, "call-2", 30))
    await settled(listeners, lambda x: x.cache.version(account) == second.version)
    truth = await row(pool, account)
    for x, was in zip(listeners, taken, strict=True):
        assert x.sidecar.changes_taken == was + 1
        snapshot = x.cache.get(account)
        assert snapshot == snapshot_from_row(truth)
        assert snapshot is not None and snapshot.credit_limit == truth[4]


async def test_a_cache_that_missed_a_change_re_reads_the_account(setup: Any) -> None:
    pool, writer, listeners, account, first = await first_change(setup)
    # The second process holds an older row than the one the next batch changes (as if it had
    # missed an announcement): the batch's figures must not be laid over it.
    behind = listeners[1]
    snapshot = behind.cache.get(account)
    assert snapshot is not None
    behind.cache.remove(account)
    stale = snapshot.replace(credit_limit=snapshot.credit_limit + 1)
    assert behind.cache.put(stale, 0.0, first.version - timedelta(seconds=1))
    taken = [x.sidecar.changes_taken for x in listeners]
    reads = behind.reads()
    second = await writer.record(report(account, "call-2", 30))
    await settled(listeners, lambda x: x.cache.version(account) == second.version)
    truth = await row(pool, account)
    assert behind.reads() == reads + 1
    assert [x.sidecar.changes_taken for x in listeners] == [taken[0] + 1, taken[1]]
    for x in listeners:
        assert x.cache.get(account) == snapshot_from_row(truth)


async def test_the_writing_process_already_holds_its_own_change(setup: Any) -> None:
    pool, writer, listeners, account, first = await first_change(setup)
    own = listeners[0]
    taken, current, reads = own.sidecar.changes_taken, own.sidecar.changes_current, own.reads()
    second = await writer.record(report(account, "call-2", 30))
    own.cache.put(second.snapshot, 0.0, second.version)  # as the pipeline does with an outcome
    # The announcement came before that or after it: taken, or found already held.
    await settled(
        [own], lambda x: x.sidecar.changes_taken + x.sidecar.changes_current == taken + current + 1
    )
    # The same announcement again, now certainly after: nothing to do, and no query.
    truth = await row(pool, account)
    again = " ".join(
        str(v)
        for v in (
            account, 0, micros(first.version), micros(second.version), truth[3], truth[7],
            truth[8].isoformat(),
        )
    )  # fmt: skip
    held = own.sidecar.changes_current
    own.sidecar._on_notify(None, 0, "ocs_account_changed", again)
    assert own.sidecar.changes_current == held + 1
    await asyncio.sleep(0.05)
    assert own.reads() == reads
    assert own.cache.get(account) == snapshot_from_row(truth)


async def test_a_poll_re_reads_only_the_accounts_it_does_not_know_current(setup: Any) -> None:
    """Under usage load nearly every account moves between two polls; a poll reads their
    stamps and re-reads none that the announcements already brought up to date."""
    pool, writer, listeners, account, _first = await first_change(setup)
    second = await writer.record(report(account, "call-2", 30))
    await settled(listeners, lambda x: x.cache.version(account) == second.version)
    truth = await row(pool, account)
    for x in listeners:
        applied = x.sidecar.changes_applied
        assert await x.sidecar._poll_once()
        assert x.sidecar.changes_applied == applied  # the stamps only, no account re-read
        assert x.cache.get(account) == snapshot_from_row(truth)
    # A change this process was not told of (its listener gone) is re-read by the poll.
    x = listeners[0]
    x.task.cancel()
    await asyncio.gather(x.task, return_exceptions=True)
    await pool.execute("UPDATE accounts SET max_sessions = 7 WHERE id = $1", account)
    applied = x.sidecar.changes_applied
    assert await x.sidecar._poll_once()
    assert x.sidecar.changes_applied == applied + 1
    snapshot = x.cache.get(account)
    assert snapshot is not None and snapshot.max_sessions == 7


async def test_a_tariff_change_reaches_every_account_on_it(setup: Any) -> None:
    """A changed tariff is announced once (not per account): each process re-reads every
    account on it, and only those."""
    pool, _writer, listeners = setup
    rows = await pool.fetch("SELECT id, tariff_id FROM accounts ORDER BY id")
    tariff = next(r["tariff_id"] for r in rows if r["tariff_id"] is not None)
    on_it = [r["id"] for r in rows if r["tariff_id"] == tariff]
    applied = [x.sidecar.changes_applied for x in listeners]
    cached = listeners[0].cache.get(on_it[0])
    assert cached is not None and cached.tariff is not None
    was_price = cached.tariff.price_per_minute
    await pool.execute(
        "UPDATE tariffs SET price_per_minute = price_per_minute + 0.000060 WHERE id = $1", tariff
    )
    truth = {a: snapshot_from_row(await row(pool, a)) for a in on_it}
    await settled(listeners, lambda x: all(x.cache.get(a) == truth[a] for a in on_it))
    for x, was in zip(listeners, applied, strict=True):
        assert x.sidecar.changes_applied == was + len(on_it)
    for x in listeners:
        snapshot = x.cache.get(on_it[0])
        assert snapshot is not None and snapshot.tariff is not None
        assert snapshot.tariff.price_per_minute == was_price + 60


async def test_an_identity_added_while_the_listener_was_away_is_read_by_the_poll(
    setup: Any,
) -> None:
    """The writer's outcome moves the cached stamp past a change it did not read (an identity
    added while no notification arrived): the poll must not take the stamp for knowledge."""
    pool, writer, listeners, account, _first = await first_change(setup)
    x = listeners[0]
    x.task.cancel()  # no more notifications for this process
    await asyncio.gather(x.task, return_exceptions=True)
    await pool.execute(
        "INSERT INTO account_identities (account_id, kind, value) VALUES ($1, 'user_name', $2)",
        account,
        "added-while-away",
    )
    second = await writer.record(report(account, "call-2", 30))
    x.cache.put(second.snapshot, 0.0, second.version)  # as the pipeline does with an outcome
    assert x.cache.account_for(IdentityKind.USER_NAME, "added-while-away") is None
    assert await x.sidecar._poll_once()
    assert x.cache.account_for(IdentityKind.USER_NAME, "added-while-away") == account
    assert x.cache.get(account) == snapshot_from_row(await row(pool, account))


@pytest.mark.parametrize(
    "payload",
    [
        "{a} 1.5 1 2 3 4",  # a field short
        "{a} 1.5 x 2 3 4 -",  # a stamp that is not a number
        "{a} 1.5 1 2 3 4 2026-13-01",  # no such date
        "{a} 1.5 1 99999999999999999999999 3 4 -",  # a stamp past datetime's range
        "{a} 1.5 1 2 3.5 4 -",  # a fraction of a micro-unit
    ],
)
async def test_an_announcement_it_cannot_read_makes_it_re_read_the_account(
    setup: Any, payload: str
) -> None:
    pool, _writer, listeners, account, _first = await first_change(setup)
    x = listeners[0]
    taken, reads = x.sidecar.changes_taken, x.reads()
    x.sidecar._on_notify(None, 0, "ocs_account_changed", payload.format(a=account))
    await settled([x], lambda x: x.reads() == reads + 1)
    assert x.sidecar.changes_taken == taken
    assert x.cache.get(account) == snapshot_from_row(await row(pool, account))


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 0, 0, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2254, 6, 1, 0, 0, 0, 123_456, tzinfo=UTC),
    ],
)
async def test_the_database_stamps_to_the_microsecond(dsn: str, at: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for zone in ("UTC", "Europe/Zurich", "Asia/Kathmandu"):
            await conn.execute(f"SET TIME ZONE '{zone}'")
            assert await conn.fetchval("SELECT ocs_epoch_micros($1)", at) == micros(at)
    finally:
        await conn.close()
