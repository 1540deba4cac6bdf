"""Group commit of usage against a real PostgreSQL (``ocs.store.source.PostgresAccounts``).

Many reports in flight are committed in few transactions; every caller still gets its own
outcome, exactly what a transaction of its own would have given: the charge, the duplicate
flag, the account's figures after it. A report PostgreSQL refuses fails alone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from ocs.admin.demo import load_demo
from ocs.charging.pipeline import SourceRefused, SourceUnavailable, UsageReport
from ocs.core.ledger import Counting, Hold, Report, ReportKind
from ocs.core.model import Tariff, Usage
from ocs.metrics import Metrics
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await load_demo(conn)
    yield pool
    await pool.close()


async def account_id(pool: asyncpg.Pool, name: str) -> int:
    return int(await pool.fetchval("SELECT id FROM accounts WHERE name = $1", name))


async def balance_micros(pool: asyncpg.Pool, account: int) -> int:
    return int(
        await pool.fetchval(
            "SELECT balance_micros FROM account_snapshots WHERE account_id = $1", account
        )
    )


TARIFF = Tariff(price_per_minute=6_000)  # 100 micro-units a second: 10 s cost 1,000
_uids = itertools.count()


def report(
    account: int,
    session: str,
    seconds: int,
    *,
    final: bool = True,
    key: str | None = None,
) -> UsageReport:
    """A RADIUS-style report: cumulative seconds; ``key`` names the message (a repeat of a
    message carries its key again, in a new uid)."""
    return UsageReport(
        source="radius",
        origin="peer.test",
        session_key=session,
        entry=Report(
            kind=ReportKind.FINAL if final else ReportKind.USAGE,
            account_id=account,
            uid=f"u{next(_uids)}",
            report_key=key or f"{'stop' if final else 'interim'}|{seconds}|0",
            received_at=NOW,
            time_zone=UTC,
            tariff=TARIFF,
            usage=Usage(seconds=seconds),
            counting=Counting.CUMULATIVE,
        ),
    )


async def test_concurrent_reports_share_transactions_and_each_gets_its_own_outcome(
    pool: asyncpg.Pool,
) -> None:
    accounts = [await account_id(pool, n) for n in ("prepaid-ok", "postpaid", "buffer")]
    before = {a: await balance_micros(pool, a) for a in accounts}
    metrics = Metrics()
    db = PostgresAccounts(pool, writers=2, batch_max=64, metrics=metrics)
    # 300 sessions over three accounts, 1,000 micro-units each; plus, for one session, an
    # interim report then its final one, and a repeat of that final one, all queued together.
    reports = [report(accounts[i % 3], f"s{i}", 10) for i in range(300)]
    reports += [
        report(accounts[0], "long", 30, final=False),
        report(accounts[0], "long", 50),
        report(accounts[0], "long", 50),  # the same message again: a repeat
    ]
    outcomes = await asyncio.gather(*(db.record(r) for r in reports))

    assert db.batches >= 1
    assert db.batched_reports > db.batches  # grouped: more reports than transactions
    registry = metrics.registry
    transactions = registry.get_sample_value("ocs_usage_commit_batch_reports_count")
    written = registry.get_sample_value("ocs_usage_commit_batch_reports_sum")
    assert written == 303 and transactions is not None and transactions < 303
    assert [o.charged for o in outcomes[:300]] == [1_000] * 300
    assert [(o.charged, o.duplicate) for o in outcomes[300:]] == [
        (3_000, False),
        (2_000, False),  # the final report charges what the interim one did not
        (0, True),
    ]
    expected = {a: before[a] - 100 * 1_000 for a in accounts}
    expected[accounts[0]] -= 5_000
    for a in accounts:
        assert await balance_micros(pool, a) == expected[a]
    # Every outcome carries its account's figures as of its transaction, never older.
    for r, outcome in zip(reports, outcomes, strict=True):
        assert outcome.snapshot is not None and outcome.snapshot.account_id == r.account_id
        assert outcome.version is not None
    assert await pool.fetchval("SELECT count(*) FROM usage_records") == 302


async def test_a_report_postgresql_refuses_fails_alone(pool: asyncpg.Pool) -> None:
    prepaid, postpaid = await account_id(pool, "prepaid-ok"), await account_id(pool, "postpaid")
    metrics = Metrics()
    db = PostgresAccounts(pool, writers=1, batch_max=64, metrics=metrics)
    await db.record(report(prepaid, "taken", 5, final=False))
    # A report for an account that does not exist is refused by the database; the reports
    # queued in the same batch are written all the same.
    results = await asyncio.gather(
        db.record(report(postpaid, "a", 10)),
        db.record(report(987_654, "ghost", 10)),
        db.record(report(prepaid, "b", 10)),
        return_exceptions=True,
    )
    assert db.batches_refused == 1  # they were queued together, and retried one by one
    assert metrics.registry.get_sample_value("ocs_usage_batches_refused_total") == 1
    assert isinstance(results[1], asyncpg.ForeignKeyViolationError)
    assert [r.charged for r in (results[0], results[2])] == [1_000, 1_000]  # type: ignore[union-attr]
    keys = {
        (r["session_id"], r["report_key"])
        for r in await pool.fetch("SELECT session_id, report_key FROM usage_records")
    }
    assert keys == {("taken", "interim|5|0"), ("a", "stop|10|0"), ("b", "stop|10|0")}


async def test_text_postgresql_cannot_store_is_refused_alone(pool: asyncpg.Pool) -> None:
    """A NUL or a lone surrogate in a key cannot be stored as text: that report is refused as
    data (never taken for the database being down), the rest of its batch is written."""
    prepaid = await account_id(pool, "prepaid-ok")
    metrics = Metrics()
    db = PostgresAccounts(pool, writers=1, batch_max=64, metrics=metrics)
    results = await asyncio.gather(
        db.record(report(prepaid, "good", 10)),
        db.record(report(prepaid, "nul\x00key", 10)),
        db.record(report(prepaid, "half\ud800pair", 10)),
        return_exceptions=True,
    )
    assert isinstance(results[1], SourceRefused) and isinstance(results[2], SourceRefused)
    assert results[0].charged == 1_000  # type: ignore[union-attr]
    refused = metrics.registry.get_sample_value(
        "ocs_database_refused_total", {"operation": "record_usage"}
    )
    assert refused == 2
    keys = [r["session_id"] for r in await pool.fetch("SELECT session_id FROM usage_records")]
    assert keys == ["good"]


async def test_instants_are_written_to_the_microsecond(pool: asyncpg.Pool) -> None:
    """The writer's instants (start, end, hold, when usage counts) reach PostgreSQL exactly,
    microseconds included, whatever the offset they were made in."""
    prepaid = await account_id(pool, "prepaid-ok")
    db = PostgresAccounts(pool, writers=1)
    started = NOW + timedelta(microseconds=123_457)
    held_until = (NOW + timedelta(seconds=60, microseconds=999_999)).astimezone(
        timezone(timedelta(hours=-5))
    )
    interim = report(prepaid, "exact", 10, final=False)
    interim = replace(
        interim,
        entry=replace(interim.entry, received_at=started, hold=Hold(amount=500, until=held_until)),
    )
    await db.record(interim)
    row = await pool.fetchrow(
        "SELECT started_at, hold_until, hold_micros FROM sessions WHERE session_key = 'exact'"
    )
    assert (row["started_at"], row["hold_until"], row["hold_micros"]) == (started, held_until, 500)
    ended = started + timedelta(seconds=20, microseconds=1)
    final = report(prepaid, "exact", 30)
    await db.record(replace(final, entry=replace(final.entry, received_at=ended)))
    row = await pool.fetchrow(
        "SELECT closed_at, hold_until FROM sessions WHERE session_key = 'exact'"
    )
    assert (row["closed_at"], row["hold_until"]) == (ended, None)
    counted = [
        r["occurred_at"]
        for r in await pool.fetch(
            "SELECT occurred_at FROM usage_records WHERE session_id = 'exact' ORDER BY id"
        )
    ]
    assert counted == [started, ended]


async def test_the_same_key_for_another_account_starts_that_accounts_session(
    pool: asyncpg.Pool,
) -> None:
    """A NAS reuses an Acct-Session-Id for another subscriber: that subscriber's session is
    charged in full, the first one keeps its charge; nothing is refused or left unanswered."""
    prepaid, postpaid = await account_id(pool, "prepaid-ok"), await account_id(pool, "postpaid")
    db = PostgresAccounts(pool, writers=1)
    first = await db.record(report(prepaid, "reused", 30))
    second = await db.record(report(postpaid, "reused", 20))
    assert (first.charged, second.charged) == (3_000, 2_000)
    assert second.generation is not None and second.generation.generation == 2
    rows = await pool.fetch(
        "SELECT account_id, generation, (charged * 1000000)::bigint AS charged FROM sessions "
        "WHERE session_key = 'reused' ORDER BY generation"
    )
    assert [(r["account_id"], r["generation"], r["charged"]) for r in rows] == [
        (prepaid, 1, 3_000),
        (postpaid, 2, 2_000),
    ]


async def test_database_gone_makes_every_queued_report_unavailable(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    db = PostgresAccounts(pool)
    await pool.close()
    results = await asyncio.gather(
        *(db.record(report(1, f"s{i}", 10)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, SourceUnavailable) for r in results), results


async def test_a_caller_that_gives_up_does_not_lose_or_double_the_record(
    pool: asyncpg.Pool,
) -> None:
    prepaid = await account_id(pool, "prepaid-ok")
    before = await balance_micros(pool, prepaid)
    db = PostgresAccounts(pool, writers=1)
    waiting = asyncio.create_task(db.record(report(prepaid, "gone", 10)))
    await asyncio.sleep(0)  # queued
    waiting.cancel()
    await db.drain()
    assert waiting.cancelled()
    assert await balance_micros(pool, prepaid) == before - 1_000
    # The client retries (it never got an answer): charged once all the same.
    again = await db.record(report(prepaid, "gone", 10))
    assert (again.charged, again.duplicate) == (0, True)
    assert await balance_micros(pool, prepaid) == before - 1_000


def test_writer_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PostgresAccounts(None, writers=0)  # type: ignore[arg-type]


async def test_reports_one_after_another_never_wait_for_a_writer_that_is_finishing(
    pool: asyncpg.Pool,
) -> None:
    """The caller resumes before the finished writer's done-callbacks run: a writer must count
    as gone the moment it stops looking at the queue, or the next report waits forever."""
    prepaid = await account_id(pool, "prepaid-ok")
    db = PostgresAccounts(pool, writers=1)
    async with asyncio.timeout(10):  # not wait_for: the call must run in this very task
        for n in range(20):
            outcome = await db.record(report(prepaid, f"seq{n}", 10))
            assert outcome.charged == 1_000
