"""Soak: RADIUS and Diameter sessions at half the daemon's maximum rate for a set time, sampled
every 10 s; does memory, the session tables or the latency drift?

    .venv/bin/python bench/soak.py --minutes 10            # the report's run (quiet machine)
    .venv/bin/python bench/soak.py --minutes 1 --rate 100  # a quick look at a fixed rate

It starts everything it needs on loopback and stops it again: an embedded PostgreSQL in a
temporary directory (demo data and ``--accounts`` load accounts), ``ocsd`` with RADIUS and
Diameter on free ports. First a saturation run (``--probe-s``) finds the highest rate of
sessions the daemon completes (RADIUS Access/Start/Interim/Stop and Diameter CCR-I/U/T, each
session open for ``--hold-s``); the soak then offers half of it (or ``--rate``) on each
protocol, sessions starting and ending all the time (``bench/usage_load.py``).

Every 10 s it samples the daemon's RSS and open file descriptors (summed over ocsd and the
processes under it: workers, redis-server), its running sessions and credit reservations
(ocs_active_sessions, ocs_reservations), the sessions open in PostgreSQL and the p99 latency of
the last 10 s, and prints them. After the traffic stops it waits for the
tables to return to their baseline. PASS when RSS grew less than 5 % from the end of the
warm-up (the first ``--warmup-s``) to the last sample, the tables are back at their baseline,
and no session failed. Exit code 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ocs.admin.demo import load_demo  # noqa: E402
from ocs.store.embedded import EmbeddedPostgres  # noqa: E402
from ocs.store.migrate import migrate  # noqa: E402
from usage_load import DiameterLoad, RadiusLoad, paced, seed_load_accounts  # noqa: E402

SAMPLE_S = 10.0
MAX_MINUTES = 60.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    auth: int
    acct: int
    diameter: int
    metrics: int

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics}/metrics", timeout=5
            ) as answer:
                text = answer.read().decode()
        except OSError:
            return float("nan")
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{name}(?:\{{.*\}})? (\S+)$", line)
            if match:
                total += float(match.group(1))
        return total

    def pids(self) -> list[int]:
        """ocsd and every process under it: with workers (the default), the supervisor, the
        workers and their redis-server, whose memory is the daemon's as much as its own."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def rss_mb(self) -> float:
        """The resident memory of ocsd and the processes under it, summed."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024 if total else float("nan")

    def fds(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{pid}/fd"))
        return total


@dataclass
class Sample:
    t_s: float
    phase: str
    rss_mb: float
    fds: int
    sessions: float
    reservations: float
    db_open_sessions: int
    p99_ms: float | None
    sessions_per_s: float

    def row(self) -> str:
        p99 = f"{self.p99_ms:8.1f}" if self.p99_ms is not None else "       -"
        return (
            f"{self.t_s:7.0f} {self.phase:9} {self.rss_mb:8.1f} {self.fds:5d} "
            f"{self.sessions:9.0f} {self.reservations:9.0f} {self.db_open_sessions:9d} "
            f"{p99} {self.sessions_per_s:9.1f}"
        )


HEADER = "   t(s) phase       RSS MB   fds  sessions  reserved   db open  p99 ms  sessions/s"


@dataclass
class Soak:
    args: argparse.Namespace
    work: Path
    dsn: str = ""
    users: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    async def prepare_database(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await migrate(conn)
            await load_demo(conn)
            self.users = await seed_load_accounts(conn, self.args.accounts, prefix="soak-")
        finally:
            await conn.close()

    def start_daemon(self) -> Daemon:
        auth, acct = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        diameter, metrics = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        config = self.work / "ocsd.toml"
        config.write_text(
            f"""
