"""Payments through the account API, and how soon a payment lets a refused subscriber in.

Starts a throwaway embedded PostgreSQL (or uses --dsn), the demo data plus --accounts accounts,
``ocs api`` and ``ocsd`` (RADIUS) on free loopback ports, then measures:

1. payments per second: --payments POST /accounts/{a}/payments (each with its own
   Idempotency-Key, spread over the accounts) from --concurrency clients at once;
2. payment-to-decision latency, --rounds times: an account with nothing to spend is refused an
   Access-Request; a payment is POSTed; from the moment the API answers, Access-Requests are
   sent one after another until one is accepted. The figure is that time (the API's commit ->
   NOTIFY -> the daemon's sidecar -> the cache -> the next decision).

    .venv/bin/python bench/api_payments.py [--payments 3000] [--concurrency 16] [--rounds 50]

Every loop is bounded in count and in time (--max-seconds); everything listens on 127.0.0.1
and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from ocs import admin
from ocs.core import AccountStatus
from ocs.core.identity import IdentityKind
from ocs.radius import codec
from ocs.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = codec.SharedSecret(b"testing123")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_for(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env["OCS_DATABASE__DSN"] = dsn
    env.update(extra)
    return env


def run_ocs(dsn: str, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "ocs"), *args], env=env_for(dsn), capture_output=True, text=True, check=True
    )
    return done.stdout


async def seed(dsn: str, accounts: int, rounds: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(accounts):
            name = f"bench-pay-{n}"
            await admin.create_account(conn, name, admin.AccountSettings(tariff="demo"))
        for n in range(rounds):
            name = f"bench-lat-{n}"
            await admin.create_account(
                conn, name, admin.AccountSettings(tariff="demo", status=AccountStatus.ACTIVE)
            )
            await admin.add_identity(conn, name, IdentityKind.USER_NAME, name)
    finally:
        await conn.close()


def wait_http(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {deadline_s} s")


async def payments(
    url: str, token: str, *, accounts: int, count: int, concurrency: int, max_s: float
) -> tuple[int, float, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    latencies: list[float] = []
    done = 0
    deadline = time.monotonic() + max_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            try:
                n = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            answer = await client.post(
                f"/accounts/bench-pay-{n % accounts}/payments",
                json={"amount": "1.00"},
                headers={"Idempotency-Key": f"bench-{uuid.uuid4()}"},
            )
            if answer.status_code != 201:
                raise SystemExit(f"payment refused: {answer.status_code} {answer.text}")
            latencies.append(time.perf_counter() - started)
            done += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done, elapsed, latencies


def access(sock: socket.socket, port: int, user: str, identifier: int) -> int:
    packet = codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        SECRET,
        [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
    )
    sock.sendto(packet, ("127.0.0.1", port))
    while True:
        data, _ = sock.recvfrom(4096)
        reply = codec.parse_packet(data)
        if reply.identifier == identifier:
            return reply.code


def payment_to_decision(
    url: str, token: str, auth_port: int, rounds: int, max_s: float
) -> list[float]:
    figures: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + max_s
    with (
        httpx.Client(base_url=url, headers=headers, timeout=10) as http,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.settimeout(2)
        identifier = 0
        for n in range(rounds):
            if time.monotonic() > deadline:
                break
            user = f"bench-lat-{n}"
            identifier = (identifier + 1) % 256
            if access(sock, auth_port, user, identifier) != codec.ACCESS_REJECT:
                raise SystemExit(f"{user} was not refused before its payment")
            paid = http.post(
                f"/accounts/{user}/payments",
                json={"amount": "1.00"},
                headers={"Idempotency-Key": f"lat-{n}-{uuid.uuid4()}"},
            )
            answered = time.perf_counter()
            if paid.status_code != 201:
                raise SystemExit(f"payment refused: {paid.text}")
            for _ in range(10_000):
                identifier = (identifier + 1) % 256
                if access(sock, auth_port, user, identifier) == codec.ACCESS_ACCEPT:
                    figures.append(time.perf_counter() - answered)
                    break
            else:
                raise SystemExit(f"{user} was still refused after 10,000 tries")
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: a throwaway embedded one)")
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ocs-bench-api-") as tmp:
        server = None
        dsn = args.dsn
        if dsn is None:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            dsn = server.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            run_ocs(dsn, "demo", "load")
            asyncio.run(seed(dsn, args.accounts, args.rounds))
            token = run_ocs(dsn, "api-token", "create", "helpdesk", "--label", "bench").split()[0]
            api_port, auth_port, acct_port = (
                free_port(),
                free_port(socket.SOCK_DGRAM),
                free_port(socket.SOCK_DGRAM),
            )
            config = Path(tmp) / "ocsd.toml"
            config.write_text(
                f"""
[daemon]
lock_file = "{tmp}/ocsd.lock"
[log]
level = "warning"
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp}/usage.spool"
[api]
listen = "127.0.0.1:{api_port}"
rate_limit_per_s = 100000.0
rate_burst_requests = 100000
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth_port}"]
acct_listen = ["127.0.0.1:{acct_port}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "testing123"
"""
            )
            env = env_for(dsn)
            processes.append(
                subprocess.Popen([str(BIN / "ocs"), "--config", str(config), "api"], env=env)
            )
            processes.append(
                subprocess.Popen([str(BIN / "ocsd"), "--config", str(config)], env=env)
            )
            url = f"http://127.0.0.1:{api_port}"
            wait_http(f"{url}/health", 60)
            time.sleep(3)  # the daemon's warm-up
            api_cpu_before = cpu_seconds(processes[0].pid)
            count, elapsed, latencies = asyncio.run(
                payments(
                    url,
                    token,
                    accounts=args.accounts,
                    count=args.payments,
                    concurrency=args.concurrency,
                    max_s=args.max_seconds,
                )
            )
            print(
                f"payments through the API: {count} in {elapsed:.2f} s = {count / elapsed:,.0f}/s "
                f"({args.concurrency} clients, {args.accounts} accounts); per request median "
                f"{statistics.median(latencies) * 1000:.1f} ms, p99 "
                f"{percentile(latencies, 0.99) * 1000:.1f} ms; the API process used "
                f"{(cpu_seconds(processes[0].pid) - api_cpu_before) / count * 1000:.2f} ms CPU "
                "per payment"
            )
            figures = payment_to_decision(url, token, auth_port, args.rounds, args.max_seconds)
            print(
                f"payment -> next Access-Request admitted ({len(figures)} rounds): median "
                f"{statistics.median(figures) * 1000:.2f} ms, p90 "
                f"{percentile(figures, 0.9) * 1000:.2f} ms, max {max(figures) * 1000:.2f} ms"
            )
        finally:
            for proc in processes:
                proc.terminate()
            for proc in processes:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
