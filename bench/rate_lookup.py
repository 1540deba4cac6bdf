"""Rating by destination: lookup cost per decision, memory per prefix, deck import and load time.

    .venv/bin/python bench/rate_lookup.py [--prefixes 100000,1000000] [--lookups 200000]
                                          [--import-rows 100000] [--no-db] [--runs 3]

In memory (no database): builds a deck of N synthetic prefixes (3 to 9 digits under real
country codes, a few hundred distinct prices, as real decks have), then times
``RatePlanCache.rate_for`` (what the pipeline calls per admission) over random numbers, next
to ``ocs.core.decide`` (the credit decision it joins) and to the plan-less call (an account on
its tariff). Memory per prefix is the growth of live Python allocations (tracemalloc) and of
RSS while the deck is built, divided by N.

With a database (a throwaway embedded PostgreSQL): writes an A2Billing-style CSV of
``--import-rows`` rows and times ``parse_deck_csv`` + ``import_deck`` (COPY, one transaction),
then times ``load_rate_plan`` (what the daemon does at start and per NOTIFY) for the imported
plan. Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from ocs.admin.rate_import import import_deck, parse_deck_csv
from ocs.admin.rates import create_rate_plan
from ocs.charging.rates import RatePlanCache
from ocs.core import AccountSnapshot, GrantLimits, SessionRequest, Tariff, decide
from ocs.core.destinations import Rate, RateDeck, RatePlan
from ocs.store.database import open_database
from ocs.store.embedded import EmbeddedPostgres
from ocs.store.rates import load_rate_plan

COUNTRY_CODES = [
    "1",
    "7",
    "20",
    "27",
    "33",
    "34",
    "39",
    "41",
    "44",
    "49",
    "52",
    "55",
    "61",
    "81",
    "86",
    "91",
    "234",
    "254",
    "351",
    "353",
    "358",
    "380",
    "420",
    "880",
    "971",
]
EPOCH = datetime(2027, 1, 1, tzinfo=UTC)
NOW = datetime(2027, 6, 1, 12, tzinfo=UTC)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic_prefixes(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    found: set[str] = set(COUNTRY_CODES)
    while len(found) < count:
        cc = rng.choice(COUNTRY_CODES)
        length = rng.randint(3, 9)
        found.add(cc + "".join(rng.choice("0123456789") for _ in range(length - len(cc) + 1)))
    return sorted(found)[:count]


def prices(rng: random.Random, distinct: int = 300) -> list[Rate]:
    return [
        Rate(
            price_per_minute=rng.randrange(1_000, 500_000, 100),
            minimum_s=rng.choice([0, 1, 30, 60]),
            increment_s=rng.choice([1, 6, 60]),
            effective_from=EPOCH,
        )
        for _ in range(distinct)
    ]


def numbers_for(prefixes: list[str], count: int, rng: random.Random) -> list[str]:
    """Called numbers: mostly under a deck prefix (any length), some under none."""
    out = []
    for _ in range(count):
        base = rng.choice(prefixes) if rng.random() < 0.9 else rng.choice(["999", "888", "6"])
        out.append((base + "".join(rng.choice("0123456789") for _ in range(12)))[:12])
    return out


def in_memory(count: int, lookups: int, runs: int, traced: bool) -> None:
    rng = random.Random(count)
    table = prices(rng)
    choices = [rng.randrange(len(table)) for _ in range(count)]
    gc.collect()
    rss0 = rss_bytes()
    # The prefix strings are made inside the window: the daemon holds them too.
    prefixes = synthetic_prefixes(count)
    rows = [(p, table[i]) for p, i in zip(prefixes, choices, strict=True)]
    started = time.perf_counter()
    deck = RateDeck(deck_id=1, name="bench", rates=rows)
    build_s = time.perf_counter() - started
    del rows
    prefixes = list(prefixes)  # keep a list for the numbers below, counted apart
    gc.collect()
    rss = rss_bytes() - rss0 - sys.getsizeof(prefixes)
    live = 0
    if traced:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        copy = RateDeck(
            deck_id=1,
            name="copy",
            rates=[(p + "", table[i]) for p, i in zip(prefixes, choices, strict=True)],
        )
        live = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        del copy
    plan = RatePlan(plan_id=1, name="bench", currency="USD", decks=(deck,))
    cache = RatePlanCache()
    cache.put(plan, 1)
    snapshot = AccountSnapshot(
        account_id=1,
        name="a",
        balance=10_000_000,
        tariff=Tariff(price_per_minute=60_000),
        rate_plan_id=1,
    )
    plain = AccountSnapshot(
        account_id=2, name="b", balance=10_000_000, tariff=Tariff(price_per_minute=60_000)
    )
    numbers = numbers_for(prefixes, lookups, rng)
    request = SessionRequest()
    limits = GrantLimits()

    def timed(call: object) -> float:
        results = []
        for _ in range(runs):
            gc.disable()
            t0 = time.perf_counter()
            call()  # type: ignore[operator]
            results.append(time.perf_counter() - t0)
            gc.enable()
        return statistics.median(results) / lookups * 1e6

    rate_for = cache.rate_for
    lookup_us = timed(lambda: [rate_for(snapshot, n, NOW) for n in numbers])
    plain_us = timed(lambda: [rate_for(plain, n, NOW) for n in numbers])
    decide_us = timed(lambda: [decide(snapshot, request, NOW, limits) for _ in numbers])
    baseline_us = timed(lambda: [None for _ in numbers])
    hits = sum(1 for n in numbers if rate_for(snapshot, n, NOW) is not None)
    print(
        f"{count:>9,} prefixes: build {build_s:5.2f} s; memory per prefix {rss / count:5.0f} B "
        f"RSS"
        + (
            f", {live / count:5.0f} B live in the index without the strings (tracemalloc)"
            if traced
            else ""
        )
        + f"; rate_for {lookup_us - baseline_us:5.2f} "
        f"us/decision ({hits / lookups:.0%} matched), plan-less {plain_us - baseline_us:4.2f} us, "
        f"decide() {decide_us - baseline_us:4.2f} us"
    )


def deck_csv(rows: int) -> str:
    rng = random.Random(rows)
    buffer = io.StringIO()
    buffer.write(
        "dialprefix;destination;rateinitial;initblock;billingblock;connectcharge;startdate\n"
    )
    for prefix in synthetic_prefixes(rows):
        buffer.write(
            f"{prefix};Destination {prefix[:3]};0.{rng.randrange(100, 99999):05d};"
            f"{rng.choice([0, 30, 60])};{rng.choice([1, 6, 60])};0;2027-01-01 00:00:00\n"
        )
    return buffer.getvalue()


async def with_database(rows_list: list[int], runs: int) -> None:
    from ocs.config import DatabaseConfig  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="ocs-rate-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        dsn = server.start()
        try:
            config = DatabaseConfig(dsn=dsn, command_timeout_s=600)
            async with open_database(config) as db, db.pool.acquire() as conn:
                for rows in rows_list:
                    text = deck_csv(rows)
                    imports, parses, loads = [], [], []
                    for run in range(runs):
                        name = f"bench{rows}_{run}"
                        await create_rate_plan(conn, name, "USD")
                        t0 = time.perf_counter()
                        lines = parse_deck_csv(io.StringIO(text), zone=UTC)
                        t1 = time.perf_counter()
                        await import_deck(conn, name, lines)
                        t2 = time.perf_counter()
                        plan_id = await conn.fetchval(
                            "SELECT id FROM rate_plans WHERE name = $1", name
                        )
                        t3 = time.perf_counter()
                        plan = await load_rate_plan(conn, plan_id)
                        t4 = time.perf_counter()
                        assert plan is not None and plan.prefix_count == rows
                        parses.append(t1 - t0)
                        imports.append(t2 - t1)
                        loads.append(t4 - t3)
                        del plan, lines
                    print(
                        f"{rows:>9,} rows: parse CSV {statistics.median(parses):5.2f} s, "
                        f"COPY + insert (one transaction) {statistics.median(imports):5.2f} s, "
                        f"total {statistics.median(parses) + statistics.median(imports):5.2f} s; "
                        f"daemon load of the plan {statistics.median(loads):5.2f} s"
                    )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefixes", default="100000,1000000")
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--import-rows", default="100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-db", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true", help="also live bytes per prefix")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs, {os.uname().machine}, load average {load:.1f} at start; "
        f"medians of {args.runs}"
    )
    for count in (int(c) for c in args.prefixes.split(",")):
        in_memory(count, args.lookups, args.runs, args.tracemalloc)
    if not args.no_db:
        asyncio.run(with_database([int(r) for r in args.import_rows.split(",")], args.runs))


if __name__ == "__main__":
    main()