[daemon]
lock_file = "{self.work / "ocsd.lock"}"
graceful_timeout_s = 5
[log]
level = "warning"
[database]
dsn = "{self.dsn}"
[metrics]
listen = "127.0.0.1:{metrics}"
[usage]
spool_file = "{self.work / "usage.spool"}"
[grant]
admission_hold_s = 10
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
max_pending = 4096
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
[diameter]
enabled = true
listen = ["127.0.0.1:{diameter}"]
[[diameter.peers]]
origin_host = "*.localdomain"
"""
        )
        config.chmod(0o600)
        log = self.work / "ocsd.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ocsd"), "--config", str(config)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.work,
        )
        daemon = Daemon(proc, log, auth, acct, diameter, metrics)
        deadline = time.monotonic() + 60
        while math.isnan(daemon.metric("ocs_cache_entries")):  # not answering yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ocsd did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(1.0)
        return daemon

    def loads(self, daemon: Daemon) -> tuple[RadiusLoad, DiameterLoad]:
        common = {"users": self.users, "hold_s": self.args.hold_s, "give_up_s": 30.0}
        radius = RadiusLoad(
            host="127.0.0.1", auth_port=daemon.auth, acct_port=daemon.acct, **common
        )
        diameter = DiameterLoad(host="127.0.0.1", port=daemon.diameter, **common)
        return radius, diameter

    async def probe(self, daemon: Daemon) -> float:
        """Sessions/s (per protocol) the daemon completes when offered far more."""
        radius, diameter = self.loads(daemon)
        await radius.open()
        await diameter.open()
        seconds = self.args.probe_s
        offered = 5000.0
        started = time.monotonic()
        await asyncio.gather(
            paced(radius, rate=offered, sessions=10**6, duration_s=seconds, max_open=400),
            paced(diameter, rate=offered, sessions=10**6, duration_s=seconds, max_open=400),
        )
        elapsed = time.monotonic() - started
        radius.close()
        diameter.close()
        done = min(radius.ledger.sessions_done, diameter.ledger.sessions_done)
        return done / elapsed

    async def db_open_sessions(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM sessions WHERE closed_at IS NULL"))
        finally:
            await conn.close()

    async def sample(
        self, daemon: Daemon, started: float, phase: str, loads: tuple[Any, Any], marks: dict
    ) -> Sample:
        done = sum(load.ledger.sessions_done for load in loads)
        now = time.monotonic()
        rate = (done - marks.get("done", 0)) / max(now - marks.get("at", started), 1e-6)
        latencies = [x for load in loads for x in load.ledger.latencies[marks.get(id(load), 0) :]]
        for load in loads:
            marks[id(load)] = len(load.ledger.latencies)
        marks.update(done=done, at=now)
        latencies.sort()
        p99 = (
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            if latencies
            else None
        )
        sample = Sample(
            t_s=now - started,
            phase=phase,
            rss_mb=daemon.rss_mb(),
            fds=daemon.fds(),
            sessions=daemon.metric("ocs_active_sessions"),
            reservations=daemon.metric("ocs_reservations"),
            db_open_sessions=await self.db_open_sessions(),
            p99_ms=p99,
            sessions_per_s=rate,
        )
        self.samples.append(sample)
        print(sample.row(), flush=True)
        return sample

    async def soak(self, daemon: Daemon, rate: float) -> dict[str, Any]:
        radius, diameter = self.loads(daemon)
        loads = (radius, diameter)
        await radius.open()
        await diameter.open()
        duration = self.args.minutes * 60
        started = time.monotonic()
        marks: dict[Any, Any] = {}
        print(HEADER)
        baseline = await self.sample(daemon, started, "baseline", loads, marks)
        traffic = asyncio.gather(
            paced(radius, rate=rate, sessions=10**7, duration_s=duration, max_open=5000),
            paced(diameter, rate=rate, sessions=10**7, duration_s=duration, max_open=5000),
        )
        warm: Sample | None = None
        while not traffic.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(traffic), SAMPLE_S)
            phase = "load" if not traffic.done() else "drain"
            sample = await self.sample(daemon, started, phase, loads, marks)
            if warm is None and sample.t_s >= self.args.warmup_s:
                warm = sample
        await traffic
        radius.close()
        diameter.close()
        # After the traffic: the tables must return to their baseline (holds and Tcc expire).
        deadline = time.monotonic() + self.args.settle_s
        settled = False
        while time.monotonic() < deadline:
            sample = await self.sample(daemon, started, "after", loads, marks)
            if (
                sample.sessions <= baseline.sessions
                and sample.reservations <= baseline.reservations
                and sample.db_open_sessions <= baseline.db_open_sessions
            ):
                settled = True
                break
            await asyncio.sleep(SAMPLE_S)
        last_loaded = [s for s in self.samples if s.phase in ("load", "drain")]
        final = last_loaded[-1] if last_loaded else self.samples[-1]
        warm = warm or final
        growth = (final.rss_mb - warm.rss_mb) / warm.rss_mb * 100
        failed = radius.ledger.sessions_failed + diameter.ledger.sessions_failed
        verdict = growth < 5.0 and settled and failed == 0
        return {
            "rate_per_protocol": rate,
            "minutes": self.args.minutes,
            "rss_after_warmup_mb": round(warm.rss_mb, 1),
            "rss_last_mb": round(final.rss_mb, 1),
            "rss_growth_pct": round(growth, 2),
            "tables_back_to_baseline": settled,
            "sessions_done": {
                "radius": radius.ledger.sessions_done,
                "diameter": diameter.ledger.sessions_done,
            },
            "sessions_failed": failed,
            "sessions_refused": radius.ledger.sessions_refused + diameter.ledger.sessions_refused,
            "retries": radius.ledger.retries + diameter.ledger.retries,
            "pass": verdict,
        }


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ocs-soak-") as scratch:
        work = Path(scratch)
        server = EmbeddedPostgres(work / "pg")
        soak = Soak(args, work, dsn=server.start())
        daemon: Daemon | None = None
        try:
            await soak.prepare_database()
            daemon = soak.start_daemon()
            rate = args.rate
            if rate is None:
                maximum = await soak.probe(daemon)
                rate = round(maximum / 2, 1)
                print(f"saturation probe: {maximum:.1f} sessions/s per protocol; soak at {rate}")
                await asyncio.sleep(15)  # let the probe's holds expire
            result = await soak.soak(daemon, rate)
            print(json.dumps(result))
            print("PASS" if result["pass"] else "FAIL")
            return 0 if result["pass"] else 1
        finally:
            if daemon is not None and daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGTERM)
                try:
                    daemon.proc.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.proc.kill()
            server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, help="sessions/s per protocol (default: half the max)")
    p.add_argument("--probe-s", type=float, default=20.0, help="the saturation probe's length")
    p.add_argument("--hold-s", type=float, default=2.0, help="how long each session stays open")
    p.add_argument("--warmup-s", type=float, default=150.0, help="the time-bounded caches fill")
    p.add_argument("--settle-s", type=float, default=120.0, help="wait for the baseline")
    p.add_argument("--accounts", type=int, default=500)
    args = p.parse_args()
    if not 0 < args.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    import uvloop  # noqa: PLC0415

    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
