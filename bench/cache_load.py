"""How long the daemon's warm-up takes, and what a cached account costs in memory.

Creates N accounts (default 1,000,000), each with a user-name identity and a tariff, in a
throwaway embedded PostgreSQL, then runs the daemon's own warm-up (``ocs.app.warm_cache``) and
reports the time and the resident memory it added per account (median of --runs loads, each
into a fresh cache in a fresh process state as far as Python allows).

    .venv/bin/python bench/cache_load.py [--accounts 1000000] [--runs 3] [--keep DIR]
                                         [--tracemalloc]

``--tracemalloc`` also reports the live bytes the cache holds per account (Python allocations
still referenced after the load, without the allocator's slack); it slows the load down a lot,
so its times are not comparable with runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from ocs.app import warm_cache
from ocs.charging.cache import AccountCache
from ocs.config import DatabaseConfig
from ocs.store.database import open_database
from ocs.store.embedded import EmbeddedPostgres


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def seed(dsn: str, accounts: int) -> None:
    config = DatabaseConfig(dsn=dsn, command_timeout_s=600)
    async with open_database(config) as db, db.pool.acquire() as conn:
        have = await conn.fetchval("SELECT count(*) FROM accounts")
        if have >= accounts:
            return
        started = time.monotonic()
        await conn.execute("INSERT INTO tariffs (name, price_per_minute) VALUES ('bench', 0.06)")
        # Triggers that keep balances are exercised by the ledger below; identities too.
        await conn.execute(
            """INSERT INTO accounts (name, credit_limit, tariff_id, balance)
               SELECT 'acct' || i, CASE WHEN i % 10 = 5 THEN 100 ELSE 0 END,
                      (SELECT id FROM tariffs WHERE name = 'bench'), (i % 1000) / 10.0
               FROM generate_series(1, $1) AS i""",
            accounts,
        )
        await conn.execute(
            """INSERT INTO account_identities (account_id, kind, value)
               SELECT id, 'user_name', name FROM accounts"""
        )
        await conn.execute("ANALYZE")
        print(f"seeded {accounts} accounts in {time.monotonic() - started:.1f} s")


async def load_once(dsn: str, trace: bool) -> tuple[float, int, int, int]:
    config = DatabaseConfig(dsn=dsn, command_timeout_s=600)
    async with open_database(config, apply_migrations=False) as db:
        gc.collect()
        if trace:
            tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        before = rss_bytes()
        cache = AccountCache()
        started = time.monotonic()
        await warm_cache(db, cache, None)
        elapsed = time.monotonic() - started
        gc.collect()
        after = rss_bytes()
        live = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()
        count = len(cache)
        del cache
        gc.collect()
    return elapsed, after - before, count, live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="data directory to keep (and reuse) between runs")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure live bytes")
    args = parser.parse_args()
    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ocs-bench-")) / "pg"
    server = EmbeddedPostgres(data)
    dsn = server.start()
    try:
        asyncio.run(seed(dsn, args.accounts))
        results = [asyncio.run(load_once(dsn, args.tracemalloc)) for _ in range(args.runs)]
    finally:
        server.stop()
    times = [r[0] for r in results]
    per_account = [r[1] / max(r[2], 1) for r in results]
    print(f"accounts cached: {results[0][2]}")
    print(
        f"warm-up time   : median {statistics.median(times):.2f} s  (runs: "
        + ", ".join(f"{t:.2f}" for t in times)
        + ")"
    )
    print(
        f"memory/account : median {statistics.median(per_account):.0f} bytes of RSS  (runs: "
        + ", ".join(f"{b:.0f}" for b in per_account)
        + ")"
    )
    if args.tracemalloc:
        live = [r[3] / max(r[2], 1) for r in results]
        print(
            f"live/account   : median {statistics.median(live):.0f} bytes traced  (runs: "
            + ", ".join(f"{b:.0f}" for b in live)
            + ")"
        )


if __name__ == "__main__":
    main()
