"""Where ocsd's Diameter front spends CPU per CCR: no sockets, no database, no other load.

Builds the daemon's pipeline from its real classes (AccountCache warm with the benchmark's
10,000 accounts as ``bench/seed_accounts.py`` makes them, SessionBook, Charging, Metrics,
CreditControl, DiameterServer, wired as ``ocs.app`` wires them), opens one PeerConnection on a
transport that only counts what is written, exchanges CER/CEA, then feeds it what
``bench/diameter_load.py`` sends: CCR-Initial + CCR-Termination pairs (no usage, so each is
answered from memory), ``--batch`` messages per ``data_received`` as TCP delivers them under
load. What it measures is the Python CPU per CCR (``time.process_time``), to which the daemon
adds the event loop and the ``recv``/``send`` system calls (shared by a batch). The writes
behind the answers (the sessions' starts and ends) are not flushed here: they go to the
database in batches off the request path.

Then a cProfile of the hot path (inflated by profiling overhead; read it for proportions).

    .venv/bin/python bench/diameter_front_profile.py [--pairs 100000] [--batch 16] [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diameter_load import Template, cer
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.config import Config, DiameterPeerConfig
from ocs.diameter.handler import CreditControl
from ocs.diameter.server import DiameterServer, PeerAllowList, PeerConnection
from ocs.metrics import Metrics
from radius_front_profile import snapshots

HOST = "bench-0.localdomain"


class CountingTransport:
    """Stands in for the TCP transport: counts writes and bytes, sends nothing."""

    def __init__(self) -> None:
        self.writes = 0
        self.octets = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.octets += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def build(accounts: int) -> tuple[PeerConnection, CountingTransport, Charging]:
    config = Config()
    cache = AccountCache(negative_ttl_s=config.cache.negative_ttl_s)
    snaps = snapshots(accounts)
    now = time.monotonic()
    cache.replace_all(snaps, [("user_name", s.name, s.account_id) for s in snaps], now)
    metrics = Metrics()
    charging = Charging(
        cache=cache,
        sessions=SessionBook(),
        source=None,  # type: ignore[arg-type]  # a warm cache never asks
        sink=None,  # type: ignore[arg-type]  # nothing is flushed here
        limits=config.grant.limits(),
        policy=CachePolicy(ttl_s=3600.0),
    )
    handler = CreditControl(
        charging=charging, origin_host="ocs.localdomain", origin_realm="localdomain"
    )
    server = DiameterServer(
        handler=handler,
        allowed=PeerAllowList([DiameterPeerConfig(origin_host="*.localdomain")]),
        metrics=metrics,
        origin_host="ocs.localdomain",
        origin_realm="localdomain",
    )
    connection = PeerConnection(server)
    transport = CountingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(cer(HOST))
    assert transport.writes == 1, "no CEA"
    gc.collect()
    gc.freeze()  # as the daemon does once ready: the cache stays out of full collections
    return connection, transport, charging


def traffic(pairs: int, accounts: int, batch: int) -> list[tuple[bytes, int]]:
    """CCR-I then CCR-T of each session, interleaved as a client with requests in flight
    sends them, cut into chunks of ``batch`` messages."""
    users = [
        f"4178{i:07d}".encode()
        for i in range(1, accounts + 1)
        if i % 10 not in (0, 5) and i % 97  # the accepting ones (seed_accounts.py)
    ]
    initial = Template(HOST, 1, users[0].decode(), 0)
    final = Template(HOST, 3, users[0].decode(), 0)
    messages: list[bytes] = []
    lag = batch // 2 or 1
    for n in range(pairs + lag):
        if n < pairs:
            messages.append(initial.render(2 * n, n, users[n % len(users)]))
        if n >= lag:
            k = n - lag
            messages.append(final.render(2 * k + 1, k, users[k % len(users)]))
    return [
        (b"".join(messages[i : i + batch]), len(messages[i : i + batch]))
        for i in range(0, len(messages), batch)
    ]


def run(connection: PeerConnection, chunks: list[tuple[bytes, int]]) -> float:
    feed = connection.data_received
    started = time.process_time()
    for chunk, _count in chunks:
        feed(chunk)
    return time.process_time() - started


async def main(args: argparse.Namespace) -> None:
    connection, _transport, _charging = build(args.accounts)
    chunks = traffic(args.pairs, args.accounts, args.batch)
    run(connection, chunks[: len(chunks) // 10])  # warm-up: the same sessions again later
    connection2, transport2, charging2 = build(args.accounts)
    step = len(chunks) // 5 + 1
    slices = [chunks[i : i + step] for i in range(0, len(chunks), step)]  # in order: T after I
    per_ccr = []
    for part in slices:
        messages = sum(count for _chunk, count in part)
        spent = run(connection2, part)
        per_ccr.append(spent / max(messages, 1) * 1e6)
    total = 2 * args.pairs
    answered = transport2.octets
    print(
        f"PeerConnection.data_received, warm cache, {args.accounts} accounts, "
        f"{args.batch} CCRs per read: {statistics.median(per_ccr):.1f} µs CPU per CCR "
        f"(median of 5 slices: {', '.join(f'{x:.1f}' for x in per_ccr)}); "
        f"{total} CCRs, {transport2.writes} writes, {answered} octets answered; "
        f"live sessions {len(charging2.live)}, writes behind queued {charging2.behind_depth}"
    )
    print(
        f"  => at most ≈ {1e6 / statistics.median(per_ccr):,.0f} CCR/s per core for the "
        "Python hot path alone, before the event loop and the system calls"
    )
    connection3, _t3, _c3 = build(args.accounts)
    part = chunks[: max(len(chunks) // 4, 1)]
    profiler = cProfile.Profile()
    profiler.enable()
    run(connection3, part)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
    print(f"cProfile over {len(part) * args.batch:,} CCRs, by own time:")
    text = out.getvalue()
    start = text.find("   ncalls")
    print(text[start:].rstrip() if start >= 0 else text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--pairs", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=16, help="CCRs per data_received")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    if not 10 <= args.accounts <= 1_000_000 or not 1_000 <= args.pairs <= 2_000_000:
        p.error("--accounts 10..1e6, --pairs 1e3..2e6")
    if not 1 <= args.batch <= 256:
        p.error("--batch 1..256")
    return args


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(parse_args()))
    except ImportError:
        asyncio.run(main(parse_args()))
