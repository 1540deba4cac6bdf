"""What the atomic admission path costs (redis.atomic_below_grants): one Redis round trip per
admission of an account whose credit is low, against the batched path of one with plenty.

Starts its own redis-server on a free loopback port (stopped by pid at the end), runs the
pipeline in process (no sockets to a daemon, no database: the account figures are in the cache)
with a RedisSync, and times N admissions of each kind one after another (each admission's hold
is released before the next, so every low-credit admission is confirmed):

    .venv/bin/python bench/atomic_admission.py [--admissions 5000] [--rounds 3]

Prints the wall time and the process CPU per admission, medians of the rounds, and how many
admissions went through Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging, UsageOutcome, UsageReport
from ocs.charging.sessions import SessionBook
from ocs.core import AccountSnapshot, GrantLimits, Tariff, parse_amount
from ocs.core.identity import IdentityKind
from ocs.store.redis_sync import RedisSync


class NoStore:
    """The pipeline's store, never asked here (the cache knows both accounts)."""

    async def find_account(self, kind: IdentityKind, value: str) -> None:
        return None

    async def load_account(self, account_id: int) -> None:
        return None

    async def record(self, report: UsageReport) -> UsageOutcome:
        raise NotImplementedError

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[object]:
        return []

    async def record_unmatched(self, *args: object) -> bool:
        return True

    async def session_generations(self, *args: object) -> list[object]:
        return []

    async def open_generations(self, owner: str) -> list[object]:
        return []

    async def credit(self, *args: object) -> None:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(admissions: int, rounds: int, url: str) -> None:
    tariff = Tariff(price_per_minute=parse_amount("0.06"))  # a 600 s grant costs 0.60
    rich = AccountSnapshot(account_id=1, name="rich", balance=parse_amount("1000"), tariff=tariff)
    low = AccountSnapshot(account_id=2, name="low", balance=parse_amount("1.00"), tariff=tariff)
    cache = AccountCache()
    loop = asyncio.get_running_loop()
    cache.replace_all(
        [rich, low], [("user_name", "rich", 1), ("user_name", "low", 2)], loaded_at=loop.time()
    )
    book = SessionBook()
    sync = RedisSync(book, url=url, sync_interval_s=0.05)
    sync.start()
    charging = Charging(
        cache=cache,
        sessions=book,
        source=NoStore(),  # type: ignore[arg-type]
        sink=NoStore(),  # type: ignore[arg-type]
        limits=GrantLimits(max_time_s=600),
        policy=CachePolicy(ttl_s=1e9),
        atomic=sync,
        atomic_below_grants=2.0,
    )
    for _ in range(500):  # the first round (bounded: 5 s)
        if sync.usable():
            break
        await asyncio.sleep(0.01)
    else:
        raise SystemExit("redis did not answer within 5 s")
    results: dict[str, list[tuple[float, float]]] = {"plenty": [], "low": []}
    for _ in range(rounds):
        for label, user in (("plenty", "rich"), ("low", "low")):
            await asyncio.sleep(0.1)  # a sync round: nothing of the last run is unsynced
            wall, cpu = time.perf_counter(), time.process_time()
            for n in range(admissions):
                key = f"k{n}"
                decision = await charging.admit(IdentityKind.USER_NAME, user, reservation_key=key)
                assert decision.admitted, decision
                book.end(key)
                if label == "plenty":
                    book.take_dirty()  # as if each had been synced before the next
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[label].append((wall / admissions * 1e6, cpu / admissions * 1e6))
    await sync.stop()
    print(f"{admissions} admissions x {rounds} rounds, redis {url}, {datetime.now(UTC):%Y-%m-%d}")
    for label, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {label:7s} credit: {wall:7.1f} µs wall, {cpu:6.1f} µs CPU per admission")
    print(
        f"  confirmed in Redis: {charging.stats.atomic_confirmed}, "
        f"conflicts {charging.stats.atomic_conflicts}, script calls {sync.confirm_calls}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--admissions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (Debian package redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            asyncio.run(run(args.admissions, args.rounds, f"redis://127.0.0.1:{port}/0"))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
