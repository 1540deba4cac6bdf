"""The usage batch functions never scan ``sessions`` or ``usage_records`` whole (migration 0063).

They look rows up by key only. On a new database, though, the planner has no statistics until
autovacuum's first ANALYZE, and a plan made while the tables are small (the generic plan a
connection caches after five calls, or any plan of a table of a few pages) reads them
sequentially: every batch then scans the whole table, slower with each row it adds, until the
first ANALYZE replaces the plan. Measured with ``bench/diameter_load.py`` on a freshly seeded
database, that was 2-4 times fewer usage-bearing CCRs a second in the first minutes.

Here a real writer commits many batches through one connection on a fresh database (never
analyzed, a few rows), and PostgreSQL's own counters must show no sequential scan of either
table, while showing every row the batches wrote.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from test_usage_writer import account_id, report

from ocs.admin.demo import load_demo
from ocs.metrics import Metrics
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration

TABLES = ("sessions", "usage_records")

COUNTERS = """
    SELECT relname, seq_scan, idx_scan, n_tup_ins
    FROM pg_stat_user_tables WHERE relname = ANY($1::text[])
"""


async def counters(dsn: str) -> dict[str, tuple[int, int, int]]:
    """What every backend that has ended reported (a backend's last counts are flushed when
    it exits, so the writer's pool is closed before this is read)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(COUNTERS, list(TABLES))
    finally:
        await conn.close()
    return {r["relname"]: (r["seq_scan"], r["idx_scan"] or 0, r["n_tup_ins"]) for r in rows}


async def test_usage_batches_find_their_rows_by_index_on_a_new_database(dsn: str) -> None:
    setup = await asyncpg.connect(dsn)
    try:
        await load_demo(setup)
        never_analyzed = await setup.fetchval(
            "SELECT bool_and(last_analyze IS NULL AND last_autoanalyze IS NULL) "
            "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(TABLES),
        )
    finally:
        await setup.close()
    assert never_analyzed  # the case in question: no statistics yet
    before = await counters(dsn)

    # One connection, so its cached plans are the ones in use after the first five calls;
    # small batches, so there are many of them.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        accounts = [await account_id(pool, n) for n in ("prepaid-ok", "postpaid", "buffer")]
        db = PostgresAccounts(pool, writers=1, batch_max=4, metrics=Metrics())
        for start in range(0, 120, 4):  # 30 batches of new sessions, each with its usage
            group = [report(accounts[i % 3], f"s{i}", 10) for i in range(start, start + 4)]
            outcomes = await asyncio.gather(*(db.record(r) for r in group))
            assert [o.charged for o in outcomes] == [1_000] * 4
        # The same sessions' reports again: each batch must find their rows to know them.
        for start in range(0, 40, 4):
            group = [report(accounts[i % 3], f"s{i}", 10) for i in range(start, start + 4)]
            outcomes = await asyncio.gather(*(db.record(r) for r in group))
            assert [o.charged for o in outcomes] == [0] * 4
        assert db.batches >= 40
    finally:
        await pool.close()

    after = {}
    for _ in range(50):  # the writer's backend flushes its counts as it exits
        after = await counters(dsn)
        if after["usage_records"][2] - before["usage_records"][2] >= 120:
            break
        await asyncio.sleep(0.1)
    assert after["sessions"][2] - before["sessions"][2] == 120  # the writes are all counted
    assert after["usage_records"][2] - before["usage_records"][2] == 120
    for table in TABLES:
        assert after[table][0] == before[table][0], f"{table} was scanned sequentially"
        assert after[table][1] > before[table][1]  # and found by index
