"""The usage writer alone: client CPU per committed report, no protocol in front of it.

Feeds ``PostgresAccounts.record`` (the group-committing writer behind every usage-bearing
CCR-T and Accounting Stop) with ``--reports`` final reports of new Diameter sessions, 60 s
each at 0.06 a minute, ``--in-flight`` at a time, spread over the accounts that
``bench/seed_accounts.py`` made, and prints reports/s, the writer's client CPU per report
(this process; PostgreSQL apart) and the batch sizes. Every report must be charged 60,000
micro-units, or the run fails. Each run writes new session keys (runs never repeat).

    .venv/bin/python bench/seed_accounts.py --config /tmp/x/ocs.toml
    .venv/bin/python bench/usage_writer.py --config /tmp/x/ocs.toml [--reports 20000]
        [--in-flight 256] [--runs 3] [--profile]

Compare two trees by running it with each on ``PYTHONPATH`` (figures go in notes, not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime

from ocs.charging.pipeline import UsageReport, new_uid
from ocs.config import load_config
from ocs.core.ledger import Counting, Report, ReportKind
from ocs.core.model import Tariff, Usage
from ocs.store.database import open_database
from ocs.store.source import PostgresAccounts

ORIGIN = "bench.localdomain"
TARIFF = Tariff(price_per_minute=60_000)  # 60 s cost 60,000 micro-units
ACCOUNTS = """SELECT id FROM accounts WHERE name ~ '^4178[0-9]{7}$' AND status = 'active'
              ORDER BY id LIMIT 2000"""


def reports(ids: list[int], count: int, run: str) -> list[UsageReport]:
    """CCR-T-like reports: each the final (and only written) report of its session."""
    made = []
    for n in range(count):
        session = f"{ORIGIN};{run};{n}"
        made.append(
            UsageReport(
                source="diameter",
                origin=ORIGIN,
                session_key=session,
                entry=Report(
                    kind=ReportKind.FINAL,
                    account_id=ids[n % len(ids)],
                    uid=new_uid(),
                    report_key="n=1",
                    received_at=datetime.now(UTC),
                    time_zone=UTC,
                    tariff=TARIFF,
                    usage=Usage(seconds=60),
                    counting=Counting.INCREMENT,
                    wire_key=f"diameter|{ORIGIN}|{session}|{n}|1",
                    request_number=1,
                    close_reason="logout",
                    start_ref=f"{run}-{n}",
                ),
            )
        )
    return made


async def one_run(writer: PostgresAccounts, batch: list[UsageReport], in_flight: int) -> None:
    async def record(report: UsageReport) -> None:
        outcome = await writer.record(report)
        if outcome.charged != 60_000:
            raise SystemExit(f"report {report.session_key} charged {outcome.charged}, not 60000")

    for start in range(0, len(batch), in_flight):
        await asyncio.gather(*(record(r) for r in batch[start : start + in_flight]))


async def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with open_database(config.database, apply_migrations=True) as db:
        ids = [r["id"] for r in await db.pool.fetch(ACCOUNTS)]
        if not ids:
            print("no bench accounts: run bench/seed_accounts.py first", file=sys.stderr)
            return 2
        cpu_us: list[float] = []
        for run_number in range(args.runs):
            writer = PostgresAccounts(db.pool, owner="bench-usage-writer")
            batch = reports(ids, args.reports, f"{time.time_ns():x}")
            gc.collect()
            gc.freeze()  # as the daemon does once warm: the prepared reports are not walked
            profile = cProfile.Profile() if args.profile else None
            wall, cpu = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            await one_run(writer, batch, args.in_flight)
            if profile is not None:
                profile.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            per_report = cpu / args.reports * 1e6
            cpu_us.append(per_report)
            mean_batch = writer.batched_reports / max(writer.batches, 1)
            print(
                f"run {run_number + 1}: {args.reports / wall:8,.0f} reports/s   "
                f"client CPU {per_report:5.1f} µs per report   "
                f"{writer.batches} batches of {mean_batch:.0f} on average"
            )
            if profile is not None:
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            gc.unfreeze()
        print(f"median client CPU {statistics.median(cpu_us):.1f} µs per report")
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="an ocsd config file (its database)")
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile (inflates the CPU)")
    args = parser.parse_args()
    if not 1 <= args.reports <= 1_000_000 or not 1 <= args.in_flight <= 10_000:
        parser.error("--reports must be 1..1000000 and --in-flight 1..10000")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be 1..20")
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
